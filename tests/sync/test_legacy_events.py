"""The deprecated `/events`, `/events/{eventId}`, `/initialSync` and room `/initialSync`
over HTTP (old_sync.yaml, room_initial_sync.yaml), and room previews: a user outside a
`world_readable` room reads it with room initialSync and `/events?room_id=`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, register, send
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("legacy") / "data", allow_guests=True)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.stderr_lines


def _text(body: str) -> dict[str, str]:
    return {"msgtype": "m.text", "body": body}


async def test_event_stream_pages_in_order_and_long_polls(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = await register(c, "le_alice")
        room = await create_room(c, alice)
        status, first = await c.call("GET", f"{V3}/events?timeout=0", token=alice)
        assert status == 200 and first["chunk"] == []
        token = first["end"]
        sent = [await send(c, alice, room, f"t{i}", _text(f"m{i}")) for i in range(7)]

        # A limit of 3 pages through every message, in order, without loss.
        seen: list[str] = []
        for _ in range(5):
            status, page = await c.call(
                "GET", f"{V3}/events?from={token}&timeout=0&limit=3", token=alice
            )
            assert status == 200, page
            assert page["start"] == token
            token = page["end"]
            seen += [e["event_id"] for e in page["chunk"] if e["type"] == "m.room.message"]
            assert all(e["room_id"] == room for e in page["chunk"] if "event_id" in e)
        assert seen == sent

        # A long poll answers when the next message is committed.
        poll = asyncio.create_task(
            c.call("GET", f"{V3}/events?from={token}&timeout=20000", token=alice)
        )
        await asyncio.sleep(0.3)
        assert not poll.done()
        new = await send(c, alice, room, "late", _text("late"))
        status, woke = await poll
        assert status == 200
        assert [e["event_id"] for e in woke["chunk"] if "event_id" in e] == [new]

        # A single event by ID; an unknown or unreadable one is 404.
        status, one = await c.call("GET", f"{V3}/events/{quote(new)}", token=alice)
        assert status == 200 and one["content"]["body"] == "late" and one["room_id"] == room
        outsider = await register(c, "le_outsider")
        status, err = await c.call("GET", f"{V3}/events/{quote(new)}", token=outsider)
        assert status == 404 and err["errcode"] == "M_NOT_FOUND"
        status, err = await c.call("GET", f"{V3}/events?from=bogus", token=alice)
        assert status == 400 and err["errcode"] == "M_INVALID_PARAM"


async def test_initial_sync_global_and_room(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = await register(c, "is_alice")
        bob = await register(c, "is_bob")
        room = await create_room(c, alice)
        await join(c, bob, room)
        await send(c, alice, room, "t1", _text("hello"))
        status, body = await c.call("GET", f"{V3}/initialSync?limit=1", token=bob)
        assert status == 200, body
        rooms = {r["room_id"]: r for r in body["rooms"]}
        mine = rooms[room]
        assert mine["membership"] == "join"
        assert [e["content"].get("body") for e in mine["messages"]["chunk"]] == ["hello"]
        assert {"m.room.create", "m.room.member"} <= {e["type"] for e in mine["state"]}
        assert mine["visibility"] in ("public", "private")
        # Calling it counts as activity: the caller's own presence is there.
        assert "@is_bob:localhost" in {e["content"]["user_id"] for e in body["presence"]}

        status, none = await c.call("GET", f"{V3}/initialSync?limit=0", token=bob)
        assert status == 200
        assert next(r for r in none["rooms"] if r["room_id"] == room)["messages"]["chunk"] == []

        status, one = await c.call("GET", f"{V3}/rooms/{room}/initialSync", token=alice)
        assert status == 200, one
        assert one["room_id"] == room and one["membership"] == "join"
        assert one["messages"]["chunk"][-1]["content"]["body"] == "hello"

        # After leaving, a departed room shows up with archived=true, as it was at the leave.
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=bob)
        assert status == 200
        await send(c, alice, room, "t2", _text("after bob left"))
        status, body = await c.call("GET", f"{V3}/initialSync?archived=true", token=bob)
        assert status == 200
        left = next(r for r in body["rooms"] if r["room_id"] == room)
        assert left["membership"] == "leave"
        bodies = [e["content"].get("body") for e in left["messages"]["chunk"]]
        assert "after bob left" not in bodies
        status, body = await c.call("GET", f"{V3}/initialSync", token=bob)
        assert room not in {r["room_id"] for r in body["rooms"]}


async def test_peeking_world_readable_room(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = await register(c, "pk_alice")
        room = await create_room(c, alice)
        await send(c, alice, room, "t0", _text("private"))
        status, guest = await c.call("POST", f"{V3}/register?kind=guest", {})
        assert status == 200, guest
        peeker = guest["access_token"]

        # Not world-readable: no preview, and guests may not stream globally.
        status, err = await c.call("GET", f"{V3}/rooms/{room}/initialSync", token=peeker)
        assert status == 403
        status, err = await c.call("GET", f"{V3}/events?timeout=0", token=peeker)
        assert status == 400 and err["errcode"] == "M_MISSING_PARAM"

        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.history_visibility/",
            {"history_visibility": "world_readable"},
            token=alice,
        )
        assert status == 200
        await send(c, alice, room, "t1", _text("public"))
        status, snap = await c.call("GET", f"{V3}/rooms/{room}/initialSync", token=peeker)
        assert status == 200, snap
        chunk = snap["messages"]["chunk"]
        assert [e["type"] for e in chunk] == ["m.room.history_visibility", "m.room.message"]
        assert chunk[1]["content"]["body"] == "public"

        # The preview stream wakes on the room's next message.
        token = snap["messages"]["end"]
        poll = asyncio.create_task(
            c.call("GET", f"{V3}/events?room_id={room}&from={token}&timeout=20000", token=peeker)
        )
        await asyncio.sleep(0.3)
        assert not poll.done()
        new = await send(c, alice, room, "t2", _text("live"))
        status, woke = await poll
        assert status == 200, woke
        assert new in [e.get("event_id") for e in woke["chunk"]]


async def test_sync_details_heroes_idempotent_state_and_messages_end(
    server: ServerProcess,
) -> None:
    """Sync details of the same issue: `m.heroes` in the summary of an unnamed room,
    repeated identical state answered with the first event, and `/messages` giving an
    `end` with every non-empty chunk (none once the chunk is empty)."""
    async with SpecClient(server.base_url) as c:
        alice = await register(c, "sd_alice")
        bob = await register(c, "sd_bob")
        carol = await register(c, "sd_carol")
        room = await create_room(c, alice)
        await join(c, bob, room)
        await join(c, carol, room)
        status, s = await c.call("GET", f"{V3}/sync", token=alice)
        assert status == 200
        summary = s["rooms"]["join"][room]["summary"]
        assert summary["m.heroes"] == ["@sd_bob:localhost", "@sd_carol:localhost"]
        assert summary["m.joined_member_count"] == 3
        # A whole (not limited) initial timeline pages back from the sync's position, so
        # /messages from its prev_batch starts with the timeline's own newest event.
        timeline = s["rooms"]["join"][room]["timeline"]
        assert timeline["limited"] is False
        status, back = await c.call(
            "GET",
            f"{V3}/rooms/{room}/messages?dir=b&limit=1&from={timeline['prev_batch']}",
            token=alice,
        )
        assert status == 200
        assert back["chunk"][0]["event_id"] == timeline["events"][-1]["event_id"]

        name = {"name": "Named"}
        status, first = await c.call(
            "PUT", f"{V3}/rooms/{room}/state/m.room.name/", name, token=alice
        )
        assert status == 200
        status, again = await c.call(
            "PUT", f"{V3}/rooms/{room}/state/m.room.name/", name, token=alice
        )
        assert status == 200 and again["event_id"] == first["event_id"]
        status, s = await c.call("GET", f"{V3}/sync", token=alice)
        assert "m.heroes" not in s["rooms"]["join"][room]["summary"]

        query = "dir=b&limit=50"
        pages = 0
        while True:
            status, page = await c.call("GET", f"{V3}/rooms/{room}/messages?{query}", token=alice)
            assert status == 200
            pages += 1
            if not page["chunk"]:
                assert "end" not in page
                break
            query = f"dir=b&limit=50&from={page['end']}"
        assert pages == 2


async def test_presence_of_newly_shared_rooms_in_incremental_sync(server: ServerProcess) -> None:
    """Joining a room brings its members' current presence into the next incremental
    sync, and the room's members get the joiner's, even though neither changed since."""
    async with SpecClient(server.base_url) as c:
        alice = await register(c, "np_alice")
        bob = await register(c, "np_bob")
        room = await create_room(c, alice)
        status, a = await c.call("GET", f"{V3}/sync?timeout=0", token=alice)
        status, b = await c.call("GET", f"{V3}/sync?timeout=0", token=bob)
        assert status == 200
        status, a = await c.call("GET", f"{V3}/sync?since={a['next_batch']}", token=alice)
        await join(c, bob, room)
        status, b2 = await c.call("GET", f"{V3}/sync?since={b['next_batch']}", token=bob)
        assert status == 200
        assert "@np_alice:localhost" in {e["sender"] for e in b2["presence"]["events"]}
        status, a2 = await c.call("GET", f"{V3}/sync?since={a['next_batch']}", token=alice)
        assert status == 200
        assert "@np_bob:localhost" in {e["sender"] for e in a2["presence"]["events"]}
