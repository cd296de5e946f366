"""Queries on the roomserver's projections: the typed async interface other components
call (a plain async call in one process; the same shape can be served over request/reply).

They read committed projections only, which are written after the log append, so they
never show an event that is not durably in the log. `RoomQueries(db)` works on its own,
in any process that can reach the database; `Roomserver` has them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from myelin.core.events import Event, StateKey
from myelin.roomserver import store
from myelin.roomserver.types import LatestEvents, Status, UnknownEventError, UnknownRoomError
from myelin.storage import Database, Txn


class RoomQueries:
    """Read-only questions about rooms and events."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def room_version(self, room_id: str) -> str | None:
        rows = await self.db.fetchall(
            "SELECT room_version FROM rs_rooms WHERE room_id = ?", room_id
        )
        return rows[0][0] if rows else None

    async def current_state(self, room_id: str) -> dict[StateKey, str]:
        """The room's current state as `(type, state_key) -> event ID`."""
        state = await self.db.read(lambda t: store.current_state(t, room_id))
        if state is None:
            raise UnknownRoomError(room_id)
        return state

    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Event]:
        """Current state events, all of them or those of `keys`."""
        state = await self.current_state(room_id)
        if keys is not None:
            state = {k: state[k] for k in keys if k in state}
        events = await self.events(list(state.values()))
        return {k: events[e] for k, e in state.items() if e in events}

    async def _state_at(self, event_id: str, column: str) -> dict[StateKey, str]:
        async def q(t: Txn) -> dict[StateKey, str] | None:
            row = await t.fetchone(
                f"SELECT {column}, status FROM rs_events WHERE event_id = ?", event_id
            )
            if row is None or row[1] == Status.REJECTED.value:
                return None
            if row[0] is None:
                return None
            return await store.snapshot_state(t, row[0])

        state = await self.db.read(q)
        if state is None:
            raise UnknownEventError(f"no state known at {event_id}")
        return state

    async def state_before(self, event_id: str) -> dict[StateKey, str]:
        """The room state before an event (what its auth was checked against)."""
        return await self._state_at(event_id, "before_snapshot_nid")

    async def state_after(self, event_id: str) -> dict[StateKey, str]:
        """The room state after an event (before it plus itself, for state events)."""
        return await self._state_at(event_id, "after_snapshot_nid")

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """`join`, `invite`, `leave`, `ban` or `knock` in current state, None if none."""
        rows = await self.db.fetchall(
            "SELECT m.membership FROM rs_memberships m"
            " JOIN rs_rooms r ON r.room_nid = m.room_nid"
            " JOIN rs_state_keys k ON k.state_key_nid = m.user_nid"
            " WHERE r.room_id = ? AND k.state_key = ?",
            room_id,
            user_id,
        )
        return rows[0][0] if rows else None

    async def rooms_of_user(self, user_id: str, membership: str = "join") -> list[str]:
        """Rooms where the user's current membership is `membership`, sorted."""
        rows = await self.db.fetchall(
            "SELECT r.room_id FROM rs_memberships m"
            " JOIN rs_rooms r ON r.room_nid = m.room_nid"
            " JOIN rs_state_keys k ON k.state_key_nid = m.user_nid"
            " WHERE k.state_key = ? AND m.membership = ? ORDER BY r.room_id",
            user_id,
            membership,
        )
        return [r[0] for r in rows]

    async def latest_events(self, room_id: str) -> LatestEvents:
        """Forward extremities and the depth for a new event in the room."""

        async def q(t: Txn) -> LatestEvents | None:
            version = await t.fetchval(
                "SELECT room_version FROM rs_rooms WHERE room_id = ?", room_id
            )
            if version is None:
                return None
            ext = await store.extremities(t, room_id)
            return LatestEvents(
                room_id, version, tuple(e for e, _ in ext), max((d for _, d in ext), default=0) + 1
            )

        latest = await self.db.read(q)
        if latest is None:
            raise UnknownRoomError(room_id)
        return latest

    async def backward_extremities(self, room_id: str) -> list[str]:
        """Events the room's DAG here refers to without having them with state: where
        its history continues on other servers (what `/backfill` starts from)."""
        return await self.db.read(lambda t: store.backward_extremities(t, room_id))

    async def events(self, event_ids: Sequence[str]) -> dict[str, Event]:
        """The stored, not rejected, events among `event_ids`."""
        rows = await store.fetch_events(self.db, event_ids)
        return {e.event_id: e for e, status, _ in rows if status is not Status.REJECTED}

    async def stored(self, event_ids: Sequence[str]) -> dict[str, tuple[Event, Status]]:
        """The stored events among `event_ids` with their status (rejected ones too)."""
        rows = await store.fetch_events(self.db, event_ids)
        return {e.event_id: (e, status) for e, status, _ in rows}

    async def event(self, event_id: str) -> Event | None:
        """An event by ID; None when unknown or rejected."""
        return (await self.events([event_id])).get(event_id)

    async def event_status(self, event_id: str) -> tuple[Status, str | None] | None:
        """`(status, reason)` of a stored event (rejected ones too), None when unknown."""
        rows = await store.fetch_events(self.db, [event_id])
        return (rows[0][1], rows[0][2][2]) if rows else None

    async def auth_chain(self, event_ids: Sequence[str]) -> list[Event]:
        """Every event reachable through `auth_events` from `event_ids` (themselves
        excluded), sorted by depth then event ID."""
        chain: dict[str, Event] = {}
        frontier: set[str] = set()
        start = await self.events(event_ids)
        missing = [e for e in event_ids if e not in start]
        if missing:
            raise UnknownEventError(f"unknown events: {', '.join(missing)}")
        for event in start.values():
            frontier.update(event.auth_event_ids)
        while frontier:
            found = await self.events(sorted(frontier))
            chain.update(found)
            frontier = {a for e in found.values() for a in e.auth_event_ids if a not in chain}
        return sorted(chain.values(), key=lambda e: (e.depth, e.event_id))
