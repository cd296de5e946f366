"""Redactions and authorization across two real servers (issue #5).

A redaction received over federation is applied to the copy served to clients, as a
local one is; one that names an event of another room is rejected (never served); the
events of a user who erased their account are served redacted to other servers; a
remote user who was banned reads no more of the room; a guest leaves a room whose
guest access another server's user revoked. Where a test must act as a misbehaving
server, it signs as server B with B's own key (read from B's data directory), so A
checks it exactly as it would check B.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from yarl import URL

from myelin.core.builder import build_event
from myelin.core.federation import sign_request
from myelin.core.roomversions import room_version
from myelin.core.signing import SigningKey
from myelin.server.signingkey import load_or_create
from tests.support.client import SpecClient
from tests.support.federation import Peer, peers_fixture, wait_for_event, wait_joined
from tests.support.rooms import create_room, join, register, send

V3 = "/_matrix/client/v3"
FED = "/_matrix/federation/v1"
TEXT = {"msgtype": "m.text", "body": "hello"}

#: Two federating servers, as in conftest, that also let guests register.
peers = peers_fixture(allow_guests=True)


class AsServer:
    """Federation requests to a peer, signed as `me` with its own signing key."""

    def __init__(self, me: Peer, to: Peer, client: SpecClient) -> None:
        self.name = me.name
        self.key: SigningKey = load_or_create(me.server.data_dir / "signing.key").key
        self.to = to
        self.client = client

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        # Signed as sent: the HTTP client normalises the path (e.g. `%24` back to `$`).
        sent = URL(self.client.base_url + path).raw_path_qs
        header = sign_request(method, sent, self.name, self.to.name, self.key, body)
        return await self.client.call(
            method, path, body, headers={"Authorization": header}, validate=False
        )


async def test_redaction_received_over_federation_is_applied(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "ra_alice")
        bob = await register(cb, "ra_bob")
        room = await create_room(ca, alice)
        await join(cb, bob, room)
        await wait_joined(ca, alice, room, f"@ra_bob:{b.name}")

        message = await send(cb, bob, room, "m1", TEXT)
        status, body = await cb.call(
            "PUT", f"{V3}/rooms/{room}/redact/{quote(message)}/r1", {}, token=bob
        )
        assert status == 200, body
        redaction = body["event_id"]
        await wait_for_event(ca, alice, room, lambda e: e["event_id"] == redaction)

        status, event = await ca.call(
            "GET", f"{V3}/rooms/{room}/event/{quote(message)}", token=alice
        )
        assert status == 200, event
        assert event["content"] == {}
        assert event["unsigned"]["redacted_by"] == redaction
        assert event["unsigned"]["redacted_because"]["event_id"] == redaction

        status, page = await ca.call(
            "GET", f"{V3}/rooms/{room}/messages?dir=b&limit=2", token=alice
        )
        assert status == 200, page
        first, second = page["chunk"]
        assert (first["event_id"], first["redacts"]) == (redaction, message)
        assert (second["event_id"], second["unsigned"]["redacted_by"]) == (message, redaction)


async def _pdu(server: AsServer, event_id: str) -> dict[str, Any]:
    status, body = await server.call("GET", f"{FED}/event/{quote(event_id)}")
    assert status == 200, body
    [pdu] = body["pdus"]
    return dict(pdu)


async def test_redaction_of_an_event_in_another_room_is_rejected(
    peers: tuple[Peer, Peer],
) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "rx_alice")
        bob = await register(cb, "rx_bob")
        bob_id = f"@rx_bob:{b.name}"
        room1 = await create_room(ca, alice)
        room2 = await create_room(ca, alice)
        for room in (room1, room2):
            await join(cb, bob, room)
            await wait_joined(ca, alice, room, bob_id)
        target = await send(ca, alice, room1, "t", {"msgtype": "m.text", "body": "keep me"})

        # As B: a redaction in room 2, of Alice's message in room 1.
        as_b = AsServer(b, a, ca)
        status, state = await cb.call("GET", f"{V3}/rooms/{room2}/state", token=bob)
        assert status == 200, state
        by_key = {(e["type"], e["state_key"]): e["event_id"] for e in state}
        auth = [
            by_key[("m.room.create", "")],
            by_key[("m.room.power_levels", "")],
            by_key[("m.room.member", bob_id)],
        ]
        prev = await _pdu(as_b, by_key[("m.room.member", bob_id)])
        forged = build_event(
            room_version("10"),
            room_id=room2,
            sender=bob_id,
            type="m.room.redaction",
            content={},
            redacts=target,
            prev_events=[by_key[("m.room.member", bob_id)]],
            auth_events=auth,
            depth=prev["depth"] + 1,
            origin_server_ts=int(time.time() * 1000),
            server_name=b.name,
            signing_key=as_b.key,
        )
        status, body = await as_b.call(
            "PUT", f"{FED}/send/forged-{forged.event_id}", {"pdus": [dict(forged.pdu)]}
        )
        assert status == 200, body
        assert forged.event_id in body["pdus"]

        # A sentinel from Bob reaches Alice; the redaction never did, and did nothing.
        sentinel = await send(cb, bob, room2, "s", TEXT)
        seen: list[str] = []
        await wait_for_event(
            ca, alice, room2, lambda e: seen.append(e["event_id"]) or e["event_id"] == sentinel
        )
        assert forged.event_id not in seen
        status, body = await ca.call(
            "GET", f"{V3}/rooms/{room2}/event/{quote(forged.event_id)}", token=alice
        )
        assert status == 404, body
        status, event = await ca.call(
            "GET", f"{V3}/rooms/{room1}/event/{quote(target)}", token=alice
        )
        assert status == 200, event
        assert event["content"]["body"] == "keep me"
        assert "redacted_by" not in event["unsigned"]


async def test_events_of_erased_users_are_served_redacted(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "er_alice")
        stays = await register(ca, "er_stays")
        bob = await register(cb, "er_bob")
        room = await create_room(ca, alice)
        await join(ca, stays, room)  # keeps A in the room once Alice is gone
        await join(cb, bob, room)
        await wait_joined(ca, alice, room, f"@er_bob:{b.name}")
        message = await send(ca, alice, room, "m", {"msgtype": "m.text", "body": "secret"})

        as_b = AsServer(b, a, ca)
        assert (await _pdu(as_b, message))["content"]["body"] == "secret"
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "er_alice"},
            "password": "secret-pw",
        }
        status, body = await ca.call(
            "POST", f"{V3}/account/deactivate", {"auth": auth, "erase": True}, token=alice
        )
        assert status == 200, body
        served = await _pdu(as_b, message)
        assert served["content"] == {}
        assert served["type"] == "m.room.message"  # still the event, signed as it was


async def test_banned_remote_user_reads_no_state_and_cannot_rejoin(
    peers: tuple[Peer, Peer],
) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "bn_alice")
        bob = await register(cb, "bn_bob")
        bob_id = f"@bn_bob:{b.name}"
        room = await create_room(ca, alice)
        await join(cb, bob, room)
        await wait_joined(ca, alice, room, bob_id)
        path = f"{V3}/rooms/{room}/state/m.room.member/{quote(bob_id)}"
        status, body = await cb.call("GET", path, token=bob)
        assert (status, body.get("membership")) == (200, "join"), body

        status, body = await ca.call(
            "POST", f"{V3}/rooms/{room}/ban", {"user_id": bob_id, "reason": "t"}, token=alice
        )
        assert status == 200, body
        # B hears of the ban: the room moves to Bob's leave section.
        since = None
        for _ in range(20):
            query = "timeout=10000" + (f"&since={since}" if since else "")
            status, sync = await cb.call("GET", f"{V3}/sync?{query}", token=bob)
            assert status == 200, sync
            since = sync["next_batch"]
            if room in sync.get("rooms", {}).get("leave", {}):
                break
        else:
            raise AssertionError("the ban never reached B")

        status, body = await cb.call("GET", path, token=bob)
        assert (status, body.get("errcode")) == (403, "M_FORBIDDEN"), body
        status, body = await cb.call("POST", f"{V3}/join/{quote(room)}", {}, token=bob)
        assert status == 403, body


async def test_guests_leave_when_a_remote_user_revokes_guest_access(
    peers: tuple[Peer, Peer],
) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "ga_alice")
        bob = await register(cb, "ga_bob")
        bob_id = f"@ga_bob:{b.name}"
        room = await create_room(ca, alice)
        status, levels = await ca.call(
            "GET", f"{V3}/rooms/{room}/state/m.room.power_levels/", token=alice
        )
        assert status == 200, levels
        levels["users"][bob_id] = 50
        status, body = await ca.call(
            "PUT", f"{V3}/rooms/{room}/state/m.room.power_levels/", levels, token=alice
        )
        assert status == 200, body
        status, body = await ca.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.guest_access/",
            {"guest_access": "can_join"},
            token=alice,
        )
        assert status == 200, body
        status, guest = await ca.call("POST", f"{V3}/register?kind=guest", {})
        assert status == 200, guest
        await join(ca, guest["access_token"], room)
        await join(cb, bob, room)
        await wait_joined(ca, alice, room, bob_id)

        # Bob's server must know his power level before it lets him revoke guest access.
        await wait_for_event(
            cb,
            bob,
            room,
            lambda e: (
                e["type"] == "m.room.power_levels"
                and e["content"].get("users", {}).get(bob_id) == 50
            ),
        )
        status, body = await cb.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.guest_access/",
            {"guest_access": "forbidden"},
            token=bob,
        )
        assert status == 200, body
        left = await wait_for_event(
            ca,
            alice,
            room,
            lambda e: (
                e["type"] == "m.room.member"
                and e["state_key"] == guest["user_id"]
                and e["content"].get("membership") == "leave"
            ),
        )
        assert left["sender"] == guest["user_id"]
