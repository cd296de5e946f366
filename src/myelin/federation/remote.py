"""Room operations that need another server: joining a room this server is not in
(make_join/send_join), resolving a remote alias, inviting a remote user, leaving a room
known only by an invite (make_leave/send_leave).

The client API reaches these through `RemoteRooms`, set as `RoomWriter.remote`; this is
the whole interface between the two (the client API imports nothing else of federation).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from myelin.clientapi.http import MatrixError
from myelin.core.builder import build_event, hash_and_sign_event
from myelin.core.eventids import event_from_pdu
from myelin.core.events import Event
from myelin.core.roomversions import (
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    UnsupportedRoomVersion,
    room_version,
)
from myelin.core.signing import SigningKey
from myelin.federation.client import FederationClient, FederationError, path_segment
from myelin.federation.inbound import BadPdu, Inbound, verify_pdu, verify_pdus
from myelin.federation.rooms import joined_servers, now_ms, server_in_room, server_of
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputError, InputEvent, InputKind, Origin, Status
from myelin.syncapi.reader import OUTSIDE_MEMBERSHIP

log = logging.getLogger("myelin.federation.remote")

BACKFILL_LIMIT = 100
"""Events asked for per `/backfill` (what this server's own `/backfill` answers at most):
a room's whole early history in one request, in the usual case, so that the batch
reaches the create event and needs no `/state_ids` of the server."""
BACKFILL_STARTS = 20
BACKFILL_SERVERS = 5
RETRY_S = 30.0
FRUITLESS_MEMORY = 10_000

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"
INVITE_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.guest_access",
)


def _remote_error(exc: FederationError, what: str) -> MatrixError:
    """The client's error for a refusal by another server: its own status and errcode
    when it gave a Matrix error (a 4xx), else 502 (unreachable) or 500."""
    if 400 <= exc.status < 500 and exc.errcode:
        body = exc.body if isinstance(exc.body, dict) else {}
        extra = {k: v for k, v in body.items() if k not in ("errcode", "error", "status")}
        return MatrixError(exc.status, exc.errcode, str(body.get("error") or what), **extra)
    return MatrixError(502 if exc.status == 0 else 500, "M_UNKNOWN", f"{what}: {exc}")


class RemoteRooms:
    def __init__(
        self,
        server_name: str,
        key: SigningKey,
        rs: Roomserver,
        client: FederationClient,
        inbound: Inbound,
        wait_for_position: Callable[[int], Awaitable[None]],
    ) -> None:
        self.server_name = server_name
        self.key = key
        self.rs = rs
        self.client = client
        self.inbound = inbound
        self.wait_for_position = wait_for_position
        self._invited_via: dict[tuple[str, str], str] = {}
        """(room, local user) -> the server an invite came from (to reject it through)."""
        self._invite_ids: dict[tuple[str, str], str] = {}
        """(room, local user) -> the invite's event ID (to reject it locally)."""
        self._backfilling: dict[str, asyncio.Future[bool]] = {}
        """room -> the backfill under way (callers at the same time share it)."""
        self._fruitless: dict[str, tuple[tuple[str, ...], float]] = {}
        """room -> backward extremities no server could fill, and when that was found."""

    async def backfill(self, room_id: str) -> bool:
        """Fetch the room's history before what this server has, from a server in the
        room (`/messages` calls this when it reaches the start of what is stored):
        True once some was stored and the sync API serves it. Several callers for one
        room share one fetch; extremities that no server could fill are not asked for
        again for a while (a `/messages` on such a room must not wait for it each time)."""
        running = self._backfilling.get(room_id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._backfilling[room_id] = future
        try:
            found = await self._backfill(room_id)
        except BaseException as exc:
            future.set_result(False)
            if isinstance(exc, Exception):
                log.warning("backfill of %s failed", room_id, exc_info=True)
                return False
            raise
        finally:
            del self._backfilling[room_id]
        future.set_result(found)
        return found

    async def _backfill(self, room_id: str) -> bool:
        starts = tuple(await self.rs.backward_extremities(room_id))
        if not starts:
            return False
        tried = self._fruitless.get(room_id)
        if tried is not None and tried[0] == starts and time.monotonic() - tried[1] < RETRY_S:
            return False
        servers = sorted(await joined_servers(self.rs, room_id) - {self.server_name})
        first = server_of(room_id)
        if first in servers:  # where a room of versions 1 to 11 was made
            servers = [first, *[s for s in servers if s != first]]
        for server in servers[:BACKFILL_SERVERS]:
            try:
                last = await self.inbound.backfill(
                    room_id, server, starts[:BACKFILL_STARTS], BACKFILL_LIMIT
                )
            except FederationError as exc:
                log.info("backfill of %s from %s: %s", room_id, server, exc)
                continue
            if last is not None:
                self._fruitless.pop(room_id, None)
                await self.wait_for_position(last)
                return True
        if len(self._fruitless) >= FRUITLESS_MEMORY:
            self._fruitless.clear()
        self._fruitless[room_id] = (starts, time.monotonic())
        return False

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]] | None:
        """The room ID and resident servers of an alias of another server."""
        server = server_of(alias)
        if not server or server == self.server_name:
            return None
        try:
            body = await self.client.request(
                "GET", server, V1 + "/query/directory", query={"room_alias": alias}
            )
        except FederationError as exc:
            if exc.status == 404:
                return None
            raise _remote_error(exc, "Alias lookup failed") from None
        room_id = body.get("room_id") if isinstance(body, dict) else None
        if not isinstance(room_id, str):
            return None
        servers = body.get("servers")
        found = [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []
        return room_id, [server, *[s for s in found if s != server]]

    async def query_profile(self, user_id: str) -> dict[str, str] | None:
        """A user's profile from their server; None if it has none (or is unreachable)."""
        try:
            body = await self.client.request(
                "GET", server_of(user_id), V1 + "/query/profile", query={"user_id": user_id}
            )
        except FederationError as exc:
            log.info("profile of %s: %s", user_id, exc)
            return None
        if not isinstance(body, dict):
            return None
        return {k: v for k, v in body.items() if isinstance(v, str)}

    async def guest_may_join(self, room_id: str, user_id: str) -> bool:
        """For a guest joining a room this server is not in: allowed unless the invite
        they hold shows the room's guest access is not `can_join`."""
        invite_id = self._invite_ids.get((room_id, user_id))
        invite = await self.rs.event(invite_id) if invite_id else None
        if invite is None:
            return True  # nothing known here: the resident server decides
        unsigned = invite.pdu.get("unsigned")
        stripped = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
        for event in stripped if isinstance(stripped, list) else []:
            if isinstance(event, dict) and event.get("type") == "m.room.guest_access":
                content = event.get("content")
                return isinstance(content, dict) and content.get("guest_access") == "can_join"
        return False

    async def public_rooms(
        self, server: str, query: dict[str, str], body: dict[str, Any] | None
    ) -> Any:
        """Another server's public room list (`/publicRooms` over federation)."""
        try:
            if body is None:
                return await self.client.request(
                    "GET", server, V1 + "/publicRooms", query=query or None
                )
            return await self.client.request("POST", server, V1 + "/publicRooms", body=body)
        except FederationError as exc:
            raise _remote_error(exc, f"Room list of {server} unavailable") from None

    async def needs_remote_join(self, room_id: str) -> bool:
        """Whether a join must go through another server: this one is not in the room."""
        if await self.rs.room_version(room_id) is None:
            return True
        return not await server_in_room(self.rs, room_id, self.server_name)

    async def candidate_servers(self, room_id: str, given: Sequence[str]) -> list[str]:
        """Servers to ask, in order: those given, the room ID's own (rooms before v12),
        the senders of invites we hold."""
        out: list[str] = []
        invited = [v for (r, _), v in self._invited_via.items() if r == room_id]
        for s in [*given, server_of(room_id), *invited]:
            if s and s != self.server_name and s not in out:
                out.append(s)
        return out

    async def join(
        self, room_id: str, user_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> str:
        """Join `user_id` to a room through the first server that lets it; returns the
        join's event ID once sync serves it. MatrixError when none does."""
        last: MatrixError = MatrixError(404, "M_NOT_FOUND", f"No server to join {room_id} through")
        for server in servers:
            try:
                return await self._join_via(server, room_id, user_id, content)
            except FederationError as exc:
                log.info("join of %s via %s failed: %s", room_id, server, exc)
                last = _remote_error(exc, f"Join via {server} failed")
            except MatrixError as exc:
                last = exc
        raise last

    async def _make(
        self, server: str, room_id: str, user_id: str, membership: str
    ) -> tuple[Any, dict[str, Any]]:
        query = {"ver": sorted(KNOWN_ROOM_VERSIONS)} if membership == "join" else None
        body = await self.client.request(
            "GET",
            server,
            f"{V1}/make_{membership}/{path_segment(room_id)}/{path_segment(user_id)}",
            query=query,
        )
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise MatrixError(502, "M_UNKNOWN", f"Bad make_{membership} answer from {server}")
        try:
            version = room_version(str(body.get("room_version", "1")))
        except UnsupportedRoomVersion:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", "The room's version is not supported"
            ) from None
        return version, body["event"]

    def _fill(
        self,
        template: dict[str, Any],
        version: Any,
        user_id: str,
        room_id: str,
        membership: str,
        content: dict[str, Any],
    ) -> Event:
        pdu = {
            k: v
            for k, v in template.items()
            if k not in ("signatures", "hashes", "unsigned", "event_id")
        }
        pdu["room_id"] = room_id
        pdu["sender"] = user_id
        pdu["state_key"] = user_id
        pdu["type"] = "m.room.member"
        given = template.get("content")
        base: dict[str, Any] = given if isinstance(given, dict) else {}
        pdu["content"] = {**base, **content, "membership": membership}
        pdu["origin_server_ts"] = now_ms()
        if version.event_format is EventFormat.V1:
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        signed = hash_and_sign_event(pdu, version, self.server_name, self.key)
        return event_from_pdu(signed, version)

    async def _join_via(
        self, server: str, room_id: str, user_id: str, content: dict[str, Any]
    ) -> str:
        version, template = await self._make(server, room_id, user_id, "join")
        event = self._fill(template, version, user_id, room_id, "join", content)
        path = f"/send_join/{path_segment(room_id)}/{path_segment(event.event_id)}"
        try:
            body = await self.client.request("PUT", server, V2 + path, body=dict(event.pdu))
        except FederationError as exc:
            if exc.status not in (400, 404) or exc.errcode not in (None, "M_UNRECOGNIZED"):
                raise
            answer = await self.client.request("PUT", server, V1 + path, body=dict(event.pdu))
            body = answer[1] if isinstance(answer, list) and len(answer) == 2 else answer
        if not isinstance(body, dict):
            raise MatrixError(502, "M_UNKNOWN", f"Bad send_join answer from {server}")
        signed = body.get("event")
        if isinstance(signed, dict):
            try:
                cosigned = await verify_pdu(signed, version, self.inbound.keyring)
                if cosigned.event_id == event.event_id:
                    event = cosigned
            except BadPdu:
                pass
        state = await verify_pdus(body.get("state") or [], version, self.inbound.keyring)
        chain = await verify_pdus(body.get("auth_chain") or [], version, self.inbound.keyring)
        await self.inbound.input_outliers([*chain, *state])
        state_map = {e.state_tuple: e.event_id for e in state if e.is_state}
        result = await self.inbound.input_new(event, server, state=state_map)
        if isinstance(result, InputError):
            raise MatrixError(500, "M_UNKNOWN", f"Could not store the join: {result}")
        if result.status is not Status.ACCEPTED:
            raise MatrixError(403, "M_FORBIDDEN", result.reason or "Join not allowed")
        await self.wait_for_position(result.log_offset)
        return event.event_id

    async def leave(
        self, room_id: str, user_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> None:
        """Leave (or reject an invite to) a room this server is not in. When no server
        takes the rejection, the invite is rejected here only (as other servers do): a
        leave signed by this server is kept locally, so the invite goes away."""
        try:
            await self._leave_remotely(room_id, user_id, servers, content)
        except MatrixError:
            if not await self._reject_locally(room_id, user_id, content):
                raise

    async def _reject_locally(self, room_id: str, user_id: str, content: dict[str, Any]) -> bool:
        invite_id = self._invite_ids.pop((room_id, user_id), None)
        invite = await self.rs.event(invite_id) if invite_id else None
        if invite is None:
            return False
        version = invite.room_version
        ref: Any = invite.event_id
        if version.event_format is EventFormat.V1:
            ref = invite
        event = build_event(
            version,
            room_id=room_id,
            sender=user_id,
            type="m.room.member",
            content={**content, "membership": "leave"},
            state_key=user_id,
            prev_events=[ref],
            auth_events=[ref],
            depth=invite.depth + 1,
            origin_server_ts=now_ms(),
            server_name=self.server_name,
            signing_key=self.key,
        )
        await self._store_membership(event)
        return True

    async def _leave_remotely(
        self, room_id: str, user_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> None:
        last: MatrixError = MatrixError(404, "M_NOT_FOUND", f"No server to leave {room_id} via")
        for server in servers:
            try:
                version, template = await self._make(server, room_id, user_id, "leave")
                event = self._fill(template, version, user_id, room_id, "leave", content)
                path = f"/send_leave/{path_segment(room_id)}/{path_segment(event.event_id)}"
                await self.client.request("PUT", server, V2 + path, body=dict(event.pdu))
                self._invited_via.pop((room_id, user_id), None)
                await self._store_membership(event)
                return
            except FederationError as exc:
                last = _remote_error(exc, f"Leave via {server} failed")
            except MatrixError as exc:
                last = exc
        raise last

    async def invite(self, event: Event, invite_room_state: list[Any]) -> Event:
        """Send a local invite of a remote user to their server; the event with their
        signature added (M_FORBIDDEN if they refuse)."""
        target = server_of(event.state_key or "")
        path = f"/invite/{path_segment(event.room_id)}/{path_segment(event.event_id)}"
        try:
            body = await self.client.request(
                "PUT",
                target,
                V2 + path,
                body={
                    "room_version": event.room_version.identifier,
                    "event": dict(event.pdu),
                    "invite_room_state": invite_room_state,
                },
            )
        except FederationError as exc:
            if exc.status not in (400, 404) or exc.errcode not in (None, "M_UNRECOGNIZED"):
                raise _remote_error(exc, f"Invite to {target} failed") from None
            try:  # a server without the v2 API
                pdu = {**event.pdu, "unsigned": {"invite_room_state": invite_room_state}}
                answer = await self.client.request("PUT", target, V1 + path, body=pdu)
            except FederationError as exc1:
                raise _remote_error(exc1, f"Invite to {target} failed") from None
            body = answer[1] if isinstance(answer, list) and len(answer) == 2 else answer
        signed = body.get("event") if isinstance(body, dict) else None
        if not isinstance(signed, dict):
            raise MatrixError(502, "M_UNKNOWN", f"Bad invite answer from {target}")
        try:
            checked = await verify_pdu(signed, event.room_version, self.inbound.keyring)
        except BadPdu as exc:
            code = (502, "M_UNKNOWN") if exc.forbidden else (400, "M_BAD_JSON")
            raise MatrixError(*code, f"Bad invite answer from {target}: {exc}") from None
        if checked.event_id != event.event_id:
            raise MatrixError(502, "M_UNKNOWN", f"{target} changed the invite")
        return Event(event.event_id, event.room_version, signed)

    async def countersign_invites(self, events: list[Event]) -> list[Event]:
        """The events of a new room with each invite of a remote user signed by that
        user's server (with the room's stripped state as it stands before the invite).
        MatrixError if a server refuses."""
        out: list[Event] = []
        state: dict[tuple[str, str], Event] = {}
        for event in events:
            if (
                event.membership == "invite"
                and server_of(event.state_key or "") != self.server_name
            ):
                keys = [(t, "") for t in INVITE_STATE_TYPES] + [("m.room.member", event.sender)]
                stripped = [
                    {k: e.pdu[k] for k in ("type", "state_key", "content", "sender") if k in e.pdu}
                    for key in keys
                    if (e := state.get(key)) is not None
                ]
                event = await self.invite(event, stripped)
            if event.is_state:
                state[event.state_tuple] = event
            out.append(event)
        return out

    async def invite_signer(
        self, room_id: str, target: str
    ) -> Callable[[Event], Awaitable[Event]] | None:
        """For an invite of a user of another server: the step that has their server
        sign it (with the room's stripped state). None for a local user."""
        if server_of(target) == self.server_name:
            return None

        async def countersign(event: Event) -> Event:
            keys = [(t, "") for t in INVITE_STATE_TYPES] + [("m.room.member", event.sender)]
            state = await self.rs.current_state_events(room_id, keys)
            stripped = [
                {k: e.pdu[k] for k in ("type", "state_key", "content", "sender") if k in e.pdu}
                for e in state.values()
            ]
            return await self.invite(event, stripped)

        return countersign

    async def receive_invite(self, event: Event, stripped: list[Any]) -> None:
        """Keep an invite of a local user to a room this server is not in, with the
        inviter's stripped state, so that sync shows it (a room this server is in gets
        the invite as a PDU like any other event)."""
        if not await self.needs_remote_join(event.room_id):
            return
        self._invited_via[(event.room_id, event.state_key or "")] = server_of(event.sender)
        self._invite_ids[(event.room_id, event.state_key or "")] = event.event_id
        pdu = dict(event.pdu)
        pdu["unsigned"] = {"invite_room_state": stripped}
        await self._store_membership(Event(event.event_id, event.room_version, pdu))

    async def _store_membership(self, event: Event) -> None:
        if event.membership != "invite":
            pdu = {**event.pdu, "unsigned": {OUTSIDE_MEMBERSHIP: True}}
            event = Event(event.event_id, event.room_version, pdu)
        [result] = await self.rs.input([InputEvent(event, InputKind.OUTLIER, Origin.FEDERATED)])
        if isinstance(result, InputError):
            log.info("membership %s not stored: %s", event.event_id, result)
            return
        await self.wait_for_position(result.log_offset)
