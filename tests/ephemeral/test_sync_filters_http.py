"""The filter sections for what this component adds to `/sync`: top-level
`account_data` and `presence`, and the room's `ephemeral` and `account_data`."""

from __future__ import annotations

from urllib.parse import quote

import orjson

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def test_filters_apply_to_ephemeral_sections(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("fl_alice"))["access_token"]
        bob = (await c.register("fl_bob"))["access_token"]
        alice_id, bob_id = "@fl_alice:localhost", "@fl_bob:localhost"
        room = await create_room(c, alice)
        await join(c, bob, room)
        status, sent = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/send/m.room.message/f1",
            {"msgtype": "m.text", "body": "x"},
            token=alice,
        )
        me = quote(bob_id)
        for data_type in ("org.keep", "org.drop"):
            status, _ = await c.call(
                "PUT", f"{V3}/user/{me}/account_data/{data_type}", {"v": 1}, token=bob
            )
            assert status == 200
        status, _ = await c.call("PUT", f"{V3}/user/{me}/rooms/{room}/tags/u.t", {}, token=bob)
        status, _ = await c.call(
            "PUT",
            f"{V3}/user/{me}/rooms/{room}/account_data/org.room",
            {"v": 2},
            token=bob,
        )
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/typing/{quote(alice_id)}",
            {"typing": True, "timeout": 30000},
            token=alice,
        )
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/receipt/m.read/{sent['event_id']}", {}, token=alice
        )
        status, _ = await c.call(
            "PUT", f"{V3}/presence/{quote(alice_id)}/status", {"presence": "online"}, token=alice
        )

        unfiltered_status, unfiltered = await c.call(
            "GET", f"{V3}/sync?set_presence=offline", token=bob
        )
        assert unfiltered_status == 200
        joined = unfiltered["rooms"]["join"][room]
        assert {e["type"] for e in joined["ephemeral"]["events"]} == {"m.typing", "m.receipt"}
        assert unfiltered["presence"]["events"]

        flt = {
            "account_data": {"types": ["org.keep"]},
            "presence": {"not_types": ["m.presence"]},
            "room": {
                "ephemeral": {"not_types": ["m.typing"]},
                "account_data": {"not_types": ["m.tag"]},
            },
        }
        query = quote(orjson.dumps(flt).decode())
        status, s = await c.call("GET", f"{V3}/sync?filter={query}&set_presence=offline", token=bob)
        assert status == 200
        assert [e["type"] for e in s["account_data"]["events"]] == ["org.keep"]
        assert s["presence"]["events"] == []
        joined = s["rooms"]["join"][room]
        assert [e["type"] for e in joined["ephemeral"]["events"]] == ["m.receipt"]
        assert [e["type"] for e in joined["account_data"]["events"]] == ["org.room"]
