"""Wiring of `matrixdir sync`: credentials, writer lock, key lock, progress bar, agent loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from matrixdir.agent import RetrievalAgent, SyncStats
from matrixdir.client import e2e_available, make_client
from matrixdir.config import load_credentials
from matrixdir.errors import LockedError, PermanentFailure
from matrixdir.submit import crypto_lock
from matrixdir.writer import StoreWriter


async def run_sync(
    store: Path,
    user: str | None,
    *,
    once: bool,
    backfill: bool,
    rooms: list[str] | None,
    import_keys: str | None = None,
    passphrase: str | None = None,
    page_size: int = 100,
    progress: bool = False,
    timeout_ms: int = 30000,
) -> SyncStats:
    creds = load_credentials(user)
    with StoreWriter(store) as writer, crypto_lock(creds.user_id) as own_keys:
        if not own_keys:
            raise LockedError(str(store), None)
        client = make_client(creds, encryption=e2e_available())
        try:
            if import_keys:
                if not client.olm:
                    raise PermanentFailure("end-to-end encryption is not available")
                import nio

                try:
                    await client.import_keys(import_keys, passphrase or "")
                except nio.EncryptionError as e:
                    raise PermanentFailure(f"cannot import {import_keys}: {e}") from e
            with _progress(progress) as report, _stop_on_signals():
                agent = RetrievalAgent(
                    writer, client, rooms=rooms, page_limit=page_size, progress=report
                )
                try:
                    return await agent.run(once=once, backfill=backfill, timeout_ms=timeout_ms)
                except asyncio.CancelledError:
                    # SIGTERM/SIGINT: what is on disk is consistent; stop cleanly.
                    return agent.stats
        finally:
            await client.close()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into cancelling the agent, so the lock and caches close."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _progress(enabled: bool):  # type: ignore[no-untyped-def]
    """A rich progress bar per room for back-fill, or nothing."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("back-fill {task.description}"),
        BarColumn(),
        TextColumn("{task.completed} events"),
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def report(room_id: str, n: int) -> None:
            if room_id not in tasks:
                tasks[room_id] = bar.add_task(room_id, total=None)
            bar.advance(tasks[room_id], n)

        yield report
