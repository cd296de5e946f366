"""Building hashed and signed events, and verifying received ones.

`build_event` is the one way the server makes a new PDU: it lays the fields out in the
room version's event format, computes the content hash, signs the redacted form and derives
the event ID, encoding the event twice in all (once for the content hash, once for the
signature and reference hash, which cover the same bytes). `verify_event` is the receiving
side (server-server-api.md, "Validating hashes and signatures on received events").
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from myelin.core.base64 import encode_base64
from myelin.core.canonicaljson import encode_canonical_json
from myelin.core.eventids import (
    MAX_ID_BYTES,
    EventIdError,
    compute_event_id,
    event_id_from_reference_hash,
)
from myelin.core.events import Event
from myelin.core.hashing import ContentHashError, add_content_hash, check_content_hash
from myelin.core.redaction import redact
from myelin.core.roomversions import EventFormat, RoomVersion
from myelin.core.signing import (
    SignatureError,
    SigningKey,
    sign_json,
    signature_blob,
    verify_signed_by,
)

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_PDU_BYTES",
    "ContentHashError",
    "EventBuildError",
    "EventRef",
    "EventSizeError",
    "SignatureError",
    "build_event",
    "check_size_limits",
    "hash_and_sign_event",
    "reference_hash_of",
    "sign_event",
    "verify_event",
]

EventRef = str | Event
"""A `prev_events`/`auth_events` entry: an event ID, or the `Event` itself. Rooms v1/v2
need the `Event`, because their references carry the referenced event's reference hash."""

_MAX_CANONICAL_INT = 2**53 - 1
"""Canonical JSON holds no larger integer, so no depth or timestamp can exceed it."""
_RESERVED = frozenset({"hashes", "signatures", "unsigned"})


MAX_PDU_BYTES = 65536
"""Largest event, as canonical JSON in the federation format with its signatures
(client-server-api "Size limits")."""

MAX_KEY_BYTES = 255
"""Largest `sender`, `room_id`, `state_key`, `type` and `event_id`, in UTF-8 bytes."""

_LIMITED_KEYS = ("sender", "room_id", "state_key", "type", "event_id")


class EventBuildError(ValueError):
    """Arguments that can't make a valid event (wrong type, missing room ID, clashing keys)."""


class EventSizeError(ValueError):
    """An event, or one of its size-limited keys, over the specification's limits."""


def _check_key_sizes(pdu: Mapping[str, Any]) -> None:
    for key in _LIMITED_KEYS:
        value = pdu.get(key)
        if isinstance(value, str) and len(value.encode("utf-8")) > MAX_KEY_BYTES:
            raise EventSizeError(f"`{key}` is longer than {MAX_KEY_BYTES} bytes")


def _check_total(size: int) -> None:
    if size > MAX_PDU_BYTES:
        raise EventSizeError(f"event is {size} bytes, more than {MAX_PDU_BYTES}")


def check_size_limits(pdu: Mapping[str, Any]) -> None:
    """Raise EventSizeError if `pdu` breaks a size limit: 255 bytes for `sender`,
    `room_id`, `state_key`, `type` and `event_id`; 65,536 bytes for the whole event as
    canonical JSON. For received events; `build_event` checks its own."""
    _check_key_sizes(pdu)
    _check_total(len(encode_canonical_json(pdu)))


def _added_size(key: str, value: Any) -> int:
    """Bytes that adding `key: value` adds to a non-empty canonical JSON object."""
    return len(key) + 4 + len(encode_canonical_json(value))  # `,"key":value`


def reference_hash_of(event: Event) -> bytes:
    """The reference hash of an event (what v1/v2 `prev_events` entries carry)."""
    return hashlib.sha256(signature_blob(redact(event.pdu, event.room_version))).digest()


def _reference(ref: EventRef, event_format: EventFormat) -> Any:
    if isinstance(ref, Event):
        if event_format is EventFormat.V1:
            return [ref.event_id, {"sha256": encode_base64(reference_hash_of(ref))}]
        return ref.event_id
    if isinstance(ref, str):
        if event_format is EventFormat.V1:
            raise EventBuildError(
                f"room v1/v2 references need the Event (for its reference hash), got {ref!r}"
            )
        return ref
    raise EventBuildError(f"an event reference is an event ID or an Event, not {ref!r}")


def _require_int(name: str, value: Any, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventBuildError(f"`{name}` must be an integer, got {value!r}")
    if not 0 <= value <= maximum:
        raise EventBuildError(f"`{name}` must be between 0 and {maximum}, got {value}")
    return value


def _require_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise EventBuildError(f"`{name}` must be a non-empty string, got {value!r}")
    return value


def _new_v1_event_id(server_name: str) -> str:
    return f"${secrets.token_hex(12)}:{server_name}"


def _json_copy(value: Any, what: str) -> Any:
    """A deep, JSON-only copy: the event never shares mutable state with the caller."""
    try:
        return orjson.loads(encode_canonical_json(value))
    except (TypeError, ValueError) as e:  # CanonicalJsonError is a ValueError
        raise EventBuildError(f"{what} is not canonical JSON: {e}") from None


def build_event(
    room_version: RoomVersion,
    *,
    room_id: str | None,
    sender: str,
    type: str,
    content: Mapping[str, Any],
    state_key: str | None = None,
    prev_events: Sequence[EventRef],
    auth_events: Sequence[EventRef],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: SigningKey,
    redacts: str | None = None,
    unsigned: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> Event:
    """A new event, content-hashed and signed by `server_name` with `signing_key`.

    - `room_id` is `None` exactly for the `m.room.create` event of a v12+ room (its room ID
      is derived from its event ID: `Event.room_id` gives it).
    - `redacts` goes to the top level before v11 and into `content` from v11.
    - `extra` adds other top-level keys (for example `origin` for old room versions); it may
      not replace a key the builder sets.
    - `event_id` chooses the ID of a v1/v2 event (default: `$<random>:<server_name>`); later
      formats derive the ID from the content, so giving one there is an error.
    - `unsigned` is attached after signing (it is not covered by hashes or signatures).

    Raises EventBuildError on arguments that can't make a valid event, EventSizeError
    when the event would break a size limit (`check_size_limits`).
    """
    if not isinstance(room_version, RoomVersion):
        raise EventBuildError(f"not a RoomVersion: {room_version!r}")
    if not isinstance(signing_key, SigningKey):
        raise EventBuildError("`signing_key` must be a SigningKey")
    event_format = room_version.event_format
    _require_str("sender", sender)
    _require_str("type", type)
    _require_str("server_name", server_name)
    if not isinstance(content, Mapping):
        raise EventBuildError(f"`content` must be an object, got {content!r}")
    if state_key is not None and not isinstance(state_key, str):
        raise EventBuildError(f"`state_key` must be a string or None, got {state_key!r}")
    _require_int("depth", depth, _MAX_CANONICAL_INT)
    _require_int("origin_server_ts", origin_server_ts, _MAX_CANONICAL_INT)
    for name, refs in (("prev_events", prev_events), ("auth_events", auth_events)):
        if isinstance(refs, str | bytes) or not isinstance(refs, Sequence):
            raise EventBuildError(f"`{name}` must be a list of event references")

    is_v12_create = room_version.room_id_from_create_event and type == "m.room.create"
    if is_v12_create:
        if room_id is not None:
            raise EventBuildError(
                f"a room v{room_version.identifier} create event has no room_id "
                "(it is derived from the event ID)"
            )
    else:
        _require_str("room_id", room_id)

    pdu: dict[str, Any] = {}
    if event_format is EventFormat.V1:
        chosen = event_id if event_id is not None else _new_v1_event_id(server_name)
        if not isinstance(chosen, str) or len(chosen.encode("utf-8")) > MAX_ID_BYTES:
            raise EventBuildError(f"bad event ID {chosen!r}")
        pdu["event_id"] = chosen
    elif event_id is not None:
        raise EventBuildError(
            f"room version {room_version.identifier} derives event IDs; none may be given"
        )
    pdu["type"] = type
    if room_id is not None:
        pdu["room_id"] = room_id
    pdu["sender"] = sender
    pdu["content"] = content
    if state_key is not None:
        pdu["state_key"] = state_key
    pdu["prev_events"] = [_reference(r, event_format) for r in prev_events]
    pdu["auth_events"] = [_reference(r, event_format) for r in auth_events]
    pdu["depth"] = depth
    pdu["origin_server_ts"] = origin_server_ts
    if redacts is not None:
        _require_str("redacts", redacts)
        if room_version.redacts_in_content:
            if content.get("redacts", redacts) != redacts:
                raise EventBuildError("`redacts` and `content.redacts` disagree")
            pdu["content"] = {**content, "redacts": redacts}
        else:
            pdu["redacts"] = redacts
    if extra:
        for key, value in extra.items():
            if key in pdu or key in _RESERVED:
                raise EventBuildError(f"`extra` may not set `{key}`")
            pdu[key] = value

    _check_key_sizes(pdu)

    # Content hash over the full event; the parsed-back bytes become the event's own copy.
    try:
        content_blob = encode_canonical_json(pdu)
    except (TypeError, ValueError) as e:  # CanonicalJsonError is a ValueError
        raise EventBuildError(f"event is not canonical JSON: {e}") from None
    built: dict[str, Any] = orjson.loads(content_blob)
    built["hashes"] = {"sha256": encode_base64(hashlib.sha256(content_blob).digest())}

    # Signature and reference hash both cover the redacted event without signatures.
    signed_blob = signature_blob(redact(built, room_version))
    signature = encode_base64(signing_key.sign(signed_blob))
    built["signatures"] = {server_name: {signing_key.key_id: signature}}
    if unsigned is not None:
        if not isinstance(unsigned, Mapping):
            raise EventBuildError("`unsigned` must be an object")
        built["unsigned"] = _json_copy(unsigned, "`unsigned`")
    # The size of the final event without encoding it again: canonical JSON is additive.
    size = len(content_blob)
    for key in _RESERVED:
        if key in built:
            size += _added_size(key, built[key])
    _check_total(size)

    if event_format is EventFormat.V1:
        new_id: str = built["event_id"]
    else:
        new_id = event_id_from_reference_hash(hashlib.sha256(signed_blob).digest(), room_version)
    return Event(new_id, room_version, built)


def sign_event(
    pdu: Mapping[str, Any], room_version: RoomVersion, server_name: str, key: SigningKey
) -> dict[str, Any]:
    """A new dict: `pdu` with one more signature (over its redacted form), the others kept.

    This is how a resident server co-signs a join or knock relayed through it.
    """
    signed_redacted = sign_json(redact(pdu, room_version), server_name, key)
    result = dict(pdu)
    result["signatures"] = signed_redacted["signatures"]
    return result


def hash_and_sign_event(
    pdu: Mapping[str, Any], room_version: RoomVersion, server_name: str, key: SigningKey
) -> dict[str, Any]:
    """A new dict: `pdu` with its content hash set and signed (server-server-api.md,
    "Adding hashes and signatures to outgoing events")."""
    return sign_event(add_content_hash(pdu), room_version, server_name, key)


def _server_of(identifier: str, what: str) -> str:
    _, sep, server = identifier.partition(":")
    if not sep or not server:
        raise SignatureError(f"{what} {identifier!r} names no server")
    return server


def verify_event(event: Event, verify_keys: Mapping[tuple[str, str], bytes]) -> None:
    """Check a received event's signatures, event ID and content hash.

    `verify_keys` maps `(server name, key ID)` to raw Ed25519 public keys; give only keys
    known to be valid at the event's `origin_server_ts` (rooms v5+ require it). The
    sender's server must have signed (and, in rooms v1/v2, the server of the event ID too),
    each with at least one known key, and every known key's signature must verify.
    Signatures by unknown keys are ignored. Third-party-invite joins, where another server
    may send, are not special-cased here.

    Raises SignatureError (reject the event), EventIdError (v1/v2 ID of the wrong shape, or
    an `Event` whose ID is not its hash), or ContentHashError: the signature is fine but the
    content is not the signed one, so the receiver keeps the redacted form.
    """
    pdu = event.pdu
    room_version = event.room_version
    sender = pdu.get("sender")
    if not isinstance(sender, str):
        raise SignatureError("event has no sender")
    servers = [_server_of(sender, "sender")]
    if room_version.event_format is EventFormat.V1:
        event_id = compute_event_id(pdu, room_version)
        if event_id != event.event_id:
            raise EventIdError(f"event ID {event.event_id} differs from the PDU's {event_id}")
        id_server = _server_of(event_id, "event ID")
        if id_server not in servers:
            servers.append(id_server)

    redacted = redact(pdu, room_version)
    blob = signature_blob(redacted)
    if room_version.event_format is not EventFormat.V1:
        expected = event_id_from_reference_hash(hashlib.sha256(blob).digest(), room_version)
        if expected != event.event_id:
            raise EventIdError(f"event ID {event.event_id} is not the event's hash {expected}")

    signatures = pdu.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureError("event has no `signatures` object")
    for server in servers:
        by_key = signatures.get(server)
        if not isinstance(by_key, Mapping):
            raise SignatureError(f"event is not signed by {server}")
        known = {
            key_id: verify_keys[(server, key_id)]
            for key_id in by_key
            if isinstance(key_id, str) and (server, key_id) in verify_keys
        }
        verify_signed_by(redacted, server, known, blob=blob)
    check_content_hash(pdu)
