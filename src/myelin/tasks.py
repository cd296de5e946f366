"""Background tasks that live exactly as long as a `with` block (structured concurrency).

Components that read the event log (the sync reader, the pusher, the federation and
application-service senders) run their loop in a task group for as long as the server uses
them. `running` is that shape once: the tasks are cancelled when the block ends, and an
error of the block passes through as it is, not wrapped in the task group's
ExceptionGroup, so that callers see e.g. a startup error unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def running(
    jobs: Iterable[tuple[Coroutine[Any, Any, Any], str]],
    *,
    on_exit: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """Run each `(coroutine, task name)` of `jobs` while the block runs. On leaving it,
    `on_exit` (e.g. waking long-polls) is called first, then the tasks are cancelled."""
    body_error: BaseException | None = None
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(coro, name=name) for coro, name in jobs]
        try:
            yield
        except BaseException as exc:  # re-raised below, after the tasks stopped
            body_error = exc
        finally:
            if on_exit is not None:
                on_exit()
            for task in tasks:
                task.cancel()
    if body_error is not None:
        raise body_error
