"""Server keys of other servers: fetched from `/_matrix/key/v2/server`, checked, cached.

server-server-api.md, "Retrieving server keys": a server publishes its keys signed with
themselves; a key fetched directly is trusted once the response is signed by every key it
lists and names the server asked. Keys are cached until `valid_until_ts` (and at least a
short while, so a burst of requests from one server costs one fetch). A key ID the cache
does not know triggers a new fetch, at most once per `REFETCH_S` per server (a stream of
requests signed with a bogus key must not become a stream of fetches).

The cached responses are also what the notary endpoint (`/_matrix/key/v2/query`) serves,
with this server's signature added. For that, the last response listing each key ID is
kept per key ID: a key the origin server stopped publishing is still vouched for as it
was once published (a spurious later answer of the origin must not erase it), and a
notary query whose keys are cached valid for long enough costs no fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from myelin.core.signing import (
    KeyFormatError,
    SignatureError,
    SigningKey,
    decode_verify_key,
    sign_json,
    verify_signed_by,
)

log = logging.getLogger("myelin.federation.keyring")

REFETCH_S = 30.0
OWN_VALIDITY_MS = 24 * 3600 * 1000

Fetch = Callable[[str], Awaitable[Any]]
"""GET `/_matrix/key/v2/server` of a server; the parsed JSON body (raises on failure)."""


class KeyFetchError(Exception):
    """The keys of a server could not be fetched or did not check out."""


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The checked keys of one server, as last fetched."""

    server_name: str
    valid_until_ts: int
    verify_keys: Mapping[str, bytes]
    old_verify_keys: Mapping[str, tuple[bytes, int]]
    """Key ID -> (key, expired_ts)."""
    response: Mapping[str, Any]
    """The response as the server signed it (for the notary endpoint)."""
    fetched_at: float


def parse_server_keys(server_name: str, body: Any, now_ms: int) -> ServerKeys:
    """Check a `/_matrix/key/v2/server` response of `server_name`. Raises KeyFetchError."""
    if not isinstance(body, dict) or body.get("server_name") != server_name:
        raise KeyFetchError(f"key response does not name {server_name}")
    valid_until = body.get("valid_until_ts")
    if not isinstance(valid_until, int):
        raise KeyFetchError("key response without valid_until_ts")
    verify: dict[str, bytes] = {}
    old: dict[str, tuple[bytes, int]] = {}
    try:
        for key_id, value in (body.get("verify_keys") or {}).items():
            verify[key_id] = decode_verify_key(value["key"])
        for key_id, value in (body.get("old_verify_keys") or {}).items():
            expired = value.get("expired_ts")
            expired_ts = expired if isinstance(expired, int) else 0
            old[key_id] = (decode_verify_key(value["key"]), expired_ts)
    except (KeyFormatError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFetchError(f"malformed key in response of {server_name}: {exc}") from None
    if not verify:
        raise KeyFetchError(f"{server_name} published no verify keys")
    try:
        # Every current key must have signed the response (a server proves it holds them).
        for key_id, key in verify.items():
            verify_signed_by(body, server_name, {key_id: key})
    except SignatureError as exc:
        raise KeyFetchError(f"key response of {server_name} not self-signed: {exc}") from None
    return ServerKeys(server_name, valid_until, verify, old, body, time.monotonic())


class Keyring:
    """Verify keys of remote servers (and of this one, without any request)."""

    def __init__(self, server_name: str, own_key: SigningKey, fetch: Fetch) -> None:
        self.server_name = server_name
        self.own_key = own_key
        self._fetch = fetch
        self._cache: dict[str, ServerKeys] = {}
        self._by_key: dict[str, dict[str, ServerKeys]] = {}
        """Server -> key ID -> the last response listing that key (current or old)."""
        self._inflight: dict[str, asyncio.Future[ServerKeys]] = {}

    def own_keys_json(self) -> dict[str, Any]:
        """This server's signed key response."""
        doc = {
            "server_name": self.server_name,
            "valid_until_ts": int(time.time() * 1000) + OWN_VALIDITY_MS,
            "verify_keys": {self.own_key.key_id: {"key": self.own_key.verify_key_base64}},
            "old_verify_keys": {},
        }
        return sign_json(doc, self.server_name, self.own_key)

    async def server_keys(
        self, server_name: str, want: str | None = None, min_valid_until_ts: int = 0
    ) -> ServerKeys:
        """The keys of `server_name`, fetched when not cached, expired, or `want` (a key
        ID) is unknown and the last fetch is older than REFETCH_S, or valid for less than
        `min_valid_until_ts` (then the cached ones are kept if the fetch fails). Raises
        KeyFetchError."""
        if server_name == self.server_name:
            return parse_server_keys(server_name, self.own_keys_json(), 0)
        cached = self._cache.get(server_name)
        now = time.monotonic()
        if cached is not None and cached.valid_until_ts >= min_valid_until_ts:
            age = now - cached.fetched_at
            fresh = cached.valid_until_ts > time.time() * 1000 or age < REFETCH_S
            known = want is None or want in cached.verify_keys or want in cached.old_verify_keys
            if fresh and (known or now - cached.fetched_at < REFETCH_S):
                return cached
        return await self._refresh(server_name)

    async def _refresh(self, server_name: str) -> ServerKeys:
        """Fetch the keys of `server_name` (one fetch at a time per server, shared by the
        callers meanwhile) and cache them; the cached keys if the fetch fails."""
        pending = self._inflight.get(server_name)
        if pending is None:
            cached = self._cache.get(server_name)
            pending = asyncio.get_running_loop().create_future()
            self._inflight[server_name] = pending
            try:
                keys = await self._download(server_name)
            except BaseException as exc:
                if cached is not None and not isinstance(exc, asyncio.CancelledError):
                    pending.set_result(cached)
                else:
                    pending.set_exception(
                        exc if isinstance(exc, KeyFetchError) else KeyFetchError(str(exc))
                    )
                    pending.exception()
            else:
                by_key = self._by_key.setdefault(server_name, {})
                for key_id in (*keys.verify_keys, *keys.old_verify_keys):
                    by_key[key_id] = keys
                if cached is not None and keys.valid_until_ts < cached.valid_until_ts:
                    keys = cached  # never replace keys by ones valid for less long
                self._cache[server_name] = keys
                pending.set_result(keys)
            finally:
                self._inflight.pop(server_name, None)
        return await asyncio.shield(pending)

    async def _download(self, server_name: str) -> ServerKeys:
        try:
            body = await self._fetch(server_name)
        except Exception as exc:
            log.info("fetching keys of %s failed: %s", server_name, exc)
            raise KeyFetchError(f"cannot fetch keys of {server_name}: {exc}") from None
        return parse_server_keys(server_name, body, int(time.time() * 1000))

    async def verify_key(self, server_name: str, key_id: str) -> bytes | None:
        """The current key `key_id` of a server, or None (unknown, or keys unavailable)."""
        try:
            keys = await self.server_keys(server_name, key_id)
        except KeyFetchError:
            return None
        return keys.verify_keys.get(key_id)

    async def keys_for_events(self, servers: set[str]) -> dict[tuple[str, str], bytes]:
        """`(server, key ID) -> key` for every server, current and old keys, as
        `verify_event` takes them (servers whose keys are unavailable are left out)."""
        found: dict[tuple[str, str], bytes] = {}

        async def one(server: str) -> None:
            try:
                keys = await self.server_keys(server)
            except KeyFetchError:
                return
            for key_id, key in keys.verify_keys.items():
                found[(server, key_id)] = key
            for key_id, (key, _) in keys.old_verify_keys.items():
                found[(server, key_id)] = key

        async with asyncio.TaskGroup() as tg:
            for server in servers:
                tg.create_task(one(server))
        return found

    async def notary_responses(
        self,
        server_name: str,
        key_ids: Collection[str] = (),
        min_valid_until_ts: int | None = None,
    ) -> list[dict[str, Any]]:
        """The key responses of `server_name` listing `key_ids` (all keys if none),
        co-signed by this server, for `/key/v2/query`.

        The origin is asked again unless every wanted key is cached in a response valid
        until `min_valid_until_ts` (now if not given, as the spec has it); whatever it
        answers, the response last listing each wanted key is served (keys that are
        expired or no longer published included: the querying server judges them)."""
        if server_name == self.server_name:
            return [self.own_keys_json()]
        minimum = int(time.time() * 1000) if min_valid_until_ts is None else min_valid_until_ts

        def cached() -> tuple[list[ServerKeys], bool]:
            """The responses to serve, and whether every wanted key is among them."""
            if not key_ids:
                latest = self._cache.get(server_name)
                return ([latest] if latest else []), latest is not None
            by_key = self._by_key.get(server_name, {})
            found = {id(by_key[k]): by_key[k] for k in key_ids if k in by_key}
            return list(found.values()), all(k in by_key for k in key_ids)

        found, complete = cached()
        if not complete or any(r.valid_until_ts < minimum for r in found):
            with contextlib.suppress(KeyFetchError):  # the cached ones are served
                await self._refresh(server_name)
            found, _ = cached()
        return [sign_json(r.response, self.server_name, self.own_key) for r in found]
