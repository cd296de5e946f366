"""Behaviour specific to the disk backend: segments, index, cache, locking, framing."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from myelin.eventlog import DiskEventLog, LogLockedError, LogRecord, LogUnavailableError
from myelin.eventlog.framing import (
    MAX_PAYLOAD_BYTES,
    Frame,
    FrameStatus,
    decode_frame,
    encode_frame,
    find_next_frame,
)
from myelin.eventlog.segments import INDEX_INTERVAL, segment_name
from tests.eventlog.helpers import rec


def test_frame_round_trip_and_every_damage_is_named() -> None:
    data = encode_frame(7, 5, True, b"!r:x", b"payload")
    frame = decode_frame(data, 0)
    assert frame == Frame(7, 5, True, "!r:x", b"payload", len(data))
    assert decode_frame(data[:-1], 0) == FrameStatus.INCOMPLETE
    assert decode_frame(data[:5], 0) == FrameStatus.INCOMPLETE
    assert decode_frame(b"X" + data[1:], 0) == FrameStatus.BAD_MAGIC
    flipped = bytearray(data)
    flipped[-2] ^= 0x10
    assert decode_frame(bytes(flipped), 0) == FrameStatus.BAD_CRC
    huge = data[:8] + (2**32 - 1).to_bytes(4, "big") + data[12:]
    assert decode_frame(huge, 0) == FrameStatus.BAD_LENGTH
    # A frame whose checksum is right but whose fields are impossible (batch after offset).
    assert decode_frame(encode_frame(3, 4, True, b"!r:x", b""), 0) == FrameStatus.BAD_FIELDS
    garbage = b"\x00" * 10 + b"\x8dMLR" + b"junk" + data
    found = find_next_frame(garbage, 0)
    assert found is not None and found[0] == len(garbage) - len(data)


def test_payload_size_limit() -> None:
    LogRecord("!r:x", b"x" * MAX_PAYLOAD_BYTES)
    with pytest.raises(ValueError, match="at most"):
        LogRecord("!r:x", b"x" * (MAX_PAYLOAD_BYTES + 1))


async def test_segments_roll_over_and_reads_cross_them(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    async with DiskEventLog(directory, segment_bytes=4096, cache_bytes=0) as log:
        for i in range(1, 201, 10):
            await log.append([rec(j, size=100) for j in range(i, i + 10)])
    segments = sorted(p.name for p in directory.iterdir() if p.suffix == ".seg")
    assert len(segments) > 5
    assert segments[0] == segment_name(1)
    async with DiskEventLog(directory, segment_bytes=4096, cache_bytes=0) as log:
        entries = await log.read(1, 500)
        assert [e.record for e in entries] == [rec(i, size=100) for i in range(1, 201)]
        for start in (1, 37, 100, 199, 200):
            got = await log.read(start, 3)
            assert [e.offset for e in got] == list(range(start, min(start + 3, 201)))
        assert log.stats.cache_reads == 0 and log.stats.disk_reads > 0


async def test_large_segment_uses_sparse_index(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    n = 12 * INDEX_INTERVAL // 1000 + 50
    async with DiskEventLog(directory, cache_bytes=0) as log:
        await log.append([rec(i, size=1000) for i in range(1, n + 1)])
        assert await log.read(n, 1) == [(n, rec(n, size=1000))]
        assert (await log.read(n // 2, 1))[0].record == rec(n // 2, size=1000)
    # Reopen: the index is rebuilt by recovery and reads still land on the right frame,
    # reading about one index interval, not the segment from its start.
    async with DiskEventLog(directory, cache_bytes=0) as log:
        assert (await log.read(n - 1, 5))[0] == (n - 1, rec(n - 1, size=1000))
        assert log.stats.bytes_read < 2 * INDEX_INTERVAL + 4096 < n * 1000 // 4
        before = log.stats.bytes_read
        assert (await log.read(n // 2, 1))[0].offset == n // 2
        assert log.stats.bytes_read - before < 2 * INDEX_INTERVAL + 4096


async def test_memory_cache_and_disk_agree(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    async with DiskEventLog(directory, cache_bytes=2000) as log:
        for i in range(1, 101):
            await log.append([rec(i, size=50)])
        cached = await log.read(95, 10)
        assert log.stats.cache_reads == 1
        old = await log.read(1, 100)
        assert log.stats.disk_reads >= 1
        assert [e.record for e in old] == [rec(i, size=50) for i in range(1, 101)]
        assert cached == old[94:]


async def test_second_opener_is_locked_out(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    async with DiskEventLog(directory) as log:
        await log.append([rec(1)])
        with pytest.raises(LogLockedError, match="already open"):
            async with DiskEventLog(directory):
                pass
        assert await log.append([rec(2)]) == [2]
    async with DiskEventLog(directory) as log:  # released on close
        assert await log.head() == 2


async def test_batches_respect_max_batch_bytes_but_never_split_a_call(tmp_path: Path) -> None:
    async with DiskEventLog(tmp_path / "log", max_batch_bytes=1000) as log:
        big = [rec(i, size=400) for i in range(10)]  # one call of ~4 KiB
        results = await asyncio.gather(log.append(big), *(log.append([rec(i)]) for i in range(5)))
        assert results[0] == list(range(results[0][0], results[0][0] + 10))
        assert log.stats.batches >= 2


async def test_writes_go_to_disk_before_append_returns(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    async with DiskEventLog(directory) as log:
        await log.append([rec(1, size=300)])
        size = (directory / segment_name(1)).stat().st_size
        assert size > 300
        assert log.stats.bytes_written == size


_FAILING_WRITER = """
import asyncio, resource, signal, sys
from myelin.eventlog import DiskEventLog, LogFailedError, LogRecord

async def main(directory):
    async with DiskEventLog(directory) as log:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        acked = 0
        try:
            for i in range(1000):
                acked = (await log.append([LogRecord("!r:x", b"%06d" % i * 100)]))[0]
        except LogFailedError as exc:
            assert isinstance(exc.__cause__, OSError), repr(exc.__cause__)
        try:
            await log.append([LogRecord("!r:x", b"after")])
        except LogFailedError:
            print("refused", acked)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_failing_disk_fails_appends_and_keeps_acknowledged_records(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FAILING_WRITER,
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    word, acked = out.decode().split()
    assert word == "refused" and int(acked) > 10
    async with DiskEventLog(directory) as log:
        assert await log.head() == int(acked)  # the partial write was cut away
        entries = await log.read(1, 1000)
        assert [e.record.payload for e in entries] == [b"%06d" % i * 100 for i in range(int(acked))]


async def test_cancelling_the_owner_mid_write_leaves_a_consistent_log(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    acked: list[int] = []
    enough = asyncio.Event()

    async def owner() -> None:
        async with DiskEventLog(directory) as log:

            async def appender(k: int) -> None:
                for i in range(1000):
                    acked.extend(await log.append([rec(k * 10_000 + i)]))
                    if len(acked) >= 50:
                        enough.set()

            async with asyncio.TaskGroup() as tg:
                for k in range(8):
                    tg.create_task(appender(k))

    task = asyncio.create_task(owner())
    await enough.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with DiskEventLog(directory) as log:
        head = await log.head()
        assert head >= max(acked)
        assert [e.offset for e in await log.read(1, head)] == list(range(1, head + 1))


async def test_one_read_spanning_many_chunks_and_large_records(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    sizes = [5000, 1, 70_000, 20, 7]
    records = [rec(i, size=sizes[i % len(sizes)]) for i in range(1, 301)]
    records[150] = rec(151, size=3_000_000)  # larger than any read chunk
    async with DiskEventLog(directory) as log:
        for i in range(0, 300, 30):
            await log.append(records[i : i + 30])
    async with DiskEventLog(directory, cache_bytes=0) as log:
        got = await log.read(1, 300)
        assert [e.record for e in got] == records
        assert [e.record for e in await log.read(150, 3)] == records[149:152]


async def test_a_directory_that_cannot_be_used_is_a_clear_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    with pytest.raises(LogUnavailableError, match="cannot open the event log"):
        async with DiskEventLog(not_a_directory / "log"):
            pass
