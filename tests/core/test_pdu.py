"""PDU format checks per room version, with the specification's pdu_v* examples as valid
samples and one broken variant per rule."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myelin.core.canonicaljson import encode_canonical_json
from myelin.core.pdu import (
    MAX_AUTH_EVENTS,
    MAX_PDU_BYTES,
    MAX_PREV_EVENTS,
    InvalidPdu,
    check_pdu,
)
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, RoomVersion, room_version

SPEC = Path(
    os.environ.get("MYELIN_MATRIX_SPEC", Path(__file__).resolve().parents[3] / "shared/matrix-spec")
)
EXAMPLES = SPEC / "data/api/server-server/examples"


def load_example(name: str) -> dict[str, Any]:
    """An example of the spec with its `$ref`/`allOf` resolved (a shallow merge, as the
    spec's own renderer does)."""
    path = EXAMPLES / name
    if not path.is_file():
        pytest.fail(f"the Matrix specification is expected at {SPEC} (set MYELIN_MATRIX_SPEC)")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return _resolve(raw, path.parent)


def _resolve(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for part in raw.get("allOf", []):
        result.update(_resolve(part, base))
    if "$ref" in raw:
        ref = base / raw["$ref"]
        result.update(_resolve(json.loads(ref.read_text(encoding="utf-8")), ref.parent))
    result.update({k: v for k, v in raw.items() if k not in ("allOf", "$ref")})
    return result


VERSIONS_BY_EXAMPLE = {
    "pdu_v1.json": ["1", "2"],
    "pdu_v3.json": ["3"],
    "pdu_v4.json": ["4", "5", "6", "7", "8", "9", "10"],
    "pdu_v4_join_membership.json": ["4", "5", "6", "7", "8", "9", "10", "11"],
    "pdu_v11.json": ["11"],
    "pdu_v12.json": ["12"],
}

V1 = room_version("1")
V3 = room_version("3")
V4 = room_version("4")
V5 = room_version("5")
V6 = room_version("6")
V11 = room_version("11")
V12 = room_version("12")
ROOM_HASH = "Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"


def sample(version: RoomVersion) -> dict[str, Any]:
    """A valid PDU of the version's format, from the spec's examples."""
    name = {
        "1": "pdu_v1.json",
        "2": "pdu_v1.json",
        "3": "pdu_v3.json",
        "11": "pdu_v11.json",
        "12": "pdu_v12.json",
    }.get(version.identifier, "pdu_v4.json")
    return load_example(name)


ALL_VERSIONS = sorted(KNOWN_ROOM_VERSIONS.values(), key=lambda v: int(v.identifier))


def ids(versions: list[RoomVersion]) -> list[str]:
    return ["v" + v.identifier for v in versions]


def assert_invalid(pdu: Any, version: RoomVersion, field: str | None) -> InvalidPdu:
    with pytest.raises(InvalidPdu) as info:
        check_pdu(pdu, version)
    assert info.value.field == field, str(info.value)
    assert isinstance(info.value, ValueError)
    return info.value


# -- the spec's examples are valid ---------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "version"),
    [(name, v) for name, versions in VERSIONS_BY_EXAMPLE.items() for v in versions],
)
def test_spec_example_is_valid(example: str, version: str) -> None:
    check_pdu(load_example(example), room_version(version))


@pytest.mark.parametrize(
    ("example", "version", "field"),
    [
        ("pdu_v1.json", "3", "prev_events"),  # pairs are not event IDs
        ("pdu_v1.json", "4", "prev_events"),
        ("pdu_v3.json", "1", "event_id"),  # v1 events carry their ID
        ("pdu_v4.json", "3", "prev_events"),  # '_' is not standard base64
        ("pdu_v4.json", "12", "room_id"),  # a domain in a v12 room ID
        ("pdu_v12.json", "11", "room_id"),  # a v11 room ID has a domain
    ],
)
def test_example_of_another_format_is_invalid(example: str, version: str, field: str) -> None:
    pdu = load_example(example)
    assert_invalid(pdu, room_version(version), field)


# -- required keys and their types ---------------------------------------------------------

REQUIRED = ["sender", "origin_server_ts", "type", "content", "depth", "hashes", "signatures"]
REQUIRED += ["prev_events", "auth_events"]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
@pytest.mark.parametrize("key", [*REQUIRED, "room_id", "event_id"])
def test_required_keys(version: RoomVersion, key: str) -> None:
    pdu = sample(version)
    pdu.pop(key, None)
    if key == "event_id" and version.identifier not in ("1", "2"):
        check_pdu(pdu, version)  # hash-identified events carry no event_id
        return
    assert_invalid(pdu, version, key)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("sender", 1),
    ("sender", None),
    ("type", ["m.room.message"]),
    ("room_id", {"id": "!a:b"}),
    ("origin_server_ts", "1404838188000"),
    ("origin_server_ts", 1.5),
    ("origin_server_ts", True),
    ("depth", "12"),
    ("depth", False),
    ("depth", 12.0),
    ("content", "text"),
    ("content", []),
    ("content", None),
    ("hashes", "abc"),
    ("signatures", []),
    ("prev_events", {"$a": 1}),
    ("auth_events", "$a"),
    ("state_key", 0),
    ("state_key", None),
    ("unsigned", []),
]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
@pytest.mark.parametrize(("key", "value"), WRONG_TYPES)
def test_wrong_json_types(version: RoomVersion, key: str, value: Any) -> None:
    pdu = sample(version)
    pdu[key] = value
    assert_invalid(pdu, version, key)


def test_not_an_object() -> None:
    values: list[Any] = [[], "pdu", None, 3]
    for value in values:
        assert_invalid(value, V11, None)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_hashes_and_signatures_shape(version: RoomVersion) -> None:
    for hashes in ({}, {"sha256": 1}, {"sha512": "x"}):
        pdu = sample(version)
        pdu["hashes"] = hashes
        assert_invalid(pdu, version, "hashes")
    for signatures in ({"example.com": "sig"}, {"example.com": {"ed25519:1": 5}}):
        pdu = sample(version)
        pdu["signatures"] = signatures
        assert_invalid(pdu, version, "signatures")
    pdu = sample(version)
    pdu["signatures"] = {}
    pdu["hashes"] = {"sha256": "x", "other": 1}
    check_pdu(pdu, version)


def test_redacts_is_a_string_before_v11_only() -> None:
    for version in (V1, V3, V4, room_version("10")):
        pdu = sample(version)
        pdu["redacts"] = 5
        assert_invalid(pdu, version, "redacts")
    pdu = sample(V11)
    pdu["redacts"] = 5  # not part of the v11 format: ignored here
    check_pdu(pdu, V11)


# -- prev_events / auth_events -------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
@pytest.mark.parametrize(("key", "limit"), [("prev_events", 20), ("auth_events", 10)])
def test_reference_count_limits(version: RoomVersion, key: str, limit: int) -> None:
    assert (MAX_PREV_EVENTS, MAX_AUTH_EVENTS) == (20, 10)
    pdu = sample(version)
    one = pdu[key][0]
    pdu[key] = [one] * limit
    check_pdu(pdu, version)
    pdu[key] = [one] * (limit + 1)
    assert_invalid(pdu, version, key)
    pdu[key] = []
    check_pdu(pdu, version)


@pytest.mark.parametrize(
    "ref",
    [
        "$a:example.com",  # a bare ID, not a pair
        ["$a:example.com"],
        ["$a:example.com", {"sha256": "h"}, "extra"],
        ["$a:example.com", "hash"],
        ["$a:example.com", {"sha256": 3}],
        [5, {"sha256": "h"}],
        ["$noserver", {"sha256": "h"}],
        ["a:example.com", {"sha256": "h"}],
    ],
)
def test_v1_reference_pairs(ref: Any) -> None:
    pdu = sample(V1)
    pdu["auth_events"] = [ref]
    assert_invalid(pdu, V1, "auth_events")


def test_v1_reference_pair_with_empty_hash_object() -> None:
    """The hash of a v1 reference is never checked; Sytest sends `{}` (Synapse takes it)."""
    pdu = sample(V1)
    pdu["prev_events"] = [["$a:example.com", {}]]
    check_pdu(pdu, V1)


@pytest.mark.parametrize(
    ("version", "ref"),
    [
        (V3, ["$a", {"sha256": "h"}]),
        (V3, "$a:example.com"),
        (V3, "$has-dash_"),
        (V3, "no-sigil"),
        (V3, 7),
        (V4, "$has/slash+plus"),
        (V4, "$a:example.com"),
        (V4, "$"),
        (V12, "$with space"),
        (V12, None),
    ],
)
def test_hash_format_references(version: RoomVersion, ref: Any) -> None:
    pdu = sample(version)
    pdu["prev_events"] = [ref]
    assert_invalid(pdu, version, "prev_events")


# -- depth and integer ranges --------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_depth_range(version: RoomVersion) -> None:
    limit = 2**53 - 1 if version.strict_canonical_json else 2**63 - 1
    pdu = sample(version)
    for ok in (0, 1, limit):
        pdu["depth"] = ok
        check_pdu(pdu, version)
    for bad in (-1, limit + 1):
        pdu["depth"] = bad
        assert_invalid(pdu, version, "depth")


def test_depth_limit_changes_at_v6() -> None:
    pdu = sample(V5)
    pdu["depth"] = 2**60
    check_pdu(pdu, V5)
    pdu = sample(V6)
    pdu["depth"] = 2**60
    assert_invalid(pdu, V6, "depth")


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
@pytest.mark.parametrize("bad", [2**53, -(2**53), 0.5, 1e20, float("nan")])
def test_content_numbers_are_strict_from_v6(version: RoomVersion, bad: Any) -> None:
    pdu = sample(version)
    pdu["content"] = {"body": "x", "n": {"deep": [bad]}}
    if version.strict_canonical_json:
        error = assert_invalid(pdu, version, None)
        assert "canonical" in error.reason
    else:
        check_pdu(pdu, version)  # v1-v5 rooms may hold such values


def test_origin_server_ts_range() -> None:
    pdu = sample(V5)
    pdu["origin_server_ts"] = 2**63
    assert_invalid(pdu, V5, "origin_server_ts")
    pdu["origin_server_ts"] = -(2**63)
    check_pdu(pdu, V5)
    pdu = sample(V6)
    pdu["origin_server_ts"] = 2**53
    assert_invalid(pdu, V6, None)


def test_values_canonical_json_cannot_hold_are_refused_in_every_version() -> None:
    for version in (V1, V5, V12):
        pdu = sample(version)
        pdu["content"] = {"bad": "\ud800"}
        assert_invalid(pdu, version, None)
        pdu["content"] = {"bad": {1: 2}}
        assert_invalid(pdu, version, None)
        pdu["content"] = {"bad": b"bytes"}
        assert_invalid(pdu, version, None)


# -- size limits ---------------------------------------------------------------------------


def padded_to(pdu: dict[str, Any], size: int) -> dict[str, Any]:
    """The PDU with `content.pad` grown so that its canonical JSON is `size` bytes."""
    pdu = copy.deepcopy(pdu)
    pdu["content"]["pad"] = ""
    base = len(encode_canonical_json(pdu))
    pdu["content"]["pad"] = "x" * (size - base)
    assert len(encode_canonical_json(pdu)) == size
    return pdu


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_65536_byte_limit_counts_everything(version: RoomVersion) -> None:
    check_pdu(padded_to(sample(version), MAX_PDU_BYTES), version)
    error = assert_invalid(padded_to(sample(version), MAX_PDU_BYTES + 1), version, None)
    assert "65536" in error.reason
    # Signatures and unsigned data count too.
    pdu = padded_to(sample(version), MAX_PDU_BYTES)
    pdu["unsigned"] = {"age": 46120}
    assert_invalid(pdu, version, None)


def test_size_is_measured_in_utf8_bytes() -> None:
    pdu = padded_to(sample(V11), MAX_PDU_BYTES - 1)
    pdu["content"]["pad"] = pdu["content"]["pad"][:-1] + "é"  # one char, two bytes
    check_pdu(pdu, V11)
    pdu["content"]["pad"] = pdu["content"]["pad"][:-1] + "日"  # three bytes instead of two
    assert_invalid(pdu, V11, None)


def test_v1_to_v5_numbers_count_towards_size() -> None:
    pdu = padded_to(sample(V5), MAX_PDU_BYTES)
    pdu["content"]["f"] = 0.5
    assert_invalid(pdu, V5, None)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
@pytest.mark.parametrize("key", ["type", "state_key"])
def test_type_and_state_key_at_most_255_bytes(version: RoomVersion, key: str) -> None:
    pdu = sample(version)
    pdu[key] = "t" * 255
    check_pdu(pdu, version)
    pdu[key] = "é" * 127 + "t"  # 255 bytes
    check_pdu(pdu, version)
    pdu[key] = "é" * 128  # 128 characters, 256 bytes
    assert_invalid(pdu, version, key)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_sender_at_most_255_bytes(version: RoomVersion) -> None:
    pdu = sample(version)
    pdu["sender"] = "@" + "a" * 242 + ":example.com"
    check_pdu(pdu, version)
    pdu["sender"] = "@" + "a" * 243 + ":example.com"
    assert_invalid(pdu, version, "sender")


def test_room_id_and_event_id_at_most_255_bytes() -> None:
    pdu = sample(V1)
    pdu["room_id"] = "!" + "r" * 242 + ":example.com"
    pdu["event_id"] = "$" + "e" * 242 + ":example.com"
    check_pdu(pdu, V1)
    for key in ("room_id", "event_id"):
        broken = dict(pdu)
        broken[key] = broken[key][0] + "x" + broken[key][1:]
        assert_invalid(broken, V1, key)


# -- sender --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_sender_grammar(version: RoomVersion) -> None:
    pdu = sample(version)
    pdu["sender"] = "@Historical User!:example.com"  # servers must accept these in events
    check_pdu(pdu, version)
    for bad in ("alice:example.com", "@alice", "@alice:bad host", "@a\x00b:example.com", ""):
        pdu["sender"] = bad
        assert_invalid(pdu, version, "sender")


# -- room IDs ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS[:-1], ids=ids(ALL_VERSIONS[:-1]))
def test_room_id_before_v12_has_a_domain(version: RoomVersion) -> None:
    pdu = sample(version)
    for bad in ("!" + ROOM_HASH, "!:example.org", "!abc:bad host", "#abc:example.org", "abc"):
        pdu["room_id"] = bad
        assert_invalid(pdu, version, "room_id")
    pdu["type"] = "m.room.create"
    pdu["state_key"] = ""
    del pdu["room_id"]
    assert_invalid(pdu, version, "room_id")  # create events have one before v12


def test_v12_room_id_is_a_create_event_hash() -> None:
    pdu = sample(V12)
    check_pdu(pdu, V12)
    for bad in (
        "!UcYsUzyxTGDxLBEvLy:example.org",
        "!" + ROOM_HASH[:-1],
        "!" + ROOM_HASH[:-1] + "B",  # 43 characters that are not base64 of 32 bytes
        "!" + ROOM_HASH.replace("-", "+"),
        "$" + ROOM_HASH,
    ):
        pdu["room_id"] = bad
        assert_invalid(pdu, V12, "room_id")


def test_v12_create_event_has_no_room_id() -> None:
    pdu = sample(V12)
    pdu.update(type="m.room.create", state_key="", prev_events=[], auth_events=[])
    pdu["content"] = {"room_version": "12"}
    assert_invalid(pdu, V12, "room_id")
    del pdu["room_id"]
    check_pdu(pdu, V12)
    # Only the create event may omit it.
    pdu["type"] = "m.room.member"
    assert_invalid(pdu, V12, "room_id")


def test_event_id_is_checked_in_v1_format_only() -> None:
    pdu = sample(V1)
    for bad in ("$nodomain", "a:example.com", "$:example.com", "$a:bad host", 5):
        pdu["event_id"] = bad
        assert_invalid(pdu, V1, "event_id")


def test_check_pdu_does_not_change_its_input() -> None:
    for version in ALL_VERSIONS:
        pdu = sample(version)
        before = copy.deepcopy(pdu)
        check_pdu(pdu, version)
        assert pdu == before


def test_v1_to_v5_lenient_numbers_do_not_let_other_garbage_through() -> None:
    for content in ({"f": 0.5, "s": {("a", 1)}}, {"f": 0.5, "s": "\udc00"}, {"f": 0.5, 1: 2}):
        pdu = sample(V5)
        pdu["content"] = content
        assert_invalid(pdu, V5, None)


# -- robustness: anything else gets InvalidPdu, never another exception --------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ALL_VERSIONS),
    st.sampled_from([*REQUIRED, "room_id", "event_id", "state_key", "unsigned", "redacts", "x"]),
    json_values,
)
def test_any_value_in_any_key_is_accepted_or_invalid_pdu(
    version: RoomVersion, key: str, value: Any
) -> None:
    pdu = sample(version)
    pdu[key] = value
    with contextlib.suppress(InvalidPdu):
        check_pdu(pdu, version)
