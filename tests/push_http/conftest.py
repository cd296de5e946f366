"""One server per test module and database backend (SQLite, PostgreSQL): the SQL behind
counts, receipts, presence and account data runs on both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from myelin.storage import testing
from tests.support.server import ServerProcess, start_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    dsn = testing.create_throwaway_database() if request.param == "postgres" else None
    try:
        data = tmp_path_factory.mktemp("myelin") / "data"
        process = start_server(data, database=dsn) if dsn else start_server(data)
        try:
            yield process
        finally:
            code = process.stop()
            assert code == 0, f"myelin serve exited with {code}: {process.stderr_lines}"
    finally:
        if dsn:
            testing.drop_database(dsn)
