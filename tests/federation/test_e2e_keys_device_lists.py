"""Device list updates across federation, between two real servers (issue #6: Sytest's
"If remote user leaves room we no longer receive device updates").

When a remote user's key upload has been answered, the other server has already applied
the `m.device_list_update` it sent: the uploader's server waits for the transaction to be
answered, and the receiving server applies an update that follows its cached list before
it answers. So a `/sync` made right after the upload (without waiting) lists the user in
`device_lists.changed`, and `/keys/query` serves the new keys. A user who left the last
shared room is no longer tracked: their later uploads are not announced."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from myelin.core.signing import sign_json
from tests.federation.conftest import Peer
from tests.federation.test_e2e_keys_signing import query, sync_until_changed
from tests.keyserver.helpers import Device, register
from tests.support.client import SpecClient
from tests.support.rooms import create_room

V3 = "/_matrix/client/v3"
MAX_POLLS = 10


def new_device_keys(device: Device, curve: str) -> dict[str, Any]:
    """The device's keys with another Curve25519 key, signed again by the device."""
    keys = {k: v for k, v in device.device_keys().items() if k != "signatures"}
    keys["keys"] = {**keys["keys"], f"curve25519:{device.device_id}": curve}
    return sign_json(keys, device.user_id, device.key)


async def upload(c: SpecClient, device: Device, keys: dict[str, Any]) -> None:
    status, body = await c.call(
        "POST", f"{V3}/keys/upload", {"device_keys": keys}, token=device.token
    )
    assert status == 200, body


async def sync_until_left(c: SpecClient, who: Device, since: str, user_id: str) -> str:
    """Long-poll /sync until `user_id` is in `device_lists.left`; that `next_batch`."""
    for _ in range(MAX_POLLS):
        status, body = await c.call("GET", f"{V3}/sync?timeout=5000&since={since}", token=who.token)
        assert status == 200, body
        since = body["next_batch"]
        if user_id in body["device_lists"]["left"]:
            return since
    raise AssertionError(f"{user_id} never in device_lists.left")


async def test_remote_key_change_is_in_the_next_sync_and_leavers_are_not(
    peers: tuple[Peer, Peer],
) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "dl-alice")
        bob = await register(cb, "dl-bob")
        carol = await register(cb, "dl-carol")
        for device in (bob, carol):
            await upload(cb, device, device.device_keys())
        room_id = await create_room(
            ca,
            alice.token,
            {"preset": "public_chat", "room_version": "10", "room_alias_name": "devlists"},
        )
        status, body = await ca.call("GET", f"{V3}/sync", token=alice.token)
        assert status == 200, body
        since = body["next_batch"]
        for device in (carol, bob):
            status, body = await cb.call(
                "POST", f"{V3}/join/{quote(f'#devlists:{a.name}')}", {}, token=device.token
            )
            assert (status, body.get("room_id")) == (200, room_id), body
        since = await sync_until_changed(ca, alice, since, bob.user_id)
        # Alice's server caches both lists (and is then kept current by updates).
        for device in (bob, carol):
            got = await query(ca, alice, device.user_id)
            assert device.device_id in got["device_keys"][device.user_id], got

        status, body = await cb.call(
            "POST", f"{V3}/rooms/{quote(room_id)}/leave", {}, token=bob.token
        )
        assert status == 200, body
        since = await sync_until_left(ca, alice, since, bob.user_id)

        bob_keys = new_device_keys(bob, "Ym9iJ3MgbmV3IGN1cnZlIGtleSBhZnRlciBsZWF2aW5n")
        carol_keys = new_device_keys(carol, "Y2Fyb2wncyBuZXcgY3VydmUga2V5IGZvciB0aGUgdGVzdA")
        await upload(cb, bob, bob_keys)
        await upload(cb, carol, carol_keys)

        # No waiting: the upload's answer came after Alice's server applied the update.
        status, body = await ca.call("GET", f"{V3}/sync?timeout=0&since={since}", token=alice.token)
        assert status == 200, body
        changed = body["device_lists"]["changed"]
        assert carol.user_id in changed, body["device_lists"]
        assert bob.user_id not in changed, body["device_lists"]
        got = await query(ca, alice, carol.user_id)
        device = got["device_keys"][carol.user_id][carol.device_id]
        assert device["keys"] == carol_keys["keys"], device
