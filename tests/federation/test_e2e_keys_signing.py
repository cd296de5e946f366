"""Cross-signing keys across federation, between two real servers: a user's new master
and self-signing keys reach the other server by `m.signing_key_update`, and a signature
of their own device by `m.device_list_update`; the other server's users are told
(`device_lists.changed`) and see the new keys in `/keys/query`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from myelin.core.signing import SigningKey
from tests.federation.conftest import Peer
from tests.keyserver.helpers import Device, cross_signing_key, register, sign_as
from tests.support.client import SpecClient
from tests.support.rooms import create_room

V3 = "/_matrix/client/v3"
#: Long-polls per wait: each ends as soon as there is news, so this only bounds a hang.
MAX_POLLS = 10


async def sync_until_changed(c: SpecClient, who: Device, since: str, user_id: str) -> str:
    """Long-poll /sync from `since` until `user_id` is in `device_lists.changed`; the
    `next_batch` of that response."""
    for _ in range(MAX_POLLS):
        status, body = await c.call("GET", f"{V3}/sync?timeout=5000&since={since}", token=who.token)
        assert status == 200, body
        since = body["next_batch"]
        if user_id in body.get("device_lists", {}).get("changed", []):
            return since
    raise AssertionError(f"{user_id} never in device_lists.changed")


async def changed_keys(
    c: SpecClient, who: Device, since: str, user_id: str, done: Callable[[Any], bool]
) -> tuple[str, dict[str, Any]]:
    """Wait for `user_id` in `device_lists.changed` and query their keys, until the
    answer satisfies `done` (a change may also be announced before the awaited one, e.g.
    when the server fetched the list for a previous query)."""
    for _ in range(MAX_POLLS):
        since = await sync_until_changed(c, who, since, user_id)
        got = await query(c, who, user_id)
        if done(got):
            return since, got
    raise AssertionError(f"keys of {user_id} never changed as expected")


async def query(c: SpecClient, who: Device, user_id: str) -> dict[str, Any]:
    status, body = await c.call(
        "POST", f"{V3}/keys/query", {"device_keys": {user_id: []}}, token=who.token
    )
    assert status == 200, body
    assert body["failures"] == {}, body
    return body


async def test_signing_keys_and_signatures_cross_federation(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    async with SpecClient(a.base_url) as ca, SpecClient(b.base_url) as cb:
        alice = await register(ca, "xs-alice")
        bob = await register(cb, "xs-bob")
        status, body = await cb.call(
            "POST", f"{V3}/keys/upload", {"device_keys": bob.device_keys()}, token=bob.token
        )
        assert status == 200, body
        room_id = await create_room(
            ca,
            alice.token,
            {"preset": "public_chat", "room_version": "10", "room_alias_name": "xsign"},
        )
        status, body = await ca.call("GET", f"{V3}/sync", token=alice.token)
        assert status == 200, body
        since = body["next_batch"]
        status, body = await cb.call(
            "POST", f"{V3}/join/{quote(f'#xsign:{a.name}')}", {}, token=bob.token
        )
        assert (status, body.get("room_id")) == (200, room_id), body
        # Bob's join makes him someone Alice tracks.
        since = await sync_until_changed(ca, alice, since, bob.user_id)
        before = await query(ca, alice, bob.user_id)
        assert bob.device_id in before["device_keys"][bob.user_id], before
        assert bob.user_id not in before["master_keys"], before

        # Bob sets up cross-signing (his first master key: no user-interactive auth).
        master = SigningKey.generate("master")
        self_signing = SigningKey.generate("self")
        master_obj = cross_signing_key(bob.user_id, "master", master, None)
        self_obj = cross_signing_key(bob.user_id, "self_signing", self_signing, master)
        status, body = await cb.call(
            "POST",
            f"{V3}/keys/device_signing/upload",
            {"master_key": master_obj, "self_signing_key": self_obj},
            token=bob.token,
        )
        assert status == 200, body

        since, got = await changed_keys(
            ca, alice, since, bob.user_id, lambda got: bob.user_id in got["master_keys"]
        )
        assert got["master_keys"].get(bob.user_id) == master_obj, got
        assert got["self_signing_keys"].get(bob.user_id) == self_obj, got
        assert bob.user_id not in got.get("user_signing_keys", {}), got

        # Bob signs his device with his self-signing key.
        ss_key_id = f"ed25519:{self_signing.verify_key_base64}"
        signed = sign_as(bob.device_keys(), bob.user_id, self_signing, ss_key_id)
        status, body = await cb.call(
            "POST",
            f"{V3}/keys/signatures/upload",
            {bob.user_id: {bob.device_id: signed}},
            token=bob.token,
        )
        assert (status, body.get("failures")) == (200, {}), body

        def signed_by_self_signing_key(got: Any) -> bool:
            device = got["device_keys"][bob.user_id][bob.device_id]
            return ss_key_id in device.get("signatures", {}).get(bob.user_id, {})

        _, got = await changed_keys(ca, alice, since, bob.user_id, signed_by_self_signing_key)
        device = got["device_keys"][bob.user_id][bob.device_id]
        assert (
            device["signatures"][bob.user_id][ss_key_id]
            == (signed["signatures"][bob.user_id][ss_key_id])
        ), device
        assert got["master_keys"].get(bob.user_id) == master_obj, got
