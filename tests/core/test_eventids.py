"""Event IDs for every event format and v12 room IDs.

The expected IDs were cross-checked against an independent implementation for the same
PDUs; they are reproduced here as plain facts.
"""

from __future__ import annotations

import base64 as stdlib_base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from myelin.core.eventids import (
    EventIdError,
    compute_event_id,
    event_from_pdu,
    event_id_from_reference_hash,
    room_id_for_create_event,
)
from myelin.core.hashing import compute_reference_hash, reference_hash_blob
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, EventFormat, room_version

MESSAGE: dict[str, Any] = {
    "auth_events": ["$auth1", "$auth2"],
    "content": {"body": "hi there", "msgtype": "m.text"},
    "depth": 12,
    "hashes": {"sha256": "thishashcoversallfieldsincasethisisredacted"},
    "origin_server_ts": 1404838188000,
    "prev_events": ["$prev1"],
    "room_id": "!UcYsUzyxTGDxLBEvLy:example.org",
    "sender": "@alice:example.com",
    "signatures": {"example.com": {"ed25519:key_version": "these86bytes"}},
    "type": "m.room.message",
    "unsigned": {"age": 4612},
}

CREATE_V12: dict[str, Any] = {
    "auth_events": [],
    "content": {"room_version": "12"},
    "depth": 1,
    "hashes": {"sha256": "abc"},
    "origin_server_ts": 1700000000000,
    "prev_events": [],
    "sender": "@alice:example.com",
    "signatures": {},
    "state_key": "",
    "type": "m.room.create",
}

MESSAGE_ID_STANDARD = "$qX0V84Rlyhhyqbe6Fj06fSumMcAB0D9xPYjivHN+e5k"
MESSAGE_ID_URLSAFE = "$qX0V84Rlyhhyqbe6Fj06fSumMcAB0D9xPYjivHN-e5k"


def test_v3_uses_standard_base64() -> None:
    assert compute_event_id(MESSAGE, room_version("3")) == MESSAGE_ID_STANDARD


@pytest.mark.parametrize("version", ["4", "5", "6", "7", "8", "9", "10", "11", "12"])
def test_v4_and_later_use_urlsafe_base64(version: str) -> None:
    assert compute_event_id(MESSAGE, room_version(version)) == MESSAGE_ID_URLSAFE


def test_ids_follow_the_redaction_rules() -> None:
    with_origin = {**MESSAGE, "origin": "example.com"}
    # v10 keeps `origin` under redaction, so it is part of the reference hash; v11 drops it.
    assert compute_event_id(with_origin, room_version("10")) == (
        "$ONU0IZu4Aj4Fc0OHPvp6i-8vXADHgSQ1ueRbgU1M4Rc"
    )
    assert compute_event_id(with_origin, room_version("11")) == MESSAGE_ID_URLSAFE


def test_id_is_independent_of_redactable_parts() -> None:
    changed = {
        **MESSAGE,
        "content": {"body": "something else"},
        "unsigned": {},
        "signatures": {"other.org": {"ed25519:x": "y"}},
    }
    assert compute_event_id(changed, room_version("10")) == MESSAGE_ID_URLSAFE
    assert compute_event_id({**MESSAGE, "depth": 13}, room_version("10")) != MESSAGE_ID_URLSAFE


def test_id_matches_an_independent_computation() -> None:
    for version in KNOWN_ROOM_VERSIONS.values():
        if version.event_format is EventFormat.V1:
            continue
        digest = hashlib.sha256(reference_hash_blob(MESSAGE, version)).digest()
        assert digest == compute_reference_hash(MESSAGE, version)
        encode = (
            stdlib_base64.b64encode
            if version.event_format is EventFormat.V2
            else stdlib_base64.urlsafe_b64encode
        )
        expected = "$" + encode(digest).decode().rstrip("=")
        assert compute_event_id(MESSAGE, version) == expected


def test_v12_create_event_and_room_id() -> None:
    v12 = room_version("12")
    event = event_from_pdu(CREATE_V12, v12)
    assert event.event_id == "$arP9BP1_2g44VhummCh55KYMxt7nyFZSokfqmswWcrI"
    assert room_id_for_create_event(event.event_id) == (
        "!arP9BP1_2g44VhummCh55KYMxt7nyFZSokfqmswWcrI"
    )
    assert event.room_id == room_id_for_create_event(event.event_id)


def test_v12_create_content_is_all_protected() -> None:
    v12 = room_version("12")
    content = {
        "room_version": "12",
        "additional_creators": ["@bob:example.org"],
        "m.federate": True,
    }
    event = event_from_pdu({**CREATE_V12, "content": content}, v12)
    assert event.event_id == "$3ph1K3e0LFNYiQUCH-LEGS8dJ6t4nmhSuqsBng6ay2M"
    # Changing any create content changes the room ID.
    other = event_from_pdu({**CREATE_V12, "content": {**content, "m.federate": False}}, v12)
    assert other.room_id != event.room_id


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_take_the_event_id_from_the_pdu(version: str) -> None:
    pdu = {**MESSAGE, "event_id": "$a4ecee13e2accdadf56c1025:example.com"}
    assert compute_event_id(pdu, room_version(version)) == "$a4ecee13e2accdadf56c1025:example.com"
    event = event_from_pdu(pdu, room_version(version))
    assert event.event_id == "$a4ecee13e2accdadf56c1025:example.com"
    assert event.pdu is pdu


@pytest.mark.parametrize(
    "bad_id", [None, 5, "", "$nodomain", "no_sigil:example.com", "$:", "$" + "a" * 250 + ":x.org"]
)
def test_v1_bad_or_missing_event_ids(bad_id: Any) -> None:
    pdu = {**MESSAGE, "event_id": bad_id}
    if bad_id is None:
        del pdu["event_id"]
    with pytest.raises(EventIdError):
        compute_event_id(pdu, room_version("1"))


def test_non_object_pdus_are_rejected() -> None:
    with pytest.raises(EventIdError):
        compute_event_id([], room_version("10"))  # type: ignore[arg-type]
    with pytest.raises(EventIdError):
        event_from_pdu("x", room_version("1"))  # type: ignore[arg-type]


def test_event_id_from_reference_hash_rejects_v1() -> None:
    with pytest.raises(EventIdError):
        event_id_from_reference_hash(b"\0" * 32, room_version("2"))
    assert event_id_from_reference_hash(b"\xfb" * 32, room_version("3")).startswith("$+")
    assert event_id_from_reference_hash(b"\xfb" * 32, room_version("4")).startswith("$-")


@pytest.mark.parametrize("bad", ["", "$", "!abc", "abc", 5])
def test_room_id_for_create_event_rejects_non_event_ids(bad: Any) -> None:
    with pytest.raises(EventIdError):
        room_id_for_create_event(bad)


def test_event_accessors_on_a_computed_event() -> None:
    event = event_from_pdu(MESSAGE, room_version("10"))
    assert event.prev_event_ids == ("$prev1",)
    assert event.auth_event_ids == ("$auth1", "$auth2")
    assert event.sender == "@alice:example.com"
    assert event.room_id == "!UcYsUzyxTGDxLBEvLy:example.org"


# -- the specification's example PDUs (data/api/server-server/examples) -------------------

SPEC = Path(
    os.environ.get("MYELIN_MATRIX_SPEC", Path(__file__).resolve().parents[3] / "shared/matrix-spec")
)
EXAMPLES = SPEC / "data/api/server-server/examples"


def _merge(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Resolve the examples' `$ref` and `allOf` by shallow merging, later keys winning."""
    merged: dict[str, Any] = {}
    if "$ref" in raw:
        target = folder / raw["$ref"]
        merged.update(_merge(json.loads(target.read_text(encoding="utf-8")), target.parent))
    for part in raw.get("allOf", []):
        merged.update(_merge(part, folder))
    merged.update({k: v for k, v in raw.items() if k not in ("$ref", "allOf")})
    return merged


def spec_example(name: str) -> dict[str, Any]:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.fail(f"the Matrix specification is expected at {SPEC} (set MYELIN_MATRIX_SPEC)")
    return _merge(json.loads(path.read_text(encoding="utf-8")), path.parent)


@pytest.mark.parametrize(
    ("name", "versions"),
    [
        ("pdu_v1.json", ["1", "2"]),
        ("pdu_v3.json", ["3"]),
        ("pdu_v4.json", ["4", "5", "6", "7", "8", "9", "10"]),
        ("pdu_v11.json", ["11"]),
        ("pdu_v12.json", ["12"]),
    ],
)
def test_spec_example_pdus(name: str, versions: list[str]) -> None:
    pdu = spec_example(name)
    assert pdu["type"] == "m.room.message"
    for version_id in versions:
        version = room_version(version_id)
        event = event_from_pdu(pdu, version)
        if version.event_format is EventFormat.V1:
            assert event.event_id == "$a4ecee13e2accdadf56c1025:example.com"
            assert event.prev_event_ids == ("$af232176:example.org",)
        else:
            blob = reference_hash_blob(pdu, version)
            # The message content and `unsigned` are not covered; hashes are.
            assert b'"key"' not in blob
            assert b"unsigned" not in blob
            assert b"thishashcoversallfieldsincasethisisredacted" in blob
            digest = hashlib.sha256(blob).digest()
            encode = (
                stdlib_base64.b64encode
                if version.event_format is EventFormat.V2
                else stdlib_base64.urlsafe_b64encode
            )
            assert event.event_id == "$" + encode(digest).decode().rstrip("=")
            assert event.prev_event_ids == tuple(pdu["prev_events"])
        assert event.room_id == pdu["room_id"]
