"""The push-gateway payload and the delivery loop, without a server: the body of
POST /_matrix/push/v1/notify for each pusher format, retries with backoff, giving up,
and rejected pushkeys."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from myelin.push.gateway import (
    MAX_ATTEMPTS,
    EventInfo,
    GatewayClient,
    GatewayError,
    Pusher,
    PusherKey,
    PusherQueue,
    deliver,
    notification_body,
)

URL = "https://push.example.org/_matrix/push/v1/notify"
STORED = {
    "kind": "http",
    "app_id": "org.example.app",
    "pushkey": "pk",
    "pushkey_ts": 1700000000,
    "data": {"url": URL, "extra": 1},
}
EVENT = EventInfo(
    event_id="$e",
    room_id="!r:example.org",
    type="m.room.member",
    sender="@bob:example.org",
    content={"membership": "invite"},
    state_key="@alice:example.org",
    sender_display_name="Bob",
    room_name="Room",
    room_alias="#room:example.org",
)


def test_full_and_event_id_only_bodies() -> None:
    pusher = Pusher.from_stored("@alice:example.org", STORED)
    assert pusher is not None
    body = notification_body(pusher, EVENT, 3, {"sound": "default"}, True)["notification"]
    assert body["devices"] == [
        {
            "app_id": "org.example.app",
            "pushkey": "pk",
            "pushkey_ts": 1700000000,
            "data": {"extra": 1},
            "tweaks": {"sound": "default"},
        }
    ]
    assert body["counts"] == {"unread": 3} and body["prio"] == "high"
    assert (body["event_id"], body["room_id"], body["type"]) == ("$e", "!r:example.org", EVENT.type)
    assert (body["sender_display_name"], body["room_name"]) == ("Bob", "Room")
    assert body["membership"] == "invite" and body["user_is_target"] is True

    only = Pusher.from_stored(
        "@alice:example.org", {**STORED, "data": {"url": URL, "format": "event_id_only"}}
    )
    assert only is not None
    body = notification_body(only, EVENT, 0, {}, False)["notification"]
    assert set(body) == {"devices", "counts", "event_id", "id", "room_id", "prio"}
    assert body["prio"] == "low"

    badge = notification_body(pusher, None, 0, {}, False)["notification"]
    assert set(badge) == {"devices", "counts"}


def test_only_http_pushers_with_a_url_deliver() -> None:
    assert Pusher.from_stored("@a:x", {**STORED, "kind": "email"}) is None
    assert Pusher.from_stored("@a:x", {**STORED, "data": {}}) is None


class FakeClient(GatewayClient):
    """Answers from a script: an exception to raise or the pushkeys to reject."""

    def __init__(self, script: list[GatewayError | list[str]]) -> None:
        super().__init__()
        self.script = script
        self.calls = 0

    async def notify(self, url: str, body: Mapping[str, Any]) -> list[str]:
        self.calls += 1
        step = self.script.pop(0) if self.script else []
        if isinstance(step, GatewayError):
            raise step
        return step


async def _run(client: FakeClient, bodies: int) -> tuple[list[float], list[PusherKey]]:
    pusher = Pusher.from_stored("@alice:example.org", STORED)
    assert pusher is not None
    sleeps: list[float] = []
    rejected: list[PusherKey] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def reject(key: PusherKey) -> None:
        rejected.append(key)

    queue = PusherQueue()
    for i in range(bodies):
        queue.put(pusher, {"n": i})
    task = asyncio.create_task(deliver(client, queue, reject, sleep))
    await asyncio.wait_for(queue.items.join(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return sleeps, rejected


async def test_failures_are_retried_with_growing_backoff() -> None:
    client = FakeClient([GatewayError("500"), GatewayError("503"), []])
    sleeps, rejected = await _run(client, 1)
    assert client.calls == 3 and rejected == []
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]


async def test_a_notification_is_dropped_after_the_last_try() -> None:
    client = FakeClient([GatewayError("down")] * MAX_ATTEMPTS)
    sleeps, _ = await _run(client, 2)
    # The first body used every try; the second went through at once.
    assert client.calls == MAX_ATTEMPTS + 1
    assert len(sleeps) == MAX_ATTEMPTS - 1


async def test_a_rejected_pushkey_deletes_the_pusher_and_stops_its_queue() -> None:
    pusher = Pusher.from_stored("@alice:example.org", STORED)
    assert pusher is not None
    client = FakeClient([["pk"]])
    rejected: list[PusherKey] = []

    async def reject(key: PusherKey) -> None:
        rejected.append(key)

    queue = PusherQueue()
    queue.put(pusher, {"n": 0})
    await asyncio.wait_for(deliver(client, queue, reject), 10)  # returns by itself
    assert rejected == [pusher.key]
