"""A reader of the room event log that costs nothing while there is nothing to read.

The push sender, the application-service readers and the federation sender all follow the
log the same way: from a durable offset of their own, in batches, never past the sync
reader's position (they read the sync projections, which must already include the
event), woken by the sync notifier rather than by polling. `LogConsumer` is that loop,
written once.

Saving the offset is debounced: a database write per batch queued on the single SQLite
writer ahead of the next send's own write. The offset is saved once `save_records`
records went by or `save_interval` seconds after the first unsaved batch (a timer armed
only while something is unsaved, so an idle consumer neither polls nor writes), and when
the consumer stops cleanly. After a crash a consumer re-reads at most that window: its
`handle` must either be idempotent or accept repeating it (each consumer says which),
or return True for a batch whose work must not be repeated (its offset is then saved at
once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from myelin.eventlog.api import EventLog, LogEntry

log = logging.getLogger("myelin.eventlog.consumer")

#: Entries read from the log at a time.
BATCH = 200
#: Longest time an offset stays unsaved after a batch.
SAVE_INTERVAL = 1.0
#: Most records read past the saved offset before it is saved regardless of the time.
SAVE_RECORDS = 1000


class Wakeups(Protocol):
    """What the consumer waits on: the sync notifier (`myelin.syncapi.notifier`)."""

    @property
    def position(self) -> int:
        """The log offset the sync projections include; consumers never read past it."""
        ...

    @property
    def closed(self) -> bool: ...

    def listen(self, user_id: str) -> AbstractContextManager[asyncio.Future[None]]: ...


#: Every wake-up, whoever it is for (`Notifier.PEEKERS`).
EVERYONE = "*"

LoadOffset = Callable[[], Awaitable[int | None]]
SaveOffset = Callable[[int], Awaitable[None]]
#: Called with a batch of entries and the position it was read up to; a true result asks
#: for the offset past the batch to be saved at once (work that must not be repeated).
HandleBatch = Callable[[Sequence[LogEntry], int], Awaitable[bool | None]]
#: Called after each catch-up with the position caught up to (receipts and the like).
AfterCatchUp = Callable[[int], Awaitable[None]]


class LogConsumer:
    """Follows the log from a stored offset and hands each batch to `handle`.

    `open()` loads the offset (a first start begins at the sync position: no history),
    `run()` follows the log until the notifier closes or the task is cancelled, saving
    the offset on the way out. Errors of `handle` or `after` are logged and retried at
    the next wake-up: a consumer never stops serving.
    """

    def __init__(
        self,
        name: str,
        log: EventLog,
        wakeups: Wakeups,
        *,
        load: LoadOffset,
        save: SaveOffset,
        handle: HandleBatch,
        after: AfterCatchUp | None = None,
        batch: int = BATCH,
        save_interval: float = SAVE_INTERVAL,
        save_records: int = SAVE_RECORDS,
    ) -> None:
        self.name = name
        self.log = log
        self.wakeups = wakeups
        self._load = load
        self._save = save
        self._handle = handle
        self._after = after
        self.batch = batch
        self.save_interval = save_interval
        self.save_records = save_records
        #: The last offset handled.
        self.position = 0
        #: The last offset saved.
        self.saved = 0
        self._dirty_since: float | None = None

    async def open(self) -> None:
        stored = await self._load()
        if stored is None:
            stored = self.wakeups.position
            await self._save(stored)
        self.position = self.saved = min(stored, await self.log.head())

    async def run(self) -> None:
        try:
            while not self.wakeups.closed:
                with self.wakeups.listen(EVERYONE) as woken:
                    try:
                        await self.catch_up()
                    except Exception:  # never stop serving: try again at the next wake-up
                        log.exception("log consumer %s failed", self.name)
                    if self.wakeups.closed:
                        break
                    await self._wait(woken)
        finally:
            try:
                await self.save_now()
            except Exception:
                log.exception("log consumer %s could not save its offset", self.name)

    async def _wait(self, woken: asyncio.Future[None]) -> None:
        """Wait for the next wake-up; while an offset is unsaved, at most until it is due."""
        if self._dirty_since is None:
            await woken
            return
        due = self._dirty_since + self.save_interval - time.monotonic()
        if due > 0:
            done, _ = await asyncio.wait({woken}, timeout=due)
            if done:
                return
        await self.save_now()

    async def catch_up(self) -> None:
        """Handle every entry up to the sync position, then run `after`."""
        upto = self.wakeups.position
        while self.position < upto:
            entries = await self.log.read(self.position + 1, self.batch)
            if entries and entries[-1].offset > upto:
                entries = [e for e in entries if e.offset <= upto]
            if not entries:
                break
            urgent = await self._handle(entries, upto)
            self.position = entries[-1].offset
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            if urgent or self.position - self.saved >= self.save_records:
                await self.save_now()
        if self._dirty_since is not None and time.monotonic() - self._dirty_since >= (
            self.save_interval
        ):
            await self.save_now()
        if self._after is not None:
            await self._after(upto)

    async def save_now(self, force: bool = False) -> None:
        """Save the offset now if it moved (or in any case with `force`: the consumer's
        `save` may store more than the offset)."""
        self._dirty_since = None
        position = self.position
        if force or position != self.saved:
            await self._save(position)
            self.saved = position
