"""The event value every part of the core works on.

An `Event` is a PDU (the full JSON object, as plain data) together with its event ID and
room version, with read-only accessors that hide the differences between event formats
(v1 `[event_id, hashes]` pairs versus plain ID lists, `redacts` at the top level or in
`content`, the v12 create event without `room_id`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from myelin.core.roomversions import EventFormat, RoomVersion

StateKey = tuple[str, str]
"""A slot of room state: `(event type, state key)`."""

JsonDict = dict[str, Any]


def _ids(refs: Any, event_format: EventFormat) -> tuple[str, ...]:
    """Event IDs from a `prev_events`/`auth_events` value of the given format."""
    if not isinstance(refs, list):
        return ()
    if event_format is EventFormat.V1:
        return tuple(r[0] for r in refs if isinstance(r, list) and r and isinstance(r[0], str))
    return tuple(r for r in refs if isinstance(r, str))


@dataclass(frozen=True, slots=True, eq=False)
class Event:
    """A PDU with its ID and room version. Equal when the event IDs are equal.

    `pdu` is the event exactly as signed (including `hashes`, `signatures`, `unsigned`
    where present); it is shared, never mutated: build a new dict to change anything.
    """

    event_id: str
    room_version: RoomVersion
    pdu: Mapping[str, Any]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} {self.state_key!r} by {self.sender}>"

    @property
    def type(self) -> str:
        value = self.pdu.get("type")
        return value if isinstance(value, str) else ""

    @property
    def state_key(self) -> str | None:
        value = self.pdu.get("state_key")
        return value if isinstance(value, str) else None

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def state_tuple(self) -> StateKey:
        """`(type, state_key)`; only meaningful for state events."""
        return (self.type, self.state_key or "")

    @property
    def sender(self) -> str:
        value = self.pdu.get("sender")
        return value if isinstance(value, str) else ""

    @property
    def content(self) -> Mapping[str, Any]:
        value = self.pdu.get("content")
        return value if isinstance(value, dict) else {}

    @property
    def room_id(self) -> str:
        """The room ID; for a v12 create event, derived from its own event ID."""
        value = self.pdu.get("room_id")
        if isinstance(value, str):
            return value
        if self.room_version.room_id_from_create_event and self.type == "m.room.create":
            return "!" + self.event_id[1:]
        return ""

    @property
    def origin_server_ts(self) -> int:
        value = self.pdu.get("origin_server_ts")
        return value if isinstance(value, int) else 0

    @property
    def depth(self) -> int:
        value = self.pdu.get("depth")
        return value if isinstance(value, int) else 0

    @property
    def prev_event_ids(self) -> tuple[str, ...]:
        return _ids(self.pdu.get("prev_events"), self.room_version.event_format)

    @property
    def auth_event_ids(self) -> tuple[str, ...]:
        return _ids(self.pdu.get("auth_events"), self.room_version.event_format)

    @property
    def redacts(self) -> str | None:
        """The event an `m.room.redaction` redacts (top level before v11, content after)."""
        if self.room_version.redacts_in_content:
            value = self.content.get("redacts")
            if not isinstance(value, str):
                value = self.pdu.get("redacts")
        else:
            value = self.pdu.get("redacts")
        return value if isinstance(value, str) else None

    @property
    def membership(self) -> str | None:
        """`content.membership` of an `m.room.member` event."""
        if self.type != "m.room.member":
            return None
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    @property
    def origin(self) -> str:
        """The server name of the sender (the part after the first colon)."""
        _, _, server = self.sender.partition(":")
        return server
