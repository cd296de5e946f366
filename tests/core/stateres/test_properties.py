"""Properties of state resolution over randomly forked rooms.

- The result does not depend on the order of the state sets.
- It does not depend on which event IDs the events happen to have, where the spec uses
  the ID only as a last tie-break (v2 and v2.1, with distinct timestamps); v1 orders by
  `sha1(event_id)` and is exempt.
- Chains from an `auth_chain` index give the same result as walking `auth_events`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myelin.core.events import Event, StateKey
from myelin.core.roomversions import EventFormat
from myelin.core.stateres import resolve_state

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

USERS = [ALICE, BOB, CHARLIE, ZARA]

actions = st.one_of(
    st.tuples(st.just("topic"), st.sampled_from(USERS)),
    st.tuples(
        st.just("power"),
        st.sampled_from([ALICE, BOB]),
        st.sampled_from([0, 50, 100]),
        st.sampled_from([0, 50]),
    ),
    st.tuples(st.just("ban"), st.sampled_from([ALICE, BOB]), st.sampled_from(USERS)),
    st.tuples(st.just("kick"), st.sampled_from([ALICE, BOB]), st.sampled_from(USERS)),
    st.tuples(
        st.just("join_rules"), st.sampled_from([ALICE, BOB]), st.sampled_from(["public", "invite"])
    ),
    st.tuples(st.just("join"), st.sampled_from([EVELYN, BOB])),
    st.tuples(st.just("leave"), st.sampled_from(USERS)),
)
forks = st.lists(st.lists(actions, max_size=4), min_size=2, max_size=3)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spec_for(name: str, action: tuple[Any, ...]) -> Spec:
    kind = action[0]
    if kind == "topic":
        return topic(name, action[1])
    if kind == "power":
        return power(name, action[1], {ALICE: 100, BOB: action[2], CHARLIE: action[3]})
    if kind in ("ban", "kick"):
        return member(name, action[1], "ban" if kind == "ban" else "leave", action[2])
    if kind == "join_rules":
        return join_rules(name, action[1], action[2])
    if kind == "join":
        return member(name, action[1], "join")
    return member(name, action[1], "leave")


def forked_room(version: str, plan: list[list[tuple[Any, ...]]]) -> tuple[Room, list[str]]:
    specs: list[Spec] = []
    chains: list[list[str]] = []
    tips: list[str] = []
    for f, fork in enumerate(plan):
        names = [f"F{f}E{i}" for i in range(len(fork))]
        specs += [spec_for(n, a) for n, a in zip(names, fork, strict=True)]
        chains.append(["END", *reversed(names), "START"])
        tips.append(names[-1] if names else "START")
    return build(version, specs, chains), tips


@SETTINGS
@given(version=st.sampled_from(["1", "2", "10", "12"]), plan=forks)
def test_order_of_state_sets_does_not_matter(version: str, plan: Any) -> None:
    room, tips = forked_room(version, plan)
    sets = [room.state_after["$" + t] for t in tips]
    expected = room.resolve(sets)
    for order in itertools.permutations(sets):
        assert room.resolve(list(order)) == expected
    # Keys every state set agrees on keep their event; every entry is an event of its key.
    for key, event_id in sets[0].items():
        if all(s.get(key) == event_id for s in sets[1:]):
            assert expected[key] == event_id
    for key, event_id in expected.items():
        assert room.events[event_id].state_tuple == key


def walked_chains(room: Room) -> dict[str, set[str]]:
    chains: dict[str, set[str]] = {}

    def chain(event_id: str) -> set[str]:
        if event_id not in chains:
            found: set[str] = set()
            for auth_id in room.events[event_id].auth_event_ids:
                found.add(auth_id)
                found |= chain(auth_id)
            chains[event_id] = found
        return chains[event_id]

    for event_id in room.events:
        chain(event_id)
    return chains


@SETTINGS
@given(version=st.sampled_from(["2", "10", "12"]), plan=forks)
def test_auth_chain_index_agrees_with_walking(version: str, plan: Any) -> None:
    room, tips = forked_room(version, plan)
    sets = [room.state_after["$" + t] for t in tips]
    chains = walked_chains(room)
    assert resolve_state(version, sets, room.fetch, chains.__getitem__) == room.resolve(sets)


def renamed(room: Room, mapping: Mapping[str, str]) -> dict[str, Event]:
    v1_refs = room.version.event_format is EventFormat.V1

    def refs(value: Any) -> list[Any]:
        if v1_refs:
            return [[mapping[r[0]], r[1]] for r in value]
        return [mapping[r] for r in value]

    events: dict[str, Event] = {}
    for old_id, event in room.events.items():
        pdu = dict(event.pdu)
        pdu["auth_events"] = refs(pdu["auth_events"])
        pdu["prev_events"] = refs(pdu["prev_events"])
        if room.version.room_id_from_create_event and "room_id" in pdu:
            pdu["room_id"] = "!" + mapping["$CREATE"][1:]
        events[mapping[old_id]] = Event(mapping[old_id], room.version, pdu)
    return events


@SETTINGS
@given(version=st.sampled_from(["2", "10", "12"]), plan=forks, seed=st.integers(0, 2**32))
def test_event_ids_only_break_ties(version: str, plan: Any, seed: int) -> None:
    room, tips = forked_room(version, plan)
    old_ids = sorted(room.events)
    new_ids = [f"$r{i:03d}" for i in range(len(old_ids))]
    random.Random(seed).shuffle(new_ids)
    mapping = dict(zip(old_ids, new_ids, strict=True))
    events = renamed(room, mapping)
    sets = [room.state_after["$" + t] for t in tips]
    new_sets: list[dict[StateKey, str]] = [{k: mapping[v] for k, v in s.items()} for s in sets]
    expected = {k: mapping[v] for k, v in room.resolve(sets).items()}
    assert resolve_state(version, new_sets, events.get) == expected
