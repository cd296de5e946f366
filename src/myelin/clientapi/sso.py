"""Single sign-on through a CAS server (client-server-api, modules/sso_login.md).

Login: `GET /login/sso/redirect?redirectUrl=…` sends the browser to the CAS server's
`/login`, which sends it back to our ticket URL with a `ticket`. We check the ticket with
the CAS server's `/proxyValidate`, map the CAS user name to a localpart (the appendix's
"Mapping from other character sets"), register that user if new, and answer a page that
asks the user to confirm they want to sign in to the site named by `redirectUrl`; its link
carries the `loginToken` the client exchanges at `POST /login` (m.login.token).

User-interactive authentication: accounts may prove themselves with `m.login.sso` wherever
a password is accepted. The client opens `/auth/m.login.sso/fallback/web?session=…`, which
says what is being confirmed and links to the CAS server; the ticket URL then completes the
stage when the CAS user is the session's user, and records a mismatch otherwise, so that
the request fails with 403 rather than asking again.

The ticket URL is `/_matrix/client/r0/login/cas/ticket`, the callback existing CAS
deployments of Matrix have registered as their service; `/login/cas/redirect` and the
deprecated `m.login.cas` flow are kept for the clients that still use them (the spec's note
on r0.4.0).

The CAS ticket itself is the proof: it is single-use, bound to our service URL and issued
only after the user signed in at the CAS server, so no cookie ties the callback to the
redirect. The confirmation pages are the spec's defence against a login token or an
authorisation reaching a site the user did not mean.
"""

from __future__ import annotations

import html
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

from myelin.clientapi.context import ClientContext
from myelin.clientapi.http import MatrixError, Request, Response, html_response
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.clientapi.uia import SSO, SSO_MISMATCH
from myelin.core.identifiers import localpart_from_external

log = logging.getLogger("myelin.clientapi.sso")

#: The identity provider ID of the CAS server in `identity_providers` and
#: `/login/sso/redirect/{idpId}`.
CAS_IDP = "cas"
TICKET_PATH = "/_matrix/client/r0/login/cas/ticket"
CAS_NS = "{http://www.yale.edu/tp/cas}"
#: The login token on the confirmation page outlives the spec's suggested five seconds:
#: the user reads the page and clicks before the client exchanges it.
SSO_LOGIN_TOKEN_LIFETIME_MS = 120_000
VALIDATE_TIMEOUT = 10.0
#: A CAS validation answer larger than this is not one.
MAX_VALIDATION_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class CasUser:
    """Who the CAS server says signed in, with their attributes."""

    name: str
    attributes: dict[str, str]


class CasError(Exception):
    """The CAS server refused the ticket or could not be asked."""


def parse_validation(body: bytes) -> CasUser:
    """The user of a CAS 2.0/3.0 `serviceResponse`, or CasError with the server's reason."""
    import xml.etree.ElementTree as ET  # loaded at the first CAS sign-in, not at start-up

    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CasError(f"the CAS server's answer is not XML ({exc})") from None
    success = root.find(f"{CAS_NS}authenticationSuccess")
    if success is None:
        failure = root.find(f"{CAS_NS}authenticationFailure")
        reason = (failure.text or "").strip() if failure is not None else "no success element"
        code = failure.get("code", "") if failure is not None else ""
        raise CasError(f"the CAS server refused the ticket: {code} {reason}".strip())
    user = success.find(f"{CAS_NS}user")
    name = (user.text or "").strip() if user is not None else ""
    if not name:
        raise CasError("the CAS server named no user")
    attributes: dict[str, str] = {}
    attrs = success.find(f"{CAS_NS}attributes")
    if attrs is not None:
        for child in attrs:
            if child.tag.startswith(CAS_NS) and child.text:
                attributes.setdefault(child.tag[len(CAS_NS) :], child.text.strip())
    return CasUser(name, attributes)


class CasClient:
    """Asks the configured CAS server whether a ticket is good."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url.rstrip("/")

    def login_url(self, service: str) -> str:
        return f"{self.server_url}/login?" + urllib.parse.urlencode({"service": service})

    async def validate(self, ticket: str, service: str) -> CasUser:
        import aiohttp  # loaded on first use: most servers never sign anybody in by CAS

        url = f"{self.server_url}/proxyValidate"
        timeout = aiohttp.ClientTimeout(total=VALIDATE_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(url, params={"ticket": ticket, "service": service}) as resp,
            ):
                body = await resp.content.read(MAX_VALIDATION_BYTES + 1)
                if resp.status != 200:
                    raise CasError(f"the CAS server answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CasError(f"the CAS server could not be reached ({exc})") from None
        if len(body) > MAX_VALIDATION_BYTES:
            raise CasError("the CAS server's answer is too large")
        return parse_validation(body)


def login_flows(ctx: ClientContext) -> list[dict[str, Any]]:
    """The SSO entries of `GET /login` (none when no CAS server is configured)."""
    if not ctx.config.cas_server_url:
        return []
    return [
        {"type": "m.login.sso", "identity_providers": [{"id": CAS_IDP, "name": "CAS"}]},
        {"type": "m.login.cas"},
    ]


def install(router: Router, ctx: ClientContext) -> None:
    server = ctx.config.cas_server_url
    if not server:
        return
    cas = CasClient(server)
    users = ctx.users

    def base_url(req: Request) -> str:
        return req.public_base_url(ctx.config.public_baseurl).rstrip("/")

    def service_url(req: Request, **params: str) -> str:
        return f"{base_url(req)}{TICKET_PATH}?" + urllib.parse.urlencode(params)

    async def redirect(req: Request) -> Response:
        idp = req.params.get("idpId")
        if idp is not None and idp != CAS_IDP:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown identity provider {idp!r}")
        target = req.query_param("redirectUrl")
        if not target:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'redirectUrl'")
        return _redirect(cas.login_url(service_url(req, redirectUrl=target)))

    async def fallback(req: Request) -> Response:
        session = req.query_param("session")
        if not session:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'session'")
        found = await users.uia_get(session)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown or expired authentication session")
        method, uri, _user, _completed = found
        link = cas.login_url(service_url(req, session=session))
        return html_response(
            _page(
                "Confirm it is you",
                f"<p>A client is asking to do <code>{html.escape(method)} "
                f"{html.escape(uri)}</code> on your account. To allow it, sign in again "
                "with single sign-on. If you did not expect this, do not continue: "
                "somebody else may hold one of your sessions.</p>"
                f'<p><a href="{html.escape(link)}">Continue with single sign-on</a></p>',
            )
        )

    async def ticket(req: Request) -> Response:
        ticket_value = req.query_param("ticket")
        if not ticket_value:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'ticket'")
        session = req.query_param("session")
        target = req.query_param("redirectUrl")
        if session is None and not target:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'redirectUrl' or 'session'")
        params = {"session": session} if session is not None else {"redirectUrl": str(target)}
        try:
            who = await cas.validate(ticket_value, service_url(req, **params))
        except CasError as exc:
            log.warning("CAS sign-in failed: %s", exc)
            return html_response(
                _page("Sign-in failed", f"<p>{html.escape(str(exc))}. Try again.</p>"), 401
            )
        localpart = localpart_from_external(who.name)
        user_id = users.check_new_localpart(localpart)
        if session is not None:
            return await _complete_uia(session, user_id)
        info = await users.account(user_id)
        if info is None:
            await users.create_account(user_id, None)
            log.info("registered %s at its first CAS sign-in", user_id)
        elif info[1]:
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        token = await users.issue_login_token(user_id, SSO_LOGIN_TOKEN_LIFETIME_MS)
        link = _with_login_token(str(target), token)
        site = urllib.parse.urlsplit(str(target)).netloc or str(target)
        return html_response(
            _page(
                "Continue to your account",
                f"<p>You are signing in as <code>{html.escape(user_id)}</code> to "
                f"<strong>{html.escape(site)}</strong>. Continue only if you started this "
                "sign-in and trust that site.</p>"
                f'<p><a href="{html.escape(link)}">Continue</a></p>',
            )
        )

    async def _complete_uia(session: str, user_id: str) -> Response:
        found = await users.uia_get(session)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown or expired authentication session")
        _method, _uri, session_user, _completed = found
        if session_user != user_id:
            await users.uia_complete_stage(session, SSO_MISMATCH)
            return html_response(
                _page(
                    "Wrong account",
                    "<p>Single sign-on proved a different account than the one asking. "
                    "The request will be refused.</p>",
                )
            )
        await users.uia_complete_stage(session, SSO)
        return html_response(_page("Done", "<p>You may close this window.</p>" + _AUTH_DONE))

    for prefix in CLIENT_PREFIXES:
        router.add("GET", prefix + "/login/sso/redirect", redirect)
        router.add("GET", prefix + "/login/sso/redirect/{idpId}", redirect)
        router.add("GET", prefix + "/login/cas/redirect", redirect)
        router.add("GET", prefix + "/login/cas/ticket", ticket)
        router.add("GET", prefix + f"/auth/{SSO}/fallback/web", fallback)


def _with_login_token(url: str, token: str) -> str:
    """`url` with its `loginToken` parameters replaced by ours (the spec's step 4)."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, True) if k != "loginToken"]
    query.append(("loginToken", token))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _redirect(location: str) -> Response:
    resp = html_response(_page("Redirecting", ""), 302)
    resp.headers.append((b"location", location.encode()))
    return resp


#: The fallback completion script of client-server-api "Fallback".
_AUTH_DONE = """<script>
if (window.onAuthDone) {
    window.onAuthDone();
} else if (window.opener && window.opener.postMessage) {
    window.opener.postMessage("authDone", "*");
}
</script>"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
