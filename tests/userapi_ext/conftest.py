"""Store tests run on SQLite and PostgreSQL; HTTP tests on a server per backend."""

from __future__ import annotations

from myelin.storage import testing
from tests.support.backends import database_fixture, server_per_backend_fixture

pg_dsn = testing.pg_dsn_fixture()
db = database_fixture()
server = server_per_backend_fixture("module")
