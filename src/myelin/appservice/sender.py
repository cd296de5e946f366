"""Transactions to application services: one reader of the room event log per AS.

Each application service with a URL gets its own task that follows the log from its own
stored offset (`as_positions`), picks the accepted events the AS is interested in
(application-service-api.md: its users as sender, as a membership's target or joined to
the room; its aliases pointing at the room; its room IDs) and PUTs them, in log order, as
one transaction `PUT /_matrix/app/v1/transactions/{txnId}`. The offset moves only after
the AS answered 200, so delivery is at-least-once and in order; transaction IDs count up
per AS and are stored with the offset, so a batch retried (even after a restart) keeps its
ID and the AS can drop the duplicate. With `receive_ephemeral`, read receipts in the AS's
rooms, and typing there, follow as `ephemeral` (presence is not sent yet). A
failing AS is retried with exponential backoff and delays only its own task, never sends
or other services.

Membership and aliases come from the sync and directory projections, so a reader never
goes past the sync reader's position (`Notifier.position`); it follows the log with a
`LogConsumer`, waiting on the notifier, woken after every applied batch, never by
polling. A first start begins at the current position: an AS gets no history. The offset
is saved at once after every delivered transaction (with its ID) and debounced otherwise:
after a crash a reader re-reads at most the last second of batches that delivered
nothing, which is idempotent. With no application service configured nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from myelin.appservice.client import V1, AppServiceClient
from myelin.appservice.registration import AppService
from myelin.ephemeral.typing import Typing
from myelin.eventlog.api import EventLog, LogEntry
from myelin.eventlog.consumer import LogConsumer
from myelin.roomserver.types import InputKind, LogPayload, Status
from myelin.storage import Database, Migration, Txn
from myelin.syncapi.notifier import Notifier
from myelin.tasks import running

log = logging.getLogger("myelin.appservice")

COMPONENT = "appservice"
MIGRATIONS = [
    Migration(
        1,
        """
CREATE TABLE as_positions (
    as_id TEXT PRIMARY KEY,
    pos BIGINT NOT NULL,
    receipt_pos BIGINT NOT NULL,
    -- The ID of the last transaction the AS accepted; the next one is txn + 1, so a
    -- batch re-sent after a restart carries the ID it had before.
    txn BIGINT NOT NULL
);
-- Rooms an application service published in its own list for a third-party network
-- (PUT /directory/list/appservice/{networkId}/{roomId}); read by /publicRooms.
CREATE TABLE as_room_lists (
    as_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (as_id, network_id, room_id)
);
""",
    )
]
#: Most events in one transaction.
MAX_EVENTS = 100
FIRST_BACKOFF = 0.25
#: The longest wait between two attempts at a dead AS: short enough that an AS coming
#: back is served promptly.
MAX_BACKOFF = 8.0

_CLIENT_KEYS = ("content", "event_id", "origin_server_ts", "room_id", "sender", "type")


def client_format(pdu: dict[str, Any]) -> dict[str, Any]:
    """The event as a client sees it (the transaction carries client-format events)."""
    out = {k: pdu[k] for k in _CLIENT_KEYS if k in pdu}
    if "state_key" in pdu:
        out["state_key"] = pdu["state_key"]
    if "redacts" in pdu:
        out["redacts"] = pdu["redacts"]
    unsigned = pdu.get("unsigned")
    if isinstance(unsigned, dict) and unsigned:
        out["unsigned"] = unsigned
    return out


async def _stored(t: Txn, as_id: str) -> tuple[int, int, int] | None:
    row = await t.fetchone("SELECT pos, receipt_pos, txn FROM as_positions WHERE as_id = ?", as_id)
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


async def _save(t: Txn, as_id: str, pos: int, receipt_pos: int, txn: int) -> None:
    await t.execute(
        "INSERT INTO as_positions (as_id, pos, receipt_pos, txn) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (as_id) DO UPDATE SET pos = excluded.pos,"
        " receipt_pos = excluded.receipt_pos, txn = excluded.txn",
        as_id,
        pos,
        receipt_pos,
        txn,
    )


async def is_interested(t: Txn, service: AppService, pdu: dict[str, Any]) -> bool:
    """Whether `service` should receive this event (its namespaces, the room's state)."""
    sender = pdu.get("sender")
    room_id = pdu.get("room_id")
    if isinstance(sender, str) and service.is_user_in_namespace(sender):
        return True
    state_key = pdu.get("state_key")
    if (
        pdu.get("type") == "m.room.member"
        and isinstance(state_key, str)
        and service.is_user_in_namespace(state_key)
    ):
        return True
    if not isinstance(room_id, str):
        return False
    return await is_interested_in_room(t, service, room_id)


async def is_interested_in_room(t: Txn, service: AppService, room_id: str) -> bool:
    """Whether the room is the AS's: its room IDs, its aliases, or one of its users in it."""
    if service.is_room_in_namespace(room_id):
        return True
    if service.aliases:
        rows = await t.fetchall("SELECT alias FROM dir_aliases WHERE room_id = ?", room_id)
        if any(service.is_alias_in_namespace(r[0]) for r in rows):
            return True
    if service.users:
        rows = await t.fetchall(
            "SELECT user_id FROM sync_memberships WHERE room_id = ? AND membership = 'join'",
            room_id,
        )
        if any(service.is_user_in_namespace(r[0]) for r in rows):
            return True
    return False


class ServiceReader:
    """Follows the log for one application service and delivers its transactions."""

    def __init__(
        self,
        service: AppService,
        db: Database,
        log: EventLog,
        notifier: Notifier,
        client: AppServiceClient,
        typing: Typing | None = None,
    ) -> None:
        self.service = service
        self.typing = typing
        #: The typing stream is in memory: its position is not stored (typing is lost
        #: on restart anyway).
        self.typing_position = typing.position if typing is not None else 0
        self.db = db
        self.log = log
        self.notifier = notifier
        self.client = client
        self.receipt_position = 0
        self.txn = 0
        self._stored_position: int | None = None
        self.consumer = LogConsumer(
            f"appservice {service.id}",
            log,
            notifier,
            load=self._load,
            save=self._save,
            handle=self._handle,
            after=self._after,
            batch=MAX_EVENTS,
        )

    @property
    def position(self) -> int:
        return self.consumer.position

    async def open(self) -> None:
        stored = await self.db.read(lambda t: _stored(t, self.service.id))
        if stored is None:
            self.receipt_position = await self.db.read(_latest_receipt)
        else:
            self._stored_position, self.receipt_position, self.txn = stored
        await self.consumer.open()

    async def _load(self) -> int | None:
        return self._stored_position

    async def _save(self, pos: int) -> None:
        as_id, receipt_pos, txn = self.service.id, self.receipt_position, self.txn
        await self.db.run(
            lambda t: _save(t, as_id=as_id, pos=pos, receipt_pos=receipt_pos, txn=txn),
            durable=False,
        )

    async def run(self) -> None:
        await self.consumer.run()

    async def _after(self, upto: int) -> None:
        if self.service.receive_ephemeral:
            await self._catch_up_ephemeral()

    async def _catch_up_ephemeral(self) -> None:
        """Read receipts and typing in the AS's rooms, as `ephemeral` of a transaction
        (application-service-api.md "Pushing ephemeral data")."""
        since = self.receipt_position
        typing_since = self.typing_position
        view = self.typing.view if self.typing is not None else None
        now = self.typing.now() if self.typing is not None else 0.0

        async def q(t: Txn) -> tuple[int, list[dict[str, Any]]]:
            latest = await _latest_receipt(t)
            by_room: dict[str, dict[str, Any]] = {}
            interesting: dict[str, bool] = {}
            typing: list[dict[str, Any]] = []
            if view is not None and view.position > typing_since:
                for room_id, (pos, _) in view.rooms.items():
                    if pos <= typing_since:
                        continue
                    if room_id not in interesting:
                        interesting[room_id] = await is_interested_in_room(t, self.service, room_id)
                    if interesting[room_id]:
                        users = view.users(room_id, now)
                        typing.append(
                            {"type": "m.typing", "room_id": room_id, "content": {"user_ids": users}}
                        )
            if latest <= since:
                return latest, typing
            rows = await t.fetchall(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts"
                " WHERE pos > ? AND pos <= ? ORDER BY pos",
                since,
                latest,
            )
            for room_id, receipt_type, user_id, thread_id, event_id, ts in rows:
                if receipt_type == "m.read.private":
                    continue
                if room_id not in interesting:
                    interesting[room_id] = await is_interested_in_room(t, self.service, room_id)
                if not interesting[room_id]:
                    continue
                event = by_room.setdefault(
                    room_id, {"type": "m.receipt", "room_id": room_id, "content": {}}
                )
                entry: dict[str, Any] = {"ts": int(ts)}
                if thread_id:
                    entry["thread_id"] = thread_id
                event["content"].setdefault(event_id, {}).setdefault(receipt_type, {})[user_id] = (
                    entry
                )
            return latest, [*by_room.values(), *typing]

        latest, ephemeral = await self.db.read(q)
        if ephemeral:
            await self._deliver([], ephemeral)
        if view is not None:
            self.typing_position = view.position
        if latest > since:
            self.receipt_position = latest
            await self.consumer.save_now(force=True)

    async def _handle(self, entries: Sequence[LogEntry], upto: int) -> bool:
        """Deliver the batch's interesting events; True (save at once) when it did."""
        pdus = []
        for entry in entries:
            payload = LogPayload.decode(entry.record.payload)
            if payload.status is Status.ACCEPTED and payload.kind is InputKind.NEW:
                pdus.append({**payload.event.pdu, "event_id": payload.event.event_id})
        if not pdus:
            return False

        async def pick(t: Txn) -> list[dict[str, Any]]:
            return [client_format(p) for p in pdus if await is_interested(t, self.service, p)]

        events = await self.db.read(pick)
        if not events:
            return False
        await self._deliver(events)
        return True

    async def _deliver(
        self,
        events: list[dict[str, Any]],
        ephemeral: list[dict[str, Any]] | None = None,
    ) -> None:
        """PUT the transaction until the AS accepts it (200), backing off between tries."""
        body: dict[str, Any] = {"events": events}
        if self.service.receive_ephemeral:
            body["ephemeral"] = ephemeral or []
            body["de.sorunome.msc2409.ephemeral"] = ephemeral or []
        txn_id = self.txn + 1
        path = f"{V1}/transactions/{txn_id}"
        delay = FIRST_BACKOFF
        while True:
            status, _ = await self.client.request(self.service, "PUT", path, body=body)
            if status == 200:
                self.txn = txn_id  # saved with the position that it covers
                return
            log.info(
                "application service %s refused transaction %s (status %d); retrying in %.1fs",
                self.service.id,
                txn_id,
                status,
                delay,
            )
            if self.notifier.closed:
                raise asyncio.CancelledError
            await asyncio.sleep(delay)  # backoff between retries, not polling for work
            delay = min(delay * 2, MAX_BACKOFF)


async def _latest_receipt(t: Txn) -> int:
    return int(await t.fetchval("SELECT max(pos) FROM receipt_stream") or 0)


async def open_positions(db: Database) -> None:
    await db.migrate(COMPONENT, MIGRATIONS)


@asynccontextmanager
async def running_senders(
    services: Sequence[AppService],
    db: Database,
    log: EventLog,
    notifier: Notifier,
    client: AppServiceClient,
    typing: Typing | None = None,
) -> AsyncIterator[list[ServiceReader]]:
    """Run one reader per AS with a URL for as long as the block lasts; an error of the
    block passes through unchanged (not wrapped in the task group's ExceptionGroup)."""
    await open_positions(db)
    readers = [ServiceReader(s, db, log, notifier, client, typing) for s in services if s.url]
    if not readers:  # no application service to send to: no task at all
        yield readers
        return
    for reader in readers:
        await reader.open()
    async with running((r.run(), f"appservice {r.service.id}") for r in readers):
        yield readers
