"""Presence in the database, as a stream with positions.

A change of state or status message takes a new position (and so reaches the users who
share a room with the user in their next `/sync`); a mere refresh of the last-active
time does not, so `set_presence=online` on every sync does not wake anyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from myelin.storage import Txn

STATES = frozenset({"online", "offline", "unavailable"})
#: A user active within this many milliseconds is `currently_active`.
ACTIVE_MS = 5 * 60 * 1000


async def put(
    t: Txn, user_id: str, state: str, status_msg: str | None, now: int, keep_msg: bool
) -> bool:
    """Set a user's presence; whether it changed (and took a new position). With
    `keep_msg` the stored status message stays (`set_presence` on `/sync`)."""
    row = await t.fetchone("SELECT state, status_msg FROM presence WHERE user_id = ?", user_id)
    if keep_msg and row is not None:
        status_msg = row[1]
    if row is not None and row[0] == state and row[1] == status_msg:
        await t.execute("UPDATE presence SET last_active_ts = ? WHERE user_id = ?", now, user_id)
        return False
    pos = int(
        await t.fetchval("INSERT INTO presence_stream (user_id) VALUES (?) RETURNING pos", user_id)
    )
    await t.execute(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, pos)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,"
        " status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,"
        " pos = excluded.pos",
        user_id,
        state,
        status_msg,
        now,
        pos,
    )
    return True


async def latest_position(t: Txn) -> int:
    return int(await t.fetchval("SELECT max(pos) FROM presence_stream") or 0)


def content(state: str, status_msg: str | None, last_active: int, now: int) -> dict[str, Any]:
    """The presence content (`m.presence` event content and GET .../status body)."""
    out: dict[str, Any] = {
        "presence": state,
        "last_active_ago": max(0, now - last_active),
        "currently_active": state == "online" and now - last_active < ACTIVE_MS,
    }
    if status_msg is not None:
        out["status_msg"] = status_msg
    return out


async def get(t: Txn, user_id: str, now: int) -> dict[str, Any] | None:
    row = await t.fetchone(
        "SELECT state, status_msg, last_active_ts FROM presence WHERE user_id = ?", user_id
    )
    return None if row is None else content(row[0], row[1], int(row[2]), now)


async def events(
    t: Txn, user_ids: Iterable[str], after: int, upto: int, now: int
) -> list[dict[str, Any]]:
    """`m.presence` events of those users whose presence changed in `(after, upto]`."""
    if after >= upto:  # an empty range: no query
        return []
    ids = sorted(set(user_ids))
    if not ids:
        return []
    rows = await t.fetchall(
        "SELECT user_id, state, status_msg, last_active_ts FROM presence"
        " WHERE user_id = ANY(?) AND pos > ? AND pos <= ? ORDER BY pos",
        ids,
        after,
        upto,
    )
    return [
        {"type": "m.presence", "sender": r[0], "content": content(r[1], r[2], int(r[3]), now)}
        for r in rows
    ]
