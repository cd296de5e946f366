"""Pushes for a room this server is not in: an invite over federation (kept as an outlier
with the inviting server's stripped state) is pushed to the invitee, named from that
stripped state."""

from __future__ import annotations

from urllib.parse import quote

from tests.push_http.test_pusher_http import gateway, set_pusher
from tests.support.client import SpecClient
from tests.support.federation import Peer, peers_fixture
from tests.support.rooms import create_room, register

V3 = "/_matrix/client/v3"

#: Two federating servers, shared by the tests of this module.
two_servers = peers_fixture()


async def test_invite_over_federation_is_pushed(two_servers: tuple[Peer, Peer]) -> None:
    a, b = two_servers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb, gateway() as gw:
        carol = await register(ca, "fp_carol")
        dave = await register(cb, "fp_dave")
        await set_pusher(cb, dave, gw.url, "key-fed")
        room = await create_room(
            ca, carol, {"preset": "private_chat", "room_version": "10", "name": "Far away"}
        )
        status, body = await ca.call(
            "POST",
            f"{V3}/rooms/{quote(room)}/invite",
            {"user_id": f"@fp_dave:{b.name}"},
            token=carol,
        )
        assert status == 200, body
        n = await gw.next("m.room.member")
        assert (n["room_id"], n["sender"]) == (room, f"@fp_carol:{a.name}")
        assert n["membership"] == "invite" and n["user_is_target"] is True
        assert n["room_name"] == "Far away"  # from the invite's stripped state
        assert n["devices"][0]["pushkey"] == "key-fed"
