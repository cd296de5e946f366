"""The federation sender: a reader of the room event log, like sync and the pusher.

It follows the log with a `LogConsumer` from its own offset (`federation_sender_position`,
saved debounced), only up to the sync reader's position, woken by the sync notifier, never
by polling. Each accepted new event goes to every other server with a joined member in the
room (and, for a membership event, to the server of its target): events of this server's
users, and membership events that reached this server by send_join/send_leave (other
servers learn of those only from here; a duplicate is harmless). EDUs are queued by the
components that produce them through `send_edu`.

Queued transactions live in memory: after a crash, events queued but not yet delivered
are not sent again; the remote fetches them as missing events when the next one arrives.
A first start begins at the current position: history is never sent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from myelin.eventlog.api import EventLog, LogEntry
from myelin.eventlog.consumer import LogConsumer
from myelin.federation.client import FederationClient
from myelin.federation.rooms import joined_users, server_of
from myelin.federation.sender.queues import DestinationQueue
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputKind, LogPayload, Origin, Status
from myelin.storage import Database, Txn
from myelin.syncapi.notifier import Notifier
from myelin.tasks import running

log = logging.getLogger("myelin.federation.sender")

COMPONENT = "federation"
MIGRATIONS = "myelin.federation.migrations"


async def _stored_position(t: Txn) -> int | None:
    value = await t.fetchval("SELECT pos FROM federation_sender_position WHERE id = 1")
    return None if value is None else int(value)


async def _save_position(t: Txn, pos: int) -> None:
    await t.execute(
        "INSERT INTO federation_sender_position (id, pos) VALUES (1, ?)"
        " ON CONFLICT (id) DO UPDATE SET pos = excluded.pos",
        pos,
    )


class FederationSender:
    def __init__(
        self,
        db: Database,
        log: EventLog,
        notifier: Notifier,
        rs: Roomserver,
        client: FederationClient,
        server_name: str,
    ) -> None:
        self.db = db
        self.log = log
        self.notifier = notifier
        self.rs = rs
        self.client = client
        self.server_name = server_name
        self.consumer = LogConsumer(
            "federation",
            log,
            notifier,
            load=lambda: db.read(_stored_position),
            save=self._save_position,
            handle=self._handle_batch,
        )
        self._rooms: dict[str, _Joined] = {}
        """Joined members per room (cached; kept up to date from the log)."""
        self._queues: dict[str, DestinationQueue] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.on_join: list[Callable[[str, str, set[str]], Awaitable[None]]] = []
        """Told of each join, `(room, user, servers in the room)`, after its PDU was
        queued (presence is shared with new servers there)."""
        self.on_leave: list[Callable[[str, str], Awaitable[None]]] = []
        """Told of each leave, kick or ban, `(room, user)` (remote device lists are kept
        only while a room is shared)."""

    async def open(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)
        await self.consumer.open()

    @property
    def position(self) -> int:
        return self.consumer.position

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self.consumer.run()
                raise asyncio.CancelledError  # stop the destination tasks
        except asyncio.CancelledError:
            pass
        finally:
            self._tg = None

    async def _save_position(self, pos: int) -> None:
        await self.db.run(functools.partial(_save_position, pos=pos), durable=False)

    async def _handle_batch(self, entries: Sequence[LogEntry], upto: int) -> None:
        # Re-handled after a crash inside the save window: a repeated PDU is deduplicated
        # by its receiver.
        for entry in entries:
            payload = LogPayload.decode(entry.record.payload)
            try:
                await self._handle(payload)
            except Exception:
                log.exception("federating %s failed", payload.event.event_id)

    def _queue(self, destination: str) -> DestinationQueue | None:
        queue = self._queues.get(destination)
        if queue is None:
            if self._tg is None:
                return None
            queue = DestinationQueue(destination, self.client, self.server_name)
            self._queues[destination] = queue
            self._tg.create_task(queue.run(), name=f"federation-to-{destination}")
        return queue

    def send_edu(self, destinations: Iterable[str], edu_type: str, content: Any) -> dict[str, int]:
        """Queue an EDU for each destination (this server skipped); its number in each
        destination's queue, for `edus_done`."""
        numbers: dict[str, int] = {}
        for destination in destinations:
            if destination and destination != self.server_name:
                queue = self._queue(destination)
                if queue is not None:
                    numbers[destination] = queue.add_edu(edu_type, content)
        return numbers

    async def edus_done(self, numbers: dict[str, int], timeout_s: float) -> None:
        """Wait, at most `timeout_s`, until each destination has answered the transaction
        carrying its EDU of that number (`send_edu`'s answer); a slow server is not
        waited for beyond that, and one whose last transaction failed (a retry pending)
        not at all (its EDUs stay queued either way)."""
        waits = [
            queue.edus_done(number)
            for destination, number in numbers.items()
            if (queue := self._queues.get(destination)) is not None and not queue.failing
        ]
        if not waits:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.info("EDUs not yet answered after %.1f s: %s", timeout_s, sorted(numbers))

    async def servers_of(self, room_id: str) -> set[str]:
        """Servers with a joined member in the room (this one included)."""
        return set((await self._joined(room_id)).servers)

    async def _joined(self, room_id: str) -> _Joined:
        found = self._rooms.get(room_id)
        if found is None:
            found = _Joined()
            for user_id in await joined_users(self.rs, room_id):
                found.add(user_id)
            self._rooms[room_id] = found
            if len(self._rooms) > 10_000:
                del self._rooms[next(iter(self._rooms))]
        return found

    def _track(self, payload: LogPayload) -> None:
        """Follow membership changes of a cached room: O(1) when the event changes its
        own slot (the usual case), a reload when state resolution changed others."""
        event = payload.event
        joined = self._rooms.get(event.room_id)
        if joined is None:
            return
        for event_type, state_key, event_id in payload.state_delta:
            if event_type != "m.room.member":
                continue
            if event_id != event.event_id:
                del self._rooms[event.room_id]
                return
            if event.membership == "join":
                joined.add(state_key)
            else:
                joined.discard(state_key)

    async def _handle(self, payload: LogPayload) -> None:
        event = payload.event
        self._track(payload)
        if payload.status is not Status.ACCEPTED or payload.kind is not InputKind.NEW:
            return
        if event.membership in ("leave", "ban") and event.state_key:
            for leave_hook in self.on_leave:
                await leave_hook(event.room_id, event.state_key)
        origin = server_of(event.sender)
        if payload.origin is Origin.FEDERATED and event.type != "m.room.member":
            return
        servers = await self.servers_of(event.room_id)
        if event.membership == "join" and event.state_key and len(servers) > 1:
            for hook in self.on_join:
                await hook(event.room_id, event.state_key, servers)
        if event.type == "m.room.member" and event.state_key:
            target = server_of(event.state_key)
            # An invite reached its target by /invite already.
            if event.membership != "invite":
                servers.add(target)
        servers.discard(self.server_name)
        servers.discard(origin)
        if not servers:
            return
        pdu = dict(event.pdu)
        for destination in sorted(servers):
            queue = self._queue(destination)
            if queue is not None:
                queue.add_pdu(pdu)


class _Joined:
    """The joined members of a room and how many each server has."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.servers: dict[str, int] = {}

    def add(self, user_id: str) -> None:
        if user_id not in self.users:
            self.users.add(user_id)
            server = server_of(user_id)
            self.servers[server] = self.servers.get(server, 0) + 1

    def discard(self, user_id: str) -> None:
        if user_id in self.users:
            self.users.remove(user_id)
            server = server_of(user_id)
            left = self.servers[server] - 1
            if left:
                self.servers[server] = left
            else:
                del self.servers[server]


@asynccontextmanager
async def running_federation_sender(
    db: Database,
    log: EventLog,
    notifier: Notifier,
    rs: Roomserver,
    client: FederationClient,
    server_name: str,
) -> AsyncIterator[FederationSender]:
    """Open the sender and run it for as long as the block lasts; an error of the block
    passes through unchanged."""
    sender = FederationSender(db, log, notifier, rs, client, server_name)
    await sender.open()
    async with running([(sender.run(), "federation-sender")]):
        yield sender
