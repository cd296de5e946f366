"""`KeyServer` and `KeyBackup` on both storage backends, plus the pure backup rules."""

from __future__ import annotations

import asyncio

import pytest

from myelin.core.signing import SigningKey
from myelin.keyserver import KeyServer, KeyServerError
from myelin.keyserver.backup import BackupKey, parse_sessions
from myelin.storage import Database
from myelin.syncapi.tokens import StreamToken
from myelin.userapi.accounts import UserAPI
from tests.keyserver.helpers import Device

HS = "test.example"


async def setup(db: Database) -> tuple[KeyServer, UserAPI, list[set[str]]]:
    users = await UserAPI.open(db, HS)
    await db.migrate("syncapi", "myelin.syncapi.migrations")
    woken: list[set[str]] = []
    keys = await KeyServer.open(db, HS, lambda u: woken.append(set(u)))
    users.on_devices_removed.append(keys.devices_removed)
    return keys, users, woken


async def device(users: UserAPI, name: str) -> Device:
    user_id = f"@{name}:{HS}"
    if await users.is_available(user_id):
        await users.create_account(user_id, "pw")
    session = await users.login(user_id, device_id=None, display_name=name, ip=None)
    return Device(
        user_id, session.device_id, session.access_token, SigningKey.generate(session.device_id)
    )


async def test_upload_claim_once_and_deleted_devices(db: Database) -> None:
    keys, users, woken = await setup(db)
    alice = await device(users, "alice")
    counts = await keys.upload(
        alice.user_id,
        alice.device_id,
        {"device_keys": alice.device_keys(), "one_time_keys": alice.one_time_keys(0, 4)},
    )
    assert counts == {"signed_curve25519": 4}
    assert alice.user_id in woken[-1]  # a device-list change wakes the owner too
    wanted = {alice.user_id: {alice.device_id: "signed_curve25519"}}
    results = await asyncio.gather(*(keys.claim(wanted) for _ in range(6)))
    given = [
        next(iter(r["one_time_keys"][alice.user_id][alice.device_id]))
        for r in results
        if r["one_time_keys"]
    ]
    assert sorted(given) == [f"signed_curve25519:K{i:05d}" for i in range(4)]
    assert await keys.one_time_key_counts(alice.user_id, alice.device_id) == {}

    await keys.upload(alice.user_id, alice.device_id, {"one_time_keys": alice.one_time_keys(10, 1)})
    before = await db.fetchall("SELECT count(*) FROM e2e_device_list_stream")
    await users.delete_devices(alice.user_id, [alice.device_id])
    assert (await keys.claim(wanted))["one_time_keys"] == {}
    found = await keys.query(alice.user_id, {alice.user_id: []})
    assert found["device_keys"] == {alice.user_id: {}}
    # The deleted device's keys are gone and the change is on the device-list stream.
    left = await db.fetchall(
        "SELECT count(*) FROM e2e_one_time_keys WHERE user_id = ?", alice.user_id
    )
    assert left[0][0] == 0
    after = await db.fetchall("SELECT count(*) FROM e2e_device_list_stream")
    assert after[0][0] == before[0][0] + 1


async def test_device_list_changed_hook(db: Database) -> None:
    """A new or renamed device (no key upload involved) is a device-list change: the owner
    and the users sharing a room with them see it on the stream and are woken."""
    keys, users, woken = await setup(db)
    alice = await device(users, "alice")
    start = await keys.streams.latest_positions()
    woken.clear()
    await keys.device_list_changed(alice.user_id)
    assert woken == [{alice.user_id}]
    now = await keys.streams.latest_positions()
    changed, left = await db.read(
        lambda t: keys.streams.device_list_changes(
            t, alice.user_id, start.device_list, now.device_list, 0, 0
        )
    )
    assert (changed, left) == ([alice.user_id], [])


async def test_device_list_changes_follow_encrypted_rooms(db: Database) -> None:
    """The membership rules of `device_list_changes` on both backends, on hand-written
    sync rows: a room turning encrypted puts its members in `changed`; a user who left
    is in `left` unless an encrypted room is still shared."""
    keys, _users, _ = await setup(db)
    alice, bob = f"@alice:{HS}", f"@bob:{HS}"

    async def member(user: str, room: str, membership: str, pos: int) -> None:
        await db.run(
            lambda t: t.execute(
                "INSERT INTO sync_memberships (user_id, room_id, membership, event_id, pos)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id) DO UPDATE SET"
                " membership = excluded.membership, pos = excluded.pos",
                user,
                room,
                membership,
                f"$m{pos}",
                pos,
            )
        )

    async def changes(after: int, upto: int) -> tuple[list[str], list[str]]:
        return await db.read(
            lambda t: keys.streams.device_list_changes(t, alice, 0, 0, after, upto)
        )

    for pos, (user, room) in enumerate(
        [(alice, "!plain"), (bob, "!plain"), (alice, "!enc"), (bob, "!enc")], start=1
    ):
        await member(user, room, "join", pos)
    assert await changes(4, 10) == ([], [])
    await db.run(
        lambda t: t.execute(
            "INSERT INTO sync_current_state (room_id, type, state_key, event_id, pos)"
            " VALUES ('!enc', 'm.room.encryption', '', '$e', 10)"
        )
    )
    assert bob in (await changes(4, 10))[0]
    assert await changes(10, 10) == ([], [])
    # Bob leaves the plain room: the encrypted one is still shared.
    await member(bob, "!plain", "leave", 11)
    assert await changes(10, 11) == ([], [])
    # Bob rejoins the plain room and leaves the encrypted one: in `left`.
    await member(bob, "!plain", "join", 12)
    await member(bob, "!enc", "leave", 13)
    assert await changes(12, 13) == ([], [bob])


async def test_refused_upload_writes_nothing(db: Database) -> None:
    keys, users, _ = await setup(db)
    alice = await device(users, "alice")
    incomplete = alice.device_keys()
    del incomplete["algorithms"]
    with pytest.raises(KeyServerError) as err:
        await keys.upload(
            alice.user_id,
            alice.device_id,
            {"device_keys": incomplete, "one_time_keys": alice.one_time_keys(0, 3)},
        )
    assert err.value.errcode == "M_BAD_JSON"
    # A clash in the middle of a batch rolls back the keys before it.
    await keys.upload(alice.user_id, alice.device_id, {"one_time_keys": alice.one_time_keys(5, 1)})
    batch = alice.one_time_keys(0, 5) | {"signed_curve25519:K00005": {"key": "other"}}
    with pytest.raises(KeyServerError):
        await keys.upload(alice.user_id, alice.device_id, {"one_time_keys": batch})
    assert await keys.one_time_key_counts(alice.user_id, alice.device_id) == {
        "signed_curve25519": 1
    }
    assert (await keys.query(alice.user_id, {alice.user_id: []}))["device_keys"] == {
        alice.user_id: {}
    }


async def test_to_device_queue_and_txn(db: Database) -> None:
    keys, users, woken = await setup(db)
    alice = await device(users, "alice")
    bob = await device(users, "bob")
    msg = {bob.user_id: {bob.device_id: {"a": 1}, "GONE": {"a": 2}}}
    await keys.send_to_device(alice.user_id, alice.device_id, "m.x", "t1", msg)
    assert woken[-1] == {bob.user_id}
    await keys.send_to_device(alice.user_id, alice.device_id, "m.x", "t1", msg)

    async def part(since_td: int) -> list[int]:
        got = await db.read(
            lambda t: keys.sync_part(
                t, bob.user_id, bob.device_id, StreamToken(0, (since_td, 0)), 0
            )
        )
        return [e["content"]["a"] for e in got.fields["to_device"]["events"]]

    assert await part(0) == [1]
    rows = await db.fetchall("SELECT pos FROM e2e_to_device")
    assert len(rows) == 1  # the unknown device got nothing, the retry nothing either
    await keys.before_sync(bob.user_id, bob.device_id, StreamToken(0, (int(rows[0][0]), 0)))
    assert await part(0) == []


async def test_backup_on_both_backends(db: Database) -> None:
    keys, _, _ = await setup(db)
    backup = keys.backup
    version = await backup.create_version("@a:hs", {"algorithm": "alg", "auth_data": {}})
    sessions = parse_sessions(
        {
            "sessions": {
                "S": {
                    "first_message_index": 3,
                    "forwarded_count": 0,
                    "is_verified": False,
                    "session_data": {"c": "one"},
                }
            }
        },
        "!r:hs",
    )
    first = await backup.put_keys("@a:hs", version, {"!r:hs": sessions})
    assert first == {"etag": "1", "count": 1}
    same = await backup.put_keys("@a:hs", version, {"!r:hs": sessions})
    assert same == first
    info = await backup.get_version("@a:hs", None)
    assert (info["count"], info["etag"], info["version"]) == (1, "1", version)
    await backup.delete_version("@a:hs", version)
    with pytest.raises(KeyServerError) as err:
        await backup.get_keys("@a:hs", version, None, None)
    assert err.value.status == 404


def test_better_session_rules() -> None:
    def k(fmi: int, fwd: int, verified: bool) -> BackupKey:
        return BackupKey(fmi, fwd, verified, "{}")

    assert k(9, 9, True).better_than(k(0, 0, False))
    assert not k(0, 0, False).better_than(k(9, 9, True))
    assert k(1, 9, False).better_than(k(2, 0, False))
    assert not k(2, 0, False).better_than(k(1, 9, False))
    assert k(1, 0, True).better_than(k(1, 1, True))
    assert not k(1, 1, True).better_than(k(1, 1, True))  # equal: keep the stored one
