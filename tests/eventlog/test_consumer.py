"""`LogConsumer`: batches from a durable offset, woken by the notifier (never by a timer),
offsets saved debounced, at once on request, and on a clean stop; a restart resumes there.

The offsets are the disk log's own durable reader offsets, so "survives a restart" means
a closed and reopened log on disk. Waits are on events the callbacks set; the timeouts
only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from myelin.eventlog import DiskEventLog, LogEntry, LogRecord
from myelin.eventlog.consumer import LogConsumer
from myelin.syncapi.notifier import Notifier

HANG = 10.0


class Recorder:
    """The consumer's callbacks, over the log's durable reader offset `name`."""

    def __init__(self, log: DiskEventLog, name: str = "test-consumer") -> None:
        self.log = log
        self.name = name
        self.handled: list[int] = []
        self.saves: list[int] = []
        self.urgent: set[int] = set()
        self.changed = asyncio.Event()

    async def load(self) -> int | None:
        committed = await self.log.get_committed(self.name)
        return committed or None

    async def save(self, pos: int) -> None:
        await self.log.commit(self.name, pos)
        self.saves.append(pos)
        self.changed.set()

    async def handle(self, entries: Sequence[LogEntry], upto: int) -> bool:
        assert entries[-1].offset <= upto
        self.handled.extend(e.offset for e in entries)
        self.changed.set()
        return any(e.offset in self.urgent for e in entries)

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(HANG):
            while not check():
                self.changed.clear()
                await self.changed.wait()


def consumer(log: DiskEventLog, notifier: Notifier, rec: Recorder, **kw: float) -> LogConsumer:
    return LogConsumer(
        "test",
        log,
        notifier,
        load=rec.load,
        save=rec.save,
        handle=rec.handle,
        save_interval=kw.get("save_interval", 3600.0),
        save_records=int(kw.get("save_records", 1000)),
        batch=int(kw.get("batch", 200)),
    )


async def publish(log: DiskEventLog, notifier: Notifier, n: int) -> int:
    """Append `n` records and tell the notifier, as the sync reader does after applying."""
    offsets = await log.append([LogRecord("!r:x", f"e{i}".encode()) for i in range(n)])
    notifier.advance(offsets[-1])
    notifier.wake([])
    return offsets[-1]


async def test_woken_not_polled_debounced_saves_and_restart(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    async with DiskEventLog(directory) as log:
        await log.append([LogRecord("!r:x", b"history")])  # before the first start
        notifier = Notifier()
        notifier.advance(1)
        rec = Recorder(log)
        c = consumer(log, notifier, rec, save_records=3)
        await c.open()
        assert c.position == 1 and rec.saves == [1]  # a first start skips history
        async with asyncio.TaskGroup() as tg:
            tg.create_task(c.run())
            # Appended and applied but nobody woke the consumer: it stays asleep.
            offsets = await log.append([LogRecord("!r:x", b"quiet")])
            notifier.advance(offsets[0])
            for _ in range(20):
                await asyncio.sleep(0)
            assert rec.handled == []
            # The wake-up alone delivers it (the save timer is an hour away).
            notifier.wake([])
            await rec.until(lambda: rec.handled == [2])
            assert rec.saves == [1]  # debounced: not saved per batch
            await publish(log, notifier, 1)
            await rec.until(lambda: rec.handled == [2, 3])
            assert rec.saves == [1]
            await publish(log, notifier, 1)  # 3 records past the saved offset: saved
            await rec.until(lambda: rec.saves == [1, 4])
            assert rec.handled == [2, 3, 4]
            # A record past the sync position is not read until the position reaches it.
            await log.append([LogRecord("!r:x", b"ahead")])
            notifier.wake([])
            for _ in range(20):
                await asyncio.sleep(0)
            assert rec.handled == [2, 3, 4]
            notifier.advance(5)
            notifier.wake([])
            await rec.until(lambda: rec.handled == [2, 3, 4, 5])
            assert rec.saves == [1, 4]
            notifier.close()  # a clean stop saves what was handled
        assert rec.saves == [1, 4, 5]
        assert await log.get_committed("test-consumer") == 5
        await publish(log, notifier, 2)  # written while the consumer is down
    async with DiskEventLog(directory) as log:
        notifier = Notifier()
        notifier.advance(await log.head())
        rec = Recorder(log)
        c = consumer(log, notifier, rec)
        await c.open()
        assert c.position == 5 and rec.saves == []  # resumes from the stored offset
        async with asyncio.TaskGroup() as tg:
            tg.create_task(c.run())
            await rec.until(lambda: rec.handled == [6, 7])
            notifier.close()
        assert rec.saves == [7]


async def test_urgent_batches_save_at_once_and_the_timer_saves_the_rest(
    tmp_path: Path,
) -> None:
    async with DiskEventLog(tmp_path / "log") as log:
        notifier = Notifier()
        rec = Recorder(log)
        c = consumer(log, notifier, rec, save_interval=0.05, batch=1)
        await c.open()
        assert rec.saves == [0]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(c.run())
            rec.urgent = {2}
            await publish(log, notifier, 2)  # batches of one: 1, then 2 (urgent)
            await rec.until(lambda: 2 in rec.saves)
            assert rec.saves == [0, 2]
            await publish(log, notifier, 1)
            # No further wake-up: the armed timer saves the handled offset.
            await rec.until(lambda: rec.saves[-1] == 3)
            assert rec.saves == [0, 2, 3]
            notifier.close()
        assert rec.saves == [0, 2, 3]  # nothing new to save at the stop
