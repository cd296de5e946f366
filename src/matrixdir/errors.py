"""Typed errors of the matrixdir library, each mapped to a sysexits code by the CLI."""

from __future__ import annotations

# sysexits(3) codes the commands use.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class MatrixdirError(Exception):
    """Base of every error matrixdir raises on purpose; carries the exit code to use."""

    exit_code = EX_SOFTWARE


class InvalidNameError(MatrixdirError, ValueError):
    """A room directory, file or attachment name does not follow the layout."""

    exit_code = EX_DATAERR


class CorruptLineError(MatrixdirError):
    """A complete line of an event file is not a valid event (corruption, not a torn tail)."""

    exit_code = EX_DATAERR

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt line at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class InvalidEventError(MatrixdirError, ValueError):
    """An event handed to the writer or the submission agent is malformed."""

    exit_code = EX_DATAERR


class LockedError(MatrixdirError):
    """Another live writer holds the store's lock."""

    exit_code = EX_TEMPFAIL

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by {who}; only one writer may run")
        self.pid = pid


class StoreVersionError(MatrixdirError):
    """The store was written by an incompatible version of the format."""

    exit_code = EX_DATAERR


class NoStoreError(MatrixdirError):
    """The store directory does not exist or is not a matrixdir store."""

    exit_code = EX_NOINPUT


class NotLoggedInError(MatrixdirError):
    """No stored credentials and none given."""

    exit_code = EX_CONFIG


class TemporaryFailure(MatrixdirError):
    """The homeserver could not be reached or refused for now; retry later."""

    exit_code = EX_TEMPFAIL


class PermanentFailure(MatrixdirError):
    """The homeserver rejected the request for good (e.g. forbidden, unknown room)."""

    exit_code = EX_UNAVAILABLE
