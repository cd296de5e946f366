"""Fixtures shared by the event log tests.

`open_log` opens a log backend on a fixed location (reopening it reaches the same data),
so the interface tests in `test_interface.py` run against every backend: the disk log,
and the JetStream log on NATS at 127.0.0.1:4222, which must be running (those tests
fail, never skip, without it). `open_jetstream` is the JetStream factory alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from myelin.eventlog import DiskEventLog, EventLog

OpenLog = Callable[..., EventLog]
NATS_URL = "nats://127.0.0.1:4222"


@contextlib.asynccontextmanager
async def _jetstream_factory() -> AsyncIterator[OpenLog]:
    """A factory of logs on a fresh stream, deleted (with its reader bucket) afterwards."""
    import nats
    import nats.js.errors

    from myelin.eventlog.jetstream import JetStreamEventLog

    try:
        async with asyncio.timeout(5):  # the client can hang on a refused connection
            nc = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
    except Exception as exc:
        pytest.fail(
            f"these tests need NATS with JetStream on {NATS_URL} (`nats-server -js`), "
            f"which is not reachable: {exc!r}"
        )
    stream = f"TEST_{uuid.uuid4().hex}"

    def jetstream(**options: Any) -> EventLog:
        return JetStreamEventLog(
            servers=NATS_URL, stream=stream, subject_prefix=f"{stream}.room", **options
        )

    try:
        yield jetstream
    finally:
        js = nc.jetstream()
        for name in (stream, f"KV_{stream}_readers"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await nc.close()


@pytest.fixture(params=["disk", pytest.param("jetstream", marks=pytest.mark.nats)])
async def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenLog]:
    """A factory: `open_log()` returns an unopened log on this test's location."""
    if request.param == "jetstream":
        async with _jetstream_factory() as factory:
            yield factory
        return
    location = tmp_path / "log"

    def disk(**options: Any) -> EventLog:
        return DiskEventLog(location, **options)

    yield disk


@pytest.fixture
async def open_jetstream() -> AsyncIterator[OpenLog]:
    async with _jetstream_factory() as factory:
        yield factory
