"""`/sync` and `/messages` options over HTTP: filters (inline and by ID), timeline limits,
lazy-loaded members, `full_state`, redactions served redacted, `set_presence`."""

from __future__ import annotations

from urllib.parse import quote

import orjson

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def flt(value: object) -> str:
    return quote(orjson.dumps(value).decode())


async def test_sync_filters_and_redactions(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("sf_alice"))["access_token"]
        bob = (await c.register("sf_bob"))["access_token"]
        carol = (await c.register("sf_carol"))["access_token"]
        dave = (await c.register("sf_dave"))["access_token"]
        room = await create_room(c, alice)
        for who in (bob, carol, dave):
            await join(c, who, room)
        ids = []
        for i in range(6):
            ids.append(await send(c, bob, room, f"m{i}", {"msgtype": "m.text", "body": f"m{i}"}))
        status, _ = await c.call(
            "PUT", f"{V3}/rooms/{room}/send/org.example.other/o1", {"x": 1}, token=alice
        )
        assert status == 200

        # Inline filter: a timeline of 3, lazy-loaded members: the senders and the
        # requester, not Dave, who only joined.
        query = flt({"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": True}}})
        status, s = await c.call(
            "GET", f"{V3}/sync?filter={query}&set_presence=offline", token=carol
        )
        assert status == 200
        joined = s["rooms"]["join"][room]
        assert joined["timeline"]["limited"] is True
        assert [e["type"] for e in joined["timeline"]["events"]] == [
            "m.room.message",
            "m.room.message",
            "org.example.other",
        ]
        members = {
            e["state_key"] for e in joined["state"]["events"] if e["type"] == "m.room.member"
        }
        assert members == {"@sf_alice:localhost", "@sf_bob:localhost", "@sf_carol:localhost"}

        # A stored filter by ID: only messages in the timeline.
        status, made = await c.call(
            "POST",
            f"{V3}/user/%40sf_carol%3Alocalhost/filter",
            {"room": {"timeline": {"types": ["m.room.message"], "limit": 2}}},
            token=carol,
        )
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync?filter={made['filter_id']}", token=carol)
        assert status == 200
        events = s["rooms"]["join"][room]["timeline"]["events"]
        assert [e["event_id"] for e in events] == ids[-2:]
        since = s["next_batch"]

        # A redaction reaches the next sync; the redacted event is then served redacted.
        status, red = await c.call(
            "PUT", f"{V3}/rooms/{room}/redact/{ids[-1]}/r1", {"reason": "spam"}, token=alice
        )
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync?since={since}&timeout=5000", token=carol)
        assert status == 200
        timeline = s["rooms"]["join"][room]["timeline"]["events"]
        assert [e["event_id"] for e in timeline] == [red["event_id"]]
        assert timeline[0]["redacts"] == ids[-1]
        status, page = await c.call(
            "GET",
            f"{V3}/rooms/{room}/messages?dir=b&limit=3&filter="
            + flt({"types": ["m.room.message"]}),
            token=carol,
        )
        assert status == 200
        assert [e["event_id"] for e in page["chunk"]] == [ids[5], ids[4], ids[3]]
        assert page["chunk"][0]["content"] == {}
        assert page["chunk"][0]["unsigned"]["redacted_because"]["content"] == {"reason": "spam"}

        # full_state: an incremental sync with nothing new still carries the whole state.
        status, s = await c.call(
            "GET", f"{V3}/sync?since={s['next_batch']}&full_state=true", token=carol
        )
        assert status == 200
        state_types = {e["type"] for e in s["rooms"]["join"][room]["state"]["events"]}
        assert {"m.room.create", "m.room.join_rules", "m.room.power_levels"} <= state_types

        # Forward pagination from the start gives the room's first events in order.
        status, page = await c.call("GET", f"{V3}/rooms/{room}/messages?dir=f&limit=2", token=carol)
        assert status == 200
        assert [e["type"] for e in page["chunk"]] == ["m.room.create", "m.room.member"]
        assert "end" in page


async def test_rejected_invite_shows_no_history_and_forget(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("ri_alice"))["access_token"]
        bob = (await c.register("ri_bob"))["access_token"]
        room = await create_room(c, alice, {"invite": ["@ri_bob:localhost"], "is_direct": True})
        status, _ = await c.call(
            "PUT", f"{V3}/rooms/{room}/send/m.room.message/s1", {"body": "secret"}, token=alice
        )
        assert status == 200
        status, first = await c.call("GET", f"{V3}/sync", token=bob)
        assert status == 200
        invite = first["rooms"]["invite"][room]["invite_state"]["events"]
        mine = [e for e in invite if e.get("state_key") == "@ri_bob:localhost"]
        assert mine[0]["content"] == {"membership": "invite", "is_direct": True}
        assert "secret" not in orjson.dumps(first).decode()

        status, _ = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=bob)
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync?since={first['next_batch']}", token=bob)
        assert status == 200
        left = s["rooms"]["leave"][room]["timeline"]["events"]
        assert [(e["type"], e["content"]["membership"]) for e in left] == [
            ("m.room.member", "leave")
        ]
        status, err = await c.call("GET", f"{V3}/rooms/{room}/messages", token=bob)
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")

        # Forgetting: refused while joined, then the room leaves the leave section.
        status, err = await c.call(
            "POST", f"{V3}/rooms/{room}/forget", {}, token=alice, validate=False
        )
        assert (status, err["errcode"]) == (400, "M_UNKNOWN")
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/forget", {}, token=bob)
        assert status == 200
        flt_leave = flt({"room": {"include_leave": True}})
        status, s = await c.call("GET", f"{V3}/sync?filter={flt_leave}", token=bob)
        assert status == 200 and room not in s["rooms"]["leave"]


async def test_joined_history_visibility_hides_earlier_events(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("hv_alice"))["access_token"]
        bob = (await c.register("hv_bob"))["access_token"]
        status, body = await c.call(
            "POST",
            f"{V3}/createRoom",
            {
                "preset": "public_chat",
                "initial_state": [
                    {
                        "type": "m.room.history_visibility",
                        "content": {"history_visibility": "joined"},
                    }
                ],
            },
            token=alice,
        )
        assert status == 200
        room = body["room_id"]
        status, _ = await c.call(
            "PUT", f"{V3}/rooms/{room}/send/m.room.message/e1", {"body": "early"}, token=alice
        )
        assert status == 200
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/join", {}, token=bob)
        assert status == 200
        status, _ = await c.call(
            "PUT", f"{V3}/rooms/{room}/send/m.room.message/l1", {"body": "later"}, token=alice
        )
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        assert status == 200
        timeline = s["rooms"]["join"][room]["timeline"]["events"]
        # Visibility is that at each event: the room's first events precede the `joined`
        # setting (so fall under the default, `shared`); "early" was sent under `joined`.
        assert [e["type"] for e in timeline] == [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.member",
            "m.room.message",
        ]
        assert timeline[-1]["content"] == {"body": "later"}
        status, page = await c.call("GET", f"{V3}/rooms/{room}/messages?dir=b", token=bob)
        assert status == 200
        bodies = [e.get("content", {}).get("body") for e in page["chunk"]]
        assert bodies[:2] == ["later", None] and "early" not in bodies
        # After leaving, what Bob could see stays readable; nothing before his join.
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/leave", {}, token=bob)
        assert status == 200
        status, page = await c.call("GET", f"{V3}/rooms/{room}/messages?dir=b", token=bob)
        assert status == 200
        bodies = [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
        assert bodies == ["later"]


async def test_display_name_change_is_not_a_new_join(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("dn_alice"))["access_token"]
        room = await create_room(c, alice, {"name": "dn"})
        status, first = await c.call("GET", f"{V3}/sync", token=alice)
        assert status == 200
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room}/state/m.room.member/@dn_alice:localhost",
            {"membership": "join", "displayname": "Alice"},
            token=alice,
        )
        assert status == 200
        status, s = await c.call("GET", f"{V3}/sync?since={first['next_batch']}", token=alice)
        assert status == 200
        joined = s["rooms"]["join"][room]
        assert [e["content"] for e in joined["timeline"]["events"]] == [
            {"membership": "join", "displayname": "Alice"}
        ]
        assert joined["timeline"]["limited"] is False
        assert joined["state"]["events"] == []
        member = joined["timeline"]["events"][0]
        # The join carried the account's default name, its localpart.
        assert member["unsigned"]["prev_content"] == {
            "membership": "join",
            "displayname": "dn_alice",
        }


async def test_knock_appears_in_both_syncs(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as c:
        alice = (await c.register("kn_alice"))["access_token"]
        bob = (await c.register("kn_bob"))["access_token"]
        status, body = await c.call(
            "POST",
            f"{V3}/createRoom",
            {
                "room_version": "10",
                "name": "Knock here",
                "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
            },
            token=alice,
        )
        assert status == 200
        room = body["room_id"]
        status, a_first = await c.call("GET", f"{V3}/sync", token=alice)
        assert status == 200
        status, refused = await c.call(
            "POST", f"{V3}/rooms/{room}/join", {}, token=bob, validate=False
        )
        assert (status, refused["errcode"]) == (403, "M_FORBIDDEN")
        status, knocked = await c.call(
            "POST", f"{V3}/knock/{room}", {"reason": "let me in"}, token=bob
        )
        assert (status, knocked) == (200, {"room_id": room})
        status, s = await c.call("GET", f"{V3}/sync", token=bob)
        assert status == 200
        state = s["rooms"]["knock"][room]["knock_state"]["events"]
        assert {
            "type": "m.room.name",
            "state_key": "",
            "content": {"name": "Knock here"},
            "sender": "@kn_alice:localhost",
        } in state
        status, s = await c.call(
            "GET", f"{V3}/sync?since={a_first['next_batch']}&timeout=5000", token=alice
        )
        assert status == 200
        [event] = s["rooms"]["join"][room]["timeline"]["events"]
        assert event["content"] == {"membership": "knock", "reason": "let me in"}
        status, _ = await c.call(
            "POST", f"{V3}/rooms/{room}/invite", {"user_id": "@kn_bob:localhost"}, token=alice
        )
        assert status == 200
        status, _ = await c.call("POST", f"{V3}/rooms/{room}/join", {}, token=bob)
        assert status == 200
