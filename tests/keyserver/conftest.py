"""The key server's store tests run on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from myelin.storage import Database, testing

pg_dsn = testing.pg_dsn_fixture()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.open_test_database(request.param, tmp_path, request) as database:
        yield database
