"""Guest access (client-server-api guest_access.md) over HTTP: guests join only rooms
whose `m.room.guest_access` is `can_join`, use the endpoints the module lists and no
others, leave when the room revokes guest access, and upgrade to full accounts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.client import SpecClient
from tests.support.rooms import create_room, register, send
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("guests") / "data", allow_guests=True)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.stderr_lines


async def _guest(c: SpecClient) -> dict[str, Any]:
    status, body = await c.call("POST", f"{V3}/register?kind=guest", {})
    assert status == 200, body
    return dict(body)


async def _membership(c: SpecClient, token: str, room: str, user_id: str) -> str | None:
    status, body = await c.call(
        "GET", f"{V3}/rooms/{room}/state/m.room.member/{user_id}", token=token
    )
    return str(body["membership"]) if status == 200 else None


async def test_guests_join_only_can_join_rooms_and_leave_on_revocation(
    server: ServerProcess,
) -> None:
    async with SpecClient(server.base_url) as c:
        alice = await register(c, "ga_alice")
        room = await create_room(c, alice)
        guest = await _guest(c)
        token, guest_id = guest["access_token"], guest["user_id"]

        status, err = await c.call("POST", f"{V3}/rooms/{room}/join", {}, token=token)
        assert status == 403 and err["errcode"] == "M_FORBIDDEN"
        # Endpoints outside the module's list stay closed to guests.
        status, err = await c.call("POST", f"{V3}/createRoom", {}, token=token)
        assert status == 403 and err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"

        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.guest_access/",
            {"guest_access": "can_join"},
            token=alice,
        )
        assert status == 200
        status, body = await c.call("POST", f"{V3}/rooms/{room}/join", {}, token=token)
        assert status == 200, body
        event_id = await send(c, token, room, "g1", {"msgtype": "m.text", "body": "sup"})
        status, msgs = await c.call("GET", f"{V3}/rooms/{room}/messages?limit=1", token=alice)
        assert status == 200
        assert [e["event_id"] for e in msgs["chunk"]] == [event_id]
        status, state = await c.call("GET", f"{V3}/rooms/{room}/state", token=token)
        assert status == 200 and state

        # A guest's name starts as its localpart; it may change that, and only that.
        profile = f"{V3}/profile/{guest_id}"
        status, name = await c.call("GET", f"{profile}/displayname", token=token)
        assert status == 200 and name["displayname"] == guest_id[1:].split(":")[0]
        status, _ = await c.call(
            "PUT", f"{profile}/displayname", {"displayname": "creeper"}, token=token
        )
        assert status == 200
        status, err = await c.call(
            "PUT", f"{profile}/avatar_url", {"avatar_url": "mxc://x/y"}, token=token
        )
        assert status == 403 and err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
        status, member = await c.call(
            "GET", f"{V3}/rooms/{room}/state/m.room.member/{guest_id}", token=token
        )
        assert status == 200 and member["displayname"] == "creeper"

        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.guest_access/",
            {"guest_access": "forbidden"},
            token=alice,
        )
        assert status == 200
        assert await _membership(c, alice, room, guest_id) == "leave"


async def test_guest_upgrades_to_full_account(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = await register(c, "gu_alice")
        room = await create_room(c, alice)
        guest = await _guest(c)
        other = await _guest(c)
        localpart = guest["user_id"][1:].split(":")[0]

        # Another guest's token cannot upgrade this account.
        status, err = await c.call(
            "POST",
            f"{V3}/register",
            {
                "username": localpart,
                "password": "pw-upgraded",
                "guest_access_token": other["access_token"],
                "auth": {"type": "m.login.dummy"},
            },
        )
        assert status == 403, err

        upgrade = {
            "username": localpart,
            "password": "pw-upgraded",
            "guest_access_token": guest["access_token"],
        }
        status, challenge = await c.call("POST", f"{V3}/register", upgrade)
        assert status == 401 and "flows" in challenge
        status, body = await c.call(
            "POST",
            f"{V3}/register",
            {**upgrade, "auth": {"type": "m.login.dummy", "session": challenge["session"]}},
        )
        assert status == 200, body
        assert body["user_id"] == guest["user_id"]
        status, who = await c.call("GET", f"{V3}/account/whoami", token=body["access_token"])
        assert status == 200 and who["is_guest"] is False
        # A full account joins rooms without guest access.
        status, joined = await c.call(
            "POST", f"{V3}/rooms/{room}/join", {}, token=body["access_token"]
        )
        assert status == 200, joined
        status, login = await c.call(
            "POST",
            f"{V3}/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": "pw-upgraded",
            },
        )
        assert status == 200, login
