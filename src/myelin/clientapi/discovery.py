"""Endpoints that describe the server: versions, .well-known, capabilities, the key
server, the shared-secret admin registration, and the human page at `/`."""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import time

from myelin import __version__
from myelin.clientapi.account import session_json
from myelin.clientapi.context import ClientContext
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    bad_json,
    forbidden,
    html_response,
    json_response,
    opt_bool,
    opt_str,
    req_str,
)
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS

#: Spec versions whose endpoints this server implements the way those versions describe.
SPEC_VERSIONS = ["r0.6.1", *(f"v1.{n}" for n in range(1, 13))]
KEY_VALIDITY_MS = 24 * 3600 * 1000
NONCE_LIFETIME_S = 60.0


def install(router: Router, ctx: ClientContext) -> None:
    config = ctx.config
    nonces: dict[str, float] = {}

    async def versions(req: Request) -> Response:
        return json_response({"versions": SPEC_VERSIONS, "unstable_features": {}})

    async def wellknown_client(req: Request) -> Response:
        base_url = req.public_base_url(config.public_baseurl)
        return json_response({"m.homeserver": {"base_url": base_url}})

    async def wellknown_server(req: Request) -> Response:
        host = (
            config.server_name.rsplit(":", 1)[0]
            if "]" not in config.server_name
            else (config.server_name.split("]")[0] + "]")
        )
        port = config.tls_port if config.tls_port is not None else config.port
        return json_response({"m.server": f"{host}:{port}"})

    async def capabilities(req: Request) -> Response:
        available = {
            v: "stable" if rv.stable else "unstable" for v, rv in KNOWN_ROOM_VERSIONS.items()
        }
        return json_response(
            {
                "capabilities": {
                    "m.change_password": {"enabled": True},
                    "m.room_versions": {
                        "default": config.default_room_version,
                        "available": available,
                    },
                    "m.set_displayname": {"enabled": True},
                    "m.set_avatar_url": {"enabled": True},
                    # Addresses can be added when this server mails validation links.
                    "m.3pid_changes": {
                        "enabled": ctx.threepids is not None and ctx.threepids.email_enabled
                    },
                    "m.get_login_token": {"enabled": not req.user().is_guest},
                }
            }
        )

    async def server_keys(req: Request) -> Response:
        key = ctx.key
        doc = {
            "server_name": config.server_name,
            "valid_until_ts": int(time.time() * 1000) + KEY_VALIDITY_MS,
            "verify_keys": {key.key_id: {"key": key.public_key_b64}},
            "old_verify_keys": {},
        }
        return json_response(key.sign_json(config.server_name, doc))

    async def admin_nonce(req: Request) -> Response:
        if not config.registration_shared_secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        now = time.monotonic()
        for stale in [n for n, t in nonces.items() if now - t > NONCE_LIFETIME_S]:
            del nonces[stale]
        nonce = secrets.token_hex(32)
        nonces[nonce] = now
        return json_response({"nonce": nonce})

    async def admin_register(req: Request) -> Response:
        secret = config.registration_shared_secret
        if not secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        body = req.json()
        nonce = req_str(body, "nonce")
        username = req_str(body, "username")
        password = req_str(body, "password")
        admin = opt_bool(body, "admin")
        mac = req_str(body, "mac")
        opt_str(body, "displayname")  # type-checked; profiles are not stored here
        issued = nonces.pop(nonce, None)
        if issued is None or time.monotonic() - issued > NONCE_LIFETIME_S:
            raise MatrixError(400, "M_UNKNOWN", "Unrecognised nonce")
        expected = shared_secret_mac(secret, nonce, username, password, admin)
        if not hmac.compare_digest(expected, mac.lower()):
            raise forbidden("HMAC incorrect")
        if "\x00" in username or "\x00" in password:
            raise bad_json("Invalid username or password")
        user_id = ctx.users.check_new_localpart(username.lower())
        await ctx.users.create_account(user_id, password, is_admin=admin)
        session = await ctx.users.login(
            user_id, device_id=None, display_name=None, ip=req.client_ip
        )
        return json_response(session_json(ctx, session))

    async def front_page(req: Request) -> Response:
        return html_response(front_page_html(ctx, req.public_base_url(config.public_baseurl)))

    router.add("GET", "/_matrix/client/versions", versions)
    router.add("GET", "/.well-known/matrix/client", wellknown_client)
    router.add("GET", "/.well-known/matrix/server", wellknown_server)
    router.add(
        "GET",
        [p + "/capabilities" for p in CLIENT_PREFIXES],
        capabilities,
        auth=True,
        allow_guest=True,
    )
    router.add("GET", ["/_matrix/key/v2/server", "/_matrix/key/v2/server/{key_id}"], server_keys)
    router.add("GET", "/_synapse/admin/v1/register", admin_nonce)
    router.add("POST", "/_synapse/admin/v1/register", admin_register, ratelimit=True)
    router.add("GET", ["/", "/_matrix/static/", "/_matrix/static"], front_page)


def shared_secret_mac(secret: str, nonce: str, username: str, password: str, admin: bool) -> str:
    """HMAC-SHA1 over nonce, username, password and admin flag, NUL-separated, in hex."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    return mac.hexdigest()


def front_page_html(ctx: ClientContext, base_url: str) -> str:
    c = ctx.config
    name = html.escape(c.server_name)
    url = html.escape(base_url)
    reg = (
        "open: any client can create an account here"
        if c.registration_open
        else ("closed: an admin creates accounts with <code>myelin user create</code>")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Myelin on {name}</title></head>
<body>
<h1>Myelin {html.escape(__version__)}</h1>
<p>This is a <a href="https://matrix.org/">Matrix</a> homeserver for <b>{name}</b>.
It speaks the Matrix Client-Server API; it is not a chat client itself.</p>
<h2>Connecting a client</h2>
<ol>
<li>Open any Matrix client (Element, nheko, gomuks, matrix-commander ...).</li>
<li>Choose a custom homeserver and enter <code>{url}</code>.</li>
<li>Sign in as <code>@yourname:{name}</code>, or register.</li>
</ol>
<p>Registration is {reg}.</p>
<p>Machine-readable: <a href="/_matrix/client/versions">/_matrix/client/versions</a>,
<a href="/.well-known/matrix/client">/.well-known/matrix/client</a>.</p>
</body></html>
"""
