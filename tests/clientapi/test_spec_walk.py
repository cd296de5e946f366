"""Walk every implemented endpoint; each answer must match the spec's OpenAPI schema."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from tests.support.client import SpecClient
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"


async def test_every_endpoint_answers_as_the_spec_says(myelin_server: ServerProcess) -> None:
    async with SpecClient(myelin_server.base_url) as c:
        assert (await c.call("GET", "/_matrix/client/versions"))[0] == 200
        status, wk = await c.call("GET", "/.well-known/matrix/client")
        assert status == 200 and wk["m.homeserver"]["base_url"] == myelin_server.base_url
        assert (await c.call("GET", "/.well-known/matrix/server"))[0] == 200
        status, keys = await c.call("GET", "/_matrix/key/v2/server")
        assert status == 200 and keys["server_name"] == "localhost"

        status, flows = await c.call("GET", f"{V3}/login")
        assert status == 200 and {"type": "m.login.password"} in flows["flows"]
        assert (await c.call("GET", f"{V3}/register/available?username=walker"))[0] == 200

        reg = await c.register("walker", "pw-1", initial_device_display_name="first")
        token, device = reg["access_token"], reg["device_id"]
        status, err = await c.call("GET", f"{V3}/register/available?username=walker")
        assert (status, err["errcode"]) == (400, "M_USER_IN_USE")
        status, err = await c.call("GET", f"{V3}/register/available?username=Bad%20Name")
        assert (status, err["errcode"]) == (400, "M_INVALID_USERNAME")

        status, caps = await c.call("GET", f"{V3}/capabilities", token=token)
        assert status == 200
        assert caps["capabilities"]["m.room_versions"]["default"] == "12"
        status, who = await c.call("GET", f"{V3}/account/whoami", token=token)
        assert (status, who["user_id"], who["device_id"]) == (200, "@walker:localhost", device)

        # Login with a refresh token, then refresh.
        status, login = await c.call(
            "POST",
            f"{V3}/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "walker"},
                "password": "pw-1",
                "refresh_token": True,
            },
        )
        assert status == 200 and login["expires_in_ms"] > 0
        status, refreshed = await c.call(
            "POST", f"{V3}/refresh", {"refresh_token": login["refresh_token"]}
        )
        assert status == 200 and refreshed["access_token"] != login["access_token"]
        # The old pair stays valid until the new access token is used, then is revoked.
        status, who = await c.call("GET", f"{V3}/account/whoami", token=login["access_token"])
        assert status == 200
        token2 = refreshed["access_token"]
        status, who = await c.call("GET", f"{V3}/account/whoami", token=token2)
        assert who["device_id"] == login["device_id"]
        status, err = await c.call(
            "POST", f"{V3}/refresh", {"refresh_token": login["refresh_token"]}
        )
        assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        status, err = await c.call("GET", f"{V3}/account/whoami", token=login["access_token"])
        assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")

        # Devices.
        status, devs = await c.call("GET", f"{V3}/devices", token=token)
        assert status == 200 and len(devs["devices"]) == 2
        status, dev = await c.call("GET", f"{V3}/devices/{device}", token=token)
        assert (status, dev["display_name"]) == (200, "first")
        assert (await c.call("PUT", f"{V3}/devices/{device}", {"display_name": "x"}, token=token))[
            0
        ] == 200
        status, err = await c.call("GET", f"{V3}/devices/NOPE", token=token)
        assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
        status, uia = await c.call("DELETE", f"{V3}/devices/{login['device_id']}", {}, token=token)
        assert status == 401 and uia["flows"] == [{"stages": ["m.login.password"]}]
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "@walker:localhost"},
            "password": "pw-1",
            "session": uia["session"],
        }
        status, _ = await c.call(
            "DELETE", f"{V3}/devices/{login['device_id']}", {"auth": auth}, token=token
        )
        assert status == 200
        status, err = await c.call("GET", f"{V3}/account/whoami", token=token2)
        assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        status, uia = await c.call("POST", f"{V3}/delete_devices", {"devices": []}, token=token)
        assert status == 401
        auth["session"] = uia["session"]
        auth["password"] = "wrong"
        status, err = await c.call(
            "POST", f"{V3}/delete_devices", {"devices": [], "auth": auth}, token=token
        )
        assert (status, err["errcode"], err["session"]) == (401, "M_FORBIDDEN", uia["session"])

        # Filters.
        user = "%40walker%3Alocalhost"
        filt = {"room": {"timeline": {"limit": 10}}, "event_fields": ["type"]}
        status, created = await c.call("POST", f"{V3}/user/{user}/filter", filt, token=token)
        assert status == 200
        status, got = await c.call(
            "GET", f"{V3}/user/{user}/filter/{created['filter_id']}", token=token
        )
        assert (status, got) == (200, filt)
        status, err = await c.call("GET", f"{V3}/user/{user}/filter/999", token=token)
        assert (status, err["errcode"]) == (404, "M_NOT_FOUND")

        # Password change (UIA), then the old password no longer works.
        status, uia = await c.call(
            "POST", f"{V3}/account/password", {"new_password": "pw-2"}, token=token
        )
        assert status == 401
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "walker"},
            "password": "pw-1",
            "session": uia["session"],
        }
        status, _ = await c.call(
            "POST", f"{V3}/account/password", {"new_password": "pw-2", "auth": auth}, token=token
        )
        assert status == 200
        login_body = {"type": "m.login.password", "user": "walker", "password": "pw-1"}
        status, err = await c.call("POST", f"{V3}/login", login_body)
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        login_body["password"] = "pw-2"
        status, fresh = await c.call("POST", f"{V3}/login", login_body)
        assert status == 200

        assert (await c.call("POST", f"{V3}/logout", {}, token=fresh["access_token"]))[0] == 200
        assert (await c.call("POST", f"{V3}/logout/all", {}, token=token))[0] == 200
        status, err = await c.call("GET", f"{V3}/account/whoami", token=token)
        assert (status, err["errcode"], err["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", False)

        # Deactivation (UIA): afterwards the name stays taken and login is refused.
        login_body["device_id"] = "KEEP"
        status, fresh = await c.call("POST", f"{V3}/login", login_body)
        assert status == 200 and fresh["device_id"] == "KEEP"
        token = fresh["access_token"]
        status, uia = await c.call("POST", f"{V3}/account/deactivate", {}, token=token)
        assert status == 401
        auth.update(password="pw-2", session=uia["session"])
        status, result = await c.call(
            "POST", f"{V3}/account/deactivate", {"auth": auth}, token=token
        )
        assert (status, result["id_server_unbind_result"]) == (200, "no-support")
        status, err = await c.call("POST", f"{V3}/login", login_body)
        assert (status, err["errcode"]) == (403, "M_USER_DEACTIVATED")
        status, err = await c.call("GET", f"{V3}/register/available?username=walker")
        assert (status, err["errcode"]) == (400, "M_USER_IN_USE")

    walked = {op for op, _ in c.checked}
    for path in (
        "GET /_matrix/client/versions",
        "GET /_matrix/key/v2/server",
        f"POST {V3}/register",
        f"POST {V3}/refresh",
        f"POST {V3}/account/deactivate",
        f"POST {V3}/logout/all",
    ):
        assert path in walked


async def test_r0_aliases_and_shared_secret_registration(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", registration_shared_secret="s3cret")
    try:
        async with SpecClient(server.base_url) as c:
            status, nonce = await c.call("GET", "/_synapse/admin/v1/register", validate=False)
            assert status == 200
            mac = hmac.new(b"s3cret", digestmod=hashlib.sha1)
            mac.update(nonce["nonce"].encode() + b"\x00admin1\x00pw\x00admin")
            body = {
                "nonce": nonce["nonce"],
                "username": "admin1",
                "password": "pw",
                "admin": True,
                "mac": mac.hexdigest(),
            }
            status, reg = await c.call("POST", "/_synapse/admin/v1/register", body, validate=False)
            assert (status, reg["user_id"]) == (200, "@admin1:localhost")
            # A nonce is good for one registration only.
            status, err = await c.call("POST", "/_synapse/admin/v1/register", body, validate=False)
            assert (status, err["errcode"]) == (400, "M_UNKNOWN")
            # The old r0 prefix still works, and answers as v3 would.
            status, who = await c.call(
                "GET", "/_matrix/client/r0/account/whoami", token=reg["access_token"]
            )
            assert (status, who["user_id"]) == (200, "@admin1:localhost")
    finally:
        assert server.stop() == 0


async def test_guest_accounts_when_allowed(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", allow_guests=True)
    try:
        async with SpecClient(server.base_url) as c:
            status, guest = await c.call("POST", f"{V3}/register?kind=guest", {})
            assert status == 200 and guest["user_id"].startswith("@guest")
            status, who = await c.call("GET", f"{V3}/account/whoami", token=guest["access_token"])
            assert (status, who["is_guest"]) == (200, True)
            # Guests may list their devices (guest_access.md) but not delete them.
            status, listed = await c.call("GET", f"{V3}/devices", token=guest["access_token"])
            assert status == 200 and len(listed["devices"]) == 1
            status, err = await c.call(
                "POST",
                f"{V3}/delete_devices",
                {"devices": []},
                token=guest["access_token"],
                validate=False,
            )
            assert (status, err["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    finally:
        assert server.stop() == 0


async def test_uia_must_be_done_by_the_device_owner(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        owner = await c.register("owner1", "pw-o")
        await c.register("intruder1", "pw-i")
        path = f"{V3}/devices/{owner['device_id']}"
        status, uia = await c.call("DELETE", path, {}, token=owner["access_token"])
        assert status == 401
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "intruder1"},
            "password": "pw-i",
            "session": uia["session"],
        }
        # The spec lists no 403 here; a different user is refused outright, not retried.
        status, err = await c.call(
            "DELETE", path, {"auth": auth}, token=owner["access_token"], validate=False
        )
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        status, _ = await c.call("GET", path, token=owner["access_token"])
        assert status == 200  # the device is still there
