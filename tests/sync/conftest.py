"""Sync tests run on SQLite and PostgreSQL, with a real event log on disk."""

from __future__ import annotations

from myelin.storage import testing
from tests.support.backends import database_fixture, disk_log_fixture

pg_dsn = testing.pg_dsn_fixture()
db = database_fixture()
log = disk_log_fixture()
