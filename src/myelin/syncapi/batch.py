"""Shared read transactions for `/sync` looks that start together.

One message into a room wakes every member's long poll in the same turn of the event loop.
Built one by one, the 100 answers would cost 100 hops to a reader thread and 100 times the
same room-level queries (the new events, the changed state, the member counts, the stream
positions). `ReadBatcher` gathers the reads requested in the same few loop turns and runs
them in at most `PARALLEL` read transactions, each over `SharedReads`, which answers a
query already asked in that transaction from its first result. Within one read-only
snapshot the same query always has the same rows, so this changes no answer.

`SharedReads.born` is the monotonic clock read on the event loop before its transaction
began: a cache filled inside it reflects every write whose invalidation was noted on the
loop before that instant (`myelin.keyserver.streams.Streams.keys_changed` relies on it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Generic

from myelin.storage import Database, Txn
from myelin.storage.base import Row, T, TransactionError, TxnFunction

#: Read transactions a batch is split into (the SQLite backend has two reader threads).
PARALLEL = 2
#: The most looks one transaction builds.
MAX_CHUNK = 100
#: Loop turns a batch waits for more looks, while each turn brings some.
MAX_TURNS = 4


class SharedReads(Txn):
    """A read-only transaction that runs each distinct query once."""

    def __init__(self, inner: Txn, born: int) -> None:
        self._inner = inner
        self.backend = inner.backend
        #: `time.monotonic_ns()` on the event loop before the transaction began.
        self.born = born
        self._rows: dict[tuple[Any, ...], list[Row]] = {}

    async def execute(self, sql: str, *args: Any) -> int:
        raise TransactionError("a shared read transaction does not write")

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise TransactionError("a shared read transaction does not write")

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        key = (sql, *(tuple(a) if isinstance(a, list) else a for a in args))
        try:
            rows = self._rows.get(key)
        except TypeError:  # an argument that cannot be a key: just run it
            return await self._inner.fetchall(sql, *args)
        if rows is None:
            rows = self._rows[key] = await self._inner.fetchall(sql, *args)
        return list(rows)  # the caller may change its list, never the shared one


class _Read(Generic[T]):
    __slots__ = ("fn", "future")

    def __init__(self, fn: TxnFunction[T], future: asyncio.Future[T]) -> None:
        self.fn = fn
        self.future = future


class ReadBatcher(Generic[T]):
    """Runs the read functions requested close together in shared transactions (see
    module doc): reads requested in the same few loop turns, and, while `PARALLEL`
    transactions are running, every read requested meanwhile (under load, batches grow by
    themselves, as in a group commit).

    The transactions run as tasks held here until they finish; every request of a batch
    awaits its own result from them, so none outlives its requests by more than one read."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[_Read[T]] = []
        self._scheduled = False
        self._turns = 0
        self._seen = 0
        self._running: set[asyncio.Task[None]] = set()

    async def read(self, fn: TxnFunction[T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Read(fn, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or len(self._running) >= PARALLEL:
            return
        self._scheduled = True
        self._turns = 0
        self._seen = 0
        asyncio.get_running_loop().call_soon(self._gather)

    def _gather(self) -> None:
        """Start a batch once a loop turn brought no more reads (requests woken together
        reach their read a few turns after the wake-up, not all in the same one)."""
        if len(self._pending) != self._seen and self._turns < MAX_TURNS:
            self._seen = len(self._pending)
            self._turns += 1
            asyncio.get_running_loop().call_soon(self._gather)
            return
        self._scheduled = False
        batch = [item for item in self._pending if not item.future.done()]
        self._pending = []
        free = PARALLEL - len(self._running)
        if not batch or free <= 0:
            self._pending = batch
            return
        size = min(MAX_CHUNK, math.ceil(len(batch) / free))
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            if len(self._running) >= PARALLEL:
                self._pending.extend(chunk)
                continue
            task = asyncio.ensure_future(self._run(chunk))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._schedule()

    async def _run(self, chunk: list[_Read[T]]) -> None:
        born = time.monotonic_ns()

        async def work(t: Txn) -> list[tuple[bool, Any]]:
            shared = SharedReads(t, born)
            out: list[tuple[bool, Any]] = []
            for item in chunk:
                if item.future.done():  # its request went away
                    out.append((False, None))
                    continue
                try:
                    out.append((True, await item.fn(shared)))
                except Exception as exc:  # that request's own error, not the batch's
                    out.append((False, exc))
            return out

        try:
            results = await self.db.read(work)
        except Exception as exc:
            for item in chunk:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except BaseException:
            for item in chunk:
                item.future.cancel()
            raise
        for item, (ok, value) in zip(chunk, results, strict=True):
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            elif value is not None:
                item.future.set_exception(value)
            else:
                item.future.cancel()
