"""`matrixdir check`: verify a store against docs/matrixdir.md and optionally repair (§10)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from matrixdir.errors import (
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    CorruptLineError,
    InvalidNameError,
    MatrixdirError,
    NoStoreError,
)
from matrixdir.layout import (
    ATTACHMENTS_DIR,
    DECRYPTIONS_FILE,
    LOCK_FILE,
    ROOM_PREFIX,
    STATE_DIR,
    EventFileName,
    attachment_relpath,
    room_id_from_dir,
)
from matrixdir.lock import WriterLock, lock_is_held, read_lock_pid
from matrixdir.media import media_refs
from matrixdir.reader import event_files, iter_complete_lines, parse_line
from matrixdir.state import AgentState
from matrixdir.writer import check_marker, repair_tail


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info" | "repaired"
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    rooms: int = 0
    events: int = 0
    no_store: bool = False

    def add(self, severity: str, path: Path | str, message: str) -> None:
        self.findings.append(Finding(severity, str(path), message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def exit_code(self) -> int:
        if self.no_store:
            return EX_NOINPUT
        return EX_DATAERR if self.errors else EX_OK


def check_store(root: Path, *, repair: bool = False) -> Report:
    """Check every room of the store; with repair=True, fix only what the spec allows."""
    root = Path(root)
    report = Report()
    if not root.is_dir():
        report.add("error", root, "no such store directory")
        report.no_store = True
        return report
    try:
        check_marker(root, create=False)
    except NoStoreError as e:
        report.add("error", root, str(e))
        report.no_store = True
        return report
    except MatrixdirError as e:
        report.add("error", root, str(e))
        return report
    lock_path = root / LOCK_FILE
    lock = None
    if repair:
        lock = WriterLock(lock_path)
        lock.acquire()  # raises LockedError (exit 75) while a writer runs
    elif lock_is_held(lock_path):
        report.add("info", lock_path, f"a writer is running (pid {read_lock_pid(lock_path)})")
    try:
        _check(root, report, repair)
    finally:
        if lock is not None:
            lock.release()
    return report


def _check(root: Path, report: Report, repair: bool) -> None:
    pending_media: set[str] = set()
    try:
        state = AgentState.load(root / STATE_DIR / "state.json")
        pending_media = {m.get("uri", "") for m in state.pending_media}
    except (MatrixdirError, ValueError) as e:
        report.add("error", root / STATE_DIR / "state.json", f"unreadable agent state: {e}")
    tmp = root / STATE_DIR / "tmp"
    if tmp.is_dir() and any(tmp.iterdir()):
        if repair:
            shutil.rmtree(tmp)
            tmp.mkdir()
            report.add("repaired", tmp, "removed temporary files")
        else:
            report.add("warning", tmp, "leftover temporary files (--repair removes them)")
    if repair:
        shutil.rmtree(root / STATE_DIR / "cache", ignore_errors=True)
        report.add("repaired", root / STATE_DIR / "cache", "dropped caches (rebuilt on start)")
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.name.startswith(ROOM_PREFIX):
            continue
        path = Path(entry.path)
        try:
            room_id = room_id_from_dir(entry.name)
        except InvalidNameError as e:
            report.add("error", path, str(e))
            continue
        if not entry.is_dir():
            report.add("error", path, "room entry is not a directory")
            continue
        report.rooms += 1
        _check_room(path, room_id, report, repair, pending_media)


def _check_room(
    path: Path, room_id: str, report: Report, repair: bool, pending_media: set[str]
) -> None:
    seen: dict[str, str] = {}
    seen_types: dict[str, str] = {}
    uris: set[str] = set()
    for entry in sorted(os.listdir(path)):
        if entry in (ATTACHMENTS_DIR, DECRYPTIONS_FILE) or EventFileName.try_parse(entry):
            continue
        report.add("warning", path / entry, "unknown name in a room directory")
    for name in event_files(path):
        fpath = path / name.name
        size = fpath.stat().st_size
        if size == 0:
            report.add("warning", fpath, "empty event file")
            continue
        end = 0
        lines = 0
        for off, line in iter_complete_lines(fpath, 0):
            end = off + len(line) + 1
            lines += 1
            where = f"{fpath}:{lines}"
            try:
                event = parse_line(line, str(fpath), off)
            except CorruptLineError as e:
                report.add("error", where, e.reason)
                continue
            report.events += 1
            eid = event["event_id"]
            seen_types.setdefault(eid, str(event.get("type")))
            if eid in seen:
                report.add("error", where, f"duplicate event {eid} (first in {seen[eid]})")
            else:
                seen[eid] = where
            if event.get("room_id") != room_id:
                report.add("error", where, f"{eid}: room_id {event.get('room_id')!r} is wrong")
            ts = event.get("origin_server_ts")
            if not isinstance(ts, int) or isinstance(ts, bool):
                report.add("error", where, f"{eid}: no integer origin_server_ts")
            elif ts < name.ts:
                report.add("error", where, f"{eid}: timestamp {ts} is older than the file name")
            for ref in media_refs(event):
                uris.add(ref.uri)
        if end < size:
            if repair:
                removed = repair_tail(fpath)
                report.add("repaired", fpath, f"cut {removed} bytes of torn tail")
            else:
                report.add("warning", fpath, f"unterminated tail of {size - end} bytes (torn)")
    _check_decryptions(path, seen_types, report, repair)
    for uri in sorted(uris):
        rel = attachment_relpath(uri)
        if not (path / rel).is_file():
            severity = "warning" if uri in pending_media else "error"
            report.add(severity, path / rel, f"attachment {uri} is missing")


__all__ = ["Finding", "Report", "check_store"]


def _check_decryptions(path: Path, types: dict[str, str], report: Report, repair: bool) -> None:
    """Late decryptions: each names a stored m.room.encrypted event, once (docs §5)."""
    fpath = path / DECRYPTIONS_FILE
    if not fpath.exists():
        return
    done: set[str] = set()
    end = 0
    for n, (off, line) in enumerate(iter_complete_lines(fpath, 0), 1):
        end = off + len(line) + 1
        where = f"{fpath}:{n}"
        try:
            event = parse_line(line, str(fpath), off)
        except CorruptLineError as e:
            report.add("error", where, e.reason)
            continue
        eid = event["event_id"]
        if types.get(eid) != "m.room.encrypted":
            report.add("error", where, f"{eid} is not a stored encrypted event")
        if eid in done:
            report.add("error", where, f"second decryption of {eid}")
        done.add(eid)
        if not isinstance(event.get("type"), str) or not isinstance(event.get("content"), dict):
            report.add("error", where, f"{eid}: decryption without type or content")
    size = fpath.stat().st_size
    if end < size:
        if repair:
            report.add("repaired", fpath, f"cut {repair_tail(fpath)} bytes of torn tail")
        else:
            report.add("warning", fpath, f"unterminated tail of {size - end} bytes (torn)")
