"""The state resets that motivated state resolution v2.1 (room version 12).

Both scenarios come from the description of the change in content/rooms/v12.md: a server
that learnt the room's state through a partial sync holds an outdated event for one key,
so the same history yields a conflict. Room version 11 (v2) resets state; room version
12 (v2.1) does not.
"""

from __future__ import annotations

from myelin.core.stateres import resolve_state

from .graph import ALICE, BOB, CHARLIE, Room, build, join_rules, member, power, topic


def test_join_rules_survive_when_their_sender_has_left() -> None:
    """Alice changes the join rules twice, then leaves. A state set with the first join
    rules conflicts with the real one. v2 replays both on top of the unconflicted state,
    where Alice has left, so both fail and the room loses its join rules; v2.1 replays
    them from the empty state, on their own auth events, and keeps the newest."""
    chains = [["END", "ALEAVE", "JR2", "JR1", "START"]]
    events = [
        join_rules("JR1", ALICE, "invite"),
        join_rules("JR2", ALICE, "public"),
        member("ALEAVE", ALICE, "leave"),
    ]
    results = {}
    for version in ("11", "12"):
        room = build(version, events, chains)
        real = room.state_after["$ALEAVE"]
        outdated = {**real, ("m.room.join_rules", ""): "$JR1"}
        results[version] = resolve_state(version, [real, outdated], room.fetch)
        assert results[version][("m.room.member", ALICE)] == "$ALEAVE"
    assert ("m.room.join_rules", "") not in results["11"]
    assert results["12"][("m.room.join_rules", "")] == "$JR2"


def _promotions(version: str) -> tuple[Room, dict[tuple[str, str], str]]:
    room = build(
        version,
        [
            power("PL2", ALICE, {ALICE: 100, BOB: 50}),
            topic("T", BOB),
            power("PL3", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
        ],
        [["END", "PL3", "T", "PL2", "START"]],
    )
    return room, room.state_after["$PL3"]


def test_chained_promotions_survive_an_outdated_power_levels_event() -> None:
    """Alice promotes Bob (PL2), Bob promotes Charlie (PL3). A state set still holding the
    original power levels, with a topic that cites PL2, makes the auth difference miss PL2:
    v2 then rejects PL3 and resets to the original levels; v2.1 adds PL2, which lies on
    the auth path between the two conflicted events, and keeps PL3."""
    for version, expected in (("11", "$IPOWER"), ("12", "$PL3")):
        room, real = _promotions(version)
        outdated = {**real, ("m.room.power_levels", ""): "$IPOWER"}
        resolved = resolve_state(version, [real, outdated], room.fetch)
        assert resolved[("m.room.power_levels", "")] == expected, version
        assert resolved[("m.room.topic", "")] == "$T"


def test_unconflicted_state_is_restored_after_starting_empty() -> None:
    """v2.1 starts its replay from nothing, but step 5 still puts every unconflicted
    entry back: the result holds the whole unconflicted state map."""
    room, real = _promotions("12")
    outdated = {**real, ("m.room.power_levels", ""): "$IPOWER"}
    resolved = resolve_state("12", [real, outdated], room.fetch)
    for key, event_id in real.items():
        if key != ("m.room.power_levels", ""):
            assert resolved[key] == event_id
    assert set(resolved) == set(real)
