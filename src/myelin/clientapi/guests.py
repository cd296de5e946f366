"""Server behaviour of the guest access module (client-server-api, guest_access.md).

A guest may join a room only while its `m.room.guest_access` is `can_join`; when that
stops being so, the server makes every guest of this server who is joined leave the room.
Whether an account is a guest is known only to its own server, so this is enforced here,
not by the auth rules.
"""

from __future__ import annotations

import logging

from myelin.clientapi.http import MatrixError
from myelin.clientapi.room_events import RoomWriter
from myelin.core.events import Event
from myelin.storage import Txn
from myelin.syncapi import queries
from myelin.syncapi.sync import SyncAPI
from myelin.userapi.accounts import UserAPI

log = logging.getLogger("myelin.clientapi.guests")

GUEST_ACCESS = "m.room.guest_access"


async def guests_may_join(sync: SyncAPI, room_id: str) -> bool:
    async def q(t: Txn) -> bool:
        found = await queries.state_event(t, room_id, GUEST_ACCESS, "")
        return found is not None and found.pdu.get("content", {}).get("guest_access") == (
            "can_join"
        )

    return await sync.db.read(q)


async def check_guest_join(sync: SyncAPI, room_id: str) -> None:
    """403 unless guests may join the room now."""
    if not await guests_may_join(sync, room_id):
        raise MatrixError(403, "M_FORBIDDEN", "Guest access is not allowed in this room")


def revokes_guest_access(event: Event) -> bool:
    """Whether `event` (accepted into its room) leaves guests unable to join it."""
    return (
        event.type == GUEST_ACCESS
        and event.state_key == ""
        and event.content.get("guest_access") != "can_join"
    )


async def evict_guests(
    sync: SyncAPI, users: UserAPI, writer: RoomWriter, room_id: str, server_name: str
) -> None:
    """Make this server's joined guests leave the room (its guest access was revoked)."""
    rows = await sync.db.read(
        lambda t: t.fetchall(
            "SELECT user_id FROM sync_memberships WHERE room_id = ? AND membership = 'join'",
            room_id,
        )
    )
    for (user_id,) in rows:
        if not str(user_id).endswith(":" + server_name):
            continue
        account = await users.account(str(user_id))
        if account is None or not account[2]:
            continue
        try:
            await writer.send(
                room_id,
                str(user_id),
                "m.room.member",
                {"membership": "leave"},
                state_key=str(user_id),
                require_joined=False,
            )
        except MatrixError as err:  # e.g. the guest left meanwhile: nothing to undo
            log.info("could not evict guest %s from %s: %s", user_id, room_id, err.error)
