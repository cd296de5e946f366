"""Read receipts in the database, as a stream with positions.

Only the latest receipt per (room, type, user, thread) is kept: a new one replaces it
and takes a new position, so an incremental `/sync` sends each changed receipt once.
`m.read.private` receipts are served only to their owner (receipts.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from myelin.storage import Txn

RECEIPT_TYPES = frozenset({"m.read", "m.read.private"})
PRIVATE = "m.read.private"


async def put(
    t: Txn,
    room_id: str,
    receipt_type: str,
    user_id: str,
    thread_id: str,
    event_id: str,
    ts: int,
) -> int | None:
    """Store a receipt; returns its stream position, or None when the user's receipt of
    that type and thread is already at a later event (receipts never move backwards)."""
    newer = await t.fetchval(
        "SELECT 1 FROM receipts r JOIN sync_events old ON old.event_id = r.event_id"
        " JOIN sync_events new ON new.event_id = ?"
        " WHERE r.room_id = ? AND r.receipt_type = ? AND r.user_id = ? AND r.thread_id = ?"
        " AND old.pos >= new.pos",
        event_id,
        room_id,
        receipt_type,
        user_id,
        thread_id,
    )
    if newer is not None:
        return None
    pos = int(
        await t.fetchval("INSERT INTO receipt_stream (room_id) VALUES (?) RETURNING pos", room_id)
    )
    await t.execute(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, pos)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, receipt_type, user_id, thread_id)"
        " DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, pos = excluded.pos",
        room_id,
        receipt_type,
        user_id,
        thread_id,
        event_id,
        ts,
        pos,
    )
    return pos


async def latest_position(t: Txn) -> int:
    return int(await t.fetchval("SELECT max(pos) FROM receipt_stream") or 0)


async def receipt_events(
    t: Txn, viewer: str, room_ids: Sequence[str], after: int, upto: int
) -> dict[str, dict[str, Any]]:
    """The `m.receipt` event of each room with receipts changed in `(after, upto]`."""
    if not room_ids or after >= upto:  # an empty range: no query (the usual /sync case)
        return {}
    rows = await t.fetchall(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts"
        " WHERE room_id = ANY(?) AND pos > ? AND pos <= ? ORDER BY pos",
        list(room_ids),
        after,
        upto,
    )
    out: dict[str, dict[str, Any]] = {}
    for room_id, receipt_type, user_id, thread_id, event_id, ts in rows:
        if receipt_type == PRIVATE and user_id != viewer:
            continue
        content = out.setdefault(room_id, {"type": "m.receipt", "content": {}})["content"]
        entry: dict[str, Any] = {"ts": int(ts)}
        if thread_id:
            entry["thread_id"] = thread_id
        content.setdefault(event_id, {}).setdefault(receipt_type, {})[user_id] = entry
    return out


async def read_positions(t: Txn, room_id: str, user_id: str) -> dict[str, int]:
    """Where the user has read up to in the room: thread ID ('' for unthreaded receipts,
    'main' for the main timeline) -> room-stream position of the receipt's event."""
    rows = await t.fetchall(
        "SELECT r.thread_id, max(e.pos) FROM receipts r JOIN sync_events e"
        " ON e.event_id = r.event_id WHERE r.room_id = ? AND r.user_id = ?"
        " GROUP BY r.thread_id",
        room_id,
        user_id,
    )
    out: dict[str, int] = {}
    for thread_id, pos in rows:
        out[str(thread_id)] = int(pos)
    return out
