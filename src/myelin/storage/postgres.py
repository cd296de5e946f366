"""PostgreSQL backend on asyncpg: a connection pool, one transaction per `run`/`read`.

The same transaction functions as on SQLite run here; each `Txn` call is a real await on
the connection. `schema` puts every table of this `Database` in one PostgreSQL schema
(created on open), which is how tests get a clean database cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from myelin.storage.base import (
    Backend,
    Database,
    IntegrityError,
    Row,
    StorageError,
    T,
    Txn,
    TxnFunction,
    to_postgres,
)

_CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresTxn(Txn):
    backend = Backend.POSTGRES

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(to_postgres(sql), *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self._conn.executemany(to_postgres(sql), rows)

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        records = await self._conn.fetch(to_postgres(sql), *args)
        return [tuple(r) for r in records]


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Connections return to the pool with no session state to clear (every use is one
    transaction that ended), so skip asyncpg's reset round trip."""


class PostgresDatabase(Database):
    """Open with `await PostgresDatabase.open("postgresql://user@host:port/db")`."""

    backend = Backend.POSTGRES

    def __init__(self, pool: asyncpg.Pool, schema: str | None) -> None:
        self._pool = pool
        self.schema = schema
        self._closed = False

    @classmethod
    async def open(
        cls, dsn: str, *, schema: str | None = None, min_size: int = 2, max_size: int = 10
    ) -> PostgresDatabase:
        settings: dict[str, str] = {}
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise ValueError(f"bad schema name {schema!r}")
            try:
                conn = await asyncpg.connect(dsn)
            except _CONNECT_ERRORS as exc:
                raise StorageError(f"cannot connect to PostgreSQL at {dsn}: {exc}") from exc
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            finally:
                await conn.close()
            settings["search_path"] = schema
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings=settings,
                reset=_no_reset,
            )
        except _CONNECT_ERRORS as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {dsn}: {exc}") from exc
        try:
            async with pool.acquire() as conn:  # fail now, not at the first query
                await conn.execute("SELECT 1")
        except _CONNECT_ERRORS as exc:
            await pool.close()
            raise StorageError(f"cannot connect to PostgreSQL at {dsn}: {exc}") from exc
        return cls(pool, schema)

    async def _transaction(self, fn: TxnFunction[T], readonly: bool, durable: bool = True) -> T:
        if self._closed:
            raise StorageError("the database is closed")
        try:
            async with self._pool.acquire() as conn:
                isolation = "repeatable_read" if readonly else "read_committed"
                async with conn.transaction(isolation=isolation, readonly=readonly):
                    if not durable:
                        await conn.execute("SET LOCAL synchronous_commit = off")
                    return await fn(PostgresTxn(conn))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(str(exc)) from exc

    async def run(self, fn: TxnFunction[T], *, durable: bool = True) -> T:
        return await self._transaction(fn, False, durable)

    async def read(self, fn: TxnFunction[T]) -> T:
        return await self._transaction(fn, True)

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        if self._closed:
            raise StorageError("the database is closed")
        try:
            async with self._pool.acquire() as conn:
                return [tuple(r) for r in await conn.fetch(to_postgres(sql), *args)]
        except asyncpg.PostgresError as exc:
            raise StorageError(str(exc)) from exc

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()
