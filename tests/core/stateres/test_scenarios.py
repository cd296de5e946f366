"""The classic state resolution v2 scenarios, run through real forks and merges.

Each scenario forks after START and merges at END; the assertion is on the state at END
(the resolution of the forks). The expectations follow from the spec's algorithm: power
events are ordered before others, senders with more power first, and ordinary events by
their mainline position.
"""

from __future__ import annotations

import pytest

from myelin.core.events import StateKey

from .graph import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    ZARA,
    Room,
    Spec,
    build,
    join_rules,
    member,
    power,
    topic,
)

V2_VERSIONS = ["2", "3", "6", "10", "11"]
ALL_V2 = [*V2_VERSIONS, "12"]


def expect(room: Room, names: list[str]) -> None:
    """The state at END holds each named event at its key."""
    state = room.state_after["$END"]
    for name in names:
        event = room.events["$" + name]
        assert state.get(event.state_tuple) == event.event_id, (name, state)


def key_of(room: Room, name: str) -> StateKey:
    return room.events["$" + name].state_tuple


@pytest.mark.parametrize("version", ALL_V2)
def test_ban_beats_concurrent_power_levels(version: str) -> None:
    """Alice bans Bob on one fork while Bob changes power levels on the other: the ban
    (power event by the more powerful sender) is applied first, so Bob's change fails."""
    room = build(
        version,
        [
            power("PA", ALICE, {ALICE: 100, BOB: 50}),
            member("MA", ALICE, "join"),
            member("MB", ALICE, "ban", BOB),
            power("PB", BOB, {ALICE: 100, BOB: 50}),
        ],
        [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]],
    )
    expect(room, ["PA", "MA", "MB"])


@pytest.mark.parametrize("version", ALL_V2)
def test_join_rule_evasion(version: str) -> None:
    """Evelyn joins concurrently with the room going private: the join rules win."""
    room = build(
        version,
        [join_rules("JR", ALICE, "private"), member("ME", EVELYN, "join")],
        [["END", "JR", "START"], ["END", "ME", "START"]],
    )
    expect(room, ["JR"])
    assert key_of(room, "ME") not in room.state_after["$END"]


@pytest.mark.parametrize("version", ALL_V2)
def test_offtopic_power_levels(version: str) -> None:
    """Charlie's later power levels survive although a fork only knows Alice's."""
    room = build(
        version,
        [
            power("PA", ALICE, {ALICE: 100, BOB: 50}),
            power("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
            power("PC", CHARLIE, {ALICE: 100, BOB: 50, CHARLIE: 0}),
        ],
        [["END", "PC", "PB", "PA", "START"], ["END", "PA"]],
    )
    expect(room, ["PC"])


@pytest.mark.parametrize("version", ALL_V2)
def test_topic_basic(version: str) -> None:
    """Bob's topic, authorised by power levels Alice has since replaced, loses."""
    room = build(
        version,
        [
            topic("T1", ALICE),
            power("PA1", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", ALICE),
            power("PA2", ALICE, {ALICE: 100, BOB: 0}),
            power("PB", BOB, {ALICE: 100, BOB: 50}),
            topic("T3", BOB),
        ],
        [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]],
    )
    expect(room, ["PA2", "T2"])


@pytest.mark.parametrize("version", ALL_V2)
def test_topic_reset(version: str) -> None:
    """Bob's topic is undone when his concurrent ban is resolved before it."""
    room = build(
        version,
        [
            topic("T1", ALICE),
            power("PA", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", BOB),
            member("MB", ALICE, "ban", BOB),
        ],
        [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]],
    )
    expect(room, ["T1", "MB", "PA"])


@pytest.mark.parametrize("version", ALL_V2)
def test_topic_with_later_merge(version: str) -> None:
    """A fork that merged (MZ1) and then set a topic keeps it over the older fork's."""
    room = build(
        version,
        [
            topic("T1", ALICE),
            power("PA1", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", ALICE),
            power("PA2", ALICE, {ALICE: 100, BOB: 0}),
            power("PB", BOB, {ALICE: 100, BOB: 50}),
            topic("T3", BOB),
            Spec("MZ1", "m.room.message", ZARA, {"body": "merge"}),
            topic("T4", ALICE),
        ],
        [
            ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
            ["END", "MZ1", "T3", "PB", "PA1"],
        ],
    )
    expect(room, ["T4", "PA2"])


@pytest.mark.parametrize("version", ALL_V2)
def test_mainline_sort(version: str) -> None:
    """Topics are ordered by the mainline of the resolved power levels: T3 (based on PA2)
    comes after T4 (based on PA1), so T3 wins though T4 is newer."""
    room = build(
        version,
        [
            topic("T1", ALICE),
            power("PA1", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", ALICE),
            Spec(
                "PA2",
                "m.room.power_levels",
                ALICE,
                {"users": {ALICE: 100, BOB: 50}, "events": {"m.room.power_levels": 100}},
                "",
            ),
            power("PB", BOB, {ALICE: 100, BOB: 50}),
            topic("T3", BOB),
            topic("T4", ALICE),
        ],
        [["END", "T3", "PA2", "T2", "PA1", "T1", "START"], ["END", "T4", "PB", "PA1"]],
    )
    expect(room, ["T3", "PA2"])


@pytest.mark.parametrize("version", ALL_V2)
def test_no_conflict_is_the_union(version: str) -> None:
    """Forks that touch different keys merge to the union of their changes."""
    room = build(
        version,
        [topic("T1", ALICE), join_rules("JR", ALICE, "invite")],
        [["END", "T1", "START"], ["END", "JR", "START"]],
    )
    expect(room, ["T1", "JR", "IPOWER", "IMB"])
