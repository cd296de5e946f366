"""The local send path: a local event is built on what the roomserver has decided, even
before that is committed (sends to one room pipeline), and a client transaction travels
in the event's log record."""

from __future__ import annotations

import asyncio

from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import ClientTxn, InputEvent, LogPayload, Status
from myelin.storage import Database

from .rooms import RoomScript, user

ALICE = user("alice")
MEMBER = ("m.room.member", ALICE)


async def test_the_template_includes_decided_but_uncommitted_events(
    db: Database, log: DiskEventLog
) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    await room.create(ALICE)
    await room.join(ALICE)
    assert room.room_id is not None
    template = rs.local_template(room.room_id, [MEMBER])
    assert template is not None
    latest, prevs, state = template
    current = {k: e.event_id for k, e in (await rs.current_state_events(room.room_id)).items()}
    first = room.build(
        "m.room.message",
        ALICE,
        {"body": "one"},
        state_key=None,
        prevs=[e.event_id for e in prevs],
        auth_state=current,
        depth=latest.depth,
    )
    seen: list[object] = []
    committed_before = rs.batches

    def decided() -> None:
        # Called before the commit: the next event builds on `first` already.
        seen.append(rs.batches)
        seen.append(rs.local_template(room.room_id or "", [MEMBER]))

    [result] = await rs.input([InputEvent(first, fresh=True)], decided=decided)
    assert not isinstance(result, Exception) and result.status is Status.ACCEPTED
    assert seen[0] == committed_before  # nothing was committed yet when decided
    next_template = seen[1]
    assert isinstance(next_template, tuple)
    next_latest, next_prevs, next_state = next_template
    assert [e.event_id for e in next_prevs] == [first.event_id]
    assert next_latest.depth == first.depth + 1
    assert next_state[MEMBER].event_id == state[MEMBER].event_id


async def test_a_chain_built_on_decided_events_commits_without_forks(
    db: Database, log: DiskEventLog
) -> None:
    """Writers that each build on the template as soon as the previous one is decided
    (what RoomWriter does) leave one forward extremity."""
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    await room.create(ALICE)
    await room.join(ALICE)
    room_id = room.room_id
    assert room_id is not None
    lock = asyncio.Lock()

    async def send(n: int) -> str:
        await lock.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                lock.release()

        try:
            template = rs.local_template(
                room_id, [MEMBER, ("m.room.create", ""), ("m.room.power_levels", "")]
            )
            assert template is not None
            latest, prevs, state = template
            event = room.build(
                "m.room.message",
                ALICE,
                {"body": str(n)},
                state_key=None,
                prevs=[e.event_id for e in prevs],
                auth_state={k: e.event_id for k, e in state.items()},
                depth=latest.depth,
            )
            [result] = await rs.input([InputEvent(event, fresh=True)], decided=release)
        finally:
            release()
        assert not isinstance(result, Exception) and result.status is Status.ACCEPTED
        return event.event_id

    before = rs.batches
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(send(n)) for n in range(20)]
    sent = [t.result() for t in tasks]
    latest = await rs.latest_events(room_id)
    assert len(latest.prev_event_ids) == 1
    assert latest.prev_event_ids[0] in sent
    assert rs.batches - before < 20  # later sends joined a commit while one was written


def test_the_client_transaction_travels_in_the_log_record() -> None:
    from myelin.core.events import Event
    from myelin.core.roomversions import room_version
    from myelin.roomserver.types import InputKind, Origin

    event = Event("$e", room_version("10"), {"type": "m.room.message", "room_id": "!r:x"})
    txn = ClientTxn("@a:x", "DEV", "send/!r:x/m.room.message", "t1")
    payload = LogPayload(event, Status.ACCEPTED, InputKind.NEW, Origin.LOCAL, txn=txn)
    assert LogPayload.decode(payload.encode()).txn == txn
    plain = LogPayload(event, Status.ACCEPTED, InputKind.NEW, Origin.LOCAL)
    assert b'"txn"' not in plain.encode()
    assert LogPayload.decode(plain.encode()).txn is None
