"""The embedded event log: segment files in a local directory, group-committed.

One writer task owns the tail. `append` queues its records and waits; the writer takes
everything queued (up to `max_batch_bytes`), assigns offsets, and hands the batch to a
dedicated writer thread that encodes it, writes it with one `write` and syncs it with one
`fdatasync`. Appends that arrive meanwhile queue up and form the next batch: however many
callers there are, there is one sync per batch, and the event loop never blocks on it.

Only after the sync does a record count as committed: `append` returns its offset, the
head moves, and tails are woken through an `asyncio.Event` swapped per commit. Readers
never see bytes past the synced length. Recently committed records stay in a bounded
memory cache so that tailing readers (sync, federation sender) rarely touch the disk.

Directory layout::

    LOCK                          flock held while open (one writer process)
    00000000000000000001.seg      segments, named by their first offset
    readers/<name>.offset         committed reader offsets
"""

from __future__ import annotations

import asyncio
import bisect
import fcntl
import itertools
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from myelin.eventlog import offsets as offset_files
from myelin.eventlog.api import LogEntry, LogRecord, LogStats, check_reader_name
from myelin.eventlog.errors import (
    LogClosedError,
    LogLockedError,
    LogUnavailableError,
    OffsetError,
)
from myelin.eventlog.framing import encode_frame
from myelin.eventlog.groupcommit import GroupCommitter, record_cost, wait_through_cancellation
from myelin.eventlog.segments import (
    SegmentState,
    SparseIndex,
    list_segment_bases,
    read_frames,
    recover_active,
    scan_sealed,
    segment_name,
)
from myelin.storage.threads import Workers

_fdatasync = getattr(os, "fdatasync", os.fsync)


@dataclass(slots=True)
class _Segment:
    """A segment as the event loop sees it. `index` is None until first read (sealed)."""

    base: int
    path: str
    last: int
    size: int = 0
    index: SparseIndex | None = None


@dataclass(slots=True)
class _Written:
    """What the writer thread did with one batch."""

    positions: list[int]
    end: int
    nbytes: int
    new_segment: bool


@dataclass(slots=True)
class _Recovered:
    segments: list[_Segment]
    active: SegmentState
    lock_fd: int
    write_fd: int


@dataclass(slots=True)
class _Counters:
    fsyncs: int = 0
    bytes_written: int = 0
    disk_reads: int = 0
    bytes_read: int = 0
    cache_reads: int = 0
    recovered_truncated_bytes: int = 0
    recovered_dropped_records: int = 0


class DiskEventLog:
    """The event log on local disk. Use as `async with DiskEventLog(path) as log:`.

    `segment_bytes`: a new segment file starts once the current one reaches this size.
    `max_batch_bytes`: the most one group commit writes (a single larger append still
    goes in one write). `cache_bytes`: memory kept for recently committed records.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        max_batch_bytes: int = 4 * 1024 * 1024,
        cache_bytes: int = 8 * 1024 * 1024,
        read_batch: int = 1000,
    ) -> None:
        if segment_bytes < 1 or max_batch_bytes < 1 or cache_bytes < 0 or read_batch < 1:
            raise ValueError(
                "segment_bytes, max_batch_bytes and read_batch must be positive, "
                "cache_bytes zero or more"
            )
        self._dir = os.fspath(directory)
        self._readers_dir = os.path.join(self._dir, "readers")
        self._segment_bytes = segment_bytes
        self._cache_limit = cache_bytes
        self._read_batch = read_batch

        self._segments: list[_Segment] = []
        self._bases: list[int] = []
        self._head = 0
        self._next_offset = 1
        self._committer = GroupCommitter(
            self._write, max_batch_bytes=max_batch_bytes, name=f"the event log in {self._dir}"
        )
        self._committed = asyncio.Event()
        self._opened = False
        self._closed = False
        self._released = asyncio.Event()
        self._cache: list[LogEntry] = []
        self._cache_first = 1
        self._cache_bytes = 0
        self._counters = _Counters()
        self._reader_locks: dict[str, asyncio.Lock] = {}
        self._executor: Workers | None = None
        # Owned by the writer thread once open:
        self._write_fd = -1
        self._write_pos = 0
        self._lock_fd = -1

    # ------------------------------------------------------------------ opening

    async def __aenter__(self) -> Self:
        if self._opened:
            raise RuntimeError("an event log object can be opened only once")
        self._opened = True
        self._executor = Workers("eventlog-writer")
        job = self._executor.submit(self._open_blocking)
        cancelled = await wait_through_cancellation(job)
        try:
            recovered: _Recovered = job.result()
            if cancelled:
                os.close(recovered.write_fd)
                os.close(recovered.lock_fd)
                raise asyncio.CancelledError
        except BaseException:
            self._committer.close()
            self._executor.shutdown(wait=True)
            self._closed = True
            self._released.set()
            raise
        self._lock_fd = recovered.lock_fd
        self._write_fd = recovered.write_fd
        self._write_pos = recovered.active.size
        self._segments = recovered.segments
        self._bases = [s.base for s in self._segments]
        self._head = recovered.active.last
        self._next_offset = self._head + 1
        self._cache_first = self._next_offset
        self._counters.recovered_truncated_bytes = recovered.active.truncated_bytes
        self._counters.recovered_dropped_records = recovered.active.dropped_records
        await self._committer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.close()
        finally:
            await self._committer.stop()

    def _open_blocking(self) -> _Recovered:
        try:
            return self._open_files()
        except OSError as exc:
            raise LogUnavailableError(
                f"cannot open the event log in {self._dir}: {exc.strerror or exc} "
                f"({type(exc).__name__})"
            ) from exc

    def _open_files(self) -> _Recovered:
        if not os.path.isdir(self._readers_dir):
            os.makedirs(self._readers_dir, exist_ok=True)
            # Make the new directories themselves durable, not just their contents.
            offset_files.fsync_dir(self._dir)
            offset_files.fsync_dir(os.path.dirname(os.path.abspath(self._dir)))
        lock_fd = os.open(os.path.join(self._dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LogLockedError(
                    f"the event log in {self._dir} is already open (another process holds "
                    "its LOCK file); only one writer may open it"
                ) from None
            offset_files.remove_stale_temporaries(self._readers_dir)
            bases = list_segment_bases(self._dir)
            if not bases:
                path = os.path.join(self._dir, segment_name(1))
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                offset_files.fsync_dir(self._dir)
                bases = [1]
            segments = [
                _Segment(base, os.path.join(self._dir, segment_name(base)), last=nxt - 1)
                for base, nxt in itertools.pairwise(bases)
            ]
            active_path = os.path.join(self._dir, segment_name(bases[-1]))
            state = recover_active(active_path, bases[-1])
            segments.append(_Segment(bases[-1], active_path, state.last, state.size, state.index))
            write_fd = os.open(active_path, os.O_WRONLY)
            return _Recovered(segments, state, lock_fd, write_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    async def _in_writer_thread(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None
        return await self._executor.call(fn, *args)

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Finish every accepted append, stop tails, release the directory."""
        if not self._opened or self._released.is_set():
            return
        self._committer.close()
        await self._committer.done.wait()
        if self._closed:  # another caller is releasing the files
            await self._released.wait()
            return
        self._closed = True
        self._notify_committed()
        assert self._executor is not None
        try:
            await self._in_writer_thread(self._close_blocking)
        finally:
            self._executor.shutdown(wait=True)
            self._released.set()

    def _close_blocking(self) -> None:
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # ------------------------------------------------------------------ appending

    async def append(self, records: Sequence[LogRecord]) -> list[int]:
        if not self._opened:
            raise LogClosedError(f"the event log in {self._dir} is not open")
        return await self._committer.submit(records)

    async def _write(self, records: list[LogRecord]) -> int:
        """One group commit: write and sync in the writer thread, then account for it."""
        first = self._next_offset
        active = self._segments[-1]
        new_segment = active.size >= self._segment_bytes and active.last >= active.base
        assert self._executor is not None
        written: _Written = await self._executor.call(
            self._write_blocking, first, records, new_segment
        )
        self._apply(records, first, written)
        return first

    def _write_blocking(self, first: int, records: list[LogRecord], new_segment: bool) -> _Written:
        """Writer thread: encode, one write, one fdatasync."""
        if new_segment:
            path = os.path.join(self._dir, segment_name(first))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            offset_files.fsync_dir(self._dir)
            os.close(self._write_fd)
            self._write_fd = fd
            self._write_pos = 0
        last = len(records) - 1
        frames = []
        positions = []
        pos = self._write_pos
        for i, record in enumerate(records):
            frame = encode_frame(
                first + i, first, i == last, record.room_id.encode("utf-8"), record.payload
            )
            positions.append(pos)
            pos += len(frame)
            frames.append(frame)
        data = memoryview(b"".join(frames))
        done = 0
        while done < len(data):
            done += os.pwrite(self._write_fd, data[done:], self._write_pos + done)
        _fdatasync(self._write_fd)
        self._write_pos = pos
        return _Written(positions, pos, len(data), new_segment)

    def _apply(self, records: list[LogRecord], first: int, written: _Written) -> None:
        """Account for a synced batch on the loop: segments, head, cache, tails."""
        if written.new_segment:
            path = os.path.join(self._dir, segment_name(first))
            self._segments.append(_Segment(first, path, first - 1, 0, SparseIndex.empty(first)))
            self._bases.append(first)
        active = self._segments[-1]
        assert active.index is not None
        for i, position in enumerate(written.positions):
            active.index.note(first + i, position)
        active.size = written.end
        active.last = first + len(records) - 1
        self._head = active.last
        self._next_offset = self._head + 1
        self._counters.fsyncs += 1
        self._counters.bytes_written += written.nbytes
        self._cache_add(first, records)
        self._notify_committed()

    def _notify_committed(self) -> None:
        self._committed.set()
        self._committed = asyncio.Event()

    def _cache_add(self, first: int, records: list[LogRecord]) -> None:
        if self._cache_limit == 0:
            self._cache_first = first + len(records)
            return
        if not self._cache:
            self._cache_first = first
        for i, record in enumerate(records):
            self._cache.append(LogEntry(first + i, record))
            self._cache_bytes += record_cost(record)
        if self._cache_bytes > self._cache_limit:
            # Drop the oldest entries down to half the budget (amortised O(1) per record).
            drop = 0
            while self._cache_bytes > self._cache_limit // 2 and drop < len(self._cache):
                self._cache_bytes -= record_cost(self._cache[drop].record)
                drop += 1
            del self._cache[:drop]
            self._cache_first += drop

    # ------------------------------------------------------------------ reading

    def _check_readable(self) -> None:
        if self._closed or not self._opened:
            raise LogClosedError(f"the event log in {self._dir} is not open")

    async def head(self) -> int:
        self._check_readable()
        return self._head

    @property
    def stats(self) -> LogStats:
        c = self._counters
        return LogStats(
            appends=self._committer.appends,
            records=self._committer.records,
            batches=self._committer.batches,
            fsyncs=c.fsyncs,
            bytes_written=c.bytes_written,
            disk_reads=c.disk_reads,
            bytes_read=c.bytes_read,
            cache_reads=c.cache_reads,
        )

    @property
    def recovered(self) -> tuple[int, int]:
        """`(bytes, records)` of the torn final write that opening cut away."""
        c = self._counters
        return c.recovered_truncated_bytes, c.recovered_dropped_records

    async def read(self, from_offset: int, limit: int = 1000) -> list[LogEntry]:
        self._check_readable()
        if not isinstance(from_offset, int) or from_offset < 1:
            raise OffsetError(f"offsets start at 1; cannot read from {from_offset!r}")
        if not isinstance(limit, int) or limit < 1:
            raise OffsetError(f"limit must be a positive integer, not {limit!r}")
        if from_offset < self._bases[0]:
            raise OffsetError(
                f"offsets before {self._bases[0]} are no longer in the log in {self._dir}"
            )
        upto = min(self._head, from_offset + limit - 1)
        if from_offset > upto:
            return []
        if self._cache and from_offset >= self._cache_first:
            self._counters.cache_reads += 1
            start = from_offset - self._cache_first
            return self._cache[start : start + upto - from_offset + 1]
        entries: list[LogEntry] = []
        offset = from_offset
        while offset <= upto:
            segment = self._segments[bisect.bisect_right(self._bases, offset) - 1]
            if segment.index is None:
                state: SegmentState = await asyncio.to_thread(
                    scan_sealed, segment.path, segment.base, segment.last
                )
                segment.index, segment.size = state.index, state.size
            first, position = segment.index.locate(offset)
            stop = min(upto, segment.last)
            frames, nbytes = await asyncio.to_thread(
                read_frames, segment.path, position, first, offset, stop, segment.size
            )
            self._counters.disk_reads += 1
            self._counters.bytes_read += nbytes
            entries.extend(
                LogEntry(f.offset, LogRecord.from_storage(f.room_id, f.payload)) for f in frames
            )
            offset = stop + 1
        return entries

    async def tail(self, from_offset: int) -> AsyncIterator[LogEntry]:
        if not isinstance(from_offset, int) or from_offset < 1:
            raise OffsetError(f"offsets start at 1; cannot tail from {from_offset!r}")
        offset = from_offset
        while not self._closed:
            committed = self._committed  # before reading, so no commit can be missed
            entries = await self.read(offset, self._read_batch)
            if entries:
                for entry in entries:
                    yield entry
                offset = entries[-1].offset + 1
                continue
            if self._committer.closing:
                return
            await committed.wait()

    # ------------------------------------------------------------------ reader offsets

    def _reader_lock(self, reader: str) -> asyncio.Lock:
        lock = self._reader_locks.get(reader)
        if lock is None:
            lock = self._reader_locks[reader] = asyncio.Lock()
        return lock

    async def get_committed(self, reader: str) -> int:
        self._check_readable()
        check_reader_name(reader)
        async with self._reader_lock(reader):
            value: int = await asyncio.to_thread(
                offset_files.read_offset, self._readers_dir, reader
            )
            return value

    async def commit(self, reader: str, offset: int) -> None:
        self._check_readable()
        check_reader_name(reader)
        if not isinstance(offset, int) or not 0 <= offset <= self._head:
            raise OffsetError(
                f"reader {reader!r} cannot commit offset {offset!r}: the log holds 1 to "
                f"{self._head}"
            )
        async with self._reader_lock(reader):
            await asyncio.to_thread(offset_files.write_offset, self._readers_dir, reader, offset)
