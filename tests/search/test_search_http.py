"""`POST /search` over HTTP on SQLite (FTS5) and PostgreSQL (tsvector): the same results
for rank and recent ordering, room filters, keys, context with profiles, groups,
pagination, membership, redaction, and bad input."""

from __future__ import annotations

from typing import Any

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def test_search_room_events(backend_server: ServerProcess) -> None:
    async with SpecClient(backend_server.base_url) as c:
        alice = (await c.register("se_alice"))["access_token"]
        bob = (await c.register("se_bob"))["access_token"]
        eve = (await c.register("se_eve"))["access_token"]
        room1 = await create_room(c, alice, {"preset": "public_chat", "name": "Den of foxes"})
        room2 = await create_room(c, alice, {"preset": "public_chat"})
        await join(c, bob, room1)
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room1}/state/m.room.member/@se_bob:localhost",
            {"membership": "join", "displayname": "Bobby"},
            token=bob,
        )
        assert status == 200
        n = 0

        async def say(token: str, room: str, text: str) -> str:
            nonlocal n
            n += 1
            status, body = await c.call(
                "PUT",
                f"{V3}/rooms/{room}/send/m.room.message/s{n}",
                {"msgtype": "m.text", "body": text},
                token=token,
            )
            assert status == 200, body
            event_id: str = body["event_id"]
            return event_id

        before = await say(alice, room1, "good morning")
        fox3 = await say(bob, room1, "fox fox fox")
        long = await say(alice, room1, "the quick brown fox jumps over the lazy dog this morning")
        after = await say(bob, room1, "nothing to see here")
        other = await say(alice, room2, "a fox in another room")
        gone = await say(alice, room1, "a secret fox")

        async def search(token: str, criteria: dict[str, Any], batch: str = "") -> Any:
            url = f"{V3}/search" + (f"?next_batch={batch}" if batch else "")
            status, body = await c.call(
                "POST", url, {"search_categories": {"room_events": criteria}}, token=token
            )
            assert status == 200, body
            return body["search_categories"]["room_events"]

        status, _ = await c.call("PUT", f"{V3}/rooms/{room1}/redact/{gone}/x1", {}, token=alice)
        assert status == 200

        found = await search(alice, {"search_term": "FOX", "order_by": "recent"})
        assert [r["result"]["event_id"] for r in found["results"]] == [other, long, fox3]
        assert found["count"] == 3
        assert found["highlights"] == ["fox"]
        assert "next_batch" not in found

        ranked = await search(alice, {"search_term": "fox"})
        ids = [r["result"]["event_id"] for r in ranked["results"]]
        assert ids[0] == fox3 and sorted(ids) == sorted([other, long, fox3])
        ranks = [r["rank"] for r in ranked["results"]]
        assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1]

        # All words must match.
        both = await search(alice, {"search_term": "fox morning", "order_by": "recent"})
        assert [r["result"]["event_id"] for r in both["results"]] == [long]

        only2 = await search(alice, {"search_term": "fox", "filter": {"rooms": [room2]}})
        assert [r["result"]["event_id"] for r in only2["results"]] == [other]
        bobs_only = await search(
            alice, {"search_term": "fox", "filter": {"senders": ["@se_bob:localhost"]}}
        )
        assert [r["result"]["event_id"] for r in bobs_only["results"]] == [fox3]
        not_bob = await search(
            alice,
            {
                "search_term": "fox",
                "order_by": "recent",
                "filter": {"not_senders": ["@se_bob:localhost"]},
            },
        )
        assert [r["result"]["event_id"] for r in not_bob["results"]] == [other, long]
        assert not_bob["count"] == 2
        names = await search(alice, {"search_term": "den", "keys": ["content.name"]})
        assert [r["result"]["type"] for r in names["results"]] == ["m.room.name"]
        none = await search(alice, {"search_term": "den", "keys": ["content.body"]})
        assert none["results"] == [] and none["count"] == 0

        # Pagination.
        page1 = await search(
            alice, {"search_term": "fox", "order_by": "recent", "filter": {"limit": 2}}
        )
        assert [r["result"]["event_id"] for r in page1["results"]] == [other, long]
        page2 = await search(
            alice,
            {"search_term": "fox", "order_by": "recent", "filter": {"limit": 2}},
            page1["next_batch"],
        )
        assert [r["result"]["event_id"] for r in page2["results"]] == [fox3]
        assert "next_batch" not in page2

        # Context with profiles, and groups.
        ctx = await search(
            alice,
            {
                "search_term": "fox",
                "order_by": "recent",
                "filter": {"rooms": [room1]},
                "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": True},
                "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
            },
        )
        first = ctx["results"][0]
        assert first["result"]["event_id"] == long
        assert [e["event_id"] for e in first["context"]["events_before"]] == [fox3]
        assert [e["event_id"] for e in first["context"]["events_after"]] == [after]
        assert first["context"]["profile_info"]["@se_bob:localhost"]["displayname"] == "Bobby"
        second = ctx["results"][1]
        assert [e["event_id"] for e in second["context"]["events_before"]] == [before]
        groups = ctx["groups"]
        assert groups["room_id"][room1]["results"] == [long, fox3]
        assert set(groups["sender"]) == {"@se_alice:localhost", "@se_bob:localhost"}

        # Bob is not in room2; Eve is in no room.
        bobs = await search(bob, {"search_term": "fox", "order_by": "recent"})
        assert [r["result"]["event_id"] for r in bobs["results"]] == [long, fox3]
        eves = await search(eve, {"search_term": "fox"})
        assert eves["results"] == [] and eves["count"] == 0

        # Bad input.
        for body, code in (
            ({"search_categories": {}}, None),
            ({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM"),
            ({"search_categories": {"room_events": []}}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": {"keys": ["content.body"]}}}, "M_MISSING_PARAM"),
            (
                {"search_categories": {"room_events": {"search_term": "x", "order_by": "odd"}}},
                "M_INVALID_PARAM",
            ),
            (
                {"search_categories": {"room_events": {"search_term": "x", "keys": ["sender"]}}},
                "M_INVALID_PARAM",
            ),
            ({}, "M_MISSING_PARAM"),
        ):
            status, answer = await c.call("POST", f"{V3}/search", body, token=alice)
            if code is None:
                assert status == 200
            else:
                assert (status, answer["errcode"]) == (400, code), body
        status, answer = await c.call("POST", f"{V3}/search", body=b"{nope", token=alice)
        assert (status, answer["errcode"]) == (400, "M_NOT_JSON")
        status, answer = await c.call(
            "POST", f"{V3}/search?next_batch=zz", {"search_categories": {}}, token=alice
        )
        assert (status, answer) == (200, {"search_categories": {}})
        status, answer = await c.call(
            "POST",
            f"{V3}/search?next_batch=zz",
            {"search_categories": {"room_events": {"search_term": "fox"}}},
            token=alice,
        )
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
