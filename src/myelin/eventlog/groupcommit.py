"""Group commit: many concurrent `append` calls, one durable write per batch.

Shared by the backends. Callers queue their records and wait on a future; one writer
coroutine (run inside the backend's TaskGroup) takes everything queued, up to a byte
budget, and hands it to the backend's `write`, which makes it durable and returns the
first offset. Whatever arrives during a write forms the next batch, so the number of
durable writes adapts to the load: one per caller when idle, one per hundreds of
callers when busy. The records of one call are never split between writes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from myelin.eventlog.api import LogRecord
from myelin.eventlog.errors import InvalidRecordError, LogClosedError, LogFailedError
from myelin.eventlog.framing import HEADER_SIZE

Write = Callable[[list[LogRecord]], Awaitable[int]]
"""Make the records durable at consecutive offsets; return the first one."""


def record_cost(record: LogRecord) -> int:
    """Approximate bytes a record occupies (for batch and cache budgets)."""
    return HEADER_SIZE + len(record.room_id) + len(record.payload)


@dataclass(slots=True)
class _Pending:
    records: list[LogRecord]
    future: asyncio.Future[list[int]]
    nbytes: int


class GroupCommitter:
    """The append queue and its writer loop (`run`), for one log."""

    def __init__(self, write: Write, *, max_batch_bytes: int, name: str) -> None:
        self._write = write
        self._max_batch_bytes = max_batch_bytes
        self._name = name
        self._pending: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self.closing = False
        self.failed: LogFailedError | None = None
        self.done = asyncio.Event()
        self.appends = 0
        self.records = 0
        self.batches = 0
        self._task_group: asyncio.TaskGroup | None = None

    async def start(self) -> None:
        """Run the writer loop in a task group owned by this committer (until `stop`)."""
        self._task_group = asyncio.TaskGroup()
        await self._task_group.__aenter__()
        self._task_group.create_task(self.run(), name="eventlog-writer")

    async def stop(self) -> None:
        """Wait for the writer loop to end (after `close()`); re-raise its failure, if any.

        The group is exited without the caller's exception, so an error of the block using
        the log propagates unchanged rather than wrapped in an ExceptionGroup."""
        group, self._task_group = self._task_group, None
        if group is not None:
            await group.__aexit__(None, None, None)

    async def submit(self, records: Sequence[LogRecord]) -> list[int]:
        """Queue `records` as one unit and wait until they are durable."""
        if self.failed is not None:
            raise self.failed
        if self.closing:
            raise LogClosedError(f"{self._name} is not open")
        batch = list(records)
        nbytes = 0
        for record in batch:
            if not isinstance(record, LogRecord):
                raise InvalidRecordError(f"expected a LogRecord, got {type(record).__name__}")
            nbytes += record_cost(record)
        if not batch:
            return []
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(batch, future, nbytes))
        self._wake.set()
        return await future

    def close(self) -> None:
        """Refuse new appends; `run` finishes the queued ones, then returns."""
        self.closing = True
        self._wake.set()

    async def run(self) -> None:
        """The writer loop. Returns after `close()` once the queue is empty."""
        try:
            while True:
                if not self._pending:
                    if self.closing or self.failed is not None:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = self._take_batch()
                if batch:
                    await self._commit(batch)
        finally:
            error: Exception = self.failed or LogClosedError(
                f"{self._name} was closed before this append was written"
            )
            while self._pending:
                pending = self._pending.popleft()
                if not pending.future.done():
                    pending.future.set_exception(error)
            self.closing = True
            self.done.set()

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._pending:
            item = self._pending[0]
            if item.future.done():  # the caller was cancelled before the write began
                self._pending.popleft()
                continue
            if batch and size + item.nbytes > self._max_batch_bytes:
                break
            self._pending.popleft()
            batch.append(item)
            size += item.nbytes
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        records = [r for item in batch for r in item.records]
        # The write runs to its end even if this task is cancelled meanwhile: a write
        # abandoned halfway would leave the callers, and the backend's bookkeeping,
        # not knowing what is stored.
        write = asyncio.ensure_future(self._write(records))
        cancelled = await wait_through_cancellation(write)
        try:
            offset = write.result()
        except Exception as exc:
            self.failed = LogFailedError(
                f"writing to {self._name} failed ({exc!r}); the log accepts no more "
                "appends: close and reopen it to recover"
            )
            self.failed.__cause__ = exc
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(self.failed)
        else:
            self.appends += len(batch)
            self.records += len(records)
            self.batches += 1
            for item in batch:
                n = len(item.records)
                if not item.future.done():
                    item.future.set_result(list(range(offset, offset + n)))
                offset += n
        if cancelled:
            raise asyncio.CancelledError


async def wait_through_cancellation(job: asyncio.Future[Any]) -> bool:
    """Wait until `job` is done even if this task is cancelled meanwhile (a thread or
    a write cannot be abandoned halfway); return whether it was, so that the caller can
    finish its bookkeeping and then re-raise the cancellation."""
    cancelled = False
    while not job.done():
        try:
            await asyncio.wait([job])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
