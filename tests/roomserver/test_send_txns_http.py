"""Sends over HTTP: concurrent sends to one room are all served straight after their
answers (read-your-writes), and a transaction ID is committed with its event, so a
retransmission finds it even after the transaction table was lost and rebuilt from the
log (`myelin rebuild`)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from myelin.clientapi import rooms as room_routes
from tests.support.client import SpecClient
from tests.support.rooms import create_room
from tests.support.server import MYELIN, start_server

V3 = "/_matrix/client/v3"


async def _messages(c: SpecClient, token: str, room: str) -> list[dict[str, object]]:
    status, page = await c.call("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=50", token=token)
    assert status == 200
    return [e for e in page["chunk"] if e["type"] == "m.room.message"]


async def test_transactions_survive_a_rebuild_and_concurrent_sends_read_their_writes(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        async with SpecClient(server.base_url) as c:
            reg = await c.register("txn_alice")
            token = reg["access_token"]
            room = await create_room(c, token, {})

            async def send(n: int) -> str:
                path = f"{V3}/rooms/{room}/send/m.room.message/t{n}"
                status, body = await c.call(
                    "PUT", path, {"msgtype": "m.text", "body": str(n)}, token=token
                )
                assert status == 200
                # Served as soon as answered, whatever else is in flight.
                assert body["event_id"] in [e["event_id"] for e in await _messages(c, token, room)]
                return str(body["event_id"])

            sent = await asyncio.gather(*(send(n) for n in range(12)))
            assert len(set(sent)) == 12
            path = f"{V3}/rooms/{room}/send/m.room.message/t3"
            status, again = await c.call(
                "PUT", path, {"msgtype": "m.text", "body": "3"}, token=token
            )
            assert (status, again) == (200, {"event_id": sent[3]})
    finally:
        assert server.stop() == 0

    # The transaction table lost, then rebuilt from the log.
    with sqlite3.connect(data / "myelin.db") as conn:
        assert conn.execute("SELECT count(*) FROM sync_txns").fetchone() == (12,)
        conn.execute("DELETE FROM sync_txns")
    rebuild = await asyncio.create_subprocess_exec(
        str(MYELIN), "rebuild", "--data-dir", str(data), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await rebuild.communicate()
    assert rebuild.returncode == 0, output
    with sqlite3.connect(data / "myelin.db") as conn:
        assert conn.execute("SELECT count(*) FROM sync_txns").fetchone() == (12,)

    server = start_server(data)
    try:
        async with SpecClient(server.base_url) as c:
            for n in (0, 5, 11):
                path = f"{V3}/rooms/{room}/send/m.room.message/t{n}"
                status, again = await c.call(
                    "PUT", path, {"msgtype": "m.text", "body": str(n)}, token=token
                )
                assert (status, again) == (200, {"event_id": sent[n]})
            messages = await _messages(c, token, room)
            assert sorted(str(e["event_id"]) for e in messages) == sorted(sent)
            by_id = {e["event_id"]: e for e in messages}
            assert by_id[sent[7]]["unsigned"]["transaction_id"] == "t7"  # type: ignore[index]
    finally:
        assert server.stop() == 0


def test_the_transaction_cache_drops_idle_devices_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded: past the budget the least recently sending devices are dropped (they
    reload from the table), never a device with a send in flight."""
    monkeypatch.setattr(room_routes, "TXN_CACHE_ENTRIES", 10)
    rooms = room_routes.Rooms(None, None, None, None, None)  # type: ignore[arg-type]
    busy, idle, fresh = ("@a:x", "A"), ("@b:x", "B"), ("@c:x", "C")
    for device in (busy, idle, fresh):
        rooms._txns[device] = {}
    rooms.txn_begin(busy)
    for n in range(4):
        rooms.remember_txn(rooms._txns[busy], ("s", f"t{n}"), f"$a{n}")
        rooms.remember_txn(rooms._txns[idle], ("s", f"t{n}"), f"$b{n}")
    assert set(rooms._txns) == {busy, idle, fresh}
    for n in range(4):  # over the budget: the idle device goes, the busy one stays
        rooms.remember_txn(rooms._txns[fresh], ("s", f"t{n}"), f"$c{n}")
    assert set(rooms._txns) == {busy, fresh}
    assert rooms._txns[busy][("s", "t3")] == "$a3"
    rooms.txn_end(busy)
    assert rooms._txn_inflight == {}
