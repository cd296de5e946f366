"""Small helpers for the event log tests."""

from __future__ import annotations

from myelin.eventlog import LogRecord

ROOM = "!room:example.org"


def rec(i: int, room: str = ROOM, size: int = 0) -> LogRecord:
    """A record whose payload names its number (padded to `size` bytes)."""
    return LogRecord(room, f"record {i}".encode().ljust(size, b"."))
