"""Backfill over federation between two real servers: a server that joins a room with
history fetches it (`/backfill`) when `/messages` reaches the start of what it has,
serves it in topological order before its own events, never to `/sync` as new, and
`myelin rebuild` gives the same tables afterwards."""

from __future__ import annotations

import asyncio
import sqlite3
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.federation import Peer, peers_fixture, wait_for_event
from tests.support.rooms import create_room, register, send
from tests.support.server import MYELIN

V3 = "/_matrix/client/v3"
#: More than one `/backfill` asks for (100): the second page of history continues from
#: an event whose state was asked for (`/state_ids`), the first one reaches the create.
MESSAGES = 130


#: Two servers of each test alone: the second is stopped and rebuilt by the test.
pair = peers_fixture("function")


async def page(
    c: SpecClient, token: str, room_id: str, limit: int, since: str | None = None
) -> dict[str, Any]:
    query = f"dir=b&limit={limit}" + (f"&from={since}" if since else "")
    status, body = await c.call("GET", f"{V3}/rooms/{room_id}/messages?{query}", token=token)
    assert status == 200, body
    return dict(body)


async def all_history(c: SpecClient, token: str, room_id: str) -> list[dict[str, Any]]:
    """Every event `/messages` gives, newest first, paging back until an empty page."""
    events: list[dict[str, Any]] = []
    since: str | None = None
    for _ in range(100):
        body = await page(c, token, room_id, 7, since)
        if not body["chunk"]:
            return events
        events.extend(body["chunk"])
        since = body["end"]
    raise AssertionError("history does not end")


def tables(data_dir: Path) -> dict[str, list[Any]]:
    """The projections a rebuild must restore, as comparable rows."""
    db = sqlite3.connect(data_dir / "myelin.db")
    try:
        return {
            "sync_events": db.execute(
                "SELECT pos, room_id, event_id, redacted_by, replaces FROM sync_events ORDER BY pos"
            ).fetchall(),
            "rs_events": db.execute(
                "SELECT event_id, status, reason, log_offset, depth,"
                " before_snapshot_nid IS NULL, after_snapshot_nid IS NULL"
                " FROM rs_events ORDER BY event_id"
            ).fetchall(),
            "rs_backward_extremities": db.execute(
                "SELECT r.room_id, b.event_id FROM rs_backward_extremities b"
                " JOIN rs_rooms r ON r.room_nid = b.room_nid ORDER BY 1, 2"
            ).fetchall(),
        }
    finally:
        db.close()


async def test_history_is_backfilled_in_order_and_not_synced(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "alice")
        bob = await register(cb, "bob")
        room_id = await create_room(
            ca, alice, {"preset": "public_chat", "room_version": "10", "name": "history"}
        )
        sent = [
            await send(ca, alice, room_id, f"m{i}", {"msgtype": "m.text", "body": f"m{i}"})
            for i in range(MESSAGES)
        ]
        status, body = await cb.call(
            "POST", f"{V3}/join/{quote(room_id)}?server_name={a.name}", {}, token=bob
        )
        assert status == 200, body
        status, synced = await cb.call("GET", f"{V3}/sync?timeout=0", token=bob)
        assert status == 200, synced
        since = synced["next_batch"]
        timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
        assert not any(e["event_id"] in sent for e in timeline), timeline

        # The first page: Bob's join, then the newest messages, fetched from Alice's server.
        first = await page(cb, bob, room_id, 6)
        chunk = first["chunk"]
        assert [e["type"] for e in chunk] == ["m.room.member"] + ["m.room.message"] * 5, chunk
        assert chunk[0]["state_key"] == f"@bob:{b.name}"
        assert [e["event_id"] for e in chunk[1:]] == sent[::-1][:5]

        # All of it, back to the create event, each event once, in the room's order.
        history = await all_history(cb, bob, room_id)
        ids = [e["event_id"] for e in history]
        assert len(ids) == len(set(ids)), ids
        assert history[-1]["type"] == "m.room.create"
        messages = [e["event_id"] for e in history if e["type"] == "m.room.message"]
        assert messages == sent[::-1]
        assert [e["event_id"] for e in history[1 : MESSAGES + 1]] == sent[::-1]
        # The same events, in the same order, as on the room's own server.
        assert ids == [e["event_id"] for e in await all_history(ca, alice, room_id)]

        # Forwards from the start, the same events in the opposite order.
        status, body = await cb.call(
            "GET", f"{V3}/rooms/{room_id}/messages?dir=f&limit=1000", token=bob
        )
        assert status == 200, body
        assert [e["event_id"] for e in body["chunk"]] == ids[::-1]

        # Nothing of it reaches /sync as new; the next message does.
        status, quiet = await cb.call("GET", f"{V3}/sync?timeout=0&since={since}", token=bob)
        assert status == 200, quiet
        room = quiet.get("rooms", {}).get("join", {}).get(room_id, {})
        assert not room.get("timeline", {}).get("events"), room
        marker = await send(ca, alice, room_id, "marker", {"msgtype": "m.text", "body": "new"})
        got = await wait_for_event(
            cb, bob, room_id, lambda e: e["type"] == "m.room.message", since=quiet["next_batch"]
        )
        assert got["event_id"] == marker

    # A rebuild from the log gives the same tables.
    assert b.server.stop() == 0
    before = tables(b.server.data_dir)
    # Everything back to the create event is here: nothing left to fetch.
    assert before["sync_events"] and not before["rs_backward_extremities"]
    rebuild = await asyncio.create_subprocess_exec(
        str(MYELIN), "rebuild", "--data-dir", str(b.server.data_dir), stderr=PIPE, stdout=PIPE
    )
    _, err = await asyncio.wait_for(rebuild.communicate(), 120)
    assert rebuild.returncode == 0, err
    assert tables(b.server.data_dir) == before


async def test_backfill_endpoint_refuses_other_rooms_and_strangers(
    pair: tuple[Peer, Peer],
) -> None:
    """What a server asks of another is answered only for the room it names."""
    a, b = pair
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "carol")
        bob = await register(cb, "dave")
        room_id = await create_room(ca, alice)
        status, body = await cb.call(
            "POST", f"{V3}/join/{quote(room_id)}?server_name={a.name}", {}, token=bob
        )
        assert status == 200, body
        # A private room of Alice's: none of its events may be backfilled through the
        # public one.
        private = await create_room(ca, alice, {"preset": "private_chat"})
        secret = await send(ca, alice, private, "s", {"msgtype": "m.text", "body": "secret"})
        status, body = await cb.call("GET", f"{V3}/rooms/{room_id}/messages?dir=b", token=bob)
        assert status == 200, body
        assert secret not in [e["event_id"] for e in body["chunk"]]
        assert any(e["type"] == "m.room.create" for e in body["chunk"]), body
