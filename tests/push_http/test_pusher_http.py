"""Pushers that deliver: a real Myelin server POSTs notifications to a real push gateway
(an aiohttp server in the test, on loopback) as push-gateway-api.md describes: the event,
the unread count, the device with its pusher data minus `url`, the rule's tweaks; a
badge-only update after a read receipt; `format: event_id_only`; retries after gateway
errors; pushers whose pushkey the gateway rejects are removed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
from aiohttp import web

from tests.support.client import SpecClient
from tests.support.openapi import SPEC_ROOT, _load, resolve
from tests.support.rooms import create_room, join, send
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"
NOTIFY = "/_matrix/push/v1/notify"
WAIT = 60.0
NOTIFIER_SPEC = (SPEC_ROOT / "data/api/push-gateway/push_notifier.yaml").resolve()


@cache
def _request_schema() -> dict[str, Any]:
    """The spec's schema of the POST /_matrix/push/v1/notify request body."""
    op = _load(NOTIFIER_SPEC)["paths"]["/notify"]["post"]
    schema: dict[str, Any] = resolve(
        op["requestBody"]["content"]["application/json"]["schema"], NOTIFIER_SPEC
    )
    return schema


@dataclass
class Gateway:
    """A push gateway: records each POST body; answers from `answers` (status, body) in
    turn, then 200 `{}`."""

    url: str = ""
    received: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    attempts: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        status, answer = self.answers.pop(0) if self.answers else (200, {})
        if status == 200:
            body = await request.json()
            # Every request the server makes must be one the spec allows: a mismatch is
            # handed to the test instead of the notification (see `next`).
            errors = list(jsonschema.Draft202012Validator(_request_schema()).iter_errors(body))
            self.received.put_nowait({"invalid": [e.message for e in errors]} if errors else body)
        return web.json_response(answer, status=status)

    async def next(self, want: str | None = "m.room.message") -> dict[str, Any]:
        """The next notification of type `want` (None: the next badge-only one)."""
        while True:
            body = await asyncio.wait_for(self.received.get(), WAIT)
            assert "invalid" not in body, body
            notification: dict[str, Any] = body["notification"]
            if notification.get("type") == want and (want or "event_id" not in notification):
                return notification


@asynccontextmanager
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_post(NOTIFY, gw.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gw.url = f"http://127.0.0.1:{port}{NOTIFY}"
    try:
        yield gw
    finally:
        await runner.cleanup()


async def set_pusher(c: SpecClient, token: str, url: str, pushkey: str, **data: Any) -> None:
    body = {
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "phone",
        "pushkey": pushkey,
        "lang": "en",
        "data": {"url": url, **data},
    }
    status, answer = await c.call("POST", f"{V3}/pushers/set", body, token=token)
    assert status == 200, answer


async def pair(c: SpecClient, prefix: str) -> tuple[str, str, str]:
    """Alice and Bob (named) in a named one-to-one room: Bob's messages notify Alice."""
    alice = (await c.register(f"{prefix}_alice"))["access_token"]
    bob = (await c.register(f"{prefix}_bob"))["access_token"]
    room = await create_room(c, bob, {"name": "Pushy", "preset": "public_chat"})
    await join(c, alice, room)
    status, _ = await c.call(
        "PUT",
        f"{V3}/profile/@{prefix}_bob:localhost/displayname",
        {"displayname": "Bob B"},
        token=bob,
    )
    assert status == 200
    return alice, bob, room


async def test_message_is_pushed_with_counts_and_badge_reset(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c, gateway() as gw:
        alice, bob, room = await pair(c, "pg1")
        await set_pusher(c, alice, gw.url, "key-1", extra="kept")
        status, listed = await c.call("GET", f"{V3}/pushers", token=alice)
        assert status == 200 and listed["pushers"][0]["data"]["url"] == gw.url

        event_id = await send(c, bob, room, "m1", {"msgtype": "m.text", "body": "hello"})
        n = await gw.next()
        assert n["event_id"] == event_id and n["room_id"] == room
        assert (n["type"], n["sender"]) == ("m.room.message", "@pg1_bob:localhost")
        assert n["content"] == {"msgtype": "m.text", "body": "hello"}
        assert n["sender_display_name"] == "Bob B" and n["room_name"] == "Pushy"
        assert n["counts"] == {"unread": 1}
        assert n["prio"] == "high"  # the one-to-one rule sets a sound
        (device,) = n["devices"]
        assert (device["app_id"], device["pushkey"]) == ("org.example.app", "key-1")
        assert device["data"] == {"extra": "kept"}  # without `url`
        assert device["tweaks"] == {"sound": "default"}
        assert isinstance(device["pushkey_ts"], int) and device["pushkey_ts"] > 0

        # Unread adds up; Alice's own message is not pushed to her, and marks what came
        # before it as read.
        second = await send(c, bob, room, "m2", {"msgtype": "m.text", "body": "again"})
        n = await gw.next()
        assert (n["event_id"], n["counts"]) == (second, {"unread": 2})
        await send(c, alice, room, "a1", {"msgtype": "m.text", "body": "mine"})
        second = await send(c, bob, room, "m3", {"msgtype": "m.text", "body": "and again"})
        n = await gw.next()
        assert (n["event_id"], n["counts"]) == (second, {"unread": 1})

        # Reading up to it sends a badge-only notification with the count cleared.
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{quote(room)}/receipt/m.read/{quote(second)}", {}, token=alice
        )
        assert status == 200
        badge = await gw.next(None)
        assert badge["counts"] == {"unread": 0}
        assert badge["devices"][0]["pushkey"] == "key-1"


async def test_event_id_only_format_and_retries(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c, gateway() as gw:
        alice, bob, room = await pair(c, "pg2")
        await set_pusher(c, alice, gw.url, "key-2", format="event_id_only")
        # The gateway fails twice: the server tries again until it gets through.
        gw.answers = [(500, {}), (503, {})]
        event_id = await send(c, bob, room, "m1", {"msgtype": "m.text", "body": "secret"})
        body = await asyncio.wait_for(gw.received.get(), WAIT)
        assert "invalid" not in body, body
        n = body["notification"]
        assert gw.attempts == 3
        assert n["event_id"] == event_id and n["room_id"] == room
        assert n["counts"] == {"unread": 1}
        assert n["devices"][0]["data"] == {"format": "event_id_only"}
        for hidden in ("type", "sender", "content", "sender_display_name", "room_name"):
            assert hidden not in n


async def test_rejected_pushkey_removes_the_pusher(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c, gateway() as gw:
        alice, bob, room = await pair(c, "pg3")
        await set_pusher(c, alice, gw.url, "dead-key")
        gw.answers = [(200, {"rejected": ["dead-key"]})]
        await send(c, bob, room, "m1", {"msgtype": "m.text", "body": "anyone?"})
        n = await gw.next()
        assert n["devices"][0]["pushkey"] == "dead-key"
        # The removal follows the gateway's answer; wait for it to show.
        for _ in range(200):
            status, listed = await c.call("GET", f"{V3}/pushers", token=alice)
            assert status == 200
            if not listed["pushers"]:
                break
            await asyncio.sleep(0.05)
        assert listed["pushers"] == []


async def test_invite_is_pushed_to_the_invitee(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c, gateway() as gw:
        alice = (await c.register("pg4_alice"))["access_token"]
        bob = (await c.register("pg4_bob"))["access_token"]
        await set_pusher(c, alice, gw.url, "key-4")
        room = await create_room(c, bob)
        status, _ = await c.call(
            "POST",
            f"{V3}/rooms/{quote(room)}/invite",
            {"user_id": "@pg4_alice:localhost"},
            token=bob,
        )
        assert status == 200
        n = await gw.next("m.room.member")
        assert (n["room_id"], n["sender"]) == (room, "@pg4_bob:localhost")
        assert n["membership"] == "invite" and n["user_is_target"] is True


async def test_pusher_offset_survives_a_restart(tmp_path: Path) -> None:
    """The pusher keeps its log offset: after a restart it pushes new events and does not
    push again what it had already handled."""
    server = start_server(tmp_path / "data")
    try:
        async with SpecClient(server.base_url) as c, gateway() as gw:
            alice, bob, room = await pair(c, "pg5")
            await set_pusher(c, alice, gw.url, "key-5")
            before = await send(c, bob, room, "m1", {"msgtype": "m.text", "body": "one"})
            assert (await gw.next())["event_id"] == before
    finally:
        assert server.stop() == 0
    server = start_server(tmp_path / "data", port=server.port)
    try:
        async with SpecClient(server.base_url) as c, gateway() as gw:
            await set_pusher(c, alice, gw.url, "key-5")  # the gateway's port changed
            after = await send(c, bob, room, "m2", {"msgtype": "m.text", "body": "two"})
            n = await gw.next()
            assert n["event_id"] == after  # not `before` again
            assert n["counts"] == {"unread": 2}
    finally:
        assert server.stop() == 0


async def test_rooms_joined_after_the_pusher_are_followed(server: ServerProcess) -> None:
    """The pusher knows in memory which rooms users with pushers are in: a room joined
    after the pusher was set is pushed, a room left is not, a room joined again is."""
    async with SpecClient(server.base_url) as c, gateway() as gw:
        alice = (await c.register("pg6_alice"))["access_token"]
        bob = (await c.register("pg6_bob"))["access_token"]
        await set_pusher(c, alice, gw.url, "key-6")
        room = await create_room(c, bob, {"preset": "public_chat"})
        await join(c, alice, room)
        first = await send(c, bob, room, "m1", {"msgtype": "m.text", "body": "one"})
        assert (await gw.next())["event_id"] == first
        status, _ = await c.call("POST", f"{V3}/rooms/{quote(room)}/leave", {}, token=alice)
        assert status == 200
        await send(c, bob, room, "m2", {"msgtype": "m.text", "body": "not for alice"})
        await join(c, alice, room)
        third = await send(c, bob, room, "m3", {"msgtype": "m.text", "body": "three"})
        assert (await gw.next())["event_id"] == third  # m2 was never pushed


async def test_receipts_before_the_first_pusher_are_not_badged(tmp_path: Path) -> None:
    """Receipts made while no user had a pusher are passed over: the first badge-only
    notification the new pusher gets is the one of the receipt that clears its count,
    not a late one of an older receipt (which a gateway would show as the newest)."""
    server = start_server(tmp_path / "data")
    try:
        async with SpecClient(server.base_url) as c, gateway() as gw:
            alice, bob, room = await pair(c, "pg7")
            early = await send(c, bob, room, "m0", {"msgtype": "m.text", "body": "before"})
            status, _ = await c.call(
                "POST", f"{V3}/rooms/{quote(room)}/receipt/m.read/{quote(early)}", {}, token=alice
            )
            assert status == 200
            await set_pusher(c, alice, gw.url, "key-7")
            event_id = await send(c, bob, room, "m1", {"msgtype": "m.text", "body": "hello"})
            n = await gw.next()
            assert (n["event_id"], n["counts"]) == (event_id, {"unread": 1})
            status, _ = await c.call(
                "POST",
                f"{V3}/rooms/{quote(room)}/receipt/m.read/{quote(event_id)}",
                {},
                token=alice,
            )
            assert status == 200
            badge = await gw.next(None)
            assert badge["counts"] == {"unread": 0}
    finally:
        assert server.stop() == 0
