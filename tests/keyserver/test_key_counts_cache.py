"""`/sync` serves a device's one-time key counts and unused fallback key types from memory
(`myelin.keyserver.streams.Streams`): every change between two syncs must show in the
second one (uploads, claims of one-time and fallback keys, concurrent syncs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.keyserver.helpers import V3, Device, register
from tests.support.client import SpecClient
from tests.support.server import ServerProcess


@pytest.fixture
async def client(shared_server: ServerProcess) -> Any:
    async with SpecClient(shared_server.base_url) as c:
        yield c


async def _sync(client: SpecClient, dev: Device, since: str | None = None) -> Any:
    path = f"{V3}/sync?timeout=0" + (f"&since={since}" if since else "")
    status, body = await client.call("GET", path, token=dev.token)
    assert status == 200, body
    return body


async def _upload(client: SpecClient, dev: Device, body: dict[str, Any]) -> None:
    status, answer = await client.call("POST", f"{V3}/keys/upload", body, token=dev.token)
    assert status == 200, answer


async def _claim(client: SpecClient, dev: Device, owner: Device) -> Any:
    wanted = {owner.user_id: {owner.device_id: "signed_curve25519"}}
    status, body = await client.call(
        "POST", f"{V3}/keys/claim", {"one_time_keys": wanted}, token=dev.token
    )
    assert status == 200, body
    return body


def _count(body: Any) -> int:
    return int(body["device_one_time_keys_count"].get("signed_curve25519", 0))


async def test_counts_follow_every_change(client: SpecClient) -> None:
    alice = await register(client, "kc_alice")
    bob = await register(client, "kc_bob")
    await _upload(client, alice, {"device_keys": alice.device_keys()})
    first = await _sync(client, alice)
    assert _count(first) == 0
    assert first["device_unused_fallback_key_types"] == []
    # Several syncs at once (one shared read transaction) fill the memory...
    many = await asyncio.gather(*(_sync(client, alice, first["next_batch"]) for _ in range(5)))
    assert all(_count(b) == 0 for b in many)
    # ...and an upload right after is seen by the next sync.
    await _upload(client, alice, {"one_time_keys": alice.one_time_keys(0, 3)})
    second = await _sync(client, alice, first["next_batch"])
    assert _count(second) == 3
    again = await _sync(client, alice, second["next_batch"])
    assert _count(again) == 3
    # A claim by another user lowers it at once.
    await _claim(client, bob, alice)
    third = await _sync(client, alice, again["next_batch"])
    assert _count(third) == 2
    await _upload(client, alice, {"fallback_keys": alice.fallback_key("FBC")})
    fourth = await _sync(client, alice, third["next_batch"])
    assert fourth["device_unused_fallback_key_types"] == ["signed_curve25519"]
    await _claim(client, bob, alice)
    await _claim(client, bob, alice)
    fifth = await _sync(client, alice, fourth["next_batch"])
    assert _count(fifth) == 0
    assert fifth["device_unused_fallback_key_types"] == ["signed_curve25519"]
    used = await _claim(client, bob, alice)  # no one-time key left: the fallback key
    key = next(iter(used["one_time_keys"][alice.user_id][alice.device_id].values()))
    assert key["fallback"] is True
    sixth = await _sync(client, alice, fifth["next_batch"])
    assert sixth["device_unused_fallback_key_types"] == []
