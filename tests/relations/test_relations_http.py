"""Relations over HTTP on both backends: thread replies and `/threads`, edits bundled in
served events, reactions listed by `/relations`, a redacted relation disappearing,
`/timestamp_to_event` both ways, the space hierarchy, reports, and bad input."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from myelin.clientapi.report import reports
from myelin.storage import open_database
from tests.relations.conftest import DATABASES
from tests.support.client import SpecClient
from tests.support.rooms import create_room, join
from tests.support.server import ServerProcess

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
SERVER = "localhost"


class Room:
    def __init__(self, c: SpecClient, room_id: str) -> None:
        self.c = c
        self.id = room_id
        self.n = 0

    async def send(self, token: str, content: dict[str, Any], kind: str = "m.room.message") -> str:
        self.n += 1
        status, body = await self.c.call(
            "PUT", f"{V3}/rooms/{self.id}/send/{kind}/t{self.n}", content, token=token
        )
        assert status == 200, body
        event_id: str = body["event_id"]
        return event_id


async def setup(c: SpecClient, prefix: str) -> tuple[str, str, str, Room]:
    alice = (await c.register(f"{prefix}_alice"))["access_token"]
    bob = (await c.register(f"{prefix}_bob"))["access_token"]
    eve = (await c.register(f"{prefix}_eve"))["access_token"]
    room = Room(c, await create_room(c, alice, {"preset": "public_chat"}))
    await join(c, bob, room.id)
    return alice, bob, eve, room


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


async def test_threads_edits_reactions(backend_server: ServerProcess) -> None:
    async with SpecClient(backend_server.base_url) as c:
        alice, bob, eve, room = await setup(c, "rel")
        root = await room.send(alice, text("root"))
        thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
        reply1 = await room.send(bob, text("reply one", **thread))
        reply2 = await room.send(bob, text("reply two", **thread))
        nested = await room.send(
            alice,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": reply1, "key": "x"}},
            "m.reaction",
        )
        other_root = await room.send(alice, text("quiet root"))
        edit = await room.send(
            alice,
            text(
                "* root edited",
                **{
                    "m.new_content": text("root edited"),
                    "m.relates_to": {"rel_type": "m.replace", "event_id": other_root},
                },
            ),
        )
        # An edit by someone else is no edit: it is never bundled.
        await room.send(
            bob,
            text(
                "* hijack",
                **{
                    "m.new_content": text("hijack"),
                    "m.relates_to": {"rel_type": "m.replace", "event_id": other_root},
                },
            ),
        )
        reaction = await room.send(
            bob,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": other_root, "key": "👍"}},
            "m.reaction",
        )
        reference = await room.send(
            bob,
            text("see above", **{"m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
        )
        third = await room.send(alice, text("third root"))
        third_reply = await room.send(
            bob, text("on third", **{"m.relates_to": {"rel_type": "m.thread", "event_id": third}})
        )
        # An edit with another event type is no valid edit either.
        await room.send(
            alice,
            {
                "m.new_content": {"x": 1},
                "m.relates_to": {"rel_type": "m.replace", "event_id": other_root},
            },
            "org.example.other",
        )

        # A relation from another room names our root but is not ours to show.
        elsewhere = Room(c, await create_room(c, eve, {}))
        await elsewhere.send(eve, text("sneaky", **thread))

        # /relations: newest first, filtered by type and event type, paginated.
        status, body = await c.call("GET", f"{V1}/rooms/{room.id}/relations/{root}", token=alice)
        assert status == 200, body
        assert [e["event_id"] for e in body["chunk"]] == [reference, reply2, reply1]
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/relations/{root}/m.thread?limit=1", token=alice
        )
        assert [e["event_id"] for e in body["chunk"]] == [reply2]
        status, body = await c.call(
            "GET",
            f"{V1}/rooms/{room.id}/relations/{root}/m.thread?limit=1&from={body['next_batch']}",
            token=alice,
        )
        assert status == 200, body
        assert [e["event_id"] for e in body["chunk"]] == [reply1]
        assert "next_batch" not in body
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/relations/{root}/m.thread?dir=f", token=alice
        )
        assert [e["event_id"] for e in body["chunk"]] == [reply1, reply2]
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/relations/{root}?recurse=true", token=alice
        )
        assert [e["event_id"] for e in body["chunk"]] == [reference, nested, reply2, reply1]
        assert body["recursion_depth"] == 2  # the reaction to a reply is two levels down
        status, body = await c.call(
            "GET",
            f"{V1}/rooms/{room.id}/relations/{other_root}/m.annotation/m.reaction",
            token=alice,
        )
        assert [e["event_id"] for e in body["chunk"]] == [reaction]
        assert body["chunk"][0]["content"]["m.relates_to"]["key"] == "👍"

        # Bundled aggregations in served events: the thread summary on the root, the
        # latest edit by the original sender, references; annotations are not bundled.
        status, body = await c.call(
            "GET", f"{V3}/rooms/{room.id}/messages?dir=b&limit=50", token=bob
        )
        assert status == 200
        served = {e["event_id"]: e for e in body["chunk"]}
        relations = served[root]["unsigned"]["m.relations"]
        assert relations["m.thread"]["count"] == 2
        assert relations["m.thread"]["latest_event"]["event_id"] == reply2
        assert relations["m.thread"]["current_user_participated"] is True
        assert relations["m.reference"] == {"chunk": [{"event_id": reference}]}
        edited = served[other_root]["unsigned"]["m.relations"]
        assert edited["m.replace"]["event_id"] == edit
        assert "m.annotation" not in edited and "m.thread" not in edited
        assert served[other_root]["content"]["body"] == "quiet root"  # content left intact
        status, body = await c.call(
            "GET", f"{V3}/rooms/{room.id}/context/{root}?limit=2", token=alice
        )
        assert status == 200
        assert body["event"]["unsigned"]["m.relations"]["m.thread"]["count"] == 2
        status, body = await c.call("GET", f"{V3}/sync", token=alice)
        timeline = body["rooms"]["join"][room.id]["timeline"]["events"]
        in_sync = {e["event_id"]: e for e in timeline}
        assert in_sync[other_root]["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit

        # /threads: all, and only those the user took part in.
        status, body = await c.call("GET", f"{V1}/rooms/{room.id}/threads", token=alice)
        assert status == 200, body
        assert [e["event_id"] for e in body["chunk"]] == [third, root]
        latest = body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"]
        assert latest["event_id"] == third_reply
        status, body = await c.call("GET", f"{V1}/rooms/{room.id}/threads?limit=1", token=alice)
        assert [e["event_id"] for e in body["chunk"]] == [third]
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/threads?limit=1&from={body['next_batch']}", token=alice
        )
        assert [e["event_id"] for e in body["chunk"]] == [root]
        assert "next_batch" not in body
        carol = (await c.register("rel_carol"))["access_token"]
        status, _ = await c.call("POST", f"{V3}/join/{quote(room.id)}", {}, token=carol)
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/threads?include=participated", token=carol
        )
        assert status == 200 and body["chunk"] == []
        status, body = await c.call("GET", f"{V1}/rooms/{room.id}/threads", token=carol)
        root_event = body["chunk"][1]
        assert root_event["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] is (
            False
        )

        # Redacting a relation removes it from /relations and the aggregations.
        status, _ = await c.call(
            "PUT", f"{V3}/rooms/{room.id}/redact/{reply2}/r1", {"reason": "oops"}, token=bob
        )
        assert status == 200
        status, _ = await c.call("PUT", f"{V3}/rooms/{room.id}/redact/{edit}/r2", {}, token=alice)
        assert status == 200
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/relations/{root}/m.thread", token=alice
        )
        assert [e["event_id"] for e in body["chunk"]] == [reply1]
        status, body = await c.call(
            "GET", f"{V3}/rooms/{room.id}/messages?dir=b&limit=50", token=bob
        )
        served = {e["event_id"]: e for e in body["chunk"]}
        thread_summary = served[root]["unsigned"]["m.relations"]["m.thread"]
        assert thread_summary["count"] == 1
        assert thread_summary["latest_event"]["event_id"] == reply1
        assert "m.relations" not in served[other_root]["unsigned"]

        # Bad input: unknown event, not a member, bad parameters.
        status, body = await c.call("GET", f"{V1}/rooms/{room.id}/relations/$nope", token=alice)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("GET", f"{V1}/rooms/{room.id}/relations/{root}", token=eve)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("GET", f"{V1}/rooms/{room.id}/threads", token=eve)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/threads?include=mine", token=alice
        )
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
        status, body = await c.call(
            "GET", f"{V1}/rooms/{room.id}/relations/{root}?dir=x", token=alice
        )
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_timestamp_to_event(backend_server: ServerProcess) -> None:
    async with SpecClient(backend_server.base_url) as c:
        alice, _, eve, room = await setup(c, "ts")
        first = await room.send(alice, text("first"))
        status, ev = await c.call("GET", f"{V3}/rooms/{room.id}/event/{first}", token=alice)
        ts = ev["origin_server_ts"]
        url = f"{V1}/rooms/{room.id}/timestamp_to_event"
        status, body = await c.call("GET", f"{url}?ts={ts}&dir=b", token=alice)
        assert status == 200, body
        assert body["origin_server_ts"] <= ts
        status, body = await c.call("GET", f"{url}?ts={ts + 10**9}&dir=b", token=alice)
        assert status == 200 and body["event_id"] == first
        status, body = await c.call("GET", f"{url}?ts=0&dir=f", token=alice)
        assert status == 200 and body["event_id"] != first  # the room's create event
        status, body = await c.call("GET", f"{url}?ts={ts + 10**9}&dir=f", token=alice)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("GET", f"{url}?ts=0&dir=b", token=alice)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("GET", f"{url}?ts=abc&dir=f", token=alice)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
        status, body = await c.call("GET", f"{url}?ts=1", token=alice, validate=False)
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
        status, body = await c.call("GET", f"{url}?ts={ts}&dir=f", token=eve)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")  # not in the room: hidden


async def test_space_hierarchy(backend_server: ServerProcess) -> None:
    async with SpecClient(backend_server.base_url) as c:
        alice = (await c.register("sp_alice"))["access_token"]
        bob = (await c.register("sp_bob"))["access_token"]

        async def create(body: dict[str, Any]) -> str:
            status, answer = await c.call("POST", f"{V3}/createRoom", body, token=alice)
            assert status == 200, answer
            room_id: str = answer["room_id"]
            return room_id

        space = await create(
            {"preset": "public_chat", "name": "Space", "creation_content": {"type": "m.space"}}
        )
        sub = await create(
            {"preset": "public_chat", "name": "Sub", "creation_content": {"type": "m.space"}}
        )
        a = await create({"preset": "public_chat", "name": "A", "topic": "about a"})
        b = await create({"preset": "public_chat", "name": "B"})
        private = await create({"preset": "private_chat", "name": "Secret"})
        deep = await create({"preset": "public_chat", "name": "Deep"})

        async def child(parent: str, room_id: str, **content: Any) -> None:
            status, body = await c.call(
                "PUT",
                f"{V3}/rooms/{parent}/state/m.space.child/{room_id}",
                {"via": ["localhost"], **content},
                token=alice,
            )
            assert status == 200, body

        await child(space, b, order="b")
        await child(space, a, order="a", suggested=True)
        await child(space, sub, order="c")
        await child(space, private, order="d")
        await child(sub, deep)

        url = f"{V1}/rooms/{space}/hierarchy"
        status, body = await c.call("GET", url, token=bob)
        assert status == 200, body
        assert [r["room_id"] for r in body["rooms"]] == [space, a, b, sub, deep]
        top = body["rooms"][0]
        assert top["room_type"] == "m.space" and top["name"] == "Space"
        assert [s["state_key"] for s in top["children_state"]] == [a, b, sub, private]
        assert body["rooms"][1]["topic"] == "about a"
        # Alice is in the private room, so she sees it.
        status, body = await c.call("GET", url, token=alice)
        assert [r["room_id"] for r in body["rooms"]] == [space, a, b, sub, deep, private]

        status, body = await c.call("GET", f"{url}?max_depth=1", token=bob)
        assert [r["room_id"] for r in body["rooms"]] == [space, a, b, sub]
        status, body = await c.call("GET", f"{url}?suggested_only=true", token=bob)
        assert [r["room_id"] for r in body["rooms"]] == [space, a]
        status, body = await c.call("GET", f"{url}?limit=2", token=bob)
        assert [r["room_id"] for r in body["rooms"]] == [space, a]
        status, body = await c.call("GET", f"{url}?limit=2&from={body['next_batch']}", token=bob)
        assert [r["room_id"] for r in body["rooms"]] == [b, sub]
        status, body = await c.call(
            "GET", f"{url}?limit=2&max_depth=1&from={body['next_batch']}", token=bob
        )
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
        status, body = await c.call("GET", f"{V1}/rooms/{private}/hierarchy", token=bob)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_reports(backend_server: ServerProcess) -> None:
    async with SpecClient(backend_server.base_url) as c:
        alice, bob, eve, room = await setup(c, "rep")
        bad = await room.send(bob, text("something rude"))
        status, body = await c.call(
            "POST", f"{V3}/rooms/{room.id}/report/{bad}", {"reason": "rude"}, token=alice
        )
        assert status == 200 and body == {}
        status, body = await c.call(
            "POST", f"{V3}/rooms/{room.id}/report", {"reason": "whole room"}, token=eve
        )
        assert status == 200 and body == {}
        status, body = await c.call(
            "POST", f"{V3}/rooms/{room.id}/report/{bad}", {"reason": "x"}, token=eve
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")  # not joined
        status, body = await c.call(
            "POST", f"{V3}/rooms/{room.id}/report/$unknown", {"reason": "x"}, token=alice
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call(
            "POST", f"{V3}/rooms/!nowhere:localhost/report", {"reason": "x"}, token=alice
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call(
            "POST", f"{V3}/rooms/{room.id}/report/{bad}", {"reason": 5}, token=alice
        )
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
        db = await open_database(DATABASES[backend_server.port])
        try:
            stored = await db.read(lambda t: reports(t, room.id))
        finally:
            await db.close()
        assert stored == [
            (bad, f"@rep_alice:{SERVER}", "rude"),
            (None, f"@rep_eve:{SERVER}", "whole room"),
        ]
