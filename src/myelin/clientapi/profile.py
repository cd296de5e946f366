"""Profiles (profile.yaml): display name and avatar URL, read by anyone, written by the
user, and propagated to every room the user is joined to as a new `m.room.member` event
(made through the same event-creation path as every other client event).

Only `displayname` and `avatar_url` are supported; other profile keys are refused with
403 M_FORBIDDEN (the `m.profile_fields` capability would advertise that).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from myelin.clientapi.http import MatrixError, Request, Response, bad_json, json_response
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.core.auth import is_valid_user_id
from myelin.userapi.accountdata import AccountData
from myelin.userapi.accounts import UserAPI

if TYPE_CHECKING:
    from myelin.server.rooms import RoomComponents

log = logging.getLogger("myelin.profile")
FIELDS = ("displayname", "avatar_url")
MAX_FIELD = 1024


def paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def install(router: Router, store: AccountData, rooms: RoomComponents, users: UserAPI) -> None:
    async def known_user(user_id: str) -> dict[str, str]:
        if not is_valid_user_id(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
        remote = rooms.writer.remote
        if remote is not None and user_id.partition(":")[2] != users.server_name:
            found: dict[str, str] | None = await remote.query_profile(user_id)
            if found is None:
                raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
            return found
        profile = await store.profile(user_id)
        if profile is None:
            if await users.account(user_id) is None:
                raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
            return {}
        return profile

    async def member_profile(user_id: str) -> dict[str, str]:
        return await store.profile(user_id) or {}

    rooms.writer.member_profile = member_profile

    async def get_profile(req: Request) -> Response:
        return json_response(await known_user(req.params["user_id"]))

    async def get_field(req: Request) -> Response:
        profile = await known_user(req.params["user_id"])
        key = req.params["key"]
        if key not in profile:
            raise MatrixError(404, "M_NOT_FOUND", f"No {key} in this profile")
        return json_response({key: profile[key]})

    async def propagate(user_id: str, field: str, value: str | None) -> None:
        """A new member event in each joined room, with the changed field."""
        for room_id in await rooms.sync.joined_rooms(user_id):
            current = await rooms.roomserver.current_state_events(
                room_id, [("m.room.member", user_id)]
            )
            member = current.get(("m.room.member", user_id))
            if member is None or member.membership != "join":
                continue
            content: dict[str, Any] = dict(member.content)
            if value is None:
                content.pop(field, None)
            else:
                content[field] = value
            try:
                await rooms.writer.send(
                    room_id, user_id, "m.room.member", content, state_key=user_id
                )
            except MatrixError as exc:  # e.g. a room that forbids member changes now
                log.info("profile not propagated to %s: %s", room_id, exc.error)

    async def set_field(req: Request, value: Any) -> Response:
        user_id = req.user().user_id
        if req.params["user_id"] != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot change another user's profile")
        key = req.params["key"]
        if req.user().is_guest and key != "displayname":  # guest_access.md
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may only set a display name")
        if key not in FIELDS:
            raise MatrixError(403, "M_FORBIDDEN", f"Profile field {key!r} cannot be set here")
        if value is not None:
            if not isinstance(value, str):
                raise bad_json(f"'{key}' must be a string")
            if len(value) > MAX_FIELD:
                raise MatrixError(400, "M_TOO_LARGE", f"'{key}' is too long")
            # avatar_url is meant to be an mxc:// URI, but any string is kept, as the
            # reference server does (bridges and Sytest set http:// URLs).
        await store.set_profile_field(user_id, key, value)
        await propagate(user_id, key, value)
        return json_response({})

    async def put_field(req: Request) -> Response:
        body = req.json()
        key = req.params["key"]
        if key not in body:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing '{key}'")
        return await set_field(req, body[key])

    async def delete_field(req: Request) -> Response:
        return await set_field(req, None)

    router.add("GET", paths("/profile/{user_id}"), get_profile)
    router.add("GET", paths("/profile/{user_id}/{key}"), get_field)
    router.add("PUT", paths("/profile/{user_id}/{key}"), put_field, auth=True, allow_guest=True)
    router.add(
        "DELETE", paths("/profile/{user_id}/{key}"), delete_field, auth=True, allow_guest=True
    )
