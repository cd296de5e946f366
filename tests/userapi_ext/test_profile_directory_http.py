"""Profiles (get/put/delete, propagated as member events to joined rooms) and the user
directory (users sharing a room or in public rooms), against a real server."""

from __future__ import annotations

from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def test_profile_set_get_and_propagation(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("pf_alice"))["access_token"]
        bob = (await c.register("pf_bob"))["access_token"]
        me = quote("@pf_alice:localhost")
        room = await create_room(c, alice)
        await join(c, bob, room)
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        since = s["next_batch"]

        status, body = await c.call("GET", f"{V3}/profile/{me}")
        assert (status, body) == (200, {"displayname": "pf_alice"})  # the default: the localpart
        status, _ = await c.call(
            "PUT", f"{V3}/profile/{me}/displayname", {"displayname": "Alice A."}, token=alice
        )
        assert status == 200
        status, _ = await c.call(
            "PUT",
            f"{V3}/profile/{me}/avatar_url",
            {"avatar_url": "mxc://localhost/abc"},
            token=alice,
        )
        assert status == 200
        status, body = await c.call("GET", f"{V3}/profile/{me}")
        assert body == {"displayname": "Alice A.", "avatar_url": "mxc://localhost/abc"}
        status, body = await c.call("GET", f"{V3}/profile/{me}/displayname")
        assert (status, body) == (200, {"displayname": "Alice A."})

        # Each change is a new member event in the joined room, seen by Bob.
        status, s = await c.call("GET", f"{V3}/sync?since={since}", token=bob)
        members = [
            e
            for e in s["rooms"]["join"][room]["timeline"]["events"]
            if e["type"] == "m.room.member" and e["state_key"] == "@pf_alice:localhost"
        ]
        assert members[-1]["content"] == {
            "membership": "join",
            "displayname": "Alice A.",
            "avatar_url": "mxc://localhost/abc",
        }

        status, _ = await c.call("DELETE", f"{V3}/profile/{me}/avatar_url", token=alice)
        assert status == 200
        status, body = await c.call("GET", f"{V3}/profile/{me}")
        assert body == {"displayname": "Alice A."}
        status, body = await c.call("GET", f"{V3}/profile/{me}/avatar_url")
        assert status == 404

        # Refusals: someone else's profile, a wrong type, an unknown user.
        status, body = await c.call(
            "PUT", f"{V3}/profile/{me}/displayname", {"displayname": "Mallory"}, token=bob
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await c.call(
            "PUT", f"{V3}/profile/{me}/displayname", {"displayname": 7}, token=alice
        )
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
        status, body = await c.call(
            "PUT", f"{V3}/profile/{me}/displayname", {"other": "x"}, token=alice
        )
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
        status, body = await c.call("GET", f"{V3}/profile/{quote('@nobody:localhost')}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("GET", f"{V3}/profile/{me}")
        assert body == {"displayname": "Alice A."}


async def test_user_directory(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("ud_alice"))["access_token"]
        bob = (await c.register("ud_bob"))["access_token"]
        carol = (await c.register("ud_carol"))["access_token"]
        dave = (await c.register("ud_dave"))["access_token"]
        # Alice and Bob share a private room; Carol is alone in a public room; Dave is
        # alone in a private room.
        private = await create_room(c, alice, {"preset": "private_chat", "room_version": "10"})
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{private}/invite", {"user_id": "@ud_bob:localhost"}, token=alice
        )
        assert status == 200
        await join(c, bob, private)
        await create_room(c, carol)
        await create_room(c, dave, {"preset": "private_chat", "room_version": "10"})
        status, _ = await c.call(
            "PUT",
            f"{V3}/profile/{quote('@ud_bob:localhost')}/displayname",
            {"displayname": "Robert"},
            token=bob,
        )

        status, body = await c.call(
            "POST", f"{V3}/user_directory/search", {"search_term": "ud_"}, token=alice
        )
        assert status == 200
        found = {r["user_id"] for r in body["results"]}
        assert {"@ud_bob:localhost", "@ud_carol:localhost"} <= found
        # Not Dave (no shared or public room), nor Alice herself: sharing a private room
        # with herself does not list her (as on Synapse, and as Sytest checks).
        assert not {"@ud_dave:localhost", "@ud_alice:localhost"} & found
        assert body["limited"] is False

        status, body = await c.call(
            "POST", f"{V3}/user_directory/search", {"search_term": "rober"}, token=alice
        )
        assert body["results"] == [{"user_id": "@ud_bob:localhost", "display_name": "Robert"}]
        status, body = await c.call(
            "POST", f"{V3}/user_directory/search", {"search_term": "ud_", "limit": 1}, token=alice
        )
        assert len(body["results"]) == 1 and body["limited"] is True
        status, body = await c.call(
            "POST", f"{V3}/user_directory/search", {"limit": 1}, token=alice
        )
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
