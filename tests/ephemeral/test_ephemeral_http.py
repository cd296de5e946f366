"""Typing, receipts, read markers and presence over HTTP against a real server: the
endpoints (checked against the OpenAPI description) and their delivery in `/sync`,
including waking a long-polling `/sync`."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, send, two_in_room
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def _ephemeral(s: dict[str, Any], room: str, kind: str) -> list[dict[str, Any]]:
    joined = s["rooms"]["join"].get(room)
    if joined is None:
        return []
    return [e for e in joined["ephemeral"]["events"] if e["type"] == kind]


async def test_typing_in_sync_wakes_long_poll(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice, bob, room, alice_id, _ = await two_in_room(c, "ty")
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        since = s["next_batch"]

        async def start_typing() -> None:
            await asyncio.sleep(0.3)
            status, _ = await c.call(
                "PUT",
                f"{V3}/rooms/{room}/typing/{quote(alice_id)}",
                {"typing": True, "timeout": 30000},
                token=alice,
            )
            assert status == 200

        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(start_typing())
            poll = tg.create_task(
                c.call("GET", f"{V3}/sync?since={since}&timeout=20000", token=bob)
            )
        status, s = poll.result()
        assert status == 200
        assert time.monotonic() - started < 15, "the long poll was not woken"
        assert _ephemeral(s, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": [alice_id]}}
        ]
        since = s["next_batch"]

        status, _ = await c.call(
            "PUT", f"{V3}/rooms/{room}/typing/{quote(alice_id)}", {"typing": False}, token=alice
        )
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync?since={since}&timeout=5000", token=bob)
        assert _ephemeral(s, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": []}}
        ]
        # An initial sync says so too: a client that starts over learns that the typing
        # it may remember from before has stopped.
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        assert _ephemeral(s, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": []}}
        ]

        # Bad requests: another user's typing, a missing flag, a room not joined (typing.yaml
        # lists no error responses, so these bodies are checked here, not by the validator).
        status, body = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/typing/{quote(alice_id)}",
            {"typing": True},
            token=bob,
            validate=False,
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await c.call(
            "PUT", f"{V3}/rooms/{room}/typing/{quote(alice_id)}", {}, token=alice, validate=False
        )
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
        status, body = await c.call(
            "PUT",
            f"{V3}/rooms/!nowhere:localhost/typing/{quote(alice_id)}",
            {"typing": True},
            token=alice,
            validate=False,
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_receipts_public_private_threaded_and_read_markers(
    server: ServerProcess,
) -> None:
    async with SpecClient(server.base_url) as c:
        alice, bob, room, alice_id, bob_id = await two_in_room(c, "rc")
        status, sent = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "hello"},
            token=alice,
        )
        event_id = sent["event_id"]
        status, s = await c.call("GET", f"{V3}/sync", token=alice)
        alice_since = s["next_batch"]
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        bob_since = s["next_batch"]

        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/{event_id}", {}, token=bob
        )
        assert status == 200
        status, _ = await c.call(
            "POST",
            f"{V3}/rooms/{room}/receipt/m.read/{event_id}",
            {"thread_id": "main"},
            token=alice,
        )
        assert status == 200
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read.private/{event_id}", {}, token=bob
        )
        assert status == 200

        # Alice sees Bob's public receipt and her threaded one, not Bob's private one.
        status, s = await c.call("GET", f"{V3}/sync?since={alice_since}", token=alice)
        [receipt] = _ephemeral(s, room, "m.receipt")
        by_type = receipt["content"][event_id]
        assert set(by_type) == {"m.read"}
        assert set(by_type["m.read"]) == {alice_id, bob_id}
        assert by_type["m.read"][alice_id]["thread_id"] == "main"
        assert "thread_id" not in by_type["m.read"][bob_id]
        # Bob sees his private receipt too.
        status, s = await c.call("GET", f"{V3}/sync?since={bob_since}", token=bob)
        [receipt] = _ephemeral(s, room, "m.receipt")
        assert bob_id in receipt["content"][event_id]["m.read.private"]
        # An initial sync has the latest receipts as well.
        status, s = await c.call("GET", f"{V3}/sync", token=alice)
        [receipt] = _ephemeral(s, room, "m.receipt")
        assert set(receipt["content"][event_id]["m.read"]) == {alice_id, bob_id}

        # Read markers: m.fully_read is room account data, m.read a receipt.
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        since = s["next_batch"]
        status, _ = await c.call(
            "POST",
            f"{V3}/rooms/{room}/read_markers",
            {"m.fully_read": event_id, "m.read": event_id},
            token=bob,
        )
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync?since={since}", token=bob)
        joined = s["rooms"]["join"][room]
        assert joined["account_data"]["events"] == [
            {"type": "m.fully_read", "content": {"event_id": event_id}}
        ]
        status, body = await c.call(
            "GET",
            f"{V3}/user/{quote(bob_id)}/rooms/{room}/account_data/m.fully_read",
            token=bob,
        )
        assert (status, body) == (200, {"event_id": event_id})

        # Bad input: unknown receipt type, unknown event, bad thread ID (the spec lists no
        # 404 for these endpoints: those bodies are checked here, not by the validator).
        status, body = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.nope/{event_id}", {}, token=bob
        )
        assert status == 400
        status, body = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/$missing", {}, token=bob, validate=False
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call(
            "POST",
            f"{V3}/rooms/{room}/receipt/m.read/{event_id}",
            {"thread_id": "bogus"},
            token=bob,
        )
        assert status == 400
        for thread_id in ("", 7, "$not-its-thread"):
            status, body = await c.call(
                "POST",
                f"{V3}/rooms/{room}/receipt/m.read/{event_id}",
                {"thread_id": thread_id},
                token=bob,
            )
            assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), thread_id
        status, body = await c.call(
            "POST",
            f"{V3}/rooms/{room}/read_markers",
            {"m.fully_read": "$missing"},
            token=bob,
            validate=False,
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_presence(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice, bob, _room, alice_id, _bob_id = await two_in_room(c, "pr")
        carol = (await c.register("pr_carol"))["access_token"]
        status, s = await c.call("GET", f"{V3}/sync?set_presence=offline", token=bob)
        since = s["next_batch"]
        status, _ = await c.call(
            "PUT",
            f"{V3}/presence/{quote(alice_id)}/status",
            {"presence": "unavailable", "status_msg": "lunch"},
            token=alice,
        )
        assert status == 200
        status, body = await c.call("GET", f"{V3}/presence/{quote(alice_id)}/status", token=bob)
        assert status == 200
        assert body["presence"] == "unavailable" and body["status_msg"] == "lunch"
        # Carol shares no room with Alice.
        status, body = await c.call("GET", f"{V3}/presence/{quote(alice_id)}/status", token=carol)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await c.call(
            "PUT",
            f"{V3}/presence/{quote(alice_id)}/status",
            {"presence": "online"},
            token=bob,
            validate=False,
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await c.call(
            "PUT", f"{V3}/presence/{quote(alice_id)}/status", {"presence": "away"}, token=alice
        )
        assert status == 400

        status, s = await c.call(
            "GET", f"{V3}/sync?since={since}&timeout=5000&set_presence=offline", token=bob
        )
        alice_events = [e for e in s["presence"]["events"] if e["sender"] == alice_id]
        assert alice_events and alice_events[-1]["content"]["presence"] == "unavailable"
        assert alice_events[-1]["content"]["status_msg"] == "lunch"
        # Syncing sets presence: Alice's sync (default set_presence=online) keeps her
        # status message.
        status, _ = await c.call("GET", f"{V3}/sync", token=alice)
        status, body = await c.call("GET", f"{V3}/presence/{quote(alice_id)}/status", token=bob)
        assert body["presence"] == "online" and body["status_msg"] == "lunch"
        assert body["currently_active"] is True
        # set_presence=offline only means "do not mark me online": it changes nothing, and
        # unavailable marks the user idle.
        status, _ = await c.call("GET", f"{V3}/sync?set_presence=offline", token=alice)
        status, body = await c.call("GET", f"{V3}/presence/{quote(alice_id)}/status", token=bob)
        assert body["presence"] == "online"
        status, _ = await c.call("GET", f"{V3}/sync?set_presence=unavailable", token=alice)
        status, body = await c.call("GET", f"{V3}/presence/{quote(alice_id)}/status", token=bob)
        assert body["presence"] == "unavailable" and body["status_msg"] == "lunch"


async def test_typing_lapse_wakes_long_poll(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice, bob, room, alice_id, _ = await two_in_room(c, "tl")
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/typing/{quote(alice_id)}",
            {"typing": True, "timeout": 500},
            token=alice,
        )
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        assert _ephemeral(s, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": [alice_id]}}
        ]
        # No one stops typing: the entry lapses after 0.5 s and the long poll hears it.
        started = time.monotonic()
        status, s = await c.call(
            "GET", f"{V3}/sync?since={s['next_batch']}&timeout=20000", token=bob
        )
        assert time.monotonic() - started < 15, "the lapse did not wake the long poll"
        assert _ephemeral(s, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": []}}
        ]


async def test_newly_joined_room_gets_current_typing_and_receipts(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("nj_alice"))["access_token"]
        bob = (await c.register("nj_bob"))["access_token"]
        alice_id = "@nj_alice:localhost"
        room = await create_room(c, alice)
        event_id = await send(c, alice, room, "n1", {"msgtype": "m.text", "body": "before bob"})
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/{event_id}", {}, token=alice
        )
        assert status == 200
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/typing/{quote(alice_id)}",
            {"typing": True, "timeout": 60000},
            token=alice,
        )
        assert status == 200
        # Bob's token predates his join, and everything Alice did.
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        assert status == 200
        since = s["next_batch"]
        await join(c, bob, room)
        status, s = await c.call("GET", f"{V3}/sync?since={since}", token=bob)
        assert status == 200
        assert _ephemeral(s, room, "m.typing") == [
            {"type": "m.typing", "content": {"user_ids": [alice_id]}}
        ]
        [receipt] = _ephemeral(s, room, "m.receipt")
        assert alice_id in receipt["content"][event_id]["m.read"]
