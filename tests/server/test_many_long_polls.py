"""Hundreds of long-polling /sync requests at once must not lock the server up.

Every client of a busy server holds a /sync open. If the listener stops accepting
connections once some number of requests is in flight, the message that would answer the
waiting long-polls can never be sent: they all run into their timeout instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.support.client import SpecClient
from tests.support.rooms import create_room
from tests.support.server import start_server

V3 = "/_matrix/client/v3"
LONG_POLLS = 300  # more than the 128 requests in flight granian allows by default
POLL_TIMEOUT_MS = 30_000


async def test_a_send_gets_through_while_hundreds_of_long_polls_wait(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        async with SpecClient(server.base_url) as c:
            token = (await c.register("poller"))["access_token"]
            room = await create_room(c, token)
            status, first = await c.call("GET", f"{V3}/sync", token=token)
            assert status == 200
            since = first["next_batch"]

        headers = {"Authorization": f"Bearer {token}"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

            async def poll() -> list[str]:
                params = {"since": since, "timeout": str(POLL_TIMEOUT_MS)}
                async with http.get(f"{server.base_url}{V3}/sync", params=params) as resp:
                    assert resp.status == 200
                    body = await resp.json()
                joined = body.get("rooms", {}).get("join", {}).get(room, {})
                events = joined.get("timeline", {}).get("events", [])
                return [e.get("content", {}).get("body") for e in events]

            async with asyncio.TaskGroup() as tg:
                polls = [tg.create_task(poll()) for _ in range(LONG_POLLS)]
                # Let the long-polls reach the server and start waiting: each one has
                # answered nothing yet (nothing happened since `since`).
                await asyncio.sleep(2)
                assert not any(p.done() for p in polls)
                async with http.put(
                    f"{server.base_url}{V3}/rooms/{room}/send/m.room.message/wake",
                    json={"msgtype": "m.text", "body": "wake up"},
                ) as resp:
                    assert resp.status == 200, await resp.text()

        # Every long-poll was answered by the message, not by its timeout.
        assert [p.result() for p in polls] == [["wake up"]] * LONG_POLLS
    finally:
        assert server.stop() == 0
