"""The event log interface that every backend implements.

The roomserver appends accepted events (with their state deltas) as opaque byte records;
readers (sync, federation sender, push, exporters, `myelin rebuild`) consume the log from
their own committed offsets. The interface is shaped so that NATS JetStream can back it
as well as local disk:

- offsets are dense sequence numbers starting at 1, like a JetStream stream sequence;
- every record carries a `room_id`, the partition key (a JetStream subject
  `room.<encoded room id>`), so a backend can order and route per room;
- `append` is durable when it returns (a disk fsync, or a JetStream publish ack);
- reader offsets are named and stored by the log (durable consumers, or files);
- queries between components are not part of the log: request/reply is separate.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from myelin.eventlog.errors import InvalidReaderNameError, InvalidRecordError
from myelin.eventlog.framing import MAX_PAYLOAD_BYTES, MAX_ROOM_ID_BYTES


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record: an opaque payload and the room it belongs to (the partition key).

    Checked on construction, so that a bad record is refused before any write starts.
    """

    room_id: str
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.room_id, str) or not self.room_id:
            raise InvalidRecordError("room_id must be a non-empty string")
        if "\x00" in self.room_id:
            raise InvalidRecordError("room_id must not contain NUL")
        try:
            encoded = self.room_id.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRecordError(f"room_id is not valid Unicode: {exc}") from None
        if len(encoded) > MAX_ROOM_ID_BYTES:
            raise InvalidRecordError(
                f"room_id is {len(encoded)} bytes; at most {MAX_ROOM_ID_BYTES} are allowed"
            )
        if not isinstance(self.payload, bytes):
            raise InvalidRecordError(f"payload must be bytes, not {type(self.payload).__name__}")
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise InvalidRecordError(
                f"payload is {len(self.payload)} bytes; at most {MAX_PAYLOAD_BYTES} are allowed"
            )

    @classmethod
    def from_storage(cls, room_id: str, payload: bytes) -> LogRecord:
        """A record read back from storage, where it was checked when written and is
        protected by a checksum: skips the checks, which would dominate read cost."""
        record = object.__new__(cls)
        object.__setattr__(record, "room_id", room_id)
        object.__setattr__(record, "payload", payload)
        return record


class LogEntry(NamedTuple):
    """A committed record with its offset; unpacks as `(offset, record)`."""

    offset: int
    record: LogRecord


@dataclass(frozen=True, slots=True)
class LogStats:
    """Counters since the log was opened, for tests and benchmarks.

    `fsyncs` counts the data syncs that committed batches; with group commit it is the
    number of durable writes, and `appends / fsyncs` is the coalescing achieved.
    `disk_reads` / `bytes_read` count reads that missed the memory cache, and the
    bytes they took from storage (which the sparse index keeps small).
    """

    appends: int = 0
    records: int = 0
    batches: int = 0
    fsyncs: int = 0
    bytes_written: int = 0
    disk_reads: int = 0
    bytes_read: int = 0
    cache_reads: int = 0


READER_NAME_RULE = re.compile(r"[A-Za-z0-9_-]([A-Za-z0-9._-]{0,98}[A-Za-z0-9_-])?")
"""Reader names: 1-100 characters of ASCII letters, digits, `.`, `_`, `-`, not
starting or ending with `.` (they name files and JetStream key-value keys)."""


def check_reader_name(name: str) -> str:
    """`name` if it is a valid reader name, else `InvalidReaderNameError`."""
    if not isinstance(name, str) or not READER_NAME_RULE.fullmatch(name):
        raise InvalidReaderNameError(
            f"invalid reader name {name!r}: use 1-100 of A-Z a-z 0-9 . _ -, "
            "not starting or ending with '.'"
        )
    return name


@runtime_checkable
class EventLog(Protocol):
    """An append-only, durable, totally ordered log of records with named readers.

    Open it with `async with`; leaving the block (or `close()`) finishes every append
    already accepted, then refuses new ones.
    """

    async def append(self, records: Sequence[LogRecord]) -> list[int]:
        """Append `records` in order and return their offsets.

        Durable when it returns: a crash afterwards cannot lose them. The records of one
        call are all-or-nothing across a crash and are never interleaved with another
        call's. Concurrent calls are coalesced into one durable write (group commit).
        If the caller is cancelled the records may or may not have been stored.
        """
        ...

    async def read(self, from_offset: int, limit: int = 1000) -> list[LogEntry]:
        """Up to `limit` committed entries with offsets `>= from_offset`, in order.

        Fewer than `limit` (possibly none) means the reader reached the head.
        """
        ...

    def tail(self, from_offset: int) -> AsyncIterator[LogEntry]:
        """Every committed entry from `from_offset` on, forever: waits (on a notifier,
        never polling) for new commits when caught up, and ends when the log closes."""
        ...

    async def head(self) -> int:
        """The offset of the last committed record (0 when the log is empty)."""
        ...

    async def get_committed(self, reader: str) -> int:
        """The last offset `reader` declared consumed (0 if it never committed)."""
        ...

    async def commit(self, reader: str, offset: int) -> None:
        """Durably store `offset` (0 to `head()`) as consumed by `reader`; it resumes
        with `tail(offset + 1)`."""
        ...

    @property
    def stats(self) -> LogStats:
        """A snapshot of the counters."""
        ...

    async def close(self) -> None:
        """Finish accepted appends, stop tails, release files. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
