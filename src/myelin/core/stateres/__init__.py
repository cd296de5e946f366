"""State resolution: the state of a room where its history forks and joins again.

`resolve_state` picks the algorithm from the room version: v1 (room version 1), v2
(rooms v2-v11) or v2.1 (room v12). It is a pure function: state maps of event IDs in,
a state map out, with events read through `fetch_event`, which the caller backs with
events it has already loaded.

`fetch_event` returns None for an event that cannot be used: one it does not have, and
one that was rejected on its own auth chain (the spec keeps those out of resolution).
Events rejected only against the state before them are returned like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set

from myelin.core.events import Event, StateKey
from myelin.core.roomversions import RoomVersion, StateResolution
from myelin.core.roomversions import room_version as lookup_room_version
from myelin.core.stateres._dag import AuthDag
from myelin.core.stateres.errors import StateResolutionError
from myelin.core.stateres.v1 import resolve_v1
from myelin.core.stateres.v2 import resolve_v2

__all__ = ["StateResolutionError", "resolve_state"]


def _checked(state_sets: Sequence[Mapping[StateKey, str]]) -> list[Mapping[StateKey, str]]:
    checked: list[Mapping[StateKey, str]] = []
    for index, state_set in enumerate(state_sets):
        if not isinstance(state_set, Mapping):
            raise StateResolutionError(f"state set {index} is not a mapping")
        for key, event_id in state_set.items():
            if (
                not isinstance(key, tuple)
                or len(key) != 2
                or not isinstance(key[0], str)
                or not isinstance(key[1], str)
            ):
                raise StateResolutionError(
                    f"state set {index} has key {key!r}, not (event type, state key)"
                )
            if not isinstance(event_id, str):
                raise StateResolutionError(
                    f"state set {index} maps {key!r} to {event_id!r}, not an event ID"
                )
        checked.append(state_set)
    return checked


def resolve_state(
    room_version: RoomVersion | str,
    state_sets: Sequence[Mapping[StateKey, str]],
    fetch_event: Callable[[str], Event | None],
    auth_chain: Callable[[str], Set[str]] | None = None,
) -> dict[StateKey, str]:
    """Resolve several states of one room into one, by the room version's algorithm.

    `auth_chain`, when given, returns the auth chain of an event (its auth events,
    recursively) from an index the caller keeps; the auth difference then costs about
    one set intersection per unconflicted event instead of a walk of every auth chain
    under the state, which matters in large rooms. Without it, chains are walked through
    `fetch_event`, each event once per call. (The v2.1 conflicted state subgraph is
    always walked, from the conflicted events down.)

    Raises `StateResolutionError` for malformed state sets and `UnsupportedRoomVersion`
    for an unknown version identifier.
    """
    if isinstance(room_version, str):
        room_version = lookup_room_version(room_version)
    sets = _checked(state_sets)
    if not sets:
        return {}
    if len(sets) == 1:
        return dict(sets[0])
    dag = AuthDag(fetch_event)
    algorithm = room_version.state_resolution
    if algorithm is StateResolution.V1:
        return resolve_v1(sets, dag)
    return resolve_v2(sets, dag, auth_chain, v2_1=algorithm is StateResolution.V2_1)
