"""A fresh server per test on each database backend (SQLite, PostgreSQL)."""

from __future__ import annotations

from tests.support.backends import server_per_backend_fixture

backend_server = server_per_backend_fixture("function")
