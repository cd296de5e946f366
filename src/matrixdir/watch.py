"""Waiting for changes under some paths (inotify through watchfiles' public `awatch`).

The agents and the viewer must not miss a change that happens between "look at the
files" and "wait for the next change", so the watch has to exist *before* they look.
`awatch` sets its watch up synchronously in the first step of its generator, before it
first waits, so `Watch` starts that step in a task on entry and lets it run once: from
then on every change is recorded by the watcher, also while the caller is busy reading.

Cancellation: `awatch` waits in a worker thread that only returns when a change comes,
its timeout passes or its stop event is set, and its thread wait is shielded, so a plain
cancel would hang for up to `rust_timeout`. `Watch` therefore sets the stop event first
(the thread notices within `step` ms) and then waits for the generator to end, which
closes the inotify watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from watchfiles import awatch

DEBOUNCE_MS = 30  # a burst of writes (one sync batch) becomes one wake-up
STEP_MS = 20  # how soon a change, or the stop event, is noticed


class Watch:
    """A running watch on `paths`; `await changed()` returns at the next change.

    Use as `async with Watch(path, ...) as w:`. Setting `stop` (a threading.Event, so
    another thread can end the wait) makes `changed()` return False from then on.
    """

    def __init__(self, *paths: Path, recursive: bool, stop: threading.Event | None = None) -> None:
        self._paths = paths
        self._recursive = recursive
        self.stop = stop or threading.Event()
        self._changes: AsyncGenerator[set[Any], None] | None = None
        self._next: asyncio.Future[set[Any]] | None = None

    async def __aenter__(self) -> Self:
        self._changes = awatch(
            *self._paths,
            watch_filter=None,  # every change counts (the default drops e.g. "*.swp")
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            # awatch's type names asyncio/anyio/trio events, but it only calls is_set()
            # (from its worker thread) and set(): a threading.Event is the thread-safe one.
            stop_event=cast(asyncio.Event, self.stop),
            rust_timeout=5000,
            yield_on_timeout=False,
            force_polling=False,
            recursive=self._recursive,
            ignore_permission_denied=False,
            debug=False,
        )
        self._start_next()
        # One turn of the loop runs the generator's first step, which creates the
        # watch (see the module docstring) before it waits in its thread.
        await asyncio.sleep(0)
        if self._next is not None and self._next.done():
            self._next.result()  # e.g. a path that does not exist: raise it here
        return self

    def _start_next(self) -> None:
        assert self._changes is not None
        self._next = asyncio.ensure_future(anext(self._changes))

    async def changed(self, limit_s: float | None = None) -> bool:
        """Wait for the next batch of changes; False if stopped or `limit_s` seconds passed.

        A timed-out wait keeps its pending step, so nothing that happens afterwards is
        lost and no new thread is started for the next call.
        """
        if self._next is None:
            return False
        try:
            done, _ = await asyncio.wait({self._next}, timeout=limit_s)
        except asyncio.CancelledError:
            await self._finish()
            raise
        if not done:
            return False
        try:
            self._next.result()
        except StopAsyncIteration:
            self._next = None
            return False
        self._start_next()
        return True

    async def _finish(self) -> None:
        """Stop the thread's wait and close the watch, even if cancelled meanwhile."""
        self.stop.set()
        cancelled = False
        pending, self._next = self._next, None
        if pending is not None:
            while not pending.done():
                try:
                    await asyncio.wait({pending})
                except asyncio.CancelledError:
                    cancelled = True
            with contextlib.suppress(StopAsyncIteration, Exception):
                pending.result()  # a watcher error was already raised by changed()
        changes, self._changes = self._changes, None
        if changes is not None:
            await changes.aclose()
        if cancelled:
            raise asyncio.CancelledError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._finish()
