"""`/sync` edge cases over HTTP (issue #5): rooms joined or left between two syncs,
current state under restricted history, the federation event format, and lazy-loaded
members across incremental and gapped syncs."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import orjson

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, register, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def flt(value: object) -> str:
    return quote(orjson.dumps(value).decode())


async def sync(
    c: SpecClient, token: str, since: str | None = None, query: str = "", **kw: Any
) -> dict[str, Any]:
    path = f"{V3}/sync?set_presence=offline{query}"
    if since is not None:
        path += f"&since={since}"
    status, body = await c.call("GET", path, token=token, **kw)
    assert status == 200, body
    return dict(body)


def members(room: dict[str, Any]) -> dict[str, str]:
    """state_key -> membership of the member events in a room's `state`."""
    return {
        e["state_key"]: e["content"]["membership"]
        for e in room.get("state", {}).get("events", [])
        if e["type"] == "m.room.member"
    }


async def fill(c: SpecClient, token: str, room: str, tag: str, count: int) -> None:
    for i in range(count):
        await send(c, token, room, f"{tag}{i}", {"n": i}, "org.example.filler")


async def test_newly_joined_room_in_incremental_sync_is_limited(
    shared_server: ServerProcess,
) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "nj_alice")
        bob = await register(c, "nj_bob")
        room = await create_room(c, alice)
        for i in range(4):
            await send(c, alice, room, f"a{i}", {"msgtype": "m.text", "body": f"a{i}"})
        only_messages = flt({"room": {"timeline": {"types": ["m.room.message"], "limit": 10}}})
        first = await sync(c, bob, query=f"&filter={only_messages}")
        await join(c, bob, room)
        s = await sync(c, bob, first["next_batch"], f"&filter={only_messages}")
        timeline = s["rooms"]["join"][room]["timeline"]
        # All four messages fit the limit, but Bob holds none of the history before them.
        assert [e["content"]["body"] for e in timeline["events"]] == ["a0", "a1", "a2", "a3"]
        assert timeline["limited"] is True
        # The same room on an initial sync: a whole history, not limited.
        s = await sync(c, bob, query=f"&filter={only_messages}")
        assert s["rooms"]["join"][room]["timeline"]["limited"] is False


async def test_own_leave_is_incremental_and_wakes_the_poll(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "lv_alice")
        room = await create_room(c, alice)
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.history_visibility",
            {"history_visibility": "joined"},
            token=alice,
        )
        assert status == 200
        first = await sync(c, alice)
        assert room in first["rooms"]["join"]

        async def leave_soon() -> None:
            await asyncio.sleep(0.2)  # the poll below must be waiting when the leave lands
            status, _ = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=alice)
            assert status == 200

        async with asyncio.TaskGroup() as tg:
            tg.create_task(leave_soon())
            polled = tg.create_task(sync(c, alice, first["next_batch"], "&timeout=10000"))
        left = polled.result()["rooms"]["leave"][room]
        # Only what came since the last sync: the leave itself, even though the history
        # is `joined` and the user is no longer joined.
        [event] = left["timeline"]["events"]
        assert (event["type"], event["content"]["membership"]) == ("m.room.member", "leave")
        assert left["state"]["events"] == []


async def test_current_state_stays_in_timeline_under_private_history(
    shared_server: ServerProcess,
) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "cs_alice")
        bob = await register(c, "cs_bob")
        carol = await register(c, "cs_carol")
        room = await create_room(c, alice)
        await join(c, bob, room)
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.history_visibility",
            {"history_visibility": "joined"},
            token=alice,
        )
        assert status == 200
        first = await sync(c, bob)
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=bob)
        assert status == 200
        await join(c, carol, room)
        await send(c, alice, room, "hidden", {"msgtype": "m.text", "body": "hidden"})
        await join(c, bob, room)
        s = await sync(c, bob, first["next_batch"])
        timeline = s["rooms"]["join"][room]["timeline"]["events"]
        # Carol's join is current state, so it is in the timeline although sent while
        # Bob was away; the message sent then is not.
        assert any(
            e["type"] == "m.room.member" and e["state_key"] == "@cs_carol:localhost"
            for e in timeline
        )
        assert "hidden" not in orjson.dumps(timeline).decode()


async def test_federation_event_format(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "ff_alice")
        room = await create_room(c, alice)
        event_id = await send(c, alice, room, "m1", {"msgtype": "m.text", "body": "hi"})
        query = flt({"event_format": "federation", "room": {"timeline": {"limit": 1}}})
        s = await sync(c, alice, query=f"&filter={query}", validate=False)
        joined = s["rooms"]["join"][room]
        [event] = joined["timeline"]["events"]
        assert event["event_id"] == event_id and event["room_id"] == room
        assert event["content"]["body"] == "hi"
        for key in ("prev_events", "auth_events", "depth", "hashes", "signatures"):
            assert key in event
        assert event["unsigned"]["transaction_id"] == "m1"
        assert all("signatures" in e for e in joined["state"]["events"])
        # The default stays the client format.
        s = await sync(c, alice, query=f"&filter={flt({'room': {'timeline': {'limit': 1}}})}")
        [event] = s["rooms"]["join"][room]["timeline"]["events"]
        assert "signatures" not in event and "room_id" not in event
        # An unknown format is refused.
        status, err = await c.call(
            "GET",
            f"{V3}/sync?filter={flt({'event_format': 'raw'})}",
            token=alice,
            validate=False,
        )
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_lazy_members_across_incremental_syncs(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "ll_alice")
        bob = await register(c, "ll_bob")
        carol = await register(c, "ll_carol")
        dave = await register(c, "ll_dave")
        a, b, ca, d = (f"@ll_{n}:localhost" for n in ("alice", "bob", "carol", "dave"))
        room = await create_room(c, alice)
        await join(c, bob, room)
        await join(c, carol, room)
        await fill(c, bob, room, "b", 10)
        lazy = f"&filter={flt({'room': {'state': {'lazy_load_members': True}}})}"
        s = await sync(c, alice, query=lazy)
        assert members(s["rooms"]["join"][room]) == {a: "join", b: "join"}

        # Not gapped: the sender's membership, though it did not change.
        await send(c, carol, room, "c0", {"msgtype": "m.text", "body": "hi"})
        s = await sync(c, alice, s["next_batch"], lazy)
        assert members(s["rooms"]["join"][room]) == {ca: "join"}
        # Senders already sent are not sent again.
        await send(c, bob, room, "b-again", {"msgtype": "m.text", "body": "again"})
        s = await sync(c, alice, s["next_batch"], lazy)
        assert s["rooms"]["join"][room]["state"]["events"] == []

        # Gapped: a member who joined in the gap, though silent, and a sender.
        await join(c, dave, room)
        await fill(c, carol, room, "c", 12)
        s = await sync(c, alice, s["next_batch"], lazy)
        joined = s["rooms"]["join"][room]
        assert joined["timeline"]["limited"] is True
        assert members(joined) == {d: "join"}  # Carol's membership was sent already
        # A leave in the gap.
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=dave)
        assert status == 200
        await fill(c, bob, room, "b2-", 12)
        s = await sync(c, alice, s["next_batch"], lazy)
        assert members(s["rooms"]["join"][room]) == {d: "leave"}

        # include_redundant_members: the senders every time (but not the requester).
        redundant = flt(
            {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}}
        )
        await send(c, bob, room, "b3", {"msgtype": "m.text", "body": "x"})
        await send(c, carol, room, "c3", {"msgtype": "m.text", "body": "y"})
        s = await sync(c, alice, s["next_batch"], f"&filter={redundant}")
        assert members(s["rooms"]["join"][room]) == {b: "join", ca: "join"}
