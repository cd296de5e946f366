"""EDUs both ways: typing, receipts and presence of this server's users go out to the
servers sharing their rooms; those of other servers' users come in through `/send` and
go to the ephemeral component (through the same calls a client's request makes).

`EduOut` is set as `Ephemeral.outbound`; its methods only queue (no I/O, no await), so
a client's typing or receipt request never waits on another server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from myelin.ephemeral.service import Ephemeral
from myelin.federation.rooms import server_of
from myelin.federation.sender.reader import FederationSender

log = logging.getLogger("myelin.federation.edus")

TYPING_TIMEOUT_MS = 30_000
PRESENCE_STATES = ("online", "offline", "unavailable")
MAX_PRESENCE_ON_JOIN = 100


class EduOut:
    def __init__(self, sender: FederationSender, server_name: str, eph: Ephemeral) -> None:
        self.sender = sender
        self.server_name = server_name
        self.eph = eph

    async def _presence_update(self, user_id: str) -> dict[str, Any] | None:
        found = await self.eph.get_presence(user_id)
        if found is None:
            return None
        return {"user_id": user_id, **found}

    async def on_join(self, room_id: str, user_id: str, servers: set[str]) -> None:
        """Presence across a new join: a local user's goes to the room's servers, the
        local members' go to a newly joined remote user's server."""
        if self._local(user_id):
            update = await self._presence_update(user_id)
            if update is not None:
                self.sender.send_edu(servers, "m.presence", {"push": [update]})
            return
        state = await self.sender.rs.current_state(room_id)
        members = [k for (t, k), _ in state.items() if t == "m.room.member" and self._local(k)]
        updates = []
        for member in members[:MAX_PRESENCE_ON_JOIN]:
            if await self.sender.rs.membership(room_id, member) == "join":
                update = await self._presence_update(member)
                if update is not None:
                    updates.append(update)
        if updates:
            self.sender.send_edu([server_of(user_id)], "m.presence", {"push": updates})

    def _local(self, user_id: str) -> bool:
        return server_of(user_id) == self.server_name

    def _servers(self, users: Iterable[str]) -> set[str]:
        return {server_of(u) for u in users} - {self.server_name}

    def typing(self, room_id: str, user_id: str, typing: bool, members: Iterable[str]) -> None:
        if self._local(user_id):
            content = {"room_id": room_id, "user_id": user_id, "typing": typing}
            self.sender.send_edu(self._servers(members), "m.typing", content)

    def receipt(
        self,
        room_id: str,
        user_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str,
        members: Iterable[str],
    ) -> None:
        if not self._local(user_id):
            return
        data: dict[str, Any] = {"ts": int(time.time() * 1000)}
        if thread_id:
            data["thread_id"] = thread_id
        content = {room_id: {receipt_type: {user_id: {"event_ids": [event_id], "data": data}}}}
        self.sender.send_edu(self._servers(members), "m.receipt", content)

    def presence(
        self, user_id: str, state: str, status_msg: str | None, sharing: Iterable[str]
    ) -> None:
        if not self._local(user_id):
            return
        update: dict[str, Any] = {
            "user_id": user_id,
            "presence": state,
            "last_active_ago": 0,
            "currently_active": state == "online",
        }
        if status_msg is not None:
            update["status_msg"] = status_msg
        self.sender.send_edu(self._servers(sharing), "m.presence", {"push": [update]})


class EduIn:
    """Handlers of inbound EDUs by type (`ReceiverHooks.edus`)."""

    def __init__(self, eph: Ephemeral) -> None:
        self.eph = eph

    def handlers(self) -> dict[str, Any]:
        return {
            "m.typing": self.typing,
            "m.receipt": self.receipt,
            "m.presence": self.presence,
        }

    async def typing(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        room_id, user_id = content.get("room_id"), content.get("user_id")
        if not isinstance(room_id, str) or not isinstance(user_id, str):
            return
        if server_of(user_id) != origin:
            return  # a server speaks for its own users only
        await self.eph.set_typing(
            room_id, user_id, content.get("typing") is True, TYPING_TIMEOUT_MS
        )

    async def receipt(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            for receipt_type, by_user in by_type.items():
                if not isinstance(by_user, dict):
                    continue
                for user_id, receipt in by_user.items():
                    if server_of(user_id) != origin or not isinstance(receipt, dict):
                        continue
                    data = receipt.get("data")
                    thread = data.get("thread_id") if isinstance(data, dict) else None
                    for event_id in receipt.get("event_ids") or []:
                        if isinstance(event_id, str):
                            try:
                                await self.eph.receipt(
                                    room_id,
                                    user_id,
                                    receipt_type,
                                    event_id,
                                    thread if isinstance(thread, str) else "",
                                )
                            except Exception as exc:
                                log.info("receipt from %s dropped: %s", origin, exc)

    async def presence(self, origin: str, content: Any) -> None:
        pushes = content.get("push") if isinstance(content, dict) else None
        if not isinstance(pushes, list):
            return
        for update in pushes:
            if not isinstance(update, dict):
                continue
            user_id, state = update.get("user_id"), update.get("presence")
            if (
                not isinstance(user_id, str)
                or server_of(user_id) != origin
                or state not in PRESENCE_STATES
            ):
                continue
            msg = update.get("status_msg")
            await self.eph.set_presence(user_id, state, msg if isinstance(msg, str) else None)
