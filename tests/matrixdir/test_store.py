"""The store library: names, writer (lock, naming, rotation, repair), reader, index, check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from matrixdir.check import check_store
from matrixdir.errors import (
    EX_DATAERR,
    CorruptLineError,
    InvalidEventError,
    InvalidNameError,
    LockedError,
    StoreVersionError,
)
from matrixdir.layout import (
    EventFileName,
    attachment_relpath,
    decode_name,
    encode_name,
    room_dir_name,
    room_id_from_dir,
)
from matrixdir.outbox import Outbox
from matrixdir.reader import RoomReader, StoreReader, follow, read_room
from matrixdir.writer import StoreWriter

ROOM = "!AbCdEf:example.org"


def ev(n: int, ts: int, room: str | None = None, **extra: object) -> dict[str, object]:
    e: dict[str, object] = {
        "event_id": f"$e{n}",
        "type": "m.room.message",
        "sender": "@a:example.org",
        "origin_server_ts": ts,
        "content": {"msgtype": "m.text", "body": f"m{n}"},
    }
    if room:
        e["room_id"] = room
    e.update(extra)
    return e


def files_of(root: Path, room: str = ROOM) -> list[str]:
    return sorted(p.name for p in (root / room_dir_name(room)).glob("*-events.jsonl"))


# -- names ---------------------------------------------------------------------------------


def test_room_dir_name_round_trips_and_is_safe() -> None:
    assert room_dir_name(ROOM) == "%21AbCdEf%3Aexample.org"
    for rid in [ROOM, "!x/y\\z:ex.org:8448", "!ünï:e.org", "!.a:b", "!a b%c:d"]:
        name = room_dir_name(rid)
        assert "/" not in name and "\\" not in name and " " not in name
        assert not name.startswith(".")
        assert room_id_from_dir(name) == rid


@pytest.mark.parametrize("bad", ["%21abc%3aex.org", "%21a%62c", "%2", "abc", "%21%FF"])
def test_non_canonical_names_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        room_id_from_dir(bad)


def test_leading_dot_is_escaped() -> None:
    assert encode_name(".hidden") == "%2Ehidden"
    assert decode_name("%2Ehidden") == ".hidden"
    assert encode_name("a.b") == "a.b"


def test_too_long_name_is_refused() -> None:
    with pytest.raises(InvalidNameError):
        room_dir_name("!" + "/" * 100 + ":x")


def test_event_file_names_order_numerically() -> None:
    names = ["10-events.jsonl", "9-events.jsonl", "9.2-events.jsonl", "9.1-events.jsonl"]
    parsed = sorted(EventFileName.parse(n) for n in names)
    assert [p.name for p in parsed] == [
        "9-events.jsonl",
        "9.1-events.jsonl",
        "9.2-events.jsonl",
        "10-events.jsonl",
    ]
    for bad in ["09-events.jsonl", "1.0-events.jsonl", "x-events.jsonl", "1-events.json"]:
        assert EventFileName.try_parse(bad) is None


def test_attachment_path() -> None:
    assert attachment_relpath("mxc://ex.org:8448/AbC_d-1") == "attachments/ex.org%3A8448/AbC_d-1"
    for bad in ["http://x/y", "mxc://x", "mxc:///y", "mxc://x/y/z"]:
        with pytest.raises(InvalidNameError):
            attachment_relpath(bad)


# -- writer ----------------------------------------------------------------------------------


def test_append_names_files_by_first_event_and_deduplicates(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as w:
        assert [e["event_id"] for e in w.append_live(ROOM, [ev(1, 1000), ev(2, 1001)])] == [
            "$e1",
            "$e2",
        ]
        assert w.append_live(ROOM, [ev(2, 1001), ev(3, 1002), ev(3, 1002)]) == [
            {**ev(3, 1002), "room_id": ROOM}
        ]
    assert files_of(tmp_path) == ["1000-events.jsonl"]
    got = read_room(tmp_path / room_dir_name(ROOM))
    assert [s.event_id for s in got] == ["$e1", "$e2", "$e3"]
    assert all(s.event["room_id"] == ROOM for s in got)
    # Reopen: the index is rebuilt (from cache or files) and still de-duplicates.
    with StoreWriter(tmp_path) as w:
        assert w.append_live(ROOM, [ev(1, 1000), ev(4, 1003)])[0]["event_id"] == "$e4"
    assert [s.event_id for s in read_room(tmp_path / room_dir_name(ROOM))] == [
        "$e1",
        "$e2",
        "$e3",
        "$e4",
    ]


def test_index_cache_is_rebuilt_when_deleted_or_stale(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(1, 1000)])
    cache = tmp_path / ".matrixdir" / "cache" / f"{room_dir_name(ROOM)}.idx"
    assert cache.exists()
    cache.write_bytes(b"garbage")
    with StoreWriter(tmp_path) as w:
        assert w.append_live(ROOM, [ev(1, 1000)]) == []
    cache.unlink()
    with StoreWriter(tmp_path) as w:
        assert w.has_event(ROOM, "$e1")


def test_older_event_starts_a_new_file(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(1, 2000), ev(2, 1500), ev(3, 2500)])
    # $e2 is older than the file it would join, so it gets its own file, named by its ts.
    assert files_of(tmp_path) == ["1500-events.jsonl", "2000-events.jsonl"]
    assert check_store(tmp_path).errors == []


def test_backfill_goes_to_new_files_that_sort_first(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(10, 5000), ev(11, 5001)])
        w.write_backfill(ROOM, [ev(7, 3000), ev(8, 3001), ev(9, 3002)])
        w.write_backfill(ROOM, [ev(5, 1000), ev(6, 3000)])
        w.append_live(ROOM, [ev(12, 6000)])
    assert files_of(tmp_path) == ["1000-events.jsonl", "3000-events.jsonl", "5000-events.jsonl"]
    order = [s.event_id for s in read_room(tmp_path / room_dir_name(ROOM))]
    assert order == ["$e5", "$e6", "$e7", "$e8", "$e9", "$e10", "$e11", "$e12"]


def test_backfill_sharing_a_millisecond_with_the_oldest_file_still_sorts_first(
    tmp_path: Path,
) -> None:
    # Fast senders put many events in one millisecond: the back-filled page that ends where
    # the live file begins starts in that same millisecond, and must still read first.
    with StoreWriter(tmp_path, max_file_bytes=300) as w:
        w.append_live(ROOM, [ev(5, 1000), ev(6, 1000)])
        w.write_backfill(ROOM, [ev(1, 1000), ev(2, 1000), ev(3, 1000), ev(4, 1000)])
        w.write_backfill(ROOM, [ev(0, 999)])
    names = sorted(EventFileName.parse(n) for n in files_of(tmp_path))
    assert names[-1].name == "1000-events.jsonl" and len(names) > 3
    assert all(n.ts <= 1000 for n in names)
    order = [s.event_id for s in read_room(tmp_path / room_dir_name(ROOM))]
    assert order == [f"$e{i}" for i in range(7)]
    assert check_store(tmp_path).errors == []


def test_same_timestamp_files_get_a_suffix(tmp_path: Path) -> None:
    with StoreWriter(tmp_path, max_file_bytes=100) as w:
        w.append_live(ROOM, [ev(1, 1000)])
        w.append_live(ROOM, [ev(2, 1000)])
    assert files_of(tmp_path) == ["1000-events.jsonl", "1000.1-events.jsonl"]
    order = [s.event_id for s in read_room(tmp_path / room_dir_name(ROOM))]
    assert order == ["$e1", "$e2"]


def test_rotation_by_size(tmp_path: Path) -> None:
    with StoreWriter(tmp_path, max_file_bytes=400) as w:
        for i in range(10):
            w.append_live(ROOM, [ev(i, 1000 + i)])
    names = files_of(tmp_path)
    assert len(names) > 2
    assert all((tmp_path / room_dir_name(ROOM) / n).stat().st_size < 800 for n in names)
    assert len(read_room(tmp_path / room_dir_name(ROOM))) == 10


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        {"type": "m.x", "origin_server_ts": 1},
        {"event_id": "$x", "type": "m.x", "origin_server_ts": 1.5},
        {"event_id": "$x", "type": "m.x", "origin_server_ts": -1},
        {"event_id": "$x", "origin_server_ts": 1},
        {"event_id": "$x", "type": "m.x", "origin_server_ts": 1, "room_id": "!other:x"},
    ],
)
def test_bad_events_are_refused_and_nothing_is_written(tmp_path: Path, bad: object) -> None:
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(1, 1000)])
        with pytest.raises(InvalidEventError):
            w.append_live(ROOM, [ev(2, 1001), bad])
    assert [s.event_id for s in read_room(tmp_path / room_dir_name(ROOM))] == ["$e1"]


def test_second_writer_is_locked_out_and_stale_lock_is_taken_over(tmp_path: Path) -> None:
    with StoreWriter(tmp_path):
        assert (tmp_path / "lock.pid").read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockedError) as info:
            StoreWriter(tmp_path).open()
        assert info.value.pid == os.getpid()
        assert info.value.exit_code == 75
    # A lock file left by a dead process (no flock held) is stale: taken over.
    (tmp_path / "lock.pid").write_text("999999999\n")
    with StoreWriter(tmp_path):
        assert (tmp_path / "lock.pid").read_text() == f"{os.getpid()}\n"


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    StoreWriter(tmp_path).open().close()
    code = (
        "import sys,time;from matrixdir.writer import StoreWriter;"
        f"w=StoreWriter({str(tmp_path)!r}).open();print('ok',flush=True);sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ok\n"
        with pytest.raises(LockedError) as info:
            StoreWriter(tmp_path).open()
        assert info.value.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()
    with StoreWriter(tmp_path):  # kill -9 released it
        pass


def test_unknown_store_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "matrixdir.json").write_text('{"format": "matrixdir", "version": 99}')
    with pytest.raises(StoreVersionError):
        StoreWriter(tmp_path).open()
    assert not (tmp_path / "lock.pid").read_text()


# -- torn tails, readers -------------------------------------------------------------------


def test_reader_never_yields_a_torn_line_and_writer_repairs_it(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(1, 1000), ev(2, 1001)])
    path = tmp_path / room_dir_name(ROOM) / "1000-events.jsonl"
    good = path.read_bytes()
    line3 = orjson.dumps({**ev(3, 1002), "room_id": ROOM})
    with open(path, "ab") as f:
        f.write(line3[:20])  # a crash in the middle of a line
    reader = RoomReader(ROOM, path.parent)
    assert [s.event_id for s in reader.read_new()] == ["$e1", "$e2"]
    assert reader.offsets[EventFileName(1000)] == len(good)
    report = check_store(tmp_path)
    assert report.errors == [] and any("torn" in f.message for f in report.findings)
    with StoreWriter(tmp_path) as w:
        assert w.repaired == [(path, 20)]
        assert path.read_bytes() == good
        w.append_live(ROOM, [ev(3, 1002)])
    assert [s.event_id for s in reader.read_new()] == ["$e3"]
    assert check_store(tmp_path).findings == []


def test_file_with_only_a_torn_line_is_removed_on_start(tmp_path: Path) -> None:
    StoreWriter(tmp_path).open().close()
    room = tmp_path / room_dir_name(ROOM)
    room.mkdir()
    (room / "5-events.jsonl").write_bytes(b'{"event_id": "$x"')
    with StoreWriter(tmp_path):
        pass
    assert files_of(tmp_path) == []


def test_corrupt_complete_line_is_an_error(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(1, 1000)])
    path = tmp_path / room_dir_name(ROOM) / "1000-events.jsonl"
    with open(path, "ab") as f:
        f.write(b"not json\n")
    with pytest.raises(CorruptLineError):
        read_room(path.parent)
    lenient = RoomReader(ROOM, path.parent, strict=False)
    assert [s.event_id for s in lenient.read_new()] == ["$e1"]
    assert len(lenient.errors) == 1
    report = check_store(tmp_path)
    assert report.exit_code == EX_DATAERR
    # The writer refuses to append to a store it cannot read, loudly.
    (tmp_path / ".matrixdir" / "cache").joinpath(f"{room_dir_name(ROOM)}.idx").unlink()
    with StoreWriter(tmp_path) as w, pytest.raises(CorruptLineError):
        w.append_live(ROOM, [ev(2, 1001)])
    # --repair does not remove complete lines.
    assert check_store(tmp_path, repair=True).exit_code == EX_DATAERR
    assert path.read_bytes().endswith(b"not json\n")


def test_check_finds_misplaced_duplicate_and_missing_attachment(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(1, 1000, content={"msgtype": "m.image", "url": "mxc://s/m1"})])
    room = tmp_path / room_dir_name(ROOM)
    lines = [
        {**ev(1, 1000), "room_id": ROOM},
        {**ev(2, 10), "room_id": ROOM},
        {**ev(3, 2001), "room_id": "!other:x"},
    ]
    (room / "2000-events.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    (tmp_path / "%21bad%zz").mkdir()
    msgs = [f.message for f in check_store(tmp_path).errors]
    assert any("duplicate event $e1" in m for m in msgs)
    assert any("older than the file name" in m for m in msgs)
    assert any("room_id" in m for m in msgs)
    assert any("attachment mxc://s/m1 is missing" in m for m in msgs)
    assert any("bad escape" in m for m in msgs)
    att = room / "attachments" / "s" / "m1"
    att.parent.mkdir(parents=True)
    att.write_bytes(b"x")
    assert not any("attachment" in f.message for f in check_store(tmp_path).errors)


def test_check_without_store(tmp_path: Path) -> None:
    assert check_store(tmp_path / "nope").exit_code == 66
    assert check_store(tmp_path).exit_code == 66  # no matrixdir.json
    (tmp_path / "matrixdir.json").write_text('{"format": "matrixdir", "version": 2}')
    assert check_store(tmp_path).exit_code == EX_DATAERR


def test_check_repair_refuses_while_writer_runs(tmp_path: Path) -> None:
    with StoreWriter(tmp_path):
        with pytest.raises(LockedError):
            check_store(tmp_path, repair=True)
        assert any(f.severity == "info" for f in check_store(tmp_path).findings)


def test_store_reader_picks_up_new_rooms_and_files(tmp_path: Path) -> None:
    reader = StoreReader(tmp_path)
    assert reader.read_new() == []
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [ev(1, 1000)])
        assert [s.event_id for s in reader.read_new()] == ["$e1"]
        w.append_live("!z:x", [ev(2, 1000)])
        w.write_backfill(ROOM, [ev(0, 10)])
        got = reader.read_new()
    assert sorted((s.room_id, s.event_id) for s in got) == [(ROOM, "$e0"), ("!z:x", "$e2")]
    assert reader.read_new() == []


async def test_follow_sees_lines_as_they_are_appended(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path).open()
    try:
        w.append_live(ROOM, [ev(1, 1000)])
        stop = threading.Event()
        seen: list[str] = []
        gen = follow(StoreReader(tmp_path), stop)
        first = await asyncio.wait_for(anext(gen), 10)
        seen += [s.event_id for s in first]
        w.append_live(ROOM, [ev(2, 1001)])
        second = await asyncio.wait_for(anext(gen), 10)
        seen += [s.event_id for s in second]
        stop.set()
        await gen.aclose()
    finally:
        w.close()
    assert seen == ["$e1", "$e2"]


# -- outbox ----------------------------------------------------------------------------------


def test_outbox_queue_send_forget(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    a = box.queue(ROOM, "m.room.message", {"body": "hi", "msgtype": "m.text"})
    b = box.queue(ROOM, "m.room.message", {"body": "there", "msgtype": "m.text"})
    assert a.txn_id != b.txn_id
    assert [e.txn_id for e in box.pending()] == sorted([a.txn_id, b.txn_id])
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []
    done = box.mark_sent(a, "$sent")
    assert [e.txn_id for e in box.pending()] == [b.txn_id]
    assert box.sent_entries() == [done] and done.event_id == "$sent"
    box.forget_sent(a.txn_id)
    assert box.sent_entries() == []
    for room, typ, content in [
        ("nope", "m.x", {}),
        (ROOM, "", {}),
        (ROOM, "m.x", []),
        (ROOM, "m.x", {"b": "x" * 70000}),
    ]:
        with pytest.raises(InvalidEventError):
            box.queue(room, typ, content)
    assert len(box.pending()) == 1


def test_late_decryptions_are_appended_once_and_checked(tmp_path: Path) -> None:
    from matrixdir.reader import read_decryptions
    from matrixdir.timeline import RoomTimeline

    enc = {
        "event_id": "$enc",
        "type": "m.room.encrypted",
        "sender": "@a:example.org",
        "origin_server_ts": 1000,
        "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "xx"},
    }
    plain = {**enc, "type": "m.room.message", "content": {"msgtype": "m.text", "body": "hi"}}
    with StoreWriter(tmp_path) as w:
        w.append_live(ROOM, [enc])
        assert w.append_decryptions(ROOM, [{**plain, "event_id": "$unknown"}]) == 0
        assert w.append_decryptions(ROOM, [plain]) == 1
    with StoreWriter(tmp_path) as w:
        assert w.append_decryptions(ROOM, [plain]) == 0  # once, across restarts
        w.append_live(ROOM, [ev(2, 1001)])
        with pytest.raises(InvalidEventError):
            w.append_decryptions(ROOM, [{"event_id": "$e2", "type": "m.room.message"}])
    room = tmp_path / room_dir_name(ROOM)
    lines, end = read_decryptions(room)
    assert [line["content"]["body"] for line in lines] == ["hi"]
    assert end == (room / "late-decryptions.jsonl").stat().st_size
    assert check_store(tmp_path).errors == []
    tl = RoomTimeline(ROOM)
    for s in read_room(room):
        tl.add(s.event, s.order)
    assert tl.render(tl.messages["$enc"]).endswith("[encrypted message; no key yet]")
    tl.add_decryption(lines[0])
    assert next(tl.render(m) for m in tl.main_timeline()) == "@a:example.org: hi"
    # A decryption of an event that is not stored encrypted is an error for check.
    with open(room / "late-decryptions.jsonl", "ab") as f:
        f.write(orjson.dumps({**plain, "event_id": "$e2"}) + b"\n")
    assert any("not a stored encrypted" in f.message for f in check_store(tmp_path).errors)
