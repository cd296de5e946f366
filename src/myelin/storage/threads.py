"""Dedicated worker threads that run blocking calls (SQLite, the event log's writes) for
the event loop.

Why not `loop.run_in_executor` with a `ThreadPoolExecutor`: each call then goes through
a concurrent Future, a work item, the pool's semaphore and condition variables and a
chained asyncio Future, all Python code holding the GIL; profiling a message send
(`py-spy --gil`) put that machinery at about a quarter of the server's GIL time. Here a
call is one `SimpleQueue.put`, one thread wake-up, and one `call_soon_threadsafe` back.

Semantics kept from the executor: calls run in FIFO order (on one thread, strictly one
after another); a call whose awaiting task was cancelled before the call started is
skipped; a call that started runs to its end whatever happens to its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Workers:
    """`count` threads taking calls from one queue (one thread: strictly in order)."""

    def __init__(self, name: str, count: int = 1) -> None:
        if count < 1:
            raise ValueError("at least one worker thread")
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)` for a worker thread; the future of its result."""
        if self._closed:
            raise RuntimeError("the worker threads are shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on a worker thread; its result or exception."""
        return await self.submit(fn, *args)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            loop, future, fn, args = job
            if future.cancelled():  # not started yet: skip it, like an executor would
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, like an executor would
                self._answer(loop, future, None, exc)
            else:
                self._answer(loop, future, result, None)

    @staticmethod
    def _answer(
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        result: Any,
        error: BaseException | None,
    ) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            loop.call_soon_threadsafe(_settle, future, result, error)

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new calls; the queued ones still run. With `wait`, block until the
        threads are done (call it from a thread other than the event loop's)."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()
