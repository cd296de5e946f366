"""The submission agent's queue (docs §7): maildir-style tmp -> new -> sent."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from matrixdir.errors import InvalidEventError
from matrixdir.fsutil import atomic_write
from matrixdir.layout import OUTBOX_DIR

MAX_EVENT_BYTES = 65536


@dataclass(frozen=True)
class OutboxEntry:
    txn_id: str
    room_id: str
    type: str
    content: dict[str, Any]
    created_ts: int
    event_id: str | None = None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "txn_id": self.txn_id,
            "room_id": self.room_id,
            "type": self.type,
            "content": self.content,
            "created_ts": self.created_ts,
        }
        if self.event_id:
            data["event_id"] = self.event_id
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, raw: bytes) -> OutboxEntry:
        data = orjson.loads(raw)
        return cls(
            str(data["txn_id"]),
            str(data["room_id"]),
            str(data["type"]),
            dict(data["content"]),
            int(data["created_ts"]),
            data.get("event_id"),
        )


class Outbox:
    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / OUTBOX_DIR
        self.tmp = self.dir / "tmp"
        self.new = self.dir / "new"
        self.sent = self.dir / "sent"
        self.failed = self.dir / "failed"

    def _ensure(self) -> None:
        for d in (self.tmp, self.new, self.sent, self.failed):
            d.mkdir(parents=True, exist_ok=True)

    def queue(self, room_id: str, type_: str, content: Any) -> OutboxEntry:
        """Validate and durably queue an outgoing event; returns it with its new txn ID."""
        if not isinstance(room_id, str) or not room_id.startswith("!") or len(room_id) < 2:
            raise InvalidEventError(f"not a room ID: {room_id!r}")
        if not isinstance(type_, str) or not type_ or len(type_) > 255:
            raise InvalidEventError("event type must be a non-empty string")
        if not isinstance(content, dict):
            raise InvalidEventError("event content must be a JSON object")
        try:
            size = len(orjson.dumps(content))
        except TypeError as e:
            raise InvalidEventError(f"content is not JSON: {e}") from None
        if size > MAX_EVENT_BYTES:
            raise InvalidEventError(f"content is {size} bytes, over {MAX_EVENT_BYTES}")
        now = int(time.time() * 1000)
        txn = f"{now}.{os.getpid()}.{secrets.token_hex(8)}"
        entry = OutboxEntry(txn, room_id, type_, content, now)
        self._ensure()
        atomic_write(self.new / f"{txn}.json", entry.to_json(), tmp_dir=self.tmp)
        return entry

    def _list(self, d: Path) -> list[OutboxEntry]:
        out = []
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                out.append(OutboxEntry.from_json((d / name).read_bytes()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def pending(self) -> list[OutboxEntry]:
        """Queued, not yet acknowledged by the homeserver (oldest first)."""
        return self._list(self.new)

    def sent_entries(self) -> list[OutboxEntry]:
        """Acknowledged, not yet seen in the event files."""
        return self._list(self.sent)

    def mark_sent(self, entry: OutboxEntry, event_id: str) -> OutboxEntry:
        done = OutboxEntry(
            entry.txn_id, entry.room_id, entry.type, entry.content, entry.created_ts, event_id
        )
        self._ensure()
        atomic_write(self.sent / f"{entry.txn_id}.json", done.to_json(), tmp_dir=self.tmp)
        (self.new / f"{entry.txn_id}.json").unlink(missing_ok=True)
        return done

    def mark_failed(self, entry: OutboxEntry, reason: str) -> None:
        """The homeserver refused the entry for good: move it out of the queue, with why."""
        self._ensure()
        data = orjson.loads(entry.to_json())
        data["error"] = reason
        atomic_write(self.failed / f"{entry.txn_id}.json", orjson.dumps(data), tmp_dir=self.tmp)
        (self.new / f"{entry.txn_id}.json").unlink(missing_ok=True)

    def failed_entries(self) -> list[OutboxEntry]:
        return self._list(self.failed)

    def forget_sent(self, txn_id: str) -> None:
        (self.sent / f"{txn_id}.json").unlink(missing_ok=True)
