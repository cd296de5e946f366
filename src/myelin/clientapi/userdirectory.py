"""User directory search (users.yaml): the users who share a room with the searcher or
are joined to a public room, matched case-insensitively on user ID and display name.

Display names come from the user's profile, else from a member event. The search scans
the candidate set in memory: fine for a small server; a search index is future work.
"""

from __future__ import annotations

from typing import Any

import orjson

from myelin.clientapi.http import Request, Response, bad_json, json_response, req_str
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.storage import Database, Txn

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


async def _public_rooms(t: Txn) -> list[str]:
    """Rooms whose members anyone may find: joinable by anyone (`public` join rule) or
    readable by anyone (`world_readable` history), as Synapse's directory counts them,
    among the rooms this server is still in."""
    rows = await t.fetchall(
        "SELECT s.room_id, s.type, e.pdu FROM sync_current_state s"
        " JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.state_key = ''"
        " AND s.type IN ('m.room.join_rules', 'm.room.history_visibility')"
    )
    public = set()
    for room_id, event_type, raw in rows:
        content = orjson.loads(raw).get("content", {})
        if (event_type == "m.room.join_rules" and content.get("join_rule") == "public") or (
            event_type == "m.room.history_visibility"
            and content.get("history_visibility") == "world_readable"
        ):
            public.add(str(room_id))
    if not public:
        return []
    # A room this server has left is not followed any more: its last known members may
    # have gone since, so only rooms a local account is still joined to count.
    rows = await t.fetchall(
        "SELECT DISTINCT m.room_id FROM sync_memberships m JOIN users u ON u.user_id = m.user_id"
        " WHERE m.membership = 'join' AND m.room_id = ANY(?)",
        sorted(public),
    )
    return sorted(str(r[0]) for r in rows)


async def _candidates(t: Txn, searcher: str) -> dict[str, dict[str, str]]:
    """Visible users -> profile fields (from member events, then overridden by profiles)."""
    own = await t.fetchall(
        "SELECT room_id FROM sync_memberships WHERE user_id = ? AND membership = 'join'",
        searcher,
    )
    public = set(await _public_rooms(t))
    room_ids = sorted({str(r[0]) for r in own} | public)
    rows = await t.fetchall(
        "SELECT o.user_id, o.room_id, e.pdu FROM sync_memberships o"
        " JOIN sync_events e ON e.event_id = o.event_id"
        " WHERE o.membership = 'join' AND o.room_id = ANY(?)",
        room_ids,
    )
    found: dict[str, dict[str, str]] = {}
    for user_id, room_id, raw in rows:
        if user_id == searcher and room_id not in public:
            continue  # sharing a private room with oneself does not list one

        content = orjson.loads(raw).get("content", {})
        entry = found.setdefault(str(user_id), {})
        for key in ("displayname", "avatar_url"):
            if isinstance(content.get(key), str) and key not in entry:
                entry[key] = content[key]
    if found:
        profiles = await t.fetchall(
            "SELECT user_id, displayname, avatar_url FROM profiles WHERE user_id = ANY(?)",
            list(found),
        )
        for user_id, name, avatar in profiles:
            entry = {}
            if name is not None:
                entry["displayname"] = name
            if avatar is not None:
                entry["avatar_url"] = avatar
            found[str(user_id)] = entry
    return found


def install(router: Router, db: Database) -> None:
    async def search(req: Request) -> Response:
        user_id = req.user().user_id
        body = req.json()
        term = req_str(body, "search_term").strip().lower()
        limit = body.get("limit", DEFAULT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise bad_json("'limit' must be a non-negative integer")
        limit = min(limit, MAX_LIMIT)
        candidates = await db.read(lambda t: _candidates(t, user_id))
        matches: list[dict[str, Any]] = []
        for other in sorted(candidates):
            fields = candidates[other]
            name = fields.get("displayname")
            if term in other.lower() or (name is not None and term in name.lower()):
                result: dict[str, Any] = {"user_id": other}
                if name is not None:
                    result["display_name"] = name
                if "avatar_url" in fields:
                    result["avatar_url"] = fields["avatar_url"]
                matches.append(result)
        return json_response({"limited": len(matches) > limit, "results": matches[:limit]})

    router.add("POST", paths("/user_directory/search"), search, auth=True)
