"""The database layer behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from myelin.storage import (
    Backend,
    Database,
    IntegrityError,
    Migration,
    MigrationError,
    StorageError,
    TransactionError,
    Txn,
    open_database,
    schema_version,
)
from myelin.storage.base import split_statements, to_postgres, to_sqlite

SCHEMA = [
    Migration(
        1,
        """
        -- people and their things
        CREATE TABLE people (
            id AUTO_ID,
            name TEXT NOT NULL UNIQUE,
            avatar BLOB
        );
        CREATE TABLE things (person BIGINT NOT NULL, thing TEXT NOT NULL);
        """,
    ),
    Migration(2, "ALTER TABLE people ADD COLUMN age BIGINT;"),
]


async def migrated(db: Database) -> Database:
    assert await db.migrate("test", SCHEMA) == 2
    return db


async def test_insert_and_read_back(db: Database) -> None:
    await migrated(db)

    async def add(t: Txn) -> int:
        pid = await t.fetchval(
            "INSERT INTO people (name, avatar, age) VALUES (?, ?, ?) RETURNING id",
            "ann",
            b"\x00\xff",
            41,
        )
        await t.executemany(
            "INSERT INTO things (person, thing) VALUES (?, ?)", [(pid, "cup"), (pid, "pen")]
        )
        return int(pid)

    pid = await db.run(add)
    assert pid >= 1
    row = await db.read(lambda t: t.fetchone("SELECT name, avatar, age FROM people"))
    assert row == ("ann", b"\x00\xff", 41)
    things = await db.read(
        lambda t: t.fetchall("SELECT thing FROM things WHERE person = ? ORDER BY thing", pid)
    )
    assert things == [("cup",), ("pen",)]
    assert await db.read(lambda t: t.fetchone("SELECT name FROM people WHERE id = 0")) is None
    assert await db.read(lambda t: t.fetchval("SELECT name FROM people WHERE id = 0")) is None


async def test_any_list_parameter(db: Database) -> None:
    await migrated(db)

    async def fill(t: Txn) -> None:
        await t.executemany("INSERT INTO people (name) VALUES (?)", [(n,) for n in "abcdef"])

    await db.run(fill)
    rows = await db.read(
        lambda t: t.fetchall(
            "SELECT name FROM people WHERE name = ANY(?) ORDER BY name", ["b", "e", "zz"]
        )
    )
    assert rows == [("b",), ("e",)]
    ids = await db.read(lambda t: t.fetchall("SELECT id FROM people WHERE id = ANY(?)", [1, 2]))
    assert sorted(ids) == [(1,), (2,)]


async def test_exception_rolls_back_everything(db: Database) -> None:
    await migrated(db)

    async def half(t: Txn) -> None:
        await t.execute("INSERT INTO people (name) VALUES (?)", "bob")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await db.run(half)
    assert await db.read(lambda t: t.fetchval("SELECT count(*) FROM people")) == 0


async def test_unique_violation_is_integrity_error(db: Database) -> None:
    await migrated(db)

    async def add(t: Txn) -> None:
        await t.execute("INSERT INTO people (name) VALUES (?)", "cat")

    await db.run(add)

    async def add_two(t: Txn) -> None:
        await t.execute("INSERT INTO people (name) VALUES (?)", "dog")
        await t.execute("INSERT INTO people (name) VALUES (?)", "cat")

    with pytest.raises(IntegrityError):
        await db.run(add_two)
    names = await db.read(lambda t: t.fetchall("SELECT name FROM people"))
    assert names == [("cat",)]
    # The database still works after the failure.
    await db.run(lambda t: t.execute("INSERT INTO people (name) VALUES (?)", "emu"))
    assert await db.read(lambda t: t.fetchval("SELECT count(*) FROM people")) == 2


async def test_bad_sql_is_storage_error(db: Database) -> None:
    with pytest.raises(StorageError):
        await db.run(lambda t: t.execute("SELEKT nonsense"))


async def test_execute_returns_rowcount(db: Database) -> None:
    await migrated(db)
    await db.run(
        lambda t: t.executemany("INSERT INTO people (name) VALUES (?)", [("x",), ("y",), ("z",)])
    )
    changed = await db.run(lambda t: t.execute("UPDATE people SET age = ? WHERE name <> ?", 3, "x"))
    assert changed == 2


async def test_migrations_are_recorded_and_idempotent(db: Database) -> None:
    assert await schema_version(db, "test") == 0
    assert await db.migrate("test", SCHEMA[:1]) == 1
    assert await schema_version(db, "test") == 1
    assert await db.migrate("test", SCHEMA) == 2
    assert await db.migrate("test", SCHEMA) == 2
    # Another component has its own version.
    assert await db.migrate("other", [Migration(1, "CREATE TABLE other_t (x BIGINT);")]) == 1
    assert await schema_version(db, "test") == 2


async def test_database_newer_than_code_is_refused(db: Database) -> None:
    await db.migrate("test", SCHEMA)
    with pytest.raises(MigrationError, match="newer than this code"):
        await db.migrate("test", SCHEMA[:1])


async def test_migration_gap_is_refused(db: Database) -> None:
    with pytest.raises(MigrationError, match="without gaps"):
        await db.migrate("test", [SCHEMA[1]])
    assert await schema_version(db, "test") == 0


async def test_failing_migration_leaves_previous_version(db: Database) -> None:
    broken = [SCHEMA[0], Migration(2, "CREATE TABLE ok_t (x BIGINT);\nNOT SQL AT ALL;")]
    with pytest.raises(StorageError):
        await db.migrate("test", broken)
    assert await schema_version(db, "test") == 1
    # The half of migration 2 that ran was rolled back with it.
    await db.migrate("test2", [Migration(1, "CREATE TABLE ok_t (x BIGINT);")])


async def test_concurrent_writers_serialize(db: Database) -> None:
    await db.migrate("test", [Migration(1, "CREATE TABLE counter (n BIGINT NOT NULL);")])
    await db.run(lambda t: t.execute("INSERT INTO counter (n) VALUES (0)"))

    async def bump(t: Txn) -> None:
        n = await t.fetchval("SELECT n FROM counter")
        await t.execute("UPDATE counter SET n = ?", n + 1)

    async def bump_locked(t: Txn) -> None:
        # PostgreSQL runs writers concurrently: lock the row like real code would.
        n = await t.fetchval(
            "SELECT n FROM counter" + (" FOR UPDATE" if t.backend is Backend.POSTGRES else "")
        )
        await t.execute("UPDATE counter SET n = ?", n + 1)

    async with asyncio.TaskGroup() as tg:
        for _ in range(50):
            tg.create_task(db.run(bump_locked if db.backend is Backend.POSTGRES else bump))
    assert await db.read(lambda t: t.fetchval("SELECT n FROM counter")) == 50


async def test_reader_sees_a_snapshot(db: Database) -> None:
    await db.migrate("test", SCHEMA)
    await db.run(lambda t: t.execute("INSERT INTO people (name) VALUES ('a')"))

    async def read_twice(t: Txn) -> tuple[int, int]:
        first = await t.fetchval("SELECT count(*) FROM people")
        second = await t.fetchval("SELECT count(*) FROM people")
        return int(first), int(second)

    assert await db.read(read_twice) == (1, 1)


async def test_awaiting_other_things_in_sqlite_txn_fails(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "x.db")
    try:

        async def sleepy(t: Txn) -> None:
            await t.execute("CREATE TABLE t (x BIGINT)")
            await asyncio.sleep(0)

        with pytest.raises(TransactionError):
            await db.run(sleepy)
        # Rolled back: the table does not exist.
        rows = await db.read(
            lambda t: t.fetchall("SELECT name FROM sqlite_master WHERE name = 't'")
        )
        assert rows == []
    finally:
        await db.close()


async def test_closed_database_refuses_work(tmp_path: Path) -> None:
    db = await open_database(f"sqlite://{tmp_path}/y.db")
    await db.close()
    with pytest.raises(StorageError, match="closed"):
        await db.run(lambda t: t.execute("SELECT 1"))


async def test_sqlite_data_survives_reopen(tmp_path: Path) -> None:
    async with await open_database(tmp_path / "z.db") as db:
        await db.migrate("test", SCHEMA)
        await db.run(lambda t: t.execute("INSERT INTO people (name) VALUES ('kept')"))
    async with await open_database(tmp_path / "z.db") as db:
        assert await db.migrate("test", SCHEMA) == 2
        assert await db.read(lambda t: t.fetchval("SELECT name FROM people")) == "kept"
        mode = await db.read(lambda t: t.fetchval("PRAGMA journal_mode"))
        assert mode == "wal"


def test_sql_translation() -> None:
    assert to_postgres("SELECT ? , '?' , ?") == "SELECT $1 , '?' , $2"
    assert to_postgres("x = 'it''s ?' AND y = ?") == "x = 'it''s ?' AND y = $1"
    assert to_sqlite("a = ANY(?) AND b = ?") == "a IN (SELECT value FROM json_each(?)) AND b = ?"
    assert split_statements(
        "-- c\nCREATE TABLE a (x BIGINT);\n\nCREATE TABLE b (\n y TEXT\n);"
    ) == [
        "CREATE TABLE a (x BIGINT)",
        "CREATE TABLE b (\n y TEXT\n)",
    ]


async def test_non_durable_write_commits_and_restores_sync_mode(db: Database) -> None:
    await db.migrate("test", SCHEMA)
    await db.run(lambda t: t.execute("INSERT INTO people (name) VALUES ('quick')"), durable=False)
    assert await db.read(lambda t: t.fetchval("SELECT name FROM people")) == "quick"
    if db.backend is Backend.SQLITE:
        # The writer's connection is back to FULL (2) for the next durable write.
        assert await db.run(lambda t: t.fetchval("PRAGMA synchronous")) == 2


async def test_unreachable_databases_are_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot"):
        await open_database(tmp_path / "no" / "such" / "dir" / "x.db")
    with pytest.raises(StorageError, match="cannot connect"):
        await open_database("postgresql://postgres@127.0.0.1:1/nothing", min_size=0)


async def test_single_statement_fetchall(db: Database) -> None:
    await db.migrate("test", SCHEMA)
    await db.run(lambda t: t.execute("INSERT INTO people (name, age) VALUES ('gus', 7)"))
    assert await db.fetchall("SELECT name, age FROM people WHERE age = ?", 7) == [("gus", 7)]
    assert await db.fetchall("SELECT name FROM people WHERE name = ANY(?)", ["x"]) == []
    with pytest.raises(StorageError):
        await db.fetchall("SELECT nothing FROM nowhere")
