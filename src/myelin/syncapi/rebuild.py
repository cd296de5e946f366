"""Rebuilding the sync projections from the room event log (`myelin rebuild`).

The projection tables are dropped and replayed from offset 1 by the same code that
applies new records; client transaction IDs and forgotten rooms are requests of clients,
not projections of the log, and are kept.
"""

from __future__ import annotations

from myelin.eventlog.api import EventLog
from myelin.storage import Database, Txn
from myelin.syncapi.notifier import Notifier
from myelin.syncapi.reader import PROJECTION_TABLES, SyncReader


async def rebuild(db: Database, log: EventLog) -> int:
    """Drop and replay the sync projections; returns the position reached."""

    async def clear(t: Txn) -> None:
        for table in PROJECTION_TABLES:
            await t.execute(f"DELETE FROM {table}")

    await db.migrate("syncapi", "myelin.syncapi.migrations")
    await db.run(clear)
    reader = SyncReader(db, log, Notifier())
    await reader.open()
    return reader.position
