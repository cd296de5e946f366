"""Numbered schema migrations, per component, applied on start.

Each component package owns its migrations, e.g. `myelin/userapi/migrations/`
(a package with an `__init__.py`) holding `001_initial.sql`, `002_devices.sql`, ...
Numbers start at 1 and have no gaps; a file is never edited once released, a change is a
new file. The SQL is the common dialect of `myelin.storage.base` (`AUTO_ID`, `BLOB`,
statements separated by `;` at the end of a line).

`schema_versions(component, version)` records how far each component got. Every
migration runs in its own transaction together with the update of that row, so a crash
leaves the schema at some whole version. A database newer than the code is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from myelin.storage.base import (
    Backend,
    Database,
    MigrationError,
    Txn,
    ddl_for,
    split_statements,
)

_FILE = re.compile(r"^(\d+)_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """Migration `version` of a component: a SQL script in the common dialect."""

    version: int
    sql: str


def load_migrations(package: str) -> list[Migration]:
    """The `NNN_name.sql` files of a package, in order; gaps or duplicates are an error."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    _check_sequence(package, found)
    return found


def _check_sequence(component: str, migrations: Sequence[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{component}: migrations must be numbered 1, 2, 3, ... without gaps; "
                f"found {migration.version} where {expected} was expected"
            )


async def _ensure_table(txn: Txn) -> None:
    await txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version BIGINT NOT NULL)"
    )


async def schema_version(db: Database, component: str) -> int:
    """The version of `component` in force (0 when none was applied)."""

    async def txn(t: Txn) -> int:
        await _ensure_table(t)
        value = await t.fetchval(
            "SELECT version FROM schema_versions WHERE component = ?", component
        )
        return int(value) if value is not None else 0

    return await db.run(txn)


async def apply_migrations(
    db: Database, component: str, migrations: str | Sequence[Migration]
) -> int:
    """Apply the migrations of `component` not yet applied; returns the version in force."""
    if isinstance(migrations, str):
        migrations = load_migrations(migrations)
    else:
        migrations = sorted(migrations, key=lambda m: m.version)
        _check_sequence(component, migrations)
    target = len(migrations)

    for migration in migrations:

        async def step(t: Txn, migration: Migration = migration) -> bool:
            if t.backend is Backend.POSTGRES:
                # Two processes starting together must not both migrate.
                await t.execute("SELECT pg_advisory_xact_lock(7405611)")
            await _ensure_table(t)
            current = await t.fetchval(
                "SELECT version FROM schema_versions WHERE component = ?", component
            )
            current = int(current) if current is not None else 0
            if current > target:
                raise MigrationError(
                    f"{component}: the database schema is at version {current}, "
                    f"newer than this code ({target})"
                )
            if current >= migration.version:
                return False
            for statement in split_statements(ddl_for(t.backend, migration.sql)):
                await t.execute(statement)
            await t.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                component,
                migration.version,
            )
            return True

        await db.run(step)
    version = await schema_version(db, component)
    if version > target:
        raise MigrationError(
            f"{component}: the database schema is at version {version}, "
            f"newer than this code ({target})"
        )
    return version
