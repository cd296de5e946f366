"""`POST /rooms/{roomId}/upgrade` (room_upgrades.yaml, the "Room Upgrades" module): the
tombstone and the new room cite each other, state and bans carry over, aliases and the
directory listing move, the old room is restricted, and the refusals carry their errcodes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, register
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def _path(room: str, event_type: str) -> str:
    """The state path of `event_type` (`type/state_key`, or a type with the empty key)."""
    return f"{V3}/rooms/{room}/state/{event_type}{'' if '/' in event_type else '/'}"


async def _state(c: SpecClient, token: str, room: str, event_type: str) -> tuple[int, Any]:
    return await c.call("GET", _path(room, event_type), token=token)


async def _state_event(c: SpecClient, token: str, room: str, event_type: str) -> Any:
    """The whole state event (with its ID) from the room's full state."""
    status, events = await c.call("GET", f"{V3}/rooms/{quote(room)}/state", token=token)
    assert status == 200, events
    return next(e for e in events if e["type"] == event_type and e["state_key"] == "")


async def _put(c: SpecClient, token: str, room: str, event_type: str, content: Any) -> None:
    status, body = await c.call("PUT", _path(room, event_type), content, token=token)
    assert status == 200, body


async def _upgrade(c: SpecClient, token: str, room: str, version: str) -> tuple[int, Any]:
    return await c.call("POST", f"{V3}/rooms/{room}/upgrade", {"new_version": version}, token=token)


async def test_upgrade_builds_the_replacement_room(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "up_alice")
        room = await create_room(
            c,
            alice,
            {
                "preset": "public_chat",
                "room_version": "10",
                "name": "Old name",
                "topic": "Old topic",
                "room_alias_name": "up_lobby",
                "visibility": "public",
                "creation_content": {"m.federate": False},
            },
        )
        await _put(c, alice, room, "m.room.member/@spam:elsewhere.example", {"membership": "ban"})
        status, body = await _upgrade(c, alice, room, "11")
        assert status == 200, body
        new = body["replacement_room"]
        assert new != room

        tombstone = await _state_event(c, alice, room, "m.room.tombstone")
        assert tombstone["content"]["replacement_room"] == new
        status, create = await _state(c, alice, new, "m.room.create")
        assert status == 200
        assert create["room_version"] == "11"
        assert create["predecessor"] == {"room_id": room, "event_id": tombstone["event_id"]}
        assert create["m.federate"] is False
        for event_type, key, value in (
            ("m.room.name", "name", "Old name"),
            ("m.room.topic", "topic", "Old topic"),
            ("m.room.join_rules", "join_rule", "public"),
            ("m.room.canonical_alias", "alias", "#up_lobby:localhost"),
        ):
            status, content = await _state(c, alice, new, event_type)
            assert (status, content.get(key)) == (200, value), event_type
        status, ban = await _state(c, alice, new, "m.room.member/@spam:elsewhere.example")
        assert (status, ban["membership"]) == (200, "ban")

        # The alias and the directory listing moved; the old room is restricted.
        status, body = await c.call("GET", f"{V3}/directory/room/{quote('#up_lobby:localhost')}")
        assert (status, body["room_id"]) == (200, new)
        status, body = await c.call("GET", f"{V3}/directory/list/room/{room}")
        assert body["visibility"] == "private"
        status, body = await c.call("GET", f"{V3}/directory/list/room/{new}")
        assert body["visibility"] == "public"
        status, levels = await _state(c, alice, room, "m.room.power_levels")
        assert (levels["events_default"], levels["invite"]) == (50, 50)
        status, alias = await _state(c, alice, room, "m.room.canonical_alias")
        assert (status, alias) == (200, {})


async def test_moderator_keeps_their_level(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "upm_alice")
        bob = await register(c, "upm_bob")
        room = await create_room(c, alice)
        await join(c, bob, room)
        status, levels = await _state(c, alice, room, "m.room.power_levels")
        levels["users"]["@upm_bob:localhost"] = 50
        levels["events"]["m.room.tombstone"] = 50
        await _put(c, alice, room, "m.room.power_levels", levels)

        status, body = await _upgrade(c, bob, room, "10")
        assert status == 200, body
        status, new_levels = await _state(c, bob, body["replacement_room"], "m.room.power_levels")
        assert new_levels == levels
        # Bob may not change the old room's power levels: they stay as they were.
        status, old_levels = await _state(c, bob, room, "m.room.power_levels")
        assert old_levels == levels


async def test_upgrade_to_v12_derives_the_room_id(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "up12_alice")
        room = await create_room(c, alice)
        status, body = await _upgrade(c, alice, room, "12")
        assert status == 200, body
        new = body["replacement_room"]
        create = await _state_event(c, alice, new, "m.room.create")
        assert create["content"]["predecessor"] == {"room_id": room}
        assert new == "!" + create["event_id"][1:]
        status, levels = await _state(c, alice, quote(new), "m.room.power_levels")
        assert "@up12_alice:localhost" not in levels.get("users", {})


async def test_upgrade_refusals(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "upr_alice")
        bob = await register(c, "upr_bob")
        room = await create_room(c, alice)
        await join(c, bob, room)
        status, body = await _upgrade(c, alice, room, "my_bad_version")
        assert (status, body["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
        status, body = await _upgrade(c, bob, room, "10")
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        # Not a listed response, but what Synapse answers and Sytest expects.
        status, body = await c.call(
            "POST",
            f"{V3}/rooms/!fail:unknown/upgrade",
            {"new_version": "10"},
            token=alice,
            validate=False,
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call("POST", f"{V3}/rooms/{room}/upgrade", {}, token=alice)
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
        # Nothing changed: the room has no tombstone.
        status, body = await _state(c, alice, room, "m.room.tombstone")
        assert status == 404


async def test_members_settings_follow_the_upgrade(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = await register(c, "ups_alice")
        bob = await register(c, "ups_bob")
        a_id, b_id = "@ups_alice:localhost", "@ups_bob:localhost"
        room = await create_room(c, alice)
        await join(c, bob, room)
        status, _ = await c.call(
            "PUT", f"{V3}/user/{a_id}/account_data/m.direct", {b_id: [room]}, token=alice
        )
        assert status == 200
        status, _ = await c.call(
            "PUT", f"{V3}/user/{a_id}/rooms/{room}/tags/u.work", {"order": 0.5}, token=alice
        )
        assert status == 200
        status, _ = await c.call(
            "PUT", f"{V3}/pushrules/global/room/{room}", {"actions": ["notify"]}, token=bob
        )
        assert status == 200

        status, body = await _upgrade(c, alice, room, "10")
        assert status == 200, body
        new = body["replacement_room"]

        status, direct = await c.call("GET", f"{V3}/user/{a_id}/account_data/m.direct", token=alice)
        assert direct == {b_id: [room, new]}
        status, tags = await c.call("GET", f"{V3}/user/{a_id}/rooms/{new}/tags", token=alice)
        assert tags == {"tags": {"u.work": {"order": 0.5}}}
        status, rule = await c.call("GET", f"{V3}/pushrules/global/room/{new}", token=bob)
        assert (status, rule["rule_id"]) == (200, new)
