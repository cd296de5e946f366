"""Routes of the deprecated event stream and snapshots, and of room previews:
`GET /events`, `GET /events/{eventId}`, `GET /initialSync` (old_sync.yaml),
`GET /rooms/{roomId}/initialSync` (room_initial_sync.yaml) and the peeking form of
`GET /events` (peeking_events.yaml).

Old clients and Sytest's fixtures still use them; the answers come from
`myelin.syncapi.legacy`, over the projections `/sync` reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from myelin.clientapi.directory import check_room_id
from myelin.clientapi.http import Request, Response, invalid_param, json_response
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.syncapi.legacy import DEFAULT_LIMIT, LegacyStreams
from myelin.syncapi.sync import Requester as SyncRequester
from myelin.syncapi.tokens import StreamToken

#: Most room events one answer carries (per room for initialSync).
MAX_LIMIT = 1000
PresenceHook = Callable[[str, str], Awaitable[None]]


def _paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def _int_param(req: Request, name: str, default: int, maximum: int) -> int:
    value = req.query_param(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise invalid_param(f"'{name}' must be a non-negative integer")
    return min(int(value), maximum)


def _bool_param(req: Request, name: str) -> bool:
    value = req.query_param(name)
    if value is None or value == "":
        return False
    if value not in ("true", "false"):
        raise invalid_param(f"'{name}' must be 'true' or 'false'")
    return value == "true"


def install(router: Router, legacy: LegacyStreams, presence_hook: PresenceHook | None) -> None:
    async def mark_online(req: Request) -> None:
        """Calling these endpoints is activity, as a `/sync` is (guests have no presence)."""
        user = req.user()
        if presence_hook is not None and not user.is_guest:
            await presence_hook(user.user_id, "online")

    def who(req: Request) -> SyncRequester:
        user = req.user()
        return SyncRequester(user.user_id, user.device_id)

    async def get_events(req: Request) -> Response:
        from_text = req.query_param("from")
        from_token = StreamToken.parse(from_text, "from") if from_text else None
        timeout = _int_param(req, "timeout", 0, 2**31)
        limit = _int_param(req, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        room_id = req.query_param("room_id")
        if room_id is not None:
            room_id = check_room_id(room_id)
        await mark_online(req)
        body = await legacy.events(
            who(req),
            from_token,
            timeout_ms=timeout,
            room_id=room_id,
            limit=limit,
            is_guest=req.user().is_guest,
        )
        return json_response(body)

    async def get_event(req: Request) -> Response:
        return json_response(await legacy.event(who(req), req.params["event_id"]))

    async def initial_sync(req: Request) -> Response:
        limit = _int_param(req, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        archived = _bool_param(req, "archived")
        await mark_online(req)
        return json_response(await legacy.initial_sync(who(req), limit, archived))

    async def room_initial_sync(req: Request) -> Response:
        room_id = check_room_id(req.params["room_id"])
        limit = _int_param(req, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        return json_response(await legacy.room_initial_sync(who(req), room_id, limit))

    router.add("GET", _paths("/events"), get_events, auth=True, allow_guest=True)
    router.add("GET", _paths("/events/{event_id}"), get_event, auth=True)
    router.add("GET", _paths("/initialSync"), initial_sync, auth=True)
    router.add(
        "GET",
        _paths("/rooms/{room_id}/initialSync"),
        room_initial_sync,
        auth=True,
        allow_guest=True,
    )
