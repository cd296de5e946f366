"""Issue #5: "redactions applied to every served copy of an event". One room, three
redacted events (a plain message, a thread reply, an edit), then every endpoint that
serves events is read as the other member: none may still carry the redacted text, and
each copy of the redacted message is the redacted form with `redacted_because`.

The redacted text is a word used nowhere else, so "absent from the whole answer" is an
exact check that covers bundled aggregations (thread summaries, edits), context, search
results and notifications alike.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join
from tests.support.server import ServerProcess

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
SECRET = "zanzibarquux"


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


def q(value: str) -> str:
    return quote(value, safe="")


async def test_every_served_copy_is_redacted(backend_server: ServerProcess) -> None:
    async with SpecClient(backend_server.base_url) as c:
        alice = (await c.register("rx_alice"))["access_token"]
        bob = (await c.register("rx_bob"))["access_token"]
        room = await create_room(c, alice, {"preset": "public_chat"})
        await join(c, bob, room)
        n = 0

        async def send(content: dict[str, Any]) -> str:
            nonlocal n
            n += 1
            status, body = await c.call(
                "PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/rx{n}", content, token=alice
            )
            assert status == 200, body
            event_id: str = body["event_id"]
            return event_id

        before = await send(text("before"))
        message = await send(text(f"the {SECRET} plan", extra_field=SECRET))
        after = await send(text("after"))
        root = await send(text("thread root"))
        reply = await send(
            text(
                f"{SECRET} in a thread",
                **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}},
            )
        )
        original = await send(text("original words"))
        edit = await send(
            text(
                f"* {SECRET} edit",
                **{
                    "m.new_content": text(f"{SECRET} edit"),
                    "m.relates_to": {"rel_type": "m.replace", "event_id": original},
                },
            )
        )
        # Bob is notified of the message (a two-member room) before it is redacted.
        status, body = await c.call("GET", f"{V3}/notifications", token=bob)
        assert status == 200, body
        assert SECRET in orjson.dumps(body).decode(), "the test needs a notification to check"

        for n_redaction, target in enumerate((message, reply, edit)):
            status, body = await c.call(
                "PUT", f"{V3}/rooms/{q(room)}/redact/{q(target)}/rr{n_redaction}", {}, token=alice
            )
            assert status == 200, body

        def check_redacted(event: dict[str, Any], where: str) -> None:
            assert event["event_id"] == message
            assert event["content"] == {}, where
            because = event["unsigned"]["redacted_because"]
            assert (because["type"], because["redacts"]) == ("m.room.redaction", message), where

        answers: dict[str, Any] = {}

        async def get(name: str, method: str, path: str, body: Any = None) -> Any:
            status, answer = await c.call(method, path, body, token=bob)
            assert status == 200, (name, answer)
            answers[name] = answer
            return answer

        event = await get("event", "GET", f"{V3}/rooms/{q(room)}/event/{q(message)}")
        check_redacted(event, "/event")

        page = await get("messages", "GET", f"{V3}/rooms/{q(room)}/messages?dir=b&limit=50")
        served = {e["event_id"]: e for e in page["chunk"]}
        check_redacted(served[message], "/messages")

        ctx = await get("context", "GET", f"{V3}/rooms/{q(room)}/context/{q(message)}?limit=2")
        check_redacted(ctx["event"], "/context")
        assert [e["event_id"] for e in ctx["events_before"]] == [before]
        assert [e["event_id"] for e in ctx["events_after"]] == [after]
        ctx2 = await get("context-before", "GET", f"{V3}/rooms/{q(room)}/context/{q(before)}")
        check_redacted(
            next(e for e in ctx2["events_after"] if e["event_id"] == message), "/context after"
        )

        filt = q(orjson.dumps({"room": {"timeline": {"limit": 50}}}).decode())
        sync = await get("sync", "GET", f"{V3}/sync?filter={filt}")
        timeline = sync["rooms"]["join"][room]["timeline"]["events"]
        check_redacted(next(e for e in timeline if e["event_id"] == message), "/sync")

        await get("initialSync", "GET", f"{V3}/rooms/{q(room)}/initialSync")

        edited = await get("original", "GET", f"{V3}/rooms/{q(room)}/event/{q(original)}")
        assert edited["content"]["body"] == "original words"
        assert "m.replace" not in edited["unsigned"].get("m.relations", {})

        relations = await get("relations", "GET", f"{V1}/rooms/{q(room)}/relations/{q(root)}")
        assert reply not in [e["event_id"] for e in relations["chunk"]]
        await get("edits", "GET", f"{V1}/rooms/{q(room)}/relations/{q(original)}/m.replace")
        await get("threads", "GET", f"{V1}/rooms/{q(room)}/threads")
        await get("thread root", "GET", f"{V3}/rooms/{q(room)}/event/{q(root)}")

        found = await get(
            "search",
            "POST",
            f"{V3}/search",
            {"search_categories": {"room_events": {"search_term": SECRET}}},
        )
        assert found["search_categories"]["room_events"]["results"] == []
        # The highlights repeat the search term itself, not the event.
        found["search_categories"]["room_events"].pop("highlights", None)

        await get("notifications", "GET", f"{V3}/notifications")

        for name, answer in answers.items():
            assert SECRET not in orjson.dumps(answer).decode(), f"{name} still carries it"
