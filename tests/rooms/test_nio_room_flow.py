"""The room and sync vertical slice, driven by matrix-nio against a real `myelin serve`:
two users, a room, an invite and a join, 100 messages, initial and incremental sync, a
long-poll woken by a send, pagination back through `/messages`, and a leave. Every event
ID that `/send` answered is then checked in the server's own event log: its hashes and
signature verify against the key the server publishes at `/_matrix/key/v2/server`.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import nio

from myelin.core.builder import verify_event
from myelin.core.signing import decode_verify_key
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.types import LogPayload, Status
from tests.support.server import ServerProcess

MESSAGES = 100


def texts(events: list[nio.Event]) -> list[str]:
    return [e.body for e in events if isinstance(e, nio.RoomMessageText)]


async def server_keys(base_url: str) -> dict[tuple[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url + "/_matrix/key/v2/server") as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    return {
        (body["server_name"], key_id): decode_verify_key(key["key"])
        for key_id, key in body["verify_keys"].items()
    }


async def test_two_users_chat_sync_paginate_leave(backend_server: ServerProcess) -> None:
    myelin_server = backend_server
    url = myelin_server.base_url
    alice = nio.AsyncClient(url, "alice")
    bob = nio.AsyncClient(url, "bob")
    sent: list[str] = []
    try:
        assert isinstance(await alice.register("alice", "pw-alice"), nio.RegisterResponse)
        assert isinstance(await bob.register("bob", "pw-bob"), nio.RegisterResponse)
        first_bob = await bob.sync(timeout=0)
        assert isinstance(first_bob, nio.SyncResponse), first_bob

        created = await alice.room_create(
            name="Chat", topic="testing", preset=nio.RoomPreset.private_chat
        )
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        invited = await alice.room_invite(room_id, "@bob:localhost")
        assert isinstance(invited, nio.RoomInviteResponse), invited

        # Bob's incremental sync shows the invite with stripped state.
        sync = await bob.sync(timeout=5000)
        assert isinstance(sync, nio.SyncResponse), sync
        assert room_id in sync.rooms.invite
        stripped = {e.source["type"] for e in sync.rooms.invite[room_id].invite_state}
        assert {"m.room.member", "m.room.name"} <= stripped

        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined
        assert joined.room_id == room_id

        for i in range(MESSAGES):
            client = alice if i % 2 == 0 else bob
            resp = await client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": f"message {i}"}
            )
            assert isinstance(resp, nio.RoomSendResponse), resp
            sent.append(resp.event_id)
        assert len(set(sent)) == MESSAGES

        # Initial sync: the last 10 events, limited, with a prev_batch to paginate from.
        carol_view = nio.AsyncClient(url, "@bob:localhost")
        carol_view.access_token, carol_view.user_id = bob.access_token, bob.user_id
        carol_view.device_id = bob.device_id
        initial = await carol_view.sync(timeout=0, full_state=True)
        await carol_view.close()
        assert isinstance(initial, nio.SyncResponse), initial
        room = initial.rooms.join[room_id]
        assert room.timeline.limited is True
        assert texts(room.timeline.events) == [f"message {i}" for i in range(90, 100)]
        state_types = {e.source["type"] for e in room.state}
        assert {
            "m.room.create",
            "m.room.power_levels",
            "m.room.name",
            "m.room.topic",
        } <= state_types

        # Paginate back through /messages to the start of the room.
        collected: list[str] = []
        token = room.timeline.prev_batch
        pages = 0
        while token is not None:
            page = await bob.room_messages(room_id, start=token, limit=25)
            assert isinstance(page, nio.RoomMessagesResponse), page
            collected.extend(texts(page.chunk))
            token = page.end
            pages += 1
            assert pages < 20
        assert collected == [f"message {i}" for i in range(89, -1, -1)]

        # Own events carry the sending device's transaction ID; others' do not.
        mine = [e for e in room.timeline.events if e.sender == "@bob:localhost"]
        assert mine and all("transaction_id" in e.source["unsigned"] for e in mine)
        theirs = [e for e in room.timeline.events if e.sender == "@alice:localhost"]
        assert theirs and all("transaction_id" not in e.source["unsigned"] for e in theirs)

        # Incremental sync: Bob's next sync holds exactly what came after his token.
        sync = await bob.sync(timeout=0)
        assert isinstance(sync, nio.SyncResponse)
        resp = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "late"}
        )
        assert isinstance(resp, nio.RoomSendResponse)
        sent.append(resp.event_id)
        sync = await bob.sync(timeout=0)
        assert isinstance(sync, nio.SyncResponse)
        assert texts(sync.rooms.join[room_id].timeline.events) == ["late"]
        assert sync.rooms.join[room_id].timeline.limited is False

        # Long poll: nothing new, so the request waits until Alice's send commits.
        poll = asyncio.create_task(bob.sync(timeout=20_000))
        await asyncio.sleep(0.3)
        assert not poll.done()
        started = time.monotonic()
        resp = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "wake"}
        )
        assert isinstance(resp, nio.RoomSendResponse)
        sent.append(resp.event_id)
        woken = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - started < 5
        assert isinstance(woken, nio.SyncResponse), woken
        assert texts(woken.rooms.join[room_id].timeline.events) == ["wake"]

        # Leave: Alice sees it, Bob gets the room in his leave section and no more.
        left = await bob.room_leave(room_id)
        assert isinstance(left, nio.RoomLeaveResponse), left
        sync = await bob.sync(timeout=0)
        assert isinstance(sync, nio.SyncResponse)
        assert room_id in sync.rooms.leave and room_id not in sync.rooms.join
        alice_sync = await alice.sync(timeout=0, full_state=True)
        assert isinstance(alice_sync, nio.SyncResponse)
        members = await alice.joined_members(room_id)
        assert isinstance(members, nio.JoinedMembersResponse)
        assert [m.user_id for m in members.members] == ["@alice:localhost"]
        after = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "gone"}
        )
        assert isinstance(after, nio.RoomSendResponse)
        sync = await bob.sync(timeout=0)
        assert isinstance(sync, nio.SyncResponse)
        assert room_id not in sync.rooms.join and room_id not in sync.rooms.leave

        keys = await server_keys(url)
    finally:
        await alice.close()
        await bob.close()

    assert myelin_server.stop() == 0
    async with DiskEventLog(myelin_server.data_dir / "eventlog") as log:
        entries = await log.read(1, 100_000)
    stored = {}
    for entry in entries:
        payload = LogPayload.decode(entry.record.payload)
        stored[payload.event.event_id] = payload
    for event_id in sent:
        payload = stored[event_id]
        assert payload.status is Status.ACCEPTED
        verify_event(payload.event, keys)
