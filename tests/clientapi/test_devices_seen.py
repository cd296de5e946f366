"""Devices report when and from where they were last used (`last_seen_ts`, `last_seen_ip`),
updated by authenticated requests and returned by GET /devices and /devices/{id}."""

from __future__ import annotations

import asyncio
import time

from tests.support.client import SpecClient
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_last_seen_follows_authenticated_requests(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        before = _now_ms()
        first = await c.register("seen_alice", "pw-seen", initial_device_display_name="laptop")
        # Device creation counts as being seen.
        await asyncio.sleep(0.05)
        middle = _now_ms()
        await asyncio.sleep(0.05)
        status, second = await c.call(
            "POST",
            f"{V3}/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "seen_alice"},
                "password": "pw-seen",
            },
        )
        assert status == 200
        status, listing = await c.call("GET", f"{V3}/devices", token=second["access_token"])
        assert status == 200
        seen = {d["device_id"]: d for d in listing["devices"]}
        assert set(seen) == {first["device_id"], second["device_id"]}
        laptop = seen[first["device_id"]]
        assert laptop["display_name"] == "laptop"
        assert laptop["last_seen_ip"] == "127.0.0.1"
        # The laptop has not been used since it registered.
        assert before <= laptop["last_seen_ts"] <= middle
        assert seen[second["device_id"]]["last_seen_ts"] >= middle

        # One authenticated request with the laptop's token moves its last-seen time on.
        await asyncio.sleep(0.05)
        later = _now_ms()
        status, _ = await c.call("GET", f"{V3}/account/whoami", token=first["access_token"])
        assert status == 200
        status, one = await c.call(
            "GET", f"{V3}/devices/{first['device_id']}", token=second["access_token"]
        )
        assert status == 200
        assert one["device_id"] == first["device_id"]
        assert one["last_seen_ip"] == "127.0.0.1"
        assert later <= one["last_seen_ts"] <= _now_ms()
