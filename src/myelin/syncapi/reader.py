"""The sync API's reader of the room event log.

It consumes the log from its own position (stored in `sync_position`, in the same
transaction as the rows it derives, so each record is applied exactly once) and keeps
the projections `/sync`, `/messages` and the room queries read: the served timeline
(accepted new events only: soft-failed, rejected and outlier events are never served;
history backfilled from other servers is kept below every timeline position, for
`/messages` only, see `HISTORY_FLOOR`),
current state, each user's membership per room, and (`relations`) relations between
events, the search index and event timestamps, and the client transaction IDs carried
by local events' records. After each batch it wakes the long-polling requests of the
users concerned. It waits for new records on the log's tail, never by polling.

While it is caught up, the roomserver applies a commit's records for it inside its own
projection transaction (`apply_inline`, under the reader's lock): one writer round trip
per commit, and the send's answer comes with its event already served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

import orjson

from myelin.core.auth import can_redact
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import room_version
from myelin.eventlog.api import EventLog, LogEntry
from myelin.roomserver.types import InputKind, LogPayload, Status
from myelin.storage import Database, Txn
from myelin.syncapi import queries, relations
from myelin.syncapi.notifier import Notifier
from myelin.syncapi.search import ensure_fulltext

log = logging.getLogger("myelin.syncapi")

COMPONENT = "syncapi"
MIGRATIONS = "myelin.syncapi.migrations"
PROJECTION_TABLES = (
    "sync_position",
    "sync_events",
    "sync_current_state",
    "sync_memberships",
    *relations.RELATION_TABLES,
)
_CHUNK = 500


async def position(t: Txn) -> int:
    value = await t.fetchval("SELECT pos FROM sync_position WHERE id = 1")
    return int(value) if value is not None else 0


def event_from_row(event_id: str, version: str, pdu: Any) -> Event:
    body = orjson.loads(pdu) if isinstance(pdu, str | bytes) else pdu
    return Event(event_id, room_version(version), body)


async def _redaction_allowed(t: Txn, redaction: Event, target_sender: str) -> bool:
    """Whether a redaction applies to its target (rooms v3+ leave this check to the
    server that serves the event): the same server sent both, or the redacter holds the
    redact power level in the room's current state."""
    auth_state: dict[StateKey, Event] = {}
    rows = await t.fetchall(
        "SELECT e.event_id, e.room_version, e.pdu FROM sync_current_state s"
        " JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.room_id = ? AND s.state_key = '' AND s.type = ANY(?)",
        redaction.room_id,
        ["m.room.power_levels", "m.room.create"],
    )
    for event_id, version, pdu in rows:
        event = event_from_row(event_id, version, pdu)
        auth_state[event.state_tuple] = event
    return can_redact(redaction.sender, target_sender, auth_state)


#: `unsigned` key of a membership outlier of a room this server is not in (an invite's
#: rejection); an invite over federation is marked by its `invite_room_state`. Sync
#: applies such memberships: they are all it knows of the room.
OUTSIDE_MEMBERSHIP = "io.myelin.outside_membership"


async def apply_batch(t: Txn, items: Sequence[tuple[LogPayload, int]]) -> set[str]:
    """Apply log records; returns the rooms whose served data changed."""
    rooms: set[str] = set()
    last = 0
    for payload, offset in items:
        last = offset
        event = payload.event
        if payload.txn is not None:  # whatever became of the event: a retry gets the same
            txn = payload.txn
            await queries.record_txn(
                t, txn.user_id, txn.device_id, txn.scope, txn.txn_id, event.event_id
            )
        if payload.kind is InputKind.BACKFILL:
            # History from another server: served by `/messages` before everything the
            # room had here, never to `/sync` (no room is woken, no position is after
            # a sync token).
            if payload.status is Status.ACCEPTED:
                await _store_history(t, event)
            continue
        if payload.status is Status.OUTLIER and event.state_key is not None:
            # State of a room joined over federation: the join's state delta names it,
            # and what sync serves of state is read from here.
            unsigned = event.pdu.get("unsigned")
            outside = (
                event.type == "m.room.member"
                and isinstance(unsigned, dict)
                and ("invite_room_state" in unsigned or OUTSIDE_MEMBERSHIP in unsigned)
            )
            # An invite to (or the rejection of an invite to) a room this server is not
            # in is the membership's own event: in the timeline, like any. Other
            # outliers are state only.
            await _store_outlier(t, event, offset if outside else -offset)
            if outside:
                rooms.add(event.room_id)
                await _apply_state(
                    t,
                    event.room_id,
                    event.type,
                    event.state_key or "",
                    event.event_id,
                    offset,
                    event,
                )
            continue
        if payload.status is not Status.ACCEPTED or payload.kind is not InputKind.NEW:
            continue
        room_id = event.room_id
        rooms.add(room_id)
        replaces = None
        if event.state_key is not None:
            replaces = await t.fetchval(
                "SELECT event_id FROM sync_current_state"
                " WHERE room_id = ? AND type = ? AND state_key = ?",
                room_id,
                event.type,
                event.state_key,
            )
        await _insert_event(t, event, offset, replaces)
        await relations.apply_event(t, event, offset)
        await _apply_redaction(t, event)
        for event_type, state_key, event_id in payload.state_delta:
            await _apply_state(t, room_id, event_type, state_key, event_id, offset, event)
    if last:
        await t.execute(
            "INSERT INTO sync_position (id, pos) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET pos = excluded.pos",
            last,
        )
    return rooms


# Positions of backfilled history (`HISTORY_FLOOR <= pos < HISTORY_TOP`), below every
# other position: timeline events sit at their log offset (> 0), the state of a room
# joined over federation at minus its offset (between HISTORY_TOP and 0). A backfilled
# event's position is drawn from its depth, `HISTORY_FLOOR + depth * DEPTH_SPAN` plus a
# counter for events of equal depth (of any room: positions are unique), so history
# reads in topological order whatever order it was fetched in, and each page fetched
# further back sorts before the last. Replaying the log assigns the same positions.
HISTORY_FLOOR = -(2**62)
HISTORY_TOP = -(2**61)
DEPTH_SPAN = 2**20
_MAX_HISTORY_DEPTH = (HISTORY_TOP - HISTORY_FLOOR) // DEPTH_SPAN - 1


async def history_position(t: Txn, depth: int) -> int:
    """A free position for a backfilled event of `depth` (see HISTORY_FLOOR)."""
    base = HISTORY_FLOOR + min(max(depth, 0), _MAX_HISTORY_DEPTH) * DEPTH_SPAN
    used = await t.fetchval(
        "SELECT max(pos) FROM sync_events WHERE pos >= ? AND pos < ?", base, base + DEPTH_SPAN
    )
    if used is None:
        return base
    if int(used) + 1 < base + DEPTH_SPAN:
        return int(used) + 1
    # A full bucket (a million events of one depth): the next free slot below it.
    low = await t.fetchval("SELECT min(pos) FROM sync_events WHERE pos >= ?", HISTORY_FLOOR)
    return int(low) - 1


async def _store_history(t: Txn, event: Event) -> None:
    """Keep a backfilled event at its history position. One this server already holds
    as state of a joined room (an outlier, below 0) moves there; one it already serves
    in the timeline (an invite it was sent) stays where it is."""
    held = await t.fetchval("SELECT pos FROM sync_events WHERE event_id = ?", event.event_id)
    if held is not None and int(held) >= 0:
        return
    pos = await history_position(t, event.depth)
    if held is not None:
        await t.execute("UPDATE sync_events SET pos = ? WHERE event_id = ?", pos, event.event_id)
    else:
        await _insert_event(t, event, pos)
    await relations.apply_event(t, event, pos)
    await _apply_redaction(t, event)


async def _store_outlier(t: Txn, event: Event, pos: int) -> None:
    """Keep an outlier where state reads find it. State of a room joined over federation
    is kept at a negative position (`-offset`): below every timeline range (`pos >
    after >= 0`), so it is served as state, never in a timeline (as the spec has it for
    outliers)."""
    await _insert_event(t, event, pos)


async def _insert_event(t: Txn, event: Event, pos: int, replaces: str | None = None) -> None:
    """The served row of `event` at `pos` (timeline, outlier state or history); one the
    table already has (a record applied again) is left as it is."""
    await t.execute(
        "INSERT INTO sync_events (pos, room_id, event_id, sender, type, state_key,"
        " room_version, pdu, replaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        pos,
        event.room_id,
        event.event_id,
        event.sender,
        event.type,
        event.state_key,
        event.room_version.identifier,
        orjson.dumps(event.pdu).decode(),
        replaces,
    )


async def _apply_redaction(t: Txn, event: Event) -> None:
    """If `event` is a redaction that applies to its target (an event of the same room
    served here), the target is marked redacted (by the first such redaction) and no
    longer relates to anything nor is searchable."""
    if event.type != "m.room.redaction" or not event.redacts:
        return
    row = await t.fetchone(
        "SELECT sender FROM sync_events WHERE event_id = ? AND room_id = ?",
        event.redacts,
        event.room_id,
    )
    if row is not None and await _redaction_allowed(t, event, row[0]):
        await t.execute(
            "UPDATE sync_events SET redacted_by = ? WHERE event_id = ? AND redacted_by IS NULL",
            event.event_id,
            event.redacts,
        )
        await relations.apply_redaction(t, event.redacts)


async def _apply_state(
    t: Txn,
    room_id: str,
    event_type: str,
    state_key: str,
    event_id: str | None,
    offset: int,
    event: Event,
) -> None:
    if event_id is None:
        await t.execute(
            "DELETE FROM sync_current_state WHERE room_id = ? AND type = ? AND state_key = ?",
            room_id,
            event_type,
            state_key,
        )
        if event_type == "m.room.member":
            await t.execute(
                "DELETE FROM sync_memberships WHERE user_id = ? AND room_id = ?",
                state_key,
                room_id,
            )
        return
    await t.execute(
        "INSERT INTO sync_current_state (room_id, type, state_key, event_id, pos)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, type, state_key)"
        " DO UPDATE SET event_id = excluded.event_id, pos = excluded.pos",
        room_id,
        event_type,
        state_key,
        event_id,
        offset,
    )
    if event_type != "m.room.member":
        return
    if event_id == event.event_id:
        membership = event.membership
    else:
        row = await t.fetchone(
            "SELECT room_version, pdu FROM sync_events WHERE event_id = ?", event_id
        )
        membership = None
        if row is not None:
            membership = event_from_row(event_id, row[0], row[1]).membership
    if membership is None:
        return
    await t.execute(
        "INSERT INTO sync_memberships (user_id, room_id, membership, event_id, pos)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id) DO UPDATE SET"
        " membership = excluded.membership, event_id = excluded.event_id,"
        # `pos` is where the membership began: a join that stays a join (a new display
        # name) must not look like a new join to the next sync.
        " pos = CASE WHEN sync_memberships.membership = excluded.membership"
        " THEN sync_memberships.pos ELSE excluded.pos END",
        state_key,
        room_id,
        membership,
        event_id,
        offset,
    )
    await t.execute(
        "DELETE FROM sync_forgotten WHERE user_id = ? AND room_id = ?", state_key, room_id
    )


async def users_to_wake(t: Txn, rooms: Sequence[str], since: int) -> list[str]:
    """Users whose sync may have changed: joined or invited to the rooms, or whose
    membership changed after `since`."""
    rows = await t.fetchall(
        "SELECT DISTINCT user_id FROM sync_memberships WHERE room_id = ANY(?)"
        " AND (membership IN ('join', 'invite') OR pos > ?)",
        list(rooms),
        since,
    )
    return [r[0] for r in rows]


class SyncProjectionError(Exception):
    """The stored projections do not match the log (a different or truncated log)."""


class SyncReader:
    """Consumes the log into the sync projections; `run()` until the log closes."""

    def __init__(self, db: Database, log: EventLog, notifier: Notifier) -> None:
        self.db = db
        self.log = log
        self.notifier = notifier
        self.position = 0
        self.lock = asyncio.Lock()
        """Held while records are applied, by this reader or by the roomserver applying
        them inline (`apply_inline`): each record is applied once, in log order."""

    async def open(self) -> None:
        """Migrate and catch up with everything committed so far."""
        await self.db.migrate(COMPONENT, MIGRATIONS)
        await ensure_fulltext(self.db)
        self.position = await self.db.read(position)
        head = await self.log.head()
        if self.position > head:
            raise SyncProjectionError(
                f"the sync projections are at log offset {self.position} but the log ends at"
                f" {head}: the database and the event log do not belong together"
            )
        self.notifier.advance(self.position)
        while await self._step(await self.log.read(self.position + 1, _CHUNK)):
            pass

    async def run(self) -> None:
        """Follow the log: drain what is there, then wait on its tail for the next commit."""
        while True:
            entries = await self.log.read(self.position + 1, _CHUNK)
            if not entries:
                tail = cast(AsyncGenerator[LogEntry, None], self.log.tail(self.position + 1))
                try:
                    entry = await anext(tail, None)
                finally:
                    await tail.aclose()
                if entry is None:
                    return  # the log closed
                entries = [entry]
            await self._step(entries)

    async def _step(self, entries: Sequence[LogEntry]) -> bool:
        if not entries:
            return False
        async with self.lock:
            # The roomserver may have applied some of them meanwhile (inline).
            entries = [e for e in entries if e.offset > self.position]
            if not entries:
                return True
            items = [(LogPayload.decode(e.record.payload), e.offset) for e in entries]
            since = self.position

            async def txn(t: Txn) -> list[str]:
                return await self.apply_inline(t, items, since)

            users = await self.db.run(txn, durable=False)
            self.applied(users, entries[-1].offset)
        return True

    # The roomserver's inline path: while the reader is caught up, the records of a commit
    # are applied in the roomserver's own projection transaction (one writer round trip
    # per commit instead of two, and no decoding of what the roomserver already holds).
    # The caller holds `lock` and checked that `position` is just before `items`.

    async def apply_inline(
        self, t: Txn, items: Sequence[tuple[LogPayload, int]], since: int
    ) -> list[str]:
        """Apply records in `t`; returns the users to wake once it is committed."""
        rooms = await apply_batch(t, items)
        return await users_to_wake(t, sorted(rooms), since) if rooms else []

    def applied(self, users: list[str], last: int) -> None:
        """The transaction that applied records up to `last` committed."""
        self.position = last
        self.notifier.advance(last)
        self.notifier.wake(users)
