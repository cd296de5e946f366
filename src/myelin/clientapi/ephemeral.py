"""Typing, receipts, read markers and presence (typing.yaml, receipts.yaml,
read_markers.yaml, presence.yaml); what they change reaches clients through `/sync`."""

from __future__ import annotations

from myelin.clientapi.directory import check_room_id
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    bad_json,
    forbidden,
    invalid_param,
    json_response,
    missing_param,
    opt_str,
)
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.ephemeral.presence import STATES
from myelin.ephemeral.receipts import RECEIPT_TYPES
from myelin.ephemeral.service import Ephemeral, EphemeralError

MAX_STATUS_MSG = 1024


def paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def _error(exc: EphemeralError) -> MatrixError:
    return MatrixError(exc.status, exc.errcode, exc.error)


def install(router: Router, eph: Ephemeral) -> None:
    async def typing(req: Request) -> Response:
        user_id = req.user().user_id
        room_id = check_room_id(req.params["room_id"])
        if req.params["user_id"] != user_id:
            raise forbidden("Cannot set another user's typing state")
        body = req.json()
        is_typing = body.get("typing")
        if is_typing is None:
            raise missing_param("Missing 'typing'")
        if not isinstance(is_typing, bool):
            raise bad_json("'typing' must be a boolean")
        timeout = body.get("timeout", 30_000)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise bad_json("'timeout' must be a non-negative integer")
        try:
            await eph.set_typing(room_id, user_id, is_typing, timeout)
        except EphemeralError as exc:
            raise _error(exc) from None
        return json_response({})

    async def receipt(req: Request) -> Response:
        user_id = req.user().user_id
        room_id = check_room_id(req.params["room_id"])
        receipt_type = req.params["receipt_type"]
        event_id = req.params["event_id"]
        body = req.json_or_empty()
        thread_id = ""
        if "thread_id" in body:
            raw = body["thread_id"]
            if not isinstance(raw, str) or not raw:
                raise invalid_param("'thread_id' must be a non-empty string")
            thread_id = raw
        if receipt_type == "m.fully_read":
            if thread_id:
                raise invalid_param("m.fully_read cannot be threaded")
            try:
                await eph.read_markers(room_id, user_id, event_id, None, None)
            except EphemeralError as exc:
                raise _error(exc) from None
            return json_response({})
        if receipt_type not in RECEIPT_TYPES:
            raise invalid_param(f"Unknown receipt type {receipt_type!r}")
        if thread_id and thread_id != "main" and not thread_id.startswith("$"):
            raise invalid_param("'thread_id' must be 'main' or an event ID")
        try:
            await eph.receipt(room_id, user_id, receipt_type, event_id, thread_id)
        except EphemeralError as exc:
            raise _error(exc) from None
        return json_response({})

    async def read_markers(req: Request) -> Response:
        user_id = req.user().user_id
        room_id = check_room_id(req.params["room_id"])
        body = req.json_or_empty()
        try:
            await eph.read_markers(
                room_id,
                user_id,
                opt_str(body, "m.fully_read"),
                opt_str(body, "m.read"),
                opt_str(body, "m.read.private"),
            )
        except EphemeralError as exc:
            raise _error(exc) from None
        return json_response({})

    async def put_presence(req: Request) -> Response:
        user_id = req.user().user_id
        if req.params["user_id"] != user_id:
            raise forbidden("Cannot set another user's presence")
        body = req.json()
        state = body.get("presence")
        if state is None:
            raise missing_param("Missing 'presence'")
        if state not in STATES:
            raise invalid_param("'presence' must be online, offline or unavailable")
        status_msg = opt_str(body, "status_msg")
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG:
            raise invalid_param("'status_msg' is too long")
        await eph.set_presence(user_id, state, status_msg)
        return json_response({})

    async def get_presence(req: Request) -> Response:
        user_id = req.user().user_id
        target = req.params["user_id"]
        if target != user_id and not await eph.shares_room(user_id, target):
            raise forbidden("You do not share a room with this user")
        found = await eph.get_presence(target)
        if found is None:  # never set: a user we know of and who was never seen is offline
            found = {"presence": "offline"}
        return json_response(found)

    room = "/rooms/{room_id}"
    add = router.add
    add("PUT", paths(room + "/typing/{user_id}"), typing, auth=True)
    add("POST", paths(room + "/receipt/{receipt_type}/{event_id}"), receipt, auth=True)
    add("POST", paths(room + "/read_markers"), read_markers, auth=True)
    add("PUT", paths("/presence/{user_id}/status"), put_presence, auth=True)
    add("GET", paths("/presence/{user_id}/status"), get_presence, auth=True)
