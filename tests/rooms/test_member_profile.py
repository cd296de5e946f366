"""Joins carry the joiner's current profile: the m.room.member content of createRoom's
creator join and of later joins holds their `displayname` and `avatar_url`."""

from __future__ import annotations

from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def _member(c: SpecClient, token: str, room_id: str, user_id: str) -> dict[str, object]:
    status, content = await c.call(
        "GET", f"{V3}/rooms/{room_id}/state/m.room.member/{quote(user_id)}", token=token
    )
    assert status == 200, content
    return dict(content)


async def test_joins_carry_the_current_profile(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("mp_alice"))["access_token"]
        bob = (await c.register("mp_bob"))["access_token"]
        carol = (await c.register("mp_carol"))["access_token"]
        a_id, b_id, c_id = "@mp_alice:localhost", "@mp_bob:localhost", "@mp_carol:localhost"

        for key, value in (("displayname", "Alice A."), ("avatar_url", "mxc://localhost/alice")):
            status, _ = await c.call(
                "PUT", f"{V3}/profile/{quote(a_id)}/{key}", {key: value}, token=alice
            )
            assert status == 200
        status, room = await c.call(
            "POST", f"{V3}/createRoom", {"preset": "public_chat"}, token=alice
        )
        assert status == 200
        room_id = room["room_id"]
        assert await _member(c, alice, room_id, a_id) == {
            "membership": "join",
            "displayname": "Alice A.",
            "avatar_url": "mxc://localhost/alice",
        }

        status, _ = await c.call(
            "PUT", f"{V3}/profile/{quote(b_id)}/displayname", {"displayname": "Bob"}, token=bob
        )
        assert status == 200
        status, _ = await c.call("POST", f"{V3}/join/{room_id}", {}, token=bob)
        assert status == 200
        assert await _member(c, alice, room_id, b_id) == {
            "membership": "join",
            "displayname": "Bob",
        }

        # No profile set: the join carries the default name, the localpart (as on other
        # servers). The invite names no profile of the invitee.
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room_id}/invite", {"user_id": c_id}, token=alice
        )
        assert status == 200
        assert (await _member(c, alice, room_id, c_id))["membership"] == "invite"
        status, _ = await c.call("POST", f"{V3}/rooms/{room_id}/join", {}, token=carol)
        assert status == 200
        assert await _member(c, alice, room_id, c_id) == {
            "membership": "join",
            "displayname": c_id[1:].split(":")[0],
        }

        # A join after a profile change carries the new name (and a reason next to it).
        status, _ = await c.call("POST", f"{V3}/rooms/{room_id}/leave", {}, token=bob)
        assert status == 200
        status, _ = await c.call(
            "PUT", f"{V3}/profile/{quote(b_id)}/displayname", {"displayname": "Robert"}, token=bob
        )
        assert status == 200
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room_id}/join", {"reason": "back"}, token=bob
        )
        assert status == 200
        assert await _member(c, alice, room_id, b_id) == {
            "membership": "join",
            "displayname": "Robert",
            "reason": "back",
        }
