"""Test vectors from the specification's appendices (appendices.md, "Signing Events"),
shared by the hashing, signing, redaction and builder tests so that every one of them
checks against the same text.
"""

from __future__ import annotations

from typing import Any

from myelin.core.base64 import decode_base64
from myelin.core.signing import SigningKey

#: The private key of the signing examples, seed as printed in the spec, key ID "1".
SPEC_SEED_B64 = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"


def spec_signing_key() -> SigningKey:
    return SigningKey.from_seed(decode_base64(SPEC_SEED_B64), "1")


def spec_message_event() -> dict[str, Any]:
    """The second event-signing example: a message whose body redaction removes
    (a fresh copy each call, so no test sees another's changes)."""
    return {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }
