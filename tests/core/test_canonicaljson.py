"""Canonical JSON: the examples of appendices.md byte for byte, the grammar's escapes and
key order, strict decoding with typed errors, and round-trip properties."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import random
import re
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myelin.core.canonicaljson import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    CanonicalJsonError,
    canonicalize_json,
    check_canonical_value,
    decode_canonical_json,
    encode_canonical_json,
)

SPEC = Path(
    os.environ.get("MYELIN_MATRIX_SPEC", Path(__file__).resolve().parents[3] / "shared/matrix-spec")
)


def spec_text(relative: str) -> str:
    path = SPEC / relative
    if not path.is_file():
        pytest.fail(f"the Matrix specification is expected at {SPEC} (set MYELIN_MATRIX_SPEC)")
    return path.read_text(encoding="utf-8")


def reference_encoding(value: Any) -> bytes:
    """The encoder printed in appendices.md, "Canonical JSON"."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
        "UTF-8"
    )


def spec_examples() -> list[tuple[str, str]]:
    section = spec_text("content/appendices.md").split("#### Examples", 1)[1]
    section = section.split("### Signing Details", 1)[0]
    pairs = re.findall(
        r"Given the following JSON object:\s*```json\n(.*?)```\s*"
        r"The following canonical JSON should be produced:\s*```json\n(.*?)```",
        section,
        re.S,
    )
    return [(given_json, expected.strip()) for given_json, expected in pairs]


EXAMPLES = spec_examples() if SPEC.is_dir() else []


def test_the_spec_examples_were_found() -> None:
    assert len(spec_examples()) >= 10


@pytest.mark.parametrize(("given_json", "expected"), EXAMPLES)
def test_spec_example_byte_for_byte(given_json: str, expected: str) -> None:
    assert canonicalize_json(given_json) == expected.encode("utf-8")


@pytest.mark.parametrize(("given_json", "expected"), EXAMPLES)
def test_spec_example_through_strict_decoding(given_json: str, expected: str) -> None:
    """Every example but the one with `1e10` is canonical-JSON data; that one is a float."""
    if "1e10" in given_json:
        with pytest.raises(CanonicalJsonError) as info:
            decode_canonical_json(given_json)
        assert info.value.kind == "float"
        return
    value = decode_canonical_json(given_json)
    assert encode_canonical_json(value) == expected.encode("utf-8")
    assert decode_canonical_json(expected) == value


# -- escapes and key order (appendices.md, "Grammar") -------------------------------------


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\b", b"\\b"),
        ("\t", b"\\t"),
        ("\n", b"\\n"),
        ("\f", b"\\f"),
        ("\r", b"\\r"),
        ('"', b'\\"'),
        ("\\", b"\\\\"),
        ("\x00", b"\\u0000"),
        ("\x07", b"\\u0007"),
        ("\x0b", b"\\u000b"),
        ("\x0e", b"\\u000e"),
        ("\x0f", b"\\u000f"),
        ("\x10", b"\\u0010"),
        ("\x1f", b"\\u001f"),
        ("\x7f", b"\x7f"),
        ("/", b"/"),
        ("\u2028", "\u2028".encode()),
        ("\ufeff", "\ufeff".encode()),
        ("\U0001f600", "\U0001f600".encode()),
    ],
)
def test_shortest_escapes(char: str, escaped: bytes) -> None:
    assert encode_canonical_json(char) == b'"' + escaped + b'"'


def test_every_ascii_and_control_character_matches_the_reference_encoder() -> None:
    text = "".join(chr(i) for i in range(0x100)) + "\u2028\u2029\ud7ff\ue000\uffff"
    assert encode_canonical_json(text) == reference_encoding(text)


def test_keys_are_sorted_by_code_point_not_utf16() -> None:
    # In UTF-16 order U+1F600 (a surrogate pair, D83D DE00) sorts before U+FFFF.
    value = {"\U0001f600": 1, "\uffff": 2, "\u00e9": 3, "Z": 4, "a": 5, "": 6}
    assert encode_canonical_json(value) == (
        '{"":6,"Z":4,"a":5,"é":3,"\uffff":2,"\U0001f600":1}'.encode()
    )


def test_no_insignificant_whitespace_and_literals() -> None:
    value: dict[str, Any] = {"t": True, "f": False, "n": None, "l": [1, -1, 0], "o": {}}
    assert encode_canonical_json(value) == b'{"f":false,"l":[1,-1,0],"n":null,"o":{},"t":true}'


# -- what encoding accepts and refuses ----------------------------------------------------


def test_integer_bounds() -> None:
    assert encode_canonical_json([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == (
        b"[9007199254740991,-9007199254740991]"
    )
    for bad in (MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 2**64, -(2**70)):
        with pytest.raises(CanonicalJsonError) as info:
            encode_canonical_json({"a": [bad]})
        assert info.value.kind == "integer_range"


def test_bool_is_not_an_integer() -> None:
    assert encode_canonical_json([True, False]) == b"[true,false]"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (1.0, "float"),
        ({"a": [0.5]}, "float"),
        (float("nan"), "non_finite"),
        ({"a": float("inf")}, "non_finite"),
        ([float("-inf")], "non_finite"),
        ({1: "a"}, "non_string_key"),
        ({"a": {None: 1}}, "non_string_key"),
        ("\ud800", "lone_surrogate"),
        ({"k\udfff": 1}, "lone_surrogate"),
        (b"bytes", "unsupported_type"),
        ({"a": {1, 2}}, "unsupported_type"),
        (datetime.datetime(2020, 1, 1), "unsupported_type"),
        (uuid.UUID(int=1), "unsupported_type"),
        (object(), "unsupported_type"),
    ],
)
def test_encode_refuses(value: Any, kind: str) -> None:
    with pytest.raises(CanonicalJsonError) as info:
        encode_canonical_json(value)
    assert info.value.kind == kind
    with pytest.raises(CanonicalJsonError):
        check_canonical_value(value)


def test_encode_refuses_dataclasses_and_plain_enums() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    class Colour(enum.Enum):
        RED = 1

    for value in (Point(1), Colour.RED, {"c": Colour.RED}):
        with pytest.raises(CanonicalJsonError) as info:
            encode_canonical_json(value)
        assert info.value.kind == "unsupported_type"


def test_encode_accepts_tuples_read_only_mappings_and_str_int_subclasses() -> None:
    class Level(enum.IntEnum):
        HIGH = 100

    class Name(str):
        pass

    frozen = types.MappingProxyType({"b": (1, 2), "a": types.MappingProxyType({"d": 1, "c": 2})})
    assert encode_canonical_json(frozen) == b'{"a":{"c":2,"d":1},"b":[1,2]}'
    assert encode_canonical_json({"l": Level.HIGH, "n": Name("x")}) == b'{"l":100,"n":"x"}'


def test_nesting_limit_and_cycles() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert encode_canonical_json(deep) == b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    with pytest.raises(CanonicalJsonError) as info:
        encode_canonical_json([deep])
    assert info.value.kind == "too_deep"
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(CanonicalJsonError) as info:
        encode_canonical_json({"a": cyclic})
    assert info.value.kind == "too_deep"


def test_check_canonical_value_accepts_valid_values() -> None:
    check_canonical_value({"a": [1, "b", None, True, {"c": -MAX_SAFE_INTEGER}]})


# -- strict decoding -----------------------------------------------------------------------


def test_decode_accepts_any_layout_and_negative_zero() -> None:
    text = b' {\n "b" : [ 1 , -0 ,\t"x" ] ,"a":{ } }\r\n'
    assert decode_canonical_json(text) == {"a": {}, "b": [1, 0, "x"]}
    assert decode_canonical_json(text.decode()) == {"a": {}, "b": [1, 0, "x"]}
    assert decode_canonical_json(bytearray(b"[1]")) == [1]
    assert decode_canonical_json(memoryview(b'"s"')) == "s"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"1.5", "float"),
        (b'{"a":1.0}', "float"),
        (b"[1e5]", "float"),
        (b"[1E5]", "float"),
        (b"-0.0", "float"),
        (b"[2.5e-3]", "float"),
        (b"NaN", "non_finite"),
        (b'{"a":Infinity}', "non_finite"),
        (b"[-Infinity]", "non_finite"),
        ('{"日本語":[NaN]}'.encode(), "non_finite"),
        (b"9007199254740992", "integer_range"),
        (b"-9007199254740992", "integer_range"),
        (b'{"ts":18446744073709551616}', "integer_range"),
        (b"[-99999999999999999999999]", "integer_range"),
        (b'{"a":1,"a":2}', "duplicate_key"),
        (b'{"a":1,"a":1}', "duplicate_key"),
        (b'{"x":{"k":"v","k":"w"}}', "duplicate_key"),
        (b'[{"a":1},{"b":{"c":[],"c":{}}}]', "duplicate_key"),
        (b'{"a":1,"\\u0061":2}', "duplicate_key"),
        (b'{"q\\"":1,"q\\"":2}', "duplicate_key"),
        (b'{"q\\\\":1,"q\\\\":2}', "duplicate_key"),
        (b'"\xff"', "invalid_utf8"),
        (b'"\xc0\xaf"', "invalid_utf8"),
        (b'"\xed\xa0\x80"', "invalid_utf8"),
        (b'{"a":"\xe6\x97"}', "invalid_utf8"),
        (b'"\\ud800"', "lone_surrogate"),
        (b'"\\udc00"', "lone_surrogate"),
        (b'"\\ud800\\u0041"', "lone_surrogate"),
        (b"", "syntax"),
        (b"[1,]", "syntax"),
        (b"{'a':1}", "syntax"),
        (b"[01]", "syntax"),
        (b'{"a"}', "syntax"),
        (b"[1] [2]", "syntax"),
        (b"[1] // comment", "syntax"),
        (b'"\x01"', "syntax"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too_deep"),
        (b"[" * 2000 + b"]" * 2000, "too_deep"),
    ],
)
def test_decode_refuses(data: bytes, kind: str) -> None:
    with pytest.raises(CanonicalJsonError) as info:
        decode_canonical_json(data)
    assert info.value.kind == kind, str(info.value)


def test_decode_refuses_lone_surrogate_in_str_input() -> None:
    with pytest.raises(CanonicalJsonError) as info:
        decode_canonical_json('["\ud800"]')
    assert info.value.kind == "lone_surrogate"


def test_decode_refuses_non_json_input_types() -> None:
    with pytest.raises(TypeError):
        decode_canonical_json(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b'{"a\\\\":"\\"","b":"\\\\\\"","c\\"":"x\\\\"}',
        b'{"a":"\\\\","b":"\\\\\\\\\\"","\\\\\\"":"\\""}',
        b'{"a":"b","\\"a":"b\\"","a\\"":"\\"b"}',
        b'{"k":":","l":"\\":\\"","m":{"\\"":"\\\\"}}',
        b'["\\u0022","\\u005c","\\"\\"\\""]',
    ],
)
def test_escaped_quotes_and_backslashes_are_not_mistaken_for_duplicates(data: bytes) -> None:
    assert decode_canonical_json(data) == json.loads(data)


def test_maximum_nesting_decodes() -> None:
    data = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert encode_canonical_json(decode_canonical_json(data)) == data


def test_canonicalize_accepts_integral_numbers_only() -> None:
    assert canonicalize_json(b'{"b":2.0,"a":-1e3}') == b'{"a":-1000,"b":2}'
    with pytest.raises(CanonicalJsonError) as info:
        canonicalize_json(b"[1.5]")
    assert info.value.kind == "float"
    with pytest.raises(CanonicalJsonError) as info:
        canonicalize_json(b"[1e300]")
    assert info.value.kind == "integer_range"
    with pytest.raises(CanonicalJsonError) as info:
        canonicalize_json(b"[nan]")
    assert info.value.kind == "syntax"


# -- properties ----------------------------------------------------------------------------

safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
texts = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(['"', "\\", ":", "\x00", "\x1f", "\x7f", "\U0001f600"]),
    )
)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | texts,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=20,
)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same value with every object's keys inserted in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_encoding_matches_the_spec_reference_encoder(value: Any) -> None:
    assert encode_canonical_json(value) == reference_encoding(value)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_decode_of_encode_is_identity(value: Any) -> None:
    encoded = encode_canonical_json(value)
    assert decode_canonical_json(encoded) == value
    assert encode_canonical_json(decode_canonical_json(encoded)) == encoded


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_non_canonical_layouts_decode_to_the_same_value(value: Any) -> None:
    for text in (
        json.dumps(value, indent=2, ensure_ascii=True),
        json.dumps(value, separators=(" , ", " : "), ensure_ascii=False),
    ):
        assert decode_canonical_json(text) == value
        assert decode_canonical_json(text.encode()) == value


@settings(max_examples=100, deadline=None)
@given(json_values, st.randoms(use_true_random=False))
def test_encoding_ignores_key_insertion_order(value: Any, rng: random.Random) -> None:
    assert encode_canonical_json(shuffled(value, rng)) == encode_canonical_json(value)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(texts, json_values, min_size=1, max_size=5), st.data())
def test_a_repeated_key_is_always_found(obj: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(obj)))
    again = data.draw(json_values)
    members = [json.dumps(k) + ":" + json.dumps(v) for k, v in obj.items()]
    members.insert(
        data.draw(st.integers(0, len(members))), json.dumps(key) + ":" + json.dumps(again)
    )
    with pytest.raises(CanonicalJsonError) as info:
        decode_canonical_json("{" + ",".join(members) + "}")
    assert info.value.kind == "duplicate_key"


@settings(max_examples=40, deadline=None)
@given(json_values, st.sampled_from([0.5, -1.25, 1e100, float("nan"), 2**53, -(2**53)]))
def test_one_bad_number_anywhere_is_refused(value: Any, bad: Any) -> None:
    wrapped = {"v": value, "bad": [bad]}
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json(wrapped)


@pytest.mark.parametrize(
    ("data", "errcode"),
    [
        (b"{", "M_NOT_JSON"),
        (b'"\xff"', "M_NOT_JSON"),
        (b"[NaN]", "M_NOT_JSON"),
        (b"[1.5]", "M_BAD_JSON"),
        (b'{"a":1,"a":1}', "M_BAD_JSON"),
        (b"[9007199254740992]", "M_BAD_JSON"),
        (b'"\\ud800"', "M_NOT_JSON"),
        (b"[" * 300 + b"]" * 300, "M_BAD_JSON"),
    ],
)
def test_matrix_error_codes(data: bytes, errcode: str) -> None:
    with pytest.raises(CanonicalJsonError) as info:
        decode_canonical_json(data)
    assert info.value.errcode == errcode


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_arbitrary_bytes_decode_or_raise_canonical_json_error(data: bytes) -> None:
    try:
        value = decode_canonical_json(data)
    except CanonicalJsonError:
        return
    assert encode_canonical_json(value) == encode_canonical_json(json.loads(data))
