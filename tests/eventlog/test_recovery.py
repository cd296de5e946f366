"""Crash recovery: torn tails are cut away, damage anywhere else stops loudly."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from myelin.eventlog import CorruptLogError, DiskEventLog, LogClosedError
from myelin.eventlog.framing import encode_frame
from myelin.eventlog.segments import segment_name
from tests.eventlog.helpers import rec

SIZE = 200


async def _fill(directory: Path, batches: list[int], **options: int) -> list[int]:
    """Append batches of the given sizes; return the file size after each batch."""
    sizes = []
    n = 0
    async with DiskEventLog(directory, **options) as log:
        for count in batches:
            await log.append([rec(n + k + 1, size=SIZE) for k in range(count)])
            n += count
            sizes.append(_size(directory / segment_name(1)))
    return sizes


async def _contents(directory: Path) -> list[bytes]:
    async with DiskEventLog(directory) as log:
        return [e.record.payload for e in await log.read(1, 10_000)]


def _size(path: Path) -> int:
    return path.stat().st_size


def _overwrite(path: Path, at: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def _append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _payloads(n: int) -> list[bytes]:
    return [rec(i, size=SIZE).payload for i in range(1, n + 1)]


@pytest.mark.parametrize("cut", [1, 10, 30, SIZE, SIZE + 20])
async def test_partial_final_frame_is_cut_away(tmp_path: Path, cut: int) -> None:
    directory = tmp_path / "log"
    sizes = await _fill(directory, [2, 1])
    path = directory / segment_name(1)
    os.truncate(path, sizes[-1] - cut)
    async with DiskEventLog(directory) as log:
        assert await log.head() == 2
        assert log.recovered[0] == sizes[-1] - cut - sizes[0]
        assert _size(path) == sizes[0]
        assert await log.append([rec(99)]) == [3]  # the lost offset is reused
    assert await _contents(directory) == [*_payloads(2), rec(99).payload]


@pytest.mark.parametrize(
    "garbage",
    [b"\x00" * 4096, os.urandom(777), b"\x8dMLR", b"\x8dMLR\x00\x00\x00\x00\x00\x00\x10\x00"],
)
async def test_garbage_after_the_last_write_is_cut_away(tmp_path: Path, garbage: bytes) -> None:
    directory = tmp_path / "log"
    sizes = await _fill(directory, [3, 2])
    _append_bytes(directory / segment_name(1), garbage)
    async with DiskEventLog(directory) as log:
        assert await log.head() == 5
        assert log.recovered == (len(garbage), 0)
    assert _size(directory / segment_name(1)) == sizes[-1]
    assert await _contents(directory) == _payloads(5)


async def test_an_incomplete_final_write_is_dropped_whole(tmp_path: Path) -> None:
    """Records of one append are all-or-nothing: a write cut between its frames goes."""
    directory = tmp_path / "log"
    sizes = await _fill(directory, [2, 3])
    frame_size = (sizes[1] - sizes[0]) // 3
    os.truncate(directory / segment_name(1), sizes[0] + 2 * frame_size)  # 2 of 3 frames
    async with DiskEventLog(directory) as log:
        assert await log.head() == 2
        assert log.recovered == (2 * frame_size, 2)
    assert await _contents(directory) == _payloads(2)


async def test_a_hole_inside_the_final_write_is_torn_not_corrupt(tmp_path: Path) -> None:
    """After a power loss the last write may have later blocks on disk but not earlier
    ones; it was never acknowledged, so it is dropped, not reported."""
    directory = tmp_path / "log"
    sizes = await _fill(directory, [2, 3])
    frame_size = (sizes[1] - sizes[0]) // 3
    # The middle frame of the last write:
    _overwrite(directory / segment_name(1), sizes[0] + frame_size, b"\x00" * frame_size)
    async with DiskEventLog(directory) as log:
        assert await log.head() == 2
    assert await _contents(directory) == _payloads(2)


async def test_damage_followed_by_a_later_write_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    sizes = await _fill(directory, [2, 2, 2])
    path = directory / segment_name(1)
    _overwrite(path, sizes[0] + 50, b"\xff")  # inside the first frame of the second write
    before = path.read_bytes()
    with pytest.raises(CorruptLogError) as info:
        async with DiskEventLog(directory):
            pass
    assert info.value.path == str(path)
    assert info.value.position == sizes[0]
    message = str(info.value)
    assert str(path) in message and f"byte {sizes[0]}" in message and "restore" in message
    assert path.read_bytes() == before  # nothing was "repaired"
    # And it keeps failing: no silent recovery on a second try.
    with pytest.raises(CorruptLogError):
        async with DiskEventLog(directory):
            pass


async def test_torn_looking_tail_with_a_later_frame_behind_it_is_corruption(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "log"
    await _fill(directory, [2])
    later = encode_frame(7, 7, True, b"!r:x", b"from a later write")
    _append_bytes(directory / segment_name(1), b"\x00" * 100 + later)
    with pytest.raises(CorruptLogError, match="later write"):
        async with DiskEventLog(directory):
            pass


async def test_a_duplicated_frame_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    sizes = await _fill(directory, [1, 1])
    path = directory / segment_name(1)
    data = path.read_bytes()
    path.write_bytes(data + data[sizes[0] :])  # the last frame again
    with pytest.raises(CorruptLogError, match="expected offset 3"):
        async with DiskEventLog(directory):
            pass


async def test_damage_in_an_older_segment_stops_the_reader(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    options = {"segment_bytes": 1000, "cache_bytes": 0}
    async with DiskEventLog(directory, **options) as log:
        for i in range(1, 31):
            await log.append([rec(i, size=SIZE)])
    first = directory / segment_name(1)
    _overwrite(first, SIZE, b"\xee\xee")
    async with DiskEventLog(directory, **options) as log:
        assert await log.head() == 30
        later = await log.read(20, 5)  # later segments stay readable
        assert [e.offset for e in later] == list(range(20, 25))
        with pytest.raises(CorruptLogError, match=re.escape(str(first))):
            await log.read(1)
        with pytest.raises(CorruptLogError):
            async for _ in log.tail(1):
                pass


async def test_a_missing_segment_is_detected(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    options = {"segment_bytes": 1000, "cache_bytes": 0}
    async with DiskEventLog(directory, **options) as log:
        for i in range(1, 31):
            await log.append([rec(i, size=SIZE)])
    segments = sorted(p for p in directory.iterdir() if p.suffix == ".seg")
    assert len(segments) >= 3
    segments[1].unlink()
    async with DiskEventLog(directory, **options) as log:
        with pytest.raises(CorruptLogError, match="next segment starts at"):
            await log.read(1, 100)


async def test_a_damaged_reader_offset_file_is_an_error(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    await _fill(directory, [1])
    (directory / "readers" / "sync.offset").write_bytes(b"12\x00garbage")
    (directory / "readers" / "push.offset.tmp.1.2").write_bytes(b"half")
    async with DiskEventLog(directory) as log:
        with pytest.raises(CorruptLogError, match=r"sync\.offset"):
            await log.get_committed("sync")
        await log.commit("sync", 1)  # overwriting it is the way out
        assert await log.get_committed("sync") == 1
    assert not (directory / "readers" / "push.offset.tmp.1.2").exists()


async def test_an_empty_final_segment_after_a_crash_at_rollover(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    options = {"segment_bytes": 500}
    async with DiskEventLog(directory, **options) as log:
        for i in range(1, 6):
            await log.append([rec(i, size=SIZE)])
    last = max(p for p in directory.iterdir() if p.suffix == ".seg")
    os.truncate(last, 10)  # its only write was torn
    async with DiskEventLog(directory, **options) as log:
        head = await log.head()
        assert head == int(last.stem) - 1
        assert await log.append([rec(100)]) == [head + 1]
        entries = await log.read(1, 100)
        assert [e.offset for e in entries] == list(range(1, head + 2))


async def test_a_log_that_failed_to_open_refuses_appends(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    sizes = await _fill(directory, [1, 1])
    _overwrite(directory / segment_name(1), 40, b"\x00")
    log = DiskEventLog(directory)
    with pytest.raises(CorruptLogError):
        await log.__aenter__()
    with pytest.raises(LogClosedError):
        await log.append([rec(1)])
    await log.close()
    assert _size(directory / segment_name(1)) == sizes[-1]


async def test_a_segment_deleted_while_open_is_reported(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    options = {"segment_bytes": 1000, "cache_bytes": 0}
    async with DiskEventLog(directory, **options) as log:
        for i in range(1, 21):
            await log.append([rec(i, size=SIZE)])
        (directory / segment_name(1)).unlink()
        with pytest.raises(CorruptLogError, match="missing"):
            await log.read(1)
