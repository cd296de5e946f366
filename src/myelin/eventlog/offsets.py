"""Durable per-reader offsets: one small file per reader, replaced atomically.

Blocking functions, meant to run in a worker thread. A commit writes a temporary file,
fsyncs it, renames it over the old one and fsyncs the directory, so that after a crash
the reader finds either its old or its new offset, never a mix or nothing.
"""

from __future__ import annotations

import os
import threading

from myelin.eventlog.errors import CorruptLogError

_SUFFIX = ".offset"


def fsync_dir(path: str) -> None:
    """Make a rename or file creation inside directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_offset(directory: str, reader: str) -> int:
    """The stored offset of `reader`, 0 when it has none. The name is already checked."""
    path = os.path.join(directory, reader + _SUFFIX)
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except FileNotFoundError:
        return 0
    text = data.decode("ascii", "replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or len(text) > 21:
        raise CorruptLogError(path, 0, f"reader offset file holds {data[:40]!r}, not a number")
    return int(text[:-1])


def write_offset(directory: str, reader: str, offset: int) -> None:
    """Atomically and durably replace the stored offset of `reader`."""
    path = os.path.join(directory, reader + _SUFFIX)
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{offset}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(directory)


def remove_stale_temporaries(directory: str) -> None:
    """Delete temporary files left by a crash during `write_offset`."""
    for name in os.listdir(directory):
        if ".offset.tmp." in name:
            os.unlink(os.path.join(directory, name))
