"""Endpoints of issue #5 whose successful answers no other test checked against the spec's
OpenAPI definitions (found by recording every validated operation of the HTTP suites):
room aliases (`PUT /directory/room`, `GET /rooms/{roomId}/aliases`), room directory
visibility (`PUT /directory/list/room`) and `POST /delete_devices` with its
user-interactive authentication. Each is also checked for the behaviour the spec gives
it, not only for the shape of its answer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def q(value: str) -> str:
    return quote(value, safe="")


async def test_local_aliases_of_a_room(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("al_alice"))["access_token"]
        bob = (await c.register("al_bob"))["access_token"]
        eve = (await c.register("al_eve"))["access_token"]
        room = await create_room(c, alice, {"preset": "private_chat"})
        await_invite = await c.call(
            "POST", f"{V3}/rooms/{q(room)}/invite", {"user_id": "@al_bob:localhost"}, token=alice
        )
        assert await_invite[0] == 200, await_invite
        await join(c, bob, room)

        status, body = await c.call("GET", f"{V3}/rooms/{q(room)}/aliases", token=alice)
        assert (status, body) == (200, {"aliases": []})

        first, second = "#al-first:localhost", "#al-second:localhost"
        for alias, token in ((first, alice), (second, bob)):
            status, body = await c.call(
                "PUT", f"{V3}/directory/room/{q(alias)}", {"room_id": room}, token=token
            )
            assert (status, body) == (200, {}), alias
        # The same alias again: 409 (directory.yaml).
        status, body = await c.call(
            "PUT", f"{V3}/directory/room/{q(first)}", {"room_id": room}, token=bob
        )
        assert status == 409, body

        for token in (alice, bob):
            status, body = await c.call("GET", f"{V3}/rooms/{q(room)}/aliases", token=token)
            assert status == 200, body
            assert sorted(body["aliases"]) == [first, second]
        # Not a member, and the history is not world-readable: M_FORBIDDEN.
        status, body = await c.call("GET", f"{V3}/rooms/{q(room)}/aliases", token=eve)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")

        # A deleted alias leaves the list.
        status, body = await c.call("DELETE", f"{V3}/directory/room/{q(second)}", token=bob)
        assert status == 200, body
        status, body = await c.call("GET", f"{V3}/rooms/{q(room)}/aliases", token=alice)
        assert (status, body) == (200, {"aliases": [first]})


async def test_world_readable_room_aliases_for_non_members(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("aw_alice"))["access_token"]
        eve = (await c.register("aw_eve"))["access_token"]
        room = await create_room(c, alice, {"preset": "private_chat"})
        alias = "#aw-open:localhost"
        status, body = await c.call(
            "PUT", f"{V3}/directory/room/{q(alias)}", {"room_id": room}, token=alice
        )
        assert (status, body) == (200, {})
        status, body = await c.call(
            "PUT",
            f"{V3}/rooms/{q(room)}/state/m.room.history_visibility/",
            {"history_visibility": "world_readable"},
            token=alice,
        )
        assert status == 200, body
        status, body = await c.call("GET", f"{V3}/rooms/{q(room)}/aliases", token=eve)
        assert (status, body) == (200, {"aliases": [alias]})


async def test_room_directory_visibility(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("dv_alice"))["access_token"]
        room = await create_room(c, alice, {"preset": "public_chat", "name": "dv listed room"})
        path = f"{V3}/directory/list/room/{q(room)}"

        async def listed() -> bool:
            status, body = await c.call(
                "POST",
                f"{V3}/publicRooms",
                {"filter": {"generic_search_term": "dv listed"}},
                token=alice,
            )
            assert status == 200, body
            return room in [r["room_id"] for r in body["chunk"]]

        status, body = await c.call("GET", path, token=alice)
        assert (status, body) == (200, {"visibility": "private"})
        assert not await listed()

        status, body = await c.call("PUT", path, {"visibility": "public"}, token=alice)
        assert (status, body) == (200, {})
        status, body = await c.call("GET", path)
        assert (status, body) == (200, {"visibility": "public"})
        assert await listed()
        # No change needed is still 200.
        status, body = await c.call("PUT", path, {"visibility": "public"}, token=alice)
        assert (status, body) == (200, {})

        status, body = await c.call("PUT", path, {"visibility": "private"}, token=alice)
        assert (status, body) == (200, {})
        assert not await listed()

        unknown = f"{V3}/directory/list/room/{q('!nowhere:localhost')}"
        status, body = await c.call("PUT", unknown, {"visibility": "public"}, token=alice)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("GET", unknown)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_delete_devices_with_user_interactive_auth(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        first = await c.register("dd_user", "pw-dd")
        token = first["access_token"]
        logins = []
        for _ in range(2):
            status, body = await c.call(
                "POST",
                f"{V3}/login",
                {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "dd_user"},
                    "password": "pw-dd",
                },
            )
            assert status == 200, body
            logins.append(body)
        doomed = [login["device_id"] for login in logins]

        status, uia = await c.call("POST", f"{V3}/delete_devices", {"devices": doomed}, token=token)
        assert status == 401 and {"stages": ["m.login.password"]} in uia["flows"], uia
        auth: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "dd_user"},
            "password": "pw-dd",
            "session": uia["session"],
        }
        status, body = await c.call(
            "POST",
            f"{V3}/delete_devices",
            {"devices": [*doomed, "NEVERHADTHIS"], "auth": auth},
            token=token,
        )
        assert (status, body) == (200, {})

        status, body = await c.call("GET", f"{V3}/devices", token=token)
        assert status == 200, body
        assert [d["device_id"] for d in body["devices"]] == [first["device_id"]]
        for login in logins:
            status, body = await c.call("GET", f"{V3}/account/whoami", token=login["access_token"])
            assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
