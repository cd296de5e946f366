"""The pusher: a reader of the room event log that notifies push gateways.

For each accepted new event it finds the users with `http` pushers who are joined to the
room (or invited by the event), runs the event through each one's push rules and, when
it notifies, queues a notification for each of their pushers (see `gateway`, which
delivers them, one task per pusher, with retries). After a read receipt of such a user
it queues a badge-only notification with the new unread count, so the phone's badge
clears.

It follows the log with a `LogConsumer` from its own offset, kept in `push_position`,
and only up to the sync reader's position: membership and room state come from the sync
projections, which must already include the event. It waits on the sync notifier (woken
after every applied batch and every receipt), never by polling. A first start begins at
the current position: history is never pushed. The offset is saved at once after a batch
that queued notifications (so a restart, or a crash once the save is done, pushes nothing
twice), otherwise debounced (about once a second while busy); a crash between queueing and
delivering loses those pushes.

Most servers have few users with pushers, and most events none in their room: the set
of users with `http` pushers is kept in memory (loaded at start, grown by
`accountdata.watch_pushers`; a user whose pushers all went stays in it, which only
costs a query), and so are the rooms each of them is joined to (loaded with the user,
then followed through the membership changes of the log: a superset, since a change
that state resolution made is taken as a join). An event is looked at in the database
only when its room has such a user other than its sender, or it invites one; while no
user has a pusher, an event or a receipt costs no database work at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson

from myelin.ephemeral.receipts import latest_position as latest_receipt_position
from myelin.eventlog.api import EventLog, LogEntry
from myelin.eventlog.consumer import LogConsumer
from myelin.push.counts import CountCache, evaluate_event, room_context, room_counts
from myelin.push.evaluator import CompiledRuleSet, compiled_rules
from myelin.push.gateway import (
    EventInfo,
    GatewayClient,
    Pusher,
    PusherKey,
    PusherQueue,
    deliver,
    notification_body,
)
from myelin.roomserver.types import InputKind, LogPayload, Status
from myelin.storage import Database, Txn
from myelin.syncapi.notifier import Notifier
from myelin.tasks import running
from myelin.userapi.accountdata import AccountData, watch_pushers

log = logging.getLogger("myelin.push")

COMPONENT = "push"
MIGRATIONS = "myelin.push.migrations"


async def _stored_position(t: Txn) -> int | None:
    value = await t.fetchval("SELECT pos FROM push_position WHERE id = 1")
    return None if value is None else int(value)


async def _save_position(t: Txn, pos: int) -> None:
    await t.execute(
        "INSERT INTO push_position (id, pos) VALUES (1, ?)"
        " ON CONFLICT (id) DO UPDATE SET pos = excluded.pos",
        pos,
    )


async def _state_content(t: Txn, room_id: str, event_type: str, state_key: str) -> dict[str, Any]:
    raw = await t.fetchval(
        "SELECT e.pdu FROM sync_current_state s JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.room_id = ? AND s.type = ? AND s.state_key = ?",
        room_id,
        event_type,
        state_key,
    )
    content = orjson.loads(raw).get("content") if raw is not None else None
    return content if isinstance(content, dict) else {}


def _stripped_state(payload: LogPayload) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The stripped state of a federated invite to a room this server is not in (kept as
    an outlier with the inviting server's `invite_room_state`), by (type, state key);
    None for any other event."""
    event = payload.event
    if payload.status is not Status.OUTLIER or event.membership != "invite":
        return None
    unsigned = event.pdu.get("unsigned")
    stripped = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
    if not isinstance(stripped, list):
        return None
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for item in stripped:
        if not isinstance(item, dict):
            continue
        kind, key, content = item.get("type"), item.get("state_key"), item.get("content")
        if isinstance(kind, str) and isinstance(key, str) and isinstance(content, dict):
            out[(kind, key)] = content
    return out


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class PushSender:
    """Follows the log and feeds the pushers; `run()` until the notifier closes."""

    def __init__(
        self,
        db: Database,
        log: EventLog,
        notifier: Notifier,
        store: AccountData,
        client: GatewayClient | None = None,
    ) -> None:
        self.db = db
        self.log = log
        self.notifier = notifier
        self.store = store
        self.client = client or GatewayClient()
        self.receipt_position = 0
        #: Receipts went by while nobody had a pusher (`receipt_position` is behind).
        self._receipts_unread = False
        #: Users with at least one pusher (a superset: removals are noticed lazily).
        self.pusher_users: set[str] = set()
        #: Users with pushers whose joined rooms are not loaded into `_rooms` yet.
        self._unloaded: set[str] = set()
        #: Room ID -> the users with pushers joined to it (possibly more).
        self._rooms: dict[str, set[str]] = {}
        self._stop_watching = watch_pushers(db, self._pusher_added)
        self.consumer = LogConsumer(
            "push",
            log,
            notifier,
            load=lambda: db.read(_stored_position),
            save=self._save_position,
            handle=self._handle,
            after=self._receipts,
        )
        self._counts = CountCache()
        self._queues: dict[PusherKey, PusherQueue] = {}
        self._tasks: dict[PusherKey, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None

    @property
    def position(self) -> int:
        return self.consumer.position

    async def open(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)
        rows = await self.db.read(lambda t: t.fetchall("SELECT DISTINCT user_id FROM pushers"))
        for (user_id,) in rows:
            self._pusher_added(user_id)
        await self.consumer.open()
        self.receipt_position = (
            await self.db.read(lambda t: t.fetchval("SELECT max(pos) FROM receipts")) or 0
        )

    async def _save_position(self, pos: int) -> None:
        await self.db.run(lambda t: _save_position(t, pos), durable=False)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    await self.consumer.run()
                finally:
                    for task in self._tasks.values():
                        task.cancel()
        finally:
            self._tg = None
            self._stop_watching()
            await self.client.close()

    # ------------------------------------------------------------------ the log

    def _pusher_added(self, user_id: str) -> None:
        if user_id not in self.pusher_users:
            self.pusher_users.add(user_id)
            self._unloaded.add(user_id)

    async def _load_rooms(self) -> None:
        users = list(self._unloaded)
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT room_id, user_id FROM sync_memberships"
                " WHERE membership = 'join' AND user_id = ANY(?)",
                users,
            )
        )
        self._unloaded.difference_update(users)
        for room_id, user_id in rows:
            self._rooms.setdefault(room_id, set()).add(user_id)

    def _track(self, payload: LogPayload) -> None:
        """Follow the joins of users with pushers (a superset: see the module doc)."""
        event = payload.event
        for event_type, state_key, event_id in payload.state_delta:
            if event_type != "m.room.member" or state_key not in self.pusher_users:
                continue
            if event_id == event.event_id and event.membership != "join":
                members = self._rooms.get(event.room_id)
                if members is not None:
                    members.discard(state_key)
                    if not members:
                        del self._rooms[event.room_id]
            else:
                self._rooms.setdefault(event.room_id, set()).add(state_key)

    def _may_push(self, payload: LogPayload) -> bool:
        """Whether a user with a pusher may be notified of the event (no false negative)."""
        event = payload.event
        if event.type == "m.room.member" and event.state_key in self.pusher_users:
            return True  # an invite notifies its target, who is not joined
        members = self._rooms.get(event.room_id)
        if not members:
            return False
        return len(members) > 1 or event.sender not in members

    async def _handle(self, entries: Sequence[LogEntry], upto: int) -> bool:
        """Queue the notifications of a batch; whether it queued any, so that the offset
        past it is saved at once (a restart must not push those events again)."""
        if not self.pusher_users:
            return False  # nobody to push to: not even decoding
        pushed = False
        for entry in entries:
            if self._unloaded:  # a pusher was set (even during this batch's awaits)
                await self._load_rooms()
            payload = LogPayload.decode(entry.record.payload)
            if payload.status is Status.ACCEPTED:
                self._track(payload)
                new = payload.kind is InputKind.NEW
            else:  # an invite over federation to a room this server is not in is news too
                new = _stripped_state(payload) is not None
            if new and self._may_push(payload):
                try:
                    pushed = await self._push_event(payload, upto) or pushed
                except Exception:  # one bad event must not stop every push
                    log.exception("push of %s failed", payload.event.event_id)
        return pushed

    async def _push_event(self, payload: LogPayload, upto: int) -> bool:
        event = payload.event
        room_id = event.room_id
        invited = event.state_key if event.type == "m.room.member" else None

        async def q(t: Txn) -> list[tuple[Pusher, dict[str, Any]]]:
            rows = await t.fetchall(
                "SELECT p.user_id, p.pusher FROM pushers p JOIN sync_memberships m"
                " ON m.user_id = p.user_id AND m.room_id = ?"
                " WHERE p.user_id <> ? AND (m.membership = 'join'"
                " OR (m.membership = 'invite' AND m.user_id = ?))",
                room_id,
                event.sender,
                invited or "",
            )
            by_user: dict[str, list[Pusher]] = {}
            for user_id, raw in rows:
                pusher = Pusher.from_stored(user_id, orjson.loads(raw))
                if pusher is not None:
                    by_user.setdefault(user_id, []).append(pusher)
            out: list[tuple[Pusher, dict[str, Any]]] = []
            info: EventInfo | None = None
            pdu = dict(event.pdu)
            for user_id, pushers in by_user.items():
                rules = await self._compiled_rules(t, user_id)
                context, levels = await room_context(t, room_id, user_id)
                actions = evaluate_event(rules, context, levels, pdu)
                if actions is None or not actions.is_notify:
                    continue
                if info is None:
                    info = await self._event_info(t, payload)
                unread = await self._unread(t, user_id, upto)
                high = actions.is_highlight or actions.sound is not None
                for pusher in pushers:
                    body = notification_body(pusher, info, unread, actions.tweaks, high)
                    out.append((pusher, body))
            return out

        queued = await self.db.read(q)
        for pusher, body in queued:
            self._queue(pusher, body)
        return bool(queued)

    async def _event_info(self, t: Txn, payload: LogPayload) -> EventInfo:
        event = payload.event
        stripped = _stripped_state(payload)
        if stripped is None:
            member = await _state_content(t, event.room_id, "m.room.member", event.sender)
            name_content = await _state_content(t, event.room_id, "m.room.name", "")
            alias_content = await _state_content(t, event.room_id, "m.room.canonical_alias", "")
        else:  # a room this server is not in: what the inviting server told of it
            member = stripped.get(("m.room.member", event.sender), {})
            name_content = stripped.get(("m.room.name", ""), {})
            alias_content = stripped.get(("m.room.canonical_alias", ""), {})
        name = _text(name_content.get("name"))
        alias = _text(alias_content.get("alias"))
        content = event.pdu.get("content")
        return EventInfo(
            event_id=event.event_id,
            room_id=event.room_id,
            type=event.type,
            sender=event.sender,
            content=content if isinstance(content, dict) else {},
            state_key=event.state_key,
            sender_display_name=_text(member.get("displayname")),
            room_name=name or alias,
            room_alias=alias,
        )

    # ------------------------------------------------------------------ counts

    async def _compiled_rules(self, t: Txn, user_id: str) -> CompiledRuleSet:
        raw = await t.fetchval("SELECT stored FROM push_rules WHERE user_id = ?", user_id)
        return compiled_rules(user_id, raw)

    async def _unread(self, t: Txn, user_id: str, upto: int) -> int:
        """The badge: the user's unread notifications over all their joined rooms."""
        rules = await self._compiled_rules(t, user_id)
        rooms = await t.fetchall(
            "SELECT room_id FROM sync_memberships WHERE user_id = ? AND membership = 'join'",
            user_id,
        )
        total = 0
        for (room_id,) in rooms:
            counts = await room_counts(t, room_id, user_id, upto, rules, self._counts)
            total += counts.main.notification_count
            total += sum(c.notification_count for c in counts.threads.values())
        return total

    async def _receipts(self, upto: int) -> None:
        """Badge-only notifications for users with pushers whose receipts moved."""
        since = self.receipt_position
        if not self.pusher_users:
            # Nobody to badge, and no query to learn how far the receipts went: the
            # first pass with a pusher skips them instead (see `_catch_up_receipts`).
            self._receipts_unread = True
            return
        if self._receipts_unread:
            await self._catch_up_receipts()
            return

        async def q(t: Txn) -> tuple[int, list[tuple[Pusher, dict[str, Any]]]]:
            latest = int(await t.fetchval("SELECT max(pos) FROM receipt_stream") or 0)
            if latest <= since:
                return latest, []
            rooms = await t.fetchall(
                "SELECT DISTINCT room_id FROM receipt_stream WHERE pos > ? AND pos <= ?",
                since,
                latest,
            )
            rows = await t.fetchall(
                "SELECT p.user_id, p.pusher FROM pushers p WHERE p.user_id IN"
                " (SELECT user_id FROM receipts WHERE room_id = ANY(?) AND pos > ? AND pos <= ?)",
                [r[0] for r in rooms],
                since,
                latest,
            )
            out: list[tuple[Pusher, dict[str, Any]]] = []
            unread: dict[str, int] = {}
            for user_id, raw in rows:
                pusher = Pusher.from_stored(user_id, orjson.loads(raw))
                if pusher is None:
                    continue
                if user_id not in unread:
                    unread[user_id] = await self._unread(t, user_id, upto)
                out.append((pusher, notification_body(pusher, None, unread[user_id], {}, False)))
            return latest, out

        latest, bodies = await self.db.read(q)
        self.receipt_position = max(self.receipt_position, latest)
        for pusher, body in bodies:
            self._queue(pusher, body)

    async def _catch_up_receipts(self) -> None:
        """Move past the receipts made while no user had a pusher, without badges.

        They were made before the first pusher was set (or within one wake of it), so a
        badge for them would only repeat an older count after the pushes the new pusher
        already got: a gateway would take it for the badge of a later receipt."""
        latest = await self.db.read(latest_receipt_position)
        self.receipt_position = max(self.receipt_position, latest)
        self._receipts_unread = False

    # ------------------------------------------------------------------ delivery

    def _queue(self, pusher: Pusher, body: dict[str, Any]) -> None:
        key = pusher.key
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = PusherQueue()
        queue.put(pusher, body)
        if key not in self._tasks and self._tg is not None:
            task = self._tg.create_task(
                deliver(self.client, queue, self._reject), name=f"pusher {key.app_id}"
            )
            self._tasks[key] = task
            task.add_done_callback(lambda _: self._forget(key, task))

    def _forget(self, key: PusherKey, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
            self._queues.pop(key, None)

    async def _reject(self, key: PusherKey) -> None:
        await self.store.delete_pusher(key.user_id, key.app_id, key.pushkey)

    async def idle(self) -> None:
        """Wait until every queued notification was delivered or dropped (for tests)."""
        for queue in list(self._queues.values()):
            await queue.items.join()


@asynccontextmanager
async def running_sender(
    db: Database, log: EventLog, notifier: Notifier
) -> AsyncIterator[PushSender]:
    """Open the pusher and run it for as long as the block lasts; an error of the block
    passes through unchanged (not wrapped in the task group's ExceptionGroup)."""
    sender = PushSender(db, log, notifier, AccountData(db, notifier.wake))
    await sender.open()
    async with running([(sender.run(), "push-sender")]):
        yield sender
