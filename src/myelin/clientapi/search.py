"""`POST /_matrix/client/v3/search`: server-side search, the `room_events` category.

Searches the full-text index of the sync projections (`myelin.syncapi.search`) over the
rooms the user is joined to, narrowed by the filter's `rooms` / `not_rooms` and
`senders` / `not_senders` (its other fields are not applied), ordered by
`rank` (the default) or `recent`. Results carry the served event (with its bundled
aggregations), optionally its `context` (events before and after, and the senders'
profiles), and the response `groups` when `groupings` asks for them. `next_batch` is the
offset of the next page; `count` the total number of matches.
"""

from __future__ import annotations

from typing import Any

from myelin.clientapi.http import (
    Request,
    Response,
    bad_json,
    invalid_param,
    json_response,
    missing_param,
    opt_dict,
    opt_str_list,
)
from myelin.clientapi.relations import serve_events
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.storage import Txn
from myelin.syncapi import queries, visibility
from myelin.syncapi import search as index
from myelin.syncapi.sync import SyncAPI
from myelin.syncapi.tokens import StreamToken

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_CONTEXT = 20


def _int(body: dict[str, Any], key: str, default: int, maximum: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_json(f"'{key}' must be a non-negative integer")
    return min(value, maximum)


def install(router: Router, sync: SyncAPI) -> None:
    async def search(req: Request) -> Response:
        who = req.user()
        body = req.json()
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise missing_param("Missing 'search_categories'")
        if categories.get("room_events") is None:
            return json_response({"search_categories": {}})  # no category we search
        criteria = opt_dict(categories, "room_events") or {}
        term = criteria.get("search_term")
        if not isinstance(term, str):
            raise missing_param("Missing 'search_term' (a string)")
        keys = opt_str_list(criteria, "keys") or list(index.ALL_KEYS)
        unknown = [k for k in keys if k not in index.ALL_KEYS]
        if unknown:
            raise invalid_param(f"Unknown search keys: {unknown}")
        order_by = criteria.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise invalid_param("'order_by' must be 'rank' or 'recent'")
        flt = opt_dict(criteria, "filter") or {}
        wanted_rooms = opt_str_list(flt, "rooms")
        not_rooms = set(opt_str_list(flt, "not_rooms") or [])
        senders = opt_str_list(flt, "senders")
        not_senders = opt_str_list(flt, "not_senders")
        limit = max(1, _int(flt, "limit", DEFAULT_LIMIT, MAX_LIMIT))
        context = criteria.get("event_context")
        if context is not None and not isinstance(context, dict):
            raise bad_json("'event_context' must be an object")
        before = _int(context or {}, "before_limit", 5, MAX_CONTEXT)
        after = _int(context or {}, "after_limit", 5, MAX_CONTEXT)
        with_profiles = (context or {}).get("include_profile", False) is True
        groupings = (opt_dict(criteria, "groupings") or {}).get("group_by") or []
        if not isinstance(groupings, list) or not all(
            isinstance(g, dict) and g.get("key") in ("room_id", "sender") for g in groupings
        ):
            raise bad_json("'groupings.group_by' must list objects with key room_id or sender")
        include_state = criteria.get("include_state", False) is True
        batch = req.query_param("next_batch")
        offset = 0
        if batch:
            if not (batch.isascii() and batch.isdigit()) or len(batch) > 9:
                raise invalid_param("Malformed 'next_batch'")
            offset = int(batch)

        async def q(t: Txn) -> dict[str, Any]:
            joined = [r for r, m, _ in await queries.memberships(t, who.user_id) if m == "join"]
            rooms = [
                r
                for r in sorted(joined)
                if r not in not_rooms and (wanted_rooms is None or r in wanted_rooms)
            ]
            hits, total = await index.match(
                t,
                term,
                rooms,
                keys,
                order_by_rank=order_by == "rank",
                offset=offset,
                limit=limit + 1,
                senders=senders,
                not_senders=not_senders,
            )
            checks = {
                r: await visibility.load(t, r, who.user_id) for r in {h.room_id for h in hits}
            }
            end = visibility.END
            floors = {r: (c.span(end) or (end, 0))[0] for r, c in checks.items()}
            more = len(hits) > limit
            hits = [h for h in hits[:limit] if checks[h.room_id].allows_at(h.pos)]
            events = {
                e.event_id: e for e in await queries.events_by_id(t, [h.event_id for h in hits])
            }
            served = await serve_events(t, who.user_id, who.device_id, list(events.values()))
            by_id = {e["event_id"]: e for e in served}
            results: list[dict[str, Any]] = []
            for hit in hits:
                if hit.event_id not in by_id:
                    continue
                result: dict[str, Any] = {"rank": hit.rank, "result": by_id[hit.event_id]}
                if context is not None:
                    result["context"] = await _context(
                        t,
                        who.user_id,
                        who.device_id,
                        hit.room_id,
                        hit.sender,
                        hit.pos,
                        floors[hit.room_id],
                        before,
                        after,
                        with_profiles,
                    )
                results.append(result)
            out: dict[str, Any] = {
                "count": total,
                "results": results,
                "highlights": index.words(term),
            }
            if more:
                out["next_batch"] = str(offset + limit)
            if groupings:
                out["groups"] = _groups(groupings, hits, out.get("next_batch"))
            if include_state:
                out["state"] = {
                    r: await serve_events(
                        t, who.user_id, who.device_id, await queries.current_state(t, r)
                    )
                    for r in sorted({h.room_id for h in hits})
                }
            return out

        answer = await sync.db.read(q)
        return json_response({"search_categories": {"room_events": answer}})

    for prefix in CLIENT_PREFIXES:
        router.add("POST", prefix + "/search", search, auth=True)


def _groups(
    groupings: list[dict[str, Any]], hits: list[index.Hit], next_batch: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for grouping in groupings:
        key = grouping["key"]
        groups: dict[str, dict[str, Any]] = {}
        for hit in hits:
            value = hit.room_id if key == "room_id" else hit.sender
            group = groups.setdefault(value, {"order": len(groups) + 1, "results": []})
            group["results"].append(hit.event_id)
            if next_batch is not None:
                group["next_batch"] = next_batch
        out[key] = groups
    return out


async def _context(
    t: Txn,
    user_id: str,
    device_id: str,
    room_id: str,
    sender: str,
    pos: int,
    floor: int,
    before: int,
    after: int,
    with_profiles: bool,
) -> dict[str, Any]:
    """Events around a result (within the readable history) and, when asked, the profiles
    of their senders as the room's current member events give them."""
    earlier = (
        await queries.events_between(t, room_id, floor, pos - 1, before, descending=True)
        if before
        else []
    )
    later = (
        await queries.events_between(t, room_id, pos, 2**62, after, descending=False)
        if after
        else []
    )
    ctx: dict[str, Any] = {
        "start": StreamToken((earlier[-1].pos if earlier else pos) - 1).encode(),
        "end": StreamToken(later[-1].pos if later else pos).encode(),
        "events_before": await serve_events(t, user_id, device_id, earlier),
        "events_after": await serve_events(t, user_id, device_id, later),
    }
    if with_profiles:
        senders = sorted({sender, *(e.sender for e in [*earlier, *later])})
        members = await queries.member_events(t, room_id, senders)
        profiles: dict[str, Any] = {}
        for member in members:
            content = member.pdu.get("content", {})
            profile = {
                k: content[f]
                for k, f in (("displayname", "displayname"), ("avatar_url", "avatar_url"))
                if isinstance(content.get(f), str)
            }
            profiles[member.state_key or ""] = profile
        ctx["profile_info"] = profiles
    return ctx
