"""The space hierarchy: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (spaces module).

The tree is walked depth-first over the `m.space.child` state events of rooms this server
knows (a child with no `via` is no child; with `suggested_only`, only children marked
`suggested`), children ordered by their `order` key, then by the `origin_server_ts` of the
child event, then by room ID, each room listed once. A room appears when the user is joined
or invited, or may join or knock by its join rules, or it is world readable; the root
itself must be one of those (else M_FORBIDDEN). Rooms on other servers are not fetched
over federation: they are skipped.

Pagination: the walk is deterministic, so `from` is the number of rooms already returned
plus a digest of `max_depth` and `suggested_only`, which must not change between pages.
"""

from __future__ import annotations

from typing import Any

from myelin.clientapi.directory import check_room_id
from myelin.clientapi.http import MatrixError, Request, Response, forbidden, json_response
from myelin.clientapi.relations import int_param
from myelin.clientapi.router import CLIENT_V1_PREFIX, Router
from myelin.storage import Txn
from myelin.syncapi import queries
from myelin.syncapi.format import StoredEvent, stripped_event
from myelin.syncapi.sync import SyncAPI

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
DEFAULT_DEPTH = 10
MAX_DEPTH = 50
MAX_ROOMS = 1000
_VISIBLE_RULES = ("public", "knock", "knock_restricted")


def _order_key(event: StoredEvent) -> tuple[int, str, int, str]:
    order = event.pdu.get("content", {}).get("order")
    valid = (
        isinstance(order, str) and len(order) <= 50 and all(0x20 <= ord(c) <= 0x7E for c in order)
    )
    ts = event.pdu.get("origin_server_ts")
    return (
        0 if valid else 1,
        order if valid and isinstance(order, str) else "",
        ts if isinstance(ts, int) else 0,
        event.state_key or "",
    )


def _is_child(event: StoredEvent, suggested_only: bool) -> bool:
    content = event.pdu.get("content", {})
    via = content.get("via")
    if not isinstance(via, list) or not via or not event.state_key:
        return False
    return not suggested_only or content.get("suggested") is True


async def _summary(
    t: Txn, user_id: str, room_id: str, suggested_only: bool
) -> tuple[dict[str, Any], list[StoredEvent]] | None:
    """The room's chunk entry and its child events, or None if unknown or not visible."""
    state = await queries.current_state(t, room_id)
    by_key = {(e.type, e.state_key): e for e in state}
    create = by_key.get(("m.room.create", ""))
    if create is None:
        return None

    def content(event_type: str) -> dict[str, Any]:
        found = by_key.get((event_type, ""))
        value = found.pdu.get("content", {}) if found is not None else {}
        return value if isinstance(value, dict) else {}

    join_rule = content("m.room.join_rules").get("join_rule", "invite")
    world_readable = content("m.room.history_visibility").get("history_visibility") == (
        "world_readable"
    )
    member = await queries.membership(t, user_id, room_id)
    if not (
        (member is not None and member[0] in ("join", "invite"))
        or join_rule in _VISIBLE_RULES
        or world_readable
    ):
        return None
    joined = await t.fetchval(
        "SELECT count(*) FROM sync_memberships WHERE room_id = ? AND membership = 'join'",
        room_id,
    )
    children = sorted(
        (e for e in state if e.type == "m.space.child" and _is_child(e, suggested_only)),
        key=_order_key,
    )
    entry: dict[str, Any] = {
        "room_id": room_id,
        "num_joined_members": int(joined or 0),
        "world_readable": world_readable,
        "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
        "join_rule": join_rule if isinstance(join_rule, str) else "invite",
        "children_state": [
            {**stripped_event(e), "origin_server_ts": e.pdu.get("origin_server_ts", 0)}
            for e in children
        ],
    }
    for key, event_type, field in (
        ("name", "m.room.name", "name"),
        ("topic", "m.room.topic", "topic"),
        ("canonical_alias", "m.room.canonical_alias", "alias"),
        ("avatar_url", "m.room.avatar", "url"),
    ):
        value = content(event_type).get(field)
        if isinstance(value, str) and value:
            entry[key] = value
    room_type = content("m.room.create").get("type")
    if isinstance(room_type, str):
        entry["room_type"] = room_type
    return entry, children


async def walk(
    t: Txn, user_id: str, root: str, *, max_depth: int, suggested_only: bool
) -> list[dict[str, Any]]:
    """Every visible room of the tree under `root`, depth-first (at most MAX_ROOMS)."""
    first = await _summary(t, user_id, root, suggested_only)
    if first is None:
        raise forbidden(f"You may not view the space {root}")
    out: list[dict[str, Any]] = []
    seen = {root}
    stack: list[tuple[int, tuple[dict[str, Any], list[StoredEvent]]]] = [(0, first)]
    while stack and len(out) < MAX_ROOMS:
        depth, (entry, children) = stack.pop()
        out.append(entry)
        if depth >= max_depth:
            continue
        pending = []
        for child in children:
            child_id = child.state_key or ""
            if child_id in seen:
                continue
            seen.add(child_id)
            found = await _summary(t, user_id, child_id, suggested_only)
            if found is not None:
                pending.append((depth + 1, found))
        stack.extend(reversed(pending))
    return out


def _bool_param(req: Request, name: str) -> bool:
    value = req.query_param(name)
    if value in (None, "", "false"):
        return False
    if value == "true":
        return True
    raise MatrixError(400, "M_INVALID_PARAM", f"'{name}' must be true or false")


def install(router: Router, sync: SyncAPI) -> None:
    async def hierarchy(req: Request) -> Response:
        who = req.user()
        room_id = check_room_id(req.params["room_id"])
        suggested_only = _bool_param(req, "suggested_only")
        limit = int_param(req, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        if req.query_param("limit") is not None and limit < 1:
            raise MatrixError(400, "M_INVALID_PARAM", "'limit' must be greater than zero")
        max_depth = int_param(req, "max_depth", DEFAULT_DEPTH, MAX_DEPTH)
        settings = f"{max_depth}{'s' if suggested_only else 'a'}"
        start = 0
        from_text = req.query_param("from")
        if from_text:
            offset, _, digest = from_text.partition("_")
            if not (offset.isascii() and offset.isdigit()) or len(offset) > 9:
                raise MatrixError(400, "M_INVALID_PARAM", "Malformed 'from' token")
            if digest != settings:
                raise MatrixError(
                    400, "M_INVALID_PARAM", "'max_depth' and 'suggested_only' cannot change"
                )
            start = int(offset)

        async def q(t: Txn) -> list[dict[str, Any]]:
            return await walk(
                t, who.user_id, room_id, max_depth=max_depth, suggested_only=suggested_only
            )

        rooms = await sync.db.read(q)
        page = rooms[start : start + limit]
        body: dict[str, Any] = {"rooms": page}
        if start + limit < len(rooms):
            body["next_batch"] = f"{start + limit}_{settings}"
        return json_response(body)

    router.add("GET", CLIENT_V1_PREFIX + "/rooms/{room_id}/hierarchy", hierarchy, auth=True)
