"""A device that joins the conversation late gets the earlier Megolm keys from its own
user's other device, the way clients restore history on a new login.

Alice (first device) and Bob exchange Megolm messages through a real `myelin serve`.
Alice then logs in a second device, which sees only ciphertext it cannot read. It asks
for the room keys with an `m.room_key_request` to-device message (sent to all of Alice's
devices); Alice's first device answers with an Olm-encrypted `m.forwarded_room_key` after
an Olm session with the new device exists; the new device then decrypts the history it
fetches with /messages. The server relays only to-device messages and ciphertext.

matrix-nio answers key requests only from its own *verified* devices and accepts
forwarded keys only from them; the two Alice devices mark each other verified here
(`verify_device`), the single manual trust step the protocol needs (real clients use
interactive verification or cross-signing for that).
"""

from __future__ import annotations

import os
from pathlib import Path

import nio

from tests.keyserver.test_nio_e2ee import ENCRYPTION, decrypted, make_client, settle
from tests.support.client import SpecClient
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


async def login_device(url: str, user_id: str, password: str, store: Path) -> nio.AsyncClient:
    """Another login of an existing user, with its own crypto store and fresh keys."""
    os.makedirs(store, exist_ok=True)
    client = nio.AsyncClient(
        url,
        user_id,
        store_path=str(store),
        config=nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
    )
    login = await client.login(password, device_name="late device")
    assert isinstance(login, nio.LoginResponse), login
    up = await client.keys_upload()
    assert isinstance(up, nio.KeysUploadResponse), up
    return client


async def send_text(client: nio.AsyncClient, room_id: str, body: str) -> str:
    sent = await client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": body},
        ignore_unverified_devices=True,
    )
    assert isinstance(sent, nio.RoomSendResponse), sent
    return str(sent.event_id)


async def history(client: nio.AsyncClient, room_id: str) -> list[nio.Event]:
    """The room's message events, newest first, as nio decodes (and decrypts) them."""
    resp = await client.room_messages(room_id, start="", direction=nio.MessageDirection.back)
    assert isinstance(resp, nio.RoomMessagesResponse), resp
    return [e for e in resp.chunk if isinstance(e, (nio.RoomMessageText, nio.MegolmEvent))]


def own_device(client: nio.AsyncClient, device_id: str) -> nio.crypto.OlmDevice:
    devices = client.device_store[client.user_id]
    assert device_id in devices, f"{client.device_id} does not know {device_id}: {devices}"
    return devices[device_id]


async def test_late_device_gets_room_keys_from_own_device(
    myelin_server: ServerProcess, tmp_path: Path
) -> None:
    url = myelin_server.base_url
    alice = await make_client(url, "alice", tmp_path / "alice")
    bob = await make_client(url, "bob", tmp_path / "bob")
    late: nio.AsyncClient | None = None
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

        # Both Megolm sessions (Alice's and Bob's) reach Alice's first device.
        await send_text(alice, room_id, "early words from alice")
        assert decrypted(await settle(bob), room_id) == ["early words from alice"]
        await send_text(bob, room_id, "early reply from bob")
        assert decrypted(await settle(alice), room_id) == [
            "early words from alice",
            "early reply from bob",
        ]
        await settle(bob)  # Bob's own message, out of the way

        # The late device: ciphertext only.
        late = await login_device(url, alice.user_id, "pw-alice", tmp_path / "alice-late")
        assert late.device_id != alice.device_id
        await settle(late)
        await settle(late)
        locked = await history(late, room_id)
        assert [type(e) for e in locked] == [nio.MegolmEvent, nio.MegolmEvent], locked
        assert all(isinstance(e, nio.MegolmEvent) for e in locked)

        # Alice's first device learns the new device from the device-list change in /sync.
        await settle(alice)
        late_on_first = own_device(alice, late.device_id)
        first_on_late = own_device(late, alice.device_id)
        assert late_on_first.ed25519 == late.olm.account.identity_keys["ed25519"]
        assert first_on_late.ed25519 == alice.olm.account.identity_keys["ed25519"]
        alice.verify_device(late_on_first)
        late.verify_device(first_on_late)

        # The new device says hello: it claims one-time keys of the other devices and
        # shares its own Megolm session over fresh Olm sessions. Alice's first device
        # now has an Olm session with the new device (no second key claim is needed).
        await send_text(late, room_id, "hello from alice's new device")
        assert decrypted(await settle(bob), room_id) == ["hello from alice's new device"]
        assert decrypted(await settle(alice), room_id) == ["hello from alice's new device"]
        assert alice.olm.session_store.get(late_on_first.curve25519) is not None

        # One key request per earlier Megolm session (Alice's and Bob's), sent to all
        # of Alice's devices; the first device answers within one sync.
        sessions = {e.session_id: e for e in locked if isinstance(e, nio.MegolmEvent)}
        assert len(sessions) == 2
        for event in sessions.values():
            asked = await late.request_room_key(event)
            assert isinstance(asked, nio.RoomKeyRequestResponse), asked
        assert set(late.outgoing_key_requests) == set(sessions)
        await settle(alice)

        # Late device: the forwarded keys arrive over to-device and are accepted.
        await settle(late)
        assert late.outgoing_key_requests == {}, late.outgoing_key_requests
        readable = await history(late, room_id)
        texts = [e.body for e in readable if isinstance(e, nio.RoomMessageText)]
        assert texts == [
            "hello from alice's new device",
            "early reply from bob",
            "early words from alice",
        ], readable
        assert [e.sender for e in readable] == [alice.user_id, bob.user_id, alice.user_id]
    finally:
        await alice.close()
        await bob.close()
        if late is not None:
            await late.close()


async def test_to_device_after_inbox_drained(myelin_server: ServerProcess) -> None:
    """Messages queued after every earlier one was delivered and deleted still reach a
    device whose sync token is past the deleted ones (send_to_device.md: messages are
    kept until the device acknowledges them with a later `since`). The key request and
    forwarded key above depend on this; a regression once handed out used positions."""
    async with SpecClient(myelin_server.base_url) as http:
        sender = await http.register("tdsender")
        target = await http.register("tdtarget")
        where: dict[str, dict[str, dict[str, int]]] = {target["user_id"]: {}}

        async def send(txn: str, n: int) -> None:
            where[target["user_id"]][target["device_id"]] = {"n": n}
            status, body = await http.call(
                "PUT",
                f"{V3}/sendToDevice/org.example.ping/{txn}",
                {"messages": where},
                token=sender["access_token"],
            )
            assert status == 200, body

        async def sync(since: str | None) -> tuple[str, list[int]]:
            query = "?timeout=0" + (f"&since={since}" if since else "")
            status, body = await http.call("GET", f"{V3}/sync{query}", token=target["access_token"])
            assert status == 200, body
            return body["next_batch"], [e["content"]["n"] for e in body["to_device"]["events"]]

        token, got = await sync(None)
        assert got == []
        seen: list[int] = []
        for n in range(1, 4):
            await send(f"t{n}", n)
            token, got = await sync(token)
            seen += got
            token, got = await sync(token)  # acknowledges (deletes) the delivered message
            assert got == []
        assert seen == [1, 2, 3]
