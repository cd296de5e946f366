"""Long polls over HTTP: what happens between two polls of a client is never missed (the
next poll from the last answer's token skips its first look only while nothing happened
for the user), and polls woken together by one message, whose reads share one
transaction, each get their own user's answer."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
#: The longest long poll the server allows: a poll that wrongly skips news waits this long.
LONG_POLL_MS = 300_000
#: How long the test waits for a poll that must answer at once.
GUARD_S = 60


async def _poll(c: SpecClient, token: str, since: str, timeout_ms: int = LONG_POLL_MS) -> Any:
    path = f"{V3}/sync?since={since}&timeout={timeout_ms}"
    status, body = await asyncio.wait_for(c.call("GET", path, token=token), GUARD_S)
    assert status == 200, body
    return body


async def _poll_until(c: SpecClient, token: str, since: str, room: str) -> Any:
    """Long-polls until an answer has a timeline event in `room` (answers before it may
    carry other news, such as the presence of users who just came online)."""
    for _ in range(20):
        body = await _poll(c, token, since)
        if _timeline(body, room):
            return body
        since = body["next_batch"]
    raise AssertionError("no timeline event after 20 polls")


def _timeline(body: Any, room: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (
        body["rooms"]["join"].get(room, {}).get("timeline", {}).get("events", [])
    )
    return events


async def test_news_between_polls_answers_the_next_poll_at_once(
    shared_server: ServerProcess,
) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("wk_alice"))["access_token"]
        bob = (await c.register("wk_bob"))["access_token"]
        room = await create_room(c, alice)
        await join(c, bob, room)
        status, first = await c.call("GET", f"{V3}/sync?timeout=0", token=bob)
        assert status == 200
        since = first["next_batch"]

        # A poll that waits, then is woken by a message.
        poll = asyncio.create_task(_poll(c, bob, since))
        await asyncio.sleep(0.2)
        m1 = await send(c, alice, room, "w1", {"msgtype": "m.text", "body": "one"})
        body = await poll
        assert m1 in [e["event_id"] for e in _timeline(body, room)]
        since = body["next_batch"]

        # An empty answer (timeout 0), so the next poll from its token could skip a look.
        body = await _poll(c, bob, since, timeout_ms=0)
        assert _timeline(body, room) == []
        since = body["next_batch"]

        # Between Bob's polls: a message, then account data, then a receipt. Each poll
        # from the previous answer's token must answer at once with the news.
        m2 = await send(c, alice, room, "w2", {"msgtype": "m.text", "body": "two"})
        body = await _poll(c, bob, since)
        assert [e["event_id"] for e in _timeline(body, room)] == [m2]
        since = body["next_batch"]

        status, _ = await c.call(
            "PUT", f"{V3}/user/@wk_bob:localhost/account_data/org.example.wk", {"n": 1}, token=bob
        )
        assert status == 200
        body = await _poll(c, bob, since)
        assert {"type": "org.example.wk", "content": {"n": 1}} in body["account_data"]["events"]
        since = body["next_batch"]

        status, _ = await c.call("POST", f"{V3}/rooms/{room}/receipt/m.read/{m2}", {}, token=alice)
        assert status == 200
        body = await _poll(c, bob, since)
        ephemeral = body["rooms"]["join"][room]["ephemeral"]["events"]
        receipts = [e for e in ephemeral if e["type"] == "m.receipt"]
        assert receipts and m2 in receipts[0]["content"]
        since = body["next_batch"]

        # Typing by Alice, while Bob's poll is waiting.
        poll = asyncio.create_task(_poll(c, bob, since))
        await asyncio.sleep(0.2)
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/typing/@wk_alice:localhost",
            {"typing": True, "timeout": 10_000},
            token=alice,
        )
        assert status == 200
        body = await poll
        typing = [
            e for e in body["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.typing"
        ]
        assert typing == [{"type": "m.typing", "content": {"user_ids": ["@wk_alice:localhost"]}}]


async def test_polls_woken_together_get_their_own_answers(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("wt_alice"))["access_token"]
        room = await create_room(c, alice)
        names = [f"wt_u{i}" for i in range(8)]
        tokens = [(await c.register(n))["access_token"] for n in names]
        for token in tokens:
            await join(c, token, room)
        everyone = [alice, *tokens]
        sinces = []
        for token in everyone:
            status, body = await c.call("GET", f"{V3}/sync?timeout=0", token=token)
            assert status == 200
            sinces.append(body["next_batch"])

        polls = [
            asyncio.create_task(_poll_until(c, t, s, room))
            for t, s in zip(everyone, sinces, strict=True)
        ]
        await asyncio.sleep(0.5)
        sent = await send(c, alice, room, "wt-txn", {"msgtype": "m.text", "body": "hello all"})
        answers = await asyncio.gather(*polls)

        for token, body in zip(everyone, answers, strict=True):
            events = _timeline(body, room)
            assert [e["event_id"] for e in events] == [sent]
            counts = body["rooms"]["join"][room]["unread_notifications"]
            if token == alice:
                # Only the sender's own device sees its transaction ID; nothing unread.
                assert events[0]["unsigned"]["transaction_id"] == "wt-txn"
                assert counts["notification_count"] == 0
            else:
                assert "transaction_id" not in events[0]["unsigned"]
                assert counts["notification_count"] == 1
        # Each answer's token is its own user's: a receipt by one user resets only theirs.
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/{sent}", {}, token=tokens[0]
        )
        assert status == 200
        reader, other = await asyncio.gather(
            _poll(c, tokens[0], answers[1]["next_batch"], timeout_ms=0),
            _poll(c, tokens[1], answers[2]["next_batch"], timeout_ms=0),
        )
        assert reader["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 0
        assert other["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 1
