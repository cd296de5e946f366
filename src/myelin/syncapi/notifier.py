"""Wake-ups for long-polling `/sync` requests and for read-your-writes waits.

The sync reader calls `wake(users)` after each applied batch and `advance(pos)` with its
new position; requests wait on futures, never by sleeping and polling. A request registers
its future *before* it looks for news, so a batch applied between the look and the wait
still wakes it.

Every wake-up is numbered, and the notifier remembers the number of each user's last one:
a `/sync` notes the number current before it looked, and the client's next long poll
from that answer's token can skip looking (and wait at once) as long as that user has not
been woken since (`woken_since`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: Users whose last wake-up number is remembered; past this, all are forgotten at once.
MAX_REMEMBERED = 100_000


class Notifier:
    #: A listener key woken by every wake-up (never a user ID: those start with `@`), for
    #: room previews, whose peekers no component knows by name.
    PEEKERS = "*"

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Future[None]]] = {}
        self._position_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.position = 0
        self.closed = False
        #: The number of the latest wake-up.
        self.wakes = 0
        self._woken_at: dict[str, int] = {}
        #: A forgotten user counts as woken at this number (when the memory was cleared).
        self._forgotten_at = 0

    def close(self) -> None:
        """Shutting down: wake every long poll so it answers now."""
        self.closed = True
        self.wake_all()

    @contextmanager
    def listen(self, user_id: str) -> Iterator[asyncio.Future[None]]:
        """A future that completes when something for `user_id` is applied."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        listeners = self._listeners.setdefault(user_id, set())
        listeners.add(future)
        try:
            yield future
        finally:
            listeners.discard(future)
            if not listeners:
                self._listeners.pop(user_id, None)
            if not future.done():
                future.cancel()

    def woken_since(self, user_id: str, mark: int) -> bool:
        """Whether `user_id` may have been woken after wake-up number `mark`."""
        return self._woken_at.get(user_id, self._forgotten_at) > mark

    def wake(self, user_ids: Iterable[str]) -> None:
        self.wakes += 1
        number = self.wakes
        woken_at = self._woken_at
        if len(woken_at) >= MAX_REMEMBERED:
            woken_at.clear()
            self._forgotten_at = number
        for user_id in user_ids:
            woken_at[user_id] = number
            for future in self._listeners.get(user_id, ()):
                if not future.done():
                    future.set_result(None)
        for future in self._listeners.get(self.PEEKERS, ()):
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        self.wake(list(self._listeners))

    def advance(self, position: int) -> None:
        self.position = position
        if not self._position_waiters:
            return
        still: list[tuple[int, asyncio.Future[None]]] = []
        for wanted, future in self._position_waiters:
            if wanted <= position:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((wanted, future))
        self._position_waiters = still

    async def wait_for_position(self, position: int) -> None:
        """Return once the reader has applied the log up to `position`."""
        if self.position >= position:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._position_waiters.append((position, future))
        await future
