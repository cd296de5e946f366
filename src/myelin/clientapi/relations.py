"""Relations, threads and `/timestamp_to_event` (Client-Server API, v1 endpoints).

- `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`: the child events of
  an event, newest first by default, paginated with stream tokens (`from`, `to`, `dir`,
  `limit`), optionally `recurse` (children of children, up to `MAX_RECURSION` levels).
- `GET /rooms/{roomId}/threads`: thread roots, most recently active first (`include`
  `all` or `participated`), each with its bundled `m.thread` aggregation.
- `GET /rooms/{roomId}/timestamp_to_event`: the event nearest a timestamp, `dir` f or b.

Everything is read from the sync projections, within the history the user may read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from myelin.clientapi.directory import check_room_id
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    invalid_param,
    json_response,
    missing_param,
    not_found,
)
from myelin.clientapi.router import CLIENT_V1_PREFIX, Router
from myelin.storage import Txn
from myelin.syncapi import queries
from myelin.syncapi import relations as rel
from myelin.syncapi.format import StoredEvent, client_event, now_ms
from myelin.syncapi.sync import SyncAPI
from myelin.syncapi.tokens import StreamToken
from myelin.syncapi.visibility import VisibilityCheck

MAX_RECURSION = 3
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def int_param(req: Request, name: str, default: int, maximum: int = MAX_LIMIT) -> int:
    value = req.query_param(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise invalid_param(f"'{name}' must be a non-negative integer")
    return min(int(value), maximum)


def direction_param(req: Request, default: str | None) -> str:
    value = req.query_param("dir") or default
    if value is None:
        raise missing_param("Missing 'dir'")
    if value not in ("b", "f"):
        raise invalid_param("'dir' must be 'b' or 'f'")
    return value


def token_param(req: Request, name: str) -> int | None:
    text = req.query_param(name)
    return StreamToken.parse(text, name).room if text else None


async def serve_events(
    t: Txn, user_id: str, device_id: str, events: Sequence[StoredEvent], *, room_id: bool = True
) -> list[dict[str, Any]]:
    """Events in the client format, with their bundled aggregations."""
    redactions = await queries.redaction_events(t, events)
    replaced = await queries.replaced_events(t, events)
    txns = await queries.txn_ids(t, user_id, device_id, [e.event_id for e in events])
    now = now_ms()

    def plain(event: StoredEvent) -> dict[str, Any]:
        return client_event(event, redactions=redactions, now=now)

    bundles = await rel.bundled_aggregations(t, events, user_id, plain)
    return [
        client_event(
            e,
            redactions=redactions,
            txn_ids=txns,
            replaced=replaced,
            relations=bundles,
            with_room_id=room_id,
            now=now,
        )
        for e in events
    ]


async def readable(
    sync: SyncAPI, t: Txn, user_id: str, room_id: str, *, hide: bool
) -> tuple[int, int, VisibilityCheck]:
    """`(floor, upto, check)`: the events of the room the user may read lie in
    `floor < pos <= upto` and pass `check.allows` (history visibility at each event).
    Reading nothing is M_FORBIDDEN, or M_NOT_FOUND with `hide` (endpoints whose spec
    answers 404 so as not to reveal what exists)."""
    try:
        return await sync.history_span(t, user_id, room_id)
    except MatrixError as err:
        if hide:
            raise not_found("Event not found") from None
        raise err


async def readable_range(
    sync: SyncAPI, t: Txn, user_id: str, room_id: str, *, hide: bool
) -> tuple[int, int]:
    """`(floor, upto)` of `readable`."""
    floor, upto, _ = await readable(sync, t, user_id, room_id, hide=hide)
    return floor, upto


async def descendants(t: Txn, room_id: str, parent_id: str, depth: int) -> dict[str, int]:
    """The events of the room relating to `parent_id` directly or through others, up to
    `depth` levels down, with their distance from it (`parent_id` itself at 0)."""
    found = {parent_id: 0}
    level = [parent_id]
    for distance in range(1, depth + 1):
        rows = await t.fetchall(
            "SELECT event_id FROM sync_relations WHERE parent_id = ANY(?) AND room_id = ?",
            level,
            room_id,
        )
        level = [r[0] for r in rows if r[0] not in found]
        if not level:
            break
        found.update((event, distance) for event in level)
    return found


def install(router: Router, sync: SyncAPI) -> None:
    room = CLIENT_V1_PREFIX + "/rooms/{room_id}"

    async def relations(req: Request) -> Response:
        who = req.user()
        room_id = check_room_id(req.params["room_id"])
        event_id = req.params["event_id"]
        rel_type = req.params.get("rel_type")
        event_type = req.params.get("event_type")
        backwards = direction_param(req, "b") == "b"
        limit = max(1, int_param(req, "limit", DEFAULT_LIMIT))
        start, stop = token_param(req, "from"), token_param(req, "to")
        recurse_text = req.query_param("recurse")
        if recurse_text not in (None, "true", "false"):
            raise invalid_param("'recurse' must be true or false")
        recurse = recurse_text == "true"

        async def q(t: Txn) -> dict[str, Any]:
            floor, upto, vis = await readable(sync, t, who.user_id, room_id, hide=True)
            parent = await queries.event_pos(t, event_id)
            if parent is None or parent.room_id != room_id or not vis.allows(parent):
                raise not_found("Event not found")
            if backwards:
                hi = min(upto, start if start is not None else upto)
                lo = max(floor, stop if stop is not None else 0)
            else:
                lo = max(floor, start if start is not None else 0)
                hi = min(upto, stop if stop is not None else upto)
            if recurse:
                tree = await descendants(t, room_id, event_id, MAX_RECURSION)
                parents = [e for e, d in tree.items() if d < MAX_RECURSION]
                depth = max(1, *tree.values())
            else:
                parents, depth = [event_id], 1
            found: list[StoredEvent] = []
            for pid in parents:
                found.extend(
                    await rel.children(
                        t,
                        room_id,
                        pid,
                        rel_type=rel_type,
                        event_type=event_type,
                        after=lo,
                        before=hi + 1,
                        limit=limit + 1,
                        descending=backwards,
                    )
                )
            found = [e for e in found if vis.allows(e)]
            found.sort(key=lambda e: e.pos, reverse=backwards)
            more = len(found) > limit
            chunk = found[:limit]
            body: dict[str, Any] = {
                "chunk": await serve_events(t, who.user_id, who.device_id, chunk)
            }
            if more and chunk:
                last = chunk[-1].pos
                body["next_batch"] = StreamToken(last - 1 if backwards else last).encode()
            if start is not None:
                body["prev_batch"] = StreamToken(start).encode()
            if recurse_text is not None:
                body["recursion_depth"] = depth
            return body

        return json_response(await sync.db.read(q))

    async def threads(req: Request) -> Response:
        who = req.user()
        room_id = check_room_id(req.params["room_id"])
        include = req.query_param("include") or "all"
        if include not in ("all", "participated"):
            raise invalid_param("'include' must be 'all' or 'participated'")
        limit = max(1, int_param(req, "limit", DEFAULT_LIMIT))
        start = token_param(req, "from")

        async def q(t: Txn) -> dict[str, Any]:
            _, upto, vis = await readable(sync, t, who.user_id, room_id, hide=False)
            before = min(upto + 1, start if start is not None else upto + 1)
            roots = await rel.thread_roots(
                t,
                room_id,
                user_id=who.user_id if include == "participated" else None,
                before=before,
                limit=limit + 1,
            )
            more = len(roots) > limit
            roots = roots[:limit]
            found = {e.event_id: e for e in await queries.events_by_id(t, [r for r, _ in roots])}
            chunk = [
                found[r]
                for r, _ in roots
                if r in found and found[r].room_id == room_id and vis.allows(found[r])
            ]
            body: dict[str, Any] = {
                "chunk": await serve_events(t, who.user_id, who.device_id, chunk)
            }
            if more and roots:
                body["next_batch"] = StreamToken(roots[-1][1]).encode()
            return body

        return json_response(await sync.db.read(q))

    async def timestamp_to_event(req: Request) -> Response:
        who = req.user()
        room_id = check_room_id(req.params["room_id"])
        ts_text = req.query_param("ts")
        if ts_text is None or ts_text == "":
            raise missing_param("Missing 'ts'")
        if not (ts_text.isascii() and ts_text.isdigit()) or len(ts_text) > 16:
            raise invalid_param("'ts' must be a timestamp in milliseconds")
        ts = int(ts_text)
        forwards = direction_param(req, None) == "f"

        async def q(t: Txn) -> dict[str, Any]:
            floor, upto = await readable_range(sync, t, who.user_id, room_id, hide=True)
            cmp, order = (">=", "ASC") if forwards else ("<=", "DESC")
            row = await t.fetchone(
                "SELECT event_id, origin_server_ts FROM sync_timestamps"
                f" WHERE room_id = ? AND origin_server_ts {cmp} ? AND pos > ? AND pos <= ?"
                f" ORDER BY origin_server_ts {order}, pos {order} LIMIT 1",
                room_id,
                ts,
                floor,
                upto,
            )
            if row is None:
                way = "forward" if forwards else "backward"
                raise not_found(f"Unable to find event from {ts} in {way} direction")
            return {"event_id": row[0], "origin_server_ts": int(row[1])}

        return json_response(await sync.db.read(q))

    add = router.add
    add("GET", room + "/relations/{event_id}", relations, auth=True)
    add("GET", room + "/relations/{event_id}/{rel_type}", relations, auth=True)
    add("GET", room + "/relations/{event_id}/{rel_type}/{event_type}", relations, auth=True)
    add("GET", room + "/threads", threads, auth=True)
    add("GET", room + "/timestamp_to_event", timestamp_to_event, auth=True)
