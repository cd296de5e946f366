"""Client-API behaviour that depends on another server's rooms.

A room upgrade seen from another server: when a user of that server joins the new room,
its directory follows the upgrade (its aliases of the old room point to the new one, a
published old room gives way to the new one) and the user's tags come along. The user
directory lists members of a remote public room only while this server is in it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.federation import Peer, peers_fixture, wait_for_event
from tests.support.rooms import create_room, register

V3 = "/_matrix/client/v3"

#: Two federating servers, shared by the tests of this module.
two_servers = peers_fixture()


async def _ok(c: SpecClient, method: str, path: str, token: str, body: Any = None) -> Any:
    status, answer = await c.call(method, path, body, token=token)
    assert status == 200, answer
    return answer


async def test_remote_server_follows_an_upgrade(two_servers: tuple[Peer, Peer]) -> None:
    a, b = two_servers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "ug_alice")
        bob = await register(cb, "ug_bob")
        bob_id = f"@ug_bob:{b.name}"
        old = await create_room(
            ca, alice, {"preset": "public_chat", "room_version": "10", "visibility": "public"}
        )
        await _ok(cb, "POST", f"{V3}/join/{quote(old)}?server_name={quote(a.name)}", bob)
        levels = await _ok(ca, "GET", f"{V3}/rooms/{quote(old)}/state/m.room.power_levels/", alice)
        levels["users"][bob_id] = 100
        sent = await _ok(
            ca, "PUT", f"{V3}/rooms/{quote(old)}/state/m.room.power_levels/", alice, levels
        )
        await wait_for_event(cb, bob, old, lambda e: e["event_id"] == sent["event_id"])

        # Bob's server has its own alias and listing of the room, and Bob a tag on it.
        alias = f"#ug_lobby:{b.name}"
        await _ok(cb, "PUT", f"{V3}/directory/room/{quote(alias)}", bob, {"room_id": old})
        await _ok(
            cb, "PUT", f"{V3}/directory/list/room/{quote(old)}", bob, {"visibility": "public"}
        )
        await _ok(
            cb,
            "PUT",
            f"{V3}/user/{quote(bob_id)}/rooms/{quote(old)}/tags/u.work",
            bob,
            {"order": 0.5},
        )

        upgraded = await _ok(
            ca, "POST", f"{V3}/rooms/{quote(old)}/upgrade", alice, {"new_version": "11"}
        )
        new = upgraded["replacement_room"]
        # Bob's server learns of the tombstone, then Bob follows it.
        await wait_for_event(cb, bob, old, lambda e: e["type"] == "m.room.tombstone")
        await _ok(cb, "POST", f"{V3}/join/{quote(new)}?server_name={quote(a.name)}", bob)

        resolved = await _ok(cb, "GET", f"{V3}/directory/room/{quote(alias)}", bob)
        assert resolved["room_id"] == new
        listed = await _ok(cb, "GET", f"{V3}/publicRooms", bob)
        listed_ids = {r["room_id"] for r in listed["chunk"]}
        assert new in listed_ids and old not in listed_ids
        tags = await _ok(cb, "GET", f"{V3}/user/{quote(bob_id)}/rooms/{quote(new)}/tags", bob)
        assert tags["tags"] == {"u.work": {"order": 0.5}}


async def _search(c: SpecClient, token: str, term: str) -> set[str]:
    found = await _ok(c, "POST", f"{V3}/user_directory/search", token, {"search_term": term})
    return {r["user_id"] for r in found["results"]}


async def test_user_directory_forgets_a_room_this_server_left(
    two_servers: tuple[Peer, Peer],
) -> None:
    a, b = two_servers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        carol = await register(ca, "ud_carol")
        dan = await register(cb, "ud_dan")
        carol_id = f"@ud_carol:{a.name}"
        await _ok(
            ca, "PUT", f"{V3}/profile/{quote(carol_id)}/displayname", carol, {"displayname": "Zq"}
        )
        room = await create_room(ca, carol, {"preset": "public_chat", "room_version": "10"})
        await _ok(cb, "POST", f"{V3}/join/{quote(room)}?server_name={quote(a.name)}", dan)
        assert carol_id in await _search(cb, dan, "ud_carol")
        await _ok(cb, "POST", f"{V3}/rooms/{quote(room)}/leave", dan, {})
        # Dan's server is out of the room: it no longer knows who is in it.
        assert carol_id not in await _search(cb, dan, "ud_carol")
