"""Reporting content (report_content module): `POST /rooms/{roomId}/report/{eventId}`,
`POST /rooms/{roomId}/report` and `POST /users/{userId}/report`.

Reports are stored in `sync_reports` for the server's administrators. They are requests of
clients, not projections of the log, so a rebuild keeps them. Reporting an event needs the
reporter joined to the room and the event served there; an unknown room or event is
M_NOT_FOUND as the spec describes. A report about a user is accepted for any valid user ID,
local or not, existing or not: the spec lets a server answer 200 either way so that the
endpoint does not tell who has an account here. They go to `sync_user_reports`.
"""

from __future__ import annotations

import time
from typing import Any

from myelin.clientapi.directory import check_room_id
from myelin.clientapi.http import (
    Request,
    Response,
    bad_json,
    invalid_param,
    json_response,
    not_found,
)
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.core.identifiers import is_valid_user_id
from myelin.storage import Txn
from myelin.syncapi import queries
from myelin.syncapi.sync import SyncAPI

MAX_REASON = 4096


def _reason(body: dict[str, Any]) -> str | None:
    value = body.get("reason")
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_json("'reason' must be a string")
    if len(value) > MAX_REASON:
        raise bad_json(f"'reason' is longer than {MAX_REASON} characters")
    return value


async def reports(t: Txn, room_id: str) -> list[tuple[str | None, str, str | None]]:
    """`(event_id, user_id, reason)` of the stored reports about a room, oldest first."""
    rows = await t.fetchall(
        "SELECT event_id, user_id, reason FROM sync_reports WHERE room_id = ? ORDER BY id",
        room_id,
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def user_reports(t: Txn, reported_user_id: str) -> list[tuple[str, str | None]]:
    """`(reporter, reason)` of the stored reports about a user, oldest first."""
    rows = await t.fetchall(
        "SELECT user_id, reason FROM sync_user_reports WHERE reported_user_id = ? ORDER BY id",
        reported_user_id,
    )
    return [(r[0], r[1]) for r in rows]


def install(router: Router, sync: SyncAPI) -> None:
    async def store(room_id: str, event_id: str | None, user_id: str, reason: str | None) -> None:
        async def txn(t: Txn) -> None:
            await t.execute(
                "INSERT INTO sync_reports (room_id, event_id, user_id, reason, received_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                room_id,
                event_id,
                user_id,
                reason,
                int(time.time() * 1000),
            )

        await sync.db.run(txn)

    async def report_event(req: Request) -> Response:
        who = req.user()
        room_id = check_room_id(req.params["room_id"])
        event_id = req.params["event_id"]
        reason = _reason(req.json())

        async def q(t: Txn) -> bool:
            found = await queries.membership(t, who.user_id, room_id)
            if found is None or found[0] != "join":
                return False
            event = await queries.event_pos(t, event_id)
            return event is not None and event.room_id == room_id

        if not await sync.db.read(q):
            raise not_found("Event not found, or you are not joined to its room")
        await store(room_id, event_id, who.user_id, reason)
        return json_response({})

    async def report_room(req: Request) -> Response:
        who = req.user()
        room_id = check_room_id(req.params["room_id"])
        reason = _reason(req.json_or_empty())

        async def q(t: Txn) -> bool:
            row = await t.fetchval(
                "SELECT 1 FROM sync_current_state WHERE room_id = ? AND type = 'm.room.create'",
                room_id,
            )
            return row is not None

        if not await sync.db.read(q):
            raise not_found("The room was not found")
        await store(room_id, None, who.user_id, reason)
        return json_response({})

    async def report_user(req: Request) -> Response:
        who = req.user()
        reported = req.params["user_id"]
        if not is_valid_user_id(reported):
            raise invalid_param(f"Invalid user ID {reported[:100]!r}")
        reason = _reason(req.json_or_empty())

        async def txn(t: Txn) -> None:
            await t.execute(
                "INSERT INTO sync_user_reports (reported_user_id, user_id, reason, received_ts)"
                " VALUES (?, ?, ?, ?)",
                reported,
                who.user_id,
                reason,
                int(time.time() * 1000),
            )

        await sync.db.run(txn)
        return json_response({})

    for prefix in CLIENT_PREFIXES:
        router.add("POST", prefix + "/rooms/{room_id}/report/{event_id}", report_event, auth=True)
        router.add("POST", prefix + "/rooms/{room_id}/report", report_room, auth=True)
        router.add("POST", prefix + "/users/{user_id}/report", report_user, auth=True)
