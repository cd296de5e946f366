"""Storage: SQLite (embedded default) and PostgreSQL (scale-out) behind one interface.

Usage, the same on both backends::

    from myelin.storage import Txn, open_database

    db = await open_database("sqlite:///var/lib/myelin/myelin.db")   # or a plain path
    # db = await open_database("postgresql://postgres@127.0.0.1:5432/myelin")
    await db.migrate("userapi", "myelin.userapi.migrations")  # NNN_name.sql files

    async def create_user(txn: Txn, user_id: str) -> int:
        await txn.execute("INSERT INTO users (user_id) VALUES (?)", user_id)
        return await txn.fetchval("SELECT count(*) FROM users")

    count = await db.run(lambda t: create_user(t, "@a:hs"))     # read-write, one transaction
    rows = await db.read(lambda t: t.fetchall("SELECT user_id FROM users"))  # snapshot read
    await db.close()

- A transaction function is `async def fn(txn) -> result`; it must await only its `txn`
  (on SQLite it runs whole inside the writer thread: one hop per transaction).
- It commits when the function returns and rolls back when it raises; the exception comes
  out of `run` (constraint violations as `IntegrityError`, other database failures as
  `StorageError`).
- SQL uses `?` placeholders; `col = ANY(?)` takes a list. See `myelin.storage.base` for
  the dialect and `myelin.storage.migrations` for migrations.
- Tests: `myelin.storage.testing` has the helpers behind the `db` fixture that runs a test
  on both backends.
"""

from __future__ import annotations

from pathlib import Path

from myelin.storage.base import (
    Backend,
    Database,
    IntegrityError,
    MigrationError,
    Row,
    StorageError,
    TransactionError,
    Txn,
)
from myelin.storage.migrations import Migration, apply_migrations, schema_version

__all__ = [
    "Backend",
    "Database",
    "IntegrityError",
    "Migration",
    "MigrationError",
    "Row",
    "StorageError",
    "TransactionError",
    "Txn",
    "apply_migrations",
    "open_database",
    "schema_version",
]


async def open_database(url: str | Path, **options: object) -> Database:
    """Open `postgresql://...` / `postgres://...` on asyncpg, anything else as a SQLite file
    (`sqlite:///abs/path`, `sqlite:relative/path` or a plain path)."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        from myelin.storage.postgres import PostgresDatabase

        return await PostgresDatabase.open(text, **options)  # type: ignore[arg-type]
    from myelin.storage.sqlite import SqliteDatabase

    if text.startswith("sqlite://"):
        text = text[len("sqlite://") :]
    elif text.startswith("sqlite:"):
        text = text[len("sqlite:") :]
    return await SqliteDatabase.open(text, **options)  # type: ignore[arg-type]
