"""Typing, receipts, read markers, presence, profile and push rules, driven by
matrix-nio against a real server: what one client does, the other sees through `/sync`
(nio parses the ephemeral, presence and account-data sections itself)."""

from __future__ import annotations

import nio

from tests.support.server import ServerProcess


async def test_nio_ephemeral_profile_and_push_rules(server: ServerProcess) -> None:
    url = server.base_url
    alice = nio.AsyncClient(url, "nio_alice")
    bob = nio.AsyncClient(url, "nio_bob")
    try:
        assert isinstance(await alice.register("nio_alice", "pw-a"), nio.RegisterResponse)
        assert isinstance(await bob.register("nio_bob", "pw-b"), nio.RegisterResponse)
        created = await alice.room_create(preset=nio.RoomPreset.public_chat)
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        assert isinstance(await bob.join(room_id), nio.JoinResponse)
        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "hi bob"}
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        assert isinstance(await alice.sync(timeout=0), nio.SyncResponse)
        assert isinstance(await bob.sync(timeout=0), nio.SyncResponse)
        # The message notifies Bob (one-to-one room).
        assert bob.rooms[room_id].unread_notifications == 1

        presences: list[nio.PresenceEvent] = []
        alice.add_presence_callback(lambda ev: presences.append(ev), nio.PresenceEvent)

        assert isinstance(await bob.room_typing(room_id, True, 10_000), nio.RoomTypingResponse)
        marked = await bob.room_read_markers(room_id, sent.event_id, sent.event_id)
        assert isinstance(marked, nio.RoomReadMarkersResponse), marked
        assert isinstance(await bob.set_presence("unavailable", "busy"), nio.PresenceSetResponse)
        assert isinstance(await bob.set_displayname("Bobby"), nio.ProfileSetDisplayNameResponse)

        synced = await alice.sync(timeout=5000)
        assert isinstance(synced, nio.SyncResponse), synced
        room = alice.rooms[room_id]
        assert "@nio_bob:localhost" in room.typing_users
        assert room.read_receipts["@nio_bob:localhost"].event_id == sent.event_id
        assert room.user_name("@nio_bob:localhost") == "Bobby"
        bob_presence = [p for p in presences if p.user_id == "@nio_bob:localhost"]
        assert bob_presence and bob_presence[-1].presence == "unavailable"
        assert bob_presence[-1].status_msg == "busy"

        got = await alice.get_presence("@nio_bob:localhost")
        assert isinstance(got, nio.PresenceGetResponse), got
        assert got.presence == "unavailable" and got.status_msg == "busy"
        profile = await alice.get_profile("@nio_bob:localhost")
        assert isinstance(profile, nio.ProfileGetResponse), profile
        assert profile.displayname == "Bobby"

        # Bob's read marker reset his count.
        assert isinstance(await bob.sync(timeout=0), nio.SyncResponse)
        assert bob.rooms[room_id].unread_notifications == 0

        # Push rules through nio: a keyword rule, then disabled, then deleted.
        made = await alice.set_pushrule(
            "global", nio.PushRuleKind.content, "kw", actions=[nio.PushNotify()], pattern="tea*"
        )
        assert isinstance(made, nio.SetPushRuleResponse), made
        off = await alice.enable_pushrule("global", nio.PushRuleKind.content, "kw", False)
        assert isinstance(off, nio.EnablePushRuleResponse), off
        gone = await alice.delete_pushrule("global", nio.PushRuleKind.content, "kw")
        assert isinstance(gone, nio.DeletePushRuleResponse), gone
        missing = await alice.delete_pushrule("global", nio.PushRuleKind.content, "kw")
        assert isinstance(missing, nio.DeletePushRuleError)
    finally:
        await alice.close()
        await bob.close()
