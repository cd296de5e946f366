"""SQLite backend: WAL, one dedicated writer thread, reader connections on other threads
(`myelin.storage.threads`: a queue and a thread wake-up per call, no executor machinery).

Every write transaction is one hop to the writer thread, which opens `BEGIN IMMEDIATE`,
drives the transaction function to completion (its `Txn` calls run the statements
synchronously, see `myelin.storage.base`), commits, and hands the result back. Readers run
on a small pool of threads, each with its own connection, inside a deferred transaction,
so they see one snapshot and never block on the writer (WAL).

`synchronous` defaults to FULL: a write is durable when `run` returns.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from myelin.storage.base import (
    Backend,
    Database,
    IntegrityError,
    Row,
    StorageError,
    T,
    TransactionError,
    Txn,
    TxnFunction,
    to_sqlite,
)
from myelin.storage.threads import Workers


def _adapt(args: Sequence[Any]) -> Sequence[Any]:
    """Lists/tuples (for `= ANY(?)`) travel to SQLite as JSON text."""
    for value in args:
        if isinstance(value, list | tuple):
            return [
                orjson.dumps(list(v)).decode() if isinstance(v, list | tuple) else v for v in args
            ]
    return args


class SqliteTxn(Txn):
    """Statements on one connection, run synchronously in the owning thread."""

    backend = Backend.SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self._conn.execute(to_sqlite(sql), _adapt(args)).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(to_sqlite(sql), (_adapt(r) for r in rows))

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        return self._conn.execute(to_sqlite(sql), _adapt(args)).fetchall()


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, in the calling thread."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise TransactionError(
        "a transaction function awaited something other than its Txn; "
        "do all I/O outside the transaction"
    )


class SqliteDatabase(Database):
    """A SQLite file in WAL mode. Open with `await SqliteDatabase.open(path)`."""

    backend = Backend.SQLITE

    def __init__(self, path: Path, readers: int, synchronous: str) -> None:
        self.path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer = Workers("sqlite-writer")
        self._readers = Workers("sqlite-reader", readers)
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | Path, *, readers: int = 2, synchronous: str = "FULL"
    ) -> SqliteDatabase:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"bad synchronous setting {synchronous!r}")
        db = cls(Path(path), readers, synchronous.upper())
        # Open the writer first: it switches the file to WAL before any reader connects.
        try:
            await db._writer.call(db._connection)
        except BaseException:
            await db.close()
            raise
        return db

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    check_same_thread=False,
                    cached_statements=1024,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA busy_timeout=10000")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _transaction(self, fn: TxnFunction[T], begin: str) -> T:
        conn = self._connection()
        try:
            conn.execute(begin)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot begin a transaction: {exc}") from exc
        try:
            result: T = drive(fn(SqliteTxn(conn)))  # type: ignore[arg-type]
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise IntegrityError(str(exc)) from exc
            if isinstance(exc, sqlite3.Error):
                raise StorageError(str(exc)) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StorageError(f"commit failed: {exc}") from exc
        return result

    async def run(self, fn: TxnFunction[T], *, durable: bool = True) -> T:
        self._check_open()
        if durable or self._synchronous in ("OFF", "NORMAL"):
            return await self._writer.call(self._transaction, fn, "BEGIN IMMEDIATE")
        return await self._writer.call(self._relaxed, fn)

    def _relaxed(self, fn: TxnFunction[T]) -> T:
        """A write whose commit does not sync the WAL (WAL + synchronous=NORMAL)."""
        conn = self._connection()
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._transaction(fn, "BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA synchronous={self._synchronous}")

    async def read(self, fn: TxnFunction[T]) -> T:
        self._check_open()
        return await self._readers.call(self._transaction, fn, "BEGIN")

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the database is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # Let queued transactions finish, then close the connections from this thread.
        await loop.run_in_executor(None, self._writer.shutdown, True)
        await loop.run_in_executor(None, self._readers.shutdown, True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
