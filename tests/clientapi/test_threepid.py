"""Third-party identifiers and third-party invites against a real server, with a real SMTP
listener and a small identity server (HTTPS, self-signed) written here, both on loopback.

Covers: e-mail validation (requestToken, the mailed link), registration with
`m.login.email.identity`, login with an `m.id.thirdparty` identifier, listing and
deleting 3PIDs, binding and unbinding on the identity server (unbind signed by the
homeserver), deactivation unbinding, and the third-party invite round trip (lookup,
store-invite, `m.room.third_party_invite`, `/3pid/onbind`, key validity, join).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import nacl.signing
import orjson
import pytest
from aiohttp import web

from tests.support.client import SpecClient
from tests.support.server import ServerProcess, free_port, start_server

V3 = "/_matrix/client/v3"
ONBIND = "/_matrix/federation/v1/3pid/onbind"
ID_TOKEN = "id-access-token"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# ------------------------------------------------------------------------- SMTP listener


@dataclass
class MailSink:
    """A minimal SMTP server: every message accepted is put on `messages` (to, bytes)."""

    messages: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await reply("220 localhost test SMTP")
        rcpt = ""
        while line := await reader.readline():
            cmd = line.decode().strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                await reply("250 localhost")
            elif verb == "MAIL":
                await reply("250 OK")
            elif verb == "RCPT":
                rcpt = cmd.split(":", 1)[1].strip().strip("<>")
                await reply("250 OK")
            elif verb == "DATA":
                await reply("354 end with .")
                data = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    data += chunk
                self.messages.put_nowait((rcpt, data))
                await reply("250 queued")
            elif verb == "QUIT":
                await reply("221 bye")
                break
            else:
                await reply("500 unrecognized")
        writer.close()


# ---------------------------------------------------------------------- identity server


@dataclass
class IdentityServer:
    """Enough of identity-service-api v2 for a homeserver: validated sessions (made by the
    test), bind, unbind, hashed lookup, store-invite and key validity, with an Ed25519
    key the test can revoke."""

    name: str = ""
    key: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    pepper: str = "pepper"
    sessions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    bindings: dict[tuple[str, str], str] = field(default_factory=dict)
    invites: list[dict[str, Any]] = field(default_factory=list)
    unbind_auth: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)

    @property
    def public_key(self) -> str:
        return b64(bytes(self.key.verify_key))

    def sign(self, value: dict[str, Any]) -> dict[str, Any]:
        sig = self.key.sign(canonical(value)).signature
        return {**value, "signatures": {self.name: {"ed25519:0": b64(sig)}}}

    def authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {ID_TOKEN}"

    def app(self) -> web.Application:
        routes = web.RouteTableDef()
        base = "/_matrix/identity/v2"

        @routes.get(base + "/hash_details")
        async def hash_details(request: web.Request) -> web.Response:
            if not self.authorised(request):
                return web.json_response({"errcode": "M_UNAUTHORIZED"}, status=401)
            return web.json_response({"lookup_pepper": self.pepper, "algorithms": ["sha256"]})

        @routes.post(base + "/lookup")
        async def lookup(request: web.Request) -> web.Response:
            body = await request.json()
            assert self.authorised(request) and body["algorithm"] == "sha256"
            mappings = {}
            for (medium, address), mxid in self.bindings.items():
                digest = hashlib.sha256(f"{address} {medium} {self.pepper}".encode()).digest()
                hashed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                if hashed in body["addresses"]:
                    mappings[hashed] = mxid
            return web.json_response({"mappings": mappings})

        @routes.post(base + "/3pid/bind")
        async def bind(request: web.Request) -> web.Response:
            body = await request.json()
            assert self.authorised(request)
            medium, address, secret = self.sessions[body["sid"]]
            if secret != body["client_secret"]:
                return web.json_response({"errcode": "M_NO_VALID_SESSION"}, status=400)
            self.bindings[(medium, address)] = body["mxid"]
            return web.json_response(
                self.sign({"medium": medium, "address": address, "mxid": body["mxid"]})
            )

        @routes.post(base + "/3pid/unbind")
        async def unbind(request: web.Request) -> web.Response:
            body = await request.json()
            self.unbind_auth.append(request.headers.get("Authorization", ""))
            pid = (body["threepid"]["medium"], body["threepid"]["address"])
            if self.bindings.get(pid) != body["mxid"]:
                return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
            del self.bindings[pid]
            return web.json_response({})

        @routes.post(base + "/store-invite")
        async def store_invite(request: web.Request) -> web.Response:
            body = await request.json()
            assert self.authorised(request)
            token = f"tok{len(self.invites)}"
            self.invites.append({**body, "token": token})
            url = f"https://{self.name}{base}/pubkey/isvalid"
            return web.json_response(
                {
                    "token": token,
                    "display_name": "in...@example.org",
                    "public_keys": [{"public_key": self.public_key, "key_validity_url": url}],
                }
            )

        @routes.get(base + "/pubkey/isvalid")
        async def isvalid(request: web.Request) -> web.Response:
            key = request.query.get("public_key", "")
            valid = key == self.public_key and key not in self.revoked
            return web.json_response({"valid": valid})

        app = web.Application()
        app.add_routes(routes)
        return app


def _make_cert(directory: Path) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the identity server's certificate")
    cert, key = directory / "id.crt", directory / "id.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@dataclass
class World:
    server: ServerProcess
    mail: MailSink
    ids: IdentityServer


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    mail_port = free_port()
    mail = MailSink(port=mail_port)
    smtp = await asyncio.start_server(mail.handle, "127.0.0.1", mail_port)
    ids = IdentityServer()
    runner = web.AppRunner(ids.app())
    await runner.setup()
    id_port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", id_port, ssl_context=_make_cert(tmp_path))
    await site.start()
    ids.name = f"127.0.0.1:{id_port}"
    server = await asyncio.to_thread(
        start_server,
        tmp_path / "hs",
        registration="open",
        smtp_host="127.0.0.1",
        smtp_port=mail_port,
        env={"MYELIN_IDENTITY_SERVER_TLS_VERIFY": "false"},
    )
    try:
        yield World(server, mail, ids)
    finally:
        await asyncio.to_thread(server.stop)
        await runner.cleanup()
        smtp.close()
        await smtp.wait_closed()


async def validate_email(c: SpecClient, w: World, path: str, address: str) -> tuple[str, str]:
    """requestToken, read the mail, follow its link: (sid, client_secret)."""
    secret = "Secret.=_-1"
    body = {"client_secret": secret, "email": address, "send_attempt": 1}
    status, answer = await c.call("POST", V3 + path, body)
    assert status == 200, answer
    to, raw = await asyncio.wait_for(w.mail.messages.get(), 10)
    assert to == address
    text = message_from_bytes(raw).get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = re.search(r"(http\S+)", text)
    assert link is not None, text
    # The same attempt again is a retry: same session, no second mail.
    status, again = await c.call("POST", V3 + path, body)
    assert (status, again["sid"]) == (200, answer["sid"])
    assert w.mail.messages.empty()
    url = urlsplit(link.group(1))
    status, page, _ = await c.raw("GET", f"{url.path}?{url.query}")
    assert status == 200, page
    return answer["sid"], secret


async def test_register_with_email_then_login_with_it(world: World) -> None:
    async with SpecClient(world.server.base_url) as c:
        status, challenge = await c.call(
            "POST", V3 + "/register", {"username": "mailer", "password": "pw-mail"}
        )
        assert status == 401
        assert {"stages": ["m.login.email.identity"]} in challenge["flows"]
        sid, secret = await validate_email(
            c, world, "/register/email/requestToken", "Mailer@Example.org"
        )
        auth = {
            "type": "m.login.email.identity",
            "session": challenge["session"],
            "threepid_creds": {"sid": sid, "client_secret": secret},
        }
        status, reg = await c.call(
            "POST", V3 + "/register", {"username": "mailer", "password": "pw-mail", "auth": auth}
        )
        assert status == 200, reg
        status, caps = await c.call("GET", V3 + "/capabilities", token=reg["access_token"])
        assert caps["capabilities"]["m.3pid_changes"] == {"enabled": True}
        status, pids = await c.call("GET", V3 + "/account/3pid", token=reg["access_token"])
        assert status == 200
        assert [(p["medium"], p["address"]) for p in pids["threepids"]] == [
            ("email", "mailer@example.org")
        ]
        ident = {"type": "m.id.thirdparty", "medium": "email", "address": "MAILER@example.org"}
        status, login = await c.call(
            "POST",
            V3 + "/login",
            {"type": "m.login.password", "identifier": ident, "password": "pw-mail"},
        )
        assert (status, login.get("user_id")) == (200, "@mailer:localhost"), login
        ident["address"] = "nobody@example.org"
        status, err = await c.call(
            "POST",
            V3 + "/login",
            {"type": "m.login.password", "identifier": ident, "password": "pw-mail"},
        )
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        # The address is taken now: a new registration session for it is refused.
        status, err = await c.call(
            "POST",
            V3 + "/register/email/requestToken",
            {"client_secret": "other", "email": "mailer@example.org", "send_attempt": 1},
        )
        assert (status, err["errcode"]) == (400, "M_THREEPID_IN_USE")


async def test_request_token_bad_input_and_unvalidated_sessions(world: World) -> None:
    async with SpecClient(world.server.base_url) as c:
        reg = await c.register("badin", "pw-badin")
        token = reg["access_token"]
        path = V3 + "/account/3pid/email/requestToken"
        for body, errcode in [
            (
                {"client_secret": "no spaces!", "email": "a@b.c", "send_attempt": 1},
                "M_INVALID_PARAM",
            ),
            (
                {"client_secret": "ok", "email": "not-an-address", "send_attempt": 1},
                "M_INVALID_PARAM",
            ),
            ({"client_secret": "ok", "email": "a@b.c", "send_attempt": "1"}, "M_BAD_JSON"),
        ]:
            status, err = await c.call("POST", path, body, token=token)
            assert (status, err["errcode"]) == (400, errcode), (body, err)
        status, answer = await c.call(
            "POST",
            path,
            {"client_secret": "ok", "email": "x@y.org", "send_attempt": 1},
            token=token,
        )
        assert status == 200
        await asyncio.wait_for(world.mail.messages.get(), 10)
        # Not validated yet (the link was not followed): adding it is refused.
        creds = {"sid": answer["sid"], "client_secret": "ok"}
        status, err = await c.call(
            "POST", V3 + "/account/3pid", {"three_pid_creds": creds}, token=token
        )
        assert (status, err["errcode"]) == (400, "M_THREEPID_AUTH_FAILED")
        # A forged token in the link is refused.
        status, _, _ = await c.raw(
            "GET",
            f"/_myelin/client/email/submit_token?sid={answer['sid']}&client_secret=ok&token=x",
        )
        assert status == 400
        status, pids = await c.call("GET", V3 + "/account/3pid", token=token)
        assert (status, pids["threepids"]) == (200, [])


async def test_bind_delete_and_deactivate_unbind(world: World) -> None:
    ids = world.ids
    async with SpecClient(world.server.base_url) as c:
        reg = await c.register("binder", "pw-bind")
        token, user = reg["access_token"], reg["user_id"]
        ids.sessions["s1"] = ("email", "b1@example.org", "sec1")
        bind = {
            "sid": "s1",
            "client_secret": "sec1",
            "id_server": ids.name,
            "id_access_token": ID_TOKEN,
        }
        status, body = await c.call("POST", V3 + "/account/3pid/bind", bind, token=token)
        assert status == 200, body
        assert ids.bindings[("email", "b1@example.org")] == user
        # Unbind through delete, without naming the server: the one bound on is used,
        # and the request is signed by the homeserver.
        status, body = await c.call(
            "POST",
            V3 + "/account/3pid/delete",
            {"medium": "email", "address": "b1@example.org"},
            token=token,
        )
        assert (status, body) == (200, {"id_server_unbind_result": "success"})
        assert ("email", "b1@example.org") not in ids.bindings
        assert ids.unbind_auth[-1].startswith('X-Matrix origin="localhost"')
        # Deactivation unbinds what is still bound.
        ids.sessions["s2"] = ("email", "b2@example.org", "sec2")
        bind.update(sid="s2", client_secret="sec2")
        status, _ = await c.call("POST", V3 + "/account/3pid/bind", bind, token=token)
        assert status == 200 and ("email", "b2@example.org") in ids.bindings
        status, challenge = await c.call("POST", V3 + "/account/deactivate", {}, token=token)
        assert status == 401
        auth = {
            "type": "m.login.password",
            "session": challenge["session"],
            "identifier": {"type": "m.id.user", "user": user},
            "password": "pw-bind",
        }
        status, body = await c.call("POST", V3 + "/account/deactivate", {"auth": auth}, token=token)
        assert (status, body) == (200, {"id_server_unbind_result": "success"})
        assert ("email", "b2@example.org") not in ids.bindings
        # Bad input: an id_server that is not a host name.
        status, err = await c.call(
            "POST",
            V3 + "/account/3pid/unbind",
            {"medium": "email", "address": "b@x.org", "id_server": "a/b"},
            token=(await c.register("binder2"))["access_token"],
        )
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def _member(c: SpecClient, token: str, room: str, user: str) -> tuple[int, Any]:
    return await c.call(
        "GET", f"{V3}/rooms/{quote(room)}/state/m.room.member/{quote(user)}", token=token
    )


async def test_third_party_invite_round_trip(world: World) -> None:
    ids = world.ids
    async with SpecClient(world.server.base_url) as c:
        alice = await c.register("tp_alice")
        bob = await c.register("tp_bob")
        status, room = await c.call(
            "POST", V3 + "/createRoom", {"preset": "private_chat"}, token=alice["access_token"]
        )
        assert status == 200
        room_id = room["room_id"]
        invite = {
            "id_server": ids.name,
            "id_access_token": ID_TOKEN,
            "medium": "email",
            "address": "bob@example.org",
        }
        # Unbound: an m.room.third_party_invite, its token from the identity server.
        status, body = await c.call(
            "POST", f"{V3}/rooms/{quote(room_id)}/invite", invite, token=alice["access_token"]
        )
        assert (status, body) == (200, {}), body
        [stored] = ids.invites
        assert (stored["sender"], stored["room_id"]) == (alice["user_id"], room_id)
        status, event = await c.call(
            "GET",
            f"{V3}/rooms/{quote(room_id)}/state/m.room.third_party_invite/{stored['token']}",
            token=alice["access_token"],
        )
        assert status == 200 and event["public_keys"][0]["public_key"] == ids.public_key
        # A revoked key invites nobody: onbind is refused, bob is not invited.
        signed = ids.sign({"mxid": bob["user_id"], "token": stored["token"]})
        onbind = {
            "medium": "email",
            "address": "bob@example.org",
            "mxid": bob["user_id"],
            "invites": [
                {
                    "medium": "email",
                    "address": "bob@example.org",
                    "mxid": bob["user_id"],
                    "room_id": room_id,
                    "sender": alice["user_id"],
                    "signed": signed,
                }
            ],
        }
        ids.revoked.add(ids.public_key)
        status, err = await c.call("POST", ONBIND, onbind, validate=False)
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        status, _ = await _member(c, alice["access_token"], room_id, bob["user_id"])
        assert status == 404
        # Valid again: the invite is sent, with the display name of the invite event.
        ids.revoked.clear()
        status, _ = await c.call("PUT", ONBIND, onbind, validate=False)
        assert status == 200
        status, member = await _member(c, alice["access_token"], room_id, bob["user_id"])
        assert status == 200 and member["membership"] == "invite"
        assert member["third_party_invite"]["display_name"] == "in...@example.org"
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{quote(room_id)}/join", {}, token=bob["access_token"]
        )
        assert status == 200
        # Bound: an ordinary invite of the user it is bound to.
        carol = await c.register("tp_carol")
        ids.bindings[("email", "carol@example.org")] = carol["user_id"]
        invite["address"] = "carol@example.org"
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{quote(room_id)}/invite", invite, token=alice["access_token"]
        )
        assert status == 200
        status, member = await _member(c, alice["access_token"], room_id, carol["user_id"])
        assert (status, member["membership"]) == (200, "invite")
        assert "third_party_invite" not in member


async def test_third_party_invite_refused_before_the_identity_server_hears_of_it(
    world: World,
) -> None:
    ids = world.ids
    async with SpecClient(world.server.base_url) as c:
        owner = await c.register("tp_owner")
        dave = await c.register("tp_dave")
        status, room = await c.call(
            "POST",
            V3 + "/createRoom",
            {"preset": "public_chat", "power_level_content_override": {"invite": 50}},
            token=owner["access_token"],
        )
        assert status == 200
        path = f"{V3}/rooms/{quote(room['room_id'])}/invite"
        invite = {
            "id_server": ids.name,
            "id_access_token": ID_TOKEN,
            "medium": "email",
            "address": "x@example.org",
        }
        # Not a member yet, then a member below the invite level: 403, nothing stored.
        status, err = await c.call("POST", path, invite, token=dave["access_token"])
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        status, _ = await c.call(
            "POST", f"{V3}/join/{quote(room['room_id'])}", {}, token=dave["access_token"]
        )
        assert status == 200
        status, err = await c.call("POST", path, invite, token=dave["access_token"])
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        assert ids.invites == []
        # Missing fields are bad input, also before anything is stored.
        del invite["address"]
        status, err = await c.call("POST", path, invite, token=owner["access_token"])
        assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
        assert ids.invites == []
