"""Unread notification counts in `/sync` and `/notifications`, against a real server:
a plain message in a two-person room notifies, a mention highlights, a read receipt
resets the count, threads are counted apart when the filter asks."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def _counts(c: SpecClient, token: str, room: str, query: str = "") -> dict[str, Any]:
    status, s = await c.call("GET", f"{V3}/sync{query}", token=token)
    assert status == 200
    joined: dict[str, Any] = s["rooms"]["join"][room]
    return joined


async def test_notify_highlight_and_receipt_reset(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("pc_alice"))["access_token"]
        bob = (await c.register("pc_bob"))["access_token"]
        room = await create_room(c, alice)
        await join(c, bob, room)

        # Bob's own messages never count for Bob.
        await send(c, bob, room, "b1", {"msgtype": "m.text", "body": "hi all"})
        joined = await _counts(c, bob, room)
        assert joined["unread_notifications"] == {"highlight_count": 0, "notification_count": 0}

        # A plain message in a one-to-one room notifies (.m.rule.room_one_to_one).
        await send(c, alice, room, "a1", {"msgtype": "m.text", "body": "hello"})
        joined = await _counts(c, bob, room)
        assert joined["unread_notifications"] == {"highlight_count": 0, "notification_count": 1}

        # A mention highlights (.m.rule.is_user_mention).
        mention = await send(
            c,
            alice,
            room,
            "a2",
            {
                "msgtype": "m.text",
                "body": "pc_bob: look",
                "m.mentions": {"user_ids": ["@pc_bob:localhost"]},
            },
        )
        joined = await _counts(c, bob, room)
        assert joined["unread_notifications"] == {"highlight_count": 1, "notification_count": 2}

        # /notifications lists both, newest first; only=highlight just the mention.
        status, body = await c.call("GET", f"{V3}/notifications", token=bob)
        assert status == 200
        assert body["notifications"][0]["event"]["event_id"] == mention
        assert len(body["notifications"]) == 2
        assert all(n["read"] is False for n in body["notifications"])
        status, body = await c.call("GET", f"{V3}/notifications?only=highlight", token=bob)
        assert [n["event"]["event_id"] for n in body["notifications"]] == [mention]
        status, body = await c.call("GET", f"{V3}/notifications?limit=1", token=bob)
        assert len(body["notifications"]) == 1 and "next_token" in body
        status, body = await c.call(
            "GET", f"{V3}/notifications?from={body['next_token']}", token=bob
        )
        assert (
            len(body["notifications"]) == 1
            and body["notifications"][0]["event"]["event_id"] != mention
        )
        status, body = await c.call("GET", f"{V3}/notifications?limit=x", token=bob)
        assert status == 400

        # A read receipt on the latest event resets the counts.
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/{mention}", {}, token=bob
        )
        assert status == 200
        joined = await _counts(c, bob, room)
        assert joined["unread_notifications"] == {"highlight_count": 0, "notification_count": 0}
        status, body = await c.call("GET", f"{V3}/notifications", token=bob)
        assert all(n["read"] is True for n in body["notifications"])

        # Disabling the one-to-one and message rules stops plain messages from notifying.
        for rule_id in (".m.rule.room_one_to_one", ".m.rule.message"):
            status, _ = await c.call(
                "PUT",
                f"{V3}/pushrules/global/underride/{rule_id}/enabled",
                {"enabled": False},
                token=bob,
            )
            assert status == 200
        await send(c, alice, room, "a3", {"msgtype": "m.text", "body": "quiet"})
        joined = await _counts(c, bob, room)
        assert joined["unread_notifications"]["notification_count"] == 0


async def test_thread_counts(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("pt_alice"))["access_token"]
        bob = (await c.register("pt_bob"))["access_token"]
        room = await create_room(c, alice)
        await join(c, bob, room)
        root = await send(c, alice, room, "r", {"msgtype": "m.text", "body": "root"})
        reply = {
            "msgtype": "m.text",
            "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        }
        in_thread = await send(c, alice, room, "t1", reply)
        await send(c, alice, room, "t2", reply)
        flt = quote(orjson.dumps({"room": {"timeline": {"unread_thread_notifications": True}}}))
        joined = await _counts(c, bob, room, f"?filter={flt}")
        assert joined["unread_notifications"]["notification_count"] == 1
        assert joined["unread_thread_notifications"] == {
            root: {"highlight_count": 0, "notification_count": 2}
        }
        # Without the filter option, threaded messages count in the room's total.
        joined = await _counts(c, bob, room)
        assert joined["unread_notifications"]["notification_count"] == 3
        assert "unread_thread_notifications" not in joined

        # A receipt in the main timeline cannot name a threaded event.
        status, body = await c.call(
            "POST",
            f"{V3}/rooms/{room}/receipt/m.read/{in_thread}",
            {"thread_id": "main"},
            token=bob,
        )
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
        # A threaded receipt resets that thread only.
        status, _ = await c.call(
            "POST",
            f"{V3}/rooms/{room}/receipt/m.read/{in_thread}",
            {"thread_id": root},
            token=bob,
        )
        assert status == 200
        joined = await _counts(c, bob, room, f"?filter={flt}")
        assert joined["unread_notifications"]["notification_count"] == 1
        assert joined["unread_thread_notifications"] == {
            root: {"highlight_count": 0, "notification_count": 1}
        }
