"""The auth-event graph as state resolution sees it.

State resolution reads events only through a caller-supplied `fetch_event` callback (the
caller pre-loads them; the core does no I/O). `AuthDag` wraps that callback so that each
event is fetched once per resolution, and answers the graph questions the algorithms ask:
an event's auth events, the closure of a set of events under `auth_events`, and the
`m.room.power_levels` event an event cites.

An event the callback cannot supply (unknown, or rejected on its auth chain, which the
caller reports as absent) "cannot be used": it is left out of every set and every walk.

In room version 12 the create event is not listed in `auth_events`; the room ID names it
instead (`!` + the create event's ID without its `$`). It still authorises every other
event, so `auth_ids` adds it implicitly, which keeps power levels of creators and the
iterative auth checks the same as in earlier versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from typing import Final

from myelin.core.events import Event
from myelin.core.stateres.errors import StateResolutionError

POWER_LEVELS: Final = ("m.room.power_levels", "")
CREATE: Final = ("m.room.create", "")

FetchEvent = Callable[[str], Event | None]


class AuthDag:
    """Memoised view of the auth graph over a fetch callback (one resolution's lifetime)."""

    __slots__ = ("_auth_ids", "_auth_map", "_events", "_fetch")

    def __init__(self, fetch_event: FetchEvent) -> None:
        self._fetch = fetch_event
        self._events: dict[str, Event | None] = {}
        self._auth_ids: dict[str, tuple[str, ...]] = {}
        self._auth_map: dict[str, dict[tuple[str, str], Event]] = {}

    def get(self, event_id: str) -> Event | None:
        """The event, or None when it cannot be used (unknown, or the callback's ID differs)."""
        try:
            return self._events[event_id]
        except KeyError:
            pass
        event = self._fetch(event_id)
        if event is not None:
            if not isinstance(event, Event):
                raise StateResolutionError(
                    f"fetch_event returned {type(event).__name__} for {event_id!r}, not an Event"
                )
            if event.event_id != event_id:
                event = None
        self._events[event_id] = event
        return event

    def auth_ids(self, event_id: str) -> tuple[str, ...]:
        """IDs of the usable auth events of an event (with the implicit v12 create event)."""
        cached = self._auth_ids.get(event_id)
        if cached is not None:
            return cached
        event = self.get(event_id)
        ids: tuple[str, ...] = ()
        if event is not None:
            refs = event.auth_event_ids
            if event.room_version.room_id_from_create_event:
                create_id = implicit_create_id(event)
                if create_id is not None and create_id not in refs:
                    refs = (*refs, create_id)
            get = self.get
            ids = tuple(r for r in refs if r != event_id and get(r) is not None)
            if len(set(ids)) != len(ids):
                ids = tuple(dict.fromkeys(ids))
        self._auth_ids[event_id] = ids
        return ids

    def auth_events(self, event_id: str) -> dict[tuple[str, str], Event]:
        """The usable auth events of an event, by state key (the first one for a key wins).

        A fresh dict each call, so callers may add to it.
        """
        try:
            return dict(self._auth_map[event_id])
        except KeyError:
            pass
        found: dict[tuple[str, str], Event] = {}
        for auth_id in self.auth_ids(event_id):
            auth_event = self.get(auth_id)
            if auth_event is not None and auth_event.is_state:
                found.setdefault(auth_event.state_tuple, auth_event)
        self._auth_map[event_id] = found
        return dict(found)

    def power_levels_ref(self, event_id: str) -> str | None:
        """The ID of the `m.room.power_levels` event among an event's auth events, if any."""
        if event_id not in self._auth_map:
            self.auth_events(event_id)
        power_levels = self._auth_map[event_id].get(POWER_LEVELS)
        return None if power_levels is None else power_levels.event_id

    def closure(self, roots: Iterable[str], stop: Set[str] = frozenset()) -> set[str]:
        """The usable roots and everything reachable from them over auth events.

        The walk does not descend into (or include) events in `stop`; callers use this to
        skip a region already known to be shared. Cycles (possible only with forged v1/v2
        event IDs) end the walk instead of looping.
        """
        seen: set[str] = set()
        stack = [r for r in roots if r not in stop and self.get(r) is not None]
        while stack:
            event_id = stack.pop()
            if event_id in seen:
                continue
            seen.add(event_id)
            for auth_id in self.auth_ids(event_id):
                if auth_id not in seen and auth_id not in stop:
                    stack.append(auth_id)
        return seen


def implicit_create_id(event: Event) -> str | None:
    """The create event a v12+ event implies through its room ID (None before v12)."""
    if not event.room_version.room_id_from_create_event:
        return None
    if event.state_tuple == CREATE and event.is_state:
        return None
    room_id = event.room_id
    if not room_id.startswith("!") or len(room_id) < 2:
        return None
    return "$" + room_id[1:]
