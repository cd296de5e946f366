"""Third-party identifiers (3PIDs) of accounts: e-mail validation, adding, binding on
identity servers, removing and unbinding, and logging in or registering with one.

Spec: client-server-api/_index.md, "Adding Account Administrative Contact Information"
and "Registration" (`m.login.email.identity`), data/api/client-server/
administrative_contact.yaml, registration.yaml (`.../requestToken`), login.yaml
(`m.id.thirdparty` identifiers); identity-service-api for bind and unbind.

This server validates e-mail addresses itself: `requestToken` mails a link to the
address (SMTP relay `smtp_host`), the link's GET marks the session validated, and the
session (`sid`, `client_secret`) then proves the address. Sessions of an identity server
are accepted too when the client names it (`id_server`, deprecated `POST /account/3pid`).
Phone numbers (msisdn) cannot be validated here: this server sends no SMS.
"""

from __future__ import annotations

import logging
import re
from html import escape
from typing import Any
from urllib.parse import urlencode

from myelin.clientapi.context import ClientContext
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    bad_json,
    forbidden,
    html_response,
    invalid_param,
    json_response,
    opt_bool,
    opt_dict,
    opt_str,
    req_str,
)
from myelin.clientapi.identity import IdentityClient, IdentityError, check_id_server
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.clientapi.uia import EMAIL_IDENTITY, PASSWORD, authenticate
from myelin.server.config import Config
from myelin.storage import Database
from myelin.userapi.mailer import Mailer
from myelin.userapi.threepids import MEDIA, ThreepidStore, canonical_address

log = logging.getLogger("myelin.clientapi.threepid")

#: The link of validation e-mails (not a Matrix endpoint: a page for a browser).
SUBMIT_PATH = "/_myelin/client/email/submit_token"
#: registration.yaml: client_secret is 1-255 of [0-9a-zA-Z.=_-].
_CLIENT_SECRET = re.compile(r"^[0-9a-zA-Z.=_-]{1,255}\Z")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\Z")
MAX_SEND_ATTEMPT = 2**53 - 1
UNSTABLE_PREFIX = "/_matrix/client/unstable"


class ThreepidService:
    """What the 3PID endpoints, login, registration and deactivation share."""

    def __init__(self, config: Config, store: ThreepidStore, identity: IdentityClient) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.mailer: Mailer | None = None
        if config.smtp_host:
            host = (
                config.server_name.rsplit(":", 1)[0]
                if "]" not in config.server_name
                else "localhost"
            )
            self.mailer = Mailer(
                config.smtp_host, config.smtp_port, config.smtp_from or f"myelin@{host}"
            )

    @classmethod
    async def open(cls, config: Config, db: Database, identity: IdentityClient) -> ThreepidService:
        return cls(config, await ThreepidStore.open(db), identity)

    @property
    def email_enabled(self) -> bool:
        return self.mailer is not None

    async def close(self) -> None:
        await self.identity.close()

    # -- pieces other endpoints use ------------------------------------------------------

    async def login_user(self, body: dict[str, Any]) -> str | None:
        """The account a login's 3PID identifier names (`identifier` of type
        m.id.thirdparty, or the deprecated top-level `medium`/`address`); None when the
        login names a user otherwise. An unknown address is M_FORBIDDEN, the same answer
        as a wrong password, so addresses cannot be probed."""
        ident = body.get("identifier")
        medium: Any = None
        address: Any = None
        if isinstance(ident, dict) and ident.get("type") == "m.id.thirdparty":
            medium, address = ident.get("medium"), ident.get("address")
        elif isinstance(ident, dict) and ident.get("type") == "m.id.phone":
            raise MatrixError(400, "M_UNKNOWN", "Phone number identifiers are not supported")
        elif ident is None and "medium" in body and "user" not in body:
            medium, address = body.get("medium"), body.get("address")
        else:
            return None
        if not isinstance(medium, str) or not isinstance(address, str) or not address:
            raise bad_json("A third-party identifier needs string medium and address")
        owner = await self.store.owner(medium, address)
        if owner is None:
            raise forbidden("Invalid username or password")
        return owner

    async def check_email_stage(self, auth: dict[str, Any]) -> tuple[str, str] | None:
        """The `m.login.email.identity` UIA stage: None when `threepid_creds` name a
        validated session of this server, else (errcode, error) of the failed attempt."""
        creds = auth.get("threepid_creds", auth.get("threepidCreds"))
        if not isinstance(creds, dict):
            raise bad_json("auth.threepid_creds must be an object")
        sid, secret = creds.get("sid"), creds.get("client_secret")
        if not isinstance(sid, str) or not isinstance(secret, str):
            raise bad_json("threepid_creds needs string sid and client_secret")
        found = await self.store.validated(sid, secret)
        if found is None or found.medium != "email":
            return ("M_THREEPID_AUTH_FAILED", "The e-mail address has not been validated")
        if await self.store.owner(found.medium, found.address) is not None:
            return ("M_THREEPID_IN_USE", "The e-mail address is already in use")
        return None

    async def registered(self, user_id: str, auth: Any) -> None:
        """After registration through `m.login.email.identity`: the address joins the
        new account."""
        if not isinstance(auth, dict) or auth.get("type") != EMAIL_IDENTITY:
            return
        creds = auth.get("threepid_creds", auth.get("threepidCreds"))
        if not isinstance(creds, dict):
            return
        sid, secret = creds.get("sid"), creds.get("client_secret")
        if isinstance(sid, str) and isinstance(secret, str):
            found = await self.store.validated(sid, secret)
            if found is not None:
                await self.store.add(user_id, found.medium, found.address, found.validated_at)

    async def unbind_everywhere(
        self, user_id: str, medium: str, address: str, id_server: str | None, *, strict: bool
    ) -> str:
        """Unbind the 3PID from `id_server`, or from every identity server this server
        bound it on; "success" when at least one unbind worked and none failed.
        `strict`: an identity server's Matrix error is passed to the client."""
        servers = [id_server] if id_server else []
        if not servers:
            servers = [s for _, _, s in await self.store.bindings(user_id, medium, address)]
        if not servers:
            return "no-support"
        ok = True
        for server in servers:
            try:
                await self.identity.unbind(server, user_id, medium, address)
            except IdentityError as exc:
                if strict and exc.status in (400, 403, 404) and exc.errcode != "M_UNKNOWN":
                    raise
                log.info("unbind of %s from %s failed: %s", medium, server, exc)
                ok = False
                continue
            await self.store.remove_binding(user_id, medium, address, server)
        return "success" if ok else "no-support"

    async def deactivated(self, user_id: str, id_server: str | None) -> str:
        """Unbind and forget every 3PID of a deactivated account (account_deactivation.yaml:
        `id_server_unbind_result`)."""
        result = "success"
        done: set[tuple[str, str]] = set()
        for medium, address, _ in await self.store.bindings(user_id):
            if (medium, address) in done:
                continue
            done.add((medium, address))
            outcome = await self.unbind_everywhere(user_id, medium, address, None, strict=False)
            if outcome != "success":
                result = "no-support"
        if id_server:
            for pid in await self.store.of_user(user_id):
                if (pid.medium, pid.address) not in done:
                    outcome = await self.unbind_everywhere(
                        user_id, pid.medium, pid.address, id_server, strict=False
                    )
                    if outcome != "success":
                        result = "no-support"
        if not done and not id_server:
            result = "no-support"
        await self.store.remove_all(user_id)
        return result


def _paths(suffix: str, unstable: bool = False) -> list[str]:
    prefixes = [*CLIENT_PREFIXES, UNSTABLE_PREFIX] if unstable else list(CLIENT_PREFIXES)
    return [p + suffix for p in prefixes]


def _client_secret(body: dict[str, Any]) -> str:
    secret = req_str(body, "client_secret")
    if not _CLIENT_SECRET.match(secret):
        raise invalid_param("client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]")
    return secret


def _send_attempt(body: dict[str, Any]) -> int:
    value = body.get("send_attempt")
    if value is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'send_attempt'")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEND_ATTEMPT:
        raise bad_json("send_attempt must be a non-negative integer")
    return value


def install(router: Router, ctx: ClientContext, service: ThreepidService) -> None:
    store = service.store
    identity = service.identity

    def request_token(purpose: str) -> Any:
        async def handler(req: Request) -> Response:
            body = req.json()
            secret = _client_secret(body)
            email = req_str(body, "email")
            attempt = _send_attempt(body)
            next_link = opt_str(body, "next_link")
            if not _EMAIL.match(email) or len(email) > 320:
                raise invalid_param("email is not an e-mail address")
            if service.mailer is None:
                raise MatrixError(
                    400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This server sends no e-mail"
                )
            owner = await store.owner("email", email)
            if purpose == "password" and owner is None:
                raise MatrixError(400, "M_THREEPID_NOT_FOUND", "No account has this address")
            if purpose != "password" and owner is not None:
                raise MatrixError(400, "M_THREEPID_IN_USE", "This address is already in use")
            session = await store.request_token("email", email, secret, attempt, next_link)
            if session.token is not None:
                base = req.public_base_url(ctx.config.public_baseurl)
                query = urlencode(
                    {"token": session.token, "client_secret": secret, "sid": session.session_id}
                )
                link = f"{base}{SUBMIT_PATH}?{query}"
                await service.mailer.send(
                    email,
                    f"Confirm your e-mail address on {ctx.server_name}",
                    "Somebody asked to use this address with a Matrix account on "
                    f"{ctx.server_name}. If it was you, confirm by opening this link:\n\n"
                    f"{link}\n\nIf it was not you, ignore this message.\n",
                )
            return json_response({"sid": session.session_id})

        return handler

    async def msisdn_token(req: Request) -> Response:
        req.json()
        raise MatrixError(
            400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This server cannot send text messages"
        )

    async def submit_token(req: Request) -> Response:
        sid = req.query_param("sid")
        secret = req.query_param("client_secret")
        token = req.query_param("token")
        if not sid or not secret or not token:
            raise MatrixError(400, "M_MISSING_PARAM", "Needs sid, client_secret and token")
        next_link = await store.submit_token(sid, secret, token)
        if next_link is not None and next_link.startswith(("https://", "http://")):
            page = f'<p>Address confirmed. <a href="{escape(next_link)}">Continue</a></p>'
        else:
            page = "<p>Address confirmed. You may close this page.</p>"
        return html_response(f"<!DOCTYPE html><html><body>{page}</body></html>")

    async def list_3pids(req: Request) -> Response:
        pids = await store.of_user(req.user().user_id)
        return json_response({"threepids": [p.to_json() for p in pids]})

    async def proven(
        sid: str, secret: str, id_server: str | None, id_token: str | None
    ) -> tuple[str, str, int]:
        """(medium, address, validated_at) the session proves: this server's own session,
        else the named identity server's."""
        found = await store.validated(sid, secret)
        if found is not None:
            return found.medium, found.address, found.validated_at
        if id_server is not None:
            checked = check_id_server(id_server)
            answer = await identity.validated_3pid(checked, id_token, sid, secret)
            medium, address = answer.get("medium"), answer.get("address")
            at = answer.get("validated_at")
            if isinstance(medium, str) and isinstance(address, str) and medium in MEDIA:
                return medium, address, at if isinstance(at, int) else 0
        raise MatrixError(400, "M_THREEPID_AUTH_FAILED", "The 3PID has not been validated")

    async def add_3pid_deprecated(req: Request) -> Response:
        who = req.user()
        body = req.json()
        creds = opt_dict(body, "three_pid_creds") or opt_dict(body, "threePidCreds")
        if creds is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'three_pid_creds'")
        sid = req_str(creds, "sid")
        secret = _client_secret(creds)
        id_server = opt_str(creds, "id_server")
        id_token = opt_str(creds, "id_access_token")
        medium, address, at = await proven(sid, secret, id_server, id_token)
        await store.add(who.user_id, medium, address, at)
        if opt_bool(body, "bind") and id_server is not None and id_token is not None:
            await bind_session(who.user_id, id_server, id_token, sid, secret, (medium, address))
        return json_response({})

    async def add_3pid(req: Request) -> Response:
        who = req.user()
        body = req.json()
        sid = req_str(body, "sid")
        secret = _client_secret(body)
        await authenticate(ctx, req, body, [[PASSWORD]], who.user_id)
        medium, address, at = await proven(sid, secret, None, None)
        await store.add(who.user_id, medium, address, at)
        return json_response({})

    async def bind_session(
        user_id: str,
        id_server: str,
        id_token: str,
        sid: str,
        secret: str,
        known: tuple[str, str] | None = None,
    ) -> None:
        answer = await identity.bind(check_id_server(id_server), id_token, sid, secret, user_id)
        medium, address = answer.get("medium"), answer.get("address")
        if not (isinstance(medium, str) and isinstance(address, str)):
            if known is None:
                raise MatrixError(502, "M_UNKNOWN", "The identity server's answer names no 3PID")
            medium, address = known
        await store.add_binding(user_id, medium, canonical_address(medium, address), id_server)

    async def bind_3pid(req: Request) -> Response:
        who = req.user()
        body = req.json()
        sid = req_str(body, "sid")
        secret = _client_secret(body)
        id_server = check_id_server(req_str(body, "id_server"))
        id_token = req_str(body, "id_access_token")
        await bind_session(who.user_id, id_server, id_token, sid, secret)
        return json_response({})

    def medium_address(body: dict[str, Any]) -> tuple[str, str, str | None]:
        medium = req_str(body, "medium")
        if medium not in MEDIA:
            raise invalid_param("medium must be 'email' or 'msisdn'")
        address = canonical_address(medium, req_str(body, "address"))
        id_server = opt_str(body, "id_server")
        return medium, address, check_id_server(id_server) if id_server is not None else None

    async def delete_3pid(req: Request) -> Response:
        who = req.user()
        medium, address, id_server = medium_address(req.json())
        result = await service.unbind_everywhere(
            who.user_id, medium, address, id_server, strict=False
        )
        await store.remove(who.user_id, medium, address)
        return json_response({"id_server_unbind_result": result})

    async def unbind_3pid(req: Request) -> Response:
        who = req.user()
        medium, address, id_server = medium_address(req.json())
        result = await service.unbind_everywhere(
            who.user_id, medium, address, id_server, strict=True
        )
        return json_response({"id_server_unbind_result": result})

    for purpose, suffix in (
        ("register", "/register/email/requestToken"),
        ("account", "/account/3pid/email/requestToken"),
        ("password", "/account/password/email/requestToken"),
    ):
        router.add("POST", _paths(suffix), request_token(purpose), ratelimit=True)
    for suffix in (
        "/register/msisdn/requestToken",
        "/account/3pid/msisdn/requestToken",
        "/account/password/msisdn/requestToken",
    ):
        router.add("POST", _paths(suffix), msisdn_token, ratelimit=True)
    router.add("GET", SUBMIT_PATH, submit_token, ratelimit=True)
    router.add("GET", _paths("/account/3pid"), list_3pids, auth=True)
    router.add("POST", _paths("/account/3pid"), add_3pid_deprecated, auth=True)
    router.add("POST", _paths("/account/3pid/add"), add_3pid, auth=True)
    router.add("POST", _paths("/account/3pid/bind", unstable=True), bind_3pid, auth=True)
    router.add("POST", _paths("/account/3pid/delete"), delete_3pid, auth=True)
    router.add("POST", _paths("/account/3pid/unbind", unstable=True), unbind_3pid, auth=True)
