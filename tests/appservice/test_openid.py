"""OpenID tokens against a real server: a user requests a token, a third party exchanges
it at the federation userinfo endpoint for the user ID (client-server openid.yaml,
server-server openid.yaml); unknown, missing and other users' tokens are refused."""

from __future__ import annotations

from urllib.parse import quote

import orjson

from tests.support.client import SpecClient
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
USERINFO = "/_matrix/federation/v1/openid/userinfo"


async def _userinfo(c: SpecClient, query: str) -> tuple[int, dict[str, object]]:
    status, raw, _ = await c.raw("GET", USERINFO + query)
    return status, orjson.loads(raw)


async def test_request_token_and_userinfo(myelin_server: ServerProcess) -> None:
    async with SpecClient(myelin_server.base_url) as c:
        alice = await c.register("oid_alice")
        bob = await c.register("oid_bob")
        me = quote(alice["user_id"])
        status, body = await c.call(
            "POST", f"{V3}/user/{me}/openid/request_token", {}, token=alice["access_token"]
        )
        assert status == 200
        assert body["matrix_server_name"] == "localhost"
        assert body["token_type"] == "Bearer" and body["expires_in"] > 0
        token = body["access_token"]
        assert token != alice["access_token"]

        status, info = await _userinfo(c, f"?access_token={quote(token)}")
        assert status == 200 and info == {"sub": alice["user_id"]}

        # The OpenID token is no access token for the client API.
        status, err = await c.call("GET", f"{V3}/account/whoami", token=token)
        assert status == 401

        # Unknown and missing tokens; a token for somebody else.
        status, info = await _userinfo(c, "?access_token=an%2Finvalid%2Ftoken")
        assert status == 401 and info["errcode"] == "M_UNKNOWN_TOKEN"
        status, info = await _userinfo(c, "")
        assert status == 401 and info["errcode"] == "M_MISSING_TOKEN"
        status, err = await c.call(
            "POST",
            f"{V3}/user/{me}/openid/request_token",
            {},
            token=bob["access_token"],
            validate=False,  # the spec lists no error here; 403 as the reference server
        )
        assert status == 403 and err["errcode"] == "M_FORBIDDEN"
