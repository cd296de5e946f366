"""The worker threads behind the SQLite backend and the event log: calls run in order,
errors reach the caller, a call cancelled before it started is skipped, and shutdown
lets queued calls finish."""

from __future__ import annotations

import asyncio
import threading

import pytest

from myelin.storage.threads import Workers


async def test_calls_run_in_order_on_the_worker_thread() -> None:
    workers = Workers("test")
    seen: list[tuple[int, str]] = []

    def job(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    try:
        results = await asyncio.gather(*(workers.call(job, n) for n in range(50)))
    finally:
        workers.shutdown()
    assert results == [n * n for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-0"}


async def test_an_exception_reaches_the_caller() -> None:
    workers = Workers("test")

    def fail() -> None:
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await workers.call(fail)
        assert await workers.call(lambda: 7) == 7  # the thread survived
    finally:
        workers.shutdown()


async def test_a_call_cancelled_before_it_started_is_skipped() -> None:
    workers = Workers("test")
    gate = threading.Event()
    ran: list[str] = []
    try:
        blocker = workers.submit(gate.wait)
        skipped = workers.submit(ran.append, "skipped")
        skipped.cancel()
        after = workers.submit(ran.append, "after")
        gate.set()
        await blocker
        await after
    finally:
        workers.shutdown()
    assert ran == ["after"]


async def test_shutdown_finishes_queued_calls_then_refuses_new_ones() -> None:
    workers = Workers("test", 2)
    gate = threading.Event()
    done: list[int] = []
    futures = [workers.submit(gate.wait)] + [workers.submit(done.append, n) for n in range(5)]
    workers.shutdown(wait=False)
    gate.set()
    await asyncio.gather(*futures)
    await asyncio.get_running_loop().run_in_executor(None, workers.shutdown)
    assert sorted(done) == list(range(5))
    with pytest.raises(RuntimeError):
        await workers.call(done.append, 9)
