"""`m.login.token` (POST /login/get_token, v1.7): a logged-in client, after proving its
password through UIA, gets a short-lived single-use token that logs in another client."""

from __future__ import annotations

from pathlib import Path

import pytest

from myelin.core.roomversions import KNOWN_ROOM_VERSIONS
from myelin.storage import testing
from myelin.userapi.accounts import UserAPI, UserAPIError
from tests.support.backends import BACKENDS
from tests.support.client import SpecClient
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"
GET_TOKEN = "/_matrix/client/v1/login/get_token"

pg_dsn = testing.pg_dsn_fixture()


async def _get_token(c: SpecClient, token: str, user: str, password: str) -> dict[str, object]:
    status, challenge = await c.call("POST", GET_TOKEN, {}, token=token)
    assert status == 401 and challenge["flows"] == [{"stages": ["m.login.password"]}]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        "session": challenge["session"],
    }
    status, body = await c.call("POST", GET_TOKEN, {"auth": auth}, token=token)
    assert status == 200, body
    return dict(body)


async def test_login_token_logs_in_a_new_device_once(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        reg = await c.register("lt_alice", "pw-lt")
        token = reg["access_token"]

        status, flows = await c.call("GET", f"{V3}/login")
        assert status == 200
        assert {"type": "m.login.token", "get_login_token": True} in flows["flows"]
        status, caps = await c.call("GET", f"{V3}/capabilities", token=token)
        assert status == 200 and caps["capabilities"]["m.get_login_token"] == {"enabled": True}

        got = await _get_token(c, token, "lt_alice", "pw-lt")
        assert got["expires_in_ms"] == 120_000
        login_token = got["login_token"]
        assert isinstance(login_token, str) and login_token

        status, login = await c.call(
            "POST",
            f"{V3}/login",
            {"type": "m.login.token", "token": login_token, "initial_device_display_name": "tv"},
        )
        assert status == 200, login
        assert login["user_id"] == "@lt_alice:localhost"
        assert login["device_id"] != reg["device_id"]
        status, who = await c.call("GET", f"{V3}/account/whoami", token=login["access_token"])
        assert (status, who["device_id"]) == (200, login["device_id"])

        # Single use: the same token again is refused, and so is a made-up one.
        for bad in (login_token, "mylt_not-a-token"):
            status, err = await c.call(
                "POST", f"{V3}/login", {"type": "m.login.token", "token": bad}
            )
            assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        # A missing token is malformed input, not a failed login.
        status, err = await c.call("POST", f"{V3}/login", {"type": "m.login.token"})
        assert status == 400 and err["errcode"] in ("M_MISSING_PARAM", "M_BAD_JSON")


async def test_get_token_requires_the_password_every_time(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        token = (await c.register("lt_bob", "pw-bob"))["access_token"]
        status, challenge = await c.call("POST", GET_TOKEN, {}, token=token)
        assert status == 401
        wrong = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "lt_bob"},
            "password": "nope",
            "session": challenge["session"],
        }
        status, body = await c.call("POST", GET_TOKEN, {"auth": wrong}, token=token)
        assert (status, body["errcode"]) == (401, "M_FORBIDDEN")
        assert "login_token" not in body
        # Two tokens need two password prompts; both work, each once.
        first = await _get_token(c, token, "lt_bob", "pw-bob")
        second = await _get_token(c, token, "lt_bob", "pw-bob")
        assert first["login_token"] != second["login_token"]
        for got in (second, first):
            status, login = await c.call(
                "POST", f"{V3}/login", {"type": "m.login.token", "token": got["login_token"]}
            )
            assert status == 200 and login["user_id"] == "@lt_bob:localhost"
        # Without an access token there is nothing to hand out. (Not schema-checked: the
        # spec's only 401 schema for this endpoint is the UIA challenge.)
        status, err = await c.call("POST", GET_TOKEN, {}, validate=False)
        assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_expired_and_spent_tokens_are_forbidden(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with testing.open_test_database(backend, tmp_path, request) as db:
        users = await UserAPI.open(db, "localhost")
        expired = await users.issue_login_token("@a:localhost", 0)
        with pytest.raises(UserAPIError) as info:
            await users.consume_login_token(expired)
        assert (info.value.status, info.value.errcode) == (403, "M_FORBIDDEN")
        assert "expired" in info.value.error
        # An expired token is gone too: asking again is the unknown-token answer.
        with pytest.raises(UserAPIError) as info:
            await users.consume_login_token(expired)
        assert info.value.errcode == "M_FORBIDDEN" and "expired" not in info.value.error

        live = await users.issue_login_token("@a:localhost", 60_000)
        # Only a digest is stored: the token itself is nowhere in the table.
        rows = await db.read(lambda t: t.fetchall("SELECT token_digest FROM login_tokens"))
        assert rows and all(live not in str(r[0]) for r in rows)
        # Another UserAPI on the same database (a restarted server) honours it, once.
        again = await UserAPI.open(db, "localhost")
        assert await again.consume_login_token(live) == "@a:localhost"
        with pytest.raises(UserAPIError):
            await users.consume_login_token(live)


async def test_login_token_survives_a_restart(tmp_path: Path) -> None:
    """A token handed out before a restart logs in after it (tokens are in the database)."""
    server = start_server(tmp_path / "data")
    try:
        async with SpecClient(server.base_url) as c:
            token = (await c.register("lt_carol", "pw-carol"))["access_token"]
            got = await _get_token(c, token, "lt_carol", "pw-carol")
    finally:
        assert server.stop() == 0
    server = start_server(tmp_path / "data", port=server.port)
    try:
        async with SpecClient(server.base_url) as c:
            body = {"type": "m.login.token", "token": got["login_token"]}
            status, login = await c.call("POST", f"{V3}/login", body)
            assert status == 200, login
            assert login["user_id"] == "@lt_carol:localhost"
            status, err = await c.call("POST", f"{V3}/login", body)
            assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    finally:
        assert server.stop() == 0


async def test_capabilities_describe_what_users_may_do(tmp_path: Path) -> None:
    """Every capability is schema-checked; guests (no password) get no login tokens."""
    server = start_server(tmp_path / "data", allow_guests=True)
    try:
        async with SpecClient(server.base_url) as c:
            token = (await c.register("caps_user"))["access_token"]
            status, body = await c.call("GET", f"{V3}/capabilities", token=token)
            assert status == 200
            caps = body["capabilities"]
            assert caps["m.change_password"] == {"enabled": True}
            assert caps["m.set_displayname"] == {"enabled": True}
            assert caps["m.set_avatar_url"] == {"enabled": True}
            assert caps["m.3pid_changes"] == {"enabled": False}
            assert caps["m.get_login_token"] == {"enabled": True}
            versions = caps["m.room_versions"]
            assert versions["default"] in versions["available"]
            assert versions["available"][versions["default"]] == "stable"
            assert set(versions["available"]) == set(KNOWN_ROOM_VERSIONS)
            assert {versions["available"][v] for v in ("1", "10", "11")} == {"stable"}

            status, guest = await c.call("POST", f"{V3}/register?kind=guest", {})
            assert status == 200, guest
            status, body = await c.call("GET", f"{V3}/capabilities", token=guest["access_token"])
            assert status == 200
            assert body["capabilities"]["m.get_login_token"] == {"enabled": False}
            status, err = await c.call(
                "POST", GET_TOKEN, {}, token=guest["access_token"], validate=False
            )
            assert (status, err["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    finally:
        assert server.stop() == 0
