"""Room look-ups the federation components share: membership templates, servers in a
room, walks of the DAG for `/backfill` and `/get_missing_events`."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import Any

from myelin.core.auth import AuthError, auth_types_for_event, check_auth
from myelin.core.base64 import encode_base64
from myelin.core.builder import reference_hash_of
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import EventFormat, RoomVersion, room_version
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import UnknownRoomError

CREATE: StateKey = ("m.room.create", "")
MAX_PREV_EVENTS = 20


def server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


def now_ms() -> int:
    return int(time.time() * 1000)


async def joined_users(rs: Roomserver, room_id: str) -> set[str]:
    """The joined members in the room's current state (none for a room this server does
    not know)."""
    try:
        state = await rs.current_state(room_id)
    except UnknownRoomError:
        return set()
    member_ids = [e for (t, _), e in state.items() if t == "m.room.member"]
    events = await rs.events(member_ids)
    return {e.state_key or "" for e in events.values() if e.membership == "join"}


async def joined_servers(rs: Roomserver, room_id: str) -> set[str]:
    """The servers with a joined member in the room's current state."""
    return {server_of(u) for u in await joined_users(rs, room_id)}


async def server_in_room(rs: Roomserver, room_id: str, server: str) -> bool:
    """Whether `server` has a joined member in the room. Reads only that server's
    member events, a few at a time, and stops at the first joined one: a join to a big
    room must not load every member."""
    try:
        state = await rs.current_state(room_id)
    except UnknownRoomError:
        return False
    suffix = ":" + server
    candidates = [e for (t, k), e in state.items() if t == "m.room.member" and k.endswith(suffix)]
    for start in range(0, len(candidates), 16):
        events = await rs.events(candidates[start : start + 16])
        if any(e.membership == "join" for e in events.values()):
            return True
    return False


def _ref(event: Event, version: RoomVersion) -> Any:
    if version.event_format is EventFormat.V1:
        return [event.event_id, {"sha256": encode_base64(reference_hash_of(event))}]
    return event.event_id


class TemplateError(Exception):
    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(error)
        self.status, self.errcode, self.error = status, errcode, error


async def membership_template(
    rs: Roomserver,
    room_id: str,
    user_id: str,
    membership: str,
    origin_server: str,
    extra_content: dict[str, Any] | None = None,
) -> tuple[RoomVersion, dict[str, Any]]:
    """An unsigned membership event for `user_id` on top of the room's current state
    (make_join, make_leave, make_knock), checked against the auth rules."""
    try:
        latest = await rs.latest_events(room_id)
    except UnknownRoomError:
        raise TemplateError(404, "M_NOT_FOUND", f"Unknown room {room_id}") from None
    version = room_version(latest.room_version)
    content: dict[str, Any] = {"membership": membership, **(extra_content or {})}
    keys = auth_types_for_event(
        version, event_type="m.room.member", sender=user_id, state_key=user_id, content=content
    )
    state = await rs.current_state_events(room_id, [CREATE, *keys])
    if CREATE not in state:
        raise TemplateError(404, "M_NOT_FOUND", f"Room {room_id} has no known state")
    auth = [state[k] for k in keys if k in state]
    prevs = await rs.events(list(latest.prev_event_ids[:MAX_PREV_EVENTS]))
    template: dict[str, Any] = {
        "room_id": room_id,
        "sender": user_id,
        "type": "m.room.member",
        "state_key": user_id,
        "content": content,
        "prev_events": [_ref(prevs[p], version) for p in latest.prev_event_ids if p in prevs],
        "auth_events": [_ref(e, version) for e in auth],
        "depth": latest.depth,
        "origin": origin_server,
        "origin_server_ts": now_ms(),
    }
    try:
        check_auth(Event("$template", version, template), state)
    except AuthError as exc:
        raise TemplateError(403, "M_FORBIDDEN", str(exc)) from None
    return version, template


async def walk_back(
    rs: Roomserver,
    starts: Sequence[str],
    stop: set[str],
    limit: int,
    min_depth: int = 0,
    include_starts: bool = True,
) -> list[Event]:
    """Events reached from `starts` through `prev_events`, deepest first, not past
    `stop`, at most `limit` (for `/backfill` and `/get_missing_events`)."""
    found: dict[str, Event] = {}
    heap: list[tuple[int, str]] = []
    first = await rs.events(list(starts))
    for event in first.values():
        heapq.heappush(heap, (-event.depth, event.event_id))
    seen = set(first) | stop
    events = dict(first)
    while heap and len(found) < limit:
        _, event_id = heapq.heappop(heap)
        event = events[event_id]
        if include_starts or event_id not in starts:
            found[event_id] = event
        todo = [p for p in event.prev_event_ids if p not in seen]
        seen.update(todo)
        if not todo:
            continue
        for prev in (await rs.events(todo)).values():
            if prev.depth >= min_depth:
                events[prev.event_id] = prev
                heapq.heappush(heap, (-prev.depth, prev.event_id))
    return list(found.values())
