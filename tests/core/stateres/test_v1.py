"""State resolution v1 (room version 1): passes over power levels, join rules and
members in (depth, sha1) order, then the deepest authorised event for other keys."""

from __future__ import annotations

import hashlib

from myelin.core.stateres import resolve_state

from .graph import ALICE, BOB, CHARLIE, Spec, build, power, topic

PL = ("m.room.power_levels", "")
TOPIC = ("m.room.topic", "")


def test_power_levels_pass_applies_deeper_events_last() -> None:
    """v1 keeps the deeper power levels (PA) where v2 orders by power and time (PB)."""
    events = [
        topic("T1", ALICE),
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        power("PB", ALICE, {ALICE: 100, CHARLIE: 50}),
    ]
    chains = [["END", "PA", "T1", "START"], ["END", "PB", "START"]]
    v1 = build("1", events, chains)
    assert v1.state_after["$END"][PL] == "$PA"
    assert v1.state_after["$END"][TOPIC] == "$T1"
    v2 = build("2", events, chains)
    assert v2.state_after["$END"][PL] == "$PB"


def test_power_levels_pass_stops_at_the_first_unauthorised_event() -> None:
    room = build(
        "1",
        [
            power("P0", ALICE, {ALICE: 100, BOB: 50}),
            topic("T", ALICE),
            power("PBOB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
            power("PDEM", ALICE, {ALICE: 100, BOB: 0}),
        ],
        [["END", "PBOB", "T", "P0", "START"], ["END", "PDEM", "P0"]],
    )
    assert room.state_after["$END"][PL] == "$PDEM"


def test_other_conflicts_take_the_deepest_authorised_event() -> None:
    room = build(
        "1",
        [
            topic("TA", ALICE),
            Spec("MSG", "m.room.message", BOB, {"body": "hi"}),
            topic("TB", BOB),  # Bob has level 0; topics need 50
        ],
        [["END", "TA", "START"], ["END", "TB", "MSG", "START"]],
    )
    assert room.events["$TB"].depth > room.events["$TA"].depth
    assert room.state_after["$END"][TOPIC] == "$TA"


def test_deepest_event_wins_when_authorised() -> None:
    room = build(
        "1",
        [
            topic("TA", ALICE),
            Spec("MSG", "m.room.message", BOB, {"body": "hi"}),
            topic("TB", ALICE),
        ],
        [["END", "TA", "START"], ["END", "TB", "MSG", "START"]],
    )
    assert room.state_after["$END"][TOPIC] == "$TB"


def test_when_nothing_passes_auth_the_shallowest_is_kept() -> None:
    room = build(
        "1",
        [
            topic("TA", BOB),
            Spec("MSG", "m.room.message", BOB, {"body": "hi"}),
            topic("TB", CHARLIE),
        ],
        [["END", "TA", "START"], ["END", "TB", "MSG", "START"]],
    )
    assert room.state_after["$END"][TOPIC] == "$TA"


def test_equal_depth_is_decided_by_lowest_sha1_of_the_event_id() -> None:
    room = build(
        "1",
        [topic("TA", ALICE), topic("TB", ALICE)],
        [["END", "TA", "START"], ["END", "TB", "START"]],
    )
    lowest = min(["$TA", "$TB"], key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    assert room.state_after["$END"][TOPIC] == lowest


def test_unknown_events_cannot_be_used() -> None:
    room = build("1", [topic("TA", ALICE)], [["END", "TA", "START"]])
    real = room.state_after["$TA"]
    with_unknown = {**real, TOPIC: "$nowhere"}
    assert resolve_state("1", [real, with_unknown], room.fetch)[TOPIC] == "$TA"
    both_unknown = {**real, TOPIC: "$gone"}
    resolved = resolve_state("1", [with_unknown, both_unknown], room.fetch)
    assert TOPIC not in resolved
    assert resolved[PL] == real[PL]


def test_a_key_missing_from_some_states_is_not_a_conflict_in_v1() -> None:
    room = build("1", [topic("TA", BOB)], [["END", "TA", "START"]])
    # Bob may not set the topic, but v1 only checks conflicting events.
    assert room.state_after["$END"][TOPIC] == "$TA"
