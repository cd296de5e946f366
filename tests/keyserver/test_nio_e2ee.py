"""Two matrix-nio clients with real Olm/Megolm (vodozemac) talk in an encrypted room on a
real `myelin serve`: key upload, query, claim, to-device room keys, device-list tracking.
The server only ever relays ciphertext; each side must decrypt the other's messages."""

from __future__ import annotations

import os
from pathlib import Path

import nio

from tests.support.server import ServerProcess

ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


async def make_client(url: str, name: str, store: Path) -> nio.AsyncClient:
    os.makedirs(store, exist_ok=True)
    client = nio.AsyncClient(
        url,
        name,
        store_path=str(store),
        config=nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
    )
    resp = await client.register(name, "pw-" + name, device_name=name + " device")
    assert isinstance(resp, nio.RegisterResponse), resp
    # Registration does not load the crypto store; a fresh login does.
    await client.close()
    client = nio.AsyncClient(
        url,
        resp.user_id,
        store_path=str(store),
        config=nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
    )
    login = await client.login("pw-" + name, device_name=name + " e2e")
    assert isinstance(login, nio.LoginResponse), login
    up = await client.keys_upload()
    assert isinstance(up, nio.KeysUploadResponse), up
    assert up.signed_curve25519_count > 0
    return client


async def settle(client: nio.AsyncClient) -> nio.SyncResponse:
    """One sync plus the key traffic it calls for."""
    resp = await client.sync(timeout=0)
    assert isinstance(resp, nio.SyncResponse), resp
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        q = await client.keys_query()
        assert isinstance(q, nio.KeysQueryResponse), q
    if client.should_claim_keys:
        c = await client.keys_claim(client.get_users_for_key_claiming())
        assert isinstance(c, nio.KeysClaimResponse), c
    await client.send_to_device_messages()
    return resp


def decrypted(resp: nio.SyncResponse, room_id: str) -> list[str]:
    room = resp.rooms.join.get(room_id)
    if room is None:
        return []
    return [e.body for e in room.timeline.events if isinstance(e, nio.RoomMessageText)]


async def test_megolm_messages_both_ways(myelin_server: ServerProcess, tmp_path: Path) -> None:
    url = myelin_server.base_url
    alice = await make_client(url, "alice", tmp_path / "alice")
    bob = await make_client(url, "bob", tmp_path / "bob")
    try:
        created = await alice.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION])
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        await settle(alice)
        await settle(bob)
        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined
        for _ in range(2):
            await settle(alice)
            await settle(bob)
        assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted
        # Each side knows the other's device from /keys/query.
        assert bob.device_id in alice.device_store[bob.user_id]
        assert alice.device_id in bob.device_store[alice.user_id]

        sent = await alice.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "hello from alice"},
            ignore_unverified_devices=True,
        )
        assert isinstance(sent, nio.RoomSendResponse), sent
        # What the server stored is ciphertext.
        raw = await bob.room_get_event(room_id, sent.event_id)
        assert isinstance(raw, nio.RoomGetEventResponse), raw
        assert "hello from alice" not in str(raw.event.source)
        assert raw.event.source["type"] == "m.room.encrypted"

        got = await settle(bob)
        texts = decrypted(got, room_id)
        assert texts == ["hello from alice"], got.rooms.join.get(room_id)

        reply = await bob.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "hello back from bob"},
            ignore_unverified_devices=True,
        )
        assert isinstance(reply, nio.RoomSendResponse), reply
        got = await settle(alice)
        # Alice's sync also brings her own message (she has not synced since sending it).
        assert decrypted(got, room_id) == ["hello from alice", "hello back from bob"]
    finally:
        await alice.close()
        await bob.close()
