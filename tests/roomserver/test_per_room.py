"""Input is single-writer per room and group-committed across rooms."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from myelin.core.events import Event
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputError, InputEvent, InputResult, LogPayload, Status
from myelin.storage import Database

from .rooms import RoomScript, user

ALICE = user("alice")


async def _room(rs: Roomserver) -> RoomScript:
    room = RoomScript(rs, "10")
    await room.create(ALICE)
    await room.join(ALICE)
    return room


async def _chain(room: RoomScript, count: int) -> list[Event]:
    """`count` messages, each after the one before (built before any is submitted)."""
    assert room.room_id is not None
    latest = await room.rs.latest_events(room.room_id)
    state = await room.rs.current_state(room.room_id)
    prev, depth = list(latest.prev_event_ids), latest.depth
    events = []
    for n in range(count):
        event = room.build(
            "m.room.message",
            ALICE,
            {"msgtype": "m.text", "body": str(n)},
            state_key=None,
            prevs=prev,
            auth_state=state,
            depth=depth,
        )
        events.append(event)
        prev, depth = [event.event_id], depth + 1
    return events


async def _log_event_ids(log: DiskEventLog) -> list[str]:
    ids: list[str] = []
    while entries := await log.read(len(ids) + 1, 1000):
        ids += [LogPayload.decode(e.record.payload).event.event_id for e in entries]
    return ids


async def _until(condition: object, what: str) -> None:
    """Let the other tasks run until `condition()` holds (bounded). Test-only: the
    internal progress it waits for has no notifier of its own."""
    assert callable(condition)
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    assert condition(), what


async def test_interleaved_rooms_are_each_in_order_and_committed_once(
    db: Database, log: DiskEventLog
) -> None:
    rs = await Roomserver.open(db, log)
    rooms = [await _room(rs) for _ in range(3)]
    chains = [await _chain(room, 30) for room in rooms]
    interleaved = [chain[n] for n in range(30) for chain in chains]
    before = await log.head()
    # One submitter per event, started in chain order; every event is also submitted a
    # second time by another caller. A room taken out of order would miss prev events.
    async with asyncio.TaskGroup() as tg:
        first = [tg.create_task(rs.submit(e)) for e in interleaved]
        again = [tg.create_task(rs.submit(e)) for e in interleaved]
    results = [t.result() for t in first + again]
    assert all(r.status is Status.ACCEPTED for r in results)
    assert sum(not r.duplicate for r in results) == len(interleaved)
    for a, b in zip(first, again, strict=True):
        assert a.result().log_offset == b.result().log_offset
    logged = await _log_event_ids(log)
    assert await log.head() == before + len(interleaved)
    assert max(Counter(logged).values()) == 1  # every event committed exactly once
    assert sorted(logged[before:]) == sorted(e.event_id for e in interleaved)
    for room, chain in zip(rooms, chains, strict=True):
        ids = [e.event_id for e in chain]
        assert [e for e in logged if e in set(ids)] == ids  # in order in the log
        assert room.room_id is not None
        latest = await rs.latest_events(room.room_id)
        assert latest.prev_event_ids == (chain[-1].event_id,)
        for event in chain:
            assert await rs.event(event.event_id) is not None


async def test_rooms_decide_while_another_commit_is_outstanding(
    db: Database, log: DiskEventLog
) -> None:
    rs = await Roomserver.open(db, log)
    rooms = [await _room(rs) for _ in range(6)]
    events = [(await _chain(room, 2)) for room in rooms]
    batches, fsyncs = rs.batches, log.stats.fsyncs
    # While a commit holds the commit lock, every room still gets its events decided
    # and queued; then one commit takes all of them: one append, one transaction.
    async with rs._commit_lock:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(rs.input([InputEvent(e) for e in chain])) for chain in events]
            await _until(lambda: len(rs._commit_queue) == len(rooms), "all rooms decided")
            assert not any(t.done() for t in tasks)
            assert await rs.event(events[0][0].event_id) is None  # nothing visible yet
            rs._commit_lock.release()
        await rs._commit_lock.acquire()  # give the `async with` its lock back
    assert rs.batches - batches == 1
    assert log.stats.fsyncs - fsyncs == 1
    for task in tasks:
        results = task.result()
        assert all(isinstance(r, InputResult) and r.status is Status.ACCEPTED for r in results)


async def test_cancelled_submitters_withdraw_or_commit_exactly_once(
    db: Database, log: DiskEventLog
) -> None:
    rs = await Roomserver.open(db, log)
    room = await _room(rs)
    [event, after] = await _chain(room, 2)
    head = await log.head()
    async with rs._commit_lock:
        # Decided and queued for commit, then cancelled: it still commits (the room's
        # model already builds on it) before the cancellation completes.
        decided = asyncio.create_task(rs.submit(event))
        await _until(lambda: len(rs._commit_queue) == 1, "the event was decided")
        # The same event again: this caller holds the room while it waits for the commit.
        again = asyncio.create_task(rs.submit(event))
        # Queued behind it, not taken yet, then cancelled: withdrawn.
        queued = asyncio.create_task(rs.submit(after))
        await _until(
            lambda: any(slot.queue for slot in rs._slots.values()), "the next event is queued"
        )
        decided.cancel()
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert not decided.done()
    with pytest.raises(asyncio.CancelledError):
        await decided
    duplicate = await again
    assert duplicate.duplicate and duplicate.status is Status.ACCEPTED
    assert await log.head() == head + 1
    logged = await _log_event_ids(log)
    assert logged.count(event.event_id) == 1 and after.event_id not in logged
    assert room.room_id is not None
    assert (await rs.latest_events(room.room_id)).prev_event_ids == (event.event_id,)
    second = await rs.submit(after)
    assert second.status is Status.ACCEPTED and second.log_offset == head + 2


async def test_one_input_of_several_rooms_answers_in_order(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    first, second = await _room(rs), await _room(rs)
    a, b = await _chain(first, 5), await _chain(second, 5)
    unknown = first.build(
        "m.room.message",
        ALICE,
        {"body": "x"},
        state_key=None,
        prevs=[a[0].event_id],
        auth_state={},
        depth=1,
        room_id="!nowhere:test.example",
    )
    items = [InputEvent(e) for pair in zip(a, b, strict=True) for e in pair]
    items.insert(3, InputEvent(unknown))
    batches = rs.batches
    results = await rs.input(items)
    assert isinstance(results[3], InputError) and "unknown room" in str(results[3])
    accepted = [r for r in results if isinstance(r, InputResult)]
    assert [r.event_id for r in accepted] == [e.event_id for p in zip(a, b, strict=True) for e in p]
    assert all(r.status is Status.ACCEPTED for r in accepted)
    assert rs.batches - batches <= 2  # both rooms' events in the same commit(s)
    for room, chain in ((first, a), (second, b)):
        offsets = [r.log_offset for r in accepted if r.event_id in {e.event_id for e in chain}]
        assert offsets == sorted(offsets)
        assert room.room_id is not None
        assert (await rs.latest_events(room.room_id)).prev_event_ids == (chain[-1].event_id,)
