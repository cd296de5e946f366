"""Reading event files (docs §4.4, §4.5): complete lines only, from remembered byte offsets."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from matrixdir.errors import CorruptLineError, InvalidNameError
from matrixdir.layout import DECRYPTIONS_FILE, EventFileName, room_id_from_dir

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredEvent:
    """One event as stored, with where it is: (file, offset) is its place in reading order."""

    room_id: str
    file: EventFileName
    offset: int
    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.file.ts, self.file.n, self.offset)


def parse_line(line: bytes, path: str, offset: int) -> dict[str, Any]:
    """Parse one complete line; raise CorruptLineError if it is not an event object."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise CorruptLineError(path, offset, f"invalid JSON ({e})") from None
    if not isinstance(value, dict):
        raise CorruptLineError(path, offset, "not a JSON object")
    if not isinstance(value.get("event_id"), str):
        raise CorruptLineError(path, offset, "no string event_id")
    return value


def iter_complete_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, line without newline) for every complete line from `offset` on.

    An unterminated tail is never yielded: it is being written or was torn by a crash.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        pending = b""
        pos = offset
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            data = pending + chunk
            start = 0
            while True:
                nl = data.find(b"\n", start)
                if nl < 0:
                    break
                yield pos + start, data[start:nl]
                start = nl + 1
            pos += start
            pending = data[start:]


def event_files(room_dir: Path) -> list[EventFileName]:
    """The event files of a room directory, in reading order."""
    names = []
    try:
        entries = os.listdir(room_dir)
    except FileNotFoundError:
        return []
    for entry in entries:
        parsed = EventFileName.try_parse(entry)
        if parsed is not None:
            names.append(parsed)
    return sorted(names)


def room_dirs(root: Path) -> dict[str, Path]:
    """Room ID -> directory, for every valid room directory in the store."""
    rooms: dict[str, Path] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return rooms
    for entry in entries:
        if not entry.is_dir():
            continue
        try:
            rooms[room_id_from_dir(entry.name)] = Path(entry.path)
        except InvalidNameError:
            continue
    return rooms


@dataclass
class RoomReader:
    """Reads a room incrementally: remembers, per file, the offset after the last line read.

    strict=True raises CorruptLineError on a corrupt complete line; otherwise the line is
    skipped and recorded in `errors` (what a viewer wants).
    """

    room_id: str
    room_dir: Path
    strict: bool = True
    offsets: dict[EventFileName, int] = field(default_factory=dict)
    errors: list[CorruptLineError] = field(default_factory=list)

    def read_new(self) -> list[StoredEvent]:
        """Every complete line not read before, in reading order of files then offsets."""
        out: list[StoredEvent] = []
        for name in event_files(self.room_dir):
            path = self.room_dir / name.name
            start = self.offsets.get(name, 0)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= start:
                continue
            end = start
            for off, line in iter_complete_lines(path, start):
                end = off + len(line) + 1
                if not line.strip():
                    continue
                try:
                    event = parse_line(line, str(path), off)
                except CorruptLineError as e:
                    if self.strict:
                        raise
                    self.errors.append(e)
                    continue
                out.append(StoredEvent(self.room_id, name, off, event))
            self.offsets[name] = end
        return out


def read_decryptions(room_dir: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines of the room's late-decryptions file from `offset` (docs §5), and the
    offset after them. Invalid lines are skipped (check reports them)."""
    path = room_dir / DECRYPTIONS_FILE
    out: list[dict[str, Any]] = []
    end = offset
    try:
        for off, line in iter_complete_lines(path, offset):
            end = off + len(line) + 1
            try:
                out.append(parse_line(line, str(path), off))
            except CorruptLineError:
                continue
    except FileNotFoundError:
        return [], offset
    return out, end


def read_room(room_dir: Path, *, strict: bool = True) -> list[StoredEvent]:
    """Every stored event of a room, in reading order."""
    return RoomReader(room_id_from_dir(room_dir.name), room_dir, strict).read_new()


@dataclass
class StoreReader:
    """Reads every room of a store incrementally, picking up rooms created later."""

    root: Path
    strict: bool = False
    rooms: dict[str, RoomReader] = field(default_factory=dict)

    def read_new(self) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for room_id, path in room_dirs(self.root).items():
            reader = self.rooms.get(room_id)
            if reader is None:
                reader = self.rooms[room_id] = RoomReader(room_id, path, self.strict)
            out.extend(reader.read_new())
        return out


async def follow(
    reader: StoreReader, stop: threading.Event | None = None, *, yield_empty: bool = False
) -> AsyncGenerator[list[StoredEvent], None]:
    """Yield what is already stored, then each batch of new lines as the files change.

    The inotify watch (`matrixdir.watch`) is set up before the first read, so no line
    appended in between is missed. Setting `stop` (or cancelling the consumer, or closing
    the generator) ends the iteration and closes the watch.
    With yield_empty, every change in the store (e.g. the outbox) yields, maybe [].
    """
    from matrixdir.watch import Watch

    async with Watch(reader.root, recursive=True, stop=stop) as watch:
        first = reader.read_new()
        if first or yield_empty:
            yield first
        while await watch.changed():
            batch = reader.read_new()
            if batch or yield_empty:
                yield batch
