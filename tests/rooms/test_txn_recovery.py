"""A transaction recorded by a server that died before its event reached the log: the
retransmission after restart sends the event (once), instead of answering with an event
that does not exist."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.client import SpecClient
from tests.support.rooms import create_room
from tests.support.server import start_server

V3 = "/_matrix/client/v3"


async def test_retransmission_after_lost_append_sends_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        async with SpecClient(server.base_url) as c:
            reg = await c.register("tr_alice")
            token, device = reg["access_token"], reg["device_id"]
            room = await create_room(c, token, {})
    finally:
        assert server.stop() == 0

    # What a crash between recording the transaction and appending the event leaves.
    with sqlite3.connect(data / "myelin.db") as conn:
        conn.execute(
            "INSERT INTO sync_txns (user_id, device_id, scope, txn_id, event_id)"
            " VALUES (?, ?, ?, ?, ?)",
            ("@tr_alice:localhost", device, f"send/{room}/m.room.message", "t1", "$never"),
        )

    server = start_server(data)
    try:
        async with SpecClient(server.base_url) as c:
            path = f"{V3}/rooms/{room}/send/m.room.message/t1"
            status, first = await c.call("PUT", path, {"body": "hi"}, token=token)
            assert status == 200 and first["event_id"] != "$never"
            status, again = await c.call("PUT", path, {"body": "hi"}, token=token)
            assert (status, again) == (200, first)
            status, page = await c.call(
                "GET", f"{V3}/rooms/{room}/messages?dir=b&limit=5", token=token
            )
            assert status == 200
            messages = [e for e in page["chunk"] if e["type"] == "m.room.message"]
            assert [e["event_id"] for e in messages] == [first["event_id"]]
            assert messages[0]["unsigned"]["transaction_id"] == "t1"
    finally:
        assert server.stop() == 0
