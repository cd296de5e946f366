"""Federation between two real servers: a remote join by alias, messages both ways,
remote profile look-ups, invites of remote users and the key endpoints."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.federation import MAX_POLLS, Peer, wait_for_event, wait_joined
from tests.support.rooms import create_room, register, send

V3 = "/_matrix/client/v3"


async def test_join_by_alias_and_talk_both_ways(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "alice")
        bob = await register(cb, "bob")
        room_id = await create_room(
            ca, alice, {"preset": "public_chat", "room_version": "10", "room_alias_name": "fed"}
        )
        alias = f"#fed:{a.name}"
        status, body = await cb.call("GET", f"{V3}/directory/room/{quote(alias)}", token=bob)
        assert (status, body.get("room_id")) == (200, room_id), body

        status, body = await cb.call("POST", f"{V3}/join/{quote(alias)}", {}, token=bob)
        assert (status, body.get("room_id")) == (200, room_id), body

        # Bob's server knows the room: its state and his join.
        status, members = await cb.call("GET", f"{V3}/rooms/{room_id}/joined_members", token=bob)
        assert status == 200, members
        assert set(members["joined"]) == {f"@alice:{a.name}", f"@bob:{b.name}"}

        # Alice's server heard of the join.
        await wait_for_event(
            ca,
            alice,
            room_id,
            lambda e: e["type"] == "m.room.member" and e["state_key"] == f"@bob:{b.name}",
        )

        # Bob talks; Alice hears it.
        sent = await send(cb, bob, room_id, "t1", {"msgtype": "m.text", "body": "hi from b"})
        got = await wait_for_event(ca, alice, room_id, lambda e: e["event_id"] == sent)
        assert got["content"]["body"] == "hi from b"

        # Alice answers; Bob hears it.
        sent = await send(ca, alice, room_id, "t2", {"msgtype": "m.text", "body": "hi from a"})
        got = await wait_for_event(cb, bob, room_id, lambda e: e["event_id"] == sent)
        assert got["sender"] == f"@alice:{a.name}"


async def test_unsigned_federation_request_is_refused(peers: tuple[Peer, Peer]) -> None:
    a, _ = peers
    async with SpecClient(a.base_url) as ca:
        status, body = await ca.call(
            "GET", "/_matrix/federation/v1/query/profile?user_id=%40x%3Ay", validate=False
        )
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        status, body = await ca.call(
            "GET",
            "/_matrix/federation/v1/query/profile?user_id=%40x%3Ay",
            headers={
                "Authorization": 'X-Matrix origin="other",destination="nope",key="ed25519:a",'
                'sig="AAAA"'
            },
            validate=False,
        )
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_notary_serves_remote_keys(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca:
        status, body = await ca.call(
            "POST", "/_matrix/key/v2/query", {"server_keys": {b.name: {}}}, validate=False
        )
        assert status == 200, body
        [keys] = body["server_keys"]
        assert keys["server_name"] == b.name
        assert set(keys["signatures"]) == {a.name, b.name}


async def test_invite_remote_user_who_joins(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        carol = await register(ca, "carol")
        dave = await register(cb, "dave")
        dave_id = f"@dave:{b.name}"
        room_id = await create_room(ca, carol, {"preset": "private_chat", "room_version": "10"})
        status, body = await ca.call(
            "POST", f"{V3}/rooms/{room_id}/invite", {"user_id": dave_id}, token=carol
        )
        assert status == 200, body

        # Dave's server shows the invite, with the room's stripped state.
        for _ in range(MAX_POLLS):
            status, sync = await cb.call("GET", f"{V3}/sync?timeout=10000", token=dave)
            invite = sync.get("rooms", {}).get("invite", {}).get(room_id)
            if invite is not None:
                break
        else:
            raise AssertionError("the invite never reached dave")
        types = {e["type"] for e in invite["invite_state"]["events"]}
        assert {"m.room.create", "m.room.join_rules", "m.room.member"} <= types

        status, body = await cb.call("POST", f"{V3}/rooms/{room_id}/join", {}, token=dave)
        assert status == 200, body
        await wait_joined(ca, carol, room_id, dave_id)


async def test_device_keys_of_remote_users(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        erin = await register(ca, "erin")
        registered = await cb.register("frank")
        frank, device = registered["access_token"], registered["device_id"]
        frank_id = f"@frank:{b.name}"
        device_keys = {
            "user_id": frank_id,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {f"ed25519:{device}": "ed-key", f"curve25519:{device}": "curve-key"},
            "signatures": {frank_id: {f"ed25519:{device}": "sig"}},
        }
        status, body = await cb.call(
            "POST",
            f"{V3}/keys/upload",
            {
                "device_keys": device_keys,
                "one_time_keys": {"signed_curve25519:AAAA": {"key": "otk", "signatures": {}}},
            },
            token=frank,
        )
        assert status == 200, body

        status, body = await ca.call(
            "POST", f"{V3}/keys/query", {"device_keys": {frank_id: []}}, token=erin
        )
        assert status == 200, body
        assert body["failures"] == {}
        assert body["device_keys"][frank_id][device]["keys"] == device_keys["keys"]

        status, body = await ca.call(
            "POST",
            f"{V3}/keys/claim",
            {"one_time_keys": {frank_id: {device: "signed_curve25519"}}},
            token=erin,
        )
        assert status == 200, body
        assert body["one_time_keys"][frank_id][device] == {
            "signed_curve25519:AAAA": {"key": "otk", "signatures": {}}
        }


async def test_remote_profile(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        gina = await register(ca, "gina")
        hank = await register(cb, "hank")
        hank_id = f"@hank:{b.name}"
        status, body = await cb.call(
            "PUT", f"{V3}/profile/{hank_id}/displayname", {"displayname": "Hank"}, token=hank
        )
        assert status == 200, body
        status, body = await ca.call("GET", f"{V3}/profile/{hank_id}", token=gina)
        assert (status, body.get("displayname")) == (200, "Hank"), body
        status, body = await ca.call("GET", f"{V3}/profile/@nobody:{b.name}", token=gina)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def wait_for_ephemeral(c: SpecClient, token: str, room_id: str, match: Any) -> dict[str, Any]:
    """Long-poll /sync until an ephemeral event of `room_id` matching `match` arrives."""
    since = None
    for _ in range(MAX_POLLS):
        query = "timeout=10000" + (f"&since={since}" if since else "")
        status, body = await c.call("GET", f"{V3}/sync?{query}", token=token)
        assert status == 200, body
        since = body["next_batch"]
        room = body.get("rooms", {}).get("join", {}).get(room_id)
        for event in (room or {}).get("ephemeral", {}).get("events", []):
            if match(event):
                return event
    raise AssertionError(f"no matching ephemeral event in {room_id}")


async def test_typing_and_receipts_cross_servers_and_leave(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        ivy = await register(ca, "ivy")
        jay = await register(cb, "jay")
        ivy_id, jay_id = f"@ivy:{a.name}", f"@jay:{b.name}"
        room_id = await create_room(ca, ivy)
        status, body = await cb.call(
            "POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.name)}", {}, token=jay
        )
        assert status == 200, body

        status, body = await ca.call(
            "PUT",
            f"{V3}/rooms/{room_id}/typing/{ivy_id}",
            {"typing": True, "timeout": 30000},
            token=ivy,
        )
        assert status == 200, body
        await wait_for_ephemeral(
            cb,
            jay,
            room_id,
            lambda e: e["type"] == "m.typing" and ivy_id in e["content"]["user_ids"],
        )

        sent = await send(cb, jay, room_id, "r1", {"msgtype": "m.text", "body": "read me"})
        await wait_for_event(ca, ivy, room_id, lambda e: e["event_id"] == sent)
        status, body = await ca.call(
            "POST", f"{V3}/rooms/{room_id}/receipt/m.read/{quote(sent)}", {}, token=ivy
        )
        assert status == 200, body
        receipt = await wait_for_ephemeral(
            cb, jay, room_id, lambda e: e["type"] == "m.receipt" and sent in e["content"]
        )
        assert ivy_id in receipt["content"][sent]["m.read"]

        status, body = await cb.call("POST", f"{V3}/rooms/{room_id}/leave", {}, token=jay)
        assert status == 200, body
        await wait_for_event(
            ca,
            ivy,
            room_id,
            lambda e: (
                e["type"] == "m.room.member"
                and e["state_key"] == jay_id
                and e["content"]["membership"] == "leave"
            ),
        )


async def test_rejoin_own_room_through_remote_server(peers: tuple[Peer, Peer]) -> None:
    """Alice leaves the room she made, so only Bob's server is in it; Bob invites her
    back and she rejoins through his server."""
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        kim = await register(ca, "kim")
        lee = await register(cb, "lee")
        kim_id, lee_id = f"@kim:{a.name}", f"@lee:{b.name}"
        status, body = await ca.call(
            "POST",
            f"{V3}/createRoom",
            {
                "preset": "private_chat",
                "room_version": "10",
                "invite": [lee_id],
                "power_level_content_override": {"invite": 0},
            },
            token=kim,
        )
        assert status == 200, body
        room_id = body["room_id"]
        status, body = await cb.call("POST", f"{V3}/rooms/{room_id}/join", {}, token=lee)
        assert status == 200, body
        await wait_for_event(
            ca,
            kim,
            room_id,
            lambda e: e.get("state_key") == lee_id and e["content"].get("membership") == "join",
        )
        status, body = await ca.call("POST", f"{V3}/rooms/{room_id}/leave", {}, token=kim)
        assert status == 200, body
        await wait_for_event(
            cb,
            lee,
            room_id,
            lambda e: e.get("state_key") == kim_id and e["content"].get("membership") == "leave",
        )
        status, body = await cb.call(
            "POST", f"{V3}/rooms/{room_id}/invite", {"user_id": kim_id}, token=lee
        )
        assert status == 200, body
        status, body = await ca.call("POST", f"{V3}/rooms/{room_id}/join", {}, token=kim)
        assert status == 200, body
        sent = await send(cb, lee, room_id, "back", {"msgtype": "m.text", "body": "welcome"})
        await wait_for_event(ca, kim, room_id, lambda e: e["event_id"] == sent)


async def wait_for_room_in(
    c: SpecClient, token: str, section: str, room_id: str, since: str | None = None
) -> dict[str, Any]:
    """Long-poll /sync (from `since`) until `room_id` shows up in `rooms.<section>`."""
    for _ in range(MAX_POLLS):
        query = "timeout=10000" + (f"&since={since}" if since else "")
        status, body = await c.call("GET", f"{V3}/sync?{query}", token=token)
        assert status == 200, body
        since = body["next_batch"]
        room = body.get("rooms", {}).get(section, {}).get(room_id)
        if room is not None:
            return dict(room)
    raise AssertionError(f"{room_id} never appeared in rooms.{section}")


async def test_create_room_inviting_remote_user_who_rejects(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        max_ = await register(ca, "max")
        ned = await register(cb, "ned")
        ned_id = f"@ned:{b.name}"
        status, body = await ca.call(
            "POST",
            f"{V3}/createRoom",
            {"preset": "private_chat", "room_version": "10", "invite": [ned_id]},
            token=max_,
        )
        assert status == 200, body
        room_id = body["room_id"]
        await wait_for_room_in(cb, ned, "invite", room_id)
        status, body = await cb.call("GET", f"{V3}/sync", token=ned)
        assert status == 200, body
        status, body2 = await cb.call("POST", f"{V3}/rooms/{room_id}/leave", {}, token=ned)
        assert status == 200, body2
        left = await wait_for_room_in(cb, ned, "leave", room_id, body["next_batch"])
        [event] = [e for e in left["timeline"]["events"] if e.get("state_key") == ned_id]
        assert event["content"]["membership"] == "leave"
        await wait_for_event(
            ca,
            max_,
            room_id,
            lambda e: e.get("state_key") == ned_id and e["content"].get("membership") == "leave",
        )
