"""State resolution v2 (room versions 2-11) and v2.1 (room version 12).

Follows content/rooms/fragments/v2-state-res.md and content/rooms/v12.md "State
resolution". The steps are one function each so they can be tested on their own; the
orderings are O(n log n) (a heap-driven Kahn's algorithm, memoised mainline walks) because
a room can have thousands of conflicted events after a netsplit.

Where the text leaves a choice open, this module does what the deployed implementations
do, since state resolution is only useful if every server reaches the same answer:

- A state set's own events count as part of its full auth chain when taking the auth
  difference (an event in every state set is never "different").
- When no key is conflicted the unconflicted state map is the answer (fast path).
- The reverse topological power ordering links an event to those of its auth events that
  are in the full conflicted set, and pulls in the auth chain of each power event through
  such links.
- The v12 create event, named by the room ID rather than listed, counts as an auth event.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Final

from myelin.core.events import Event, StateKey
from myelin.core.stateres._auth import allowed, auth_types, sender_power_level
from myelin.core.stateres._dag import POWER_LEVELS, AuthDag

AuthChain = Callable[[str], Set[str]]

_POWER_MEMBERSHIPS: Final = frozenset({"leave", "ban"})


def separate(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split the state sets into the unconflicted state map and the conflicted keys.

    A key is unconflicted only when every state set has it, with the same event; a key
    missing from some set is conflicted (its events form the conflicted state set).
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    first, rest = state_sets[0], state_sets[1:]
    for key, event_id in first.items():
        for other in rest:
            if other.get(key) != event_id:
                break
        else:
            unconflicted[key] = event_id
    for state_set in state_sets:
        for key, event_id in state_set.items():
            if key not in unconflicted:
                conflicted.setdefault(key, set()).add(event_id)
    return unconflicted, conflicted


def is_power_event(event: Event) -> bool:
    """Power levels, join rules, and kicks/bans (a leave or ban sent about someone else)."""
    if not event.is_state:
        return False
    if event.state_tuple in (POWER_LEVELS, ("m.room.join_rules", "")):
        return True
    return (
        event.type == "m.room.member"
        and event.membership in _POWER_MEMBERSHIPS
        and event.sender != event.state_key
    )


def auth_difference(
    state_sets: Sequence[Mapping[StateKey, str]],
    unconflicted: Mapping[StateKey, str],
    dag: AuthDag,
    auth_chain: AuthChain | None = None,
) -> set[str]:
    """∪ Cᵢ − ∩ Cᵢ over the full auth chains Cᵢ of the state sets.

    Every Cᵢ contains U, the closure of the unconflicted events (they are in every set), so
    with Kᵢ the closure of set i's conflicted events the difference is (∪ Kᵢ − ∩ Kᵢ) − U.
    Walking events, U is walked once and the Kᵢ walks stop where they meet it. With an
    `auth_chain` index, U is never built: each unconflicted event's chain is only
    intersected with the (usually few) candidates still in question.
    """
    per_set = [
        {event_id for key, event_id in s.items() if key not in unconflicted} for s in state_sets
    ]
    if auth_chain is None:
        shared = frozenset(dag.closure(set(unconflicted.values())))
        chains = [dag.closure(roots, stop=shared) for roots in per_set]
        return set().union(*chains) - set(chains[0]).intersection(*chains[1:])
    chains = []
    for roots in per_set:
        chain = set(roots)
        for event_id in roots:
            chain.update(auth_chain(event_id))
        chains.append(chain)
    candidates: set[str] = set().union(*chains) - set(chains[0]).intersection(*chains[1:])
    for event_id in unconflicted.values():
        if not candidates:
            break
        candidates.discard(event_id)
        shared_part = candidates.intersection(auth_chain(event_id))
        if shared_part:
            candidates -= shared_part
    return candidates


def conflicted_subgraph(conflicted_ids: Iterable[str], dag: AuthDag) -> set[str]:
    """Events on an auth-event path between two conflicted events, endpoints included (v2.1).

    One depth-first walk down from the conflicted events gives a post-order of their
    closure; an event is on such a path when it is conflicted or one of its auth events
    is, transitively. Linear in the size of the closure.
    """
    targets = {c for c in conflicted_ids if dag.get(c) is not None}
    visited: set[str] = set()
    post_order: list[str] = []
    for root in sorted(targets):  # sorted: a deterministic walk even through forged cycles
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(dag.auth_ids(root)))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in visited:
                    visited.add(child)
                    stack.append((child, iter(dag.auth_ids(child))))
                    break
            else:
                stack.pop()
                post_order.append(node)
    reaches: dict[str, bool] = {}
    for node in post_order:
        reaches[node] = node in targets or any(reaches.get(a, False) for a in dag.auth_ids(node))
    return {node for node, on_path in reaches.items() if on_path}


def power_closure(power_ids: Iterable[str], full_conflicted: Set[str], dag: AuthDag) -> set[str]:
    """X of step 1: the power events plus their auth chains within the full conflicted set."""
    nodes: set[str] = set()
    stack = [p for p in power_ids if p in full_conflicted]
    while stack:
        node = stack.pop()
        if node in nodes:
            continue
        nodes.add(node)
        stack.extend(a for a in dag.auth_ids(node) if a in full_conflicted and a not in nodes)
    return nodes


def reverse_topological_power_order(nodes: Set[str], dag: AuthDag) -> list[str]:
    """The events of `nodes` (all usable), earliest first.

    Kahn's algorithm over the auth DAG, always taking the smallest ready event by (sender's
    power level descending, `origin_server_ts`, `event_id`). Events caught in a cycle of
    auth references (only forgeable with v1/v2 event IDs) never become ready and are left
    out: they cannot be authorised anyway.
    """
    pending: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    heap: list[tuple[float, int, str]] = []
    for node in nodes:
        parents = [a for a in dag.auth_ids(node) if a in nodes]
        pending[node] = len(parents)
        for parent in parents:
            dependents.setdefault(parent, []).append(node)
    keys: dict[str, tuple[float, int, str]] = {}
    for node in nodes:
        event = dag.get(node)
        assert event is not None  # nodes come from the usable full conflicted set
        power = sender_power_level(event, dag.auth_events(node))
        keys[node] = (-power, event.origin_server_ts, node)
        if pending[node] == 0:
            heap.append(keys[node])
    heapq.heapify(heap)

    ordered: list[str] = []
    while heap:
        _, _, node = heapq.heappop(heap)
        ordered.append(node)
        for dependent in dependents.get(node, ()):
            pending[dependent] -= 1
            if pending[dependent] == 0:
                heapq.heappush(heap, keys[dependent])
    return ordered


def mainline_order(
    event_ids: Iterable[str], power_levels_id: str | None, dag: AuthDag
) -> list[str]:
    """Order events by mainline position against `power_levels_id`, then ts, then ID.

    Position i means the first power-levels event up an event's chain of power-levels
    auth events that lies on the mainline is Pᵢ (∞ when none does); greater positions sort
    first. Positions of the power-levels events passed through are memoised, so the whole
    ordering walks each power-levels event once.
    """
    mainline: dict[str, int] = {}
    current = power_levels_id
    while current is not None and current not in mainline:
        mainline[current] = len(mainline)
        current = dag.power_levels_ref(current)

    memo: dict[str, float] = {}

    def position(event_id: str) -> float:
        path: list[str] = []
        on_path: set[str] = set()
        current = dag.power_levels_ref(event_id)
        while current is not None and current not in mainline and current not in memo:
            if current in on_path:
                current = None
                break
            path.append(current)
            on_path.add(current)
            current = dag.power_levels_ref(current)
        if current is None:
            result: float = math.inf
        elif current in mainline:
            result = mainline[current]
        else:
            result = memo[current]
        for pl_id in path:
            memo[pl_id] = result
        return result

    keyed: list[tuple[float, int, str]] = []
    for event_id in event_ids:
        event = dag.get(event_id)
        if event is not None:
            keyed.append((-position(event_id), event.origin_server_ts, event_id))
    keyed.sort()
    return [event_id for _, _, event_id in keyed]


def iterative_auth_checks(
    ordered_ids: Iterable[str], base_state: Mapping[StateKey, str], dag: AuthDag
) -> dict[StateKey, str]:
    """Apply each event that the auth rules allow, in order, on top of `base_state`.

    The auth state of an event is its own (usable) auth events, overridden by the state
    built so far for every key the auth rules consult.
    """
    resolved = dict(base_state)
    for event_id in ordered_ids:
        event = dag.get(event_id)
        if event is None or not event.is_state:
            continue
        auth_state = dag.auth_events(event_id)
        for key in auth_types(event):
            state_id = resolved.get(key)
            if state_id is not None:
                state_event = dag.get(state_id)
                if state_event is not None:
                    auth_state[key] = state_event
        if allowed(event, auth_state):
            resolved[event.state_tuple] = event_id
    return resolved


def resolve_v2(
    state_sets: Sequence[Mapping[StateKey, str]],
    dag: AuthDag,
    auth_chain: AuthChain | None = None,
    *,
    v2_1: bool,
) -> dict[StateKey, str]:
    """The five steps of the algorithm; `v2_1` selects the room version 12 changes."""
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted
    conflicted_ids = {event_id for ids in conflicted.values() for event_id in ids}
    full = conflicted_ids | auth_difference(state_sets, unconflicted, dag, auth_chain)
    if v2_1:
        full |= conflicted_subgraph(conflicted_ids, dag)
    usable: set[str] = set()
    power_ids: list[str] = []
    for event_id in full:
        event = dag.get(event_id)
        if event is None or not event.is_state:
            continue
        usable.add(event_id)
        if is_power_event(event):
            power_ids.append(event_id)

    taken = power_closure(power_ids, usable, dag)
    power_order = reverse_topological_power_order(taken, dag)
    base: Mapping[StateKey, str] = {} if v2_1 else unconflicted
    partial = iterative_auth_checks(power_order, base, dag)

    leftover = [event_id for event_id in usable if event_id not in taken]
    resolved = iterative_auth_checks(
        mainline_order(leftover, partial.get(POWER_LEVELS), dag), partial, dag
    )
    resolved.update(unconflicted)
    return resolved
