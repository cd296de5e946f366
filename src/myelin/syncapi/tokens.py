"""Sync and pagination tokens: a vector of stream positions, `s<room>[_<other>...]`.

Only the room stream exists today (its positions are offsets in the room event log).
Typing, receipts, presence, to-device and device lists will append their positions; a
token with fewer parts than the server knows reads the missing ones as 0, so old tokens
stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from myelin.clientapi.http import MatrixError

_MAX_PARTS = 16
_MAX_POSITION = 2**63 - 1


@dataclass(frozen=True, slots=True)
class StreamToken:
    room: int
    others: tuple[int, ...] = ()

    def encode(self) -> str:
        return "s" + "_".join(str(p) for p in (self.room, *self.others))

    @staticmethod
    def parse(text: str, what: str = "token") -> StreamToken:
        """The token in `text`; a malformed one is 400 M_INVALID_PARAM."""
        if not text.startswith("s") or len(text) > 400:
            raise MatrixError(400, "M_INVALID_PARAM", f"Malformed {what}: {text[:50]!r}")
        parts = text[1:].split("_")
        # The room part may be negative: `/messages` pages into history backfilled from
        # other servers, which sits below position 0 (myelin.syncapi.reader).
        digits = [parts[0].removeprefix("-"), *parts[1:]]
        if len(parts) > _MAX_PARTS or not all(p.isascii() and p.isdigit() for p in digits):
            raise MatrixError(400, "M_INVALID_PARAM", f"Malformed {what}: {text[:50]!r}")
        values = [int(p) for p in parts]
        if any(abs(v) > _MAX_POSITION for v in values):
            raise MatrixError(400, "M_INVALID_PARAM", f"Malformed {what}: {text[:50]!r}")
        return StreamToken(values[0], tuple(values[1:]))
