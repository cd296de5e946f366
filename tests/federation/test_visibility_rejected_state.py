"""The state another server gives for an event whose prev events are missing
(`/state_ids` at one of them) is not taken on trust: an event this server rejected, or
one of another room, never enters the state the event is authorised against.

The room's own server is played by a small HTTPS server of this test, which answers
`/state_ids` and `/event` as told (as a faulty or malicious server could); this server's
side is the real federation code (`Inbound`, `FederationClient`, `Keyring`) over a real
roomserver.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web

from myelin.core.events import Event
from myelin.core.signing import SigningKey
from myelin.eventlog.disk import DiskEventLog
from myelin.federation.client import FederationClient
from myelin.federation.inbound import Inbound
from myelin.federation.keyring import Keyring
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputResult, Status
from myelin.storage import Database, testing
from tests.federation.conftest import make_cert
from tests.federation.test_units import key_response
from tests.roomserver.rooms import KEY, SERVER, RoomScript, user
from tests.support.backends import database_fixture, disk_log_fixture

pg_dsn = testing.pg_dsn_fixture()
db = database_fixture()
log = disk_log_fixture()

ALICE, MALLORY = user("alice"), user("mallory")
OURS = SigningKey.from_seed(b"\x02" * 32, "o1")


@dataclass
class FakeOrigin:
    """The room's server as the test scripts it: `/state_ids` answers `state_ids`,
    `/event/{id}` the events it holds; every path asked for is recorded."""

    events: dict[str, Event] = field(default_factory=dict)
    state_ids: list[str] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.asked.append(unquote(path))
        if "/state_ids/" in path:
            return web.json_response({"pdu_ids": self.state_ids, "auth_chain_ids": self.chain_ids})
        if "/event/" in path:
            event = self.events.get(unquote(path.rsplit("/", 1)[1]))
            if event is None:
                return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
            return web.json_response({"origin": SERVER, "pdus": [dict(event.pdu)]})
        return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "no"}, status=404)


@pytest.fixture
async def origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FakeOrigin, str]]:
    cert, key = make_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    fake = FakeOrigin()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"localhost:{port}"
    finally:
        await runner.cleanup()


async def _keys(server: str) -> Any:
    return key_response(server, KEY)


@dataclass
class Setup:
    rs: Roomserver
    inbound: Inbound
    room: RoomScript
    state: list[str]
    """The room's state before Mallory's attempt, as `/state_ids` would list it."""
    message: Event
    """An event of the room this server lacks (the missing prev event)."""
    topic: Event
    """Alice's topic change after `message`: authorised by the room's real state."""


async def _setup(db: Database, log: DiskEventLog, fake: FakeOrigin) -> Setup:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    create = await room.create(ALICE)
    alice = await room.join(ALICE)
    levels, result = await room.send(
        "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, state_key=""
    )
    assert result.status is Status.ACCEPTED
    rules, result = await room.send(
        "m.room.join_rules", ALICE, {"join_rule": "public"}, state_key=""
    )
    assert result.status is Status.ACCEPTED
    mallory = await room.join(MALLORY)
    state = [e.event_id for e in (create, alice, levels, rules, mallory)]
    message = await room.make("m.room.message", ALICE, {"body": "missing here"})
    current = await rs.current_state(room.room_id or "")
    topic = room.build(
        "m.room.topic",
        ALICE,
        {"topic": "set by the room's admin"},
        state_key="",
        prevs=[message.event_id],
        auth_state=current,
        depth=message.depth + 1,
    )
    fake.events = {e.event_id: e for e in (create, alice, levels, rules, mallory, message)}
    fake.chain_ids = state
    client = FederationClient("ours.example", OURS)
    inbound = Inbound(rs, Keyring("ours.example", OURS, _keys), client, "ours.example")
    return Setup(rs, inbound, room, state, message, topic)


async def test_a_rejected_state_event_is_not_used(
    db: Database, log: DiskEventLog, origin: tuple[FakeOrigin, str]
) -> None:
    fake, name = origin
    s = await _setup(db, log, fake)
    # Mallory's power levels that take Alice's power away: rejected here (Mallory has
    # none to give), yet listed by the origin as the room's power levels.
    grab, result = await s.room.send(
        "m.room.power_levels",
        MALLORY,
        {"users": {MALLORY: 100}, "state_default": 100},
        state_key="",
    )
    assert result.status is Status.REJECTED
    fake.events[grab.event_id] = grab
    fake.state_ids = [*s.state, grab.event_id]
    try:
        result = await s.inbound.input_new(s.topic, name, fetch_missing=False, fetch_state=True)
    finally:
        await s.inbound.client.close()
    assert isinstance(result, InputResult), result
    assert result.status is Status.ACCEPTED, result.reason
    assert any("/state_ids/" in p for p in fake.asked), fake.asked
    # What this server holds, rejected, it does not ask for again (nor take from it).
    assert not any(p.endswith(grab.event_id) for p in fake.asked), fake.asked
    state = await s.rs.state_before(s.topic.event_id)
    assert state[("m.room.power_levels", "")] == s.state[2]
    assert grab.event_id not in state.values()


async def test_a_state_event_of_another_room_is_not_used(
    db: Database, log: DiskEventLog, origin: tuple[FakeOrigin, str]
) -> None:
    fake, name = origin
    s = await _setup(db, log, fake)
    # A room of Mallory's, where her power levels give Alice none.
    other = RoomScript(s.rs, "10")
    await other.create(MALLORY)
    await other.join(MALLORY)
    foreign, result = await other.send(
        "m.room.power_levels", MALLORY, {"users": {MALLORY: 100}}, state_key=""
    )
    assert result.status is Status.ACCEPTED
    fake.events[foreign.event_id] = foreign
    fake.state_ids = [*s.state, foreign.event_id]
    try:
        result = await s.inbound.input_new(s.topic, name, fetch_missing=False, fetch_state=True)
    finally:
        await s.inbound.client.close()
    assert isinstance(result, InputResult), result
    assert result.status is Status.ACCEPTED, result.reason
    state = await s.rs.state_before(s.topic.event_id)
    assert state[("m.room.power_levels", "")] == s.state[2]
    assert foreign.event_id not in state.values()
