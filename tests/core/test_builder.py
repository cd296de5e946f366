"""Building hashed and signed events in every format, and verifying them."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from myelin.core.base64 import encode_base64
from myelin.core.builder import (
    MAX_PDU_BYTES,
    EventBuildError,
    EventSizeError,
    build_event,
    check_size_limits,
    hash_and_sign_event,
    reference_hash_of,
    sign_event,
    verify_event,
)
from myelin.core.canonicaljson import encode_canonical_json
from myelin.core.eventids import (
    EventIdError,
    compute_event_id,
    event_from_pdu,
    room_id_for_create_event,
)
from myelin.core.events import Event
from myelin.core.hashing import ContentHashError, check_content_hash, compute_reference_hash
from myelin.core.redaction import redact
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion, room_version
from myelin.core.signing import SignatureError, SigningKey, verify_json
from tests.support.spec_vectors import spec_message_event, spec_signing_key

KEY = spec_signing_key()
OTHER = SigningKey.from_seed(bytes(range(32)), "o")
KEYS = {("example.org", "ed25519:1"): KEY.verify_key, ("other.org", "ed25519:o"): OTHER.verify_key}
ALL_VERSIONS = sorted(KNOWN_ROOM_VERSIONS, key=int)


def create_event(version: RoomVersion, **overrides: Any) -> Event:
    args: dict[str, Any] = {
        "room_id": None if version.room_id_from_create_event else "!room:example.org",
        "sender": "@alice:example.org",
        "type": "m.room.create",
        "state_key": "",
        "content": {"room_version": version.identifier},
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": 1_700_000_000_000,
        "server_name": "example.org",
        "signing_key": KEY,
    }
    args.update(overrides)
    return build_event(version, **args)


def message_event(version: RoomVersion, parent: Event, **overrides: Any) -> Event:
    args: dict[str, Any] = {
        "room_id": parent.room_id,
        "sender": "@alice:example.org",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "hello"},
        "prev_events": [parent],
        "auth_events": [] if version.room_id_from_create_event else [parent],
        "depth": parent.depth + 1,
        "origin_server_ts": 1_700_000_000_001,
        "server_name": "example.org",
        "signing_key": KEY,
    }
    args.update(overrides)
    return build_event(version, **args)


@pytest.mark.parametrize("version_id", ALL_VERSIONS)
def test_built_events_verify_and_have_the_right_shape(version_id: str) -> None:
    version = room_version(version_id)
    create = create_event(version)
    message = message_event(version, create)
    for event in (create, message):
        verify_event(event, KEYS)
        check_content_hash(event.pdu)
        verify_json(redact(event.pdu, version), "example.org", "ed25519:1", KEY.verify_key)
        # The ID is what anyone recomputes from the PDU.
        assert compute_event_id(event.pdu, version) == event.event_id
        assert event_from_pdu(event.pdu, version) == event
        assert set(event.pdu["signatures"]) == {"example.org"}
    assert message.prev_event_ids == (create.event_id,)
    assert message.room_id == create.room_id
    assert message.content == {"msgtype": "m.text", "body": "hello"}
    assert message.depth == 2

    if version.event_format is EventFormat.V1:
        assert re.fullmatch(r"\$[0-9a-f]{24}:example\.org", create.event_id)
        assert create.pdu["event_id"] == create.event_id
        assert message.pdu["prev_events"] == [
            [create.event_id, {"sha256": encode_base64(reference_hash_of(create))}]
        ]
    else:
        assert "event_id" not in create.pdu
        assert message.pdu["prev_events"] == [create.event_id]
        alphabet = r"A-Za-z0-9+/" if version.event_format is EventFormat.V2 else r"A-Za-z0-9_-"
        assert re.fullmatch(rf"\$[{alphabet}]{{43}}", create.event_id)


def test_reference_hash_of_matches_hashing_module() -> None:
    v1 = room_version("1")
    create = create_event(v1)
    assert reference_hash_of(create) == compute_reference_hash(create.pdu, v1)


def test_v12_create_has_no_room_id_and_names_the_room() -> None:
    v12 = room_version("12")
    create = create_event(v12)
    assert "room_id" not in create.pdu
    assert create.room_id == room_id_for_create_event(create.event_id)
    message = message_event(v12, create)
    assert message.pdu["room_id"] == create.room_id
    with pytest.raises(EventBuildError, match="no room_id"):
        create_event(v12, room_id="!x:example.org")


def test_v11_create_keeps_room_id() -> None:
    create = create_event(room_version("11"))
    assert create.pdu["room_id"] == "!room:example.org"


def test_deterministic_for_given_inputs() -> None:
    v10 = room_version("10")
    assert create_event(v10).pdu == create_event(v10).pdu
    v1 = room_version("1")
    a = create_event(v1, event_id="$fixed:example.org")
    b = create_event(v1, event_id="$fixed:example.org")
    assert a.pdu == b.pdu
    assert a.event_id == "$fixed:example.org"
    assert create_event(v1).event_id != create_event(v1).event_id


@pytest.mark.parametrize("version_id", ["1", "10"])
def test_redacts_at_top_level_before_v11(version_id: str) -> None:
    version = room_version(version_id)
    create = create_event(version)
    redaction = message_event(
        version, create, type="m.room.redaction", content={"reason": "x"}, redacts="$target"
    )
    assert redaction.pdu["redacts"] == "$target"
    assert "redacts" not in redaction.pdu["content"]
    assert redaction.redacts == "$target"
    verify_event(redaction, KEYS)


@pytest.mark.parametrize("version_id", ["11", "12"])
def test_redacts_in_content_from_v11(version_id: str) -> None:
    version = room_version(version_id)
    create = create_event(version)
    redaction = message_event(
        version, create, type="m.room.redaction", content={"reason": "x"}, redacts="$target"
    )
    assert "redacts" not in redaction.pdu
    assert redaction.pdu["content"] == {"reason": "x", "redacts": "$target"}
    assert redaction.redacts == "$target"
    with pytest.raises(EventBuildError, match="disagree"):
        message_event(
            version, create, type="m.room.redaction", content={"redacts": "$a"}, redacts="$b"
        )


def test_extra_and_unsigned() -> None:
    v10 = room_version("10")
    create = create_event(v10)
    unsigned: dict[str, Any] = {"transaction_id": "t1", "nested": {"a": [1]}}
    event = message_event(v10, create, extra={"origin": "example.org"}, unsigned=unsigned)
    assert event.pdu["origin"] == "example.org"
    assert event.pdu["unsigned"] == unsigned
    # The caller's objects are copied, not shared.
    unsigned["nested"]["a"].append(2)
    assert event.pdu["unsigned"]["nested"] == {"a": [1]}
    # `unsigned` is not covered: the same event without it has the same ID and hashes.
    plain = message_event(v10, create, extra={"origin": "example.org"})
    assert plain.event_id == event.event_id
    assert plain.pdu["hashes"] == event.pdu["hashes"]
    for key in ("type", "hashes", "signatures", "unsigned", "content"):
        with pytest.raises(EventBuildError, match="extra"):
            message_event(v10, create, extra={key: "x"})


def test_content_is_copied() -> None:
    v10 = room_version("10")
    create = create_event(v10)
    content: dict[str, Any] = {"body": "a", "list": [1]}
    before = copy.deepcopy(content)
    event = message_event(v10, create, content=content)
    assert content == before
    content["list"].append(2)
    verify_event(event, KEYS)
    assert event.content == {"body": "a", "list": [1]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"content": {"n": 1.5}}, "canonical JSON"),
        ({"content": {"n": 2**53}}, "canonical JSON"),
        ({"content": "text"}, "content"),
        ({"sender": ""}, "sender"),
        ({"type": None}, "type"),
        ({"room_id": None}, "room_id"),
        ({"depth": -1}, "depth"),
        ({"depth": True}, "depth"),
        ({"depth": 2**53}, "depth"),
        ({"origin_server_ts": 1.0}, "origin_server_ts"),
        ({"state_key": 5}, "state_key"),
        ({"prev_events": "$abc"}, "prev_events"),
        ({"prev_events": [5]}, "event reference"),
        ({"auth_events": None}, "auth_events"),
        ({"event_id": "$x:example.org"}, "derives event IDs"),
        ({"redacts": ""}, "redacts"),
        ({"unsigned": ["x"]}, "unsigned"),
        ({"unsigned": {"x": 1.5}}, "canonical JSON"),
        ({"server_name": ""}, "server_name"),
        ({"signing_key": b"key"}, "SigningKey"),
    ],
)
def test_bad_arguments_are_typed_errors(overrides: dict[str, Any], message: str) -> None:
    v10 = room_version("10")
    create = create_event(v10)
    with pytest.raises(EventBuildError, match=message):
        message_event(v10, create, **overrides)


def test_v1_references_need_events() -> None:
    v1 = room_version("1")
    create = create_event(v1)
    with pytest.raises(EventBuildError, match="reference hash"):
        message_event(v1, create, prev_events=[create.event_id])
    with pytest.raises(EventBuildError, match="bad event ID"):
        create_event(v1, event_id="$" + "a" * 260 + ":example.org")


# -- verification ------------------------------------------------------------------------


def rewrap(event: Event, pdu: dict[str, Any]) -> Event:
    return Event(event.event_id, event.room_version, pdu)


def test_verification_needs_a_known_key() -> None:
    event = create_event(room_version("10"))
    with pytest.raises(SignatureError, match="known key"):
        verify_event(event, {})
    with pytest.raises(SignatureError, match="known key"):
        verify_event(event, {("other.org", "ed25519:1"): KEY.verify_key})
    with pytest.raises(SignatureError, match="does not verify"):
        verify_event(event, {("example.org", "ed25519:1"): OTHER.verify_key})


def test_tampered_protected_field_fails_the_signature() -> None:
    v10 = room_version("10")
    event = create_event(v10)
    # Keep the claimed event ID so the signature check is what fails.
    pdu = {**event.pdu, "origin_server_ts": 5}
    with pytest.raises((SignatureError, EventIdError)):
        verify_event(rewrap(event, pdu), KEYS)
    # With the recomputed ID, it is the signature that fails.
    with pytest.raises(SignatureError, match="does not verify"):
        verify_event(event_from_pdu(pdu, v10), KEYS)


def test_tampered_content_fails_the_content_hash_only() -> None:
    v10 = room_version("10")
    message = message_event(v10, create_event(v10))
    pdu = {**message.pdu, "content": {"body": "forged"}}
    tampered = event_from_pdu(pdu, v10)
    assert tampered.event_id == message.event_id  # content is not in the reference hash
    with pytest.raises(ContentHashError):
        verify_event(tampered, KEYS)


def test_redacted_copy_has_valid_signature_and_a_hash_mismatch() -> None:
    v10 = room_version("10")
    message = message_event(v10, create_event(v10))
    redacted = event_from_pdu(redact(message.pdu, v10), v10)
    assert redacted.event_id == message.event_id
    with pytest.raises(ContentHashError):
        verify_event(redacted, KEYS)


def test_wrong_event_id_is_detected() -> None:
    v10 = room_version("10")
    event = create_event(v10)
    with pytest.raises(EventIdError):
        verify_event(Event("$wrong", v10, event.pdu), KEYS)
    v1 = room_version("1")
    old = create_event(v1)
    with pytest.raises(EventIdError):
        verify_event(Event("$other:example.org", v1, old.pdu), KEYS)


def test_unsigned_and_unknown_signatures_do_not_matter() -> None:
    v10 = room_version("10")
    event = create_event(v10)
    sigs = copy.deepcopy(event.pdu["signatures"])
    sigs["example.org"]["ed25519:unknown"] = "garbage"
    sigs["third.org"] = {"ed25519:1": "garbage"}
    pdu = {**event.pdu, "signatures": sigs, "unsigned": {"age": 1}}
    verify_event(rewrap(event, pdu), KEYS)


def test_missing_signatures_and_senders() -> None:
    v10 = room_version("10")
    event = create_event(v10)
    pdu = dict(event.pdu)
    del pdu["signatures"]
    with pytest.raises(SignatureError, match="signatures"):
        verify_event(rewrap(event, pdu), KEYS)
    with pytest.raises(SignatureError, match=r"not signed by example\.org"):
        verify_event(rewrap(event, {**event.pdu, "signatures": {}}), KEYS)
    for sender in (None, "nocolon", "@a:"):
        broken = event_from_pdu({**event.pdu, "sender": sender}, v10)
        with pytest.raises(SignatureError):
            verify_event(broken, KEYS)


@pytest.mark.parametrize("version_id", ["1", "2"])
def test_v1_event_id_domain_must_sign_too(version_id: str) -> None:
    version = room_version(version_id)
    create = create_event(version)
    # An event whose ID names other.org, sent by example.org's user, signed by example.org.
    event = message_event(version, create, event_id="$abc:other.org")
    with pytest.raises(SignatureError, match=r"not signed by other\.org"):
        verify_event(event, KEYS)
    cosigned = sign_event(event.pdu, version, "other.org", OTHER)
    assert set(cosigned["signatures"]) == {"example.org", "other.org"}
    verify_event(event_from_pdu(cosigned, version), KEYS)


def test_v3_plus_only_needs_the_sender_server() -> None:
    v10 = room_version("10")
    event = create_event(v10)
    verify_event(event, {("example.org", "ed25519:1"): KEY.verify_key})


def test_cosigning_keeps_hashes_and_id() -> None:
    v12 = room_version("12")
    create = create_event(v12)
    cosigned = sign_event(create.pdu, v12, "other.org", OTHER)
    assert cosigned["hashes"] == create.pdu["hashes"]
    assert compute_event_id(cosigned, v12) == create.event_id
    verify_json(redact(cosigned, v12), "other.org", "ed25519:o", OTHER.verify_key)
    verify_event(event_from_pdu(cosigned, v12), KEYS)


def test_hash_and_sign_event_reproduces_the_spec_vector() -> None:
    event = spec_message_event()
    signed = hash_and_sign_event(event, room_version("1"), "domain", KEY)
    assert signed["hashes"] == {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"}
    assert signed["signatures"] == {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn2"
            "41eYHYMGCA5McEiVPdhzBA"
        }
    }
    assert signed["unsigned"] == {"age_ts": 1000000}
    verify_event(
        event_from_pdu(signed, room_version("1")), {("domain", "ed25519:1"): KEY.verify_key}
    )


# -- size limits (client-server-api "Size limits") ----------------------------------------


def test_size_limit_counts_the_final_event_exactly() -> None:
    v10 = room_version("10")
    create = create_event(v10)
    probe = message_event(v10, create, content={"body": ""}, unsigned={"a": 1})
    overhead = len(encode_canonical_json(dict(probe.pdu)))
    room = MAX_PDU_BYTES - overhead
    fits = message_event(v10, create, content={"body": "x" * room}, unsigned={"a": 1})
    assert len(encode_canonical_json(dict(fits.pdu))) == MAX_PDU_BYTES
    check_size_limits(fits.pdu)
    with pytest.raises(EventSizeError, match="65536"):
        message_event(v10, create, content={"body": "x" * (room + 1)}, unsigned={"a": 1})
    with pytest.raises(EventSizeError):
        check_size_limits({**fits.pdu, "extra": 1})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sender", "@" + "a" * 250 + ":example.org"),
        ("room_id", "!" + "r" * 250 + ":example.org"),
        ("type", "t" * 256),
        ("state_key", "é" * 128),
    ],
)
def test_keys_over_255_bytes_are_rejected(key: str, value: str) -> None:
    v10 = room_version("10")
    create = create_event(v10)
    with pytest.raises(EventSizeError, match=key):
        message_event(v10, create, **{key: value})
    with pytest.raises(EventSizeError, match=key):
        check_size_limits({**create.pdu, key: value})
    # 255 bytes exactly is fine.
    check_size_limits({**create.pdu, key: value[: 255 if key != "state_key" else 127]})


# -- interoperability ----------------------------------------------------------------------

# Events hashed and signed by an independent implementation with the spec's test seed (key
# ID `ed25519:s1`), with the IDs it computed for them: our verification must accept them.
REFERENCE_BASE: dict[str, Any] = {
    "content": {"avatar_url": "mxc://x/y", "displayname": "B", "membership": "join"},
    "depth": 5,
    "origin": "syn.test",
    "origin_server_ts": 123,
    "room_id": "!r:syn.test",
    "sender": "@b:syn.test",
    "state_key": "@b:syn.test",
    "type": "m.room.member",
}
REFERENCE_V1_REFS: dict[str, Any] = {
    "event_id": "$x:syn.test",
    "prev_events": [["$p:syn.test", {"sha256": "h"}]],
    "auth_events": [],
}
REFERENCE_REFS: dict[str, Any] = {"prev_events": ["$p"], "auth_events": ["$a"]}
REFERENCE_SIGNED: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "1": (
        "$x:syn.test",
        REFERENCE_V1_REFS,
        "/4+GDngFGYO4O9KEdmRfSXL2p1snQTZZ04HcxHVYjxU",
        "y22xvD+WBwA2yvPvUeExWMYLRc0MnsUwOdYdx7bRxY2hekjFkz7ScMRJQXtDw9lR5ukAp04Ye3fkpoZ0YGO8Bw",
    ),
    "10": (
        "$3CYI5XBLVX8WTsiSfUsM0NISBND7UZe3_mYU-Ek7flg",
        REFERENCE_REFS,
        "+qc8sIu3AmdQwf7PoOXN1FDlmzqO4QbPRZYb1AoZQBs",
        "ZbCJ4sUtlHfPSpGY5ctatTzyRHgpavYsuOBBOuyvWIefd+3EOW8cwOpN3kq59ebKGthCUE2mZrzt3RLqpPq2Cg",
    ),
    "12": (
        "$E_XHbtWb70KyL1QPX5RR3DSRMn0gjZhAVIvy4XRhtsU",
        REFERENCE_REFS,
        "+qc8sIu3AmdQwf7PoOXN1FDlmzqO4QbPRZYb1AoZQBs",
        "S266eb0ZkucNW/HSrOhZJ766BqPRz4sQ7bSFctBhzl8aCdglvL8MRpXVjQxEiR7T81GrekbsPQFqb8d8tSXMCg",
    ),
}


@pytest.mark.parametrize("version_id", sorted(REFERENCE_SIGNED))
def test_events_signed_elsewhere_verify(version_id: str) -> None:
    version = room_version(version_id)
    expected_id, refs, content_hash, signature = REFERENCE_SIGNED[version_id]
    pdu = {
        **REFERENCE_BASE,
        **refs,
        "hashes": {"sha256": content_hash},
        "signatures": {"syn.test": {"ed25519:s1": signature}},
    }
    assert KEY.verify_key_base64 == "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
    event = event_from_pdu(pdu, version)
    assert event.event_id == expected_id
    keys = {("syn.test", "ed25519:s1"): KEY.verify_key}
    verify_event(event, keys)
    # Our signature with the same key over the same event is byte-identical (Ed25519 is
    # deterministic), so the two implementations sign the same bytes.
    resigned = hash_and_sign_event(pdu, version, "syn.test", SigningKey(version="s1", key=KEY.key))
    assert resigned["signatures"] == pdu["signatures"]
    assert resigned["hashes"] == pdu["hashes"]
