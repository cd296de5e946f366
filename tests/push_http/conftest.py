"""One server per test module and database backend (SQLite, PostgreSQL): the SQL behind
counts, receipts, presence and account data runs on both."""

from __future__ import annotations

from tests.support.backends import server_per_backend_fixture

server = server_per_backend_fixture("module")
