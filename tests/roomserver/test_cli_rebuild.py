"""`myelin rebuild` on a data directory: same answers afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from myelin.cli import main
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.roomserver import Roomserver
from myelin.storage.sqlite import SqliteDatabase

from .test_rebuild import answers, random_workload


async def _workload(data_dir: Path) -> tuple[list[str], list[str], dict[str, Any]]:
    db = await SqliteDatabase.open(data_dir / "myelin.db")
    try:
        async with DiskEventLog(data_dir / "eventlog") as log:
            rs = await Roomserver.open(db, log)
            room_ids, event_ids = await random_workload(rs, seed=11, steps=30)
            return room_ids, event_ids, await answers(rs, room_ids, event_ids)
    finally:
        await db.close()


async def _answers(data_dir: Path, room_ids: list[str], event_ids: list[str]) -> dict[str, Any]:
    db = await SqliteDatabase.open(data_dir / "myelin.db")
    try:
        async with DiskEventLog(data_dir / "eventlog") as log:
            rs = await Roomserver.open(db, log)
            return await answers(rs, room_ids, event_ids)
    finally:
        await db.close()


def test_myelin_rebuild_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    room_ids, event_ids, before = asyncio.run(_workload(data_dir))
    result = CliRunner().invoke(main, ["rebuild", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "rebuilt from" in result.output
    assert asyncio.run(_answers(data_dir, room_ids, event_ids)) == before
