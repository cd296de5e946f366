"""Ignoring users (client-server-api "Ignoring Users"): the messages of users in
`m.ignored_user_list` are not served, in `/sync` or `/messages`, and neither are their
invites; their state events still are."""

from __future__ import annotations

from typing import Any

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, register, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def _senders(events: list[dict[str, Any]]) -> list[str]:
    return [e["sender"] for e in events if e["type"] == "m.room.message"]


async def test_ignored_users_messages_and_invites_are_hidden(
    shared_server: ServerProcess,
) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "ig_alice")
        bob = await register(c, "ig_bob")
        room = await create_room(c, alice)
        await join(c, bob, room)
        await send(c, alice, room, "a1", {"msgtype": "m.text", "body": "from alice"})
        await send(c, bob, room, "b1", {"msgtype": "m.text", "body": "from bob"})
        status, body = await c.call(
            "PUT",
            f"{V3}/user/@ig_alice:localhost/account_data/m.ignored_user_list",
            {"ignored_users": {"@ig_bob:localhost": {}}},
            token=alice,
        )
        assert status == 200, body

        status, page = await c.call("GET", f"{V3}/rooms/{room}/messages?dir=b", token=alice)
        assert status == 200, page
        assert _senders(page["chunk"]) == ["@ig_alice:localhost"]
        assert any(e.get("state_key") == "@ig_bob:localhost" for e in page["chunk"])
        status, synced = await c.call("GET", f"{V3}/sync", token=alice)
        assert status == 200, synced
        timeline = synced["rooms"]["join"][room]["timeline"]["events"]
        assert _senders(timeline) == ["@ig_alice:localhost"]

        other = await create_room(c, bob, {"invite": ["@ig_alice:localhost"]})
        status, synced = await c.call("GET", f"{V3}/sync", token=alice)
        assert other not in synced["rooms"]["invite"]
        # Bob still sees his own messages.
        status, page = await c.call("GET", f"{V3}/rooms/{room}/messages?dir=b", token=bob)
        assert "@ig_bob:localhost" in _senders(page["chunk"])
