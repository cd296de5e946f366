"""A room built from a scripted sequence of events answers every query correctly.

The expected states are written out by hand from the specification's rules, not
computed by the code under test.
"""

from __future__ import annotations

from myelin.core.events import Event, StateKey
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputError, InputEvent, Status
from myelin.storage import Database

from .rooms import RoomScript, user

ALICE, BOB, CAROL = user("alice"), user("bob"), user("carol")
CREATE: StateKey = ("m.room.create", "")
PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")
TOPIC: StateKey = ("m.room.topic", "")


def member(u: str) -> StateKey:
    return ("m.room.member", u)


def power(users: dict[str, int]) -> dict[str, object]:
    return {
        "users": users,
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "events": {},
    }


async def test_scripted_room_answers_state_at_every_event(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    expected_before: dict[str, dict[StateKey, str]] = {}
    expected_after: dict[str, dict[StateKey, str]] = {}
    state: dict[StateKey, str] = {}

    def accepted(event: Event) -> None:
        expected_before[event.event_id] = dict(state)
        if event.state_key is not None:
            state[event.state_tuple] = event.event_id
        expected_after[event.event_id] = dict(state)

    create = await room.create(ALICE)
    accepted(create)
    accepted(await room.join(ALICE))
    pl1, r = await room.send("m.room.power_levels", ALICE, power({ALICE: 100}), state_key="")
    assert r.status is Status.ACCEPTED
    accepted(pl1)
    jr, r = await room.send("m.room.join_rules", ALICE, {"join_rule": "public"}, state_key="")
    assert r.status is Status.ACCEPTED
    accepted(jr)
    accepted(await room.join(BOB))
    accepted(await room.join(CAROL))
    pl2, r = await room.send(
        "m.room.power_levels", ALICE, power({ALICE: 100, BOB: 50}), state_key=""
    )
    assert r.status is Status.ACCEPTED
    accepted(pl2)
    msg, r = await room.send("m.room.message", CAROL, {"msgtype": "m.text", "body": "hi"})
    assert r.status is Status.ACCEPTED
    accepted(msg)
    assert await rs.membership(room.room_id, CAROL) == "join"  # type: ignore[arg-type]

    # Carol (power 0) may not change power levels: rejected, recorded, not served.
    bad, r = await room.send("m.room.power_levels", CAROL, power({CAROL: 100}), state_key="")
    assert r.status is Status.REJECTED and r.reason
    assert await rs.event(bad.event_id) is None
    assert (await rs.event_status(bad.event_id))[0] is Status.REJECTED  # type: ignore[index]

    # Bob (50) bans Carol (0).
    ban, r = await room.send("m.room.member", BOB, {"membership": "ban"}, state_key=CAROL)
    assert r.status is Status.ACCEPTED
    accepted(ban)
    assert await rs.membership(room.room_id, CAROL) == "ban"  # type: ignore[arg-type]
    _, r = await room.send("m.room.message", CAROL, {"msgtype": "m.text", "body": "x"})
    assert r.status is Status.REJECTED

    # A fork after the ban: Bob sets the topic on one branch, then Alice takes Bob's power
    # away on the other (both authorised by the current state when they arrive).
    branch_b, r = await room.send(
        "m.room.topic", BOB, {"topic": "bob's"}, state_key="", prevs=[ban.event_id]
    )
    assert r.status is Status.ACCEPTED
    branch_a, r = await room.send(
        "m.room.power_levels", ALICE, power({ALICE: 100}), state_key="", prevs=[ban.event_id]
    )
    assert r.status is Status.ACCEPTED
    after_ban = dict(state)
    expected_before[branch_a.event_id] = dict(after_ban)
    expected_after[branch_a.event_id] = {**after_ban, PL: branch_a.event_id}
    expected_before[branch_b.event_id] = dict(after_ban)
    expected_after[branch_b.event_id] = {**after_ban, TOPIC: branch_b.event_id}
    latest = await rs.latest_events(room.room_id)  # type: ignore[arg-type]
    assert sorted(latest.prev_event_ids) == sorted([branch_a.event_id, branch_b.event_id])
    assert latest.depth == branch_a.depth + 1

    # State resolution: the power levels change is applied first, after which Bob no
    # longer has the power to set the topic, so the topic is dropped.
    resolved = {**after_ban, PL: branch_a.event_id}
    assert await rs.current_state(room.room_id) == resolved  # type: ignore[arg-type]

    merge, r = await room.send(
        "m.room.message",
        ALICE,
        {"msgtype": "m.text", "body": "merged"},
        prevs=[branch_a.event_id, branch_b.event_id],
    )
    assert r.status is Status.ACCEPTED
    expected_before[merge.event_id] = dict(resolved)
    expected_after[merge.event_id] = dict(resolved)
    assert (await rs.latest_events(room.room_id)).prev_event_ids == (  # type: ignore[arg-type]
        merge.event_id,
    )

    # Bob sets the topic again on his old branch: authorised by the state before it,
    # not by the current state: soft-failed, not a forward extremity.
    soft, r = await room.send(
        "m.room.topic", BOB, {"topic": "again"}, state_key="", prevs=[branch_b.event_id]
    )
    assert r.status is Status.SOFT_FAILED
    expected_before[soft.event_id] = expected_after[branch_b.event_id]
    expected_after[soft.event_id] = {**expected_after[branch_b.event_id], TOPIC: soft.event_id}
    assert (await rs.latest_events(room.room_id)).prev_event_ids == (  # type: ignore[arg-type]
        merge.event_id,
    )
    assert await rs.current_state(room.room_id) == resolved  # type: ignore[arg-type]

    # Every event answers state-at-event queries correctly.
    for event_id, expected in expected_before.items():
        assert await rs.state_before(event_id) == expected, event_id
        assert await rs.state_after(event_id) == expected_after[event_id], event_id

    # Other queries.
    assert await rs.rooms_of_user(ALICE) == [room.room_id]
    assert await rs.rooms_of_user(CAROL) == []
    assert await rs.rooms_of_user(CAROL, "ban") == [room.room_id]
    assert await rs.membership(room.room_id, user("nobody")) is None  # type: ignore[arg-type]
    chain = await rs.auth_chain([merge.event_id])
    chain_ids = {e.event_id for e in chain}
    assert set(merge.auth_event_ids) <= chain_ids
    assert create.event_id in chain_ids and msg.event_id not in chain_ids
    events = await rs.current_state_events(room.room_id, [PL, JR])  # type: ignore[arg-type]
    assert events[PL].event_id == branch_a.event_id and events[JR].event_id == jr.event_id


async def test_duplicates_unknown_rooms_and_missing_events(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "12")
    create = await room.create(ALICE)
    join = await room.make("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
    first = await rs.submit(join)
    again = await rs.submit(join)
    assert again.duplicate and not first.duplicate
    assert again.log_offset == first.log_offset and again.status is first.status
    assert await log.head() == 2

    other = RoomScript(rs, "12")
    orphan_create = other.build(
        "m.room.create",
        BOB,
        {"room_version": "12"},
        state_key="",
        prevs=[],
        auth_state={},
        depth=1,
    )
    other.room_id = orphan_create.room_id
    orphan = other.build(
        "m.room.member",
        BOB,
        {"membership": "join"},
        state_key=BOB,
        prevs=[orphan_create.event_id],
        auth_state={},
        depth=2,
    )
    results = await rs.input([InputEvent(orphan)])
    assert isinstance(results[0], InputError)
    assert await rs.event(orphan.event_id) is None
    assert await log.head() == 2  # nothing appended
    assert await rs.state_after(join.event_id) == {
        CREATE: create.event_id,
        member(ALICE): join.event_id,
    }
