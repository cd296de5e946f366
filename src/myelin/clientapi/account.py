"""Registration, login, logout, whoami, password change, deactivation, token refresh.

Spec: client-server-api/_index.md ("Client Authentication", "Account registration and
management") and data/api/client-server/{registration,login,logout,refresh,whoami,
password_management,account_deactivation}.yaml.
"""

from __future__ import annotations

import secrets
from typing import Any

from myelin.clientapi import sso
from myelin.clientapi.context import ClientContext
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    bad_json,
    forbidden,
    json_response,
    opt_bool,
    opt_str,
    req_str,
)
from myelin.clientapi.router import CLIENT_PREFIXES, CLIENT_V1_PREFIX, Router
from myelin.clientapi.uia import (
    DUMMY,
    EMAIL_IDENTITY,
    PASSWORD,
    UIAChallenge,
    authenticate,
    identifier_user,
)
from myelin.syncapi import visibility
from myelin.userapi.accountdata import delete_other_devices_pushers
from myelin.userapi.accounts import Session, UserAPIError

REGISTER_FLOWS = [[DUMMY]]
#: How many registration UIA sessions' parameters and results are remembered.
MAX_REMEMBERED_SESSIONS = 10_000
PASSWORD_FLOWS = [[PASSWORD]]
MAX_PASSWORD_LENGTH = 512
TOKEN = "m.login.token"
APPSERVICE = "m.login.application_service"
#: How long an m.login.token token stays valid (the spec's recommended default).
LOGIN_TOKEN_LIFETIME_MS = 120_000


def _paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def session_json(ctx: ClientContext, s: Session) -> dict[str, Any]:
    out: dict[str, Any] = {
        "user_id": s.user_id,
        "access_token": s.access_token,
        "device_id": s.device_id,
        "home_server": ctx.server_name,
    }
    if s.refresh_token is not None:
        out["refresh_token"] = s.refresh_token
    if s.expires_in_ms is not None:
        out["expires_in_ms"] = s.expires_in_ms
    return out


def _check_password_value(password: str | None) -> None:
    if password is not None and len(password) > MAX_PASSWORD_LENGTH:
        raise bad_json("Password is too long")


def install(router: Router, ctx: ClientContext) -> None:
    users = ctx.users

    # Registration's UIA sessions, in this process: the parameters of the request that
    # opened each one (a client may repeat only `auth` afterwards), and the user each
    # finished one registered (repeating a finished request is answered for that user).
    session_params: dict[str, dict[str, Any]] = {}
    session_users: dict[str, str] = {}

    def remember(table: dict[str, Any], key: str, value: Any) -> None:
        if len(table) >= MAX_REMEMBERED_SESSIONS:
            del table[next(iter(table))]
        table[key] = value

    def register_flows() -> list[list[str]]:
        """Dummy, and an e-mail address as the only stage when this server sends e-mail."""
        if ctx.threepids is not None and ctx.threepids.email_enabled:
            return [*REGISTER_FLOWS, [EMAIL_IDENTITY]]
        return REGISTER_FLOWS

    async def register(req: Request) -> Response:
        kind = req.query_param("kind") or "user"
        if kind not in ("user", "guest"):
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
        body = req.json()
        auth = body.get("auth")
        if APPSERVICE in (body.get("type"), auth.get("type") if isinstance(auth, dict) else None):
            return await register_appservice(req, body)
        session_id = auth.get("session") if isinstance(auth, dict) else None
        if isinstance(session_id, str) and session_id in session_params:
            body = {**session_params[session_id], **body}
        username = opt_str(body, "username")
        password = opt_str(body, "password")
        _check_password_value(password)
        device_id = opt_str(body, "device_id")
        display_name = opt_str(body, "initial_device_display_name")
        inhibit = opt_bool(body, "inhibit_login")
        refreshable = opt_bool(body, "refresh_token")
        if kind == "guest":
            if not ctx.config.allow_guest_access:
                raise forbidden("Guest access is disabled")
            user_id = users.check_new_localpart(f"guest{secrets.randbelow(10**12)}")
            await users.create_account(user_id, None, is_guest=True)
        elif "guest_access_token" in body:
            user_id = await upgrade_guest(req, body, username, password)
        else:
            if not ctx.config.registration_open:
                raise forbidden("Registration is disabled")
            done = session_users.get(session_id) if isinstance(session_id, str) else None
            if done is not None:
                user_id = done  # the same finished request again: idempotent
            else:
                if username is not None:
                    user_id = users.check_new_localpart(username.lower())
                    if ctx.appservices is not None:
                        ctx.appservices.check_register(user_id, None)
                    if not await users.is_available(user_id):
                        raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
                else:
                    user_id = users.check_new_localpart(secrets.token_hex(6))
                try:
                    finished = await authenticate(ctx, req, body, register_flows(), None)
                except UIAChallenge as challenge:
                    opened = challenge.extra["session"]
                    if opened not in session_params:
                        kept = {k: v for k, v in body.items() if k not in ("auth", "password")}
                        if password is not None:
                            kept["password"] = password
                        remember(session_params, opened, kept)
                    raise
                await users.create_account(user_id, password)
                if ctx.threepids is not None:  # registered with a validated e-mail address
                    await ctx.threepids.registered(user_id, body.get("auth"))
                session_params.pop(finished, None)
                remember(session_users, finished, user_id)
        if inhibit:
            return json_response({"user_id": user_id, "home_server": ctx.server_name})
        session = await users.login(
            user_id,
            device_id=device_id,
            display_name=display_name,
            ip=req.client_ip,
            refreshable=refreshable,
        )
        return json_response(session_json(ctx, session))

    async def register_appservice(req: Request, body: dict[str, Any]) -> Response:
        """`m.login.application_service`: an AS creates a user in its namespaces, with
        its `as_token` and no other authentication (application-service-api.md)."""
        token = req.access_token()
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing application service token")
        service = ctx.appservices.by_token(token) if ctx.appservices is not None else None
        if service is None or ctx.appservices is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Not an application service token")
        username = req_str(body, "username")
        user_id = users.check_new_localpart(username)
        ctx.appservices.check_register(user_id, service)
        if not await users.is_available(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        await users.create_account(user_id, None)
        if opt_bool(body, "inhibit_login"):
            return json_response({"user_id": user_id, "home_server": ctx.server_name})
        session = await users.login(
            user_id,
            device_id=opt_str(body, "device_id"),
            display_name=opt_str(body, "initial_device_display_name"),
            ip=req.client_ip,
            refreshable=opt_bool(body, "refresh_token"),
        )
        return json_response(session_json(ctx, session))

    async def upgrade_guest(
        req: Request, body: dict[str, Any], username: str | None, password: str | None
    ) -> str:
        """Registration with `guest_access_token`: the guest's own account becomes a full
        one, under the same user ID, which `username` must name (guest_access.md)."""
        if not ctx.config.registration_open:
            raise forbidden("Registration is disabled")
        token = req_str(body, "guest_access_token")
        try:
            info = await users.lookup_token(token)
        except UserAPIError:
            raise forbidden("Unknown guest_access_token") from None
        if not info.is_guest:
            raise forbidden("guest_access_token is not a guest's")
        if username is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Upgrading a guest needs its 'username'")
        if users.check_new_localpart(username.lower()) != info.user_id:
            raise forbidden("guest_access_token does not belong to this username")
        await authenticate(ctx, req, body, REGISTER_FLOWS, None)
        await users.upgrade_guest(info.user_id, password)
        return info.user_id

    async def available(req: Request) -> Response:
        username = req.query_param("username")
        if not username:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'username'")
        user_id = users.check_new_localpart(username.lower())
        if ctx.appservices is not None:
            ctx.appservices.check_register(user_id, None)
        if not await users.is_available(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        return json_response({"available": True})

    async def login_flows(req: Request) -> Response:
        flows: list[dict[str, Any]] = [{"type": PASSWORD}, {"type": TOKEN, "get_login_token": True}]
        if ctx.appservices:
            flows.append({"type": APPSERVICE})
        flows.extend(sso.login_flows(ctx))
        return json_response({"flows": flows})

    async def login_user(body: dict[str, Any], req: Request) -> str:
        """The user a login request proves to be, or M_FORBIDDEN."""
        login_type = req_str(body, "type")
        if login_type == APPSERVICE:
            token = req.access_token()
            service = None
            if token is not None and ctx.appservices is not None:
                service = ctx.appservices.by_token(token)
            if service is None:  # login.yaml: M_FORBIDDEN, as for an unregistered user
                raise forbidden("Not an application service token")
            name = identifier_user(body)
            if name is None:
                raise MatrixError(400, "M_MISSING_PARAM", "Missing identifier")
            user_id = users.user_id_for(name)
            if not service.is_user_in_namespace(user_id):
                raise MatrixError(400, "M_EXCLUSIVE", "User is outside the namespaces")
            if await users.account(user_id) is None:
                raise forbidden("The application service has not registered this user")
            return user_id
        if login_type == TOKEN:
            user_id = await users.consume_login_token(req_str(body, "token"))
            info = await users.account(user_id)
            if info is None or info[1]:
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            return user_id
        if login_type != PASSWORD:
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {login_type}")
        password = req_str(body, "password")
        _check_password_value(password)
        by_3pid = await ctx.threepids.login_user(body) if ctx.threepids is not None else None
        name = identifier_user(body) if by_3pid is None else by_3pid
        if name is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing identifier")
        try:
            user_id = users.user_id_for(name)
        except UserAPIError:
            raise forbidden("Invalid username or password") from None
        if not await users.verify_password(user_id, password):
            info = await users.account(user_id)
            if info is not None and info[1]:
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            raise forbidden("Invalid username or password")
        return user_id

    async def login(req: Request) -> Response:
        body = req.json()
        device_id = opt_str(body, "device_id")
        display_name = opt_str(body, "initial_device_display_name")
        refreshable = opt_bool(body, "refresh_token")
        user_id = await login_user(body, req)
        session = await users.login(
            user_id,
            device_id=device_id,
            display_name=display_name,
            ip=req.client_ip,
            refreshable=refreshable,
        )
        return json_response(session_json(ctx, session))

    async def get_login_token(req: Request) -> Response:
        who = req.user()
        body = req.json_or_empty()
        # Every call is a fresh UIA session (sessions authorise one request only), so the
        # user re-proves their password for each extra client, as the spec requires.
        await authenticate(ctx, req, body, PASSWORD_FLOWS, who.user_id)
        token = await users.issue_login_token(who.user_id, LOGIN_TOKEN_LIFETIME_MS)
        return json_response({"login_token": token, "expires_in_ms": LOGIN_TOKEN_LIFETIME_MS})

    async def refresh(req: Request) -> Response:
        body = req.json()
        token = req_str(body, "refresh_token")
        session = await users.refresh(token)
        out: dict[str, Any] = {"access_token": session.access_token}
        if session.refresh_token is not None:
            out["refresh_token"] = session.refresh_token
        if session.expires_in_ms is not None:
            out["expires_in_ms"] = session.expires_in_ms
        return json_response(out)

    async def logout(req: Request) -> Response:
        who = req.user()
        await users.logout(who.user_id, who.device_id)
        return json_response({})

    async def logout_all(req: Request) -> Response:
        await users.logout_all(req.user().user_id)
        return json_response({})

    async def whoami(req: Request) -> Response:
        who = req.user()
        return json_response(
            {"user_id": who.user_id, "device_id": who.device_id, "is_guest": who.is_guest}
        )

    async def change_password(req: Request) -> Response:
        who = req.user()
        body = req.json()
        new_password = req_str(body, "new_password")
        _check_password_value(new_password)
        if not new_password:
            raise MatrixError(400, "M_WEAK_PASSWORD", "The new password must not be empty")
        logout_devices = opt_bool(body, "logout_devices", default=True)
        await authenticate(ctx, req, body, PASSWORD_FLOWS, who.user_id)
        await users.set_password(
            who.user_id, new_password, keep_device=who.device_id, logout_devices=logout_devices
        )
        if logout_devices:
            await users.db.run(
                lambda t: delete_other_devices_pushers(t, who.user_id, who.device_id)
            )
        return json_response({})

    async def deactivate(req: Request) -> Response:
        who = req.user()
        body = req.json_or_empty()
        id_server = opt_str(body, "id_server")
        erase = opt_bool(body, "erase")
        await authenticate(ctx, req, body, PASSWORD_FLOWS, who.user_id)
        await users.deactivate(who.user_id)
        if erase:  # their events are served redacted to those who joined later
            await users.db.run(lambda t: visibility.mark_erased(t, who.user_id))
        result = "no-support"
        if ctx.threepids is not None:  # its 3PIDs are unbound and forgotten
            result = await ctx.threepids.deactivated(who.user_id, id_server)
        return json_response({"id_server_unbind_result": result})

    router.add("POST", _paths("/register"), register, ratelimit=True)
    router.add("GET", _paths("/register/available"), available, ratelimit=True)
    router.add("GET", _paths("/login"), login_flows)
    router.add("POST", _paths("/login"), login, ratelimit=True)
    router.add(
        "POST", CLIENT_V1_PREFIX + "/login/get_token", get_login_token, auth=True, ratelimit=True
    )
    router.add("POST", _paths("/refresh"), refresh, ratelimit=True)
    router.add("POST", _paths("/logout"), logout, auth=True, allow_guest=True)
    router.add("POST", _paths("/logout/all"), logout_all, auth=True, allow_guest=True)
    router.add("GET", _paths("/account/whoami"), whoami, auth=True, allow_guest=True)
    router.add("POST", _paths("/account/password"), change_password, auth=True, ratelimit=True)
    router.add("POST", _paths("/account/deactivate"), deactivate, auth=True, ratelimit=True)
