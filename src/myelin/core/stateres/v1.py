"""State resolution for room version 1 (content/rooms/v1.md, "State resolution").

Kept for the rooms that still use it; the spec warns it can reset state, which is why
room version 2 replaced it. The result R starts as the union of the state sets without
the conflicting keys, then conflicts are settled in passes: power levels, join rules,
memberships (each key on its own), then everything else.

Points the text leaves open follow the deployed implementation: the keys of one pass
(the members) are each settled against R as the earlier passes left it, not against one
another, so no order among them is needed; a key whose events are all unusable (unknown)
is dropped, one with a single usable event takes it unconflicted; and when no event of an
ordinary conflict passes auth, the last one tried (lowest depth) is taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from myelin.core.events import Event, StateKey
from myelin.core.stateres._auth import allowed, auth_types
from myelin.core.stateres._dag import POWER_LEVELS, AuthDag


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _ascending(events: list[Event]) -> list[Event]:
    """Ascending `depth`, then descending `sha1(event_id)`: the order of the auth passes."""
    by_hash = sorted(events, key=lambda e: _sha1(e.event_id), reverse=True)
    return sorted(by_hash, key=lambda e: e.depth)


def _auth_state(
    event: Event,
    resolved: Mapping[StateKey, str],
    dag: AuthDag,
    own: tuple[StateKey, str] | None = None,
) -> dict[StateKey, Event]:
    """The slots of R the auth rules consult for `event`, with `own` (the key being
    settled and the event chosen for it so far) in place of R's entry."""
    state: dict[StateKey, Event] = {}
    for key in auth_types(event):
        event_id = own[1] if own is not None and key == own[0] else resolved.get(key)
        found = dag.get(event_id) if event_id is not None else None
        if found is not None:
            state[key] = found
    return state


def _auth_pass(events: list[Event], resolved: Mapping[StateKey, str], dag: AuthDag) -> str:
    """Take the first event, then each next one while the auth rules allow it in R."""
    ordered = _ascending(events)
    key = ordered[0].state_tuple
    chosen = ordered[0].event_id
    for event in ordered[1:]:
        if not allowed(event, _auth_state(event, resolved, dag, (key, chosen))):
            break
        chosen = event.event_id
    return chosen


def resolve_v1(state_sets: Sequence[Mapping[StateKey, str]], dag: AuthDag) -> dict[StateKey, str]:
    """Resolve state sets by the room version 1 algorithm."""
    candidates: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            candidates.setdefault(key, set()).add(event_id)
    resolved: dict[StateKey, str] = {}
    conflicts: dict[StateKey, list[Event]] = {}
    for key, ids in candidates.items():
        if len(ids) == 1:
            resolved[key] = next(iter(ids))
            continue
        events = [e for e in (dag.get(i) for i in ids) if e is not None and e.is_state]
        if len(events) == 1:
            resolved[key] = events[0].event_id
        elif events:
            conflicts[key] = events

    # Each pass settles its keys against R as the previous passes left it; keys within a
    # pass (one per user for memberships) do not see each other, so the result does not
    # depend on the order in which they are taken.
    passes = [
        [POWER_LEVELS] if POWER_LEVELS in conflicts else [],
        [k for k in conflicts if k[0] == "m.room.join_rules"],
        [k for k in conflicts if k[0] == "m.room.member"],
    ]
    for keys in passes:
        settled = {key: _auth_pass(conflicts.pop(key), resolved, dag) for key in keys}
        resolved.update(settled)

    # The remaining types do not affect the auth rules, so R after the member pass decides
    # each of them: the deepest event (then lowest sha1) that it allows, or failing all,
    # the last one tried.
    others: dict[StateKey, str] = {}
    for key, events in conflicts.items():
        ordered = list(reversed(_ascending(events)))
        chosen = ordered[-1]
        for event in ordered:
            if allowed(event, _auth_state(event, resolved, dag)):
                chosen = event
                break
        others[key] = chosen.event_id
    resolved.update(others)
    return resolved
