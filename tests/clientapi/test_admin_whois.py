"""`GET /admin/whois/{userId}` (admin.yaml): a user may look themself up, a server admin
anybody; each device has a session whose connection is its last request (address, time,
User-Agent); anybody else is refused without learning whether the user exists."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.server import MYELIN, start_server

V3 = "/_matrix/client/v3"
SECRET = "whois-shared-secret"


def _whois(user_id: str) -> str:
    return f"{V3}/admin/whois/{quote(user_id)}"


async def test_whois_of_oneself_and_by_an_admin(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", registration_shared_secret=SECRET)
    try:
        async with SpecClient(server.base_url) as c:
            before = int(time.time() * 1000)
            alice = await c.register("whois_alice", "pw-alice")
            bob = await c.register("whois_bob", "pw-bob")
            alice_id = alice["user_id"]
            # One request with a User-Agent: the connection the lookup reports.
            status, _ = await c.call(
                "GET",
                f"{V3}/account/whoami",
                token=alice["access_token"],
                headers={"User-Agent": "whois-test/1.0"},
            )
            assert status == 200
            status, body = await c.call(
                "GET",
                _whois(alice_id),
                token=alice["access_token"],
                headers={"User-Agent": "whois-test/1.0"},
            )
            assert status == 200, body
            assert body["user_id"] == alice_id
            assert list(body["devices"]) == [alice["device_id"]]
            [session] = body["devices"][alice["device_id"]]["sessions"]
            [connection] = session["connections"]
            assert connection["ip"] == "127.0.0.1"
            assert connection["user_agent"] == "whois-test/1.0"
            assert before <= connection["last_seen"] <= int(time.time() * 1000)

            # Somebody else's lookup is refused, for a user that exists or not alike
            # (admin.yaml lists only 200: the refusal it allows is a plain M_FORBIDDEN).
            for target in (alice_id, "@nobody_here:localhost"):
                status, body = await c.call(
                    "GET", _whois(target), token=bob["access_token"], validate=False
                )
                assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body

            # A server admin may look anybody up; an unknown user is 404.
            proc = await asyncio.create_subprocess_exec(
                str(MYELIN),
                "user",
                "create",
                "whois_admin",
                "--admin",
                "--password",
                "pw-admin",
                "--url",
                server.base_url,
                "--registration-shared-secret",
                SECRET,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            assert proc.returncode == 0, err
            status, login = await c.call(
                "POST",
                f"{V3}/login",
                {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "whois_admin"},
                    "password": "pw-admin",
                },
            )
            assert status == 200, login
            status, body = await c.call("GET", _whois(alice_id), token=login["access_token"])
            assert status == 200, body
            assert body["devices"][alice["device_id"]]["sessions"][0]["connections"]
            status, body = await c.call(
                "GET", _whois("@nobody_here:localhost"), token=login["access_token"], validate=False
            )
            assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), body
    finally:
        assert server.stop() == 0
