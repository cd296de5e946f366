"""`/sync` keeps per-user facts in memory between looks (a user's ignored users, their
history in a room): a change between two syncs must show in the second one."""

from __future__ import annotations

from typing import Any

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, register, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def _sync(c: SpecClient, token: str, since: str | None = None) -> Any:
    path = f"{V3}/sync?timeout=0" + (f"&since={since}" if since else "")
    status, body = await c.call("GET", path, token=token)
    assert status == 200, body
    return body


def _bodies(synced: Any, room: str) -> list[str]:
    joined = synced["rooms"]["join"].get(room)
    events = joined["timeline"]["events"] if joined else []
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


async def _ignore(c: SpecClient, token: str, user: str, users: list[str]) -> None:
    status, body = await c.call(
        "PUT",
        f"{V3}/user/{user}/account_data/m.ignored_user_list",
        {"ignored_users": {u: {} for u in users}},
        token=token,
    )
    assert status == 200, body


async def test_ignoring_changes_between_syncs(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "sc_ig_alice")
        bob = await register(c, "sc_ig_bob")
        room = await create_room(c, alice)
        await join(c, bob, room)
        await send(c, bob, room, "b0", {"msgtype": "m.text", "body": "seen"})
        first = await _sync(c, alice)
        assert _bodies(first, room) == ["seen"]
        await _ignore(c, alice, "@sc_ig_alice:localhost", ["@sc_ig_bob:localhost"])
        await send(c, bob, room, "b1", {"msgtype": "m.text", "body": "hidden"})
        await send(c, alice, room, "a1", {"msgtype": "m.text", "body": "own"})
        second = await _sync(c, alice, first["next_batch"])
        assert _bodies(second, room) == ["own"]
        await _ignore(c, alice, "@sc_ig_alice:localhost", [])
        await send(c, bob, room, "b2", {"msgtype": "m.text", "body": "seen again"})
        third = await _sync(c, alice, second["next_batch"])
        assert _bodies(third, room) == ["seen again"]


async def test_membership_changes_between_syncs(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "sc_hv_alice")
        bob = await register(c, "sc_hv_bob")
        room = await create_room(c, alice)
        status, body = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.history_visibility/",
            {"history_visibility": "joined"},
            token=alice,
        )
        assert status == 200, body
        await join(c, bob, room)
        await send(c, alice, room, "a0", {"msgtype": "m.text", "body": "while joined"})
        first = await _sync(c, bob)
        assert _bodies(first, room) == ["while joined"]
        status, body = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=bob)
        assert status == 200, body
        await send(c, alice, room, "a1", {"msgtype": "m.text", "body": "while away"})
        await join(c, bob, room)
        await send(c, alice, room, "a2", {"msgtype": "m.text", "body": "back"})
        second = await _sync(c, bob, first["next_batch"])
        assert "while away" not in _bodies(second, room)
        assert "back" in _bodies(second, room)
        again = await _sync(c, bob)
        assert _bodies(again, room) == ["while joined", "back"]
