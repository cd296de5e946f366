"""Application services against a real server: a real AS (an aiohttp server in the test,
on loopback) registered with a YAML file, receiving transactions from a real Myelin
process, as application-service-api.md describes.

Covered: AS registration (`m.login.application_service`) inside its namespaces only;
exclusive namespaces refused to everyone else (M_EXCLUSIVE); identity assertion with the
`user_id` query parameter; transactions in order with the `hs_token`, only the events
the AS is interested in, retried with the same transaction ID after an error; user and
alias queries to the AS; third-party protocol lookups; the AS's own room list.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiohttp import web

from tests.support.client import SpecClient
from tests.support.rooms import create_room, send
from tests.support.server import ServerProcess, start_server

V3 = "/_matrix/client/v3"
WAIT = 30.0
AS_TOKEN = "as-token-for-the-bridge"
HS_TOKEN = "hs-token-for-the-bridge"


@dataclass
class FakeAS:
    """Records transactions (in arrival order) and queries; answers from `fail` first."""

    base: str = ""
    txns: list[tuple[str, str, list[dict[str, Any]]]] = field(default_factory=list)
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    ephemeral: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    pings: list[Any] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    refused_once: asyncio.Event = field(default_factory=asyncio.Event)
    #: Statuses to answer the next transaction attempts with before accepting.
    fail: list[int] = field(default_factory=list)
    user_queries: list[str] = field(default_factory=list)
    alias_queries: list[str] = field(default_factory=list)
    #: Called on an alias query before answering (may create the alias).
    on_alias: Any = None

    async def transaction(self, request: web.Request) -> web.Response:
        txn_id = request.match_info["txn"]
        auth = request.headers.get("Authorization", "")
        if self.fail:
            self.refused.append(txn_id)
            self.refused_once.set()
            return web.json_response({"errcode": "M_UNKNOWN"}, status=self.fail.pop(0))
        body = await request.json()
        if any(t[0] == txn_id for t in self.txns):  # a retransmission: already handled
            return web.json_response({})
        self.txns.append((txn_id, auth, body["events"]))
        for event in body["events"]:
            self.events.put_nowait(event)
        for edu in body.get("ephemeral", []):
            self.ephemeral.put_nowait(edu)
        return web.json_response({})

    async def ping(self, request: web.Request) -> web.Response:
        self.pings.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({})

    async def user(self, request: web.Request) -> web.Response:
        self.user_queries.append(request.match_info["user"])
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)

    async def room(self, request: web.Request) -> web.Response:
        alias = request.match_info["alias"]
        self.alias_queries.append(alias)
        if self.on_alias is not None:
            await self.on_alias(alias)
            return web.json_response({})
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)

    async def protocol(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "user_fields": ["nick"],
                "location_fields": ["channel"],
                "icon": "mxc://example.org/icon",
                "field_types": {
                    "nick": {"regexp": ".*", "placeholder": "nick"},
                    "channel": {"regexp": "#.*", "placeholder": "#chan"},
                },
                "instances": [
                    {"desc": "Freenode", "network_id": "freenode", "fields": {}},
                ],
            }
        )

    async def tp_user(self, request: web.Request) -> web.Response:
        nick = request.query.get("nick", "")
        return web.json_response(
            [{"userid": f"@_irc_{nick}:localhost", "protocol": "irc", "fields": {"nick": nick}}]
        )

    async def next_event(self, want: str) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self.events.get(), WAIT)
            if event["type"] == want:
                return event


@pytest.fixture
async def fake_as() -> AsyncIterator[FakeAS]:
    fake = FakeAS()
    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn}", fake.transaction)
    app.router.add_get("/_matrix/app/v1/users/{user}", fake.user)
    app.router.add_get("/_matrix/app/v1/rooms/{alias}", fake.room)
    app.router.add_get("/_matrix/app/v1/thirdparty/protocol/irc", fake.protocol)
    app.router.add_get("/_matrix/app/v1/thirdparty/user/irc", fake.tp_user)
    app.router.add_post("/_matrix/app/v1/ping", fake.ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.base = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def write_registration(tmp_path: Path, fake_as: FakeAS) -> Path:
    registration = {
        "id": "irc",
        "url": fake_as.base,
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "_irc_bot",
        "namespaces": {
            "users": [{"regex": "@_irc_.*", "exclusive": True}],
            "aliases": [{"regex": "#_irc_.*", "exclusive": True}],
            "rooms": [],
        },
        "protocols": ["irc"],
        "rate_limited": False,
        "receive_ephemeral": True,
    }
    path = tmp_path / "irc.yaml"
    path.write_text(yaml.safe_dump(registration))
    return path


@pytest.fixture
def server(tmp_path: Path, fake_as: FakeAS) -> Iterator[ServerProcess]:
    path = write_registration(tmp_path, fake_as)
    proc = start_server(tmp_path / "data", app_service_config_files=str(path))
    try:
        yield proc
    finally:
        assert proc.stop() == 0


async def as_register(c: SpecClient, localpart: str) -> tuple[int, Any]:
    return await c.call(
        "POST",
        f"{V3}/register",
        {"type": "m.login.application_service", "username": localpart},
        token=AS_TOKEN,
    )


def masq(path: str, user_id: str) -> str:
    sep = "&" if "?" in path else "?"
    return f"{path}{sep}user_id={quote(user_id)}"


async def test_registration_and_identity_assertion(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        # The AS registers its users, inside its namespace only.
        status, body = await as_register(c, "_irc_alice")
        assert status == 200, body
        assert body["user_id"] == "@_irc_alice:localhost" and body["access_token"]
        status, body = await as_register(c, "bob")
        assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
        # Without the AS token it is no AS registration.
        status, body = await c.call(
            "POST",
            f"{V3}/register",
            {"type": "m.login.application_service", "username": "_irc_x"},
            validate=False,  # application-service-api.md: 401 M_MISSING_TOKEN, no UIA flows
        )
        assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"

        # Nobody else may take a name in the exclusive namespace.
        status, body = await c.call("POST", f"{V3}/register", {"username": "_irc_carol"})
        assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
        status, body = await c.call("GET", f"{V3}/register/available?username=_irc_carol")
        assert status == 400 and body["errcode"] == "M_EXCLUSIVE"

        # The AS token acts as the sender, or as a registered user of its namespace.
        status, body = await c.call("GET", f"{V3}/account/whoami", token=AS_TOKEN)
        assert status == 200 and body["user_id"] == "@_irc_bot:localhost"
        status, body = await c.call(
            "GET", masq(f"{V3}/account/whoami", "@_irc_alice:localhost"), token=AS_TOKEN
        )
        assert status == 200 and body["user_id"] == "@_irc_alice:localhost"
        # Its users can sync through the AS token (application-service-api.md "Using
        # /sync and /events").
        status, body = await c.call(
            "GET", masq(f"{V3}/sync?timeout=0", "@_irc_alice:localhost"), token=AS_TOKEN
        )
        assert status == 200 and "next_batch" in body
        # Not a user it registered, nor one outside its namespace.
        for other in ("@_irc_nobody:localhost", "@someone:localhost"):
            status, body = await c.call("GET", masq(f"{V3}/account/whoami", other), token=AS_TOKEN)
            assert status == 403 and body["errcode"] == "M_FORBIDDEN"

        # Login as an AS user with the AS token.
        status, body = await c.call(
            "POST",
            f"{V3}/login",
            {
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": "_irc_alice"},
            },
            token=AS_TOKEN,
        )
        assert status == 200 and body["user_id"] == "@_irc_alice:localhost"
        status, body = await c.call(
            "POST",
            f"{V3}/login",
            {
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": "someone"},
            },
            token=AS_TOKEN,
        )
        assert status == 400 and body["errcode"] == "M_EXCLUSIVE"


async def test_transactions_in_order_and_only_interesting(
    server: ServerProcess, fake_as: FakeAS
) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("tx_alice"))["access_token"]
        status, _ = await as_register(c, "_irc_ghost")
        assert status == 200
        ghost = "@_irc_ghost:localhost"
        unrelated = await create_room(c, alice)
        room = await create_room(c, alice, {"preset": "public_chat"})
        await send(c, alice, unrelated, "u1", {"msgtype": "m.text", "body": "not for the AS"})

        # The ghost joins through the AS (identity assertion); the AS hears of the join.
        status, body = await c.call(
            "POST", masq(f"{V3}/rooms/{room}/join", ghost), {}, token=AS_TOKEN
        )
        assert status == 200, body
        join = await fake_as.next_event("m.room.member")
        assert join["state_key"] == ghost and join["content"]["membership"] == "join"
        assert join["room_id"] == room

        # From now on, every event of the room goes to the AS, in order.
        first = await send(c, alice, room, "m1", {"msgtype": "m.text", "body": "one"})
        second = await send(c, alice, room, "m2", {"msgtype": "m.text", "body": "two"})
        got = [(await fake_as.next_event("m.room.message"))["event_id"] for _ in range(2)]
        assert got == [first, second]

        # Authorization with the hs_token; numeric, increasing transaction IDs; nothing
        # of the room the AS has no one in.
        assert all(auth == f"Bearer {HS_TOKEN}" for _, auth, _ in fake_as.txns)
        ids = [int(t[0]) for t in fake_as.txns]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        rooms = {e["room_id"] for _, _, events in fake_as.txns for e in events}
        assert unrelated not in rooms

        # Read receipts in its rooms come as ephemeral data (receive_ephemeral: true).
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/{second}", {}, token=alice
        )
        assert status == 200
        edu = await asyncio.wait_for(fake_as.ephemeral.get(), WAIT)
        assert edu["type"] == "m.receipt" and edu["room_id"] == room
        assert "@tx_alice:localhost" in edu["content"][second]["m.read"]

        # Typing in its rooms, too.
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/typing/{quote('@tx_alice:localhost')}",
            {"typing": True, "timeout": 30000},
            token=alice,
        )
        assert status == 200
        while (edu := await asyncio.wait_for(fake_as.ephemeral.get(), WAIT))["type"] != "m.typing":
            pass
        assert edu["room_id"] == room and edu["content"]["user_ids"] == ["@tx_alice:localhost"]

        # A failing AS gets the same transaction again until it accepts it.
        fake_as.fail = [500, 503]
        third = await send(c, alice, room, "m3", {"msgtype": "m.text", "body": "three"})
        event = await fake_as.next_event("m.room.message")
        assert event["event_id"] == third
        assert fake_as.fail == []


async def test_queries_thirdparty_and_room_list(server: ServerProcess, fake_as: FakeAS) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("q_alice"))["access_token"]
        room = await create_room(c, alice)

        # Inviting an unknown user of the AS's namespace asks the AS first.
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/invite", {"user_id": "@_irc_new:localhost"}, token=alice
        )
        assert status == 200
        assert fake_as.user_queries == ["@_irc_new:localhost"]

        # An unknown alias of its namespace too; the AS creates it while asked.
        alias = "#_irc_chan:localhost"

        async def create_alias(asked: str) -> None:
            status, body = await c.call(
                "PUT", f"{V3}/directory/room/{quote(asked)}", {"room_id": room}, token=AS_TOKEN
            )
            assert status == 200, body

        fake_as.on_alias = create_alias
        status, body = await c.call("GET", f"{V3}/directory/room/{quote(alias)}", token=alice)
        assert status == 200 and body["room_id"] == room
        assert fake_as.alias_queries == [alias]
        # Regular users cannot create aliases in the exclusive namespace.
        status, body = await c.call(
            "PUT",
            f"{V3}/directory/room/{quote('#_irc_other:localhost')}",
            {"room_id": room},
            token=alice,
        )
        assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
        status, body = await c.call(
            "POST", f"{V3}/createRoom", {"room_alias_name": "_irc_mine"}, token=alice
        )
        assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
        status, body = await c.call("GET", f"{V3}/joined_rooms", token=alice)
        assert body["joined_rooms"] == [room]  # no room was created by the refused request

        # Third-party lookups go to the AS of the protocol.
        status, body = await c.call("GET", f"{V3}/thirdparty/protocols", token=alice)
        assert status == 200
        assert body["irc"]["instances"][0]["instance_id"] == "irc|freenode"
        status, body = await c.call("GET", f"{V3}/thirdparty/user/irc?nick=zed", token=alice)
        assert status == 200 and body[0]["userid"] == "@_irc_zed:localhost"
        status, body = await c.call("GET", f"{V3}/thirdparty/protocol/nope", token=alice)
        assert status == 404

        # The AS's own room list is apart from the main one.
        path = f"{V3}/directory/list/appservice/freenode/{room}"
        status, body = await c.call("PUT", path, {"visibility": "public"}, token=AS_TOKEN)
        assert status == 200, body
        # A user's token is refused (the spec lists no error; 403 as the reference server).
        status, body = await c.call(
            "PUT", path, {"visibility": "public"}, token=alice, validate=False
        )
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"
        status, body = await c.call("POST", f"{V3}/publicRooms", {}, token=alice)
        assert room not in [r["room_id"] for r in body["chunk"]]
        status, body = await c.call(
            "POST", f"{V3}/publicRooms", {"third_party_instance_id": "irc|freenode"}, token=alice
        )
        assert [r["room_id"] for r in body["chunk"]] == [room]
        status, body = await c.call(
            "POST", f"{V3}/publicRooms", {"include_all_networks": True}, token=alice
        )
        assert room in [r["room_id"] for r in body["chunk"]]
        status, _ = await c.call("PUT", path, {"visibility": "private"}, token=AS_TOKEN)
        assert status == 200
        status, body = await c.call(
            "POST", f"{V3}/publicRooms", {"third_party_instance_id": "irc|freenode"}, token=alice
        )
        assert body["chunk"] == []
        # DELETE, which the spec lacks but Sytest and the reference server use, too.
        await c.call("PUT", path, {"visibility": "public"}, token=AS_TOKEN)
        status, _ = await c.call("DELETE", path, token=AS_TOKEN, validate=False)
        assert status == 200
        status, body = await c.call(
            "POST", f"{V3}/publicRooms", {"third_party_instance_id": "irc|freenode"}, token=alice
        )
        assert body["chunk"] == []


async def test_undelivered_events_survive_a_restart(tmp_path: Path, fake_as: FakeAS) -> None:
    """The AS is down while the server stops: after the restart the same transaction
    (same ID, same events) is delivered, from the reader's stored offset."""
    path = write_registration(tmp_path, fake_as)
    proc = start_server(tmp_path / "data", app_service_config_files=str(path))
    try:
        async with SpecClient(proc.base_url) as c:
            alice = (await c.register("rs_alice"))["access_token"]
            room = await create_room(c, alice)
            fake_as.fail = [500] * 10_000  # down until further notice
            # Alice invites a user of the AS: the AS is interested in the invite.
            status, _ = await c.call(
                "POST",
                f"{V3}/rooms/{room}/invite",
                {"user_id": "@_irc_later:localhost"},
                token=alice,
            )
            assert status == 200
            await asyncio.wait_for(fake_as.refused_once.wait(), WAIT)
    finally:
        assert proc.stop() == 0
    refused_id = fake_as.refused[0]
    fake_as.fail = []
    proc = start_server(tmp_path / "data", app_service_config_files=str(path))
    try:
        invite = await fake_as.next_event("m.room.member")
        assert invite["state_key"] == "@_irc_later:localhost"
        assert invite["content"]["membership"] == "invite"
        assert fake_as.txns[0][0] == refused_id
    finally:
        assert proc.stop() == 0


async def test_ping(server: ServerProcess, fake_as: FakeAS) -> None:
    async with SpecClient(server.base_url) as c:
        path = "/_matrix/client/v1/appservice/irc/ping"
        status, body = await c.call("POST", path, {"transaction_id": "t1"}, token=AS_TOKEN)
        assert status == 200 and body["duration_ms"] >= 0
        assert fake_as.pings == [(f"Bearer {HS_TOKEN}", {"transaction_id": "t1"})]
        status, body = await c.call(
            "POST", "/_matrix/client/v1/appservice/other/ping", {}, token=AS_TOKEN
        )
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"


def test_bad_registration_file_stops_startup(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"id": "x", "url": None, "as_token": "t"}))
    with pytest.raises(AssertionError, match=r"hs_token|sender_localpart"):
        start_server(tmp_path / "data", app_service_config_files=str(path))
