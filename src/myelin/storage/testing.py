"""Test helpers: run a test on both backends, with a throwaway PostgreSQL database.

A component's `conftest.py` wires them up like this::

    import pytest
    from myelin.storage import testing

    pg_dsn = testing.pg_dsn_fixture()           # session scope: one throwaway database

    @pytest.fixture(params=["sqlite", "postgres"])
    async def db(request, tmp_path):
        async with testing.open_test_database(request.param, tmp_path, request) as db:
            yield db

PostgreSQL is expected on 127.0.0.1:5432, user postgres, trust authentication (override
with MYELIN_TEST_PG, a DSN without database name). When it is absent, the PostgreSQL tests
FAIL with a message saying so; they are never skipped silently.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from myelin.storage.base import Database
from myelin.storage.postgres import PostgresDatabase
from myelin.storage.sqlite import SqliteDatabase

PG_SERVER = os.environ.get("MYELIN_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


async def _admin_async(sql: str) -> None:
    conn = await asyncpg.connect(PG_SERVER + "/postgres", timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    """Run one statement on the maintenance database, from a thread of its own so that it
    works whether or not an event loop runs in the caller's thread."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin_async(sql)).result()


def create_throwaway_database() -> str:
    """Create a uniquely named database; returns its DSN."""
    name = f"myelin_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"PostgreSQL is needed at {PG_SERVER} (user postgres, trust auth) for the "
            f"PostgreSQL half of these tests, and it is not usable: {exc!r}",
            pytrace=False,
        )
    return f"{PG_SERVER}/{name}"


def drop_database(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[-1]
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pg_dsn_fixture() -> Callable[..., Any]:
    """A session-scoped fixture `pg_dsn`: the DSN of a database created lazily on first use
    and dropped at the end of the session."""

    @pytest.fixture(scope="session")
    def pg_dsn() -> Iterator[str]:
        dsn = create_throwaway_database()
        yield dsn
        drop_database(dsn)

    return pg_dsn


@asynccontextmanager
async def open_test_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any
) -> AsyncIterator[Database]:
    """A fresh, empty database of the given backend: a SQLite file under `tmp_path`, or a
    new schema in the session's throwaway PostgreSQL database."""
    db: Database
    if backend == "sqlite":
        db = await SqliteDatabase.open(tmp_path / "test.db", **options)
    elif backend == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        db = await PostgresDatabase.open(dsn, schema=f"t_{uuid.uuid4().hex[:12]}", **options)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    try:
        yield db
    finally:
        await db.close()
