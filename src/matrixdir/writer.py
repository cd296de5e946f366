"""The single writer of a store (docs §2, §4): lock, tail repair, de-duplicated appends.

Only the retrieval agent uses this. Each write call leaves every file it touched fsynced, so
the caller may save agent state right after it (events before tokens).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from matrixdir.errors import InvalidEventError, NoStoreError, StoreVersionError
from matrixdir.fsutil import atomic_write, fsync_dir
from matrixdir.index import RoomIndex, cache_name
from matrixdir.layout import (
    DECRYPTIONS_FILE,
    FORMAT_VERSION,
    LOCK_FILE,
    MARKER_FILE,
    STATE_DIR,
    EventFileName,
    room_dir_name,
)
from matrixdir.lock import WriterLock
from matrixdir.reader import event_files, room_dirs
from matrixdir.state import AgentState

DEFAULT_MAX_FILE_BYTES = 8 << 20


def encode_line(event: dict[str, Any]) -> bytes:
    """One stored line: compact JSON with sorted keys and a newline."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS) + b"\n"


def check_marker(root: Path, *, create: bool) -> None:
    """Verify (or create) `matrixdir.json`; refuse stores of an unknown format version."""
    marker = root / MARKER_FILE
    try:
        data = orjson.loads(marker.read_bytes())
    except FileNotFoundError:
        if not create:
            raise NoStoreError(f"{root} is not a matrixdir store (no {MARKER_FILE})") from None
        atomic_write(marker, orjson.dumps({"format": "matrixdir", "version": FORMAT_VERSION}))
        return
    except orjson.JSONDecodeError as e:
        raise StoreVersionError(f"{marker}: invalid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != "matrixdir":
        raise StoreVersionError(f"{marker}: not a matrixdir marker")
    if data.get("version") != FORMAT_VERSION:
        raise StoreVersionError(
            f"{marker}: format version {data.get('version')!r}, this program knows {FORMAT_VERSION}"
        )


def repair_tail(path: Path) -> int:
    """Cut a file back to just after its last newline; return the number of bytes removed.

    A file with no newline at all is removed. Only bytes no reader can have consumed go.
    """
    size = path.stat().st_size
    if size == 0:
        path.unlink()
        return 0
    with open(path, "rb+") as f:
        pos = size
        keep = 0
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = pos - step + nl + 1
                break
            pos -= step
        if keep == size:
            return 0
        if keep == 0:
            path.unlink()
            return size
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def _validate(event: Any, room_id: str) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise InvalidEventError("an event must be a JSON object")
    event_id = event.get("event_id")
    ts = event.get("origin_server_ts")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEventError("event has no event_id")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0 or ts >= 10**16:
        raise InvalidEventError(f"{event_id}: origin_server_ts must be a non-negative integer")
    if not isinstance(event.get("type"), str):
        raise InvalidEventError(f"{event_id}: event has no type")
    other = event.get("room_id", room_id)
    if other != room_id:
        raise InvalidEventError(f"{event_id}: room_id {other!r} is not {room_id!r}")
    checked: dict[str, Any] = dict(event)
    checked.setdefault("room_id", room_id)
    return checked


@dataclass
class _Room:
    room_id: str
    path: Path
    index: RoomIndex
    files: list[EventFileName] = field(default_factory=list)
    sizes: dict[EventFileName, int] = field(default_factory=dict)


class StoreWriter:
    """Owns a store while open: holds the lock, repairs tails, appends events."""

    def __init__(self, root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.root = Path(root)
        self.max_file_bytes = max_file_bytes
        self.state_dir = self.root / STATE_DIR
        self.tmp_dir = self.state_dir / "tmp"
        self.cache_dir = self.state_dir / "cache"
        self._lock = WriterLock(self.root / LOCK_FILE)
        self._rooms: dict[str, _Room] = {}
        self._decrypted: dict[str, set[str]] = {}
        self.repaired: list[tuple[Path, int]] = []

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> StoreWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            check_marker(self.root, create=True)
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for room_path in room_dirs(self.root).values():
                paths = [room_path / n.name for n in event_files(room_path)]
                if (room_path / DECRYPTIONS_FILE).exists():
                    paths.append(room_path / DECRYPTIONS_FILE)
                for path in paths:
                    removed = repair_tail(path)
                    if removed:
                        self.repaired.append((path, removed))
        except BaseException:
            self._lock.release()
            raise
        return self

    def close(self) -> None:
        for room in self._rooms.values():
            with contextlib.suppress(OSError):
                room.index.save(self.cache_dir / cache_name(room.path.name))
        self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    def load_state(self) -> AgentState:
        return AgentState.load(self.state_path)

    def save_state(self, state: AgentState) -> None:
        """Save agent state; every write call before this one is already fsynced."""
        state.save(self.state_path)

    # -- rooms -------------------------------------------------------------------------

    def _room(self, room_id: str) -> _Room:
        room = self._rooms.get(room_id)
        if room is None:
            path = self.root / room_dir_name(room_id)
            if not path.exists():
                path.mkdir()
                fsync_dir(self.root)
            index = RoomIndex.load(path, self.cache_dir / cache_name(path.name))
            files = event_files(path)
            sizes = {f: (path / f.name).stat().st_size for f in files}
            room = self._rooms[room_id] = _Room(room_id, path, index, files, sizes)
        return room

    def room_path(self, room_id: str) -> Path:
        return self._room(room_id).path

    def has_event(self, room_id: str, event_id: str) -> bool:
        if room_id not in self._rooms and not (self.root / room_dir_name(room_id)).is_dir():
            return False  # never create a room directory just to look
        return event_id in self._room(room_id).index.ids

    def newest_event_id(self, room_id: str) -> str | None:
        """The event ID on the last line of the head file (the newest live event)."""
        room = self._room(room_id)
        if not room.files:
            return None
        line = _last_line(room.path / room.files[-1].name)
        if not line:
            return None
        value = orjson.loads(line)
        return str(value["event_id"]) if isinstance(value, dict) else None

    def decrypted_ids(self, room_id: str) -> set[str]:
        """Event IDs that already have a line in the late-decryptions file."""
        from matrixdir.reader import read_decryptions

        cached = self._decrypted.get(room_id)
        if cached is None:
            lines, _ = read_decryptions(self.root / room_dir_name(room_id))
            cached = self._decrypted[room_id] = {str(e["event_id"]) for e in lines}
        return cached

    def append_decryptions(self, room_id: str, events: Iterable[dict[str, Any]]) -> int:
        """Append plaintext of events stored encrypted (docs §5); returns how many."""
        room = self._room(room_id)
        done = self.decrypted_ids(room_id)
        lines = []
        for event in events:
            eid = event.get("event_id")
            if not isinstance(eid, str) or eid in done or eid not in room.index.ids:
                continue
            if not isinstance(event.get("type"), str) or not isinstance(event.get("content"), dict):
                raise InvalidEventError(f"{eid}: a decryption needs a type and a content")
            done.add(eid)
            lines.append(encode_line(event))
        if not lines:
            return 0
        path = room.path / DECRYPTIONS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, b"".join(lines))
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        fsync_dir(room.path)
        return len(lines)

    def save_index(self, room_id: str) -> None:
        room = self._room(room_id)
        room.index.save(self.cache_dir / cache_name(room.path.name))

    # -- writing -----------------------------------------------------------------------

    def append_live(self, room_id: str, events: Iterable[Any]) -> list[dict[str, Any]]:
        """Append new events (arrival order) to the room's head file; return those written."""
        return self._write(room_id, events, backfill=False)

    def write_backfill(self, room_id: str, events: Iterable[Any]) -> list[dict[str, Any]]:
        """Write a page of older history (chronological order) to new file(s)."""
        return self._write(room_id, events, backfill=True)

    def _new_name(self, room: _Room, ts: int, planned: set[EventFileName]) -> EventFileName:
        taken = set(room.files) | planned
        n = 0
        while EventFileName(ts, n) in taken:
            n += 1
        return EventFileName(ts, n)

    @staticmethod
    def _backfill_name(
        ts: int,
        ceiling: EventFileName | None,
        previous: EventFileName | None,
        planned: set[EventFileName],
    ) -> EventFileName:
        """Name a back-fill file so that it sorts before every file stored before the page.

        A page is older than everything stored, but its first event may share its millisecond
        with the oldest file; `(ts, n + 1)` would then sort after it. Such a file is named one
        millisecond earlier instead, which §4.2 allows (a file never holds an event older than
        its name). Files of one page follow each other in the order they were planned.
        """
        t = ts if ceiling is None or ts < ceiling.ts else max(ceiling.ts - 1, 0)
        if previous is not None and previous.ts == t:
            return EventFileName(t, previous.n + 1)
        n = 0
        while EventFileName(t, n) in planned:  # only after a clock going backwards in the page
            n += 1
        return EventFileName(t, n)

    def _write(
        self, room_id: str, events: Iterable[Any], *, backfill: bool
    ) -> list[dict[str, Any]]:
        room = self._room(room_id)
        # Validate everything first: bad input corrupts nothing.
        checked = [_validate(e, room_id) for e in events]
        plan: list[tuple[EventFileName, bool, list[bytes]]] = []
        planned: set[EventFileName] = set()
        seen: set[str] = set()
        written: list[dict[str, Any]] = []
        cur: tuple[EventFileName, bool, list[bytes]] | None = None
        cur_size = 0
        ceiling = room.files[0] if room.files else None
        for event in checked:
            eid = event["event_id"]
            if eid in room.index.ids or eid in seen:
                continue
            seen.add(eid)
            ts = event["origin_server_ts"]
            line = encode_line(event)
            if cur is None and not backfill and room.files:
                head = room.files[-1]
                if ts >= head.ts and room.sizes[head] < self.max_file_bytes:
                    cur = (head, False, [])
                    cur_size = room.sizes[head]
                    plan.append(cur)
            if cur is None or ts < cur[0].ts or cur_size >= self.max_file_bytes:
                if backfill:
                    name = self._backfill_name(ts, ceiling, cur[0] if cur else None, planned)
                else:
                    name = self._new_name(room, ts, planned)
                planned.add(name)
                cur = (name, True, [])
                cur_size = 0
                plan.append(cur)
            cur[2].append(line)
            cur_size += len(line)
            written.append(event)
        for name, is_new, lines in plan:
            data = b"".join(lines)
            path = room.path / name.name
            if is_new:
                tmp = self.tmp_dir / f"{name.name}.{secrets.token_hex(4)}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, path)
                room.files.append(name)
                room.files.sort()
                room.sizes[name] = len(data)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except BaseException:
                    # Never leave a torn line for later appends to bury.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, room.sizes[name])
                    raise
                finally:
                    os.close(fd)
                room.sizes[name] += len(data)
            room.index.covered[name.name] = room.sizes[name]
        if any(is_new for _, is_new, _ in plan):
            fsync_dir(room.path)
        room.index.ids.update(seen)
        return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _last_line(path: Path) -> bytes | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = size
        buf = b""
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            buf = f.read(step) + buf
            pos -= step
            body = buf[:-1] if buf.endswith(b"\n") else buf
            nl = body.rfind(b"\n")
            if nl >= 0:
                return body[nl + 1 :]
        body = buf[:-1] if buf.endswith(b"\n") else buf
        return body or None
