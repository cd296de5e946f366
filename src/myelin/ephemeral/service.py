"""The ephemeral component: typing, receipts, read markers and presence, and their part
of `/sync` (with account data and unread counts, which `/sync` sends beside them).

Sync tokens carry four positions for this component after the key server's two (see
`myelin.syncapi.tokens`): account data, receipts, typing and presence. A token without
them reads as 0, which sends everything, as an initial sync does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.ephemeral import presence, receipts
from myelin.ephemeral.typing import MAX_TIMEOUT_MS, Typing
from myelin.push.counts import CountCache, room_counts, thread_of
from myelin.push.evaluator import CompiledRuleSet, compiled_rules
from myelin.push.ruleset import StoredRules, effective_ruleset, pushrules_content
from myelin.storage import Database, Txn
from myelin.syncapi import queries
from myelin.syncapi.filters import EventFilter, SyncFilter
from myelin.syncapi.queries import joined_members, sharing_users
from myelin.syncapi.tokens import StreamToken
from myelin.userapi import accountdata
from myelin.userapi.accountdata import AccountData

#: Index of this component's first position among a sync token's `others`.
OFFSET = 2
#: How stale a last-active time may get before a `/sync` refreshes it.
REFRESH_MS = 60_000
_PRESENCE_SEEN_LIMIT = 100_000
#: Up to this many joined rooms, who shares a room is read room by room (`_sharing_users`).
_SHARING_BY_ROOM = 20
Wake = Callable[[Iterable[str]], None]


class EphemeralError(Exception):
    """A refused request: HTTP status, Matrix errcode and message."""

    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.errcode = errcode
        self.error = error


@dataclass(frozen=True, slots=True)
class Positions:
    account_data: int = 0
    receipts: int = 0
    typing: int = 0
    presence: int = 0

    @staticmethod
    def from_token(token: StreamToken) -> Positions:
        parts = list(token.others[OFFSET : OFFSET + 4])
        parts += [0] * (4 - len(parts))
        return Positions(*parts)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.account_data, self.receipts, self.typing, self.presence)


def now_ms() -> int:
    return int(time.time() * 1000)


async def _is_joined(t: Txn, room_id: str, user_id: str) -> bool:
    value = await t.fetchval(
        "SELECT membership FROM sync_memberships WHERE room_id = ? AND user_id = ?",
        room_id,
        user_id,
    )
    return bool(value == "join")


class Ephemeral:
    def __init__(self, db: Database, wake: Wake, account_data: AccountData) -> None:
        self.db = db
        self.wake = wake
        self.account_data = account_data
        self.typing = Typing()
        #: The joined members of each room with typing users, to wake when entries lapse.
        self._typing_members: dict[str, list[str]] = {}
        self._counts = CountCache()
        #: user ID -> (state, last-active time) as last written by `set_presence`.
        self._presence_seen: dict[str, tuple[str, int]] = {}
        #: Federation's outbound EDUs (`myelin.federation.edus.EduOut`), set while it runs:
        #: told of each typing change, receipt and presence change, it sends what concerns
        #: this server's users to the servers sharing their rooms.
        self.outbound: Any = None

    @staticmethod
    async def open(db: Database, wake: Wake, account_data: AccountData) -> Ephemeral:
        await db.migrate("ephemeral", "myelin.ephemeral.migrations")
        return Ephemeral(db, wake, account_data)

    async def _require_joined(self, room_id: str, user_id: str) -> list[str]:
        async def q(t: Txn) -> list[str]:
            if not await _is_joined(t, room_id, user_id):
                raise EphemeralError(
                    403, "M_FORBIDDEN", f"User {user_id} is not joined to room {room_id}"
                )
            return await joined_members(t, room_id)

        return await self.db.read(q)

    # ------------------------------------------------------------------ typing

    async def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        members = await self._require_joined(room_id, user_id)
        self._typing_members[room_id] = members
        self._expire_typing()
        if self.typing.set(room_id, user_id, typing, timeout_ms):
            self.wake(members)
        if self.outbound is not None:
            self.outbound.typing(room_id, user_id, typing, members)
        if typing:
            # A timer callback (not a task) tells the room when the entry lapses, so a
            # long-polling /sync learns it without polling.
            delay = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000 + 0.05
            asyncio.get_running_loop().call_later(delay, self._expire_typing)

    def _expire_typing(self) -> None:
        woken: set[str] = set()
        for room_id in self.typing.expire():
            woken.update(self._typing_members.get(room_id, ()))
            if not self.typing.users(room_id):
                self._typing_members.pop(room_id, None)
        if woken:
            self.wake(woken)

    # ------------------------------------------------------------------ receipts

    async def receipt(
        self, room_id: str, user_id: str, receipt_type: str, event_id: str, thread_id: str
    ) -> None:
        """Store a receipt for an event of the room the user is joined to."""

        async def txn(t: Txn) -> list[str]:
            if not await _is_joined(t, room_id, user_id):
                raise EphemeralError(
                    403, "M_FORBIDDEN", f"User {user_id} is not joined to room {room_id}"
                )
            found = await t.fetchone(
                "SELECT room_id, pdu FROM sync_events WHERE event_id = ?", event_id
            )
            if found is None or found[0] != room_id:
                raise EphemeralError(404, "M_NOT_FOUND", f"Unknown event {event_id} in room")
            if thread_id:
                in_thread = thread_of(orjson.loads(found[1]))
                related = (
                    in_thread == "" if thread_id == "main" else thread_id in (in_thread, event_id)
                )
                if not related:
                    raise EphemeralError(
                        400, "M_INVALID_PARAM", f"{event_id} is not in thread {thread_id}"
                    )
            pos = await receipts.put(
                t, room_id, receipt_type, user_id, thread_id, event_id, now_ms()
            )
            if pos is None:
                return []
            if receipt_type == receipts.PRIVATE:
                return [user_id]
            return await joined_members(t, room_id)

        woken = await self.db.run(txn)
        self.wake(woken)
        if self.outbound is not None and woken and receipt_type != receipts.PRIVATE:
            self.outbound.receipt(room_id, user_id, receipt_type, event_id, thread_id, woken)

    async def read_markers(
        self,
        room_id: str,
        user_id: str,
        fully_read: str | None,
        read: str | None,
        read_private: str | None,
    ) -> None:
        if fully_read is not None:
            await self._require_joined(room_id, user_id)
            exists = await self.db.read(
                lambda t: t.fetchval(
                    "SELECT room_id FROM sync_events WHERE event_id = ?", fully_read
                )
            )
            if exists != room_id:
                raise EphemeralError(404, "M_NOT_FOUND", f"Unknown event {fully_read} in room")
            await self.account_data.put(user_id, room_id, "m.fully_read", {"event_id": fully_read})
        if read is not None:
            await self.receipt(room_id, user_id, "m.read", read, "")
        if read_private is not None:
            await self.receipt(room_id, user_id, receipts.PRIVATE, read_private, "")

    # ------------------------------------------------------------------ presence

    async def set_presence(
        self, user_id: str, state: str, status_msg: str | None, *, keep_msg: bool = False
    ) -> None:
        """Set presence. With `keep_msg` (the `set_presence` of each `/sync`), an unchanged
        state refreshes the last-active time at most once a minute: no write per sync."""
        if keep_msg:
            # What this process last wrote (it is the only writer of presence) saves a
            # database read on every /sync of a user whose presence is fresh.
            seen = self._presence_seen.get(user_id)
            if seen is None:
                row = await self.db.read(
                    lambda t: t.fetchone(
                        "SELECT state, last_active_ts FROM presence WHERE user_id = ?", user_id
                    )
                )
                if row is not None:
                    seen = (str(row[0]), int(row[1]))
            if seen is not None and seen[0] == state and now_ms() - seen[1] < REFRESH_MS:
                return
        now = now_ms()

        async def txn(t: Txn) -> set[str] | None:
            if not await presence.put(t, user_id, state, status_msg, now, keep_msg):
                return None
            return await sharing_users(t, user_id)

        self._presence_seen.pop(user_id, None)  # unknown until the write is done
        users = await self.db.run(txn)
        if len(self._presence_seen) >= _PRESENCE_SEEN_LIMIT:
            self._presence_seen.clear()
        self._presence_seen[user_id] = (state, now)
        if users:
            self.wake(users)
        if self.outbound is not None and users is not None:
            self.outbound.presence(user_id, state, status_msg, users)

    async def get_presence(self, user_id: str) -> dict[str, Any] | None:
        return await self.db.read(lambda t: presence.get(t, user_id, now_ms()))

    async def shares_room(self, user_id: str, other: str) -> bool:
        return other in await self.db.read(lambda t: sharing_users(t, user_id))

    # ------------------------------------------------------------------ /sync

    async def _compiled_rules(self, t: Txn, user_id: str) -> CompiledRuleSet:
        raw = await t.fetchval("SELECT stored FROM push_rules WHERE user_id = ?", user_id)
        return compiled_rules(user_id, raw)  # the process-wide cache, shared with the pusher

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
    ) -> tuple[tuple[int, ...], bool]:
        """Add account data, ephemeral events, presence and unread counts to a `/sync`
        response built in the same snapshot; returns this component's positions and
        whether there was news."""
        typing = self.typing.view  # this may run off the event loop: read the snapshot
        typing_now = self.typing.now()
        prev = Positions.from_token(since) if since is not None else Positions()
        initial = since is None
        now = Positions(
            await accountdata.latest_position(t),
            await receipts.latest_position(t),
            typing.position,
            await presence.latest_position(t),
        )
        # The same query as the room part of this sync: one read in a shared transaction
        # (a joined room is never among the forgotten ones it leaves out).
        rows = [
            (room_id, pos)
            for room_id, membership, pos in await queries.memberships(t, user_id)
            if membership == "join" and pos <= upto_room
        ]
        joined = [str(r[0]) for r in rows if flt.allows_room(str(r[0]))]
        joined_set = set(joined)
        # Rooms joined since the token get their whole ephemeral state, as in an initial sync.
        fresh = {str(r[0]) for r in rows if since is None or int(r[1]) > since.room}
        join_section: dict[str, Any] = response["rooms"]["join"]
        news = False
        room_ephemeral: dict[str, list[dict[str, Any]]] = {}
        room_data: dict[str, list[dict[str, Any]]] = {}

        # Account data (global and per room): asked for only when its stream moved.
        global_events: list[dict[str, Any]] = []
        changed_data = (
            await accountdata.changes(t, user_id, prev.account_data, now.account_data)
            if initial or prev.account_data < now.account_data
            else []
        )
        for entry in changed_data:
            event = {"type": entry.type, "content": entry.content}
            if entry.room_id == "":
                if flt.account_data.allows(entry.type, user_id):
                    global_events.append(event)
            elif entry.room_id in joined_set and _allows(
                flt.room_account_data, entry.room_id, event
            ):
                room_data.setdefault(entry.room_id, []).append(event)
        if (
            initial
            and flt.account_data.allows(accountdata.PUSH_RULES_TYPE, user_id)
            and not any(e["type"] == accountdata.PUSH_RULES_TYPE for e in global_events)
        ):
            rules = effective_ruleset(StoredRules(), user_id)
            global_events.append(
                {"type": accountdata.PUSH_RULES_TYPE, "content": pushrules_content(rules)}
            )
        if global_events:
            response["account_data"] = {"events": global_events}
            news = news or not initial

        # Receipts and typing.
        receipt_events = await receipts.receipt_events(
            t, user_id, [r for r in joined if r not in fresh], prev.receipts, now.receipts
        )
        receipt_events.update(
            await receipts.receipt_events(
                t, user_id, [r for r in joined if r in fresh], 0, now.receipts
            )
        )
        typing_after = 0 if prev.typing > now.typing else prev.typing
        for room_id in joined:
            events: list[dict[str, Any]] = []
            typing_users = typing.users(room_id, typing_now)
            # A room new to this sync gets its typing set if anybody typed there since
            # the start, even when nobody types now: an empty set tells a client that
            # kept the old one (as initial syncs of Synapse do; Sytest relies on it).
            after = 0 if room_id in fresh else typing_after
            if typing.changed_after(room_id, after):
                events.append({"type": "m.typing", "content": {"user_ids": typing_users}})
            if room_id in receipt_events:
                events.append(receipt_events[room_id])
            events = [e for e in events if _allows(flt.ephemeral, room_id, e)]
            if events:
                room_ephemeral[room_id] = events

        for room_id in set(room_ephemeral) | set(room_data):
            room = join_section.get(room_id)
            if room is None:
                room = join_section[room_id] = _empty_room(upto_room)
            if room_id in room_ephemeral:
                room["ephemeral"] = {"events": room_ephemeral[room_id]}
            if room_id in room_data:
                room["account_data"] = {"events": room_data[room_id]}
            news = True

        # Unread counts of every room in the response.
        if join_section:
            compiled = await self._compiled_rules(t, user_id)
            for room_id, room in join_section.items():
                counts = await room_counts(t, room_id, user_id, upto_room, compiled, self._counts)
                room["unread_notifications"] = counts.main.to_json()
                if thread_counts:
                    room["unread_thread_notifications"] = {
                        k: v.to_json() for k, v in counts.threads.items()
                    }
                else:  # without the filter option, threaded events count in the room
                    for thread in counts.threads.values():
                        room["unread_notifications"]["notification_count"] += (
                            thread.notification_count
                        )
                        room["unread_notifications"]["highlight_count"] += thread.highlight_count

        # Presence of the users sharing a room with the user.
        # Who shares a room is only worth asking when some presence changed since.
        presence_events: list[dict[str, Any]] = []
        if now.presence > prev.presence:
            users = await _sharing_users(t, user_id, [str(r[0]) for r in rows])
            presence_events = [
                e
                for e in await presence.events(t, users, prev.presence, now.presence, now_ms())
                if flt.presence.allows(e["type"], e["sender"])
            ]
        if not initial:
            # Users newly sharing a room (a room joined since, or a member who joined
            # since) get their current presence once, whatever its position.
            newcomers = await _newly_sharing(t, join_section, fresh & joined_set)
            newcomers -= {e["sender"] for e in presence_events}
            if newcomers:
                found = await presence.events(t, newcomers, -1, now.presence, now_ms())
                # One never seen online has no row: offline, as for everyone unknown.
                found += [
                    {"type": "m.presence", "sender": u, "content": {"presence": "offline"}}
                    for u in sorted(newcomers - {e["sender"] for e in found})
                ]
                presence_events += [e for e in found if flt.presence.allows(e["type"], e["sender"])]
        if flt.presence.limit is not None:
            presence_events = presence_events[-flt.presence.limit :] if flt.presence.limit else []
        if presence_events:
            response["presence"] = {"events": presence_events}
            news = True
        return now.as_tuple(), news


async def _newly_sharing(t: Txn, join_section: dict[str, Any], fresh: set[str]) -> set[str]:
    """Users an incremental sync shows joining (member events in its join section) and
    the members of rooms joined since the token: those who newly share a room."""
    users: set[str] = set()
    for room in join_section.values():
        for part in ("timeline", "state"):
            for event in room.get(part, {}).get("events", ()):
                if (
                    event.get("type") == "m.room.member"
                    and event.get("content", {}).get("membership") == "join"
                ):
                    users.add(str(event.get("state_key")))
    for room_id in fresh:
        users.update(await joined_members(t, room_id))
    return users


async def _sharing_users(t: Txn, user_id: str, joined: list[str]) -> set[str]:
    """`sharing_users` from the user's joined rooms, one member query per room: in the
    shared read of many `/sync`s woken together (`myelin.syncapi.batch`), each room's
    members are read once for all of them, where the join of `sharing_users` is per user.
    A user in many rooms gets the one join."""
    if len(joined) > _SHARING_BY_ROOM:
        return await sharing_users(t, user_id)
    users = {user_id}
    for room_id in joined:
        users.update(await joined_members(t, room_id))
    return users


def _allows(flt: EventFilter, room_id: str, event: dict[str, Any]) -> bool:
    """A room-section filter: its rooms and its event types (these events have no sender
    of their own, so a `senders` list admits none of them)."""
    sender = event.get("sender", "")
    return flt.allows_room(room_id) and flt.allows(str(event["type"]), str(sender))


def _empty_room(upto_room: int) -> dict[str, Any]:
    """A joined room with nothing new in its timeline or state (only ephemeral news)."""
    return {
        "timeline": {"events": [], "limited": False, "prev_batch": StreamToken(upto_room).encode()},
        "state": {"events": []},
        "ephemeral": {"events": []},
        "account_data": {"events": []},
        "unread_notifications": {"highlight_count": 0, "notification_count": 0},
    }
