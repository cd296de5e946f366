"""Unread counts across incremental `/sync`s, where the count cache continues from the
last count: new messages add up, the user's own message and a read receipt reset it, and
another user's receipt changes nothing for them."""

from __future__ import annotations

from typing import Any

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


class _Syncer:
    def __init__(self, c: SpecClient, token: str, room: str) -> None:
        self.c, self.token, self.room = c, token, room
        self.since: str | None = None

    async def counts(self) -> dict[str, Any]:
        """The room's unread counts in the next incremental sync (an initial one first)."""
        query = "?timeout=0" + (f"&since={self.since}" if self.since else "")
        status, body = await self.c.call("GET", f"{V3}/sync{query}", token=self.token)
        assert status == 200, body
        self.since = body["next_batch"]
        room: dict[str, Any] = body["rooms"]["join"][self.room]
        counts: dict[str, Any] = room["unread_notifications"]
        return counts


async def test_counts_follow_messages_own_events_and_receipts(
    shared_server: ServerProcess,
) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("cc_alice"))["access_token"]
        bob = (await c.register("cc_bob"))["access_token"]
        room = await create_room(c, alice)
        await join(c, bob, room)
        syncer = _Syncer(c, bob, room)
        assert (await syncer.counts())["notification_count"] == 0

        await send(c, alice, room, "a1", {"msgtype": "m.text", "body": "one"})
        assert (await syncer.counts())["notification_count"] == 1
        await send(c, alice, room, "a2", {"msgtype": "m.text", "body": "two"})
        assert (await syncer.counts())["notification_count"] == 2

        # Bob's own message: he has read what came before it.
        await send(c, bob, room, "b1", {"msgtype": "m.text", "body": "mine"})
        assert (await syncer.counts())["notification_count"] == 0
        last = await send(c, alice, room, "a3", {"msgtype": "m.text", "body": "three"})
        assert (await syncer.counts())["notification_count"] == 1

        # Alice's receipt is not Bob's: his count stays, and grows with the next message.
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/{last}", {}, token=alice
        )
        assert status == 200
        assert (await syncer.counts())["notification_count"] == 1
        last = await send(c, alice, room, "a4", {"msgtype": "m.text", "body": "four"})
        assert (await syncer.counts())["notification_count"] == 2

        # Bob's receipt resets his count; a later message counts from there.
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/receipt/m.read/{last}", {}, token=bob)
        assert status == 200
        assert (await syncer.counts())["notification_count"] == 0
        await send(c, alice, room, "a5", {"msgtype": "m.text", "body": "five"})
        assert (await syncer.counts())["notification_count"] == 1
