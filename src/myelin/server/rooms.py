"""Wiring of the room components into the process: the room event log, the roomserver,
the sync reader and API, the directory, and their client API routes.

`open_rooms` is an async context manager: it opens the log (`<data dir>/eventlog`, or
the JetStream stream the `event_log` setting names), catches the roomserver and the sync
projections up with it, and runs the sync reader in a task group for as long as the
block lasts. On exit it wakes every long-polling
request, stops the reader and closes the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from myelin.clientapi import relations, report, search, spaces
from myelin.clientapi import rooms as room_routes
from myelin.clientapi.context import ClientContext
from myelin.clientapi.directory import Directory
from myelin.clientapi.room_events import RoomWriter
from myelin.clientapi.router import Router
from myelin.clientapi.thirdpartyinvite import ThirdPartyInvites
from myelin.eventlog import EventLog
from myelin.eventlog.select import open_event_log
from myelin.roomserver.roomserver import Roomserver
from myelin.storage import Database
from myelin.syncapi.notifier import Notifier
from myelin.syncapi.reader import SyncReader
from myelin.syncapi.sync import SyncAPI
from myelin.tasks import running


@dataclass
class RoomComponents:
    log: EventLog
    roomserver: Roomserver
    notifier: Notifier
    reader: SyncReader
    sync: SyncAPI
    directory: Directory
    writer: RoomWriter
    #: Third-party invites (the federation receiver's onbind and exchange use it).
    third_party: ThirdPartyInvites | None = None

    def stop_waiters(self) -> None:
        """Make long-polling requests answer now (the server is stopping)."""
        self.notifier.close()


@asynccontextmanager
async def open_rooms(
    ctx: ClientContext, db: Database, router: Router
) -> AsyncIterator[RoomComponents]:
    async with (
        open_event_log(ctx.config.event_log, ctx.config.data_dir) as log,
        _components(ctx, db, router, log) as components,
    ):
        yield components


@asynccontextmanager
async def _components(
    ctx: ClientContext, db: Database, router: Router, log: EventLog
) -> AsyncIterator[RoomComponents]:
    roomserver = await Roomserver.open(db, log)
    notifier = Notifier()
    reader = SyncReader(db, log, notifier)
    await reader.open()
    roomserver.followers.append(reader)  # sync projections in the commit transaction
    sync = SyncAPI(db, notifier)
    directory = Directory(db, ctx.server_name)
    await directory.open()
    writer = RoomWriter(roomserver, notifier, ctx.server_name, ctx.key.key)
    third_party = None
    if ctx.threepids is not None:
        third_party = ThirdPartyInvites(ctx.server_name, roomserver, writer, ctx.threepids.identity)
    components = RoomComponents(
        log, roomserver, notifier, reader, sync, directory, writer, third_party
    )
    room_routes.install(
        router, room_routes.Rooms(ctx, roomserver, writer, sync, directory, third_party)
    )
    for module in (relations, search, spaces, report):
        module.install(router, sync)
    jobs = [(reader.run(), "sync-reader")]
    if third_party is not None:
        jobs.append((third_party.run(), "third-party-invites"))
    async with running(jobs, on_exit=notifier.close):
        yield components
