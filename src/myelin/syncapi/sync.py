"""`/sync`, `/messages` and `/context`: answers built from the sync projections.

A response is computed against one snapshot read at the reader's position `N`: the
timeline of a joined room is its served events after `since` (the last `limit` of them,
`limited` with a `prev_batch` when more exist), its `state` the current state not in the
timeline (all of it for new rooms and `full_state`, else what changed after `since`).
Long-polling registers with the notifier before looking, so a commit between the look
and the wait still wakes the request.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from myelin.clientapi.http import MatrixError, forbidden
from myelin.storage import Database, Txn
from myelin.syncapi import queries
from myelin.syncapi.filters import EventFilter, SyncFilter
from myelin.syncapi.format import StoredEvent, client_event, now_ms, stripped_event
from myelin.syncapi.notifier import Notifier
from myelin.syncapi.relations import bundled_aggregations
from myelin.syncapi.tokens import StreamToken

INVITE_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
)
MAX_TIMEOUT_MS = 5 * 60 * 1000
_SCAN_CHUNK = 100


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str


async def _filtered(
    t: Txn, room_id: str, after: int, upto: int, limit: int, flt: EventFilter, descending: bool
) -> tuple[list[StoredEvent], bool]:
    """Up to `limit` events in `(after, upto]` that pass `flt`, and whether more exist."""
    found: list[StoredEvent] = []
    lo, hi = after, upto
    while True:
        chunk = await queries.events_between(
            t,
            room_id,
            lo,
            hi,
            max(limit + 1, _SCAN_CHUNK) if flt.filters_events else limit + 1,
            descending=descending,
        )
        for event in chunk:
            if flt.allows(event.type, event.sender):
                if len(found) == limit:
                    return found, True
                found.append(event)
        if not flt.filters_events or len(chunk) < _SCAN_CHUNK or not chunk:
            return found, False
        if descending:
            hi = chunk[-1].pos - 1
        else:
            lo = chunk[-1].pos


async def _ever_joined(t: Txn, room_id: str, user_id: str, before: int) -> bool:
    """Whether the user was joined to the room at some point before position `before`."""
    rows = await t.fetchall(
        "SELECT pdu FROM sync_events WHERE room_id = ? AND type = 'm.room.member'"
        " AND state_key = ? AND pos < ?",
        room_id,
        user_id,
        before,
    )
    return any(orjson.loads(r[0]).get("content", {}).get("membership") == "join" for r in rows)


class SyncExtension(Protocol):
    """Another component's part of `/sync` (the key server's to-device messages, key
    counts and device lists), with its own stream positions after the room position."""

    async def before_sync(self, user_id: str, device_id: str, since: StreamToken) -> None: ...

    async def sync_part(
        self, t: Txn, user_id: str, device_id: str, since: StreamToken | None, upto_room: int
    ) -> Any: ...


class SyncContributor(Protocol):
    """A component that adds to a built `/sync` response (account data, ephemeral
    events, presence, unread counts) and carries positions after the extension's."""

    async def sync_part(
        self,
        t: Txn,
        user_id: str,
        since: StreamToken | None,
        upto_room: int,
        flt: SyncFilter,
        response: dict[str, Any],
        *,
        thread_counts: bool = False,
    ) -> tuple[tuple[int, ...], bool]: ...


async def visible_after(t: Txn, room_id: str, user_id: str) -> int:
    """The position after which the user may read the room's history, from the room's
    current `m.room.history_visibility` (history-visibility module): everything for
    `shared` and `world_readable`; for `invited` and `joined`, only what came after the
    start of the user's current invite-or-join (join) membership.

    Simplification: the current setting is applied to all history, not the setting in
    force at each event."""
    setting = await queries.state_event(t, room_id, "m.room.history_visibility", "")
    value = setting.pdu.get("content", {}).get("history_visibility") if setting else None
    if value not in ("invited", "joined"):
        return 0
    wanted = ("invite", "join") if value == "invited" else ("join",)
    rows = await t.fetchall(
        "SELECT pos, pdu FROM sync_events WHERE room_id = ? AND type = 'm.room.member'"
        " AND state_key = ? ORDER BY pos DESC",
        room_id,
        user_id,
    )
    start: int | None = None
    for pos, pdu in rows:  # newest first: skip a final leave or ban, then take the streak
        if orjson.loads(pdu).get("content", {}).get("membership") in wanted:
            start = int(pos)
        elif start is not None:
            break
    return start - 1 if start is not None else 2**62


class SyncAPI:
    def __init__(self, db: Database, notifier: Notifier) -> None:
        self.db = db
        self.notifier = notifier
        self.extension: SyncExtension | None = None
        self.contributor: SyncContributor | None = None
        #: Called with (user_id, presence) for each `/sync` (its `set_presence`).
        self.presence_hook: Callable[[str, str], Awaitable[None]] | None = None

    # ------------------------------------------------------------------ /sync

    async def sync(
        self,
        who: Requester,
        since: StreamToken | None,
        flt: SyncFilter,
        *,
        timeout_ms: int = 0,
        full_state: bool = False,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        if since is not None and self.extension is not None:
            await self.extension.before_sync(who.user_id, who.device_id, since)
        while True:
            with self.notifier.listen(who.user_id) as woken:
                response, changed = await self._snapshot(who, since, flt, full_state)
                remaining = deadline - time.monotonic()
                if changed or since is None or full_state or remaining <= 0 or self.notifier.closed:
                    return response
                try:
                    await asyncio.wait_for(asyncio.shield(woken), remaining)
                except TimeoutError:
                    return response

    async def _snapshot(
        self, who: Requester, since: StreamToken | None, flt: SyncFilter, full_state: bool
    ) -> tuple[dict[str, Any], bool]:
        upto = self.notifier.position

        async def q(t: Txn) -> tuple[dict[str, Any], bool]:
            return await self._build(t, who, since, upto, flt, full_state)

        return await self.db.read(q)

    async def _build(
        self,
        t: Txn,
        who: Requester,
        since: StreamToken | None,
        upto: int,
        flt: SyncFilter,
        full_state: bool,
    ) -> tuple[dict[str, Any], bool]:
        after = since.room if since is not None else 0
        after = min(after, upto)
        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        now = now_ms()
        for room_id, membership, pos in await queries.memberships(t, who.user_id):
            if not flt.allows_room(room_id) or pos > upto:
                # A membership newer than the position shows up on the next sync.
                continue
            if membership == "join":
                newly = since is None or pos > after or full_state
                room = await self._room(t, who, room_id, after, upto, flt, newly, now)
                if room is not None:
                    join[room_id] = room
            elif membership == "invite":
                if since is None or pos > after:
                    invite[room_id] = {"invite_state": {"events": await self._invite(t, room_id)}}
            elif membership == "knock":
                if since is None or pos > after:
                    knock[room_id] = {"knock_state": {"events": await self._invite(t, room_id)}}
            elif membership in ("leave", "ban") and (
                (since is not None and pos > after) or (since is None and flt.include_leave)
            ):
                if await _ever_joined(t, room_id, who.user_id, pos):
                    room = await self._room(t, who, room_id, after, min(pos, upto), flt, True, now)
                else:  # never joined: only their own membership change
                    room = await self._room(t, who, room_id, pos - 1, pos, flt, False, now)
                if room is not None:
                    room.pop("ephemeral", None)
                    room.pop("unread_notifications", None)
                    room.pop("summary", None)
                    leave[room_id] = room
        others: tuple[int, ...] = ()
        extra: dict[str, Any] = {}
        news = False
        if self.extension is not None:
            part = await self.extension.sync_part(t, who.user_id, who.device_id, since, upto)
            others, extra, news = part.positions.as_others(), part.fields, part.news
        response: dict[str, Any] = {
            "next_batch": StreamToken(upto, others).encode(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": []},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            **extra,
        }
        if self.contributor is not None:
            mine, more = await self.contributor.sync_part(
                t,
                who.user_id,
                since,
                upto,
                flt,
                response,
                thread_counts=flt.timeline.unread_thread_notifications,
            )
            padded = (*others, 0, 0)[:2]
            response["next_batch"] = StreamToken(upto, (*padded, *mine)).encode()
            news = news or more
        return response, bool(join or invite or leave or knock or news)

    async def _room(
        self,
        t: Txn,
        who: Requester,
        room_id: str,
        after: int,
        upto: int,
        flt: SyncFilter,
        newly: bool,
        now: int,
    ) -> dict[str, Any] | None:
        limit = flt.timeline_limit
        # A room new to this sync shows the latest history; otherwise what came after `since`.
        start = max(0 if newly else after, await visible_after(t, room_id, who.user_id))
        timeline, limited = await _filtered(t, room_id, start, upto, limit, flt.timeline, True)
        timeline.reverse()
        state_after = 0 if newly else after
        state_rows = await queries.current_state(t, room_id, changed_after=state_after, upto=upto)
        in_timeline = {e.event_id for e in timeline}
        state = [
            e
            for e in state_rows
            if e.event_id not in in_timeline and flt.state.allows(e.type, e.sender)
        ]
        if flt.state.lazy_load_members:
            senders = {e.sender for e in timeline} | {who.user_id}
            state = [e for e in state if e.type != "m.room.member" or e.state_key in senders]
        if not newly and not timeline and not state:
            return None
        first = timeline[0].pos if timeline else upto + 1
        events = [*timeline, *state]
        redactions = await queries.redaction_events(t, events)
        replaced = await queries.replaced_events(t, events)
        own = [e.event_id for e in timeline if e.sender == who.user_id]
        txns = await queries.txn_ids(t, who.user_id, who.device_id, own)
        summary = await self._summary(t, room_id)
        plain = functools.partial(client_event, redactions=redactions, now=now)
        bundles = await bundled_aggregations(t, timeline, who.user_id, plain)
        fmt = functools.partial(
            client_event,
            redactions=redactions,
            replaced=replaced,
            relations=bundles,
            with_room_id=False,
            now=now,
        )
        return {
            "timeline": {
                "events": [fmt(e, txn_ids=txns) for e in timeline],
                "limited": limited,
                "prev_batch": StreamToken(first - 1).encode(),
            },
            "state": {"events": [fmt(e) for e in state]},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "unread_notifications": {"highlight_count": 0, "notification_count": 0},
            "summary": summary,
        }

    async def _summary(self, t: Txn, room_id: str) -> dict[str, Any]:
        rows = await t.fetchall(
            "SELECT membership, count(*) FROM sync_memberships WHERE room_id = ?"
            " AND membership IN ('join', 'invite') GROUP BY membership",
            room_id,
        )
        counts = {r[0]: int(r[1]) for r in rows}
        return {
            "m.joined_member_count": counts.get("join", 0),
            "m.invited_member_count": counts.get("invite", 0),
        }

    async def _invite(self, t: Txn, room_id: str) -> list[dict[str, Any]]:
        state = await queries.current_state(t, room_id)
        wanted = [e for e in state if e.type in INVITE_STATE_TYPES and e.state_key == ""]
        return [stripped_event(e) for e in wanted] + [
            stripped_event(e)
            for e in state
            if e.type == "m.room.member"
            and e.pdu.get("content", {}).get("membership") in ("invite", "knock")
        ]

    # ------------------------------------------------------------------ history access

    async def visible_upto(self, t: Txn, user_id: str, room_id: str) -> int:
        """The last position of `room_id` the user may read: all of it while joined, up to
        their leave after leaving; M_FORBIDDEN if they were never in the room."""
        found = await queries.membership(t, user_id, room_id)
        if found is None or found[0] not in ("join", "leave", "ban"):
            raise forbidden(f"User {user_id} is not in room {room_id}")
        membership, pos = found
        if membership == "join":
            return self.notifier.position
        if not await _ever_joined(t, room_id, user_id, pos):
            # Left or banned without ever joining (e.g. a rejected invite): no history.
            raise forbidden(f"User {user_id} is not in room {room_id}")
        return pos

    async def messages(
        self,
        who: Requester,
        room_id: str,
        *,
        from_token: StreamToken | None,
        to_token: StreamToken | None,
        backwards: bool,
        limit: int,
        flt: EventFilter,
    ) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            upto = await self.visible_upto(t, who.user_id, room_id)
            if backwards:
                start = from_token.room if from_token is not None else upto
                hi = min(start, upto)
                lo = to_token.room if to_token is not None else 0
                lo = max(lo, await visible_after(t, room_id, who.user_id))
                chunk, more = await _filtered(t, room_id, lo, hi, limit, flt, True)
            else:
                start = from_token.room if from_token is not None else 0
                start = max(start, await visible_after(t, room_id, who.user_id))
                hi = min(to_token.room, upto) if to_token is not None else upto
                chunk, more = await _filtered(t, room_id, start, hi, limit, flt, False)
            body: dict[str, Any] = {
                "start": (from_token or StreamToken(start)).encode(),
                "chunk": await self._format(t, who, chunk),
            }
            if more and chunk:
                end = chunk[-1].pos - 1 if backwards else chunk[-1].pos
                body["end"] = StreamToken(end).encode()
            if flt.lazy_load_members and chunk:
                senders = sorted({e.sender for e in chunk})
                members = await queries.member_events(t, room_id, senders)
                body["state"] = await self._format(t, who, members)
            return body

        return await self.db.read(q)

    async def _format(
        self, t: Txn, who: Requester, events: Sequence[StoredEvent]
    ) -> list[dict[str, Any]]:
        redactions = await queries.redaction_events(t, events)
        replaced = await queries.replaced_events(t, events)
        own = [e.event_id for e in events if e.sender == who.user_id]
        txns = await queries.txn_ids(t, who.user_id, who.device_id, own)
        now = now_ms()
        plain = functools.partial(client_event, redactions=redactions, now=now)
        bundles = await bundled_aggregations(t, events, who.user_id, plain)
        return [
            client_event(
                e,
                redactions=redactions,
                txn_ids=txns,
                replaced=replaced,
                relations=bundles,
                now=now,
            )
            for e in events
        ]

    async def context(
        self, who: Requester, room_id: str, event_id: str, limit: int, flt: EventFilter
    ) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            upto = await self.visible_upto(t, who.user_id, room_id)
            event = await queries.event_pos(t, event_id)
            if event is None or event.room_id != room_id or event.pos > upto:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            half = limit // 2
            floor = await visible_after(t, room_id, who.user_id)
            if event.pos <= floor:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            before, _ = await _filtered(t, room_id, floor, event.pos - 1, half, flt, True)
            after, _ = await _filtered(t, room_id, event.pos, upto, limit - half, flt, False)
            state = await queries.current_state(t, room_id, upto=upto)
            if flt.lazy_load_members:
                senders = {e.sender for e in [*before, event, *after]}
                state = [e for e in state if e.type != "m.room.member" or e.state_key in senders]
            start = (before[-1].pos - 1) if before else event.pos - 1
            end = after[-1].pos if after else event.pos
            return {
                "event": (await self._format(t, who, [event]))[0],
                "events_before": await self._format(t, who, before),
                "events_after": await self._format(t, who, after),
                "state": await self._format(t, who, state),
                "start": StreamToken(start).encode(),
                "end": StreamToken(end).encode(),
            }

        return await self.db.read(q)

    # ------------------------------------------------------------------ room reads

    async def event(self, who: Requester, room_id: str, event_id: str) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            upto = await self.visible_upto(t, who.user_id, room_id)
            event = await queries.event_pos(t, event_id)
            if event is None or event.room_id != room_id or event.pos > upto:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            return (await self._format(t, who, [event]))[0]

        return await self.db.read(q)

    async def state(self, who: Requester, room_id: str) -> list[dict[str, Any]]:
        async def q(t: Txn) -> list[dict[str, Any]]:
            upto = await self.visible_upto(t, who.user_id, room_id)
            return await self._format(t, who, await queries.current_state(t, room_id, upto=upto))

        return await self.db.read(q)

    async def state_content(
        self, who: Requester, room_id: str, event_type: str, state_key: str
    ) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            upto = await self.visible_upto(t, who.user_id, room_id)
            found = await queries.state_event(t, room_id, event_type, state_key)
            if found is None or found.pos > upto:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            return (await self._format(t, who, [found]))[0]

        return await self.db.read(q)

    async def members(
        self,
        who: Requester,
        room_id: str,
        membership: str | None,
        not_membership: str | None,
    ) -> list[dict[str, Any]]:
        async def q(t: Txn) -> list[dict[str, Any]]:
            upto = await self.visible_upto(t, who.user_id, room_id)
            state = await queries.current_state(t, room_id, upto=upto)
            members = []
            for e in state:
                if e.type != "m.room.member":
                    continue
                m = e.pdu.get("content", {}).get("membership")
                if membership is not None and m != membership:
                    continue
                if not_membership is not None and m == not_membership:
                    continue
                members.append(e)
            return await self._format(t, who, members)

        return await self.db.read(q)

    async def joined_members(self, who: Requester, room_id: str) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            found = await queries.membership(t, who.user_id, room_id)
            if found is None or found[0] != "join":
                raise forbidden(f"User {who.user_id} is not joined to room {room_id}")
            rows = await t.fetchall(
                "SELECT m.user_id, e.pdu FROM sync_memberships m"
                " JOIN sync_events e ON e.event_id = m.event_id"
                " WHERE m.room_id = ? AND m.membership = 'join'",
                room_id,
            )
            joined: dict[str, Any] = {}
            for user_id, pdu in rows:
                content = orjson.loads(pdu).get("content", {})
                entry: dict[str, Any] = {}
                for key in ("displayname", "avatar_url"):
                    if isinstance(content.get(key), str):
                        entry["display_name" if key == "displayname" else key] = content[key]
                joined[user_id] = entry
            return {"joined": joined}

        return await self.db.read(q)

    async def joined_rooms(self, user_id: str) -> list[str]:
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT room_id FROM sync_memberships WHERE user_id = ? AND membership = 'join'"
                " ORDER BY room_id",
                user_id,
            )
        )
        return [r[0] for r in rows]

    async def membership(self, user_id: str, room_id: str) -> tuple[str, int] | None:
        return await self.db.read(lambda t: queries.membership(t, user_id, room_id))

    # ------------------------------------------------------------------ transactions

    async def lookup_txn(self, who: Requester, scope: str, txn_id: str) -> str | None:
        value = await self.db.read(
            lambda t: t.fetchval(
                "SELECT event_id FROM sync_txns WHERE user_id = ? AND device_id = ?"
                " AND scope = ? AND txn_id = ?",
                who.user_id,
                who.device_id,
                scope,
                txn_id,
            )
        )
        return None if value is None else str(value)

    async def record_txn(self, who: Requester, scope: str, txn_id: str, event_id: str) -> None:
        await self.db.run(
            lambda t: t.execute(
                "INSERT INTO sync_txns (user_id, device_id, scope, txn_id, event_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                who.user_id,
                who.device_id,
                scope,
                txn_id,
                event_id,
            )
        )

    async def delete_txn(self, who: Requester, scope: str, txn_id: str) -> None:
        await self.db.run(
            lambda t: t.execute(
                "DELETE FROM sync_txns WHERE user_id = ? AND device_id = ? AND scope = ?"
                " AND txn_id = ?",
                who.user_id,
                who.device_id,
                scope,
                txn_id,
            )
        )

    async def forget(self, user_id: str, room_id: str) -> None:
        async def txn(t: Txn) -> None:
            found = await queries.membership(t, user_id, room_id)
            if found is None:
                raise MatrixError(404, "M_NOT_FOUND", "You were never in this room")
            if found[0] == "join":
                raise MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it")
            await t.execute(
                "INSERT INTO sync_forgotten (user_id, room_id, pos) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                user_id,
                room_id,
                found[1],
            )

        await self.db.run(txn)
