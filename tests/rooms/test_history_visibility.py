"""History visibility at each event (the "Room History Visibility" module): an event is
visible by the setting in force when it was sent and the reader's membership then, not by
the room's current setting; setting changes and the reader's own membership changes are
visible by the value before *or* after them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, register, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def _visibility(c: SpecClient, token: str, room: str, value: str) -> str:
    status, body = await c.call(
        "PUT",
        f"{V3}/rooms/{room}/state/m.room.history_visibility/",
        {"history_visibility": value},
        token=token,
    )
    assert status == 200, body
    return str(body["event_id"])


async def _messages(c: SpecClient, token: str, room: str) -> list[dict[str, Any]]:
    status, body = await c.call("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=50", token=token)
    assert status == 200, body
    return list(reversed(body["chunk"]))


def _bodies(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        if e["type"] == "m.room.message":
            out.append(e["content"]["body"])
        elif e["type"] == "m.room.history_visibility":
            out.append("hv:" + e["content"]["history_visibility"])
    return out


async def test_setting_applies_at_each_event(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "hv_alice")
        bob = await register(c, "hv_bob")
        room = await create_room(c, alice)  # public_chat: history `shared`
        await send(c, alice, room, "m0", {"msgtype": "m.text", "body": "0"})
        await _visibility(c, alice, room, "joined")
        await send(c, alice, room, "m1", {"msgtype": "m.text", "body": "1"})
        await _visibility(c, alice, room, "invited")
        await send(c, alice, room, "m2", {"msgtype": "m.text", "body": "2"})
        hidden = await send(c, alice, room, "m2b", {"msgtype": "m.text", "body": "2b"})
        await _visibility(c, alice, room, "shared")
        await send(c, alice, room, "m3", {"msgtype": "m.text", "body": "3"})
        await join(c, bob, room)
        await send(c, alice, room, "m4", {"msgtype": "m.text", "body": "4"})

        # Under the current setting (`shared`) everything would show; per event, the
        # messages sent under `joined` and `invited` stay hidden from Bob.
        expected = ["hv:shared", "0", "hv:joined", "hv:shared", "3", "4"]
        assert _bodies(await _messages(c, bob, room)) == expected

        status, body = await c.call("GET", f"{V3}/sync", token=bob)
        assert status == 200, body
        timeline = body["rooms"]["join"][room]["timeline"]["events"]
        assert _bodies(timeline)[-4:] == ["hv:joined", "hv:shared", "3", "4"]

        status, body = await c.call("GET", f"{V3}/rooms/{room}/event/{hidden}", token=bob)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call(  # 404 is not listed, but Synapse answers it too
            "GET", f"{V3}/rooms/{room}/context/{hidden}", token=bob, validate=False
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("GET", f"{V3}/rooms/{room}/event/{hidden}", token=alice)
        assert status == 200, body


async def test_joined_history_stops_at_leave(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "hvl_alice")
        bob = await register(c, "hvl_bob")
        room = await create_room(c, alice)
        await _visibility(c, alice, room, "joined")
        await send(c, alice, room, "a", {"msgtype": "m.text", "body": "before"})
        await join(c, bob, room)
        await send(c, alice, room, "b", {"msgtype": "m.text", "body": "during"})
        status, body = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=bob)
        assert status == 200, body
        await send(c, alice, room, "c", {"msgtype": "m.text", "body": "after"})

        events = await _messages(c, bob, room)
        assert _bodies(events) == ["hv:shared", "hv:joined", "during"]
        own = [e for e in events if e.get("state_key") == "@hvl_bob:localhost"]
        assert [e["content"]["membership"] for e in own] == ["join", "leave"]


async def test_world_readable_history_for_non_members(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "hvw_alice")
        carol = await register(c, "hvw_carol")
        room = await create_room(c, alice)
        await send(c, alice, room, "a", {"msgtype": "m.text", "body": "shared"})
        await _visibility(c, alice, room, "world_readable")
        await send(c, alice, room, "b", {"msgtype": "m.text", "body": "public"})
        assert _bodies(await _messages(c, carol, room)) == ["hv:world_readable", "public"]

        other = await create_room(c, alice)
        status, body = await c.call("GET", f"{V3}/rooms/{quote(other)}/messages?dir=b", token=carol)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_erased_sender_is_redacted_for_later_members(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "hve_alice")
        bob = await register(c, "hve_bob")
        carol = await register(c, "hve_carol")
        room = await create_room(c, alice)
        await join(c, bob, room)
        message = await send(c, alice, room, "a", {"msgtype": "m.text", "body": "secret"})
        await join(c, carol, room)
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "hve_alice"},
            "password": "secret-pw",
        }
        status, body = await c.call(
            "POST", f"{V3}/account/deactivate", {"auth": auth, "erase": True}, token=alice
        )
        assert status == 200, body

        def content(events: list[dict[str, Any]]) -> Any:
            return next(e["content"] for e in events if e["event_id"] == message)

        assert content(await _messages(c, bob, room))["body"] == "secret"
        assert content(await _messages(c, carol, room)) == {}
        status, event = await c.call("GET", f"{V3}/rooms/{room}/event/{message}", token=carol)
        assert (status, event["content"]) == (200, {})
