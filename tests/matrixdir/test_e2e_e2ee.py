"""matrixdir in end-to-end encrypted rooms against each homeserver (Synapse and Myelin).

The other side is a real matrix-nio client with its own keys: it sends encrypted messages and
an encrypted attachment, and must be able to decrypt what `matrixdir send` encrypts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nio
import pytest
from nio.crypto.attachments import encrypt_attachment

from matrixdir.layout import attachment_relpath, room_dir_name
from matrixdir.reader import read_room

from .conftest import Cli, User, api, q, register


def stored(store: Path, room_id: str) -> list[dict[str, Any]]:
    return [s.event for s in read_room(store / room_dir_name(room_id))]


async def nio_client(user: User, path: Path) -> nio.AsyncClient:
    os.makedirs(path, exist_ok=True)
    client = nio.AsyncClient(
        user.base,
        user.user_id,
        store_path=str(path),
        config=nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
    )
    resp = await client.login(user.password, device_name="peer")
    assert isinstance(resp, nio.LoginResponse), resp
    await client.keys_upload()
    return client


async def settle(client: nio.AsyncClient) -> None:
    """One sync plus the key traffic it calls for."""
    await client.sync(timeout=0, full_state=True)
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()


@pytest.mark.slow
async def test_encrypted_room_sync_send_and_key_import(
    homeserver: str, server_kind: str, cli: Cli, tmp_path: Path
) -> None:
    alice, bob_user = register(homeserver), register(homeserver)
    cli.login(alice)
    cli.run("sync", "--once", "--no-progress")  # uploads the matrixdir device's keys
    bob = await nio_client(bob_user, tmp_path / "bob")
    try:
        resp = await bob.room_create(
            invite=[alice.user_id],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        assert isinstance(resp, nio.RoomCreateResponse), resp
        room = resp.room_id
        alice.join(room)
        await settle(bob)
        assert bob.rooms[room].encrypted
        bodies = [f"secret {i}" for i in range(60)]  # more than one sync timeline: back-fill
        for body in bodies:
            r = await bob.room_send(
                room,
                "m.room.message",
                {"msgtype": "m.text", "body": body},
                ignore_unverified_devices=True,
            )
            assert isinstance(r, nio.RoomSendResponse), r
        blob = os.urandom(2048)
        cipher, keys = encrypt_attachment(blob)
        mxc = api(
            homeserver,
            "POST",
            "/_matrix/media/v3/upload?filename=x",
            raw=cipher,
            token=bob_user.token,
        )["content_uri"]
        await bob.room_send(
            room,
            "m.room.message",
            {"msgtype": "m.file", "body": "x.bin", "file": {"url": mxc, **keys}},
            ignore_unverified_devices=True,
        )

        cli.run("sync", "--once", "--no-progress")
        events = stored(cli.store, room)
        texts = [e["content"].get("body") for e in events if e["type"] == "m.room.message"]
        assert texts == [*bodies, "x.bin"]
        assert all(
            e["matrixdir"]["encrypted"]["algorithm"] == "m.megolm.v1.aes-sha2"
            for e in events
            if e["type"] == "m.room.message"
        )
        assert not [e for e in events if e["type"] == "m.room.encrypted"]
        att = cli.store / room_dir_name(room) / attachment_relpath(mxc)
        assert att.read_bytes() == blob  # decrypted on disk

        # matrixdir send encrypts: the server only sees m.room.encrypted, bob decrypts it.
        event_id = cli.run("send", "--room", room, "--text", input="from matrixdir\n")
        event_id_s = event_id.stdout.strip()
        raw = api(
            homeserver,
            "GET",
            f"/_matrix/client/v3/rooms/{q(room)}/event/{q(event_id_s)}",
            token=alice.token,
        )
        assert raw["type"] == "m.room.encrypted"
        sync = await bob.sync(timeout=0, full_state=True)
        assert isinstance(sync, nio.SyncResponse)
        got = await bob.room_messages(
            room, start=sync.rooms.join[room].timeline.prev_batch or "", limit=50
        )
        everything = [*sync.rooms.join[room].timeline.events, *got.chunk]
        mine = [e for e in everything if e.event_id == event_id_s]
        assert mine and isinstance(mine[0], nio.RoomMessageText), mine
        assert mine[0].body == "from matrixdir"
        cli.run("sync", "--once", "--no-progress")
        by_id = {e["event_id"]: e for e in stored(cli.store, room)}
        assert by_id[event_id_s]["content"]["body"] == "from matrixdir"

        if server_kind != "myelin":
            # The rest is matrixdir's key import and late-decryptions file; the server's
            # part (a new device syncing the history) is ordinary sync and /messages.
            # It runs once, against Myelin.
            return
        # A new device of alice cannot decrypt the history: stored encrypted, exactly once.
        export = tmp_path / "keys.txt"
        await bob.export_keys(str(export), "pass phrase")
        fresh = Cli(tmp_path / "home2", tmp_path / "chats2")
        fresh.login(alice)
        fresh.run("sync", "--once", "--no-progress")
        events2 = stored(fresh.store, room)
        assert len(events2) == len(events) + 1  # plus "from matrixdir"
        locked = [e for e in events2 if e["type"] == "m.room.encrypted"]
        assert len(locked) == len(bodies) + 2
        # Importing the key export decrypts them into the late-decryptions file, once.
        for _ in range(2):
            fresh.run(
                "sync",
                "--once",
                "--no-progress",
                "--import-keys",
                str(export),
                "--passphrase",
                "pass phrase",
            )
        late = (fresh.store / room_dir_name(room) / "late-decryptions.jsonl").read_text()
        plain = [json.loads(line) for line in late.splitlines()]
        assert sorted(p["event_id"] for p in plain) == sorted(e["event_id"] for e in locked)
        texts2 = {p["content"]["body"] for p in plain}
        assert texts2 == {*bodies, "x.bin", "from matrixdir"}
        assert [e["event_id"] for e in stored(fresh.store, room)] == [
            e["event_id"] for e in events2
        ]  # the event files did not change
        assert "0 errors" in fresh.run("check").stderr
    finally:
        await bob.close()
