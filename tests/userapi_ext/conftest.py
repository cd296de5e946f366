"""Store tests run on SQLite and PostgreSQL; HTTP tests on a server per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from myelin.storage import Database, testing
from tests.push_http.conftest import server

pg_dsn = testing.pg_dsn_fixture()

__all__ = ["db", "pg_dsn", "server"]


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.open_test_database(request.param, tmp_path, request) as database:
        yield database
