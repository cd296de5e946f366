"""Single sign-on through CAS (modules/sso_login.md): login via /login/sso/redirect, and
m.login.sso as a user-interactive authentication stage. A real CAS server runs in the test
(aiohttp on loopback): it issues tickets and answers /proxyValidate as CAS 2.0 does."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from myelin.clientapi.sso import CasError, parse_validation
from myelin.core.identifiers import localpart_from_external
from tests.support.client import SpecClient
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"


@dataclass
class Cas:
    """A CAS server: `tickets` maps an issued ticket to (service, user name)."""

    url: str = ""
    tickets: dict[str, tuple[str, str]] = field(default_factory=dict)
    validations: list[dict[str, str]] = field(default_factory=list)

    def issue(self, service: str, user: str) -> str:
        ticket = f"ST-{len(self.tickets) + 1}"
        self.tickets[ticket] = (service, user)
        return ticket

    async def proxy_validate(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.validations.append(query)
        found = self.tickets.pop(query.get("ticket", ""), None)
        if found is None or found[0] != query.get("service"):
            body = (
                "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'>"
                "<cas:authenticationFailure code='INVALID_TICKET'>not a ticket"
                "</cas:authenticationFailure></cas:serviceResponse>"
            )
        else:
            body = (
                "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'>"
                f"<cas:authenticationSuccess><cas:user>{found[1]}</cas:user>"
                "<cas:attributes><cas:mail>x@example.org</cas:mail></cas:attributes>"
                "</cas:authenticationSuccess></cas:serviceResponse>"
            )
        return web.Response(text=body, content_type="text/xml")


@pytest.fixture
async def cas() -> AsyncIterator[Cas]:
    state = Cas()
    app = web.Application()
    app.router.add_get("/cas/proxyValidate", state.proxy_validate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/cas"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
def sso_server(tmp_path: Path, cas: Cas) -> Iterator[ServerProcess]:
    server = start_server(tmp_path / "hs", env={"MYELIN_CAS_SERVER_URL": cas.url})
    try:
        yield server
    finally:
        assert server.stop() == 0


async def _sign_in(http: aiohttp.ClientSession, base: str, cas: Cas, user: str) -> str:
    """Follow the browser's path: redirect, CAS ticket, confirmation page; the login token."""
    target = "https://client.example/cb?p=1&loginToken=stale"
    async with http.get(
        f"{base}{V3}/login/sso/redirect",
        params={"redirectUrl": target},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    assert location.startswith(f"{cas.url}/login?")
    service = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["service"][0]
    assert service.startswith(f"{base}/_matrix/client/r0/login/cas/ticket?")
    ticket = cas.issue(service, user)
    sep = "&" if "?" in service else "?"
    async with http.get(f"{service}{sep}ticket={ticket}", allow_redirects=False) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "client.example" in page  # the user is told which site gets access
    link = re.search(r'href="([^"]+)"', page)
    assert link is not None
    continue_url = urllib.parse.urlsplit(link.group(1).replace("&amp;", "&"))
    query = urllib.parse.parse_qs(continue_url.query)
    assert continue_url.netloc == "client.example" and query["p"] == ["1"]
    assert len(query["loginToken"]) == 1 and query["loginToken"] != ["stale"]
    return query["loginToken"][0]


async def test_cas_login_registers_then_logs_in_the_same_user(
    sso_server: ServerProcess, cas: Cas
) -> None:
    base = sso_server.base_url
    async with SpecClient(base) as c, aiohttp.ClientSession() as http:
        status, flows = await c.call("GET", f"{V3}/login")
        assert status == 200
        sso = [f for f in flows["flows"] if f["type"] == "m.login.sso"]
        assert sso == [
            {"type": "m.login.sso", "identity_providers": [{"id": "cas", "name": "CAS"}]}
        ]

        token = await _sign_in(http, base, cas, "Cas_User!")
        status, login = await c.call(
            "POST", f"{V3}/login", {"type": "m.login.token", "token": token}
        )
        assert status == 200, login
        assert login["user_id"] == "@cas_user=21:localhost"
        # The token is single-use.
        status, again = await c.call(
            "POST", f"{V3}/login", {"type": "m.login.token", "token": token}
        )
        assert status == 403 and again["errcode"] == "M_FORBIDDEN"
        # The second sign-in reaches the same account.
        token = await _sign_in(http, base, cas, "Cas_User!")
        status, second = await c.call(
            "POST", f"{V3}/login", {"type": "m.login.token", "token": token}
        )
        assert status == 200 and second["user_id"] == login["user_id"]
        assert second["device_id"] != login["device_id"]


async def test_bad_tickets_and_parameters_get_clear_errors(
    sso_server: ServerProcess, cas: Cas
) -> None:
    base = sso_server.base_url
    async with SpecClient(base) as c, aiohttp.ClientSession() as http:
        status, body = await c.call("GET", f"{V3}/login/sso/redirect", validate=False)
        assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
        status, body = await c.call(
            "GET", f"{V3}/login/sso/redirect/github?redirectUrl=https%3A%2F%2Fc", validate=False
        )
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
        async with http.get(
            f"{base}/_matrix/client/r0/login/cas/ticket",
            params={"ticket": "ST-forged", "redirectUrl": "https://client.example/"},
        ) as resp:
            assert resp.status == 401
            assert "loginToken" not in await resp.text()
        assert cas.validations[-1]["ticket"] == "ST-forged"
        # The failure registered nobody.
        status, avail = await c.call("GET", f"{V3}/register/available?username=forged")
        assert status == 200 and avail["available"] is True


async def test_sso_completes_user_interactive_auth_only_for_the_same_user(
    sso_server: ServerProcess, cas: Cas
) -> None:
    base = sso_server.base_url
    async with SpecClient(base) as c, aiohttp.ClientSession() as http:
        reg = await c.register("sso_bob", "pw-bob")
        token = reg["access_token"]
        _, login = await c.call(
            "POST",
            f"{V3}/login",
            {"type": "m.login.password", "user": "sso_bob", "password": "pw-bob"},
        )
        for device, cas_user, expect in (
            (login["device_id"], "other_user", 403),
            (login["device_id"], "SSO_bob", 200),
        ):
            path = f"{V3}/devices/{device}"
            status, challenge = await c.call("DELETE", path, {}, token=token)
            assert status == 401
            assert {"stages": ["m.login.sso"]} in challenge["flows"]
            session = challenge["session"]
            async with http.get(
                f"{base}{V3}/auth/m.login.sso/fallback/web", params={"session": session}
            ) as resp:
                assert resp.status == 200
                page = await resp.text()
            assert "DELETE" in page  # the user is told what they confirm
            link = re.search(r'href="([^"]+)"', page)
            assert link is not None
            location = link.group(1).replace("&amp;", "&")
            service = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["service"][0]
            ticket = cas.issue(service, cas_user)
            async with http.get(f"{service}&ticket={ticket}") as resp:
                done = await resp.text()
                assert resp.status == 200
            # The browser learns the outcome; only a completed stage ends the fallback.
            assert ("onAuthDone" in done) == (expect == 200)
            # A session proven by somebody else is refused outright (403, as when a password
            # stage names another user), not challenged again.
            status, body = await c.call(
                "DELETE", path, {"auth": {"session": session}}, token=token, validate=expect == 200
            )
            assert status == expect, body
        status, _ = await c.call("GET", f"{V3}/devices/{login['device_id']}", token=token)
        assert status == 404


def test_cas_answers_and_the_localpart_mapping() -> None:
    ok = parse_validation(
        b"<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'><cas:authenticationSuccess>"
        b"<cas:user> jos\xc3\xa9 </cas:user><cas:attributes><cas:displayName>J</cas:displayName>"
        b"</cas:attributes></cas:authenticationSuccess></cas:serviceResponse>"
    )
    assert ok.name == "jos\u00e9" and ok.attributes == {"displayName": "J"}
    assert localpart_from_external(ok.name) == "jos=c3=a9"
    assert localpart_from_external("A=b#/_") == "a=3db=23/_"
    for bad in (b"not xml", b"<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'/>"):
        with pytest.raises(CasError):
            parse_validation(bad)
