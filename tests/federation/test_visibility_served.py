"""History visibility of what this server serves to another one (`/event`, `/backfill`,
`/get_missing_events`, `/state`, `/state_ids`): a server is given the events its users
may see (client-server-api "Room History Visibility", per user); the others go out
redacted (the DAG and auth keys, never the content), and the state at them is refused.

Two real servers; the requests are made as server B, signed with B's own key, exactly as
B would make them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from myelin.core.eventids import event_from_pdu
from myelin.core.roomversions import room_version
from myelin.syncapi.visibility import server_may_see
from tests.federation.test_redactions_auth import AsServer
from tests.support.client import SpecClient
from tests.support.federation import Peer, wait_joined
from tests.support.rooms import create_room, join, register, send

V3 = "/_matrix/client/v3"
FED = "/_matrix/federation/v1"


def _text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


async def _room_with_visibility(ca: SpecClient, alice: str, setting: str) -> str:
    return await create_room(
        ca,
        alice,
        {
            "preset": "public_chat",
            "room_version": "10",
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": setting},
                }
            ],
        },
    )


async def _event(as_b: AsServer, event_id: str) -> dict[str, Any]:
    status, body = await as_b.call("GET", f"{FED}/event/{quote(event_id)}")
    assert status == 200, body
    [pdu] = body["pdus"]
    return dict(pdu)


async def _backfill(as_b: AsServer, room: str, start: str) -> dict[str, dict[str, Any]]:
    status, body = await as_b.call("GET", f"{FED}/backfill/{quote(room)}?v={quote(start)}&limit=50")
    assert status == 200, body
    return {_id(p): p for p in body["pdus"]}


async def _missing(as_b: AsServer, room: str, latest: str) -> dict[str, dict[str, Any]]:
    status, body = await as_b.call(
        "POST",
        f"{FED}/get_missing_events/{quote(room)}",
        {"earliest_events": [], "latest_events": [latest], "limit": 50},
    )
    assert status == 200, body
    return {_id(p): p for p in body["events"]}


def _id(pdu: dict[str, Any]) -> str:
    """The event ID of a room version 10 PDU (its reference hash), as the servers
    compute it."""
    return event_from_pdu(pdu, room_version("10")).event_id


async def test_joined_history_is_served_redacted_before_the_join(
    peers: tuple[Peer, Peer],
) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "vj_alice")
        bob = await register(cb, "vj_bob")
        room = await _room_with_visibility(ca, alice, "joined")
        before = await send(ca, alice, room, "b", _text("before bob"))
        await join(cb, bob, room)
        await wait_joined(ca, alice, room, f"@vj_bob:{b.name}")
        after = await send(ca, alice, room, "a", _text("after bob"))

        as_b = AsServer(b, a, ca)
        hidden = await _event(as_b, before)
        assert hidden["content"] == {}  # redacted: still the event, without its content
        assert hidden["type"] == "m.room.message"
        assert (await _event(as_b, after))["content"]["body"] == "after bob"

        for served in (await _backfill(as_b, room, after), await _missing(as_b, room, after)):
            assert served[before]["content"] == {}, served[before]
            # Bob's own join and the room's setup are B's to see.
            joins = [
                p
                for p in served.values()
                if p["type"] == "m.room.member" and p["state_key"] == f"@vj_bob:{b.name}"
            ]
            assert joins and joins[0]["content"]["membership"] == "join"
            settings = [p for p in served.values() if p["type"] == "m.room.history_visibility"]
            assert settings and settings[0]["content"] == {"history_visibility": "joined"}
        assert (await _backfill(as_b, room, after))[after]["content"]["body"] == "after bob"

        # The state at an event B may not see is refused; at one it may, given.
        for endpoint in ("state_ids", "state"):
            status, body = await as_b.call(
                "GET", f"{FED}/{endpoint}/{quote(room)}?event_id={quote(before)}"
            )
            assert (status, body.get("errcode")) == (403, "M_FORBIDDEN"), body
            status, body = await as_b.call(
                "GET", f"{FED}/{endpoint}/{quote(room)}?event_id={quote(after)}"
            )
            assert status == 200, body


async def test_shared_history_is_served_whole(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "vs_alice")
        bob = await register(cb, "vs_bob")
        room = await _room_with_visibility(ca, alice, "shared")
        before = await send(ca, alice, room, "b", _text("before bob"))
        await join(cb, bob, room)
        await wait_joined(ca, alice, room, f"@vs_bob:{b.name}")

        as_b = AsServer(b, a, ca)
        assert (await _event(as_b, before))["content"]["body"] == "before bob"
        status, body = await as_b.call(
            "GET", f"{FED}/state_ids/{quote(room)}?event_id={quote(before)}"
        )
        assert status == 200, body


async def test_invited_history_is_served_from_the_invite(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "vi_alice")
        bob = await register(cb, "vi_bob")
        bob_id = f"@vi_bob:{b.name}"
        room = await _room_with_visibility(ca, alice, "invited")
        before = await send(ca, alice, room, "b", _text("before the invite"))
        status, body = await ca.call(
            "POST", f"{V3}/rooms/{quote(room)}/invite", {"user_id": bob_id}, token=alice
        )
        assert status == 200, body
        invited = await send(ca, alice, room, "i", _text("while invited"))
        await join(cb, bob, room)
        await wait_joined(ca, alice, room, bob_id)

        as_b = AsServer(b, a, ca)
        assert (await _event(as_b, before))["content"] == {}
        assert (await _event(as_b, invited))["content"]["body"] == "while invited"


@pytest.mark.parametrize(
    ("setting", "memberships", "later", "extra", "visible"),
    [
        ("world_readable", {}, (), {}, True),
        ("shared", {}, (), {}, False),
        ("shared", {"@u:b": "leave"}, ("@u:b",), {}, True),
        ("joined", {"@u:b": "invite"}, ("@u:b",), {}, False),
        ("invited", {"@u:b": "invite"}, (), {}, True),
        ("joined", {"@u:b": "leave", "@v:b": "join"}, (), {}, True),
        # A setting change is visible if the setting before or after allows it.
        ("joined", {}, (), {"setting_after": "world_readable"}, True),
        # A user's own membership change, by the membership it sets.
        ("joined", {"@u:b": "invite"}, (), {"own_change": ("@u:b", "join")}, True),
        ("joined", {"@u:b": "invite"}, (), {"own_change": ("@v:b", "leave")}, False),
    ],
)
def test_server_may_see(
    setting: str,
    memberships: dict[str, str | None],
    later: tuple[str, ...],
    extra: dict[str, Any],
    visible: bool,
) -> None:
    assert server_may_see(setting, memberships, later, **extra) is visible
