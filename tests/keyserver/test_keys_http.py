"""Key upload, query, claim, cross-signing and to-device messages against a real server.

Every answer is validated against the spec's OpenAPI definitions by `SpecClient`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from myelin.core.signing import SigningKey
from tests.keyserver.helpers import V3, Device, cross_signing_key, login, register, sign_as
from tests.support.client import SpecClient
from tests.support.rooms import create_room
from tests.support.server import ServerProcess, start_server


@pytest.fixture
async def client(shared_server: ServerProcess) -> Any:
    async with SpecClient(shared_server.base_url) as c:
        yield c


async def upload(client: SpecClient, dev: Device, body: dict[str, Any]) -> tuple[int, Any]:
    return await client.call("POST", f"{V3}/keys/upload", body, token=dev.token)


async def query(client: SpecClient, dev: Device, users: dict[str, list[str]]) -> Any:
    status, body = await client.call(
        "POST", f"{V3}/keys/query", {"device_keys": users}, token=dev.token
    )
    assert status == 200, body
    return body


async def claim(client: SpecClient, dev: Device, wanted: dict[str, dict[str, str]]) -> Any:
    status, body = await client.call(
        "POST", f"{V3}/keys/claim", {"one_time_keys": wanted}, token=dev.token
    )
    assert status == 200, body
    return body


async def sync(client: SpecClient, dev: Device, since: str | None = None) -> Any:
    path = f"{V3}/sync?timeout=0" + (f"&since={since}" if since else "")
    status, body = await client.call("GET", path, token=dev.token)
    assert status == 200, body
    return body


async def test_upload_query_claim(client: SpecClient) -> None:
    alice = await register(client, "kq_alice")
    bob = await register(client, "kq_bob")
    status, body = await upload(
        client,
        alice,
        {"device_keys": alice.device_keys(), "one_time_keys": alice.one_time_keys(0, 3)},
    )
    assert status == 200, body
    assert body["one_time_key_counts"]["signed_curve25519"] == 3

    found = await query(client, bob, {alice.user_id: []})
    served = found["device_keys"][alice.user_id][alice.device_id]
    expected = alice.device_keys()
    assert served["keys"] == expected["keys"]
    assert served["signatures"] == expected["signatures"]
    assert found["failures"] == {}
    # A device list restricted to an unknown device is empty, not an error.
    assert (await query(client, bob, {alice.user_id: ["NOPE"]}))["device_keys"] == {
        alice.user_id: {}
    }

    claimed = await claim(client, bob, {alice.user_id: {alice.device_id: "signed_curve25519"}})
    keys = claimed["one_time_keys"][alice.user_id][alice.device_id]
    ((key_id, key),) = keys.items()
    assert key_id.startswith("signed_curve25519:")
    assert key["key"].startswith("otk")
    # Three keys, three claims, each key handed out once; then nothing.
    seen = {key_id}
    for _ in range(2):
        more = await claim(client, bob, {alice.user_id: {alice.device_id: "signed_curve25519"}})
        seen |= set(more["one_time_keys"][alice.user_id][alice.device_id])
    assert len(seen) == 3
    empty = await claim(client, bob, {alice.user_id: {alice.device_id: "signed_curve25519"}})
    assert empty["one_time_keys"] == {}
    status, body = await upload(client, alice, {})
    assert body["one_time_key_counts"]["signed_curve25519"] == 0


async def test_concurrent_claims_never_share_a_key(client: SpecClient) -> None:
    alice = await register(client, "kc_alice")
    bob = await register(client, "kc_bob")
    await upload(
        client,
        alice,
        {"device_keys": alice.device_keys(), "one_time_keys": alice.one_time_keys(0, 5)},
    )
    wanted = {alice.user_id: {alice.device_id: "signed_curve25519"}}
    results = await asyncio.gather(*(claim(client, bob, wanted) for _ in range(8)))
    given = [
        next(iter(r["one_time_keys"][alice.user_id][alice.device_id]))
        for r in results
        if r["one_time_keys"]
    ]
    assert len(given) == 5
    assert len(set(given)) == 5


async def test_fallback_key(client: SpecClient) -> None:
    alice = await register(client, "kf_alice")
    bob = await register(client, "kf_bob")
    status, _ = await upload(
        client,
        alice,
        {
            "device_keys": alice.device_keys(),
            "one_time_keys": alice.one_time_keys(0, 1),
            "fallback_keys": alice.fallback_key("FB1"),
        },
    )
    assert status == 200
    first = await sync(client, alice)
    assert first["device_unused_fallback_key_types"] == ["signed_curve25519"]
    assert first["device_one_time_keys_count"]["signed_curve25519"] == 1
    wanted = {alice.user_id: {alice.device_id: "signed_curve25519"}}
    otk = await claim(client, bob, wanted)
    assert "signed_curve25519:K00000" in otk["one_time_keys"][alice.user_id][alice.device_id]
    # Out of one-time keys: the fallback key, as often as asked, and it is now used.
    for _ in range(2):
        fb = await claim(client, bob, wanted)
        key = fb["one_time_keys"][alice.user_id][alice.device_id]["signed_curve25519:FB1"]
        assert key["fallback"] is True
    after = await sync(client, alice, first["next_batch"])
    assert after["device_unused_fallback_key_types"] == []
    assert after["device_one_time_keys_count"].get("signed_curve25519", 0) == 0
    # A new fallback key is unused again.
    await upload(client, alice, {"fallback_keys": alice.fallback_key("FB2")})
    again = await sync(client, alice, after["next_batch"])
    assert again["device_unused_fallback_key_types"] == ["signed_curve25519"]


async def test_bad_uploads_change_nothing(client: SpecClient) -> None:
    alice = await register(client, "kb_alice")
    bob = await register(client, "kb_bob")
    # Device keys without the required `signatures` (DeviceKeys): refused with the keys
    # that came along in the same request.
    incomplete = alice.device_keys()
    del incomplete["signatures"]
    status, body = await upload(
        client, alice, {"device_keys": incomplete, "one_time_keys": alice.one_time_keys(0, 2)}
    )
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    for field in ("algorithms", "keys"):
        wrong = alice.device_keys() | {field: "not the right type"}
        status, body = await upload(client, alice, {"device_keys": wrong})
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), field
    # Keys for another device or user.
    other = alice.device_keys() | {"device_id": "OTHERDEV"}
    status, body = await upload(client, alice, {"device_keys": other})
    assert status == 400
    status, body = await upload(client, bob, {"device_keys": alice.device_keys()})
    assert status == 400
    # Nothing of the refused requests was stored: no device keys, no one-time keys.
    found = await query(client, bob, {alice.user_id: []})
    assert found["device_keys"][alice.user_id] == {}
    status, body = await upload(client, alice, {})
    assert (status, body["one_time_key_counts"]["signed_curve25519"]) == (200, 0)

    # Malformed shapes and floats.
    malformed: list[dict[str, Any]] = [
        {"one_time_keys": {"no-colon": "x"}},
        {"one_time_keys": {"signed_curve25519:A": 5}},
        {"one_time_keys": []},
        {"fallback_keys": {"signed_curve25519:A": {"nokey": 1}}},
    ]
    for bad in malformed:
        status, body = await upload(client, alice, bad)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), bad
    status, _raw, _ = await client.raw(
        "POST",
        f"{V3}/keys/upload",
        body=b'{"one_time_keys": {"a:b": {"key": 1.5}}}',
        headers={"Authorization": f"Bearer {alice.token}"},
    )
    assert status == 400
    # Re-using a one-time key ID with a different key is refused; the same key is fine.
    status, _ = await upload(client, alice, {"one_time_keys": alice.one_time_keys(0, 2)})
    assert status == 200
    status, body = await upload(client, alice, {"one_time_keys": alice.one_time_keys(0, 2)})
    assert (status, body["one_time_key_counts"]["signed_curve25519"]) == (200, 2)
    clash = {"signed_curve25519:K00000": {"key": "different"}}
    status, body = await upload(client, alice, {"one_time_keys": clash})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await upload(client, alice, {})
    assert body["one_time_key_counts"]["signed_curve25519"] == 2


async def test_device_key_self_signature(client: SpecClient) -> None:
    """A device key whose self-signature does not verify is refused (400
    M_INVALID_SIGNATURE) with everything else of the request, and the stored keys stay
    as they were; a correctly signed key is accepted and served unchanged."""
    alice = await register(client, "ks_alice")
    bob = await register(client, "ks_bob")
    # The fingerprint key replaced after signing: the signature is by another key.
    forged = alice.device_keys()
    forged["keys"][f"ed25519:{alice.device_id}"] = SigningKey.generate("X").verify_key_base64
    status, body = await upload(
        client, alice, {"device_keys": forged, "one_time_keys": alice.one_time_keys(0, 2)}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_SIGNATURE"), body
    assert (await query(client, bob, {alice.user_id: []}))["device_keys"][alice.user_id] == {}
    status, body = await upload(client, alice, {})
    assert body["one_time_key_counts"]["signed_curve25519"] == 0

    # Correctly signed: accepted and served as sent.
    good = alice.device_keys()
    status, body = await upload(client, alice, {"device_keys": good})
    assert status == 200, body
    served = (await query(client, bob, {alice.user_id: []}))["device_keys"][alice.user_id]
    assert served[alice.device_id]["keys"] == good["keys"]
    assert served[alice.device_id]["signatures"] == good["signatures"]

    # A signed field changed afterwards, or a signature that is not even 64 bytes: refused,
    # and the keys stored before stay.
    tampered = alice.device_keys()
    swapped = "c3dhcHBlZCBjdXJ2ZSBrZXkgb2YgYW4gYXR0YWNrZXI"
    tampered["keys"][f"curve25519:{alice.device_id}"] = swapped
    garbled = alice.device_keys()
    garbled["signatures"][alice.user_id][f"ed25519:{alice.device_id}"] = "c2hvcnQ"
    for bad in (tampered, garbled):
        status, body = await upload(client, alice, {"device_keys": bad})
        assert (status, body["errcode"]) == (400, "M_INVALID_SIGNATURE"), body
    served = (await query(client, bob, {alice.user_id: []}))["device_keys"][alice.user_id]
    assert served[alice.device_id]["keys"] == good["keys"]


async def test_unverifiable_device_keys_are_stored_as_sent(client: SpecClient) -> None:
    """Device keys that cannot be verified are stored as opaque data (the rule is in
    `myelin.keyserver.validate.check_self_signature`): a fingerprint that is not an
    Ed25519 key (Sytest's placeholders), an algorithm the spec does not define, or no
    self-signature at all."""
    alice = await register(client, "ku_alice")
    bob = await register(client, "ku_bob")
    dev = alice.device_id
    placeholder = {
        "user_id": alice.user_id,
        "device_id": dev,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"ed25519:{dev}": "ed25519+key", f"curve25519:{dev}": "curve25519+key"},
        "signatures": {alice.user_id: {f"ed25519:{dev}": "self+signature"}},
    }
    other_algorithm = alice.device_keys() | {"algorithms": ["org.example.experimental"]}
    other_algorithm["keys"] = dict(other_algorithm["keys"], extra="changed after signing")
    unsigned = alice.device_keys()
    unsigned["signatures"] = {}
    unsigned["keys"][f"ed25519:{dev}"] = SigningKey.generate("X").verify_key_base64
    for keys in (placeholder, other_algorithm, unsigned):
        status, body = await upload(client, alice, {"device_keys": keys})
        assert status == 200, body
        served = (await query(client, bob, {alice.user_id: []}))["device_keys"][alice.user_id]
        assert served[dev]["keys"] == keys["keys"]
        assert served[dev]["signatures"] == keys["signatures"]


async def test_oversize_upload(client: SpecClient) -> None:
    alice = await register(client, "ko_alice")
    # One key over the per-key limit.
    huge = {"signed_curve25519:BIG": {"key": "k" * 10_000}}
    status, body = await upload(client, alice, {"one_time_keys": huge})
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    # More one-time keys than a device may hold: refused as a whole.
    many = alice.one_time_keys(0, 1001)
    status, body = await upload(client, alice, {"one_time_keys": many})
    assert status == 400
    status, body = await upload(client, alice, {})
    assert body["one_time_key_counts"]["signed_curve25519"] == 0


async def test_remote_users_are_failures(client: SpecClient) -> None:
    alice = await register(client, "kr_alice")
    found = await query(client, alice, {"@bob:elsewhere.example": []})
    assert "elsewhere.example" in found["failures"]
    claimed = await claim(client, alice, {"@bob:elsewhere.example": {"DEV": "signed_curve25519"}})
    assert "elsewhere.example" in claimed["failures"]
    bad_queries: list[dict[str, Any]] = [
        {"device_keys": {"nobody": []}},
        {"device_keys": {"@a:b": "all"}},
        {"device_keys": []},
        {},
    ]
    for body in bad_queries:
        status, err = await client.call("POST", f"{V3}/keys/query", body, token=alice.token)
        assert status == 400 and err["errcode"] in (
            "M_INVALID_PARAM",
            "M_BAD_JSON",
            "M_MISSING_PARAM",
        ), body


async def test_to_device_delivery_and_acknowledgement(client: SpecClient) -> None:
    alice = await register(client, "td_alice")
    bob = await register(client, "td_bob")
    bob2 = await login(client, bob)
    first = await sync(client, bob)
    path = f"{V3}/sendToDevice/m.test/txn1"
    msg = {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}}
    status, body = await client.call("PUT", path, msg, token=alice.token)
    assert (status, body) == (200, {})
    # The same transaction again is not queued twice.
    status, _ = await client.call("PUT", path, msg, token=alice.token)
    assert status == 200
    # A device that does not exist: accepted, dropped.
    nowhere = {"messages": {bob.user_id: {"NOSUCHDEVICE": {"n": 0}}}}
    status, _ = await client.call(
        "PUT", f"{V3}/sendToDevice/m.test/txn0", nowhere, token=alice.token
    )
    assert status == 200
    # Wildcard: every device of the user.
    star = {"messages": {bob.user_id: {"*": {"n": 2}}}}
    status, _ = await client.call("PUT", f"{V3}/sendToDevice/m.test/txn2", star, token=alice.token)
    assert status == 200

    got = await sync(client, bob, first["next_batch"])
    events = got["to_device"]["events"]
    assert [e["content"]["n"] for e in events] == [1, 2]
    assert all(e["sender"] == alice.user_id and e["type"] == "m.test" for e in events)
    # Not acknowledged yet: the same token gives the same messages again.
    again = await sync(client, bob, first["next_batch"])
    assert [e["content"]["n"] for e in again["to_device"]["events"]] == [1, 2]
    # Acknowledged by using the next token: gone.
    later = await sync(client, bob, got["next_batch"])
    assert later["to_device"]["events"] == []
    # The other device got only the wildcard message.
    other = await sync(client, bob2)
    assert [e["content"]["n"] for e in other["to_device"]["events"]] == [2]
    # Bad input.
    status, body = await client.call(
        "PUT",
        f"{V3}/sendToDevice/m.test/txn3",
        {"messages": {bob.user_id: []}},
        token=alice.token,
    )
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await client.call("PUT", f"{V3}/sendToDevice/m.test/txn4", {}, token=alice.token)
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")


async def test_to_device_wakes_a_long_poll(client: SpecClient) -> None:
    alice = await register(client, "tw_alice")
    bob = await register(client, "tw_bob")
    first = await sync(client, bob)

    async def poll() -> Any:
        path = f"{V3}/sync?timeout=20000&since={first['next_batch']}"
        return await client.call("GET", path, token=bob.token)

    waiting = asyncio.create_task(poll())
    await asyncio.sleep(0.3)
    msg = {"messages": {bob.user_id: {bob.device_id: {"wake": True}}}}
    await client.call("PUT", f"{V3}/sendToDevice/m.test/w1", msg, token=alice.token)
    status, body = await asyncio.wait_for(waiting, 10)
    assert status == 200
    assert body["to_device"]["events"][0]["content"] == {"wake": True}


async def test_cross_signing_and_signatures(client: SpecClient) -> None:
    alice = await register(client, "xs_alice")
    bob = await register(client, "xs_bob")
    await upload(client, alice, {"device_keys": alice.device_keys()})
    master = SigningKey.from_seed(b"\x01" * 32, "m")
    self_signing = SigningKey.from_seed(b"\x02" * 32, "s")
    user_signing = SigningKey.from_seed(b"\x03" * 32, "u")
    keys = {
        "master_key": cross_signing_key(alice.user_id, "master", master, None),
        "self_signing_key": cross_signing_key(alice.user_id, "self_signing", self_signing, master),
        "user_signing_key": cross_signing_key(alice.user_id, "user_signing", user_signing, master),
    }
    path = f"{V3}/keys/device_signing/upload"
    # A self-signing key not signed by the master key is refused.
    bad = dict(keys)
    bad["self_signing_key"] = cross_signing_key(
        alice.user_id, "self_signing", self_signing, user_signing
    )
    status, body = await client.call("POST", path, bad, token=alice.token)
    assert (status, body["errcode"]) == (400, "M_INVALID_SIGNATURE")
    # The first upload needs no UIA; the same keys again neither.
    status, body = await client.call("POST", path, keys, token=alice.token)
    assert status == 200, body
    status, body = await client.call("POST", path, keys, token=alice.token)
    assert status == 200, body
    found = await query(client, bob, {alice.user_id: []})
    master_pub = master.verify_key_base64
    assert found["master_keys"][alice.user_id]["keys"] == {f"ed25519:{master_pub}": master_pub}
    assert alice.user_id in found["self_signing_keys"]
    assert alice.user_id not in found["user_signing_keys"]  # only its owner sees it
    own = await query(client, alice, {alice.user_id: []})
    assert alice.user_id in own["user_signing_keys"]

    # Alice signs her device with her self-signing key.
    ss_id = f"ed25519:{self_signing.verify_key_base64}"
    signed_device = sign_as(alice.device_keys(), alice.user_id, self_signing, ss_id)
    bad_sig = sign_as(alice.device_keys(), alice.user_id, user_signing, ss_id)
    status, body = await client.call(
        "POST",
        f"{V3}/keys/signatures/upload",
        {alice.user_id: {alice.device_id: bad_sig}},
        token=alice.token,
    )
    assert status == 200
    assert body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    status, body = await client.call(
        "POST",
        f"{V3}/keys/signatures/upload",
        {alice.user_id: {alice.device_id: signed_device}},
        token=alice.token,
    )
    assert (status, body) == (200, {"failures": {}})
    found = await query(client, bob, {alice.user_id: []})
    sigs = found["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    assert sigs[ss_id] == signed_device["signatures"][alice.user_id][ss_id]
    assert f"ed25519:{alice.device_id}" in sigs
    # New keys over existing ones need the password.
    new_master = SigningKey.from_seed(b"\x04" * 32, "n")
    replace = {"master_key": cross_signing_key(alice.user_id, "master", new_master, None)}
    # (The spec lists no 401 for this endpoint, though it names UIA: not validated.)
    status, body = await client.call("POST", path, replace, token=alice.token, validate=False)
    assert status == 401 and "session" in body
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "wrong",
        "session": body["session"],
    }
    status, body = await client.call(
        "POST", path, {**replace, "auth": auth}, token=alice.token, validate=False
    )
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    status, body = await client.call(
        "POST",
        path,
        {**replace, "auth": {**auth, "password": "secret-pw"}},
        token=alice.token,
        validate=False,
    )
    assert status == 200, body
    found = await query(client, bob, {alice.user_id: []})
    new_pub = new_master.verify_key_base64
    assert found["master_keys"][alice.user_id]["keys"] == {f"ed25519:{new_pub}": new_pub}


async def test_keys_changes_and_sync_device_lists(client: SpecClient) -> None:
    alice = await register(client, "dl_alice")
    bob = await register(client, "dl_bob")
    room_id = await create_room(client, alice.token, {"preset": "public_chat"})
    start = await sync(client, alice)
    status, _ = await client.call("POST", f"{V3}/join/{room_id}", {}, token=bob.token)
    assert status == 200
    joined = await sync(client, alice, start["next_batch"])
    assert bob.user_id in joined["device_lists"]["changed"]
    # Bob uploads device keys: Alice, who shares a room, hears of it.
    await upload(client, bob, {"device_keys": bob.device_keys()})
    changed = await sync(client, alice, joined["next_batch"])
    assert changed["device_lists"]["changed"] == [bob.user_id]
    status, body = await client.call(
        "GET",
        f"{V3}/keys/changes?from={joined['next_batch']}&to={changed['next_batch']}",
        token=alice.token,
    )
    assert status == 200
    assert body["changed"] == [bob.user_id]
    # Bob logs in a second device with keys, then deletes it: both are changes.
    bob2 = await login(client, bob)
    await upload(client, bob2, {"device_keys": bob2.device_keys()})
    status, _ = await client.call("POST", f"{V3}/logout", {}, token=bob2.token)
    assert status == 200
    gone = await sync(client, alice, changed["next_batch"])
    assert gone["device_lists"]["changed"] == [bob.user_id]
    found = await query(client, alice, {bob.user_id: []})
    assert set(found["device_keys"][bob.user_id]) == {bob.device_id}
    changed = gone
    # Bob leaves: he is in `left`.
    status, _ = await client.call("POST", f"{V3}/rooms/{room_id}/leave", {}, token=bob.token)
    assert status == 200
    left = await sync(client, alice, changed["next_batch"])
    assert left["device_lists"]["left"] == [bob.user_id]
    # A stranger's key changes are not reported.
    carol = await register(client, "dl_carol")
    await upload(client, carol, {"device_keys": carol.device_keys()})
    quiet = await sync(client, alice, left["next_batch"])
    assert carol.user_id not in quiet["device_lists"]["changed"]
    status, body = await client.call(
        "GET", f"{V3}/keys/changes?from=bogus&to=s1", token=alice.token
    )
    assert status == 400


async def test_device_lists_follow_encrypted_rooms(client: SpecClient) -> None:
    """DeviceLists: `changed` gains the members of a room that becomes encrypted (they now
    share an encrypted room, without any membership change); `left` names a user who
    left while sharing no encrypted room any more, even if an unencrypted room is still
    shared, and not one who still shares an encrypted room."""
    alice = await register(client, "de_alice")
    bob = await register(client, "de_bob")
    plain = await create_room(client, alice.token, {"preset": "public_chat"})
    other_plain = await create_room(client, alice.token, {"preset": "public_chat"})
    for room in (plain, other_plain):
        status, _ = await client.call("POST", f"{V3}/join/{room}", {}, token=bob.token)
        assert status == 200
    start = await sync(client, bob)
    # Alice turns encryption on in one of the rooms: Bob now shares an encrypted room
    # with her, and should (re)query her devices.
    status, body = await client.call(
        "PUT",
        f"{V3}/rooms/{plain}/state/m.room.encryption/",
        {"algorithm": "m.megolm.v1.aes-sha2"},
        token=alice.token,
    )
    assert status == 200, body
    after = await sync(client, bob, start["next_batch"])
    assert alice.user_id in after["device_lists"]["changed"]
    status, body = await client.call(
        "GET",
        f"{V3}/keys/changes?from={start['next_batch']}&to={after['next_batch']}",
        token=bob.token,
    )
    assert status == 200 and alice.user_id in body["changed"], body
    # Bob leaves the unencrypted room: he still shares the encrypted one, so he is not
    # in Alice's `left`.
    since = (await sync(client, alice))["next_batch"]
    status, _ = await client.call("POST", f"{V3}/rooms/{other_plain}/leave", {}, token=bob.token)
    assert status == 200
    kept = await sync(client, alice, since)
    assert bob.user_id not in kept["device_lists"]["left"]
    # Bob rejoins the unencrypted room and leaves the encrypted one: he still shares a
    # room with Alice, but no encrypted room, so he is in `left`.
    status, _ = await client.call("POST", f"{V3}/join/{other_plain}", {}, token=bob.token)
    assert status == 200
    since = (await sync(client, alice, kept["next_batch"]))["next_batch"]
    status, _ = await client.call("POST", f"{V3}/rooms/{plain}/leave", {}, token=bob.token)
    assert status == 200
    gone = await sync(client, alice, since)
    assert gone["device_lists"]["left"] == [bob.user_id]
    assert bob.user_id not in gone["device_lists"]["changed"]
    status, body = await client.call(
        "GET", f"{V3}/keys/changes?from={since}&to={gone['next_batch']}", token=alice.token
    )
    assert (status, body["left"]) == (200, [bob.user_id])


async def test_device_list_announcements(client: SpecClient) -> None:
    """Queried devices always carry `unsigned`; deleting a keyless device is announced; a
    new user-signing key, which only its owner can query, is announced to the owner only."""
    alice = await register(client, "da_alice")
    bob = await register(client, "da_bob")
    room_id = await create_room(client, alice.token, {"preset": "public_chat"})
    status, _ = await client.call("POST", f"{V3}/join/{room_id}", {}, token=bob.token)
    assert status == 200
    await upload(client, bob, {"device_keys": bob.device_keys()})
    found = await query(client, alice, {bob.user_id: []})
    assert found["device_keys"][bob.user_id][bob.device_id]["unsigned"] == {}
    start = await sync(client, alice)
    # A second device of Bob's, without keys, logs out.
    bob2 = await login(client, bob)
    status, _ = await client.call("POST", f"{V3}/logout", {}, token=bob2.token)
    assert status == 200
    gone = await sync(client, alice, start["next_batch"])
    assert gone["device_lists"]["changed"] == [bob.user_id]
    # Bob's master and self-signing keys: Alice hears of them.
    master = SigningKey.from_seed(b"\x11" * 32, "m")
    self_signing = SigningKey.from_seed(b"\x12" * 32, "s")
    user_signing = SigningKey.from_seed(b"\x13" * 32, "u")
    path = f"{V3}/keys/device_signing/upload"
    first = {
        "master_key": cross_signing_key(bob.user_id, "master", master, None),
        "self_signing_key": cross_signing_key(bob.user_id, "self_signing", self_signing, master),
    }
    status, body = await client.call("POST", path, first, token=bob.token)
    assert status == 200, body
    seen = await sync(client, alice, gone["next_batch"])
    assert seen["device_lists"]["changed"] == [bob.user_id]
    bob_seen = await sync(client, bob)
    # His user-signing key: Bob's own sync reports it, Alice's does not.
    us_only = {
        "user_signing_key": cross_signing_key(bob.user_id, "user_signing", user_signing, master),
        "auth": {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": bob.user_id},
            "password": "secret-pw",
        },
    }
    status, body = await client.call("POST", path, us_only, token=bob.token, validate=False)
    assert status == 200, body
    quiet = await sync(client, alice, seen["next_batch"])
    assert bob.user_id not in quiet["device_lists"]["changed"]
    own = await sync(client, bob, bob_seen["next_batch"])
    assert bob.user_id in own["device_lists"]["changed"]
    # The unstable path of cross-signing uploads is the same endpoint.
    status, body = await client.call(
        "POST",
        "/_matrix/client/unstable/keys/device_signing/upload",
        us_only,
        token=bob.token,
        validate=False,
    )
    assert (status, body) == (200, {})


async def test_user_signing_signature_visible_to_signer_only(client: SpecClient) -> None:
    alice = await register(client, "us_alice")
    bob = await register(client, "us_bob")
    carol = await register(client, "us_carol")
    path = f"{V3}/keys/device_signing/upload"
    a_master = SigningKey.from_seed(b"\x11" * 32, "m")
    a_user_signing = SigningKey.from_seed(b"\x12" * 32, "u")
    status, body = await client.call(
        "POST",
        path,
        {
            "master_key": cross_signing_key(alice.user_id, "master", a_master, None),
            "user_signing_key": cross_signing_key(
                alice.user_id, "user_signing", a_user_signing, a_master
            ),
        },
        token=alice.token,
    )
    assert status == 200, body
    b_master = SigningKey.from_seed(b"\x13" * 32, "m")
    bob_master = cross_signing_key(bob.user_id, "master", b_master, None)
    status, body = await client.call("POST", path, {"master_key": bob_master}, token=bob.token)
    assert status == 200, body

    us_id = f"ed25519:{a_user_signing.verify_key_base64}"
    signed = sign_as(bob_master, alice.user_id, a_user_signing, us_id)
    b_pub = b_master.verify_key_base64
    status, body = await client.call(
        "POST",
        f"{V3}/keys/signatures/upload",
        {bob.user_id: {b_pub: signed}},
        token=alice.token,
    )
    assert (status, body) == (200, {"failures": {}})
    # A signature by a key Alice does not own is refused.
    forged = sign_as(bob_master, carol.user_id, a_user_signing, us_id)
    status, body = await client.call(
        "POST",
        f"{V3}/keys/signatures/upload",
        {bob.user_id: {b_pub: forged}},
        token=carol.token,
    )
    assert body["failures"][bob.user_id][b_pub]["errcode"] == "M_INVALID_SIGNATURE"

    seen_by_alice = await query(client, alice, {bob.user_id: []})
    sigs = seen_by_alice["master_keys"][bob.user_id]["signatures"]
    assert sigs[alice.user_id][us_id] == signed["signatures"][alice.user_id][us_id]
    seen_by_carol = await query(client, carol, {bob.user_id: []})
    assert alice.user_id not in seen_by_carol["master_keys"][bob.user_id].get("signatures", {})
    assert carol.user_id not in seen_by_carol["master_keys"][bob.user_id].get("signatures", {})


async def test_oversize_request_body(tmp_path: Path) -> None:
    """A key upload over the request body limit is 413 M_TOO_LARGE and stores nothing.
    (A small limit keeps the refused body inside the socket buffers: no write races.)"""
    server = start_server(tmp_path / "data", max_request_body=16384)
    try:
        async with SpecClient(server.base_url) as c:
            alice = await register(c, "big_alice")
            keys = alice.one_time_keys(0, 150)
            assert 16384 < len(orjson.dumps({"one_time_keys": keys})) < 65536
            status, body = await upload(c, alice, {"one_time_keys": keys})
            assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
            status, body = await upload(c, alice, {})
            assert body["one_time_key_counts"]["signed_curve25519"] == 0
    finally:
        assert server.stop() == 0


async def test_new_and_renamed_devices_are_announced(client: SpecClient) -> None:
    """Bob logging in a new device, or renaming one (the name is served in `unsigned` by
    /keys/query), reaches Alice's `device_lists.changed`; a sync with nothing new does not."""
    alice = await register(client, "dn_alice")
    bob = await register(client, "dn_bob")
    room_id = await create_room(client, alice.token, {"preset": "public_chat"})
    status, _ = await client.call("POST", f"{V3}/join/{room_id}", {}, token=bob.token)
    assert status == 200
    start = await sync(client, alice)
    bob2 = await login(client, bob)
    added = await sync(client, alice, start["next_batch"])
    assert added["device_lists"]["changed"] == [bob.user_id]
    status, _ = await client.call(
        "PUT", f"{V3}/devices/{bob2.device_id}", {"display_name": "phone"}, token=bob.token
    )
    assert status == 200
    renamed = await sync(client, alice, added["next_batch"])
    assert renamed["device_lists"]["changed"] == [bob.user_id]
    quiet = await sync(client, alice, renamed["next_batch"])
    assert bob.user_id not in quiet.get("device_lists", {}).get("changed", [])


async def test_invitees_are_announced(client: SpecClient) -> None:
    """A user invited to one of Alice's rooms is new to her in `device_lists.changed`
    (clients track, and encrypt for, invitees from the invite on)."""
    alice = await register(client, "inv_alice")
    bob = await register(client, "inv_bob")
    room_id = await create_room(client, alice.token, {"preset": "private_chat"})
    start = await sync(client, alice)
    assert bob.user_id not in start["device_lists"]["changed"]
    status, body = await client.call(
        "POST", f"{V3}/rooms/{room_id}/invite", {"user_id": bob.user_id}, token=alice.token
    )
    assert status == 200, body
    invited = await sync(client, alice, start["next_batch"])
    assert invited["device_lists"]["changed"] == [bob.user_id]
    quiet = await sync(client, alice, invited["next_batch"])
    assert quiet["device_lists"]["changed"] == []
