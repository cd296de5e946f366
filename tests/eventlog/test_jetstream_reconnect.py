"""The JetStream log survives a restart of NATS.

These tests run their own nats-server (the system one on 4222 must not be restarted) on a
free loopback port with its own store directory, stop it in the middle of a run and start
it again on the same port and store, while appenders and a tail keep going.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from myelin.eventlog import LogEntry, LogFailedError, LogRecord, LogUnavailableError
from myelin.eventlog.jetstream import JetStreamEventLog
from tests.eventlog.helpers import rec

NATS_SERVER_PATHS = ("/usr/sbin/nats-server", "/usr/bin/nats-server")


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in NATS_SERVER_PATHS if Path(p).is_file()), None
    )
    if found is None:
        pytest.fail(
            "these tests need the nats-server binary (looked on PATH and in "
            f"{', '.join(NATS_SERVER_PATHS)}); install it (apt-get install nats-server)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsProcess:
    """One nats-server with JetStream, restartable on the same port and store directory."""

    def __init__(self, store: Path) -> None:
        self.binary = nats_server_binary()
        self.port = free_port()
        self.store = store
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *("-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        seen: list[str] = []
        # nats-server says so on stderr once it accepts clients (and JetStream is up).
        async with asyncio.timeout(30):
            while True:
                line = (await self.proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("nats-server exited at start:\n" + "".join(seen))
                seen.append(line)
                if "Server is ready" in line:
                    break
        # Keep draining its log so that the server never blocks on a full pipe.
        self._drain = asyncio.ensure_future(self._discard(self.proc.stderr))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def stop(self) -> None:
        """A clean shutdown (SIGTERM): JetStream writes out what it acknowledged."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
            await self._drain
        self.proc = None


@pytest.fixture
async def nats_process(tmp_path: Path) -> AsyncIterator[NatsProcess]:
    server = NatsProcess(tmp_path / "jetstream")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_acknowledged_appends_survive_a_restart_exactly_once(
    nats_process: NatsProcess,
) -> None:
    acked: dict[int, LogRecord] = {}
    failed: list[BaseException] = []
    tailed: list[LogEntry] = []
    restarted = asyncio.Event()
    enough_before_restart = asyncio.Event()
    caught_up = asyncio.Event()
    target: list[int] = []  # the head, once the appenders are done
    wanted = 60

    async with JetStreamEventLog(
        servers=nats_process.url, stream="RECONNECT", timeout=2.0, outage_timeout=30.0
    ) as log:

        async def appender(worker: int) -> None:
            n = 0
            while not (restarted.is_set() and len(acked) >= 2 * wanted):
                records = [rec(worker * 100_000 + n), rec(worker * 100_000 + n + 1)]
                n += 2
                try:
                    offsets = await log.append(records)
                except LogFailedError as exc:  # allowed, but must be a clear error
                    failed.append(exc)
                    return
                acked.update(zip(offsets, records, strict=True))
                if len(acked) >= wanted:
                    enough_before_restart.set()

        async def tail() -> None:
            async for entry in log.tail(1):
                tailed.append(entry)
                if target and len(tailed) >= target[0]:
                    caught_up.set()
                    return

        tail_task = asyncio.ensure_future(tail())
        async with asyncio.TaskGroup() as tg:
            for worker in range(4):
                tg.create_task(appender(worker))
            # Restart NATS while the appenders are busy.
            await enough_before_restart.wait()
            await nats_process.stop()
            await nats_process.start()
            restarted.set()
        head = await log.head()
        await log.commit("after-restart", head)
        assert await log.get_committed("after-restart") == head
        target.append(head)
        if len(tailed) < head:
            async with asyncio.timeout(30):
                await caught_up.wait()
        tail_task.cancel()
        await asyncio.wait([tail_task])

        assert not failed, f"appends failed across the restart: {failed!r}"
        assert len(acked) >= 2 * wanted
        stored = await log.read(1, limit=10_000)
        # Every acknowledged record is at its offset, once; nothing else was stored.
        assert head == len(acked) == len(stored)
        assert [e.offset for e in stored] == list(range(1, head + 1))
        assert {e.offset: e.record for e in stored} == acked
        assert [(e.offset, e.record) for e in tailed] == [(e.offset, e.record) for e in stored]

    # A fresh log object on the restarted server sees the same records.
    async with JetStreamEventLog(servers=nats_process.url, stream="RECONNECT") as again:
        assert await again.head() == head
        assert {e.offset: e.record for e in await again.read(1, limit=10_000)} == acked


async def test_a_tail_resumes_from_its_offset_after_a_restart(nats_process: NatsProcess) -> None:
    async with JetStreamEventLog(servers=nats_process.url, stream="TAIL", timeout=2.0) as log:
        assert await log.append([rec(i) for i in range(1, 6)]) == [1, 2, 3, 4, 5]
        entries = aiter(log.tail(3))
        assert [(await anext(entries)).offset for _ in range(3)] == [3, 4, 5]
        await nats_process.stop()
        await nats_process.start()
        assert await log.append([rec(6), rec(7)]) == [6, 7]
        got = [await anext(entries) for _ in range(2)]
        assert [(e.offset, e.record) for e in got] == [(6, rec(6)), (7, rec(7))]
        await entries.aclose()  # type: ignore[attr-defined]


async def test_nats_staying_away_fails_appends_and_reads_clearly(
    nats_process: NatsProcess,
) -> None:
    async with JetStreamEventLog(
        servers=nats_process.url, stream="AWAY", timeout=1.0, outage_timeout=1.0
    ) as log:
        assert await log.append([rec(1)]) == [1]
        await nats_process.stop()
        away = rf"NATS at {nats_process.url} (did not answer|has been unreachable)"
        with pytest.raises(LogUnavailableError, match=away):
            await log.read(1)
        with pytest.raises(LogFailedError, match=away):
            await log.append([rec(2)])
        # Once failed, the log stays failed until it is reopened.
        with pytest.raises(LogFailedError):
            await log.append([rec(3)])


class _LosingAcks(dict[str, Any]):
    """The log's table of awaited acks, made to lose the first attempt's acks (as a
    connection drop between JetStream storing a batch and the acks arriving would)."""

    def pop(self, key: str, default: Any = None) -> Any:
        if key.startswith("1-") and key in self:
            return default
        return super().pop(key, default)


async def test_a_batch_stored_but_not_acknowledged_is_not_stored_twice(
    nats_process: NatsProcess,
) -> None:
    async with JetStreamEventLog(servers=nats_process.url, stream="NOACK", timeout=0.5) as log:
        assert await log.append([rec(1)]) == [1]
        log._acks = _LosingAcks()  # type: ignore[attr-defined]
        # The acks of the first attempt never arrive: the log finds the batch stored
        # (by its message IDs) instead of publishing it again.
        assert await log.append([rec(2), rec(3), rec(4)]) == [2, 3, 4]
        assert await log.append([rec(5)]) == [5]
        assert [(e.offset, e.record) for e in await log.read(1)] == [
            (i, rec(i)) for i in range(1, 6)
        ]


async def test_closing_while_nats_is_away_ends_waiting_appends_and_tails(
    nats_process: NatsProcess,
) -> None:
    log = JetStreamEventLog(servers=nats_process.url, stream="CLOSING", outage_timeout=600.0)
    async with log:
        assert await log.append([rec(1)]) == [1]
        tailed: list[int] = []

        async def tail() -> None:
            async for entry in log.tail(1):
                tailed.append(entry.offset)

        tail_task = asyncio.ensure_future(tail())
        await nats_process.stop()
        append = asyncio.ensure_future(log.append([rec(2)]))
        await asyncio.sleep(0)  # lets the append queue its record before close()
        # A guard against hanging, not a timing assertion: the outage allowance is 600 s.
        async with asyncio.timeout(60):
            await log.close()
            with pytest.raises(LogFailedError, match="closed"):
                await append
            await tail_task
        assert tailed in ([], [1])
