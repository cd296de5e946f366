"""The index of stored event IDs per room (docs §8): a cache, rebuildable from the files.

The cache records how many bytes of each file it covers, so a writer starting on a large
store reads only the bytes appended since the cache was saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from matrixdir.fsutil import atomic_write
from matrixdir.layout import EventFileName
from matrixdir.reader import event_files, iter_complete_lines, parse_line

CACHE_VERSION = 1


@dataclass
class RoomIndex:
    """Event IDs stored in one room, and the bytes of each file they account for."""

    ids: set[str] = field(default_factory=set)
    covered: dict[str, int] = field(default_factory=dict)

    def scan(self, room_dir: Path) -> None:
        """Read every byte not yet covered (strict: corruption stops the writer loudly)."""
        for name in event_files(room_dir):
            path = room_dir / name.name
            start = self.covered.get(name.name, 0)
            end = start
            for off, line in iter_complete_lines(path, start):
                end = off + len(line) + 1
                if line.strip():
                    self.ids.add(parse_line(line, str(path), off)["event_id"])
            self.covered[name.name] = end

    @classmethod
    def load(cls, room_dir: Path, cache_path: Path) -> RoomIndex:
        """Load the cache if it is consistent with the files, else rebuild; then catch up."""
        index = cls._from_cache(room_dir, cache_path) or cls()
        index.scan(room_dir)
        return index

    @classmethod
    def _from_cache(cls, room_dir: Path, cache_path: Path) -> RoomIndex | None:
        try:
            data = orjson.loads(cache_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return None
        covered = data.get("files")
        ids = data.get("ids")
        if not isinstance(covered, dict) or not isinstance(ids, list):
            return None
        present = {n.name for n in event_files(room_dir)}
        for name, size in covered.items():
            if name not in present or not isinstance(size, int):
                return None
            if (room_dir / name).stat().st_size < size:
                return None
        return cls(set(ids), dict(covered))

    def save(self, cache_path: Path) -> None:
        data = {"version": CACHE_VERSION, "files": self.covered, "ids": sorted(self.ids)}
        atomic_write(cache_path, orjson.dumps(data))


def cache_name(room_dir_name: str) -> str:
    return f"{room_dir_name}.idx"


__all__ = ["EventFileName", "RoomIndex", "cache_name"]
