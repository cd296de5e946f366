"""Relations between events (threads, edits, annotations, references): the projection,
its queries and the bundled aggregations served in `unsigned["m.relations"]`.

The reader records every accepted event whose content carries an `m.relates_to` with a
`rel_type` and an `event_id`, together with each event's timestamp (for
`/timestamp_to_event`) and its searchable text (see `search`). A redaction that applies
removes the redacted event from the relations and the search index, so it drops out of
`/relations`, `/threads` and the aggregations. All of it is replayed by a rebuild.

Aggregations follow the spec's per-type rules: `m.replace` bundles the most recent edit
by the original sender (by `origin_server_ts`, then the largest `event_id`), never for a
redacted original; `m.thread` bundles the latest reply, the reply count and whether the
requesting user took part; `m.reference` bundles a chunk of event IDs; `m.annotation` is
not aggregated by the server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from myelin.core.events import Event
from myelin.storage import Txn
from myelin.syncapi.format import EVENT_COLUMNS, StoredEvent, stored_event
from myelin.syncapi.search import index_event

#: Projection tables of this module, dropped and replayed by a rebuild.
RELATION_TABLES = ("sync_relations", "sync_search", "sync_timestamps")

_E_COLUMNS = ", ".join("e." + c.strip() for c in EVENT_COLUMNS.split(","))


def relation_of(content: Any) -> tuple[str, str, str | None] | None:
    """`(rel_type, parent_event_id, key)` of an event's content, or None if it relates to
    nothing (a malformed `m.relates_to` is not a relation)."""
    if not isinstance(content, dict):
        return None
    rel = content.get("m.relates_to")
    if not isinstance(rel, dict):
        return None
    rel_type, parent = rel.get("rel_type"), rel.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent, str) or not rel_type or not parent:
        return None
    key = rel.get("key") if rel_type == "m.annotation" else None
    return rel_type, parent, key if isinstance(key, str) else None


async def apply_event(t: Txn, event: Event, offset: int) -> None:
    """Project one accepted event: its timestamp, its relation, its searchable text."""
    ts = event.pdu.get("origin_server_ts")
    ts = ts if isinstance(ts, int) else 0
    await t.execute(
        "INSERT INTO sync_timestamps (pos, room_id, event_id, origin_server_ts)"
        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        offset,
        event.room_id,
        event.event_id,
        ts,
    )
    found = relation_of(event.content)
    if found is not None and event.state_key is None:
        rel_type, parent, key = found
        await t.execute(
            "INSERT INTO sync_relations (event_id, room_id, parent_id, rel_type, type, sender,"
            " aggregation_key, origin_server_ts, pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            event.event_id,
            event.room_id,
            parent,
            rel_type,
            event.type,
            event.sender,
            key,
            ts,
            offset,
        )
    await index_event(t, event, offset, ts)


async def apply_redaction(t: Txn, redacted_event_id: str) -> None:
    """A redacted event relates to nothing any more and is no longer searchable."""
    await t.execute("DELETE FROM sync_relations WHERE event_id = ?", redacted_event_id)
    await t.execute("DELETE FROM sync_search WHERE event_id = ?", redacted_event_id)


# ---------------------------------------------------------------------- queries


async def children(
    t: Txn,
    room_id: str,
    parent_id: str,
    *,
    rel_type: str | None,
    event_type: str | None,
    after: int,
    before: int,
    limit: int,
    descending: bool,
) -> list[StoredEvent]:
    """Served child events of `parent_id` with `after < pos < before`, in its room only (an
    event elsewhere may name any event ID as its parent)."""
    sql = (
        f"SELECT {_E_COLUMNS} FROM sync_relations r JOIN sync_events e ON e.event_id = r.event_id"
        " WHERE r.parent_id = ? AND r.room_id = ? AND r.pos > ? AND r.pos < ?"
    )
    args: list[object] = [parent_id, room_id, after, before]
    if rel_type is not None:
        sql += " AND r.rel_type = ?"
        args.append(rel_type)
    if event_type is not None:
        sql += " AND r.type = ?"
        args.append(event_type)
    sql += f" ORDER BY r.pos {'DESC' if descending else 'ASC'} LIMIT ?"
    args.append(limit)
    return [stored_event(r) for r in await t.fetchall(sql, *args)]


async def thread_roots(
    t: Txn, room_id: str, *, user_id: str | None, before: int, limit: int
) -> list[tuple[str, int]]:
    """`(root_event_id, latest_reply_pos)` of threads in a room, most recently active
    first, with latest reply before `before`; only threads `user_id` took part in (sent
    the root or a reply) when given."""
    sql = (
        "SELECT r.parent_id, max(r.pos) AS latest FROM sync_relations r"
        " WHERE r.room_id = ? AND r.rel_type = 'm.thread'"
    )
    args: list[object] = [room_id]
    if user_id is not None:
        sql += (
            " AND (EXISTS (SELECT 1 FROM sync_events e WHERE e.event_id = r.parent_id"
            " AND e.sender = ?) OR EXISTS (SELECT 1 FROM sync_relations p"
            " WHERE p.parent_id = r.parent_id AND p.rel_type = 'm.thread' AND p.sender = ?))"
        )
        args.extend([user_id, user_id])
    sql += " GROUP BY r.parent_id HAVING max(r.pos) < ? ORDER BY latest DESC LIMIT ?"
    args.extend([before, limit])
    return [(r[0], int(r[1])) for r in await t.fetchall(sql, *args)]


FormatOne = Callable[[StoredEvent], dict[str, Any]]


def _may_replace(original: StoredEvent, sender: str, event_type: str) -> bool:
    """Whether an edit can replace `original` (event_replacements "Validity of replacement
    events"): same sender and type, the original not a state event, not redacted (a
    redacted original bundles no edit) and not itself an edit."""
    if original.redacted_by is not None or original.state_key is not None:
        return False
    if sender != original.sender or event_type != original.type:
        return False
    found = relation_of(original.pdu.get("content"))
    return found is None or found[0] != "m.replace"


async def bundled_aggregations(
    t: Txn, events: Sequence[StoredEvent], user_id: str, fmt: FormatOne
) -> dict[str, dict[str, Any]]:
    """`m.relations` of each event that has child aggregations, by event ID; `fmt` serves
    the events bundled whole (the latest edit, the latest thread reply)."""
    if not events:
        return {}
    rows = await t.fetchall(
        "SELECT parent_id, rel_type, event_id, sender, type, origin_server_ts, room_id"
        " FROM sync_relations WHERE parent_id = ANY(?)"
        " AND rel_type IN ('m.replace', 'm.thread', 'm.reference') ORDER BY pos",
        [e.event_id for e in events],
    )
    if not rows:
        return {}
    by_id = {e.event_id: e for e in events}
    out: dict[str, dict[str, Any]] = {}
    edits: dict[str, list[tuple[int, str]]] = {}
    threads: dict[str, dict[str, Any]] = {}
    for parent_id, rel_type, event_id, sender, event_type, ts, room_id in rows:
        parent = by_id[parent_id]
        if room_id != parent.room_id:
            continue
        if rel_type == "m.replace":
            if _may_replace(parent, sender, event_type):
                edits.setdefault(parent_id, []).append((int(ts), event_id))
        elif rel_type == "m.thread":
            info = threads.setdefault(parent_id, {"count": 0, "latest": "", "mine": False})
            info["count"] += 1
            info["latest"] = event_id
            info["mine"] = info["mine"] or sender == user_id
        else:
            chunk = out.setdefault(parent_id, {}).setdefault("m.reference", {"chunk": []})
            chunk["chunk"].append({"event_id": event_id})
    wanted = [e[1] for found in edits.values() for e in found]
    wanted += [i["latest"] for i in threads.values()]
    served = {
        r[2]: stored_event(r)
        for r in await t.fetchall(
            f"SELECT {EVENT_COLUMNS} FROM sync_events WHERE event_id = ANY(?)", wanted
        )
    }
    for parent_id, candidates in edits.items():
        # The most recent valid edit: by timestamp, then the largest event ID.
        for _, edit_id in sorted(candidates, reverse=True):
            edit = served.get(edit_id)
            if edit is not None and isinstance(
                edit.pdu.get("content", {}).get("m.new_content"), dict
            ):
                out.setdefault(parent_id, {})["m.replace"] = fmt(edit)
                break
    for parent_id, info in threads.items():
        latest = served.get(info["latest"])
        if latest is None:
            continue
        out.setdefault(parent_id, {})["m.thread"] = {
            "latest_event": fmt(latest),
            "count": info["count"],
            "current_user_participated": bool(info["mine"]) or by_id[parent_id].sender == user_id,
        }
    return out
