"""Backfill input: outliers found again in history get their place in the DAG, the room's
backward extremities follow what is missing, events after another room's are refused,
and a rebuild from the log answers the same."""

from __future__ import annotations

from typing import Any

from myelin.core.events import Event
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.rebuild import rebuild
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputError, InputEvent, InputKind, Origin, Status
from myelin.storage import Database

from .rooms import SERVER, Chain, RoomScript, user

ALICE, BOB = user("alice"), user("bob")


def history(room: RoomScript, room_id: str) -> list[Event]:
    """A room's first events as its own server made them (none submitted here): create,
    Alice's join, public join rules, two messages, Bob's join."""
    room.room_id = room_id
    chain = Chain(room)
    create, alice, rules = chain.opening(ALICE)
    one = chain.add("m.room.message", ALICE, {"body": "1"})
    two = chain.add("m.room.message", ALICE, {"body": "2"})
    bob = chain.add("m.room.member", BOB, {"membership": "join"}, BOB)
    return [create, alice, rules, one, two, bob]


async def answers(rs: Roomserver, room_id: str, events: list[Event]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "backward": await rs.backward_extremities(room_id),
        "current": await rs.current_state(room_id),
        "latest": (await rs.latest_events(room_id)).prev_event_ids,
    }
    for event in events:
        out[event.event_id] = (
            await rs.event_status(event.event_id),
            await rs.state_before(event.event_id),
        )
    return out


async def test_backfill_fills_the_dag_from_the_join_back(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    create, alice, rules, one, two, bob = events = history(room, f"!hist:{SERVER}")

    # Joined over federation: the room's state as outliers, the join with that state.
    outliers = [InputEvent(e, InputKind.OUTLIER, Origin.FEDERATED) for e in (create, alice, rules)]
    stored = await rs.input(outliers)
    assert [getattr(r, "status", r) for r in stored] == [Status.OUTLIER] * 3
    state = {e.state_tuple: e.event_id for e in (create, alice, rules)}
    [joined] = await rs.input([InputEvent(bob, InputKind.NEW, Origin.FEDERATED, state=state)])
    assert not isinstance(joined, InputError) and joined.status is Status.ACCEPTED
    assert await rs.backward_extremities(room.room_id or "") == [two.event_id]

    # The newest history first, with the state before it given: its prev is missing now.
    [got] = await rs.input([InputEvent(two, InputKind.BACKFILL, Origin.FEDERATED, state=state)])
    assert not isinstance(got, InputError) and got.status is Status.ACCEPTED
    assert await rs.backward_extremities(room.room_id or "") == [one.event_id]

    # The rest back to the create event: the outliers among it get state.
    results = await rs.input(
        [InputEvent(e, InputKind.BACKFILL, Origin.FEDERATED) for e in (create, alice, rules, one)]
    )
    assert [getattr(r, "status", r) for r in results] == [Status.ACCEPTED] * 4
    assert await rs.backward_extremities(room.room_id or "") == []
    assert await rs.state_before(alice.event_id) == {("m.room.create", ""): create.event_id}
    assert await rs.state_before(one.event_id) == state
    # History moves neither the front of the room nor its current state.
    assert (await rs.latest_events(room.room_id or "")).prev_event_ids == (bob.event_id,)
    assert (await rs.current_state(room.room_id or ""))[("m.room.member", BOB)] == bob.event_id

    before = await answers(rs, room.room_id or "", events)
    await rebuild(db, log)
    assert await answers(await Roomserver.open(db, log), room.room_id or "", events) == before


async def test_backfilled_event_after_another_room_is_refused(
    db: Database, log: DiskEventLog
) -> None:
    rs = await Roomserver.open(db, log)
    other = RoomScript(rs, "10")
    await other.create(ALICE)
    await other.join(ALICE)
    elsewhere, _ = await other.send("m.room.message", ALICE, {"body": "P"})

    room = RoomScript(rs, "10")
    create, alice, rules, _, _, bob = history(room, f"!cross:{SERVER}")
    await rs.input(
        [InputEvent(e, InputKind.OUTLIER, Origin.FEDERATED) for e in (create, alice, rules)]
    )
    state = {e.state_tuple: e.event_id for e in (create, alice, rules)}
    await rs.input([InputEvent(bob, InputKind.NEW, Origin.FEDERATED, state=state)])
    follows = room.build(
        "m.room.message",
        ALICE,
        {"body": "Q"},
        state_key=None,
        prevs=[elsewhere.event_id],
        auth_state=state,
        depth=9,
    )
    for given in (None, state):
        [result] = await rs.input(
            [InputEvent(follows, InputKind.BACKFILL, Origin.FEDERATED, state=given)]
        )
        assert isinstance(result, InputError), result
        assert "another room" in str(result)
    assert await rs.event_status(follows.event_id) is None  # refused: nothing stored
