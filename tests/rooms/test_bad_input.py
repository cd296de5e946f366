"""Bad room requests get the right Matrix error and change nothing.

One server for the module; every request goes through the spec-checking client, and
after all the refused requests an incremental `/sync` from before them shows that no
event was added to the room.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.support.client import SpecClient
from tests.support.rooms import create_room
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
_COUNTER = itertools.count()


@pytest.fixture
async def setup(shared_server: ServerProcess) -> Any:
    """A private room of Alice's that Bob joined (Eve is not in it); names are per test."""
    prefix = f"t{next(_COUNTER)}_"
    async with SpecClient(shared_server.base_url) as client:
        alice = (await client.register(prefix + "alice"))["access_token"]
        bob = (await client.register(prefix + "bob"))["access_token"]
        eve = (await client.register(prefix + "eve"))["access_token"]
        room = await create_room(client, alice, {"preset": "private_chat", "name": "n"})
        status, _ = await client.call(
            "POST", f"{V3}/rooms/{room}/invite", {"user_id": f"@{prefix}bob:localhost"}, token=alice
        )
        assert status == 200
        status, _ = await client.call("POST", f"{V3}/rooms/{room}/join", {}, token=bob)
        assert status == 200
        status, first = await client.call(
            "PUT", f"{V3}/rooms/{room}/send/m.room.message/txn1", {"body": "one"}, token=alice
        )
        assert status == 200
        yield client, room, alice, bob, eve, first["event_id"], prefix


async def test_refused_requests_change_nothing(setup: Any) -> None:
    client, room, alice, bob, eve, first_id, prefix = setup
    status, before = await client.call("GET", f"{V3}/sync", token=alice)
    assert status == 200
    since = before["next_batch"]

    async def expect(
        method: str, path: str, status: int, errcode: str, token: str, **kw: Any
    ) -> None:
        got, body = await client.call(method, path, token=token, validate=False, **kw)
        assert (got, body.get("errcode")) == (status, errcode), (path, body)
        assert isinstance(body.get("error"), str)

    # Unknown room.
    await expect(
        "PUT",
        f"{V3}/rooms/!nowhere:localhost/send/m.room.message/t",
        404,
        "M_NOT_FOUND",
        alice,
        json={"body": "x"},
    )
    await expect("POST", f"{V3}/join/!nowhere:localhost", 404, "M_NOT_FOUND", alice, json={})
    await expect("GET", f"{V3}/rooms/!nowhere:localhost/messages", 403, "M_FORBIDDEN", alice)
    await expect(
        "PUT",
        f"{V3}/rooms/not-a-room-id/send/m.room.message/t",
        400,
        "M_INVALID_PARAM",
        alice,
        json={"body": "x"},
    )
    # Not a member.
    await expect(
        "PUT",
        f"{V3}/rooms/{room}/send/m.room.message/t",
        403,
        "M_FORBIDDEN",
        eve,
        json={"body": "x"},
    )
    await expect("GET", f"{V3}/rooms/{room}/messages", 403, "M_FORBIDDEN", eve)
    await expect("GET", f"{V3}/rooms/{room}/state", 403, "M_FORBIDDEN", eve)
    await expect("POST", f"{V3}/rooms/{room}/join", 403, "M_FORBIDDEN", eve, json={})
    # Insufficient power: Bob may talk but not rename the room, kick or ban.
    await expect(
        "PUT",
        f"{V3}/rooms/{room}/state/m.room.name",
        403,
        "M_FORBIDDEN",
        bob,
        json={"name": "mine"},
    )
    await expect(
        "POST",
        f"{V3}/rooms/{room}/kick",
        403,
        "M_FORBIDDEN",
        bob,
        json={"user_id": f"@{prefix}alice:localhost"},
    )
    await expect(
        "POST",
        f"{V3}/rooms/{room}/ban",
        403,
        "M_FORBIDDEN",
        bob,
        json={"user_id": f"@{prefix}alice:localhost"},
    )
    # Refused by the roomserver (power levels), and refused again when retransmitted.
    for _ in range(2):
        await expect(
            "PUT",
            f"{V3}/rooms/{room}/send/m.room.power_levels/pl1",
            403,
            "M_FORBIDDEN",
            bob,
            json={"users": {}},
        )
    # Malformed bodies.
    for raw, code in (
        (b"{not json", "M_NOT_JSON"),
        (b"[1]", "M_BAD_JSON"),
        (b'{"body": 1.5}', "M_BAD_JSON"),
        (b'{"n": 9007199254740992}', "M_BAD_JSON"),
    ):
        await expect(
            "PUT",
            f"{V3}/rooms/{room}/send/m.room.message/raw{len(raw)}",
            400,
            code,
            alice,
            body=raw,
            headers={"Content-Type": "application/json"},
        )
    await expect(
        "PUT",
        f"{V3}/rooms/{room}/send/m.room.message/big",
        413,
        "M_TOO_LARGE",
        alice,
        json={"body": "x" * 70_000},
    )
    await expect(
        "POST", f"{V3}/createRoom", 400, "M_INVALID_PARAM", alice, json={"preset": "secret_chat"}
    )
    await expect(
        "POST",
        f"{V3}/createRoom",
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
        alice,
        json={"room_version": "999"},
    )
    await expect("GET", f"{V3}/sync?since=garbage", 400, "M_INVALID_PARAM", alice)
    await expect("GET", f"{V3}/rooms/{room}/messages?dir=x", 400, "M_INVALID_PARAM", alice)
    await expect("GET", f"{V3}/rooms/{room}/messages?from=s1x", 400, "M_INVALID_PARAM", alice)

    # A reused transaction ID is a retransmission: the first answer, no new event.
    status, again = await client.call(
        "PUT", f"{V3}/rooms/{room}/send/m.room.message/txn1", {"body": "two"}, token=alice
    )
    assert (status, again["event_id"]) == (200, first_id)

    status, after = await client.call("GET", f"{V3}/sync?since={since}&timeout=0", token=alice)
    assert status == 200
    assert after["rooms"]["join"] == {}, after["rooms"]["join"]
    status, page = await client.call(
        "GET", f"{V3}/rooms/{room}/messages?dir=b&limit=1", token=alice
    )
    assert status == 200
    assert [e["content"] for e in page["chunk"]] == [{"body": "one"}]


async def test_send_state_redact_and_reads(setup: Any) -> None:
    client, room, alice, bob, _eve, first_id, prefix = setup
    status, body = await client.call(
        "PUT",
        f"{V3}/rooms/{room}/state/m.room.topic/",
        {"topic": "hello"},
        token=alice,
        validate=False,  # the validator's path patterns need a non-empty state key
    )
    assert status == 200
    topic_id = body["event_id"]
    status, body = await client.call(
        "GET", f"{V3}/rooms/{room}/state/m.room.topic/", token=bob, validate=False
    )
    assert (status, body) == (200, {"topic": "hello"})
    status, body = await client.call(
        "PUT", f"{V3}/rooms/{room}/state/org.example.custom/key1", {"v": 1}, token=alice
    )
    assert status == 200
    status, body = await client.call(
        "GET", f"{V3}/rooms/{room}/state/org.example.custom/key1", token=alice
    )
    assert (status, body) == (200, {"v": 1})
    status, again = await client.call(
        "PUT",
        f"{V3}/rooms/{room}/state/m.room.topic",
        {"topic": "bye"},
        token=alice,
        validate=False,
    )
    assert status == 200
    status, state = await client.call("GET", f"{V3}/rooms/{room}/state", token=bob)
    assert status == 200
    topic = next(e for e in state if e["type"] == "m.room.topic")
    assert topic["event_id"] == again["event_id"] and topic["content"] == {"topic": "bye"}
    assert topic["unsigned"]["replaces_state"] == topic_id
    assert topic["unsigned"]["prev_content"] == {"topic": "hello"}

    # Redaction: Bob redacts his own message; it is served redacted with its reason.
    status, sent = await client.call(
        "PUT", f"{V3}/rooms/{room}/send/m.room.message/b1", {"body": "oops"}, token=bob
    )
    assert status == 200
    status, red = await client.call(
        "PUT", f"{V3}/rooms/{room}/redact/{sent['event_id']}/r1", {"reason": "typo"}, token=bob
    )
    assert status == 200
    status, event = await client.call(
        "GET", f"{V3}/rooms/{room}/event/{sent['event_id']}", token=alice
    )
    assert status == 200
    assert event["content"] == {}
    assert event["unsigned"]["redacted_because"]["event_id"] == red["event_id"]

    status, ctx = await client.call(
        "GET", f"{V3}/rooms/{room}/context/{first_id}?limit=4", token=alice
    )
    assert status == 200
    assert ctx["event"]["event_id"] == first_id
    assert len(ctx["events_before"]) == 2 and len(ctx["events_after"]) == 2

    status, members = await client.call("GET", f"{V3}/rooms/{room}/members", token=alice)
    assert status == 200
    assert sorted(e["state_key"] for e in members["chunk"]) == [
        f"@{prefix}alice:localhost",
        f"@{prefix}bob:localhost",
    ]
    status, _ = await client.call(
        "PUT",
        f"{V3}/rooms/{room}/state/m.room.member/@{prefix}bob:localhost",
        {"membership": "join", "displayname": "Bobby"},
        token=bob,
    )
    assert status == 200
    status, joined = await client.call("GET", f"{V3}/rooms/{room}/joined_members", token=bob)
    assert joined["joined"][f"@{prefix}bob:localhost"] == {"display_name": "Bobby"}
    assert status == 200 and set(joined["joined"]) == {
        f"@{prefix}alice:localhost",
        f"@{prefix}bob:localhost",
    }
    status, rooms = await client.call("GET", f"{V3}/joined_rooms", token=bob)
    assert status == 200 and room in rooms["joined_rooms"]


async def test_directory_and_public_rooms(shared_server: ServerProcess) -> None:
    async with SpecClient(shared_server.base_url) as client:
        alice = (await client.register("dir_alice"))["access_token"]
        bob = (await client.register("dir_bob"))["access_token"]
        status, body = await client.call(
            "POST",
            f"{V3}/createRoom",
            {
                "visibility": "public",
                "room_alias_name": "lobby",
                "name": "Lobby",
                "topic": "welcome",
                "room_version": "10",
            },
            token=alice,
        )
        assert status == 200, body
        room = body["room_id"]
        status, again = await client.call(
            "POST",
            f"{V3}/createRoom",
            {"room_alias_name": "lobby"},
            token=alice,
            validate=False,
        )
        assert (status, again["errcode"]) == (400, "M_ROOM_IN_USE")
        status, found = await client.call("GET", f"{V3}/directory/room/%23lobby:localhost")
        assert (status, found["room_id"]) == (200, room)
        status, joined = await client.call("POST", f"{V3}/join/%23lobby:localhost", {}, token=bob)
        assert (status, joined["room_id"]) == (200, room)
        status, public = await client.call("GET", f"{V3}/publicRooms")
        assert status == 200
        entry = next(r for r in public["chunk"] if r["room_id"] == room)
        assert entry["name"] == "Lobby" and entry["num_joined_members"] == 2
        assert entry["canonical_alias"] == "#lobby:localhost"
        status, searched = await client.call(
            "POST", f"{V3}/publicRooms", {"filter": {"generic_search_term": "welc"}}, token=bob
        )
        assert status == 200 and [r["room_id"] for r in searched["chunk"]] == [room]
        status, err = await client.call(
            "DELETE", f"{V3}/directory/room/%23lobby:localhost", token=bob, validate=False
        )
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
        status, _ = await client.call(
            "DELETE", f"{V3}/directory/room/%23lobby:localhost", token=alice
        )
        assert status == 200
        status, gone = await client.call("GET", f"{V3}/directory/room/%23lobby:localhost")
        assert (status, gone["errcode"]) == (404, "M_NOT_FOUND")


async def test_create_room_that_auth_would_refuse_creates_nothing(
    shared_server: ServerProcess,
) -> None:
    async with SpecClient(shared_server.base_url) as client:
        token = (await client.register("cr_alice"))["access_token"]
        for version in ("10", "12"):
            status, err = await client.call(
                "POST",
                f"{V3}/createRoom",
                {"room_version": version, "power_level_content_override": {"ban": "high"}},
                token=token,
            )
            assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), err
            status, err = await client.call(
                "POST",
                f"{V3}/createRoom",
                {
                    "room_version": version,
                    "initial_state": [{"type": "m.room.create", "content": {}}],
                },
                token=token,
            )
            assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), err
        status, rooms = await client.call("GET", f"{V3}/joined_rooms", token=token)
        assert (status, rooms) == (200, {"joined_rooms": []})
        status, ok = await client.call(
            "POST",
            f"{V3}/createRoom",
            {
                "room_version": "12",
                "preset": "trusted_private_chat",
                "invite": ["@cr_bob:localhost"],
            },
            token=token,
        )
        assert status == 200, ok
        status, create = await client.call(
            "GET", f"{V3}/rooms/{ok['room_id']}/state/m.room.create", token=token, validate=False
        )
        assert create["additional_creators"] == ["@cr_bob:localhost"]
