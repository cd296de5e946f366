"""The roomserver's projections: writing them from log records, reading them back.

`ProjectionWriter.apply` turns one log record into rows (numeric IDs, the event, its
state snapshots, forward extremities, current state, memberships). It is the only code
that writes these tables, for new events and for `myelin rebuild` alike, so a rebuild
produces the same answers by construction. Its caches hold data of transactions that may
still roll back, so they serve the writer only; `reset()` drops them after a failure.

The read functions take a `Txn` of a read transaction and see committed data only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from myelin.core.events import Event, StateKey
from myelin.core.roomversions import room_version
from myelin.roomserver.stateblocks import (
    StateNids,
    digest,
    group_changes,
    pack_block,
    pack_snapshot,
    unpack_block,
    unpack_snapshot,
)
from myelin.roomserver.types import InputKind, LogPayload, RoomserverError, Status
from myelin.storage import Database, Txn

COMPONENT = "roomserver"
MIGRATIONS = "myelin.roomserver.migrations"
TABLES = (
    "rs_rooms",
    "rs_event_types",
    "rs_state_keys",
    "rs_events",
    "rs_state_blocks",
    "rs_state_snapshots",
    "rs_forward_extremities",
    "rs_current_state",
    "rs_memberships",
    "rs_position",
    "rs_backward_extremities",
)
_CACHE_LIMIT = 50_000


class _Lru(dict[Any, Any]):
    """A dict that forgets its oldest entries beyond `limit` (writer-side caches)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > self.limit:
            del self[next(iter(self))]


_COUNTERS = {
    "rs_events": "event_nid",
    "rs_state_blocks": "block_nid",
    "rs_state_snapshots": "snapshot_nid",
    "rs_event_types": "type_nid",
    "rs_state_keys": "state_key_nid",
    "rs_rooms": "room_nid",
}


class ProjectionWriter:
    """Applies log records to the projection tables (the single writer).

    Numeric IDs are allocated here, in memory, from the highest one stored (never 0),
    so that a whole batch is computed first and written with one bulk statement per
    table. A block that holds an event numbered in this batch, and a snapshot that holds
    such a block, are new by construction; only other ones are looked up by hash.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (after a failed transaction, whose allocations rolled back)."""
        self._rooms: dict[str, int] = {}
        self._types: dict[str, int] = {}
        self._keys: dict[str, int] = {}
        self._events = _Lru(_CACHE_LIMIT)
        self._blocks = _Lru(4096)
        self._block_ids = _Lru(_CACHE_LIMIT)
        self._snapshots = _Lru(4096)
        self._snapshot_ids = _Lru(_CACHE_LIMIT)
        self._next: dict[str, int] = {}
        self._first_event = 0
        self._first_block = 0
        self._new_blocks: list[tuple[int, bytes, bytes]] = []
        self._new_snapshots: list[tuple[int, bytes, bytes]] = []

    async def _alloc(self, t: Txn, table: str) -> int:
        nid = self._next.get(table)
        if nid is None:
            column = _COUNTERS[table]
            nid = int(await t.fetchval(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}"))
        self._next[table] = nid + 1
        return nid

    # ------------------------------------------------------------ numeric IDs

    async def _ensure(
        self, t: Txn, cache: dict[str, int], table: str, column: str, values: set[str]
    ) -> None:
        """Numeric IDs for every string of `values`, looked up or created in bulk."""
        missing = [v for v in values if v not in cache]
        if not missing:
            return
        id_col = _COUNTERS[table]
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        rows = await t.fetchall(
            f"SELECT {column}, {id_col} FROM {table} WHERE {column} = ANY(?)", missing
        )
        cache.update({r[0]: int(r[1]) for r in rows})
        new = []
        for value in missing:
            if value not in cache:
                cache[value] = await self._alloc(t, table)
                new.append((cache[value], value))
        await t.executemany(f"INSERT INTO {table} ({id_col}, {column}) VALUES (?, ?)", new)

    async def _room(self, t: Txn, room_id: str, version: str) -> int:
        nid = self._rooms.get(room_id)
        if nid is None:
            nid = await t.fetchval("SELECT room_nid FROM rs_rooms WHERE room_id = ?", room_id)
            if nid is None:
                nid = await self._alloc(t, "rs_rooms")
                await t.execute(
                    "INSERT INTO rs_rooms (room_nid, room_id, room_version) VALUES (?, ?, ?)",
                    nid,
                    room_id,
                    version,
                )
            self._rooms[room_id] = int(nid)
        return int(nid)

    async def _event(self, t: Txn, event_id: str) -> tuple[int, int | None]:
        info: tuple[int, int | None] | None = self._events.get(event_id)
        if info is None:
            row = await t.fetchone(
                "SELECT event_nid, after_snapshot_nid FROM rs_events WHERE event_id = ?",
                event_id,
            )
            if row is None:
                raise RoomserverError(f"log record refers to unknown event {event_id}")
            info = (int(row[0]), row[1])
            self._events.put(event_id, info)
        return info

    async def _outlier_nid(self, t: Txn, event_id: str) -> int | None:
        """The NID of an event stored without state (an outlier), None if not stored."""
        cached: tuple[int, int | None] | None = self._events.get(event_id)
        if cached is not None:
            return cached[0] if cached[1] is None else None
        row = await t.fetchone(
            "SELECT event_nid, after_snapshot_nid FROM rs_events WHERE event_id = ?", event_id
        )
        if row is None or row[1] is not None:
            return None
        return int(row[0])

    async def _has_state(self, t: Txn, event_id: str) -> bool:
        """Whether an event is stored with its place in the DAG (state after it)."""
        cached: tuple[int, int | None] | None = self._events.get(event_id)
        if cached is not None:
            return cached[1] is not None
        value = await t.fetchval(
            "SELECT after_snapshot_nid FROM rs_events WHERE event_id = ?", event_id
        )
        return value is not None

    # ------------------------------------------------------------ snapshots

    async def _snapshot_buckets(self, t: Txn, snapshot_nid: int) -> dict[int, int]:
        buckets: dict[int, int] | None = self._snapshots.get(snapshot_nid)
        if buckets is None:
            data = await t.fetchval(
                "SELECT blocks FROM rs_state_snapshots WHERE snapshot_nid = ?", snapshot_nid
            )
            buckets = unpack_snapshot(bytes(data))
            self._snapshots.put(snapshot_nid, buckets)
        return buckets

    async def _block(self, t: Txn, block_nid: int) -> dict[tuple[int, int], int]:
        entries: dict[tuple[int, int], int] | None = self._blocks.get(block_nid)
        if entries is None:
            data = await t.fetchval(
                "SELECT entries FROM rs_state_blocks WHERE block_nid = ?", block_nid
            )
            entries = {(a, b): c for a, b, c in unpack_block(bytes(data))}
            self._blocks.put(block_nid, entries)
        return entries

    async def _store_block(self, t: Txn, entries: dict[tuple[int, int], int], fresh: bool) -> int:
        data = pack_block(entries)
        key = digest(data)
        nid = self._block_ids.get(key)
        if nid is None and not fresh:
            nid = await t.fetchval("SELECT block_nid FROM rs_state_blocks WHERE hash = ?", key)
        if nid is None:
            nid = await self._alloc(t, "rs_state_blocks")
            self._new_blocks.append((nid, key, data))
            self._blocks.put(nid, entries)
        self._block_ids.put(key, int(nid))
        return int(nid)

    async def _store_snapshot(self, t: Txn, buckets: dict[int, int], fresh: bool) -> int:
        data = pack_snapshot(buckets)
        key = digest(data)
        nid = self._snapshot_ids.get(key)
        if nid is None and not fresh:
            nid = await t.fetchval(
                "SELECT snapshot_nid FROM rs_state_snapshots WHERE hash = ?", key
            )
        if nid is None:
            nid = await self._alloc(t, "rs_state_snapshots")
            self._new_snapshots.append((nid, key, data))
            self._snapshots.put(nid, buckets)
        self._snapshot_ids.put(key, int(nid))
        return int(nid)

    async def derive(
        self, t: Txn, base: int | None, changes: Mapping[tuple[int, int], int | None]
    ) -> int:
        """The snapshot of `base` (None: the empty state) with `changes` applied."""
        if base is not None and not changes:
            return base
        buckets = dict(await self._snapshot_buckets(t, base)) if base is not None else {}
        fresh_snapshot = False
        for bucket, bucket_changes in group_changes(changes).items():
            old = buckets.get(bucket)
            entries = dict(await self._block(t, old)) if old is not None else {}
            fresh = False
            for key, value in bucket_changes.items():
                if value is None:
                    entries.pop(key, None)
                else:
                    entries[key] = value
                    fresh = fresh or value >= self._first_event
            if entries:
                buckets[bucket] = await self._store_block(t, entries, fresh)
                fresh_snapshot = fresh_snapshot or buckets[bucket] >= self._first_block
            else:
                buckets.pop(bucket, None)
        return await self._store_snapshot(t, buckets, fresh_snapshot)

    # ------------------------------------------------------------ applying records

    async def apply_batch(self, t: Txn, items: Sequence[tuple[LogPayload, int]]) -> None:
        """Write the projections of consecutive log records, and the log position."""
        if not items:
            return
        types: set[str] = set()
        keys: set[str] = set()
        for payload, _ in items:
            event = payload.event
            types.add(event.type)
            if event.state_key is not None:
                keys.add(event.state_key)
            for change in (*payload.before_delta, *payload.state_delta):
                types.add(change[0])
                keys.add(change[1])
        await self._ensure(t, self._types, "rs_event_types", "event_type", types)
        await self._ensure(t, self._keys, "rs_state_keys", "state_key", keys)
        self._first_event = await self._alloc(t, "rs_events")
        self._next["rs_events"] = self._first_event
        self._first_block = await self._alloc(t, "rs_state_blocks")
        self._next["rs_state_blocks"] = self._first_block
        self._new_blocks, self._new_snapshots = [], []

        event_rows: list[tuple[Any, ...]] = []
        promoted: list[tuple[Any, ...]] = []
        filled: list[str] = []
        gaps: dict[str, int] = {}
        extremities: dict[int, list[int]] = {}
        current: dict[tuple[int, int, int], int | None] = {}
        members: dict[tuple[int, int], tuple[str, int] | None] = {}
        contents: dict[str, Mapping[str, Any]] = {}
        for payload, offset in items:
            event = payload.event
            room_nid = await self._room(t, event.room_id, event.room_version.identifier)
            type_nid = self._types[event.type]
            key_nid = None if event.state_key is None else self._keys[event.state_key]
            existing = None
            if payload.kind is InputKind.BACKFILL:
                existing = await self._outlier_nid(t, event.event_id)
            event_nid = existing if existing is not None else await self._alloc(t, "rs_events")
            before: int | None = None
            if payload.has_state:
                base = None
                if payload.before_base is not None:
                    base = (await self._event(t, payload.before_base))[1]
                    if base is None:
                        raise RoomserverError(f"{payload.before_base} has no state")
                changes = {
                    (self._types[ct], self._keys[ck]): (
                        None if ce is None else (await self._event(t, ce))[0]
                    )
                    for ct, ck, ce in payload.before_delta
                }
                before = await self.derive(t, base, changes)
            after = before
            if (
                before is not None
                and key_nid is not None
                and payload.status in (Status.ACCEPTED, Status.SOFT_FAILED)
            ):
                after = await self.derive(t, before, {(type_nid, key_nid): event_nid})
            self._events.put(event.event_id, (event_nid, after))
            if event.type == "m.room.member":
                contents[event.event_id] = event.content
            if existing is not None:
                # An outlier found again in history: the same row (and NID, which state
                # blocks may hold) gets its place in the DAG.
                promoted.append(
                    (payload.status.value, payload.reason, before, after, offset, existing)
                )
            else:
                event_rows.append(
                    (
                        event_nid,
                        event.event_id,
                        room_nid,
                        type_nid,
                        key_nid,
                        event.depth,
                        payload.status.value,
                        payload.reason,
                        before,
                        after,
                        offset,
                        orjson.dumps(event.pdu),
                    )
                )
            if payload.has_state and payload.status in (Status.ACCEPTED, Status.SOFT_FAILED):
                filled.append(event.event_id)
                gaps.pop(event.event_id, None)
                if payload.before_base is None and event.prev_event_ids:
                    # State given from outside (a join, a gap bridged, backfill): its
                    # prev events may be history this server does not have.
                    for prev in event.prev_event_ids:
                        if not await self._has_state(t, prev):
                            gaps[prev] = room_nid
            if payload.extremities is not None:
                extremities[room_nid] = [(await self._event(t, e))[0] for e in payload.extremities]
            for ct, ck, ce in payload.state_delta:
                tn, kn = self._types[ct], self._keys[ck]
                nid = None if ce is None else (await self._event(t, ce))[0]
                current[(room_nid, tn, kn)] = nid
                if ct == "m.room.member":
                    if ce is None or nid is None:
                        members[(room_nid, kn)] = None
                    else:
                        content = contents.get(ce)
                        if content is None:
                            pdu = await t.fetchval(
                                "SELECT pdu FROM rs_events WHERE event_nid = ?", nid
                            )
                            content = orjson.loads(bytes(pdu)).get("content") or {}
                        membership = content.get("membership")
                        members[(room_nid, kn)] = (
                            membership if isinstance(membership, str) else "",
                            nid,
                        )

        await t.executemany(
            "INSERT INTO rs_state_blocks (block_nid, hash, entries) VALUES (?, ?, ?)",
            self._new_blocks,
        )
        await t.executemany(
            "INSERT INTO rs_state_snapshots (snapshot_nid, hash, blocks) VALUES (?, ?, ?)",
            self._new_snapshots,
        )
        await t.executemany(
            "INSERT INTO rs_events (event_nid, event_id, room_nid, type_nid, state_key_nid,"
            " depth, status, reason, before_snapshot_nid, after_snapshot_nid, log_offset, pdu)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            event_rows,
        )
        await t.executemany(
            "UPDATE rs_events SET status = ?, reason = ?, before_snapshot_nid = ?,"
            " after_snapshot_nid = ?, log_offset = ? WHERE event_nid = ?",
            promoted,
        )
        if filled:
            await t.execute("DELETE FROM rs_backward_extremities WHERE event_id = ANY(?)", filled)
        await t.executemany(
            "INSERT INTO rs_backward_extremities (room_nid, event_id) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING",
            [(room_nid, event_id) for event_id, room_nid in gaps.items()],
        )
        await t.executemany(
            "DELETE FROM rs_forward_extremities WHERE room_nid = ?",
            [(r,) for r in extremities],
        )
        await t.executemany(
            "INSERT INTO rs_forward_extremities (room_nid, event_nid) VALUES (?, ?)",
            [(r, e) for r, ids in extremities.items() for e in ids],
        )
        await t.executemany(
            "DELETE FROM rs_current_state WHERE room_nid = ? AND type_nid = ?"
            " AND state_key_nid = ?",
            [k for k, v in current.items() if v is None],
        )
        await t.executemany(
            "INSERT INTO rs_current_state (room_nid, type_nid, state_key_nid, event_nid)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (room_nid, type_nid, state_key_nid)"
            " DO UPDATE SET event_nid = excluded.event_nid",
            [(*k, v) for k, v in current.items() if v is not None],
        )
        await t.executemany(
            "DELETE FROM rs_memberships WHERE room_nid = ? AND user_nid = ?",
            [k for k, m in members.items() if m is None],
        )
        await t.executemany(
            "INSERT INTO rs_memberships (room_nid, user_nid, membership, event_nid)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (room_nid, user_nid)"
            " DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid",
            [(*k, *m) for k, m in members.items() if m is not None],
        )
        await t.execute(
            "INSERT INTO rs_position (id, log_offset) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET log_offset = excluded.log_offset",
            items[-1][1],
        )
        self._new_blocks, self._new_snapshots = [], []


# ---------------------------------------------------------------- reading


async def position(t: Txn) -> int:
    value = await t.fetchval("SELECT log_offset FROM rs_position WHERE id = 1")
    return int(value) if value is not None else 0


async def snapshot_event_nids(t: Txn, snapshot_nid: int) -> list[int]:
    """Event NIDs of every entry of a snapshot."""
    data = await t.fetchval(
        "SELECT blocks FROM rs_state_snapshots WHERE snapshot_nid = ?", snapshot_nid
    )
    block_nids = list(unpack_snapshot(bytes(data)).values())
    if not block_nids:
        return []
    rows = await t.fetchall(
        "SELECT entries FROM rs_state_blocks WHERE block_nid = ANY(?)", block_nids
    )
    return [entry[2] for (blob,) in rows for entry in unpack_block(bytes(blob))]


async def snapshot_state(t: Txn, snapshot_nid: int) -> dict[StateKey, str]:
    """A snapshot as `(type, state_key) -> event ID`."""
    nids = await snapshot_event_nids(t, snapshot_nid)
    if not nids:
        return {}
    rows = await t.fetchall(
        "SELECT ty.event_type, sk.state_key, e.event_id FROM rs_events e"
        " JOIN rs_event_types ty ON ty.type_nid = e.type_nid"
        " JOIN rs_state_keys sk ON sk.state_key_nid = e.state_key_nid"
        " WHERE e.event_nid = ANY(?)",
        nids,
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def snapshot_state_nids(t: Txn, snapshot_nid: int) -> StateNids:
    data = await t.fetchval(
        "SELECT blocks FROM rs_state_snapshots WHERE snapshot_nid = ?", snapshot_nid
    )
    block_nids = list(unpack_snapshot(bytes(data)).values())
    result: StateNids = {}
    if block_nids:
        rows = await t.fetchall(
            "SELECT entries FROM rs_state_blocks WHERE block_nid = ANY(?)", block_nids
        )
        for (blob,) in rows:
            for a, b, c in unpack_block(bytes(blob)):
                result[(a, b)] = c
    return result


def event_from_row(event_id: str, version: str, pdu: Any) -> Event:
    return Event(event_id, room_version(version), orjson.loads(bytes(pdu)))


_EVENTS_BY_ID = (
    "SELECT e.event_id, r.room_version, e.pdu, e.status, e.depth, e.log_offset, e.reason,"
    " e.before_snapshot_nid, e.after_snapshot_nid"
    " FROM rs_events e JOIN rs_rooms r ON r.room_nid = e.room_nid"
    " WHERE e.event_id = ANY(?)"
)
StoredEvent = tuple[Event, Status, Any]
"""`(event, status, extras)`; extras are `(depth, log_offset, reason, before_snapshot_nid,
after_snapshot_nid)`."""


def _stored(rows: list[Any]) -> list[StoredEvent]:
    return [(event_from_row(r[0], r[1], r[2]), Status(r[3]), r[4:]) for r in rows]


async def events_by_id(t: Txn, event_ids: Sequence[str]) -> list[StoredEvent]:
    """The stored events among `event_ids`, inside a transaction."""
    if not event_ids:
        return []
    return _stored(await t.fetchall(_EVENTS_BY_ID, list(event_ids)))


async def fetch_events(db: Database, event_ids: Sequence[str]) -> list[StoredEvent]:
    """The stored events among `event_ids`, in one statement (no transaction)."""
    if not event_ids:
        return []
    return _stored(await db.fetchall(_EVENTS_BY_ID, list(event_ids)))


async def current_state(t: Txn, room_id: str) -> dict[StateKey, str] | None:
    room_nid = await t.fetchval("SELECT room_nid FROM rs_rooms WHERE room_id = ?", room_id)
    if room_nid is None:
        return None
    rows = await t.fetchall(
        "SELECT ty.event_type, sk.state_key, e.event_id FROM rs_current_state c"
        " JOIN rs_events e ON e.event_nid = c.event_nid"
        " JOIN rs_event_types ty ON ty.type_nid = c.type_nid"
        " JOIN rs_state_keys sk ON sk.state_key_nid = c.state_key_nid"
        " WHERE c.room_nid = ?",
        room_nid,
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def extremities(t: Txn, room_id: str) -> list[tuple[str, int]]:
    """`(event_id, depth)` of a room's forward extremities, sorted by event ID."""
    rows = await t.fetchall(
        "SELECT e.event_id, e.depth FROM rs_forward_extremities f"
        " JOIN rs_rooms r ON r.room_nid = f.room_nid"
        " JOIN rs_events e ON e.event_nid = f.event_nid"
        " WHERE r.room_id = ? ORDER BY e.event_id",
        room_id,
    )
    return [(r[0], int(r[1])) for r in rows]


async def backward_extremities(t: Txn, room_id: str) -> list[str]:
    """The event IDs where the room's history here stops short (`rs_backward_extremities`),
    sorted."""
    rows = await t.fetchall(
        "SELECT b.event_id FROM rs_backward_extremities b"
        " JOIN rs_rooms r ON r.room_nid = b.room_nid WHERE r.room_id = ? ORDER BY b.event_id",
        room_id,
    )
    return [str(r[0]) for r in rows]
