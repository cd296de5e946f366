"""Typed errors of the event log.

Every failure a caller can act on has its own class, so that the roomserver can tell
"this record is malformed, reject it" from "the disk is failing, stop" from "the log was
damaged, a human must look", without parsing messages.
"""

from __future__ import annotations


class EventLogError(Exception):
    """Base class of every error the event log raises."""


class InvalidRecordError(EventLogError, ValueError):
    """A record handed to `append` cannot be stored (bad room ID, payload type or size).

    Raised before anything is written: an append with one bad record writes none of them.
    """


class OffsetError(EventLogError, ValueError):
    """An offset or limit outside the range the call accepts (offsets start at 1)."""


class InvalidReaderNameError(EventLogError, ValueError):
    """A reader name that cannot name a stored offset (see `READER_NAME_RULE`)."""


class LogClosedError(EventLogError):
    """The log is closed (or closing): no append is accepted any more."""


class LogFailedError(EventLogError):
    """A write or fsync failed; the state of the tail on disk is unknown.

    The log refuses every further append until it is closed and opened again: reopening
    runs recovery, which keeps every record that was acknowledged and drops a torn tail.
    """


class LogUnavailableError(EventLogError):
    """The log's storage cannot be reached or set up: a directory that cannot be created
    or read, or a NATS server that does not answer or refuses to create the stream."""


class LogLockedError(EventLogError):
    """Another process (or another open log object) already writes to this directory."""


class CorruptLogError(EventLogError):
    """A stored record failed its checks somewhere other than the torn tail.

    This is never repaired automatically: the log is the source of truth, and silently
    skipping a record would make every projection built from it wrong. The message says
    which file, which byte, and what an operator can do.
    """

    def __init__(self, path: str, position: int, detail: str) -> None:
        self.path = path
        self.position = position
        self.detail = detail
        super().__init__(
            f"event log corrupt: {path} at byte {position}: {detail}. "
            "Records before this byte are intact; readers stop here. Stop the server and "
            "restore this file from a backup or replica; to accept losing every record "
            "from this byte on, truncate the file to this length and delete any later "
            "segment files (and reset reader offsets beyond the new end), then restart."
        )
