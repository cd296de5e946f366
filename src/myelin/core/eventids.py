"""Event IDs for every event format, and v12 room IDs (content/rooms/fragments/*-event-ids.md).

- Rooms v1-v2: the origin server chooses `$opaque_id:domain` and puts it in the PDU.
- Room v3: `$` + standard unpadded Base64 of the event's reference hash.
- Rooms v4+: the same with URL-safe unpadded Base64.
- Room v12: the room ID is the create event's ID with the sigil `!` instead of `$`
  (appendices.md, "Room IDs").

An ID that is derived from a hash can't be forged: whoever holds the PDU can recompute it,
which is why v3+ PDUs carry no `event_id` of their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from myelin.core.base64 import encode_base64, encode_urlsafe_base64
from myelin.core.events import Event
from myelin.core.hashing import reference_hash_blob
from myelin.core.roomversions import EventFormat, RoomVersion

__all__ = [
    "MAX_ID_BYTES",
    "EventIdError",
    "compute_event_id",
    "event_from_pdu",
    "event_id_from_reference_hash",
    "room_id_for_create_event",
]

MAX_ID_BYTES = 255
"""Event IDs and room IDs, sigil and domain included, are at most 255 bytes."""


class EventIdError(ValueError):
    """A PDU whose event ID can't be determined, or an ID of the wrong shape."""


def event_id_from_reference_hash(reference_hash: bytes, room_version: RoomVersion) -> str:
    """`$` + the reference hash in the room version's Base64 alphabet (v3+ only)."""
    event_format = room_version.event_format
    if event_format is EventFormat.V1:
        raise EventIdError(f"room version {room_version.identifier} event IDs are not hashes")
    if event_format is EventFormat.V2:
        return "$" + encode_base64(reference_hash)
    return "$" + encode_urlsafe_base64(reference_hash)


def _check_v1_event_id(value: Any) -> str:
    if not isinstance(value, str):
        raise EventIdError("a room v1/v2 PDU must carry its `event_id` string")
    opaque, _, domain = value[1:].partition(":")
    if not value.startswith("$") or not opaque or not domain:
        raise EventIdError(f"a room v1/v2 event ID is `$opaque_id:domain`, got {value!r}")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise EventIdError("event ID longer than 255 bytes")
    return value


def compute_event_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The event ID of `pdu` in a room of `room_version`. Raises EventIdError."""
    if not isinstance(pdu, Mapping):
        raise EventIdError(f"an event must be a JSON object, not {type(pdu).__name__}")
    if room_version.event_format is EventFormat.V1:
        return _check_v1_event_id(pdu.get("event_id"))
    reference_hash = hashlib.sha256(reference_hash_blob(pdu, room_version)).digest()
    return event_id_from_reference_hash(reference_hash, room_version)


def room_id_for_create_event(create_event_id: str) -> str:
    """The v12+ room ID of the room whose `m.room.create` event has this ID."""
    if not isinstance(create_event_id, str) or not create_event_id.startswith("$"):
        raise EventIdError(f"not an event ID: {create_event_id!r}")
    if len(create_event_id) < 2:
        raise EventIdError("empty event ID")
    return "!" + create_event_id[1:]


def event_from_pdu(pdu: Mapping[str, Any], room_version: RoomVersion) -> Event:
    """Wrap a PDU as an `Event`, computing (v3+) or reading (v1/v2) its ID.

    The PDU is shared, not copied (the `Event` contract: never mutate it afterwards).
    Nothing here checks hashes or signatures: see `myelin.core.builder.verify_event`.
    """
    return Event(compute_event_id(pdu, room_version), room_version, pdu)
