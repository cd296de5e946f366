"""`myelin rebuild` for the roomserver: drop its projections and replay the room event log.

The projections are written only by `ProjectionWriter.apply` from log records, for new
events and here alike, so after a rebuild every query answers as before (numeric IDs may
differ; they never leave the roomserver).
"""

from __future__ import annotations

from collections.abc import Callable

from myelin.eventlog.api import EventLog
from myelin.roomserver import store
from myelin.roomserver.roomserver import replay
from myelin.storage import Database, Txn

Progress = Callable[[int, int], None]
"""Called after each chunk with `(offset reached, log head)`."""


async def drop_projections(db: Database) -> None:
    """Drop every roomserver table and forget its schema version."""

    async def drop(t: Txn) -> None:
        for table in store.TABLES:
            await t.execute(f"DROP TABLE IF EXISTS {table}")
        await t.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions ("
            " component TEXT PRIMARY KEY, version BIGINT NOT NULL)"
        )
        await t.execute("DELETE FROM schema_versions WHERE component = ?", store.COMPONENT)

    await db.run(drop)


async def rebuild(db: Database, log: EventLog, progress: Progress | None = None) -> int:
    """Rebuild the roomserver's projections from the log; returns the records replayed."""
    await drop_projections(db)
    await db.migrate(store.COMPONENT, store.MIGRATIONS)
    return await replay(db, log, store.ProjectionWriter(), 1, progress)
