"""Fixtures that run a test once per storage backend (SQLite, PostgreSQL).

The SQL behind every store runs on both backends, so store tests and HTTP tests are
parametrised over `BACKENDS`. A conftest makes the fixtures it needs with the factories
below (pytest finds a fixture by the name it is bound to in the conftest):

    db = database_fixture()                          # an open `Database` per test
    log = disk_log_fixture()                         # a `DiskEventLog` per test
    server = server_per_backend_fixture("module")    # one `myelin serve` per module

A PostgreSQL-backed server gets a throwaway database that is dropped afterwards; a server
must stop cleanly (exit code 0) or the test that used it fails. `DATABASES` maps each
running server's port to its database URL, for tests that read what the server stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from myelin.eventlog.disk import DiskEventLog
from myelin.storage import Database, testing
from tests.support.server import ServerProcess, start_server

BACKENDS = ["sqlite", "postgres"]

#: The database URL of each running test server, by port.
DATABASES: dict[int, str] = {}


@contextlib.contextmanager
def server_on_backend(backend: str, data_dir: Path) -> Iterator[ServerProcess]:
    """A `myelin serve` on `backend`, stopped (and its database dropped) afterwards."""
    dsn = testing.create_throwaway_database() if backend == "postgres" else None
    try:
        server = start_server(data_dir, database=dsn) if dsn else start_server(data_dir)
        DATABASES[server.port] = dsn or str(data_dir / "myelin.db")
        try:
            yield server
        finally:
            DATABASES.pop(server.port, None)
            code = server.stop()
            assert code == 0, f"myelin serve exited with {code}: {server.stderr_lines}"
    finally:
        if dsn:
            testing.drop_database(dsn)


def server_per_backend_fixture(scope: Literal["function", "module"]) -> Callable[..., Any]:
    """A fixture yielding a server per backend: fresh per test, or shared by a module
    (for tests that only register uniquely named users)."""
    if scope == "module":

        @pytest.fixture(scope="module", params=BACKENDS)
        def module_server(
            request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[ServerProcess]:
            data = tmp_path_factory.mktemp("myelin") / "data"
            with server_on_backend(request.param, data) as server:
                yield server

        return module_server

    @pytest.fixture(params=BACKENDS)
    def test_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
        with server_on_backend(request.param, tmp_path / "data") as server:
            yield server

    return test_server


def database_fixture() -> Callable[..., Any]:
    """A fixture `db`: an open database per test on each backend (the conftest also
    needs `pg_dsn = testing.pg_dsn_fixture()`, which the PostgreSQL case uses)."""

    @pytest.fixture(params=BACKENDS)
    async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
        async with testing.open_test_database(request.param, tmp_path, request) as database:
            yield database

    return db


def disk_log_fixture() -> Callable[..., Any]:
    """A fixture: an open event log on disk in this test's temporary directory."""

    @pytest.fixture
    async def log(tmp_path: Path) -> AsyncIterator[DiskEventLog]:
        async with DiskEventLog(tmp_path / "log") as event_log:
            yield event_log

    return log
