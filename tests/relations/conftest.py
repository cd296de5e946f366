"""One server per test module on each database backend (SQLite, PostgreSQL); the tests
register uniquely named users, so they can share it. `DATABASES` gives each running
server's database URL by port (tests read what it stored)."""

from __future__ import annotations

from tests.support.backends import DATABASES, server_per_backend_fixture

backend_server = server_per_backend_fixture("module")

__all__ = ["DATABASES", "backend_server"]
