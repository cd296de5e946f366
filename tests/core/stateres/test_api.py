"""The public entry point: dispatch, fast paths and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from myelin.core.events import Event
from myelin.core.roomversions import UnsupportedRoomVersion, room_version
from myelin.core.stateres import StateResolutionError, resolve_state

from .graph import ALICE, BOB, build, power, topic

PL = ("m.room.power_levels", "")
TOPIC = ("m.room.topic", "")


def refuse(event_id: str) -> Event | None:
    raise AssertionError(f"no event should be fetched, asked for {event_id}")


@pytest.mark.parametrize("version", ["1", "2", "11", "12"])
def test_fast_paths_fetch_nothing(version: str) -> None:
    state = {PL: "$p", TOPIC: "$t"}
    assert resolve_state(version, [], refuse) == {}
    single = resolve_state(version, [state], refuse)
    assert single == state and single is not state
    assert resolve_state(version, [state, dict(state), state], refuse) == state


def test_version_may_be_given_as_identifier_or_value() -> None:
    room = build(
        "10",
        [topic("T1", ALICE), topic("T2", ALICE)],
        [["END", "T1", "START"], ["END", "T2", "START"]],
    )
    sets = [room.state_after["$T1"], room.state_after["$T2"]]
    assert resolve_state("10", sets, room.fetch) == resolve_state(
        room_version("10"), sets, room.fetch
    )
    with pytest.raises(UnsupportedRoomVersion):
        resolve_state("99", sets, room.fetch)


@pytest.mark.parametrize(
    "bad",
    [
        [{PL: "$p"}, ["not", "a", "mapping"]],
        [{("m.room.topic",): "$t"}, {PL: "$p"}],
        [{("m.room.topic", 1): "$t"}, {PL: "$p"}],
        [{TOPIC: 5}, {PL: "$p"}],
    ],
)
def test_malformed_state_sets_are_refused(bad: list[Any]) -> None:
    with pytest.raises(StateResolutionError):
        resolve_state("10", bad, refuse)


@pytest.mark.parametrize("version", ["2", "11", "12"])
def test_unknown_conflicted_events_are_left_out(version: str) -> None:
    room = build(version, [topic("T1", ALICE)], [["END", "T1", "START"]])
    real = room.state_after["$T1"]
    resolved = resolve_state(version, [real, {**real, TOPIC: "$unknown"}], room.fetch)
    assert resolved[TOPIC] == "$T1"
    resolved = resolve_state(version, [{**real, TOPIC: "$a"}, {**real, TOPIC: "$b"}], room.fetch)
    assert TOPIC not in resolved
    assert resolved[PL] == real[PL]


def test_a_fetch_callback_returning_a_non_event_is_refused() -> None:
    room = build("10", [topic("T1", ALICE)], [["END", "T1", "START"]])
    real = room.state_after["$T1"]

    def raw(event_id: str) -> Any:
        event = room.fetch(event_id)
        return None if event is None else dict(event.pdu)

    with pytest.raises(StateResolutionError, match="not an Event"):
        resolve_state("10", [real, {**real, TOPIC: "$IPOWER"}], raw)


def test_an_event_fetched_under_another_id_is_not_used() -> None:
    room = build("10", [topic("T1", ALICE)], [["END", "T1", "START"]])
    real = room.state_after["$T1"]

    def lying(event_id: str) -> Event | None:
        if event_id == "$impostor":
            return room.events["$T1"]
        return room.fetch(event_id)

    resolved = resolve_state("10", [{**real, TOPIC: "$impostor"}, real], lying)
    assert resolved[TOPIC] == "$T1"


@pytest.mark.parametrize("version", ["2", "11", "12"])
def test_unauthorised_conflicted_events_are_dropped(version: str) -> None:
    room = build(
        version,
        [power("PB", BOB, {ALICE: 100, BOB: 100}), topic("T1", ALICE)],
        [["END", "PB", "START"], ["END", "T1", "START"]],
    )
    state = room.state_after["$END"]
    assert state[PL] == "$IPOWER"  # Bob could not promote himself
    assert state[TOPIC] == "$T1"


@pytest.mark.parametrize("version", ["2", "12"])
def test_forged_auth_cycles_end_instead_of_looping(version: str) -> None:
    """v1/v2 event IDs are chosen by the sender, so auth events can be forged to form a
    cycle (later versions' hash IDs cannot, but the walk must not trust that). Events on
    a cycle can never follow their auth events; they are left out."""
    room = build(version, [topic("T1", ALICE)], [["END", "T1", "START"]])
    real = room.state_after["$T1"]
    base = room.events["$IPOWER"]

    def forged(event_id: str, cites: str) -> Event:
        ids = [*base.auth_event_ids, cites]
        refs = [[i, {}] for i in ids] if version == "2" else ids
        return Event(event_id, base.room_version, {**base.pdu, "auth_events": refs})

    extra = {"$loop1": forged("$loop1", "$loop2"), "$loop2": forged("$loop2", "$loop1")}

    def fetch(event_id: str) -> Event | None:
        return extra.get(event_id) or room.fetch(event_id)

    resolved = resolve_state(version, [{**real, PL: "$loop1"}, {**real, PL: "$loop2"}], fetch)
    assert PL not in resolved
    assert resolved[TOPIC] == "$T1"
