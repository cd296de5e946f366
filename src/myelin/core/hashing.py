"""Content hashes and reference hashes of events (server-server-api.md, "Signing Events").

The *content hash* covers the whole event (minus `unsigned`, `signatures` and `hashes`) and
is stored in the event's `hashes.sha256`; the signature covers only the redacted event, which
keeps `hashes`, so a receiver can tell a redacted copy (hash mismatch, signature fine) from a
forgery (signature fails). The *reference hash* covers the redacted event without
`signatures` and `unsigned`; room versions 3+ derive event IDs from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from myelin.core.base64 import Base64Error, decode_base64, encode_base64
from myelin.core.canonicaljson import encode_canonical_json
from myelin.core.redaction import redact
from myelin.core.roomversions import RoomVersion
from myelin.core.signing import signature_blob

__all__ = [
    "ContentHashError",
    "add_content_hash",
    "check_content_hash",
    "compute_content_hash",
    "compute_reference_hash",
    "reference_hash_blob",
]

_EXCLUDED_FROM_CONTENT_HASH = frozenset({"unsigned", "signatures", "hashes"})


class ContentHashError(ValueError):
    """`hashes.sha256` is missing, malformed, or does not match the event.

    A mismatch on an event whose signature verified means the copy was redacted (or its
    unprotected content altered): the receiver keeps the redacted form.
    """


def _require_object(pdu: Any) -> Mapping[str, Any]:
    if not isinstance(pdu, Mapping):
        raise TypeError(f"an event must be a JSON object, not {type(pdu).__name__}")
    return pdu


def compute_content_hash(pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of `pdu` without `unsigned`, `signatures`, `hashes`."""
    stripped = {
        k: v for k, v in _require_object(pdu).items() if k not in _EXCLUDED_FROM_CONTENT_HASH
    }
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: `pdu` with `hashes` set to `{"sha256": <unpadded base64 content hash>}`."""
    hashed = dict(_require_object(pdu))
    hashed["hashes"] = {"sha256": encode_base64(compute_content_hash(pdu))}
    return hashed


def check_content_hash(pdu: Mapping[str, Any]) -> None:
    """Raise ContentHashError unless `hashes.sha256` is the content hash of `pdu`."""
    hashes = _require_object(pdu).get("hashes")
    if not isinstance(hashes, Mapping):
        raise ContentHashError("event has no `hashes` object")
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        raise ContentHashError("event has no `hashes.sha256` string")
    try:
        claimed_bytes = decode_base64(claimed)
    except Base64Error as e:
        raise ContentHashError(f"`hashes.sha256` is not Base64: {e}") from None
    if claimed_bytes != compute_content_hash(pdu):
        raise ContentHashError("content hash does not match the event")


def reference_hash_blob(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """The canonical JSON the reference hash is taken over (the redacted event without
    `signatures` and `unsigned`). It is byte for byte what a signature covers, so code that
    both signs (or verifies) and derives the event ID encodes the event only once."""
    return signature_blob(redact(_require_object(pdu), room_version))


def compute_reference_hash(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 over the redacted event without `signatures` and `unsigned`."""
    return hashlib.sha256(reference_hash_blob(pdu, room_version)).digest()
