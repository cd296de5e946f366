"""The key server's store tests run on SQLite and on PostgreSQL."""

from __future__ import annotations

from myelin.storage import testing
from tests.support.backends import database_fixture

pg_dsn = testing.pg_dsn_fixture()
db = database_fixture()
