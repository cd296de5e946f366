"""The Server-Server API routes this server answers (the federation receiver).

Every route but the key endpoints is authenticated with `X-Matrix` (`auth.py`). Events
received go through the checks on receipt (`inbound.py`) into the roomserver, like a
client's events go through the client API: the receiver is a writer, never touching a
projection itself. EDUs of `/send` are handed to the components that own them through
`EduHandlers` (plain callables, so this package imports none of their internals).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from myelin import __version__
from myelin.clientapi.http import MatrixError, Request, Response, json_response
from myelin.clientapi.router import Router
from myelin.core.builder import sign_event
from myelin.core.events import Event, StateKey
from myelin.core.federation import server_acl_allows
from myelin.core.redaction import redact
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, UnsupportedRoomVersion, room_version
from myelin.core.signing import SigningKey
from myelin.federation.auth import FederationAuth
from myelin.federation.inbound import BadPdu, Inbound, verify_pdu
from myelin.federation.keyring import Keyring
from myelin.federation.rooms import (
    TemplateError,
    joined_servers,
    membership_template,
    now_ms,
    server_of,
    walk_back,
)
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputError, Status, UnknownEventError, UnknownRoomError
from myelin.syncapi.visibility import HISTORY_TYPE, MEMBER_TYPE, normalise, server_may_see

log = logging.getLogger("myelin.federation.receiver")

PREFIX = "/_matrix/federation"
MAX_PDUS = 50
MAX_EDUS = 100
TXN_MEMORY = 10_000
MAX_BACKFILL = 100

EduHandler = Callable[[str, Any], Awaitable[None]]
"""`(origin, content)` of one EDU of a type."""
Query = Callable[[str, Request], Awaitable[Any]]
"""`(origin, request)` -> the JSON answer of a query endpoint."""


@dataclass
class ReceiverHooks:
    """What other components plug in: EDU handlers by type, queries by path, the
    directory and profile look-ups, invites for local users."""

    edus: dict[str, EduHandler] = field(default_factory=dict)
    resolve_alias: Callable[[str], Awaitable[str | None]] | None = None
    profile: Callable[[str], Awaitable[dict[str, str] | None]] | None = None
    """A local user's profile, None if no such user."""
    user_keys_query: Query | None = None
    user_keys_claim: Query | None = None
    user_devices: Query | None = None
    public_rooms: Callable[[int | None, str | None, str | None], Awaitable[Any]] | None = None
    """`(limit, since, search term)` -> this server's public room list."""
    on_invite: Callable[[Event, list[Any]], Awaitable[None]] | None = None
    """A local user was invited to a remote room (the signed invite, stripped state)."""
    third_party_onbind: Callable[[Any], Awaitable[None]] | None = None
    """An identity server's `/3pid/onbind` body (pending third-party invites)."""
    exchange_third_party_invite: Callable[[str, Any, str], Awaitable[None]] | None = None
    """`(room ID, partial invite event, origin)` of `exchange_third_party_invite`."""
    on_accepted: Callable[[Event], Awaitable[None]] | None = None
    """A PDU pushed by another server was accepted: what it makes this server do (this
    server's guests leave a room whose guest access was revoked)."""
    erased_senders: Callable[[set[str]], Awaitable[frozenset[str]]] | None = None
    """Which of these users erased their account (deactivation with `erase`)."""


def _error(status: int, errcode: str, error: str, **extra: Any) -> MatrixError:
    return MatrixError(status, errcode, error, **extra)


#: How many membership events (of all the server's users) are followed back to find
#: their past joins, for a server none of whose users is joined now.
MEMBERSHIP_WALK = 200


class ServerView:
    """What one server may see of one room's history: an event is visible to a server
    when any of its users may see it (client-server-api "Room History Visibility",
    applied per user with `syncapi.visibility.server_may_see`), judged by the state
    before the event, as the roomserver computed it. Built per request: it caches the
    server's membership changes, read only when a `shared` event needs them."""

    def __init__(self, rs: Roomserver, room_id: str, server: str) -> None:
        self.rs = rs
        self.room_id = room_id
        self.server = server
        self._current: dict[StateKey, str] | None = None
        self._joins: dict[str, list[int]] | None = None
        self._joined: bool | None = None

    async def _current_state(self) -> dict[StateKey, str]:
        if self._current is None:
            try:
                self._current = await self.rs.current_state(self.room_id)
            except UnknownRoomError:
                self._current = {}
        return self._current

    def _ours(self, state: Mapping[StateKey, str]) -> dict[str, str]:
        """The server's users with a membership in `state`: user -> member event ID."""
        return {
            k: e for (t, k), e in state.items() if t == MEMBER_TYPE and server_of(k) == self.server
        }

    async def _joined_now(self) -> bool:
        """Whether one of the server's users is joined to the room now."""
        if self._joined is None:
            ours = list(self._ours(await self._current_state()).values())
            events = await self.rs.events(ours)
            self._joined = any(e.membership == "join" for e in events.values())
        return self._joined

    async def _join_depths(self) -> dict[str, list[int]]:
        """For each of the server's users, the depths of their joins: their membership
        events followed back from current state, each through the state before it."""
        if self._joins is not None:
            return self._joins
        joins: dict[str, list[int]] = {}
        steps = 0
        for user, event_id in self._ours(await self._current_state()).items():
            depths = joins.setdefault(user, [])
            seen: set[str] = set()
            next_id: str | None = event_id
            while next_id is not None and next_id not in seen and steps < MEMBERSHIP_WALK:
                steps += 1
                seen.add(next_id)
                event = await self.rs.event(next_id)
                if event is None:
                    break
                if event.membership == "join":
                    depths.append(event.depth)
                try:
                    next_id = (await self.rs.state_before(next_id)).get((MEMBER_TYPE, user))
                except UnknownEventError:
                    break
        self._joins = joins
        return joins

    async def hidden(self, events: Sequence[Event]) -> set[str]:
        """The IDs of those of `events` (of this room) the server may not see. An event
        without state here (an outlier) is judged by the room's current state."""
        befores: list[dict[StateKey, str]] = []
        for event in events:
            try:
                befores.append(await self.rs.state_before(event.event_id))
            except UnknownEventError:
                befores.append(await self._current_state())
        wanted = {
            e
            for state in befores
            for e in [state.get((HISTORY_TYPE, "")), *self._ours(state).values()]
            if e is not None
        }
        found = await self.rs.events(sorted(wanted))
        hidden: set[str] = set()
        for event, state in zip(events, befores, strict=True):
            setting_event = found.get(state.get((HISTORY_TYPE, "")) or "")
            setting = normalise(
                setting_event.content.get("history_visibility") if setting_event else None
            )
            memberships = {
                user: found[e].membership for user, e in self._ours(state).items() if e in found
            }
            setting_after = None
            if event.type == HISTORY_TYPE and event.state_key == "":
                setting_after = normalise(event.content.get("history_visibility"))
            own_change = None
            if event.type == MEMBER_TYPE and server_of(event.state_key or "") == self.server:
                own_change = (event.state_key or "", event.membership)
            visible = server_may_see(
                setting,
                memberships,
                (),
                setting_after=setting_after,
                own_change=own_change,
            )
            if not visible and "shared" in (setting, setting_after):
                # A user of the server joined after the event: one joined now did (or
                # was joined at it already); else their past joins are looked up.
                if await self._joined_now():
                    continue
                joins = await self._join_depths()
                later = {u for u, depths in joins.items() if any(d > event.depth for d in depths)}
                visible = server_may_see(
                    setting,
                    memberships,
                    later,
                    setting_after=setting_after,
                    own_change=own_change,
                )
            if not visible:
                hidden.add(event.event_id)
        return hidden


class Receiver:
    def __init__(
        self,
        server_name: str,
        key: SigningKey,
        rs: Roomserver,
        keyring: Keyring,
        inbound: Inbound,
        hooks: ReceiverHooks,
    ) -> None:
        self.server_name = server_name
        self.key = key
        self.rs = rs
        self.keyring = keyring
        self.inbound = inbound
        self.hooks = hooks
        self.auth = FederationAuth(server_name, keyring)
        self._txns: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    # ---------------------------------------------------------------- helpers

    async def _version_of(self, room_id: str) -> Any:
        version = await self.rs.room_version(room_id)
        if version is None:
            raise _error(404, "M_NOT_FOUND", f"Unknown room {room_id[:100]}")
        return room_version(version)

    async def _acl_allows(self, room_id: str, origin: str) -> bool:
        try:
            acl = await self.rs.current_state_events(room_id, [("m.room.server_acl", "")])
        except UnknownRoomError:
            return True  # not a room of this server: nothing to go by
        found = acl.get(("m.room.server_acl", ""))
        return server_acl_allows(found.content if found else None, origin)

    async def _check_acl(self, req: Request, origin: str) -> None:
        """403 for a server the room's `m.room.server_acl` bans (any room endpoint)."""
        room_id = req.params.get("room_id")
        if room_id and not await self._acl_allows(room_id, origin):
            raise _error(403, "M_FORBIDDEN", "Server is banned from this room")

    async def _require_in_room(self, room_id: str, origin: str) -> None:
        state = await self.rs.current_state(room_id)
        members = [e for (t, k), e in state.items() if t == "m.room.member"]
        for event in (await self.rs.events(members)).values():
            if server_of(event.state_key or "") == origin:
                return
        raise _error(403, "M_FORBIDDEN", f"{origin[:100]} is not in room {room_id[:100]}")

    @staticmethod
    def _pdus(events: list[Event]) -> list[dict[str, Any]]:
        return [dict(e.pdu) for e in events]

    async def _served_pdus(self, events: list[Event], origin: str) -> list[dict[str, Any]]:
        """The PDUs of room history served to another server (`/event`, `/backfill`,
        `/get_missing_events`). Those `origin` may not see (no user of it may, by the
        room's history visibility) go out redacted, not omitted: the server still gets
        the room's DAG and auth (prev and auth events, the keys auth needs), never the
        content. So do those of users who erased their account, as they are served to
        clients who were not in the room. Still valid PDUs: signatures and event IDs
        cover the redacted form."""
        erased: frozenset[str] = frozenset()
        if events and self.hooks.erased_senders is not None:
            erased = await self.hooks.erased_senders({e.sender for e in events})
        hidden: set[str] = set()
        for room_id in {e.room_id for e in events}:
            view = ServerView(self.rs, room_id, origin)
            hidden |= await view.hidden([e for e in events if e.room_id == room_id])
        return [
            redact(e.pdu, e.room_version)
            if e.sender in erased or e.event_id in hidden
            else dict(e.pdu)
            for e in events
        ]

    # ---------------------------------------------------------------- routes

    async def version(self, req: Request) -> Response:
        return json_response({"server": {"name": "Myelin", "version": __version__}})

    async def send(self, req: Request, origin: str) -> Response:
        txn_id = req.params["txn_id"]
        body = req.json()
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise _error(400, "M_BAD_JSON", "pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise _error(400, "M_BAD_JSON", "Too many PDUs or EDUs in one transaction")
        done = self._txns.get((origin, txn_id))
        if done is not None:
            return json_response(done)
        results: dict[str, Any] = {}
        for pdu in pdus:
            event_id, error = await self._receive_pdu(pdu, origin)
            if event_id is not None:
                results[event_id] = {} if error is None else {"error": error}
        for edu in edus:
            if not isinstance(edu, dict):
                continue
            handler = self.hooks.edus.get(str(edu.get("edu_type")))
            if handler is None:
                continue
            try:
                await handler(origin, edu.get("content"))
            except Exception:  # one bad EDU must not fail the transaction
                log.exception("EDU %s from %s failed", edu.get("edu_type"), origin)
        answer = {"pdus": results}
        self._txns[(origin, txn_id)] = answer
        while len(self._txns) > TXN_MEMORY:
            self._txns.popitem(last=False)
        return json_response(answer)

    async def _receive_pdu(self, pdu: Any, origin: str) -> tuple[str | None, str | None]:
        if not isinstance(pdu, dict) or not isinstance(pdu.get("room_id"), str):
            return None, None
        version_id = await self.rs.room_version(pdu["room_id"])
        if version_id is None:
            return None, None  # a room this server is not in: dropped
        try:
            event = await verify_pdu(pdu, room_version(version_id), self.keyring)
        except BadPdu as exc:
            log.info("dropping PDU from %s: %s", origin, exc)
            return None, str(exc)
        if not await self._acl_allows(event.room_id, origin):
            return event.event_id, "Server is banned from this room"
        try:
            result = await self.inbound.input_new(event, origin)
        except Exception as exc:
            log.exception("input of %s failed", event.event_id)
            return event.event_id, str(exc)
        if isinstance(result, InputError):
            return event.event_id, str(result)
        if result.status is Status.ACCEPTED and self.hooks.on_accepted is not None:
            try:
                await self.hooks.on_accepted(event)
            except Exception:  # the event is in: what follows from it must not fail it
                log.exception("handling accepted %s failed", event.event_id)
        # A rejected or soft-failed event was processed all the same: no error (the
        # sender learns nothing from it, and must not retry it).
        return event.event_id, None

    async def make_membership(self, req: Request, origin: str, membership: str) -> Response:
        room_id = req.params["room_id"]
        user_id = req.params["user_id"]
        if server_of(user_id) != origin:
            raise _error(403, "M_FORBIDDEN", "The user does not belong to the requesting server")
        version = await self._version_of(room_id)
        if membership in ("join", "knock"):
            supported = req.query.get("ver", ["1"])
            if version.identifier not in supported:
                raise _error(
                    400,
                    "M_INCOMPATIBLE_ROOM_VERSION",
                    f"Room version {version.identifier} is not supported by {origin[:100]}",
                    room_version=version.identifier,
                )
        if self.server_name not in await joined_servers(self.rs, room_id):
            raise _error(404, "M_NOT_FOUND", "This server is not in the room")
        try:
            version, template = await membership_template(
                self.rs, room_id, user_id, membership, self.server_name
            )
        except TemplateError as exc:
            raise _error(exc.status, exc.errcode, exc.error) from None
        # The template is the joining server's to fill in: no origin of ours, it signs.
        template["origin"] = origin
        return json_response({"room_version": version.identifier, "event": template})

    async def _receive_membership(
        self, req: Request, origin: str, membership: str
    ) -> tuple[Event, Any]:
        room_id = req.params["room_id"]
        event_id = req.params["event_id"]
        version = await self._version_of(room_id)
        try:
            event = await verify_pdu(req.json(), version, self.keyring)
        except BadPdu as exc:
            if exc.forbidden:
                raise _error(403, "M_FORBIDDEN", str(exc)) from None
            raise _error(400, "M_BAD_JSON", str(exc)) from None
        if event.event_id != event_id or event.room_id != room_id:
            raise _error(400, "M_INVALID_PARAM", "The event does not match the path")
        if event.type != "m.room.member" or event.membership != membership:
            raise _error(400, "M_INVALID_PARAM", f"Not a {membership} event")
        if event.state_key != event.sender or server_of(event.sender) != origin:
            raise _error(403, "M_FORBIDDEN", f"Not a {membership} of a user of {origin[:100]}")
        result = await self.inbound.input_new(event, origin, fetch_missing=False)
        if isinstance(result, InputError):
            raise _error(400, "M_INVALID_PARAM", str(result))
        if result.status is not Status.ACCEPTED:
            raise _error(403, "M_FORBIDDEN", result.reason or "Not allowed")
        return event, version

    async def send_join(self, req: Request, origin: str, v1: bool = False) -> Response:
        event, _ = await self._receive_membership(req, origin, "join")
        state_ids = await self.rs.state_before(event.event_id)
        state = await self.rs.events(list(state_ids.values()))
        chain = await self.rs.auth_chain([*state, event.event_id])
        servers = await joined_servers(self.rs, event.room_id)
        body = {
            "origin": self.server_name,
            "state": self._pdus(sorted(state.values(), key=lambda e: (e.depth, e.event_id))),
            "auth_chain": self._pdus(chain),
            "event": dict(event.pdu),
            "members_omitted": False,
            "servers_in_room": sorted(servers),
        }
        return json_response([200, body] if v1 else body)

    async def send_leave(self, req: Request, origin: str, v1: bool = False) -> Response:
        await self._receive_membership(req, origin, "leave")
        return json_response([200, {}] if v1 else {})

    async def invite(self, req: Request, origin: str) -> Response:
        body = req.json()
        version_id = body.get("room_version")
        try:
            version = room_version(str(version_id))
        except UnsupportedRoomVersion:
            raise _error(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Room version {str(version_id)[:20]} is not supported",
                room_version=str(version_id)[:20],
            ) from None
        try:
            event = await verify_pdu(body.get("event"), version, self.keyring)
        except BadPdu as exc:
            if exc.forbidden:
                raise _error(403, "M_FORBIDDEN", str(exc)) from None
            raise _error(400, "M_BAD_JSON", str(exc)) from None
        if (
            event.event_id != req.params["event_id"]
            or event.room_id != req.params["room_id"]
            or event.type != "m.room.member"
            or event.membership != "invite"
            or server_of(event.state_key or "") != self.server_name
            or server_of(event.sender) != origin
        ):
            raise _error(400, "M_INVALID_PARAM", "Not an invite of a local user from this origin")
        signed = sign_event(event.pdu, version, self.server_name, self.key)
        stripped = body.get("invite_room_state")
        if self.hooks.on_invite is not None:
            await self.hooks.on_invite(
                Event(event.event_id, version, signed),
                stripped if isinstance(stripped, list) else [],
            )
        return json_response({"event": signed})

    async def invite_v1(self, req: Request, origin: str) -> Response:
        pdu = req.json()
        version_id = await self.rs.room_version(req.params["room_id"]) or "1"
        req.body = orjson.dumps({"room_version": version_id, "event": pdu, "invite_room_state": []})
        resp = await self.invite(req, origin)
        return json_response([200, orjson.loads(resp.body)])

    async def event(self, req: Request, origin: str) -> Response:
        event = await self.rs.event(req.params["event_id"])
        if event is None:
            raise _error(404, "M_NOT_FOUND", "Unknown event")
        if not await self._acl_allows(event.room_id, origin):
            raise _error(403, "M_FORBIDDEN", "Server is banned from this room")
        await self._require_in_room(event.room_id, origin)
        pdus = await self._served_pdus([event], origin)
        return json_response(
            {"origin": self.server_name, "origin_server_ts": now_ms(), "pdus": pdus}
        )

    async def _state_at(self, req: Request, origin: str) -> tuple[list[Event], list[Event]]:
        room_id = req.params["room_id"]
        event_id = req.query_param("event_id")
        if not event_id:
            raise _error(400, "M_MISSING_PARAM", "event_id is required")
        await self._version_of(room_id)
        await self._require_in_room(room_id, origin)
        event = await self.rs.event(event_id)
        status = await self.rs.event_status(event_id)
        if event is None or event.room_id != room_id or status is None:
            raise _error(404, "M_NOT_FOUND", "Unknown event")
        if status[0] is Status.OUTLIER:
            raise _error(404, "M_NOT_FOUND", "No state is known at that event")
        # The state at an event is the server's to have if the event is: what a user
        # who may see an event is shown of the room there (history visibility).
        if await ServerView(self.rs, room_id, origin).hidden([event]):
            raise _error(403, "M_FORBIDDEN", f"{origin[:100]} may not see that event")
        try:
            state_ids = await self.rs.state_before(event_id)
            state = await self.rs.events(list(state_ids.values()))
            chain = await self.rs.auth_chain(list(state))
        except UnknownEventError:
            raise _error(404, "M_NOT_FOUND", "No state known at that event") from None
        return list(state.values()), chain

    async def state(self, req: Request, origin: str) -> Response:
        state, chain = await self._state_at(req, origin)
        return json_response({"pdus": self._pdus(state), "auth_chain": self._pdus(chain)})

    async def state_ids(self, req: Request, origin: str) -> Response:
        state, chain = await self._state_at(req, origin)
        return json_response(
            {
                "pdu_ids": [e.event_id for e in state],
                "auth_chain_ids": [e.event_id for e in chain],
            }
        )

    async def event_auth(self, req: Request, origin: str) -> Response:
        room_id = req.params["room_id"]
        await self._require_in_room(room_id, origin)
        event = await self.rs.event(req.params["event_id"])
        if event is None or event.room_id != room_id:
            raise _error(404, "M_NOT_FOUND", "Unknown event")
        chain = await self.rs.auth_chain([event.event_id])
        return json_response({"auth_chain": self._pdus(chain)})

    async def backfill(self, req: Request, origin: str) -> Response:
        room_id = req.params["room_id"]
        await self._version_of(room_id)
        await self._require_in_room(room_id, origin)
        starts = req.query.get("v", [])
        try:
            limit = min(int(req.query_param("limit") or "10"), MAX_BACKFILL)
        except ValueError:
            raise _error(400, "M_INVALID_PARAM", "limit must be an integer") from None
        events = await walk_back(self.rs, starts, set(), max(limit, 0))
        events = [e for e in events if e.room_id == room_id]
        return json_response(
            {
                "origin": self.server_name,
                "origin_server_ts": now_ms(),
                "pdus": await self._served_pdus(events, origin),
            }
        )

    async def get_missing_events(self, req: Request, origin: str) -> Response:
        room_id = req.params["room_id"]
        await self._version_of(room_id)
        await self._require_in_room(room_id, origin)
        body = req.json()
        earliest = body.get("earliest_events") or []
        latest = body.get("latest_events") or []
        limit = body.get("limit", 10)
        min_depth = body.get("min_depth", 0)
        if not (
            isinstance(earliest, list)
            and isinstance(latest, list)
            and isinstance(limit, int)
            and isinstance(min_depth, int)
        ):
            raise _error(400, "M_BAD_JSON", "Malformed get_missing_events request")
        events = await walk_back(
            self.rs,
            [e for e in latest if isinstance(e, str)],
            {e for e in earliest if isinstance(e, str)},
            min(max(limit, 0), 100) + len(latest),
            min_depth,
            include_starts=False,
        )
        events = [e for e in events if e.room_id == room_id and e.event_id not in latest]
        events.sort(key=lambda e: (e.depth, e.event_id))
        return json_response({"events": await self._served_pdus(events[: max(limit, 0)], origin)})

    async def exchange_third_party_invite(self, req: Request, origin: str) -> Response:
        """Authorise and send the invite of a third-party invite of this server's user
        (server-server-api "Third-party invites")."""
        if self.hooks.exchange_third_party_invite is None:
            raise _error(404, "M_UNRECOGNIZED", "Third-party invites are not supported")
        body = req.json(canonical=True)
        await self.hooks.exchange_third_party_invite(req.params["room_id"], body, origin)
        return json_response({})

    async def third_party_onbind(self, req: Request) -> Response:
        """`/3pid/onbind`: an identity server reports a binding and its pending invites.
        Unauthenticated, like the reference servers: each invite carries the identity
        server's signature, which is checked against the room's keys before use."""
        if self.hooks.third_party_onbind is None:
            raise _error(404, "M_UNRECOGNIZED", "Third-party invites are not supported")
        await self.hooks.third_party_onbind(req.json(canonical=True))
        return json_response({})

    async def query_directory(self, req: Request, origin: str) -> Response:
        alias = req.query_param("room_alias")
        if not alias:
            raise _error(400, "M_MISSING_PARAM", "room_alias is required")
        room_id = None
        if self.hooks.resolve_alias is not None:
            room_id = await self.hooks.resolve_alias(alias)
        if room_id is None:
            raise _error(404, "M_NOT_FOUND", f"Room alias {alias[:100]} not found")
        servers = await joined_servers(self.rs, room_id)
        servers.discard(self.server_name)
        return json_response({"room_id": room_id, "servers": [self.server_name, *sorted(servers)]})

    async def query_profile(self, req: Request, origin: str) -> Response:
        user_id = req.query_param("user_id")
        if not user_id:
            raise _error(400, "M_MISSING_PARAM", "user_id is required")
        if server_of(user_id) != self.server_name:
            raise _error(400, "M_INVALID_PARAM", "Not a user of this server")
        profile = await self.hooks.profile(user_id) if self.hooks.profile else None
        if profile is None:
            raise _error(404, "M_NOT_FOUND", "Profile not found")
        wanted = req.query_param("field")
        if wanted is not None:
            if wanted not in profile:
                raise _error(404, "M_NOT_FOUND", f"No {wanted[:50]} in this profile")
            return json_response({wanted: profile[wanted]})
        return json_response(profile)

    async def public_rooms(self, req: Request, origin: str) -> Response:
        if self.hooks.public_rooms is None:
            raise _error(404, "M_UNRECOGNIZED", "Not supported by this server")
        if req.method == "POST":
            body = req.json_or_empty()
            limit, since = body.get("limit"), body.get("since")
            flt = body.get("filter")
            term = flt.get("generic_search_term") if isinstance(flt, dict) else None
        else:
            raw = req.query_param("limit")
            limit = int(raw) if raw and raw.isdigit() else None
            since, term = req.query_param("since"), None
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise _error(400, "M_BAD_JSON", "'limit' must be an integer")
        return json_response(
            await self.hooks.public_rooms(
                limit,
                since if isinstance(since, str) else None,
                term if isinstance(term, str) else None,
            )
        )

    def _query(self, name: str) -> Callable[[Request, str], Awaitable[Response]]:
        async def handler(req: Request, origin: str) -> Response:
            query: Query | None = getattr(self.hooks, name)
            if query is None:
                raise _error(404, "M_UNRECOGNIZED", "Not supported by this server")
            return json_response(await query(origin, req))

        return handler

    async def key_query_get(self, req: Request) -> Response:
        server = req.params["server_name"]
        key_id = req.params.get("key_id")
        raw = req.query_param("minimum_valid_until_ts")
        minimum = int(raw) if raw and raw.isdigit() else None
        found = await self.keyring.notary_responses(server, [key_id] if key_id else (), minimum)
        return json_response({"server_keys": found})

    async def key_query_post(self, req: Request) -> Response:
        body = req.json()
        wanted = body.get("server_keys")
        if not isinstance(wanted, dict):
            raise _error(400, "M_BAD_JSON", "server_keys must be an object")
        out = []
        for server, criteria in wanted.items():
            if not isinstance(criteria, dict):
                raise _error(400, "M_BAD_JSON", "the criteria of a server must be an object")
            minimum: int | None = None
            for value in criteria.values():
                ts = value.get("minimum_valid_until_ts") if isinstance(value, dict) else None
                if isinstance(ts, int) and not isinstance(ts, bool):
                    minimum = ts if minimum is None else max(minimum, ts)
            out.extend(await self.keyring.notary_responses(str(server), list(criteria), minimum))
        return json_response({"server_keys": out})

    # ---------------------------------------------------------------- wiring

    def install(self, router: Router) -> None:
        def w(handler: Callable[[Request, str], Awaitable[Response]]) -> Any:
            async def checked(req: Request, origin: str) -> Response:
                await self._check_acl(req, origin)
                return await handler(req, origin)

            return self.auth.wrap(checked)

        v1, v2 = PREFIX + "/v1", PREFIX + "/v2"

        def put(fn: Callable[..., Awaitable[Response]], **kw: Any) -> Any:
            async def handler(req: Request, origin: str) -> Response:
                return await fn(req, origin, **kw)

            return w(handler)

        router.add("GET", v1 + "/version", self.version)
        router.add("PUT", v1 + "/send/{txn_id}", w(self.send))
        router.add(
            "GET",
            v1 + "/make_join/{room_id}/{user_id}",
            put(self.make_membership, membership="join"),
        )
        router.add(
            "GET",
            v1 + "/make_leave/{room_id}/{user_id}",
            put(self.make_membership, membership="leave"),
        )
        router.add("PUT", v2 + "/send_join/{room_id}/{event_id}", w(self.send_join))
        router.add("PUT", v1 + "/send_join/{room_id}/{event_id}", put(self.send_join, v1=True))
        router.add("PUT", v2 + "/send_leave/{room_id}/{event_id}", w(self.send_leave))
        router.add("PUT", v1 + "/send_leave/{room_id}/{event_id}", put(self.send_leave, v1=True))
        router.add("PUT", v2 + "/invite/{room_id}/{event_id}", w(self.invite))
        router.add("PUT", v1 + "/invite/{room_id}/{event_id}", w(self.invite_v1))
        router.add("GET", v1 + "/event/{event_id}", w(self.event))
        router.add("GET", v1 + "/state/{room_id}", w(self.state))
        router.add("GET", v1 + "/state_ids/{room_id}", w(self.state_ids))
        router.add("GET", v1 + "/event_auth/{room_id}/{event_id}", w(self.event_auth))
        router.add("GET", v1 + "/backfill/{room_id}", w(self.backfill))
        router.add("POST", v1 + "/get_missing_events/{room_id}", w(self.get_missing_events))
        router.add(["GET", "POST"], v1 + "/publicRooms", w(self.public_rooms))
        router.add("GET", v1 + "/query/directory", w(self.query_directory))
        router.add(
            "PUT",
            v1 + "/exchange_third_party_invite/{room_id}",
            w(self.exchange_third_party_invite),
        )
        # The spec says PUT; identity servers (and Sytest's) POST.
        router.add(["PUT", "POST"], v1 + "/3pid/onbind", self.third_party_onbind)
        router.add("GET", v1 + "/query/profile", w(self.query_profile))
        router.add("POST", v1 + "/user/keys/query", w(self._query("user_keys_query")))
        router.add("POST", v1 + "/user/keys/claim", w(self._query("user_keys_claim")))
        router.add("GET", v1 + "/user/devices/{user_id}", w(self._query("user_devices")))
        router.add(
            "GET",
            ["/_matrix/key/v2/query/{server_name}", "/_matrix/key/v2/query/{server_name}/{key_id}"],
            self.key_query_get,
        )
        router.add("POST", "/_matrix/key/v2/query", self.key_query_post)


def supported_versions() -> list[str]:
    return sorted(KNOWN_ROOM_VERSIONS)
