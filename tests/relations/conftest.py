"""One server per test module on each database backend (SQLite, PostgreSQL); the tests
register uniquely named users, so they can share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from myelin.storage import testing
from tests.support.server import ServerProcess, start_server

#: The database URL of each running test server, by port (tests read what it stored).
DATABASES: dict[int, str] = {}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    dsn = testing.create_throwaway_database() if request.param == "postgres" else None
    try:
        data = tmp_path_factory.mktemp("myelin") / "data"
        server = start_server(data, database=dsn) if dsn else start_server(data)
        DATABASES[server.port] = dsn or str(data / "myelin.db")
        try:
            yield server
        finally:
            code = server.stop()
            assert code == 0, f"myelin serve exited with {code}: {server.stderr_lines}"
    finally:
        if dsn:
            testing.drop_database(dsn)
