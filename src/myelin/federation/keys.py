"""End-to-end keys across servers: the key server asks other servers through
`RemoteKeys`, and other servers ask this one through the query routes built here.

Answers of other servers are passed on as they are, without a local cache: a query of a
remote user's keys always reflects that server's current answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from myelin.clientapi.http import MatrixError, Request
from myelin.federation.client import FederationClient, FederationError, path_segment
from myelin.federation.rooms import server_of
from myelin.federation.sender.reader import FederationSender
from myelin.keyserver import KeyServer

log = logging.getLogger("myelin.federation.keys")

V1 = "/_matrix/federation/v1"
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class DeviceList:
    """A remote user's devices as their server last described them."""

    devices: dict[str, Any]
    stream_id: int
    master_key: dict[str, Any] | None
    self_signing_key: dict[str, Any] | None


class RemoteKeys:
    """`KeyServer.remote`: keys of users of other servers, and what other servers must
    hear of this server's users' devices (device list updates, to-device messages)."""

    def __init__(
        self, client: FederationClient, sender: FederationSender, keys: KeyServer
    ) -> None:
        self.client = client
        self.sender = sender
        self.keys = keys
        self.server_name = keys.server_name
        self._last_stream: dict[str, int] = {}
        self._cache: dict[str, DeviceList] = {}
        """Device lists of remote users, as their servers last told (in memory)."""
        """The stream ID of each local user's last device list update (for `prev_id`)."""

    async def device_list_changed(self, user_id: str, sharing: set[str]) -> None:
        servers = {server_of(u) for u in sharing} - {self.server_name}
        if not servers:
            return
        answer = await self.keys.query("", {user_id: []})
        devices = answer["device_keys"].get(user_id) or {"": {}}
        for device_id, keys in devices.items():
            prev = self._last_stream.get(user_id)
            stream_id = max(int(time.time() * 1000), (prev or 0) + 1)
            self._last_stream[user_id] = stream_id
            content: dict[str, Any] = {
                "user_id": user_id,
                "device_id": device_id,
                "stream_id": stream_id,
                "prev_id": [] if prev is None else [prev],
                "deleted": False,
            }
            if keys:
                content["keys"] = {k: v for k, v in keys.items() if k != "unsigned"}
                name = keys.get("unsigned", {}).get("device_display_name")
                if name is not None:
                    content["device_display_name"] = name
            self.sender.send_edu(servers, "m.device_list_update", content)

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

    async def query(self, server: str, wanted: dict[str, list[str]]) -> Any:
        """The keys of users of `server`: from the device list cache, filled by
        `/user/devices` (a resync) for users not in it; `/user/keys/query` for those
        whose resync fails."""
        out: dict[str, dict[str, Any]] = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
        }
        uncached: dict[str, list[str]] = {}
        for user_id, devices in wanted.items():
            cached = self._cache.get(user_id) or await self.resync(user_id)
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
                "POST", server, V1 + "/user/keys/query", body={"device_keys": uncached},
                timeout_s=TIMEOUT_S,
            )
            for name in out:
                found = answer.get(name) if isinstance(answer, dict) else None
                if isinstance(found, dict):
                    out[name].update(found)
        return out

    async def resync(self, user_id: str) -> DeviceList | None:
        """Fetch a remote user's whole device list (`/user/devices`) into the cache;
        None (and the cache left as it was) when their server does not answer."""
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
                given = entry.get("keys")
                keys: dict[str, Any] = given if isinstance(given, dict) else {}
                name = entry.get("device_display_name")
                keys = {**keys, "unsigned": {} if name is None else {"device_display_name": name}}
                devices[entry["device_id"]] = keys
        stream = body.get("stream_id")
        found = DeviceList(
            devices,
            stream if isinstance(stream, int) else 0,
            body.get("master_key") if isinstance(body.get("master_key"), dict) else None,
            body.get("self_signing_key")
            if isinstance(body.get("self_signing_key"), dict)
            else None,
        )
        self._cache[user_id] = found
        return found

    async def on_join(self, room_id: str, user_id: str, servers: set[str]) -> None:
        """A remote user joined a room here: what was cached of their devices may be
        stale (no updates come while no room is shared), and local members should look
        at their keys again."""
        if server_of(user_id) != self.server_name:
            self.forget(user_id)
            await self.keys.device_list_changed(user_id)

    def forget(self, user_id: str) -> None:
        """Drop a user's cached device list (they rejoined after a gap: it may be stale)."""
        self._cache.pop(user_id, None)

    def apply(self, content: dict[str, Any]) -> bool:
        """Apply an `m.device_list_update` in place when it follows the cached list (its
        `prev_id` is the cached stream ID); False when a resync is needed (the cached
        list, if any, is dropped: nothing stale is served meanwhile)."""
        user_id = content["user_id"]
        cached = self._cache.get(user_id)
        prev = content.get("prev_id")
        stream = content.get("stream_id")
        device_id = content.get("device_id")
        if (
            cached is None
            or not isinstance(prev, list)
            or not isinstance(stream, int)
            or not isinstance(device_id, str)
            or not (prev == [cached.stream_id] or (not prev and cached.stream_id == 0))
        ):
            self.forget(user_id)
            return False
        devices = dict(cached.devices)
        if content.get("deleted") is True:
            devices.pop(device_id, None)
        else:
            given = content.get("keys")
            keys: dict[str, Any] = given if isinstance(given, dict) else {}
            name = content.get("device_display_name")
            devices[device_id] = {
                **keys,
                "unsigned": {} if name is None else {"device_display_name": name},
            }
        self._cache[user_id] = DeviceList(
            devices, stream, cached.master_key, cached.self_signing_key
        )
        return True

    async def claim(self, server: str, wanted: dict[str, Any]) -> Any:
        return await self.client.request(
            "POST", server, V1 + "/user/keys/claim", body={"one_time_keys": wanted},
            timeout_s=TIMEOUT_S,
        )

    async def devices(self, server: str, user_id: str) -> Any:
        return await self.client.request(
            "GET", server, f"{V1}/user/devices/{path_segment(user_id)}", timeout_s=TIMEOUT_S
        )


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
        body: dict[str, Any] = {
            "user_id": user_id,
            "stream_id": int(time.time() * 1000),
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
            "m.device_list_update": self.device_list,
            "m.signing_key_update": self.device_list,
            "m.direct_to_device": self.to_device,
        }

    async def device_list(self, origin: str, content: Any) -> None:
        user_id = content.get("user_id") if isinstance(content, dict) else None
        if isinstance(user_id, str) and server_of(user_id) == origin:
            assert isinstance(content, dict)
            remote = self.remote
            applied = False
            if remote is not None:
                if "master_key" in content or "self_signing_key" in content:
                    remote.forget(user_id)  # cross-signing keys changed: fetch again
                else:
                    applied = remote.apply(content)
            # Local users hear of the change first; then the list is fetched again (a
            # user sharing a room: their list is kept from now on).
            await self.keys.device_list_changed(user_id)
            if remote is not None and not applied:
                await remote.resync(user_id)

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
        local = {
            u: m for u, m in messages.items() if server_of(u) == self.keys.server_name
        }
        # The remote message ID stands for the transaction: a retried EDU is queued once.
        await self.keys.send_to_device(
            sender, "", event_type, f"{origin}:{message_id}", local
        )
