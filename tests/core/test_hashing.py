"""Content hashes, reference hashes and the event-signing vectors of appendices.md."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from myelin.core.base64 import encode_base64
from myelin.core.hashing import (
    ContentHashError,
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_reference_hash,
    reference_hash_blob,
)
from myelin.core.redaction import redact
from myelin.core.roomversions import room_version
from myelin.core.signing import sign_json, verify_json
from tests.support.spec_vectors import spec_message_event, spec_signing_key

KEY = spec_signing_key()
V1 = room_version("1")

MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}

REDACTABLE_EVENT: dict[str, Any] = spec_message_event()


def hash_and_sign(event: dict[str, Any]) -> dict[str, Any]:
    """The algorithm of server-server-api.md, "Adding hashes and signatures"."""
    hashed = add_content_hash(event)
    signed_redacted = sign_json(redact(hashed, V1), "domain", KEY)
    return {**hashed, "signatures": signed_redacted["signatures"]}


def test_vector_minimal_event() -> None:
    before = copy.deepcopy(MINIMAL_EVENT)
    assert hash_and_sign(MINIMAL_EVENT) == {
        "auth_events": [],
        "content": {},
        "depth": 3,
        "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "prev_events": [],
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "signatures": {
            "domain": {
                "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5"
                "KLjAWbOoMszkwsQma+lYAg"
            }
        },
        "type": "X",
        "unsigned": {"age_ts": 1000000},
    }
    assert before == MINIMAL_EVENT


def test_vector_redactable_event() -> None:
    assert hash_and_sign(REDACTABLE_EVENT) == {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {
            "domain": {
                "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn2"
                "41eYHYMGCA5McEiVPdhzBA"
            }
        },
        "unsigned": {"age_ts": 1000000},
    }


def test_redacted_copy_keeps_a_valid_signature_but_fails_the_content_hash() -> None:
    signed = hash_and_sign(REDACTABLE_EVENT)
    check_content_hash(signed)
    redacted = redact(signed, V1)
    verify_json(redacted, "domain", "ed25519:1", KEY.verify_key)
    with pytest.raises(ContentHashError, match="does not match"):
        check_content_hash(redacted)


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    plain = {"type": "X", "content": {"a": 1}}
    expected = hashlib.sha256(b'{"content":{"a":1},"type":"X"}').digest()
    assert compute_content_hash(plain) == expected
    noisy = {**plain, "unsigned": {"x": 1}, "signatures": {"s": {}}, "hashes": {"sha256": "h"}}
    assert compute_content_hash(noisy) == expected


def test_content_hash_covers_everything_else() -> None:
    base = compute_content_hash({"type": "X", "content": {"a": 1}})
    assert compute_content_hash({"type": "X", "content": {"a": 2}}) != base
    assert compute_content_hash({"type": "X", "content": {"a": 1}, "origin": "o"}) != base


def test_add_content_hash_replaces_hashes_and_does_not_mutate() -> None:
    event = {"type": "X", "content": {}, "hashes": {"sha256": "stale", "other": "x"}}
    hashed = add_content_hash(event)
    assert event["hashes"] == {"sha256": "stale", "other": "x"}
    digest = hashlib.sha256(json.dumps({"content": {}, "type": "X"}).replace(" ", "").encode())
    assert hashed["hashes"] == {"sha256": encode_base64(digest.digest())}
    check_content_hash(hashed)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"type": "X"}, "no `hashes` object"),
        ({"type": "X", "hashes": []}, "no `hashes` object"),
        ({"type": "X", "hashes": {}}, "no `hashes.sha256`"),
        ({"type": "X", "hashes": {"sha256": 5}}, "no `hashes.sha256`"),
        ({"type": "X", "hashes": {"sha256": "not base64!"}}, "not Base64"),
        ({"type": "X", "hashes": {"sha256": "Zm9v"}}, "does not match"),
    ],
)
def test_check_content_hash_errors(event: dict[str, Any], message: str) -> None:
    with pytest.raises(ContentHashError, match=message):
        check_content_hash(event)


def test_check_content_hash_detects_tampering() -> None:
    hashed = add_content_hash({"type": "X", "content": {"body": "a"}})
    with pytest.raises(ContentHashError):
        check_content_hash({**hashed, "content": {"body": "b"}})
    # unsigned may change in transit
    check_content_hash({**hashed, "unsigned": {"age": 10}})


def test_reference_hash_is_over_the_redacted_event_without_signatures() -> None:
    v = room_version("10")
    event = {
        "type": "m.room.message",
        "content": {"body": "secret"},
        "hashes": {"sha256": "h"},
        "signatures": {"s": {"ed25519:1": "x"}},
        "unsigned": {"age": 1},
        "depth": 2,
    }
    blob = reference_hash_blob(event, v)
    assert blob == b'{"content":{},"depth":2,"hashes":{"sha256":"h"},"type":"m.room.message"}'
    assert compute_reference_hash(event, v) == hashlib.sha256(blob).digest()
    # Redactable content, signatures and unsigned don't change the reference hash ...
    other = {**event, "content": {"body": "other"}, "signatures": {}, "unsigned": {}}
    assert compute_reference_hash(other, v) == compute_reference_hash(event, v)
    # ... the content hash does.
    assert compute_reference_hash({**event, "hashes": {"sha256": "g"}}, v) != (
        compute_reference_hash(event, v)
    )


def test_reference_hash_depends_on_redaction_rules() -> None:
    event = {"type": "m.room.message", "content": {}, "origin": "example.org"}
    # v11 no longer keeps `origin`.
    assert compute_reference_hash(event, room_version("10")) != compute_reference_hash(
        event, room_version("11")
    )
    without_origin = {"type": "m.room.message", "content": {}}
    assert compute_reference_hash(event, room_version("11")) == compute_reference_hash(
        without_origin, room_version("11")
    )


def test_non_objects_are_type_errors() -> None:
    with pytest.raises(TypeError):
        compute_content_hash([1])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        add_content_hash("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_content_hash(None)  # type: ignore[arg-type]
