"""Format checks of a PDU against its room version (the first check on receipt of a PDU).

server-server-api.md, "Checks performed on receipt of a PDU", step 1: an event that does
not comply with the event format of its room version is dropped, before signatures, hashes
or authorization are looked at. What "the format" means here:

- the `pdu_v1` ... `pdu_v12` schemas of data/api/server-server/definitions: required keys
  and their JSON types (a JSON integer is never a boolean), `hashes.sha256`, signatures as
  server -> key ID -> string, `prev_events`/`auth_events` as `[event_id, {sha256}]` pairs
  (v1, v2) or event IDs (v3+), at most 20 and 10 of them, `depth` from 0 to 2**63-1
  (v1-v5) or 2**53-1 (v6+; negative depths are refused though the schema is silent);
- "Size limits" of the client-server API: the whole event, signatures and `unsigned`
  included, at most 65,536 bytes of canonical JSON; `type` and `state_key` at most 255
  bytes; `sender`, `room_id`, `event_id` within their identifier limits;
- from room version 6 on, the canonical-JSON value rules everywhere in the event (no
  floats, integers within ±(2**53-1)); rooms v1-v5 tolerate such numbers, as the
  specification asks, but never values JSON cannot hold;
- the identifier grammar: `sender` a (historical) user ID, `room_id` in the version's form,
  referenced event IDs in the version's alphabet, `event_id` of v1/v2 events.

Room v12: the create event has no `room_id` (the room ID is derived from its event ID),
every other event's `room_id` is `!` + a 43-character URL-safe base64 SHA-256. The auth
rules of v12 reject a create event with a `room_id` too; it is dropped here already.

Not checked here: hashes, signatures and authorization rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from myelin.core.canonicaljson import CanonicalJsonError, encode_canonical_json
from myelin.core.identifiers import (
    EventID,
    InvalidIdentifier,
    RoomID,
    UserID,
    is_valid_event_id,
)
from myelin.core.roomversions import EventFormat, RoomVersion

MAX_PDU_BYTES = 65536
"""The largest complete event, signatures included, as canonical JSON."""
MAX_KEY_BYTES = 255
"""`type` and `state_key` (the identifiers have the same limit through their grammar)."""
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
MAX_DEPTH_V1 = 2**63 - 1
"""Rooms v1-v5: depth is below the largest signed 64-bit integer (or at it)."""
MAX_DEPTH_V6 = 2**53 - 1
"""Rooms v6+: depth is within canonical JSON's integer range."""
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class InvalidPdu(ValueError):
    """A PDU that breaks the event format of its room version; it is to be dropped.

    `reason` says what is wrong; `field` names the top-level key at fault, when one is.
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


def _is_int(value: object) -> bool:
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _is_object(value: object) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def _is_array(value: object) -> bool:
    return type(value) is list or isinstance(value, list | tuple)


def _is_string(value: object) -> bool:
    return isinstance(value, str)


_KINDS: dict[str, Callable[[object], bool]] = {
    "string": _is_string,
    "integer": _is_int,
    "object": _is_object,
    "array": _is_array,
}


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def _require(pdu: Mapping[str, Any], key: str, kind: str) -> Any:
    """The value of a required key, checked to be of the JSON type `kind`."""
    try:
        value = pdu[key]
    except KeyError:
        raise InvalidPdu("required key is missing", key) from None
    if not _KINDS[kind](value):
        raise InvalidPdu(f"must be a JSON {kind}", key)
    return value


def _mapping_as_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"type {type(value).__name__} is not JSON")


def _check_size(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    """The canonical value rules (v6+) and the 65,536-byte limit, from one encoding."""
    try:
        size = len(encode_canonical_json(pdu))
    except CanonicalJsonError as exc:
        if room_version.strict_canonical_json or exc.kind not in (
            "float",
            "integer_range",
            "non_finite",
        ):
            raise InvalidPdu(f"not canonical JSON ({exc.kind}): {exc}") from None
        # Rooms v1-v5 may hold such numbers; measure them as they would be sent.
        try:
            size = len(orjson.dumps(pdu, default=_mapping_as_dict, option=orjson.OPT_SORT_KEYS))
        except orjson.JSONEncodeError as inner:
            raise InvalidPdu(f"cannot be encoded as JSON: {inner}") from None
    if size > MAX_PDU_BYTES:
        raise InvalidPdu(f"event is {size} bytes as canonical JSON, over {MAX_PDU_BYTES}")


def _check_event_refs(key: str, refs: Sequence[Any], limit: int, event_format: EventFormat) -> None:
    if len(refs) > limit:
        raise InvalidPdu(f"at most {limit} events may be listed, not {len(refs)}", key)
    for ref in refs:
        if event_format is EventFormat.V1:
            if not (_is_array(ref) and len(ref) == 2):
                raise InvalidPdu("entries must be [event_id, {sha256: hash}] pairs", key)
            event_id, hashes = ref
            # The reference hash is never checked by this server (nor by others): a
            # pair with an empty hash object (as Sytest sends) is taken, a malformed one not.
            if not _is_object(hashes) or not isinstance(hashes.get("sha256", ""), str):
                raise InvalidPdu("entries must carry {sha256: hash} as second element", key)
        else:
            event_id = ref
        if not isinstance(event_id, str):
            raise InvalidPdu("event IDs must be strings", key)
        if not is_valid_event_id(event_id, event_format):
            try:
                EventID.parse(event_id, event_format)
            except InvalidIdentifier as exc:
                raise InvalidPdu(exc.reason + f" ({event_id!r})", key) from None


def _check_signatures(signatures: Mapping[str, Any]) -> None:
    for server, by_key in signatures.items():
        if not _is_object(by_key):
            raise InvalidPdu(f"signatures of {server!r} must be an object", "signatures")
        for key_id, signature in by_key.items():
            if not isinstance(signature, str):
                raise InvalidPdu(f"signature {server!r}/{key_id!r} must be a string", "signatures")


def _check_room_id(pdu: Mapping[str, Any], room_version: RoomVersion, event_type: str) -> None:
    if room_version.room_id_from_create_event and event_type == "m.room.create":
        if "room_id" in pdu:
            raise InvalidPdu(
                f"a create event of room version {room_version.identifier} has no room_id "
                "(the room ID is derived from its event ID)",
                "room_id",
            )
        return
    room_id = _require(pdu, "room_id", "string")
    try:
        RoomID.parse(room_id, room_version)
    except InvalidIdentifier as exc:
        raise InvalidPdu(exc.reason, "room_id") from None


def check_pdu(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Raise InvalidPdu unless `pdu` has the event format of `room_version`.

    `pdu` is the event as received: all of it, `signatures` and `unsigned` included,
    counts towards the size limit.
    """
    if not _is_object(pdu):
        raise InvalidPdu("a PDU must be a JSON object")
    event_format = room_version.event_format

    event_type = _require(pdu, "type", "string")
    if _utf8_len(event_type) > MAX_KEY_BYTES:
        raise InvalidPdu(f"longer than {MAX_KEY_BYTES} bytes", "type")
    if "state_key" in pdu:
        state_key = _require(pdu, "state_key", "string")
        if _utf8_len(state_key) > MAX_KEY_BYTES:
            raise InvalidPdu(f"longer than {MAX_KEY_BYTES} bytes", "state_key")

    sender = _require(pdu, "sender", "string")
    try:
        UserID.parse(sender, historical=True)
    except InvalidIdentifier as exc:
        raise InvalidPdu(exc.reason, "sender") from None

    _check_room_id(pdu, room_version, event_type)

    if event_format is EventFormat.V1:
        event_id = _require(pdu, "event_id", "string")
        try:
            EventID.parse(event_id, EventFormat.V1)
        except InvalidIdentifier as exc:
            raise InvalidPdu(exc.reason, "event_id") from None

    ts = _require(pdu, "origin_server_ts", "integer")
    if not _INT64_MIN <= ts <= _INT64_MAX:
        raise InvalidPdu("outside the 64-bit integer range", "origin_server_ts")

    depth = _require(pdu, "depth", "integer")
    max_depth = MAX_DEPTH_V6 if room_version.strict_canonical_json else MAX_DEPTH_V1
    if not 0 <= depth <= max_depth:
        raise InvalidPdu(f"must be between 0 and {max_depth}", "depth")

    _require(pdu, "content", "object")
    hashes = _require(pdu, "hashes", "object")
    if not isinstance(hashes.get("sha256"), str):
        raise InvalidPdu("must have a string sha256 hash", "hashes")
    _check_signatures(_require(pdu, "signatures", "object"))
    if "unsigned" in pdu:
        _require(pdu, "unsigned", "object")
    if "redacts" in pdu and not room_version.redacts_in_content:
        _require(pdu, "redacts", "string")

    prev_events = _require(pdu, "prev_events", "array")
    _check_event_refs("prev_events", prev_events, MAX_PREV_EVENTS, event_format)
    auth_events = _require(pdu, "auth_events", "array")
    _check_event_refs("auth_events", auth_events, MAX_AUTH_EVENTS, event_format)

    _check_size(pdu, room_version)
