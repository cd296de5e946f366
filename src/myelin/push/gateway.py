"""Delivery to push gateways (push-gateway-api.md, POST /_matrix/push/v1/notify).

`notification_body` builds the request body of one notification for the `http` pushers
of one user; `GatewayClient.notify` POSTs it. Each pusher has its own `PusherQueue`,
worked by one task: a slow or dead gateway delays only its own pushers, never the log
reader that feeds them or anybody's sends. A failed POST (connection error, timeout, a
5xx or other non-200 answer) is retried with exponential backoff; after `MAX_ATTEMPTS`
the notification is dropped (a push is a hint, the client syncs anyway). A pushkey the
gateway names in `rejected` is removed, as the spec asks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

# aiohttp (about 11 MB resident) is imported where a request is made, not at start-up:
# a server that never talks to another one does not pay for it.
if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("myelin.push.gateway")

MAX_ATTEMPTS = 8
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 60.0
QUEUE_LIMIT = 1000
REQUEST_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class PusherKey:
    """Identifies a pusher: a user's (app_id, pushkey)."""

    user_id: str
    app_id: str
    pushkey: str


@dataclass(frozen=True, slots=True)
class Pusher:
    """An `http` pusher as stored by POST /pushers/set."""

    key: PusherKey
    url: str
    data: Mapping[str, Any]
    pushkey_ts: int
    event_id_only: bool

    @staticmethod
    def from_stored(user_id: str, stored: Mapping[str, Any]) -> Pusher | None:
        """The pusher, or None when it is not an `http` pusher with a URL."""
        data = stored.get("data")
        if stored.get("kind") != "http" or not isinstance(data, Mapping):
            return None
        url = data.get("url")
        if not isinstance(url, str):
            return None
        ts = stored.get("pushkey_ts")
        return Pusher(
            PusherKey(user_id, str(stored["app_id"]), str(stored["pushkey"])),
            url,
            data,
            ts if type(ts) is int else 0,
            data.get("format") == "event_id_only",
        )

    def device(self, tweaks: Mapping[str, Any]) -> dict[str, Any]:
        """The `devices` entry: the pusher's data without `url` (push-gateway-api.md)."""
        return {
            "app_id": self.key.app_id,
            "pushkey": self.key.pushkey,
            "pushkey_ts": self.pushkey_ts,
            "data": {k: v for k, v in self.data.items() if k != "url"},
            "tweaks": dict(tweaks),
        }


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What a notification says about its event; None for a badge-only update."""

    event_id: str
    room_id: str
    type: str
    sender: str
    content: Mapping[str, Any]
    state_key: str | None
    sender_display_name: str | None
    room_name: str | None
    room_alias: str | None


def notification_body(
    pusher: Pusher,
    event: EventInfo | None,
    unread: int,
    tweaks: Mapping[str, Any],
    high_priority: bool,
) -> dict[str, Any]:
    """The body of POST /_matrix/push/v1/notify for one pusher.

    With `format: event_id_only` only the event and room IDs go out (the gateway fetches
    the rest). `id` repeats `event_id`, as Synapse sends and Sytest expects."""
    notification: dict[str, Any] = {
        "devices": [pusher.device(tweaks)],
        "counts": {"unread": unread},
    }
    if event is not None:
        notification["event_id"] = event.event_id
        notification["id"] = event.event_id
        notification["room_id"] = event.room_id
        notification["prio"] = "high" if high_priority else "low"
        if not pusher.event_id_only:
            notification["type"] = event.type
            notification["sender"] = event.sender
            notification["content"] = dict(event.content)
            if event.sender_display_name is not None:
                notification["sender_display_name"] = event.sender_display_name
            if event.room_name is not None:
                notification["room_name"] = event.room_name
            if event.room_alias is not None:
                notification["room_alias"] = event.room_alias
            if event.type == "m.room.member" and event.state_key is not None:
                membership = event.content.get("membership")
                if isinstance(membership, str):
                    notification["membership"] = membership
                notification["user_is_target"] = event.state_key == pusher.key.user_id
    return {"notification": notification}


class GatewayError(Exception):
    """The gateway did not accept the request; it is worth trying again later."""


class GatewayClient:
    """POSTs notifications to push gateways over one pooled aiohttp session."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context or ssl.create_default_context()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def notify(self, url: str, body: Mapping[str, Any]) -> list[str]:
        """POST `body`; the pushkeys the gateway rejected, or GatewayError."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        try:
            async with self._session.post(
                url,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise GatewayError(f"{url} answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise GatewayError(f"{url}: {exc!r}") from None
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return []
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if not isinstance(rejected, list):
            return []
        return [key for key in rejected if isinstance(key, str)]


Reject = Callable[[PusherKey], Awaitable[None]]


@dataclass
class PusherQueue:
    """The notifications waiting for one pusher, oldest first, each with the pusher as
    it was stored when the notification was made (a changed URL applies to the next).
    Bounded: when full the oldest is dropped, as the newest carries the current count."""

    items: asyncio.Queue[tuple[Pusher, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )

    def put(self, pusher: Pusher, body: dict[str, Any]) -> None:
        if self.items.full():
            self.items.get_nowait()
            self.items.task_done()
        self.items.put_nowait((pusher, body))


async def deliver(
    client: GatewayClient,
    queue: PusherQueue,
    reject: Reject,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Work one pusher's queue for ever: POST each body, retrying with backoff; stop when
    the gateway rejects the pushkey (then the pusher is deleted)."""
    while True:
        pusher, body = await queue.items.get()
        try:
            if await _post_with_retries(client, pusher, body, sleep):
                log.info("gateway %s rejected a pushkey of %s", pusher.url, pusher.key.user_id)
                await reject(pusher.key)
                return
        finally:
            queue.items.task_done()


async def _post_with_retries(
    client: GatewayClient,
    pusher: Pusher,
    body: dict[str, Any],
    sleep: Callable[[float], Awaitable[None]],
) -> bool:
    """POST until the gateway answers 200 or the tries run out; whether it rejected the
    pusher's pushkey."""
    backoff = FIRST_BACKOFF
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            rejected = await client.notify(pusher.url, body)
        except GatewayError as exc:
            if attempt == MAX_ATTEMPTS:
                log.warning("push to %s dropped after %d tries: %s", pusher.url, attempt, exc)
                return False
            log.info("push to %s failed (try %d), retrying: %s", pusher.url, attempt, exc)
            await sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            continue
        return pusher.key.pushkey in rejected
    return False


def now_seconds() -> int:
    return int(time.time())
