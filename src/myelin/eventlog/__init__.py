"""The append-only room event log: the source of truth that every projection is rebuilt from.

`EventLog` is the interface; `DiskEventLog` the embedded backend (segment files on local
disk, group commit, torn-tail recovery); `myelin.eventlog.jetstream.JetStreamEventLog`
the scale-out backend on NATS JetStream (imported from there, so that the embedded
default does not load the NATS client). Records are opaque bytes with a room ID.
"""

from myelin.eventlog.api import (
    READER_NAME_RULE,
    EventLog,
    LogEntry,
    LogRecord,
    LogStats,
    check_reader_name,
)
from myelin.eventlog.disk import DiskEventLog
from myelin.eventlog.errors import (
    CorruptLogError,
    EventLogError,
    InvalidReaderNameError,
    InvalidRecordError,
    LogClosedError,
    LogFailedError,
    LogLockedError,
    LogUnavailableError,
    OffsetError,
)

__all__ = [
    "READER_NAME_RULE",
    "CorruptLogError",
    "DiskEventLog",
    "EventLog",
    "EventLogError",
    "InvalidReaderNameError",
    "InvalidRecordError",
    "LogClosedError",
    "LogEntry",
    "LogFailedError",
    "LogLockedError",
    "LogRecord",
    "LogStats",
    "LogUnavailableError",
    "OffsetError",
    "check_reader_name",
]
