"""Media bytes on disk: `<data dir>/media/<2-char fanout>/<media id>`.

A file is written to a temporary name in its final directory, fsynced, and renamed into
place, so a reader (or a restart) sees either nothing or the whole file, never a prefix.
Bodies are streamed through in bounded chunks: an upload of any size costs at most one
chunk buffer of memory, and an upload over the limit stops at the limit and leaves no file.
Temporary names start with a dot, which no media ID can contain, and leftovers of a crash
are swept on start.

Thumbnails live beside the originals in `<media>/thumbnails/<fanout>/`, under names built
from the media ID and the size, with the same write-then-rename discipline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from myelin.mediaapi.ids import check_media_id

#: Bytes gathered before one write to disk (one thread hop per megabyte, not per packet).
WRITE_BUFFER = 1024 * 1024
#: Bytes per chunk sent to a client.
READ_CHUNK = 256 * 1024
_TMP_PREFIX = ".tmp-"


class TooLarge(Exception):
    """The body went over the size limit; nothing was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body exceeds {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A completely written, fsynced temporary file, not yet in its final place."""

    tmp_path: Path
    size: int
    sha256: str


class FileStore:
    """Paths and atomic writes under one media directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.thumbnail_root = root / "thumbnails"

    def media_path(self, media_id: str) -> Path:
        check_media_id(media_id)  # the last guard before a path is built
        return self.root / media_id[:2] / media_id

    def thumbnail_path(self, media_id: str, width: int, height: int, method: str) -> Path:
        check_media_id(media_id)
        if method not in ("crop", "scale"):
            raise ValueError(f"unknown thumbnail method {method!r}")
        return self.thumbnail_root / media_id[:2] / f"{media_id}-{width}x{height}-{method}"

    def tmp_path_for(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"

    async def receive(self, final: Path, chunks: AsyncIterator[bytes], limit: int) -> WrittenFile:
        """Stream `chunks` into a temporary file beside `final`, at most `limit` bytes.

        Raises TooLarge (or whatever the chunk source raises, e.g. a disconnect) with the
        temporary file already removed."""
        tmp = await asyncio.to_thread(self.tmp_path_for, final)
        fh = await asyncio.to_thread(open, tmp, "xb")
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                digest.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BUFFER:
                    await asyncio.to_thread(fh.write, b"".join(pending))
                    pending.clear()
                    pending_size = 0
            if pending:
                await asyncio.to_thread(fh.write, b"".join(pending))
            await asyncio.to_thread(_flush_and_sync, fh)
        except BaseException:
            await asyncio.to_thread(_close_and_remove, fh, tmp)
            raise
        await asyncio.to_thread(fh.close)
        return WrittenFile(tmp, size, digest.hexdigest())

    async def commit(self, written: WrittenFile, final: Path) -> None:
        """Move a written file into place (replacing any orphan) and make the rename durable."""
        await asyncio.to_thread(_rename_durably, written.tmp_path, final)

    async def discard(self, written: WrittenFile) -> None:
        await asyncio.to_thread(_unlink_quietly, written.tmp_path)

    async def write_bytes(self, final: Path, data: bytes) -> None:
        """Write a small generated file (a thumbnail) atomically."""
        await asyncio.to_thread(_write_atomically, self, final, data)

    def sweep_temporaries(self) -> int:
        """Remove temporary files a crash left behind; returns how many. Blocking: run
        it in a thread, on start, before any upload can be in progress."""
        removed = 0
        for base in (self.root, self.thumbnail_root):
            if not base.is_dir():
                continue
            for fanout in os.scandir(base):
                if not fanout.is_dir() or len(fanout.name) > 2:
                    continue
                for entry in os.scandir(fanout.path):
                    if entry.name.startswith(_TMP_PREFIX):
                        _unlink_quietly(Path(entry.path))
                        removed += 1
        return removed


class FileStream:
    """The first `size` bytes of an open file as an async iterator of chunks, each read in
    a thread. Opened by `open_stream` before the response starts, so a missing file is an
    error response rather than a truncated one; `aclose` releases the file even when the
    stream was never iterated (a HEAD request)."""

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        self._fh = fh
        self._path = path
        self._remaining = size
        self._size = size

    def __aiter__(self) -> FileStream:
        return self

    async def __anext__(self) -> bytes:
        if self._remaining <= 0:
            await self.aclose()
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self._fh.read, min(READ_CHUNK, self._remaining))
        if not chunk:
            await self.aclose()
            raise OSError(f"{self._path} is shorter than its recorded size {self._size}")
        self._remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        if not self._fh.closed:
            await asyncio.to_thread(self._fh.close)


async def open_stream(path: Path, size: int) -> FileStream:
    """Open `path` for streaming out; FileNotFoundError when it is not there."""
    fh = await asyncio.to_thread(open, path, "rb")
    return FileStream(fh, path, size)


def _flush_and_sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _close_and_remove(fh: BinaryIO, path: Path) -> None:
    with contextlib.suppress(OSError):
        fh.close()
    _unlink_quietly(path)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename_durably(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _write_atomically(store: FileStore, final: Path, data: bytes) -> None:
    tmp = store.tmp_path_for(final)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _rename_durably(tmp, final)
    except BaseException:
        _unlink_quietly(tmp)
        raise
