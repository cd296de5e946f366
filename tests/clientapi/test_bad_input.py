"""Bad input of every class gets the right errcode and status, and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.client import SpecClient
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"


async def _available(c: SpecClient, name: str) -> bool:
    status, _ = await c.call("GET", f"{V3}/register/available?username={name}")
    return status == 200


async def test_malformed_json_and_wrong_types(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        for raw in (b"{bad", b"", b'{"a": NaN}', b"\xff\xfe"):
            status, err = await c.call("POST", f"{V3}/register", body=raw)
            assert (status, err["errcode"]) == (400, "M_NOT_JSON"), raw
        for value in ([1, 2], "string", 3):
            status, err = await c.call("POST", f"{V3}/login", value)
            assert (status, err["errcode"]) == (400, "M_BAD_JSON")
        for body in (
            {"username": 7, "password": "x"},
            {"username": "typed", "password": ["x"]},
            {"username": "typed", "password": "x", "inhibit_login": "yes"},
            {"username": "typed", "password": "x", "auth": "dummy"},
        ):
            status, err = await c.call("POST", f"{V3}/register", body)
            assert (status, err["errcode"]) == (400, "M_BAD_JSON"), body
        status, err = await c.call("POST", f"{V3}/register", {"username": "No Spaces"})
        assert (status, err["errcode"]) == (400, "M_INVALID_USERNAME")
        assert await _available(c, "typed")

        status, err = await c.call("POST", f"{V3}/login", {"type": "m.login.bogus"})
        assert (status, err["errcode"]) == (400, "M_UNKNOWN")
        status, err = await c.call("POST", f"{V3}/login", {"password": "x"})
        assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")


async def test_tokens(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        status, err = await c.call("GET", f"{V3}/account/whoami")
        assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")
        status, err = await c.call("GET", f"{V3}/account/whoami", token="myl_not-a-token")
        assert (status, err["errcode"], err["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", False)
        status, err = await c.call("GET", f"{V3}/devices", headers={"Authorization": "Basic abc"})
        assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")
        reg = await c.register("tokenuser")
        # The deprecated query-string form of the token still works.
        status, who = await c.call("GET", f"{V3}/account/whoami?access_token={reg['access_token']}")
        assert (status, who["user_id"]) == (200, "@tokenuser:localhost")
        status, err = await c.call(
            "PUT",
            f"{V3}/devices/{reg['device_id']}",
            {"display_name": 5},
            token=reg["access_token"],
        )
        assert (status, err["errcode"]) == (400, "M_BAD_JSON")
        status, dev = await c.call(
            "GET", f"{V3}/devices/{reg['device_id']}", token=reg["access_token"]
        )
        assert "display_name" not in dev  # the bad update changed nothing
        # The spec lists no error for another user's filter; 403 is what servers answer.
        status, err = await c.call(
            "POST",
            "/_matrix/client/v3/user/%40other%3Alocalhost/filter",
            {},
            token=reg["access_token"],
            validate=False,
        )
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        status, err = await c.call(
            "POST",
            "/_matrix/client/v3/user/%40tokenuser%3Alocalhost/filter",
            {"room": {"timeline": {"limit": "ten"}}},
            token=reg["access_token"],
        )
        assert (status, err["errcode"]) == (400, "M_BAD_JSON")


async def test_routing_errors_and_cors(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        status, err = await c.call("GET", "/_matrix/client/v3/no/such/thing", validate=False)
        assert (status, err["errcode"]) == (404, "M_UNRECOGNIZED")
        status, err = await c.call("DELETE", f"{V3}/login", validate=False)
        assert (status, err["errcode"]) == (405, "M_UNRECOGNIZED")
        status, err = await c.call("PUT", "/_matrix/client/versions", validate=False)
        assert (status, err["errcode"]) == (405, "M_UNRECOGNIZED")

        reg = await c.register("corsuser")
        # A preflight runs no endpoint logic: OPTIONS on /logout must not log out.
        status, _, headers = await c.raw(
            "OPTIONS",
            f"{V3}/logout",
            headers={
                "Authorization": f"Bearer {reg['access_token']}",
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert status in (200, 204)
        assert headers["access-control-allow-origin"] == "*"
        assert "POST" in headers["access-control-allow-methods"]
        assert "Authorization" in headers["access-control-allow-headers"]
        status, _ = await c.call("GET", f"{V3}/account/whoami", token=reg["access_token"])
        assert status == 200

        status, page, headers = await c.raw("GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"homeserver" in page and shared_server.base_url.encode() in page
        status, page, _ = await c.raw("GET", "/_matrix/static/")
        assert status == 200 and b"Connecting a client" in page


async def test_oversize_body(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", max_request_body=4096)
    try:
        async with SpecClient(server.base_url) as c:
            big = {"username": "biggy", "password": "x" * 5000}
            status, err = await c.call("POST", f"{V3}/register", big)
            assert (status, err["errcode"]) == (413, "M_TOO_LARGE")
            assert await _available(c, "biggy")
            status, err = await c.call("POST", f"{V3}/register", body=b" " * 4097 + b"{}")
            assert (status, err["errcode"]) == (413, "M_TOO_LARGE")
            # Without a Content-Length (chunked), the limit holds while reading.
            async with aiohttp.ClientSession() as session:

                async def chunks() -> AsyncIterator[bytes]:
                    for _ in range(5):
                        yield b" " * 1000

                async with session.post(f"{server.base_url}{V3}/login", data=chunks()) as resp:
                    assert resp.status == 413
                    assert (await resp.json())["errcode"] == "M_TOO_LARGE"
    finally:
        assert server.stop() == 0


async def test_registration_closed_and_guests_refused(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", registration="closed")
    try:
        async with SpecClient(server.base_url) as c:
            status, err = await c.call("POST", f"{V3}/register", {"username": "nope"})
            assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
            status, err = await c.call("POST", f"{V3}/register?kind=guest", {})
            assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
            assert await _available(c, "nope")
    finally:
        assert server.stop() == 0
    assert "registration closed" in server.startup_line


async def test_rate_limit(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "data", rate_limit=True, rate_limit_burst=2, rate_limit_per_second=0.01
    )
    try:
        async with SpecClient(server.base_url) as c:
            body = {"type": "m.login.password", "user": "ghost", "password": "x"}
            for _ in range(2):
                status, err = await c.call("POST", f"{V3}/login", body)
                assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
            status, err = await c.call("POST", f"{V3}/login", body)
            assert (status, err["errcode"]) == (429, "M_LIMIT_EXCEEDED")
            assert err["retry_after_ms"] > 1000
            # Endpoints without a limit are unaffected.
            assert (await c.call("GET", "/_matrix/client/versions"))[0] == 200
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("option", [{"default_room_version": "99"}, {"server_name": "bad name"}])
async def test_bad_config_is_refused(tmp_path: Path, option: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="exited with 2"):
        start_server(tmp_path / "data", **option)
