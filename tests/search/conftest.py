"""One server per test module on each database backend (SQLite, PostgreSQL); the tests
register uniquely named users, so they can share it."""

from __future__ import annotations

from tests.support.backends import server_per_backend_fixture

backend_server = server_per_backend_fixture("module")
