"""The roomserver's guard on state it is given (a join's, or the state at a gap, from
another server) and on the state an event is authorised against: a rejected event, an
event of another room, a non-state event or one listed under a key not its own never
authorises anything and never enters a stored state, whatever the caller passes.

Each test changes its decision when the guard is gone: the rejected power levels in the
state would reject an event the room's own events authorise."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from myelin.core.events import Event, StateKey
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.rebuild import rebuild
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import (
    InputError,
    InputEvent,
    InputKind,
    Origin,
    Status,
    UnknownEventError,
)
from myelin.storage import Database

from .rooms import SERVER, Chain, RoomScript, user

ALICE, BOB, CAROL, DAVE, MALLORY = (user(n) for n in ("alice", "bob", "carol", "dave", "mallory"))
PL: StateKey = ("m.room.power_levels", "")


def levels(users: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"users": users, "users_default": 0, "state_default": 50, **extra}


async def answers(rs: Roomserver, room_id: str, events: list[Event]) -> dict[str, Any]:
    """What the roomserver says of a room and its events (compared across a rebuild)."""
    out: dict[str, Any] = {
        "current": await rs.current_state(room_id),
        "latest": (await rs.latest_events(room_id)).prev_event_ids,
    }
    for event in events:
        try:
            before: dict[StateKey, str] | None = await rs.state_before(event.event_id)
        except UnknownEventError:  # rejected, or an outlier
            before = None
        out[event.event_id] = (await rs.event_status(event.event_id), before)
    return out


async def test_given_state_loses_rejected_foreign_and_non_state_entries(
    db: Database, log: DiskEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    create = await room.create(ALICE)
    await room.join(ALICE)
    _, got = await room.send(
        "m.room.power_levels", ALICE, levels({ALICE: 100, BOB: 50}), state_key=""
    )
    assert got.status is Status.ACCEPTED
    rules, got = await room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, state_key="")
    assert got.status is Status.ACCEPTED
    await room.join(BOB)
    # Bob (50) takes Alice's power and gives himself 100: rejected.
    bad_pl, got = await room.send(
        "m.room.power_levels", BOB, levels({ALICE: 0, BOB: 100}), state_key=""
    )
    assert got.status is Status.REJECTED
    message, got = await room.send("m.room.message", ALICE, {"body": "hi"})
    assert got.status is Status.ACCEPTED
    assert room.room_id is not None
    room_id = room.room_id
    state = await rs.current_state(room_id)

    other = RoomScript(rs, "10")
    await other.create(CAROL)
    carol = await other.join(CAROL)

    # An event after one this server lacks, with the state before it as another server
    # lists it: the rejected power levels, Carol's join to the other room, a message as
    # the topic and the join rules as the room's name.
    gap = await room.make("m.room.message", ALICE, {"body": "unseen"})
    topic = room.build(
        "m.room.topic",
        ALICE,
        {"topic": "guarded"},
        state_key="",
        prevs=[gap.event_id],
        auth_state=state,
        depth=gap.depth + 1,
    )
    given = {
        **state,
        PL: bad_pl.event_id,
        ("m.room.member", CAROL): carol.event_id,
        ("m.room.topic", ""): message.event_id,
        ("m.room.name", ""): rules.event_id,
    }
    with caplog.at_level(logging.INFO, logger="myelin.roomserver"):
        [result] = await rs.input([InputEvent(topic, InputKind.NEW, Origin.FEDERATED, state=given)])
    # Against the rejected power levels Alice (0) could not set the topic; without power
    # levels the creator can.
    assert not isinstance(result, InputError), result
    assert result.status is Status.ACCEPTED, result
    expected = {k: v for k, v in state.items() if k != PL}
    assert await rs.state_before(topic.event_id) == expected
    assert await rs.state_after(topic.event_id) == {
        **expected,
        ("m.room.topic", ""): topic.event_id,
    }
    current = await rs.current_state(room_id)
    assert not {bad_pl.event_id, carol.event_id, message.event_id} & set(current.values())
    assert ("m.room.name", "") not in current
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"4 of {len(given)} entries dropped" in logged
    for event_id in (bad_pl.event_id, carol.event_id, message.event_id, rules.event_id):
        assert event_id in logged

    events = [create, bad_pl, message, topic]
    before = await answers(rs, room_id, events)
    await rebuild(db, log)
    assert await answers(await Roomserver.open(db, log), room_id, events) == before


async def test_join_state_loses_a_rejected_outlier(db: Database, log: DiskEventLog) -> None:
    """A join over federation (`send_join`): its state is stored as outliers first, and
    one of them fails its own auth events."""
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    room_id = room.room_id = f"!joined:{SERVER}"
    create, alice, rules = Chain(room).opening(ALICE)
    c = {("m.room.create", ""): create.event_id}
    # Power levels set by someone who is not in the room: rejected as an outlier.
    forged = room.build(
        "m.room.power_levels",
        MALLORY,
        levels({MALLORY: 100}),
        state_key="",
        prevs=[rules.event_id],
        auth_state=c,
        depth=4,
    )
    stored = await rs.input(
        [InputEvent(e, InputKind.OUTLIER, Origin.FEDERATED) for e in (create, alice, rules, forged)]
    )
    assert [getattr(r, "status", r) for r in stored] == [Status.OUTLIER] * 3 + [Status.REJECTED]
    state = {e.state_tuple: e.event_id for e in (create, alice, rules)}
    dave = room.build(
        "m.room.member",
        DAVE,
        {"membership": "join"},
        state_key=DAVE,
        prevs=[rules.event_id],
        auth_state=state,
        depth=4,
    )
    [joined] = await rs.input(
        [InputEvent(dave, InputKind.NEW, Origin.FEDERATED, state={**state, PL: forged.event_id})]
    )
    assert not isinstance(joined, InputError) and joined.status is Status.ACCEPTED, joined
    assert await rs.state_before(dave.event_id) == state
    assert await rs.current_state(room_id) == {**state, ("m.room.member", DAVE): dave.event_id}

    # Alice sets the topic after the join (Dave's server relays it): authorised by the
    # room's state, which holds no power levels (the forged ones would give her 0).
    topic = room.build(
        "m.room.topic",
        ALICE,
        {"topic": "t"},
        state_key="",
        prevs=[dave.event_id],
        auth_state=state,
        depth=6,
    )
    [got] = await rs.input([InputEvent(topic, InputKind.NEW, Origin.FEDERATED)])
    assert not isinstance(got, InputError) and got.status is Status.ACCEPTED, got

    events = [create, forged, dave, topic]
    before = await answers(rs, room_id, events)
    await rebuild(db, log)
    assert await answers(await Roomserver.open(db, log), room_id, events) == before


async def test_state_holding_an_outlier_rejected_later_authorises_nothing(
    db: Database, log: DiskEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    """The state given with a join names power levels held as an outlier, valid by its
    own auth events; backfill then places them in the DAG, where they are rejected. The
    room's state still names them, and the events after the join are checked against
    it as if they were not there."""
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    room.room_id = f"!later:{SERVER}"
    chain = Chain(room)
    add = chain.add
    s = chain.state
    add("m.room.create", ALICE, {"room_version": "10", "creator": ALICE}, "")
    add("m.room.member", ALICE, {"membership": "join"}, ALICE)
    pl1 = add("m.room.power_levels", ALICE, levels({ALICE: 100, BOB: 90}), "")
    add("m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    add("m.room.member", BOB, {"membership": "join"}, BOB)
    pl2 = add("m.room.power_levels", ALICE, levels({ALICE: 100, BOB: 50}), "")
    # Bob, citing the power levels that gave him 90, keeps his 90 and makes messages
    # need 60: valid by its auth events, rejected by the state before it (he has 50).
    s[PL] = pl1.event_id
    forged = add("m.room.power_levels", BOB, levels({ALICE: 100, BOB: 90}, events_default=60), "")
    given = dict(s)
    dave = add("m.room.member", DAVE, {"membership": "join"}, DAVE)
    history = chain.events[:-1]

    stored = await rs.input([InputEvent(e, InputKind.OUTLIER, Origin.FEDERATED) for e in history])
    assert [getattr(r, "status", r) for r in stored] == [Status.OUTLIER] * len(history)
    [joined] = await rs.input([InputEvent(dave, InputKind.NEW, Origin.FEDERATED, state=given)])
    assert not isinstance(joined, InputError) and joined.status is Status.ACCEPTED, joined
    backfilled = await rs.input(
        [InputEvent(e, InputKind.BACKFILL, Origin.FEDERATED) for e in history]
    )
    statuses = [getattr(r, "status", r) for r in backfilled]
    assert statuses == [Status.ACCEPTED] * (len(history) - 1) + [Status.REJECTED]
    # The premise: the state after the join (and so the room's) still names them.
    assert (await rs.state_after(dave.event_id))[PL] == forged.event_id

    # Dave speaks, citing the power levels before the forged ones (messages need 0).
    # The forged ones would need 60 of him; without power levels, messages need 0.
    message = room.build(
        "m.room.message",
        DAVE,
        {"body": "hello"},
        state_key=None,
        prevs=[dave.event_id],
        auth_state={**s, PL: pl2.event_id},
        depth=dave.depth + 1,
    )
    with caplog.at_level(logging.INFO, logger="myelin.roomserver"):
        [got] = await rs.input([InputEvent(message, InputKind.NEW, Origin.FEDERATED)])
    assert not isinstance(got, InputError) and got.status is Status.ACCEPTED, got
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"{forged.event_id} left out (rejected)" in logged
