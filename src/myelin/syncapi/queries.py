"""Read queries over the sync projections (each takes a `Txn` of a read transaction)."""

from __future__ import annotations

from collections.abc import Sequence

from myelin.storage import Txn
from myelin.syncapi.format import EVENT_COLUMNS, StoredEvent, stored_event


async def memberships(t: Txn, user_id: str) -> list[tuple[str, str, int]]:
    """`(room_id, membership, pos)` of every room the user has a membership in."""
    rows = await t.fetchall(
        "SELECT m.room_id, m.membership, m.pos FROM sync_memberships m"
        " WHERE m.user_id = ? AND NOT EXISTS (SELECT 1 FROM sync_forgotten f"
        " WHERE f.user_id = m.user_id AND f.room_id = m.room_id)",
        user_id,
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


async def membership(t: Txn, user_id: str, room_id: str) -> tuple[str, int] | None:
    row = await t.fetchone(
        "SELECT membership, pos FROM sync_memberships WHERE user_id = ? AND room_id = ?",
        user_id,
        room_id,
    )
    return None if row is None else (row[0], int(row[1]))


async def events_between(
    t: Txn, room_id: str, after: int, upto: int, limit: int, *, descending: bool = True
) -> list[StoredEvent]:
    """Events with `after < pos <= upto`, newest first (or oldest first)."""
    order = "DESC" if descending else "ASC"
    rows = await t.fetchall(
        f"SELECT {EVENT_COLUMNS} FROM sync_events WHERE room_id = ? AND pos > ? AND pos <= ?"
        f" ORDER BY pos {order} LIMIT ?",
        room_id,
        after,
        upto,
        limit,
    )
    return [stored_event(r) for r in rows]


#: The widest position range `state_keys_between` looks through; past it, callers reread.
STATE_SCAN = 1000


async def state_keys_between(
    t: Txn, room_id: str, after: int, upto: int
) -> frozenset[tuple[str, str]] | None:
    """The `(type, state_key)` of the room's state events with `after < pos <= upto`, or
    None when the range is too wide to look through (`STATE_SCAN`). Per-user caches of
    facts drawn from a room's state events (a member's display name, their membership
    history) check with it that nothing they depend on arrived since they were read:
    every member woken by one event asks the same range, one read when they share a
    transaction (`myelin.syncapi.batch`)."""
    if upto <= after:
        return frozenset()
    if upto - after > STATE_SCAN:
        return None
    rows = await t.fetchall(
        "SELECT type, state_key FROM sync_events WHERE room_id = ? AND pos > ? AND pos <= ?"
        " AND state_key IS NOT NULL",
        room_id,
        after,
        upto,
    )
    return frozenset((str(r[0]), str(r[1])) for r in rows)


async def events_by_id(t: Txn, event_ids: Sequence[str]) -> list[StoredEvent]:
    if not event_ids:
        return []
    rows = await t.fetchall(
        f"SELECT {EVENT_COLUMNS} FROM sync_events WHERE event_id = ANY(?)", list(event_ids)
    )
    return [stored_event(r) for r in rows]


async def current_state(
    t: Txn, room_id: str, *, changed_after: int = 0, upto: int | None = None
) -> list[StoredEvent]:
    """Current state events of a room (those set after `changed_after`, at or before `upto`)."""
    sql = (
        f"SELECT {', '.join('e.' + c.strip() for c in EVENT_COLUMNS.split(','))}"
        " FROM sync_current_state s JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.room_id = ? AND s.pos > ?"
    )
    args: list[object] = [room_id, changed_after]
    if upto is not None:
        sql += " AND s.pos <= ?"
        args.append(upto)
    rows = await t.fetchall(sql + " ORDER BY s.pos", *args)
    return [stored_event(r) for r in rows]


async def state_event(t: Txn, room_id: str, event_type: str, state_key: str) -> StoredEvent | None:
    cols = ", ".join("e." + c.strip() for c in EVENT_COLUMNS.split(","))
    row = await t.fetchone(
        f"SELECT {cols} FROM sync_current_state s JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.room_id = ? AND s.type = ? AND s.state_key = ?",
        room_id,
        event_type,
        state_key,
    )
    return None if row is None else stored_event(row)


async def member_events(t: Txn, room_id: str, user_ids: Sequence[str]) -> list[StoredEvent]:
    if not user_ids:
        return []
    cols = ", ".join("e." + c.strip() for c in EVENT_COLUMNS.split(","))
    rows = await t.fetchall(
        f"SELECT {cols} FROM sync_current_state s JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.room_id = ? AND s.type = 'm.room.member' AND s.state_key = ANY(?)",
        room_id,
        list(user_ids),
    )
    return [stored_event(r) for r in rows]


async def txn_ids(t: Txn, user_id: str, device_id: str, event_ids: Sequence[str]) -> dict[str, str]:
    if not event_ids:
        return {}
    rows = await t.fetchall(
        "SELECT event_id, txn_id FROM sync_txns WHERE user_id = ? AND device_id = ?"
        " AND event_id = ANY(?)",
        user_id,
        device_id,
        list(event_ids),
    )
    return {r[0]: r[1] for r in rows}


async def redaction_events(t: Txn, events: Sequence[StoredEvent]) -> dict[str, StoredEvent]:
    ids = sorted({e.redacted_by for e in events if e.redacted_by is not None})
    return {e.event_id: e for e in await events_by_id(t, ids)}


async def replaced_events(t: Txn, events: Sequence[StoredEvent]) -> dict[str, StoredEvent]:
    ids = sorted({e.replaces for e in events if e.replaces is not None})
    return {e.event_id: e for e in await events_by_id(t, ids)}


async def event_pos(t: Txn, event_id: str) -> StoredEvent | None:
    found = await events_by_id(t, [event_id])
    return found[0] if found else None


async def device_txns(t: Txn, user_id: str, device_id: str) -> dict[tuple[str, str], str]:
    """Every recorded transaction of a device: `(scope, txn_id) -> event_id`."""
    rows = await t.fetchall(
        "SELECT scope, txn_id, event_id FROM sync_txns WHERE user_id = ? AND device_id = ?",
        user_id,
        device_id,
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def record_txn(
    t: Txn, user_id: str, device_id: str, scope: str, txn_id: str, event_id: str
) -> None:
    """Record a transaction from its event's log record (the log is the truth: a replay
    overwrites whatever an older server version left for the same transaction)."""
    await t.execute(
        "INSERT INTO sync_txns (user_id, device_id, scope, txn_id, event_id)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id, scope, txn_id)"
        " DO UPDATE SET event_id = excluded.event_id",
        user_id,
        device_id,
        scope,
        txn_id,
        event_id,
    )


async def state_at(t: Txn, room_id: str, upto: int) -> list[StoredEvent]:
    """The room's state as of position `upto` (the latest state event of each type and
    state key at or before it): what a user who left at `upto` last saw."""
    rows = await t.fetchall(
        f"SELECT {EVENT_COLUMNS} FROM sync_events WHERE room_id = ?"
        " AND state_key IS NOT NULL AND pos <= ? ORDER BY pos",
        room_id,
        upto,
    )
    latest: dict[tuple[str, str], StoredEvent] = {}
    for row in rows:
        event = stored_event(row)
        latest[(event.type, event.state_key or "")] = event
    return sorted(latest.values(), key=lambda e: e.pos)


async def joined_room_ids(t: Txn, user_id: str) -> list[str]:
    """The rooms the user is joined to."""
    rows = await t.fetchall(
        "SELECT room_id FROM sync_memberships WHERE user_id = ? AND membership = 'join'",
        user_id,
    )
    return [str(r[0]) for r in rows]


async def joined_members(t: Txn, room_id: str) -> list[str]:
    """The users joined to the room."""
    rows = await t.fetchall(
        "SELECT user_id FROM sync_memberships WHERE room_id = ? AND membership = 'join'",
        room_id,
    )
    return [str(r[0]) for r in rows]


async def sharing_users(t: Txn, user_id: str) -> set[str]:
    """Users joined to a room the user is joined to, the user included."""
    rows = await t.fetchall(
        "SELECT DISTINCT o.user_id FROM sync_memberships m"
        " JOIN sync_memberships o ON o.room_id = m.room_id AND o.membership = 'join'"
        " WHERE m.user_id = ? AND m.membership = 'join'",
        user_id,
    )
    return {str(r[0]) for r in rows} | {user_id}
