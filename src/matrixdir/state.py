"""Agent state `.matrixdir/state.json` (docs §8): sync token, back-fill gaps, pending media."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from matrixdir.errors import StoreVersionError
from matrixdir.fsutil import atomic_write

STATE_VERSION = 1


@dataclass
class RoomState:
    """Back-fill position of a room: each gap is a /messages `from` token to go back from."""

    gaps: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False


@dataclass
class AgentState:
    user_id: str | None = None
    next_batch: str | None = None
    rooms: dict[str, RoomState] = field(default_factory=dict)
    pending_media: list[dict[str, Any]] = field(default_factory=list)
    selection: list[str] | None = None  # --rooms of the run that saved next_batch
    undecrypted: dict[str, list[str]] = field(default_factory=dict)  # room -> event IDs

    def room(self, room_id: str) -> RoomState:
        return self.rooms.setdefault(room_id, RoomState())

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "user_id": self.user_id,
                "next_batch": self.next_batch,
                "rooms": {
                    r: {"gaps": s.gaps, "complete": s.complete} for r, s in self.rooms.items()
                },
                "pending_media": self.pending_media,
                "selection": self.selection,
                "undecrypted": self.undecrypted,
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def load(cls, path: Path) -> AgentState:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StoreVersionError(f"{path}: unknown agent state version")
        rooms = {
            r: RoomState(list(v.get("gaps", [])), bool(v.get("complete", False)))
            for r, v in (data.get("rooms") or {}).items()
        }
        return cls(
            data.get("user_id"),
            data.get("next_batch"),
            rooms,
            list(data.get("pending_media") or []),
            data.get("selection"),
            {r: list(ids) for r, ids in (data.get("undecrypted") or {}).items()},
        )

    def save(self, path: Path) -> None:
        atomic_write(path, self.to_json(), tmp_dir=path.parent / "tmp")
