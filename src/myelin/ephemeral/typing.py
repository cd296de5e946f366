"""Who is typing in which room: in memory, with expiry, as a stream with positions.

Typing state does not survive a restart, nor should it. A room's typing set gets a new
stream position at each change (start, stop, or an entry found expired), and `/sync`
sends a room's full `m.typing` set whenever its position is after the `since` token.
A token from before a restart may be ahead of the new counter; the counter therefore
starts at the wall-clock millisecond, so positions only ever grow across restarts.

Changes happen on the event loop only. `/sync` builds its answer inside a database
transaction, which may run on another thread, so it reads `view`: an immutable snapshot
replaced as a whole after each change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_TIMEOUT_MS = 120_000


@dataclass(frozen=True)
class TypingView:
    """The typing state at one moment: the stream position, and per room its position
    and (user, expiry) entries."""

    position: int
    rooms: Mapping[str, tuple[int, tuple[tuple[str, float], ...]]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def users(self, room_id: str, now: float) -> list[str]:
        """Who is typing, ignoring entries already lapsed but not yet expired."""
        entry = self.rooms.get(room_id)
        return [] if entry is None else sorted(u for u, exp in entry[1] if exp > now)

    def changed_after(self, room_id: str, position: int) -> bool:
        entry = self.rooms.get(room_id)
        return entry is not None and entry[0] > position


class Typing:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.position = int(time.time() * 1000)
        #: room -> user -> expiry time on `clock`
        self._rooms: dict[str, dict[str, float]] = {}
        self._room_pos: dict[str, int] = {}
        self.view = TypingView(self.position)

    def now(self) -> float:
        return self._clock()

    def _bump(self, room_id: str) -> None:
        self.position += 1
        self._room_pos[room_id] = self.position
        rooms = {
            r: (pos, tuple(self._rooms.get(r, {}).items())) for r, pos in self._room_pos.items()
        }
        self.view = TypingView(self.position, MappingProxyType(rooms))

    def set(self, room_id: str, user_id: str, typing: bool, timeout_ms: int = 30_000) -> bool:
        """Start (for `timeout_ms`, capped) or stop typing; whether the set changed."""
        self.expire()
        users = self._rooms.setdefault(room_id, {})
        if typing:
            expires = self._clock() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
            was = user_id in users
            users[user_id] = expires
            if not was:
                self._bump(room_id)
            return not was
        if users.pop(user_id, None) is None:
            return False
        if not users:
            del self._rooms[room_id]
        self._bump(room_id)
        return True

    def expire(self) -> list[str]:
        """Drop expired entries; the rooms whose set changed."""
        now = self._clock()
        changed: list[str] = []
        for room_id in list(self._rooms):
            users = self._rooms[room_id]
            gone = [u for u, expires in users.items() if expires <= now]
            if gone:
                for user_id in gone:
                    del users[user_id]
                if not users:
                    del self._rooms[room_id]
                self._bump(room_id)
                changed.append(room_id)
        return changed

    def users(self, room_id: str) -> list[str]:
        return sorted(self._rooms.get(room_id, {}))

    def changed_after(self, room_id: str, position: int) -> bool:
        return self._room_pos.get(room_id, 0) > position
