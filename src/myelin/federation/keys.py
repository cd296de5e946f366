"""End-to-end keys across servers: the key server asks other servers through
`RemoteKeys`, and other servers ask this one through the query routes built here.

Device lists (with the master and self-signing keys) of remote users who share a room
with a local user are cached in memory and kept current by the EDUs of their servers
(`m.device_list_update`, `m.signing_key_update`); other remote users' keys are asked of
their server on each query. Changes of local users' keys go out by the same EDUs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from myelin.clientapi.http import MatrixError, Request
from myelin.federation.client import FederationClient, FederationError, path_segment
from myelin.federation.rooms import server_of
from myelin.federation.sender.reader import FederationSender
from myelin.keyserver import KeyServer
from myelin.storage import Txn

log = logging.getLogger("myelin.federation.keys")

V1 = "/_matrix/federation/v1"
TIMEOUT_S = 10.0
#: Inbound device list and signing key updates waiting to be applied; beyond this, the
#: users' cached lists are dropped instead (the next query fetches them).
MAX_PENDING_UPDATES = 10_000
#: How long a change of a local user's keys waits for the servers sharing a room with
#: them to answer the transaction that tells them (see `RemoteKeys.device_list_changed`).
ANNOUNCE_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class DeviceList:
    """A remote user's devices as their server last described them."""

    devices: dict[str, Any]
    stream_id: int
    master_key: dict[str, Any] | None
    self_signing_key: dict[str, Any] | None


def _key_or_none(value: Any, user_id: str) -> dict[str, Any] | None:
    """A cross-signing key of `user_id` as another server gave it, or None if it is not
    one (a server speaks for its own users' keys only)."""
    if isinstance(value, dict) and value.get("user_id") == user_id:
        return value
    return None


class RemoteKeys:
    """`KeyServer.remote`: keys of users of other servers, and what other servers must
    hear of this server's users' devices (device list updates, signing key updates,
    to-device messages).

    Device lists of remote users are cached while this server shares a room with them
    (server-server-api.md, Device Management): the cache is filled by `/user/devices`
    (a resync) and kept up to date by `m.device_list_update` and `m.signing_key_update`
    EDUs. It is dropped when no local user shares a room with the user any more (no
    update would reach it), and an update that does not follow the cached list (an
    unknown `prev_id`) triggers a resync. While the remote server does not answer, the
    list last known is served.

    An update that follows the cached list is applied while `/send` handles its
    transaction, so that local clients see it as soon as the other server has sent it
    (their next `/sync` may come right after the other server's client was answered).
    Updates that need a resync are applied in arrival order by `run`, after `/send` has
    answered: a resync waits on another server, which must not hold up the transaction
    that brought the update. A user's updates never overtake each other: while one of
    theirs waits for `run`, the next ones queue behind it.

    One `/user/devices` request per user is under way for queries: a `/keys/query`
    that needs the list while a resync is running waits for that resync rather than
    asking again (a second request could fail where the first succeeds, and leave the
    query with no answer).
    """

    def __init__(self, client: FederationClient, sender: FederationSender, keys: KeyServer) -> None:
        self.client = client
        self.sender = sender
        self.keys = keys
        self.server_name = keys.server_name
        self._last_stream: dict[str, int] = {}
        """The stream ID of each local user's last device list update (for `prev_id`)."""
        self._announced: dict[str, set[str]] = {}
        """The device IDs of each local user last announced (a missing one was deleted)."""
        self._cache: dict[str, DeviceList] = {}
        """Device lists of remote users, as their servers last told (in memory)."""
        self._stale: set[str] = set()
        """Remote users whose cached list is known to be behind (resync before use)."""
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(MAX_PENDING_UPDATES)
        self._queued: dict[str, int] = {}
        """Users with updates queued for `run` or being applied by it, and how many."""
        self._fetching: dict[str, asyncio.Future[DeviceList | None]] = {}
        """The latest `/user/devices` request under way per user (its result)."""

    async def receive(self, edu_type: str, content: dict[str, Any]) -> None:
        """Take an inbound `m.device_list_update` or `m.signing_key_update` (of a user of
        the server that sent it): applied at once when it follows the cached list and
        nothing of the user's is queued, else queued for `run`."""
        user_id = content["user_id"]
        if not self._queued.get(user_id):
            try:
                if await self._apply_now(edu_type, content):
                    return
            except Exception:
                log.exception("%s of %s failed", edu_type, user_id)
                self.forget(user_id)
                return
        try:
            self._inbox.put_nowait((edu_type, content))
        except asyncio.QueueFull:
            self.forget(user_id)
            return
        self._queued[user_id] = self._queued.get(user_id, 0) + 1

    async def _apply_now(self, edu_type: str, content: dict[str, Any]) -> bool:
        """Apply an update that needs no request to another server; False if it needs one
        (nothing cached, the cache is stale, or the update does not follow it)."""
        user_id = content["user_id"]
        if user_id not in self._cache or user_id in self._stale:
            return False
        if edu_type == "m.signing_key_update":
            await self.on_signing_key_update(content)
            return True
        return await self._apply(content)

    async def run(self) -> None:
        """Apply the queued updates, one at a time, for as long as federation runs."""
        while True:
            edu_type, content = await self._inbox.get()
            user_id = content["user_id"]
            try:
                if edu_type == "m.signing_key_update":
                    await self.on_signing_key_update(content)
                else:
                    await self.on_device_list_update(content)
            except Exception:
                log.exception("%s of %s failed", edu_type, user_id)
                self.forget(user_id)
            finally:
                left = self._queued.get(user_id, 1) - 1
                if left > 0:
                    self._queued[user_id] = left
                else:
                    self._queued.pop(user_id, None)

    # ------------------------------------------------------------------ local users

    def stream_id(self, user_id: str) -> int:
        """The stream ID of a local user's device list as last announced: `/user/devices`
        answers with it, so the next update's `prev_id` follows the list it served."""
        found = self._last_stream.get(user_id)
        if found is None:
            found = self._last_stream[user_id] = int(time.time() * 1000)
        return found

    def _next_stream(self, user_id: str) -> tuple[int, list[int]]:
        prev = self._last_stream.get(user_id)
        stream_id = max(int(time.time() * 1000), (prev or 0) + 1)
        self._last_stream[user_id] = stream_id
        return stream_id, [] if prev is None else [prev]

    def _servers(self, sharing: set[str]) -> set[str]:
        return {server_of(u) for u in sharing} - {self.server_name}

    async def device_list_changed(self, user_id: str, sharing: set[str]) -> None:
        """A local user's devices or device keys changed: one `m.device_list_update` per
        device to the servers sharing a room with them, `deleted` for devices gone.

        Returns once those servers have answered the transaction carrying the updates
        (at most `ANNOUNCE_WAIT_S`): a server applies an update that follows its cached
        list before it answers, so when the change's request (a key upload, a device
        deletion) is answered, users of those servers are already told of it, and their
        next `/sync` or `/keys/query` has it."""
        servers = self._servers(sharing)
        if not servers:
            return
        answer = await self.keys.query("", {user_id: []})
        devices: dict[str, Any] = answer["device_keys"].get(user_id) or {}
        gone = self._announced.get(user_id, set()) - set(devices)
        self._announced[user_id] = set(devices)
        updates: list[tuple[str, dict[str, Any] | None]] = [(d, None) for d in sorted(gone)]
        updates += sorted(devices.items())
        if not updates:
            # Nothing known of what was deleted (a restart since): an update for no
            # device makes the other servers fetch the whole list again.
            updates = [("", {})]
        numbers: dict[str, int] = {}
        for device_id, keys in updates:
            stream_id, prev_id = self._next_stream(user_id)
            content: dict[str, Any] = {
                "user_id": user_id,
                "device_id": device_id,
                "stream_id": stream_id,
                "prev_id": prev_id,
                "deleted": keys is None,
            }
            if keys:
                content["keys"] = {k: v for k, v in keys.items() if k != "unsigned"}
                name = keys.get("unsigned", {}).get("device_display_name")
                if name is not None:
                    content["device_display_name"] = name
            numbers.update(self.sender.send_edu(servers, "m.device_list_update", content))
        await self.sender.edus_done(numbers, ANNOUNCE_WAIT_S)

    async def signing_keys_changed(self, user_id: str, sharing: set[str]) -> None:
        """A local user's master or self-signing key changed (or was signed): an
        `m.signing_key_update` to the servers sharing a room with them, waited for as in
        `device_list_changed`."""
        servers = self._servers(sharing)
        if not servers:
            return
        answer = await self.keys.query("", {user_id: []})
        content: dict[str, Any] = {"user_id": user_id}
        for name, field in (
            ("master_keys", "master_key"),
            ("self_signing_keys", "self_signing_key"),
        ):
            found = answer[name].get(user_id)
            if found is not None:
                content[field] = found
        numbers = self.sender.send_edu(servers, "m.signing_key_update", content)
        await self.sender.edus_done(numbers, ANNOUNCE_WAIT_S)

    async def send_to_device(
        self,
        sender: str,
        sender_device: str,
        event_type: str,
        txn_id: str,
        messages: dict[str, Any],
    ) -> None:
        by_server: dict[str, dict[str, Any]] = {}
        for user_id, by_device in messages.items():
            by_server.setdefault(server_of(user_id), {})[user_id] = by_device
        for server, wanted in by_server.items():
            content = {
                "sender": sender,
                "type": event_type,
                "message_id": f"{sender_device}:{txn_id}",
                "messages": wanted,
            }
            self.sender.send_edu([server], "m.direct_to_device", content)

    # ------------------------------------------------------------------ remote users

    async def query(self, server: str, wanted: dict[str, list[str]]) -> Any:
        """The keys of users of `server`: from the device list cache for users sharing a
        room with a local user (filled by a resync when missing), `/user/keys/query` for
        the others and for those whose list cannot be had."""
        out: dict[str, dict[str, Any]] = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
        }
        uncached: dict[str, list[str]] = {}
        for user_id, devices in wanted.items():
            cached = await self._tracked_list(user_id)
            if cached is None:
                uncached[user_id] = devices
                continue
            out["device_keys"][user_id] = {
                d: k for d, k in cached.devices.items() if not devices or d in devices
            }
            if cached.master_key is not None:
                out["master_keys"][user_id] = cached.master_key
            if cached.self_signing_key is not None:
                out["self_signing_keys"][user_id] = cached.self_signing_key
        if uncached:
            answer = await self.client.request(
                "POST",
                server,
                V1 + "/user/keys/query",
                body={"device_keys": uncached},
                timeout_s=TIMEOUT_S,
            )
            for name in out:
                found = answer.get(name) if isinstance(answer, dict) else None
                if isinstance(found, dict):
                    out[name].update(found)
        return out

    async def _tracked_list(self, user_id: str) -> DeviceList | None:
        """The cached list of a remote user, fetched when missing or stale; None when the
        user shares no room with a local user (no update would keep it current), or when
        nothing is known and their server does not answer."""
        cached = self._cache.get(user_id)
        if cached is not None and user_id not in self._stale:
            return cached
        running = self._fetching.get(user_id)
        if running is not None:  # a resync under way: its answer, not a second request
            return await asyncio.shield(running) or self._cache.get(user_id)
        if not await self._shared(user_id):
            self.forget(user_id)
            return None
        return await self.resync(user_id) or self._cache.get(user_id)

    async def _shared(self, user_id: str) -> bool:
        """Whether a local user is joined to a room `user_id` is joined to."""
        pattern = "%:" + self.server_name

        async def q(t: Txn) -> bool:
            rows = await t.fetchall(
                "SELECT DISTINCT o.user_id FROM sync_memberships m"
                " JOIN sync_memberships o ON o.room_id = m.room_id AND o.membership = 'join'"
                " WHERE m.user_id = ? AND m.membership = 'join' AND o.user_id LIKE ?",
                user_id,
                pattern,
            )
            return any(server_of(str(r[0])) == self.server_name for r in rows)

        return await self.keys.db.read(q)

    async def resync(self, user_id: str) -> DeviceList | None:
        """Fetch a remote user's whole device list (`/user/devices`) into the cache, and
        tell local users when it differs from what was cached; None (and the cache left
        as it was) when their server does not answer.

        Always a new request (an update may have come since one under way began). The
        answer is returned but not stored when it may be older than what the cache got
        meanwhile: a newer request started before it was answered, or an update with a
        higher stream ID was applied."""
        future: asyncio.Future[DeviceList | None] = asyncio.get_running_loop().create_future()
        self._fetching[user_id] = future
        before = self._cache.get(user_id)
        found: DeviceList | None = None
        try:
            found = await self._fetch(user_id)
            now = self._cache.get(user_id)
            if (
                found is not None
                and self._fetching.get(user_id) is future
                and (now is None or now is before or now.stream_id <= found.stream_id)
            ):
                await self._store(user_id, found)
        finally:
            future.set_result(found)
            if self._fetching.get(user_id) is future:
                del self._fetching[user_id]
        return found

    async def _fetch(self, user_id: str) -> DeviceList | None:
        """A remote user's device list as their server gives it now; None when it does
        not answer, or not with a device list of that user."""
        try:
            body = await self.devices(server_of(user_id), user_id)
        except FederationError as exc:
            log.info("device list of %s: %s", user_id, exc)
            return None
        if not isinstance(body, dict) or body.get("user_id") != user_id:
            return None
        devices: dict[str, Any] = {}
        for entry in body.get("devices") or []:
            if isinstance(entry, dict) and isinstance(entry.get("device_id"), str):
                devices[entry["device_id"]] = _device_keys(entry.get("keys"), entry)
        stream = body.get("stream_id")
        return DeviceList(
            devices,
            stream if isinstance(stream, int) else 0,
            _key_or_none(body.get("master_key"), user_id),
            _key_or_none(body.get("self_signing_key"), user_id),
        )

    async def _store(self, user_id: str, found: DeviceList) -> None:
        old = self._cache.get(user_id)
        self._cache[user_id] = found
        self._stale.discard(user_id)
        if old is None or (old.devices, old.master_key, old.self_signing_key) != (
            found.devices,
            found.master_key,
            found.self_signing_key,
        ):
            await self.keys.device_list_changed(user_id)

    async def on_device_list_update(self, content: dict[str, Any]) -> None:
        """An `m.device_list_update` of a remote user: applied to the cached list when it
        follows it, else the list is fetched again. Ignored for a user no local user
        shares a room with (nobody here tracks them)."""
        user_id = content["user_id"]
        if user_id in self._cache and await self._apply(content):
            return
        if user_id not in self._cache and not await self._shared(user_id):
            return
        self._stale.add(user_id)
        if await self.resync(user_id) is None:
            # Their server did not answer: local users look again (and get the last
            # known list) rather than miss the change.
            await self.keys.device_list_changed(user_id)

    async def on_signing_key_update(self, content: dict[str, Any]) -> None:
        """An `m.signing_key_update` of a remote user: the new master and self-signing
        keys replace the cached ones (the list is fetched when none is cached)."""
        user_id = content["user_id"]
        cached = self._cache.get(user_id)
        if cached is None:
            if await self._shared(user_id):
                self._stale.add(user_id)
                if await self.resync(user_id) is None:
                    await self.keys.device_list_changed(user_id)
            return
        master = _key_or_none(content.get("master_key"), user_id)
        self_signing = _key_or_none(content.get("self_signing_key"), user_id)
        await self._store(
            user_id,
            DeviceList(
                cached.devices,
                cached.stream_id,
                master if master is not None else cached.master_key,
                self_signing if self_signing is not None else cached.self_signing_key,
            ),
        )

    async def on_join(self, room_id: str, user_id: str, servers: set[str]) -> None:
        """A remote user joined a room here: what was cached of their devices may be
        stale (no updates come while no room is shared), and local members should look
        at their keys again."""
        if server_of(user_id) != self.server_name:
            self.forget(user_id)
            await self.keys.device_list_changed(user_id)

    async def on_leave(self, room_id: str, user_id: str) -> None:
        """A member left a room (or was kicked or banned): the cached lists of remote
        users who no longer share a room with a local user are dropped, since their
        servers stop sending updates; the next query fetches them again."""
        if server_of(user_id) != self.server_name:
            candidates = {user_id} & self._cache.keys()
        elif self._cache:
            rows = await self.keys.db.read(
                lambda t: t.fetchall(
                    "SELECT user_id FROM sync_memberships WHERE room_id = ?"
                    " AND membership = 'join'",
                    room_id,
                )
            )
            candidates = {str(r[0]) for r in rows} & self._cache.keys()
        else:
            return
        try:
            for candidate in sorted(candidates):
                if not await self._shared(candidate):
                    self.forget(candidate)
        except Exception:  # the leave itself must still be federated
            log.exception("device lists after %s left %s", user_id, room_id)
            for candidate in candidates:
                self.forget(candidate)

    def forget(self, user_id: str) -> None:
        """Drop a user's cached device list (it may be stale, or is no longer tracked)."""
        self._cache.pop(user_id, None)
        self._stale.discard(user_id)

    async def _apply(self, content: dict[str, Any]) -> bool:
        """Apply an `m.device_list_update` to the cached list when it follows it (its
        `prev_id` holds the cached stream ID); False when a resync is needed."""
        user_id = content["user_id"]
        cached = self._cache.get(user_id)
        prev = content.get("prev_id")
        stream = content.get("stream_id")
        device_id = content.get("device_id")
        if cached is not None and isinstance(stream, int) and stream <= cached.stream_id:
            return True  # already in the cached list (a resync got ahead of it)
        if (
            cached is None
            or not isinstance(prev, list)
            or not isinstance(stream, int)
            or not isinstance(device_id, str)
            or not device_id
            or cached.stream_id not in prev
        ):
            return False
        devices = dict(cached.devices)
        if content.get("deleted") is True:
            devices.pop(device_id, None)
        else:
            devices[device_id] = _device_keys(content.get("keys"), content)
        await self._store(
            user_id, DeviceList(devices, stream, cached.master_key, cached.self_signing_key)
        )
        return True

    async def claim(self, server: str, wanted: dict[str, Any]) -> Any:
        return await self.client.request(
            "POST",
            server,
            V1 + "/user/keys/claim",
            body={"one_time_keys": wanted},
            timeout_s=TIMEOUT_S,
        )

    async def devices(self, server: str, user_id: str) -> Any:
        return await self.client.request(
            "GET", server, f"{V1}/user/devices/{path_segment(user_id)}", timeout_s=TIMEOUT_S
        )


def _device_keys(given: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """A device's keys as `/keys/query` serves them: the keys object with the device's
    display name in `unsigned` (the entry of `/user/devices` or the EDU carries it)."""
    keys: dict[str, Any] = given if isinstance(given, dict) else {}
    name = entry.get("device_display_name")
    return {**keys, "unsigned": {} if name is None else {"device_display_name": name}}


class KeyQueries:
    """The `/user/keys/query`, `/user/keys/claim` and `/user/devices` routes' logic."""

    def __init__(self, keys: KeyServer, server_name: str) -> None:
        self.keys = keys
        self.server_name = server_name

    def _local(self, wanted: Any, what: str) -> dict[str, Any]:
        if not isinstance(wanted, dict):
            raise MatrixError(400, "M_BAD_JSON", f"{what} must be an object")
        return {u: v for u, v in wanted.items() if server_of(str(u)) == self.server_name}

    async def query(self, origin: str, req: Request) -> Any:
        wanted = self._local(req.json().get("device_keys"), "device_keys")
        wanted = {u: v if isinstance(v, list) else [] for u, v in wanted.items()}
        answer = await self.keys.query("", wanted)
        return {
            "device_keys": answer["device_keys"],
            "master_keys": answer["master_keys"],
            "self_signing_keys": answer["self_signing_keys"],
        }

    async def claim(self, origin: str, req: Request) -> Any:
        wanted = self._local(req.json().get("one_time_keys"), "one_time_keys")
        answer = await self.keys.claim({u: v for u, v in wanted.items() if isinstance(v, dict)})
        return {"one_time_keys": answer["one_time_keys"]}

    async def devices(self, origin: str, req: Request) -> Any:
        user_id = req.params["user_id"]
        if server_of(user_id) != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Not a user of this server")
        answer = await self.keys.query("", {user_id: []})
        devices = []
        for device_id, keys in answer["device_keys"].get(user_id, {}).items():
            entry: dict[str, Any] = {"device_id": device_id, "keys": keys}
            name = keys.get("unsigned", {}).get("device_display_name")
            if name is not None:
                entry["device_display_name"] = name
            devices.append(entry)
        remote = self.keys.remote
        body: dict[str, Any] = {
            "user_id": user_id,
            "stream_id": remote.stream_id(user_id)
            if isinstance(remote, RemoteKeys)
            else int(time.time() * 1000),
            "devices": devices,
        }
        for name, field in (
            ("master_keys", "master_key"),
            ("self_signing_keys", "self_signing_key"),
        ):
            found = answer[name].get(user_id)
            if found is not None:
                body[field] = found
        return body


class KeyEdus:
    """Inbound EDUs of the key server: device list updates, cross-signing key updates
    and to-device messages of other servers' users."""

    def __init__(self, keys: KeyServer) -> None:
        self.keys = keys

    @property
    def remote(self) -> RemoteKeys | None:
        remote = self.keys.remote
        return remote if isinstance(remote, RemoteKeys) else None

    def handlers(self) -> dict[str, Any]:
        return {
            "m.device_list_update": functools.partial(self.key_update, "m.device_list_update"),
            "m.signing_key_update": functools.partial(self.key_update, "m.signing_key_update"),
            "m.direct_to_device": self.to_device,
        }

    @staticmethod
    def _user_of(origin: str, content: Any) -> str | None:
        """The user an EDU is about, if it is one of the origin server's users (a server
        speaks for its own users only)."""
        user_id = content.get("user_id") if isinstance(content, dict) else None
        if isinstance(user_id, str) and server_of(user_id) == origin:
            return user_id
        return None

    async def key_update(self, edu_type: str, origin: str, content: Any) -> None:
        """An `m.device_list_update` or `m.signing_key_update` about one of the origin's
        users: applied to the cached list (or, without federation keys, only announced)."""
        user_id = self._user_of(origin, content)
        if user_id is None:
            return
        remote = self.remote
        if remote is None:
            await self.keys.device_list_changed(user_id)
        else:
            await remote.receive(edu_type, content)

    async def to_device(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        sender, event_type = content.get("sender"), content.get("type")
        messages, message_id = content.get("messages"), content.get("message_id")
        if (
            not isinstance(sender, str)
            or server_of(sender) != origin
            or not isinstance(event_type, str)
            or not isinstance(messages, dict)
        ):
            return
        local = {u: m for u, m in messages.items() if server_of(u) == self.keys.server_name}
        # The remote message ID stands for the transaction: a retried EDU is queued once.
        await self.keys.send_to_device(sender, "", event_type, f"{origin}:{message_id}", local)
