"""Per-key coordination inside one process: wake-ups and locks that clean up after
themselves, so a key that is no longer in use costs no memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class Waiters:
    """Waiting for "media X was uploaded" without polling.

    A waiter registers (`watch`) before it re-checks the database, so a wake-up that
    happens between its check and its wait is never lost."""

    def __init__(self) -> None:
        self._events: dict[Hashable, tuple[asyncio.Event, int]] = {}

    @asynccontextmanager
    async def watch(self, key: Hashable) -> AsyncIterator[asyncio.Event]:
        event, count = self._events.get(key, (asyncio.Event(), 0))
        self._events[key] = (event, count + 1)
        try:
            yield event
        finally:
            current = self._events.get(key)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[key]
                else:
                    self._events[key] = (event, current[1] - 1)

    def wake(self, key: Hashable) -> None:
        entry = self._events.pop(key, None)
        if entry is not None:
            entry[0].set()

    def __len__(self) -> int:
        return len(self._events)


class KeyedLocks:
    """One asyncio.Lock per key while anyone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, count = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, count + 1)
        try:
            async with lock:
                yield
        finally:
            _, remaining = self._locks[key]
            if remaining <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, remaining - 1)

    def __len__(self) -> int:
        return len(self._locks)
