"""Sync tests run on SQLite and PostgreSQL, with a real event log on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from myelin.eventlog.disk import DiskEventLog
from myelin.storage import Database, testing

pg_dsn = testing.pg_dsn_fixture()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.open_test_database(request.param, tmp_path, request) as database:
        yield database


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[DiskEventLog]:
    async with DiskEventLog(tmp_path / "log") as event_log:
        yield event_log
