"""The deprecated event stream and snapshots: `GET /events`, `GET /events/{eventId}`,
`GET /initialSync` and `GET /rooms/{roomId}/initialSync` (old_sync.yaml,
room_initial_sync.yaml, peeking_events.yaml).

They are read from the same projections as `/sync` and share its tokens, so an `/events`
token is a `/sync` token: the room position, the key server's two positions (carried
through untouched: these endpoints send no to-device messages) and the ephemeral
component's four (account data, receipts, typing, presence).

Room previews: a user not in a `world_readable` room may peek into it (room initialSync,
then `/events?room_id=`), seeing the events since the room last became world-readable.
The peeker is woken by every notifier wake-up (`Notifier.PEEKERS`), since nothing else
knows who is peeking; peeks are rare, and each wake-up is one small read.
"""

from __future__ import annotations

import asyncio
import functools
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from myelin.clientapi.http import MatrixError, forbidden
from myelin.ephemeral import presence, receipts
from myelin.storage import Txn
from myelin.syncapi import queries
from myelin.syncapi.format import StoredEvent, now_ms
from myelin.syncapi.notifier import Notifier
from myelin.syncapi.sync import MAX_TIMEOUT_MS, Requester, SyncAPI, visible_after
from myelin.syncapi.tokens import StreamToken
from myelin.userapi import accountdata

#: Default number of room events per `/events` answer and per room in `initialSync`.
DEFAULT_LIMIT = 10


class TypingSource(Protocol):
    """The ephemeral component's typing state (`myelin.ephemeral.typing.Typing`)."""

    @property
    def view(self) -> Any: ...

    def now(self) -> float: ...


class PublicRooms(Protocol):
    """The room directory, for the `visibility` of each room in `initialSync`."""

    async def is_public(self, room_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Positions:
    """A token's positions as these endpoints read and write them: `others` holds the
    key server's two, then the ephemeral component's four."""

    room: int
    keys: tuple[int, int]
    account_data: int
    receipts: int
    typing: int
    presence: int

    @staticmethod
    def of(token: StreamToken) -> Positions:
        others = [*token.others, 0, 0, 0, 0, 0, 0][:6]
        return Positions(token.room, (others[0], others[1]), *others[2:6])

    def token(self) -> StreamToken:
        return StreamToken(
            self.room,
            (*self.keys, self.account_data, self.receipts, self.typing, self.presence),
        )


def _presence_event(event: dict[str, Any]) -> dict[str, Any]:
    """The old presence format: `content.user_id` names the user (clients of `/events`
    and sytest read it there), and `status_msg` is always present."""
    content = dict(event["content"])
    content["user_id"] = event["sender"]
    content.setdefault("status_msg", None)
    return {"type": "m.presence", "sender": event["sender"], "content": content}


async def _presence_of(t: Txn, user_ids: set[str], upto: int) -> list[dict[str, Any]]:
    """The current presence of each user; one never seen is `offline` (as on other
    servers: initialSync shows every member's presence, set or not)."""
    found = [_presence_event(e) for e in await presence.events(t, user_ids, -1, upto, now_ms())]
    known = {e["sender"] for e in found}
    for user_id in sorted(user_ids - known):
        found.append(
            {
                "type": "m.presence",
                "sender": user_id,
                "content": {"presence": "offline", "user_id": user_id, "status_msg": None},
            }
        )
    return found


async def peek_floor(t: Txn, room_id: str) -> int | None:
    """The position after which a user outside the room may read it: the start of the
    room's current run of `world_readable` history visibility; None when the room is
    not world-readable now (room-previews "Server behaviour")."""
    rows = await t.fetchall(
        "SELECT pos, pdu FROM sync_events WHERE room_id = ?"
        " AND type = 'm.room.history_visibility' AND state_key = '' ORDER BY pos DESC",
        room_id,
    )
    floor: int | None = None
    for pos, pdu in rows:
        value = orjson.loads(pdu).get("content", {}).get("history_visibility")
        if value != "world_readable":
            break
        floor = int(pos) - 1
    return floor


@dataclass(frozen=True, slots=True)
class _Access:
    """What a user may read of one room: events in `(floor, upto]`, and whether as a
    member (`membership`) or as a peeker (`membership` None)."""

    floor: int
    upto: int
    membership: str | None


async def _v1(
    sync: SyncAPI, t: Txn, who: Requester, events: Sequence[StoredEvent]
) -> list[dict[str, Any]]:
    """Events in the client format, plus the v1 format's `user_id` (the sender), which
    clients of these endpoints (and sytest) still read."""
    out = await sync._format(t, who, events)
    for event in out:
        event["user_id"] = event["sender"]
    return out


class LegacyStreams:
    """The deprecated endpoints, over the sync API's projections and notifier."""

    def __init__(
        self, sync: SyncAPI, typing: TypingSource | None, directory: PublicRooms | None
    ) -> None:
        self.sync = sync
        self.db = sync.db
        self.notifier: Notifier = sync.notifier
        self.typing = typing
        self.directory = directory

    # ------------------------------------------------------------------ helpers

    async def _now(self, t: Txn, room: int, keys: tuple[int, int] = (0, 0)) -> Positions:
        typing_pos = self.typing.view.position if self.typing is not None else 0
        return Positions(
            room,
            keys,
            await accountdata.latest_position(t),
            await receipts.latest_position(t),
            typing_pos,
            await presence.latest_position(t),
        )

    async def _access(self, t: Txn, user_id: str, room_id: str, upto: int) -> _Access:
        """The user's read access to a room, or 403 when they may not read it at all."""
        found = await queries.membership(t, user_id, room_id)
        if found is not None and found[0] == "join":
            return _Access(await visible_after(t, room_id, user_id), upto, "join")
        if found is not None and found[0] in ("leave", "ban"):
            try:
                limit = await self.sync.visible_upto(t, user_id, room_id)
            except MatrixError:
                limit = None
            if limit is not None:
                return _Access(await visible_after(t, room_id, user_id), limit, found[0])
        floor = await peek_floor(t, room_id)
        if floor is None:
            raise forbidden(f"User {user_id} may not read room {room_id}")
        return _Access(floor, upto, None)

    def _typing_events(self, room_ids: Sequence[str], after: int | None) -> list[dict[str, Any]]:
        """`m.typing` of the rooms whose typing set changed after `after` (all rooms with
        typing users when `after` is None)."""
        if self.typing is None:
            return []
        view, now = self.typing.view, self.typing.now()
        out = []
        for room_id in room_ids:
            users = view.users(room_id, now)
            changed = users if after is None else view.changed_after(room_id, after)
            if changed:
                out.append({"type": "m.typing", "room_id": room_id, "content": {"user_ids": users}})
        return out

    # ------------------------------------------------------------------ GET /events

    async def events(
        self,
        who: Requester,
        from_token: StreamToken | None,
        *,
        timeout_ms: int,
        room_id: str | None,
        limit: int,
        is_guest: bool,
    ) -> dict[str, Any]:
        """New events for the user (or, with `room_id`, of that room), waiting up to
        `timeout_ms` for some on the notifier."""
        if room_id is None and is_guest:
            raise MatrixError(400, "M_MISSING_PARAM", "Guests must give the room_id to stream")
        deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        start = from_token
        if start is None:  # no token: the stream from now on
            upto = self.notifier.position
            start = (await self.db.read(lambda t: self._now(t, upto))).token()
        while True:
            with ExitStack() as stack:
                waiters = {stack.enter_context(self.notifier.listen(who.user_id))}
                # Nobody wakes a peeker by name: any wake-up may concern the room. Listen
                # before looking, as for the user's own wake-ups.
                peers = None
                if room_id is not None:
                    peers = stack.enter_context(self.notifier.listen(Notifier.PEEKERS))
                body = await self.db.read(
                    functools.partial(
                        self._events_once,
                        who=who,
                        start=start,
                        upto=self.notifier.position,
                        room_id=room_id,
                        limit=limit,
                    )
                )
                peek = body.pop("_peek")
                remaining = deadline - time.monotonic()
                if body["chunk"] or remaining <= 0 or self.notifier.closed:
                    return body
                if peek and peers is not None:
                    waiters.add(peers)
                await asyncio.wait(waiters, timeout=remaining, return_when=FIRST_COMPLETED)

    async def _events_once(
        self,
        t: Txn,
        who: Requester,
        start: StreamToken,
        upto: int,
        room_id: str | None,
        limit: int,
    ) -> dict[str, Any]:
        prev = Positions.of(start)
        after = min(prev.room, upto)
        now = await self._now(t, upto, prev.keys)
        # (room, floor, upto) of each room whose events the user gets.
        ranges: list[tuple[str, int, int]] = []
        peek = False
        if room_id is not None:
            found = await queries.membership(t, who.user_id, room_id)
            if found is None or found[0] != "join":
                access = await self._access(t, who.user_id, room_id, upto)
                peek = access.membership is None
                ranges.append((room_id, max(after, access.floor), access.upto))
        if not ranges:
            for rid, membership, pos in await queries.memberships(t, who.user_id):
                if (room_id is not None and rid != room_id) or pos > upto:
                    continue
                if membership == "join":
                    floor = await visible_after(t, rid, who.user_id)
                    ranges.append((rid, max(after, floor), upto))
                elif pos > after and membership in ("leave", "ban"):
                    ranges.append((rid, after, pos))
                elif pos > after:  # invite or knock: only the membership event itself
                    ranges.append((rid, pos - 1, pos))
        found_events: list[StoredEvent] = []
        for rid, lo, hi in ranges:
            if hi > lo:
                found_events.extend(
                    await queries.events_between(t, rid, lo, hi, limit + 1, descending=False)
                )
        found_events.sort(key=lambda e: e.pos)
        end_room = upto
        if len(found_events) > limit:
            found_events = found_events[:limit]
            end_room = found_events[-1].pos if found_events else after
        chunk = await _v1(self.sync, t, who, found_events)

        # Ephemeral events and account data, each from its own stream.
        if peek:
            eph_rooms = [room_id] if room_id is not None else []
            users: set[str] = set(await queries.joined_members(t, room_id)) if room_id else set()
        else:
            joined = await queries.joined_room_ids(t, who.user_id)
            eph_rooms = [r for r in joined if room_id is None or r == room_id]
            users = set()
            if now.presence > prev.presence:
                users = await queries.sharing_users(t, who.user_id)
        for event in await presence.events(t, users, prev.presence, now.presence, now_ms()):
            chunk.append(_presence_event(event))
        by_room = await receipts.receipt_events(
            t, who.user_id, eph_rooms, prev.receipts, now.receipts
        )
        for rid, event in by_room.items():
            chunk.append({**event, "room_id": rid})
        typing_after = 0 if prev.typing > now.typing else prev.typing
        chunk.extend(self._typing_events(eph_rooms, typing_after))
        if not peek:
            for entry in await accountdata.changes(
                t, who.user_id, prev.account_data, now.account_data
            ):
                data: dict[str, Any] = {"type": entry.type, "content": entry.content}
                if entry.room_id:
                    if room_id is not None and entry.room_id != room_id:
                        continue
                    data["room_id"] = entry.room_id
                chunk.append(data)
        end = Positions(
            end_room, now.keys, now.account_data, now.receipts, now.typing, now.presence
        )
        return {"start": start.encode(), "end": end.token().encode(), "chunk": chunk, "_peek": peek}

    # ------------------------------------------------------------------ GET /events/{id}

    async def event(self, who: Requester, event_id: str) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            event = await queries.event_pos(t, event_id)
            if event is None:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            try:
                access = await self._access(t, who.user_id, event.room_id, self.notifier.position)
            except MatrixError:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found") from None
            if not access.floor < event.pos <= access.upto:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            return (await _v1(self.sync, t, who, [event]))[0]

        return await self.db.read(q)

    # ------------------------------------------------------------------ initialSync

    async def _room_snapshot(
        self, t: Txn, who: Requester, room_id: str, access: _Access, limit: int, end: str
    ) -> dict[str, Any]:
        """One room of an initialSync: its latest messages and its state as the user may
        see them (up to their leave for a departed room)."""
        events = (
            await queries.events_between(t, room_id, access.floor, access.upto, limit)
            if limit > 0
            else []
        )
        events.reverse()
        if access.membership in ("leave", "ban"):
            state = await queries.state_at(t, room_id, access.upto)
        else:
            state = await queries.current_state(t, room_id, upto=access.upto)
        first = events[0].pos if events else access.upto + 1
        room: dict[str, Any] = {
            "room_id": room_id,
            "messages": {
                "chunk": await _v1(self.sync, t, who, events),
                "start": StreamToken(first - 1).encode(),
                "end": end
                if access.upto >= self.notifier.position
                else StreamToken(access.upto).encode(),
            },
            "state": await _v1(self.sync, t, who, state),
        }
        if access.membership is not None:
            room["membership"] = access.membership
        return room

    async def _visibility(self, room_id: str) -> str:
        if self.directory is not None and await self.directory.is_public(room_id):
            return "public"
        return "private"

    async def room_initial_sync(self, who: Requester, room_id: str, limit: int) -> dict[str, Any]:
        upto = self.notifier.position

        async def q(t: Txn) -> dict[str, Any]:
            access = await self._access(t, who.user_id, room_id, upto)
            now = await self._now(t, upto)
            room = await self._room_snapshot(t, who, room_id, access, limit, now.token().encode())
            member = access.membership == "join" or access.membership is None
            presence_events: list[dict[str, Any]] = []
            receipt_list: list[dict[str, Any]] = []
            if member:
                members = set(await queries.joined_members(t, room_id))
                presence_events = await _presence_of(t, members, now.presence)
                found = await receipts.receipt_events(t, who.user_id, [room_id], 0, now.receipts)
                receipt_list = [{**e, "room_id": r} for r, e in found.items()]
            room["presence"] = presence_events
            room["receipts"] = receipt_list
            room["account_data"] = [
                {"type": e.type, "content": e.content}
                for e in await accountdata.changes(t, who.user_id, 0, now.account_data)
                if e.room_id == room_id
            ]
            return room

        body = await self.db.read(q)
        body["visibility"] = await self._visibility(room_id)
        return body

    async def initial_sync(self, who: Requester, limit: int, archived: bool) -> dict[str, Any]:
        upto = self.notifier.position

        async def q(t: Txn) -> dict[str, Any]:
            now = await self._now(t, upto)
            end = now.token().encode()
            rooms: list[dict[str, Any]] = []
            for room_id, membership, pos in await queries.memberships(t, who.user_id):
                if pos > upto:
                    continue
                if membership == "knock":  # not a membership old clients know
                    continue
                if membership == "invite":
                    invite = await queries.events_between(t, room_id, pos - 1, pos, 1)
                    formatted = await _v1(self.sync, t, who, invite)
                    room: dict[str, Any] = {
                        "room_id": room_id,
                        "membership": membership,
                        "messages": {"chunk": [], "start": end, "end": end},
                        "state": formatted,
                    }
                    if formatted:
                        room["invite"] = formatted[0]
                    rooms.append(room)
                    continue
                if membership != "join" and not archived:
                    continue
                try:
                    access = await self._access(t, who.user_id, room_id, upto)
                except MatrixError:
                    continue
                snapshot = await self._room_snapshot(t, who, room_id, access, limit, end)
                snapshot["membership"] = membership
                rooms.append(snapshot)
            joined = [r["room_id"] for r in rooms if r.get("membership") == "join"]
            users = await queries.sharing_users(t, who.user_id)
            presence_events = await _presence_of(t, users, now.presence)
            found = await receipts.receipt_events(t, who.user_id, joined, 0, now.receipts)
            global_data: list[dict[str, Any]] = []
            room_data: dict[str, list[dict[str, Any]]] = {}
            for entry in await accountdata.changes(t, who.user_id, 0, now.account_data):
                data = {"type": entry.type, "content": entry.content}
                if entry.room_id:
                    room_data.setdefault(entry.room_id, []).append(data)
                else:
                    global_data.append(data)
            for room in rooms:
                room["account_data"] = room_data.get(room["room_id"], [])
            return {
                "end": end,
                "rooms": rooms,
                "presence": presence_events,
                "account_data": global_data,
                "receipts": [{**e, "room_id": r} for r, e in found.items()],
            }

        body = await self.db.read(q)
        for room in body["rooms"]:
            room["visibility"] = await self._visibility(room["room_id"])
        return body
