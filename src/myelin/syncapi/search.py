"""The full-text search index behind `/search` (the `room_events` category).

`sync_search` holds the searchable text of each served event: `content.body` of
`m.room.message`, `content.name` of `m.room.name`, `content.topic` of `m.room.topic`
(the keys the spec lists). Full-text matching is the backend's own: an external-content
FTS5 table kept in step by triggers on SQLite, a GIN index over `to_tsvector` on
PostgreSQL. Both use the language-neutral tokenisation (`unicode61` / `simple`) and AND
together the words of the search term, so the two backends find the same events; only
the rank values differ (bm25 against ts_rank).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from myelin.core.events import Event
from myelin.storage import Backend, Database, Txn

#: event type -> the content key searched, as `/search` names it.
SEARCH_KEYS = {
    "m.room.message": ("content.body", "body"),
    "m.room.name": ("content.name", "name"),
    "m.room.topic": ("content.topic", "topic"),
}
ALL_KEYS = tuple(k for k, _ in SEARCH_KEYS.values())
_WORD = re.compile(r"\w+", re.UNICODE)

_SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS sync_search_fts USING fts5("
    "body, content='sync_search', content_rowid='pos', tokenize='unicode61')",
    "CREATE TRIGGER IF NOT EXISTS sync_search_ai AFTER INSERT ON sync_search BEGIN"
    " INSERT INTO sync_search_fts (rowid, body) VALUES (new.pos, new.body); END",
    "CREATE TRIGGER IF NOT EXISTS sync_search_ad AFTER DELETE ON sync_search BEGIN"
    " INSERT INTO sync_search_fts (sync_search_fts, rowid, body)"
    " VALUES ('delete', old.pos, old.body); END",
)
_POSTGRES_DDL = (
    "CREATE INDEX IF NOT EXISTS sync_search_fts ON sync_search"
    " USING GIN (to_tsvector('simple', body))",
)


async def ensure_fulltext(db: Database) -> None:
    """Create the backend's full-text structures (idempotent; after the migrations)."""

    async def txn(t: Txn) -> None:
        for statement in _SQLITE_DDL if t.backend is Backend.SQLITE else _POSTGRES_DDL:
            await t.execute(statement)

    await db.run(txn)


async def index_event(t: Txn, event: Event, offset: int, ts: int) -> None:
    """Index an event's searchable text, if it has any."""
    found = SEARCH_KEYS.get(event.type)
    if found is None:
        return
    key, field = found
    text = event.content.get(field)
    if not isinstance(text, str) or not text.strip():
        return
    await t.execute(
        "INSERT INTO sync_search (pos, room_id, event_id, sender, key, body, origin_server_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        offset,
        event.room_id,
        event.event_id,
        event.sender,
        key,
        text,
        ts,
    )


def words(term: str) -> list[str]:
    """The words of a search term, lower-cased, each once, in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(term.lower()):
        seen.setdefault(word, None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class Hit:
    pos: int
    room_id: str
    event_id: str
    sender: str
    rank: float


async def match(
    t: Txn,
    term: str,
    rooms: list[str],
    keys: list[str],
    *,
    order_by_rank: bool,
    offset: int,
    limit: int,
    senders: list[str] | None = None,
    not_senders: list[str] | None = None,
) -> tuple[list[Hit], int]:
    """Up to `limit` hits after skipping `offset`, and the total number of hits; only
    events sent by `senders` (when given) and not by `not_senders`."""
    terms = words(term)
    if not terms or not rooms or not keys:
        return [], 0
    if t.backend is Backend.SQLITE:
        query = " ".join('"' + w.replace('"', '""') + '"' for w in terms)
        source = (
            "FROM sync_search_fts f JOIN sync_search s ON s.pos = f.rowid"
            " WHERE sync_search_fts MATCH ? AND s.room_id = ANY(?) AND s.key = ANY(?)"
        )
        rank = "-bm25(sync_search_fts)"
    else:
        query = " ".join(terms)
        source = (
            "FROM sync_search s WHERE to_tsvector('simple', s.body)"
            " @@ plainto_tsquery('simple', ?) AND s.room_id = ANY(?) AND s.key = ANY(?)"
        )
        rank = "ts_rank(to_tsvector('simple', s.body), plainto_tsquery('simple', ?))"
    extra: list[object] = []
    if senders is not None:
        source += " AND s.sender = ANY(?)"
        extra.append(senders)
    if not_senders:
        source += " AND NOT (s.sender = ANY(?))"
        extra.append(not_senders)
    order = "rank DESC, s.pos DESC" if order_by_rank else "s.pos DESC"
    rank_args: list[object] = [] if t.backend is Backend.SQLITE else [query]
    rows = await t.fetchall(
        f"SELECT s.pos, s.room_id, s.event_id, s.sender, {rank} AS rank {source}"
        f" ORDER BY {order} LIMIT ? OFFSET ?",
        *rank_args,
        query,
        rooms,
        keys,
        *extra,
        limit,
        offset,
    )
    total = await t.fetchval(f"SELECT count(*) {source}", query, rooms, keys, *extra)
    hits = [Hit(int(r[0]), r[1], r[2], r[3], float(r[4])) for r in rows]
    return hits, int(total or 0)
