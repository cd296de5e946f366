"""Benchmark of the event log: append rates with group commit, read rates, tail latency.

    .venv/bin/python bench/eventlog.py [--records N] [--size BYTES] [--dir DIR]
                                       [--backend disk|jetstream|both]

Every append is durable when it returns: for the disk log one fdatasync per group
commit, on the disk holding DIR (default: the system temp dir); for JetStream
(NATS at 127.0.0.1:4222) the server's acknowledgement of every message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from myelin.eventlog import DiskEventLog, EventLog, LogRecord

Opener = Callable[..., EventLog]
"""`opener(name, cold=False)`: a log named `name`; `cold` asks for no memory cache."""


def _records(n: int, size: int) -> list[LogRecord]:
    return [LogRecord(f"!room{i % 8}:example.org", os.urandom(size)) for i in range(n)]


def _report(name: str, count: int, seconds: float, unit: str = "records", extra: str = "") -> None:
    print(f"{name:<44} {count / seconds:>10,.0f} {unit}/s  ({count} in {seconds:.2f} s){extra}")


async def bench_serial(opener: Opener, n: int, size: int) -> None:
    records = _records(n, size)
    async with opener("serial") as log:
        start = time.perf_counter()
        for record in records:
            await log.append([record])
        elapsed = time.perf_counter() - start
        _report(
            "serial appends (1 record, 1 caller)", n, elapsed, extra=f"  syncs={log.stats.fsyncs}"
        )


async def bench_concurrent(opener: Opener, n: int, size: int, callers: int) -> None:
    records = _records(n, size)
    per_caller = n // callers
    async with opener(f"concurrent{callers}") as log:

        async def caller(k: int) -> None:
            for record in records[k * per_caller : (k + 1) * per_caller]:
                await log.append([record])

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for k in range(callers):
                tg.create_task(caller(k))
        elapsed = time.perf_counter() - start
        s = log.stats
        _report(
            f"concurrent appends ({callers} callers, 1 record)",
            s.appends,
            elapsed,
            extra=f"  syncs={s.fsyncs}, {s.records / s.fsyncs:.1f} records/sync",
        )


async def bench_batched(opener: Opener, n: int, size: int, batch: int) -> None:
    records = _records(n, size)
    async with opener("batched") as log:
        start = time.perf_counter()
        for i in range(0, n, batch):
            await log.append(records[i : i + batch])
        elapsed = time.perf_counter() - start
        mib = n * size / 2**20
        _report(
            f"batched appends ({batch} records per call)",
            n,
            elapsed,
            extra=f"  {mib / elapsed:.0f} MiB/s of payload",
        )


async def bench_reads(opener: Opener, size: int) -> None:
    # Reopened with no memory cache: reads go to the segment files (page cache warm).
    async with opener("batched", cold=True) as log:
        head = await log.head()
        start = time.perf_counter()
        offset = 1
        while offset <= head:
            entries = await log.read(offset, 1000)
            offset = entries[-1].offset + 1
        elapsed = time.perf_counter() - start
        mib = head * size / 2**20
        _report(
            "sequential reads (batches of 1000)",
            head,
            elapsed,
            extra=f"  {mib / elapsed:.0f} MiB/s",
        )
        start = time.perf_counter()
        count = 0
        for offset in range(1, head + 1, max(1, head // 1000)):
            count += len(await log.read(offset, 1))
        elapsed = time.perf_counter() - start
        _report("random single-record reads", count, elapsed, unit="reads")


async def bench_tail(opener: Opener, n: int, size: int, readers: int) -> None:
    records = _records(n, size)
    async with opener("tail") as log:
        base = await log.head()
        sent: dict[int, float] = {}
        latencies: list[float] = []

        async def reader() -> None:
            async for entry in log.tail(base + 1):
                if entry.offset == base + 1:
                    continue  # a warm-up record, sent before timing starts
                latencies.append(time.perf_counter() - sent[entry.offset])
                if entry.offset == base + n:
                    return

        async with asyncio.TaskGroup() as tg:
            for _ in range(readers):
                tg.create_task(reader())
            await log.append(records[:1])
            start = time.perf_counter()
            for k, record in enumerate(records[1:], start=base + 2):
                sent[k] = time.perf_counter()  # before: tails may see it before we resume
                assert await log.append([record]) == [k]
            elapsed = time.perf_counter() - start
        latencies.sort()
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        _report(
            f"append -> {readers} tails (serial appends)",
            n - 1,
            elapsed,
            extra=f"  append-to-delivery p50 {p50:.2f} ms, p99 {p99:.2f} ms",
        )


async def run_all(opener: Opener, n: int, size: int) -> None:
    await bench_serial(opener, max(n // 10, 100), size)
    for callers in (8, 32, 128):
        await bench_concurrent(opener, n, size, callers)
    await bench_batched(opener, n, size, 100)
    await bench_reads(opener, size)
    await bench_tail(opener, max(n // 10, 100), size, 10)


@contextlib.asynccontextmanager
async def disk_opener(parent: str | None) -> AsyncIterator[Opener]:
    root = Path(tempfile.mkdtemp(prefix="myelin-bench-eventlog-", dir=parent))
    print(f"== disk log in {root}")

    def opener(name: str, cold: bool = False) -> EventLog:
        return DiskEventLog(root / name, cache_bytes=0 if cold else 8 * 2**20)

    try:
        yield opener
    finally:
        shutil.rmtree(root)


@contextlib.asynccontextmanager
async def jetstream_opener() -> AsyncIterator[Opener]:
    import nats

    from myelin.eventlog.jetstream import JetStreamEventLog

    run = f"BENCH_{uuid.uuid4().hex[:12]}"
    print(f"== JetStream log on nats://127.0.0.1:4222, streams {run}_*")
    names: set[str] = set()

    def opener(name: str, cold: bool = False) -> EventLog:
        stream = f"{run}_{name}"
        names.add(stream)
        return JetStreamEventLog(stream=stream, subject_prefix=f"{stream}.room")

    try:
        yield opener
    finally:
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        for stream in names:
            for name in (stream, f"KV_{stream}_readers"):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
        await nc.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024, help="payload bytes per record")
    parser.add_argument("--dir", default=None, help="where to create the disk logs")
    parser.add_argument("--backend", choices=["disk", "jetstream", "both"], default="disk")
    args = parser.parse_args()
    print(f"{args.records} records of {args.size} bytes")
    if args.backend in ("disk", "both"):
        async with disk_opener(args.dir) as opener:
            await run_all(opener, args.records, args.size)
    if args.backend in ("jetstream", "both"):
        async with jetstream_opener() as opener:
            await run_all(opener, args.records, args.size)


if __name__ == "__main__":
    asyncio.run(main())
