"""Room endpoints of the Client-Server API: create, membership, send, state, redact,
room reads, `/sync`, `/messages`, `/context`, and the local directory.

Writes go through `RoomWriter` (build, sign, submit to the roomserver, answer after the
log append); reads come from the sync API's projections of the log, so what a client
reads here is what `/sync` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from myelin.clientapi import createroom, guests
from myelin.clientapi.context import ClientContext
from myelin.clientapi.directory import (
    Directory,
    check_room_id,
    may_manage_aliases,
    without_alias,
)
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    bad_json,
    forbidden,
    invalid_param,
    json_response,
    not_found,
    opt_bool,
    opt_str,
    req_str,
)
from myelin.clientapi.room_events import RoomWriter
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.clientapi.thirdpartyinvite import ThirdPartyInvites, check_invite_3pid
from myelin.core.auth import get_named_level, get_power_level, is_valid_user_id
from myelin.core.identifiers import is_valid_room_alias
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import ClientTxn, Status
from myelin.syncapi import queries as sync_queries
from myelin.syncapi.filters import MAX_LIMIT, EventFilter, SyncFilter, parse_json_filter
from myelin.syncapi.sync import Requester as SyncRequester
from myelin.syncapi.sync import SyncAPI
from myelin.syncapi.tokens import StreamToken

MAX_TXN_ID = 255
#: About how many client transactions are kept in memory (see `Rooms._txns`).
TXN_CACHE_ENTRIES = 100_000
#: How many parsed /sync filters are kept (inline ones and stored ones by owner and ID).
MAX_PARSED_FILTERS = 1000


def _paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


@dataclass
class Rooms:
    """The components the room endpoints use."""

    ctx: ClientContext
    rs: Roomserver
    writer: RoomWriter
    sync: SyncAPI
    directory: Directory
    #: Invites of e-mail addresses (None: this server has no 3PID support).
    third_party: ThirdPartyInvites | None = None

    def __post_init__(self) -> None:
        self._txn_locks: dict[tuple[str, str, str, str], asyncio.Lock] = {}
        #: Transactions of recently sending devices: loaded from `sync_txns` on the
        #: device's first send, then kept up to date here (the table follows through the
        #: log), so a send costs no database round trip for its transaction ID. Bounded
        #: to about TXN_CACHE_ENTRIES transactions: the least recently sending devices
        #: are dropped (and reloaded when they send again), never one with a send in
        #: flight (its map could miss the transaction being recorded).
        self._txns: OrderedDict[tuple[str, str], dict[tuple[str, str], str]] = OrderedDict()
        self._txn_entries = 0
        self._txn_loads: dict[tuple[str, str], asyncio.Lock] = {}
        self._txn_inflight: dict[tuple[str, str], int] = {}

    async def device_txns(self, user_id: str, device_id: str) -> dict[tuple[str, str], str]:
        """The live map `(scope, txn_id) -> event_id` of a device's transactions (call
        it between `txn_begin` and `txn_end` of the device)."""
        device = (user_id, device_id)
        found = self._txns.get(device)
        if found is not None:
            self._txns.move_to_end(device)
            return found
        lock = self._txn_loads.setdefault(device, asyncio.Lock())
        async with lock:
            found = self._txns.get(device)
            if found is None:
                found = await self.sync.db.read(
                    lambda t: sync_queries.device_txns(t, user_id, device_id)
                )
                self._txns[device] = found
                self._txn_entries += len(found)
                self._trim_txns()
        self._txn_loads.pop(device, None)
        return found

    def remember_txn(
        self, txns: dict[tuple[str, str], str], key: tuple[str, str], event_id: str
    ) -> None:
        if key not in txns:
            self._txn_entries += 1
        txns[key] = event_id
        if self._txn_entries > TXN_CACHE_ENTRIES:
            self._trim_txns()

    def forget_txn(self, txns: dict[tuple[str, str], str], key: tuple[str, str]) -> None:
        if txns.pop(key, None) is not None:
            self._txn_entries -= 1

    def txn_begin(self, device: tuple[str, str]) -> None:
        self._txn_inflight[device] = self._txn_inflight.get(device, 0) + 1

    def txn_end(self, device: tuple[str, str]) -> None:
        left = self._txn_inflight[device] - 1
        if left:
            self._txn_inflight[device] = left
        else:
            del self._txn_inflight[device]

    def _trim_txns(self) -> None:
        if self._txn_entries <= TXN_CACHE_ENTRIES:
            return
        for device in list(self._txns):
            if self._txn_entries <= TXN_CACHE_ENTRIES * 9 // 10:
                return
            if device in self._txn_inflight:
                continue
            self._txn_entries -= len(self._txns.pop(device))


async def _check_guest_join(writer: RoomWriter, sync: SyncAPI, room_id: str, user: str) -> None:
    """403 unless a guest may join: by the room's state here, or for a room this server
    is not in, by what the guest's invite says of it."""
    remote = writer.remote
    if remote is not None and await remote.needs_remote_join(room_id):
        if not await remote.guest_may_join(room_id, user):
            raise forbidden("Guest access is not allowed in this room")
        return
    await guests.check_guest_join(sync, room_id)


async def _remote_membership(
    writer: RoomWriter,
    room_id: str,
    sender: str,
    target: str,
    content: dict[str, Any],
    servers: list[str],
) -> bool:
    """Join (or leave, rejecting an invite) a room this server is not in through another
    server (federation); False when the membership is a local matter."""
    remote = writer.remote
    membership = content.get("membership")
    if remote is None or target != sender or membership not in ("join", "leave"):
        return False
    if not await remote.needs_remote_join(room_id):
        return False
    candidates = await remote.candidate_servers(room_id, servers)
    if not candidates:
        return False
    extra = {k: v for k, v in content.items() if k != "membership"}
    if membership == "join":
        await remote.join(room_id, sender, candidates, extra)
    else:  # rejecting an invite to a room this server is not in
        await remote.leave(room_id, sender, candidates, extra)
    return True


def _who(req: Request) -> SyncRequester:
    user = req.user()
    return SyncRequester(user.user_id, user.device_id)


def _int_param(req: Request, name: str, default: int, maximum: int = MAX_LIMIT) -> int:
    value = req.query_param(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise invalid_param(f"'{name}' must be a non-negative integer")
    return min(int(value), maximum)


#: Body keys of a join that are not copied into the membership event's content.
_NOT_MEMBER_CONTENT = frozenset({"membership", "reason", "third_party_signed"})


def _canonical_body(req: Request) -> dict[str, Any]:
    """The body as a JSON object that may become event content (canonical JSON), or {}."""
    return req.json(canonical=True) if req.body.strip() else {}


def _room_param(req: Request) -> str:
    return check_room_id(req.params["room_id"])


def install(router: Router, rooms: Rooms) -> None:
    ctx, writer, sync, directory = rooms.ctx, rooms.writer, rooms.sync, rooms.directory

    # Parsed filters, by (owner, ID) or inline text: stored filters never change and a
    # SyncFilter is immutable, so a long-polling client's every /sync reuses its filter
    # instead of reading and parsing it again.
    parsed_filters: dict[tuple[str, str], SyncFilter] = {}

    async def load_filter(req: Request) -> SyncFilter:
        text = req.query_param("filter")
        if text is None or text == "":
            return SyncFilter()
        inline = text.lstrip().startswith("{")
        key = ("" if inline else req.user().user_id, text)
        cached = parsed_filters.get(key)
        if cached is not None:
            return cached
        if inline:
            flt = SyncFilter.parse(parse_json_filter(text))
        else:
            found = await ctx.users.get_filter(req.user().user_id, text)
            if found is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"No filter with ID {text!r}")
            flt = SyncFilter.parse(found)
        if len(parsed_filters) >= MAX_PARSED_FILTERS:
            parsed_filters.clear()
        parsed_filters[key] = flt
        return flt

    def event_filter(req: Request) -> EventFilter:
        text = req.query_param("filter")
        if text is None or text == "":
            return EventFilter()
        return EventFilter.parse(parse_json_filter(text))

    # ---------------------------------------------------------------- create and membership

    async def third_party_invite(room_id: str, sender: str, body: dict[str, Any]) -> str | None:
        """Invite a 3PID: the user it is bound to (to invite as usual), or None when an
        m.room.third_party_invite was sent instead (myelin.clientapi.thirdpartyinvite)."""
        if rooms.third_party is None:
            raise MatrixError(400, "M_UNRECOGNIZED", "This server has no third-party invites")
        return await rooms.third_party.invite(room_id, sender, body)

    async def create_room(req: Request) -> Response:
        who = req.user()
        body = req.json(canonical=True)
        invite_3pid = check_invite_3pid(body.get("invite_3pid"))
        if invite_3pid and rooms.third_party is None:  # refused before the room exists
            raise MatrixError(400, "M_UNRECOGNIZED", "This server has no third-party invites")
        alias = None
        alias_name = opt_str(body, "room_alias_name")
        if alias_name is not None:
            alias = f"#{alias_name}:{ctx.server_name}"
            directory.check_alias(alias)
            if directory.check_new_alias is not None:  # before the room exists
                directory.check_new_alias(alias, who.user_id)
            if await directory.resolve(alias) is not None:
                raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} already taken")
        room_id, events = createroom.build_room(
            writer,
            who.user_id,
            body,
            ctx.config.default_room_version,
            alias,
            creator_profile=await writer.profile_of(who.user_id),
        )
        if writer.remote is not None:  # invites of remote users: their servers sign them
            events = await writer.remote.countersign_invites(events)
        offset = await writer.submit(events)
        if alias is not None:
            await directory.add(alias, room_id, who.user_id)
        if body.get("visibility") == "public":
            await directory.set_public(room_id, True)
        await writer.notifier.wait_for_position(offset)
        for entry in invite_3pid:
            bound = await third_party_invite(room_id, who.user_id, entry)
            if bound is not None:
                await membership(room_id, who.user_id, bound, "invite", {})
        return json_response({"room_id": room_id})

    async def unchanged_state(
        room_id: str, sender: str, event_type: str, state_key: str, content: dict[str, Any]
    ) -> str | None:
        """The current state event if the sender already set exactly this content: sending
        it again is a no-op answered with that event, as other servers do."""
        found = await sync.db.read(
            lambda t: sync_queries.state_event(t, room_id, event_type, state_key)
        )
        if found is not None and found.sender == sender and found.pdu.get("content") == content:
            return found.event_id
        return None

    async def membership(
        room_id: str,
        sender: str,
        target: str,
        membership: str,
        body: dict[str, Any],
        servers: list[str] | None = None,
    ) -> None:
        if not is_valid_user_id(target):
            raise invalid_param(f"Invalid user ID {target[:100]!r}")
        content: dict[str, Any] = {"membership": membership}
        if membership == "invite" and writer.on_invite is not None:
            await writer.on_invite(target)
        if membership == "join" and target == sender:
            # Other members see the joiner's current name and avatar, as on other servers.
            content.update(await writer.profile_of(target))
            # Other keys of the body join the content, as Synapse does (sytest relies on it).
            content.update((k, v) for k, v in body.items() if k not in _NOT_MEMBER_CONTENT)
        reason = opt_str(body, "reason")
        if reason is not None:
            content["reason"] = reason
        if (
            membership == "join"
            and target == sender
            and await unchanged_state(room_id, sender, "m.room.member", target, content)
        ):
            return
        signed = body.get("third_party_signed")
        if membership == "join" and target == sender and signed is not None:
            await join_third_party(room_id, target, signed)
        if await _remote_membership(writer, room_id, sender, target, content, servers or []):
            if membership == "join" and writer.on_joined is not None:
                await writer.on_joined(room_id, target, True)
            return
        countersign = None
        if membership == "invite" and writer.remote is not None:
            countersign = await writer.remote.invite_signer(room_id, target)
        await writer.send(
            room_id,
            sender,
            "m.room.member",
            content,
            state_key=target,
            require_joined=False,
            countersign=countersign,
        )
        if membership == "join" and target == sender and writer.on_joined is not None:
            await writer.on_joined(room_id, target, False)

    async def join_third_party(room_id: str, user_id: str, signed: Any) -> None:
        """A join with `third_party_signed` in a room of this server: the invite it proves
        is sent first (unless the user is invited or joined already)."""
        if rooms.third_party is None:
            raise MatrixError(400, "M_UNRECOGNIZED", "This server has no third-party invites")
        if writer.remote is not None and await writer.remote.needs_remote_join(room_id):
            return
        if await rooms.rs.membership(room_id, user_id) not in ("invite", "join"):
            await rooms.third_party.join_signed(room_id, user_id, signed)

    async def resolve_target(req: Request, servers: list[str] | None = None) -> str:
        """The room named by `{roomIdOrAlias}`; an alias of another server is asked of
        that server (its resident servers are added to `servers`)."""
        target = req.params["room_id_or_alias"]
        if not target.startswith("#"):
            return check_room_id(target)
        if not is_valid_room_alias(target):
            raise invalid_param("Invalid room alias")
        room_id = await directory.resolve(target)
        if room_id is None and writer.remote is not None:
            found = await writer.remote.resolve_alias(target)
            if found is not None:
                room_id = found[0]
                if servers is not None:
                    servers.extend(found[1])
        if room_id is None:
            raise not_found(f"Room alias {target} not found")
        return room_id

    async def join_by_id_or_alias(req: Request) -> Response:
        servers = list(req.query.get("server_name", [])) + list(req.query.get("via", []))
        room_id = await resolve_target(req, servers)
        if req.user().is_guest:
            await _check_guest_join(writer, sync, room_id, req.user().user_id)
        await membership(
            room_id,
            req.user().user_id,
            req.user().user_id,
            "join",
            _canonical_body(req),
            servers,
        )
        return json_response({"room_id": room_id})

    async def knock(req: Request) -> Response:
        room_id = await resolve_target(req)
        who = req.user().user_id
        await membership(room_id, who, who, "knock", req.json_or_empty())
        return json_response({"room_id": room_id})

    async def join(req: Request) -> Response:
        room_id = _room_param(req)
        if req.user().is_guest:
            await _check_guest_join(writer, sync, room_id, req.user().user_id)
        await membership(
            room_id, req.user().user_id, req.user().user_id, "join", _canonical_body(req)
        )
        return json_response({"room_id": room_id})

    async def leave(req: Request) -> Response:
        room_id = _room_param(req)
        who = req.user().user_id
        if await sync.membership(who, room_id) is None:
            raise forbidden(f"User {who} is not in room {room_id}")
        await membership(room_id, who, who, "leave", req.json_or_empty())
        return json_response({})

    #: Who a kick or an unban can target; the auth rules alone would let a "kick" of
    #: someone never in the room through (other servers answer 403, as Sytest checks).
    targets = {"kick": ("join", "invite", "knock"), "unban": ("ban",)}

    def on_other(kind: str, action: str) -> Any:
        async def handler(req: Request) -> Response:
            room_id = _room_param(req)
            body = req.json()
            if action == "invite" and "user_id" not in body and "medium" in body:
                bound = await third_party_invite(room_id, req.user().user_id, body)
                if bound is None:
                    return json_response({})
                body = {**body, "user_id": bound}
            target = req_str(body, "user_id")
            if (
                action in targets
                and await rooms.rs.membership(room_id, target) not in targets[action]
            ):
                raise forbidden(f"Cannot {action} {target[:100]}: not a member in that state")
            await membership(room_id, req.user().user_id, target, kind, body)
            return json_response({})

        return handler

    async def forget(req: Request) -> Response:
        await sync.forget(req.user().user_id, _room_param(req))
        return json_response({})

    # ---------------------------------------------------------------- sending

    async def send_once(req: Request, scope: str, make: Any) -> Response:
        """Run `make(txn, remember)` once per (device, endpoint scope, txn ID); repeats get
        the first answer (client-server-api "Transaction identifiers").

        The transaction travels in the event's log record (`txn`), so it is committed
        with the event and the sync reader records it in `sync_txns`; `remember` notes
        the event ID in this process's map as soon as the event is built. A retransmission
        finds it there (or, after a restart, in the table) and answers with the event's
        status in the roomserver; an event that never reached the log is sent anew."""
        txn_id = req.params["txn_id"]
        if len(txn_id) > MAX_TXN_ID:
            raise invalid_param("Transaction ID too long")
        who = _who(req)
        key = (who.user_id, who.device_id, scope, txn_id)
        lock = rooms._txn_locks.setdefault(key, asyncio.Lock())
        device = (who.user_id, who.device_id)
        rooms.txn_begin(device)
        try:
            async with lock:
                txns = await rooms.device_txns(who.user_id, who.device_id)
                done = txns.get((scope, txn_id))
                if done is not None:
                    status = await rooms.rs.event_status(done)
                    if status is not None and status[0] is Status.ACCEPTED:
                        return json_response({"event_id": done})
                    if status is not None:
                        raise forbidden(status[1] or "Event not allowed")
                    # Never reached the log: send it anew.
                    rooms.forget_txn(txns, (scope, txn_id))

                def remember(event_id: str) -> None:
                    rooms.remember_txn(txns, (scope, txn_id), event_id)

                txn = ClientTxn(who.user_id, who.device_id, scope, txn_id)
                event_id: str = await make(txn, remember)
                return json_response({"event_id": event_id})
        finally:
            rooms.txn_end(device)
            if not lock.locked():
                rooms._txn_locks.pop(key, None)

    async def send(req: Request) -> Response:
        room_id = _room_param(req)
        event_type = req.params["event_type"]
        scope = f"send/{room_id}/{event_type}"

        async def make(txn: ClientTxn, remember: Callable[[str], None]) -> str:
            content = req.json(canonical=True)
            if event_type == "m.room.tombstone" and content.get("replacement_room") == room_id:
                raise invalid_param("A room cannot be replaced by itself")
            return await writer.send(
                room_id, req.user().user_id, event_type, content, txn=txn, on_built=remember
            )

        return await send_once(req, scope, make)

    async def send_without_txn(req: Request) -> Response:
        """`POST /send/{eventType}`: the form before transaction IDs, which Synapse still
        serves and Sytest uses; no idempotence, as it has no transaction ID."""
        room_id = _room_param(req)
        content = req.json(canonical=True)
        event_id = await writer.send(room_id, req.user().user_id, req.params["event_type"], content)
        return json_response({"event_id": event_id})

    async def check_redaction(room_id: str, sender: str, target: str) -> None:
        """Refuse what the auth rules of v3+ would accept but never apply: redacting an
        event of another room (400), or another user's event without the redact level."""
        original = await rooms.rs.event(target)
        if original is None:
            return
        if original.room_id != room_id:
            raise invalid_param("That event is in another room")
        if original.sender != sender:
            state = await rooms.rs.current_state_events(
                room_id, [("m.room.create", ""), ("m.room.power_levels", "")]
            )
            if get_power_level(sender, state) < get_named_level("redact", state):
                raise forbidden("You may not redact other users' events in this room")

    async def redact(req: Request) -> Response:
        room_id = _room_param(req)
        target = req.params["event_id"]
        scope = f"redact/{room_id}/{target}"

        async def make(txn: ClientTxn, remember: Callable[[str], None]) -> str:
            await check_redaction(room_id, req.user().user_id, target)
            body = req.json_or_empty()
            content: dict[str, Any] = {}
            reason = opt_str(body, "reason")
            if reason is not None:
                content["reason"] = reason
            return await writer.send(
                room_id,
                req.user().user_id,
                "m.room.redaction",
                content,
                redacts=target,
                txn=txn,
                on_built=remember,
            )

        return await send_once(req, scope, make)

    async def redact_without_txn(req: Request) -> Response:
        """`POST /redact/{eventId}`: the form before transaction IDs, which Synapse still
        serves and Sytest uses (over federation too); no idempotence."""
        room_id = _room_param(req)
        target = req.params["event_id"]
        await check_redaction(room_id, req.user().user_id, target)
        reason = opt_str(req.json_or_empty(), "reason")
        event_id = await writer.send(
            room_id,
            req.user().user_id,
            "m.room.redaction",
            {} if reason is None else {"reason": reason},
            redacts=target,
        )
        return json_response({"event_id": event_id})

    async def put_state(req: Request) -> Response:
        room_id = _room_param(req)
        event_type = req.params["event_type"]
        state_key = req.params.get("state_key", "")
        content = req.json(canonical=True)
        if event_type == "m.room.tombstone" and content.get("replacement_room") == room_id:
            raise invalid_param("A room cannot be replaced by itself")
        is_member = event_type == "m.room.member"
        if is_member and not is_valid_user_id(state_key):
            raise invalid_param("The state key of a membership event must be a user ID")
        if event_type == "m.room.canonical_alias":
            for alias in [content.get("alias"), *(content.get("alt_aliases") or [])]:
                if alias is None:
                    continue
                if not isinstance(alias, str) or not is_valid_room_alias(alias):
                    raise invalid_param(f"Invalid room alias {str(alias)[:100]!r}")
                if await directory.resolve(alias) != room_id:
                    raise MatrixError(400, "M_BAD_ALIAS", f"Alias {alias!r} does not point here")
        same = await unchanged_state(room_id, req.user().user_id, event_type, state_key, content)
        if same is not None:
            return json_response({"event_id": same})
        # Membership changes (e.g. a per-room display name) are left to the auth rules.
        event_id = await writer.send(
            room_id,
            req.user().user_id,
            event_type,
            content,
            state_key=state_key,
            require_joined=not is_member,
        )
        if event_type == guests.GUEST_ACCESS and content.get("guest_access") != "can_join":
            await guests.evict_guests(sync, ctx.users, writer, room_id, ctx.server_name)
        return json_response({"event_id": event_id})

    # ---------------------------------------------------------------- reads

    async def get_state(req: Request) -> Response:
        return json_response(await sync.state(_who(req), _room_param(req)))

    async def get_state_event(req: Request) -> Response:
        room_id = _room_param(req)
        event = await sync.state_content(
            _who(req), room_id, req.params["event_type"], req.params.get("state_key", "")
        )
        if req.query_param("format") == "event":
            return json_response(event)
        return json_response(event["content"])

    async def get_event(req: Request) -> Response:
        return json_response(await sync.event(_who(req), _room_param(req), req.params["event_id"]))

    async def members(req: Request) -> Response:
        chunk = await sync.members(
            _who(req),
            _room_param(req),
            req.query_param("membership"),
            req.query_param("not_membership"),
        )
        return json_response({"chunk": chunk})

    async def joined_members(req: Request) -> Response:
        return json_response(await sync.joined_members(_who(req), _room_param(req)))

    async def joined_rooms(req: Request) -> Response:
        return json_response({"joined_rooms": await sync.joined_rooms(req.user().user_id)})

    async def messages(req: Request) -> Response:
        room_id = _room_param(req)
        direction = req.query_param("dir") or "b"
        if direction not in ("b", "f"):
            raise invalid_param("'dir' must be 'b' or 'f'")
        from_text = req.query_param("from")
        to_text = req.query_param("to")
        body = await sync.messages(
            _who(req),
            room_id,
            from_token=StreamToken.parse(from_text, "from") if from_text else None,
            to_token=StreamToken.parse(to_text, "to") if to_text else None,
            backwards=direction == "b",
            limit=_int_param(req, "limit", 10),
            flt=event_filter(req),
        )
        return json_response(body)

    async def context(req: Request) -> Response:
        body = await sync.context(
            _who(req),
            _room_param(req),
            req.params["event_id"],
            _int_param(req, "limit", 10),
            event_filter(req),
        )
        return json_response(body)

    async def do_sync(req: Request) -> Response:
        since_text = req.query_param("since")
        since = StreamToken.parse(since_text, "since") if since_text else None
        full_state = (req.query_param("full_state") or "false") == "true"
        presence = req.query_param("set_presence")
        if presence is not None and presence not in ("online", "offline", "unavailable"):
            raise invalid_param("'set_presence' must be online, offline or unavailable")
        timeout = _int_param(req, "timeout", 0, maximum=2**31)
        flt = await load_filter(req)
        if sync.presence_hook is not None:
            await sync.presence_hook(req.user().user_id, presence or "online")
        body = await sync.sync(_who(req), since, flt, timeout_ms=timeout, full_state=full_state)
        return json_response(body)

    # ---------------------------------------------------------------- directory

    async def put_alias(req: Request) -> Response:
        alias = req.params["room_alias"]
        body = req.json()
        room_id = check_room_id(req_str(body, "room_id"))
        if await rooms.rs.room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        await directory.add(alias, room_id, req.user().user_id)
        return json_response({})

    async def get_alias(req: Request) -> Response:
        alias = req.params["room_alias"]
        if not is_valid_room_alias(alias):
            raise invalid_param("Invalid room alias")
        room_id = await directory.resolve(alias)
        if room_id is None and writer.remote is not None:
            found = await writer.remote.resolve_alias(alias)
            if found is not None:
                return json_response({"room_id": found[0], "servers": found[1]})
        if room_id is None:
            raise not_found(f"Room alias {alias} not found")
        return json_response({"room_id": room_id, "servers": [ctx.server_name]})

    async def delete_alias(req: Request) -> Response:
        user_id = req.user().user_id
        alias = req.params["room_alias"]
        room_id = await directory.resolve(alias)
        allowed = await ctx.users.is_admin(user_id) or (
            room_id is not None and await may_manage_aliases(rooms.rs, room_id, user_id)
        )
        await directory.remove(alias, user_id, allowed)
        if room_id is not None:  # a deleted alias no longer stands in the canonical alias
            found = await rooms.rs.current_state_events(room_id, [("m.room.canonical_alias", "")])
            event = found.get(("m.room.canonical_alias", ""))
            content = without_alias(dict(event.content), alias) if event else None
            if content is not None:
                with contextlib.suppress(MatrixError):
                    await writer.send(
                        room_id, user_id, "m.room.canonical_alias", content, state_key=""
                    )
        return json_response({})

    async def room_aliases(req: Request) -> Response:
        room_id = _room_param(req)
        # directory.yaml: members, or anyone when the history is world_readable.
        if not await sync.reads_current_state(req.user().user_id, room_id):
            raise forbidden("You are not joined to this room")
        return json_response({"aliases": await directory.aliases_of(room_id)})

    async def get_visibility(req: Request) -> Response:
        room_id = _room_param(req)
        if await rooms.rs.room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        public = await directory.is_public(room_id)
        return json_response({"visibility": "public" if public else "private"})

    async def put_visibility(req: Request) -> Response:
        room_id = _room_param(req)
        body = req.json()
        visibility = opt_str(body, "visibility") or "public"
        if visibility not in ("public", "private"):
            raise invalid_param("'visibility' must be 'public' or 'private'")
        if await rooms.rs.room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        found = await sync.membership(req.user().user_id, room_id)
        if found is None or found[0] != "join":
            raise forbidden("You are not joined to this room")
        await directory.set_public(room_id, visibility == "public")
        return json_response({})

    async def remote_public_rooms(req: Request, body: dict[str, Any] | None) -> Response | None:
        """The public room list of another server (`?server=`), asked over federation."""
        server = req.query_param("server")
        if not server or server == ctx.server_name or writer.remote is None:
            return None
        query = {k: v[-1] for k, v in req.query.items() if k in ("limit", "since")}
        return json_response(await writer.remote.public_rooms(server, query, body))

    async def public_rooms_get(req: Request) -> Response:
        remote = await remote_public_rooms(req, None)
        if remote is not None:
            return remote
        limit = req.query_param("limit")
        body = await directory.public_rooms(
            _int_param(req, "limit", 0) if limit else None, req.query_param("since"), None
        )
        return json_response(body)

    async def public_rooms_post(req: Request) -> Response:
        body = req.json_or_empty()
        remote = await remote_public_rooms(req, body)
        if remote is not None:
            return remote
        limit = body.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise bad_json("'limit' must be an integer")
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise bad_json("'filter' must be an object")
        term = flt.get("generic_search_term")
        if term is not None and not isinstance(term, str):
            raise bad_json("'generic_search_term' must be a string")
        since = opt_str(body, "since")
        instance = opt_str(body, "third_party_instance_id")
        all_networks = opt_bool(body, "include_all_networks")
        return json_response(
            await directory.public_rooms(
                limit, since, term, instance=instance, all_networks=all_networks
            )
        )

    room = "/rooms/{room_id}"
    add = router.add
    # allow_guest: the endpoints guest_access.md lets guests call (and joining by alias).
    add("POST", _paths("/createRoom"), create_room, auth=True)
    add(
        "POST", _paths("/join/{room_id_or_alias}"), join_by_id_or_alias, auth=True, allow_guest=True
    )
    add("POST", _paths(room + "/join"), join, auth=True, allow_guest=True)
    add("POST", _paths("/knock/{room_id_or_alias}"), knock, auth=True)
    add("POST", _paths(room + "/leave"), leave, auth=True, allow_guest=True)
    for kind, path in (("invite", "invite"), ("leave", "kick"), ("ban", "ban"), ("leave", "unban")):
        add("POST", _paths(f"{room}/{path}"), on_other(kind, path), auth=True)
    add("POST", _paths(room + "/forget"), forget, auth=True)
    add("PUT", _paths(room + "/send/{event_type}/{txn_id}"), send, auth=True, allow_guest=True)
    add("POST", _paths(room + "/send/{event_type}"), send_without_txn, auth=True)
    add("PUT", _paths(room + "/redact/{event_id}/{txn_id}"), redact, auth=True)
    add("POST", _paths(room + "/redact/{event_id}"), redact_without_txn, auth=True)
    add("GET", _paths(room + "/state"), get_state, auth=True, allow_guest=True)
    add("GET", _paths(room + "/state/{event_type}"), get_state_event, auth=True, allow_guest=True)
    add("GET", _paths(room + "/state/{event_type}/"), get_state_event, auth=True, allow_guest=True)
    add("PUT", _paths(room + "/state/{event_type}/"), put_state, auth=True, allow_guest=True)
    add(
        "GET",
        _paths(room + "/state/{event_type}/{state_key}"),
        get_state_event,
        auth=True,
        allow_guest=True,
    )
    add("PUT", _paths(room + "/state/{event_type}"), put_state, auth=True, allow_guest=True)
    add(
        "PUT",
        _paths(room + "/state/{event_type}/{state_key}"),
        put_state,
        auth=True,
        allow_guest=True,
    )
    add("GET", _paths(room + "/event/{event_id}"), get_event, auth=True, allow_guest=True)
    add("GET", _paths(room + "/members"), members, auth=True, allow_guest=True)
    add("GET", _paths(room + "/joined_members"), joined_members, auth=True)
    add("GET", _paths(room + "/messages"), messages, auth=True, allow_guest=True)
    add("GET", _paths(room + "/context/{event_id}"), context, auth=True, allow_guest=True)
    add("GET", _paths(room + "/aliases"), room_aliases, auth=True)
    add("GET", _paths("/joined_rooms"), joined_rooms, auth=True)
    add("GET", _paths("/sync"), do_sync, auth=True, allow_guest=True)
    add("PUT", _paths("/directory/room/{room_alias}"), put_alias, auth=True)
    add("GET", _paths("/directory/room/{room_alias}"), get_alias)
    add("DELETE", _paths("/directory/room/{room_alias}"), delete_alias, auth=True)
    add("GET", _paths("/directory/list/room/{room_id}"), get_visibility)
    add("PUT", _paths("/directory/list/room/{room_id}"), put_visibility, auth=True)
    add("GET", _paths("/publicRooms"), public_rooms_get)
    add("POST", _paths("/publicRooms"), public_rooms_post, auth=True)
