"""The log append is the commit point; restarts resume from the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from myelin.eventlog.disk import DiskEventLog
from myelin.eventlog.errors import EventLogError
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputError, InputEvent, InputResult, Status
from myelin.storage import Database

from .rooms import RoomScript, user

ALICE = user("alice")


async def test_event_is_in_the_log_when_submit_returns(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "12")
    await room.create(ALICE)
    join = await room.make("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
    result = await rs.submit(join)
    entries = await log.read(result.log_offset, 1)
    assert entries and entries[0].record.room_id == room.room_id
    assert join.event_id.encode() in entries[0].record.payload


async def test_failed_append_stores_and_shows_nothing(db: Database, tmp_path: Path) -> None:
    async with DiskEventLog(tmp_path / "log2") as log:
        rs = await Roomserver.open(db, log)
        room = RoomScript(rs, "10")
        await room.create(ALICE)
        join = await room.make("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
        head = await log.head()
    # The log is closed: the append fails, the caller gets the error, nothing is visible.
    with pytest.raises(EventLogError):
        await rs.submit(join)
    assert await rs.event(join.event_id) is None
    assert await rs.membership(room.room_id, ALICE) is None  # type: ignore[arg-type]
    async with DiskEventLog(tmp_path / "log2") as log:
        assert await log.head() == head
        rs = await Roomserver.open(db, log)
        assert (await rs.submit(join)).status is Status.ACCEPTED
        assert await rs.membership(room.room_id, ALICE) == "join"  # type: ignore[arg-type]


async def test_restart_keeps_state_and_continues(db: Database, tmp_path: Path) -> None:
    async with DiskEventLog(tmp_path / "log3") as log:
        rs = await Roomserver.open(db, log)
        room = RoomScript(rs, "10")
        await room.create(ALICE)
        await room.join(ALICE)
        state = await rs.current_state(room.room_id)  # type: ignore[arg-type]
    async with DiskEventLog(tmp_path / "log3") as log:
        rs = await Roomserver.open(db, log)
        room.rs = rs
        assert await rs.current_state(room.room_id) == state  # type: ignore[arg-type]
        _, result = await room.send("m.room.message", ALICE, {"msgtype": "m.text", "body": "x"})
        assert result.status is Status.ACCEPTED
        assert result.log_offset == 3


async def test_bad_input_is_refused_alone(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    await room.create(ALICE)
    good = await room.make("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
    wrong_version = RoomScript(rs, "11")
    wrong_version.room_id = room.room_id
    bad = wrong_version.build(
        "m.room.message",
        ALICE,
        {"body": "x"},
        state_key=None,
        prevs=[good.event_id],
        auth_state={},
        depth=3,
    )
    no_prevs = room.build(
        "m.room.message", ALICE, {"body": "x"}, state_key=None, prevs=[], auth_state={}, depth=3
    )
    results = await rs.input([InputEvent(good), InputEvent(bad), InputEvent(no_prevs)])
    assert isinstance(results[0], InputResult) and results[0].status is Status.ACCEPTED
    assert isinstance(results[1], InputError) and "version" in str(results[1])
    assert isinstance(results[2], InputError) and "prev" in str(results[2])
    assert await log.head() == 2


async def test_concurrent_submits_share_commits(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    await room.create(ALICE)
    await room.join(ALICE)
    events = [
        await room.make("m.room.message", ALICE, {"msgtype": "m.text", "body": str(n)})
        for n in range(20)
    ]  # all on the same prev event: a 20-way fork
    batches, fsyncs = rs.batches, log.stats.fsyncs
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(rs.submit(e)) for e in events]
    assert all(t.result().status is Status.ACCEPTED for t in tasks)
    assert rs.batches - batches < 5 and log.stats.fsyncs - fsyncs < 5
    latest = await rs.latest_events(room.room_id)  # type: ignore[arg-type]
    assert sorted(latest.prev_event_ids) == sorted(e.event_id for e in events)
    offsets = sorted(t.result().log_offset for t in tasks)
    assert offsets == list(range(offsets[0], offsets[0] + 20))
