"""Signing keys, signed JSON and unpadded Base64, with the vectors of appendices.md."""

from __future__ import annotations

import base64 as stdlib_base64
import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myelin.core.base64 import (
    Base64Error,
    decode_base64,
    decode_urlsafe_base64,
    encode_base64,
    encode_urlsafe_base64,
)
from myelin.core.signing import (
    KeyFormatError,
    SignatureError,
    SigningKey,
    decode_signing_key,
    decode_signing_keys,
    decode_verify_key,
    encode_verify_key,
    sign_json,
    verify_json,
    verify_signed_by,
)

SEED_B64 = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = SigningKey.from_seed(decode_base64(SEED_B64), "1")


# -- unpadded Base64 (appendices.md, "Unpadded Base64") ------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
    ],
)
def test_base64_spec_examples(raw: bytes, encoded: str) -> None:
    assert encode_base64(raw) == encoded
    assert decode_base64(encoded) == raw
    assert encode_urlsafe_base64(raw) == encoded
    assert decode_urlsafe_base64(encoded) == raw


def test_base64_decoding_accepts_padding() -> None:
    assert decode_base64("Zg==") == b"f"
    assert decode_base64("Zm8=") == b"fo"
    assert decode_urlsafe_base64("Zm8=") == b"fo"


def test_base64_alphabets_differ_in_62_and_63() -> None:
    data = bytes([0xFB, 0xFF, 0xBF])
    assert encode_base64(data) == "+/+/"
    assert encode_urlsafe_base64(data) == "-_-_"
    assert decode_base64("+/+/") == data
    assert decode_urlsafe_base64("-_-_") == data


def test_base64_matches_stdlib_on_all_lengths() -> None:
    data = bytes(range(256)) * 2
    for n in range(70):
        chunk = data[n : n * 7 + 1]
        assert encode_base64(chunk) == stdlib_base64.b64encode(chunk).decode().rstrip("=")
        assert encode_urlsafe_base64(chunk) == stdlib_base64.urlsafe_b64encode(
            chunk
        ).decode().rstrip("=")
        assert decode_base64(encode_base64(chunk)) == chunk
        assert decode_urlsafe_base64(encode_urlsafe_base64(chunk)) == chunk


@pytest.mark.parametrize(
    "bad", ["Z", "Zg=", "Z===", "Zm9v!", "Zm 9v", "Zm9v\n", "é", "Zg==Zg", "-_-_", "Zg==="]
)
def test_base64_rejects_malformed_standard(bad: str) -> None:
    with pytest.raises(Base64Error):
        decode_base64(bad)


@pytest.mark.parametrize("bad", ["+/+/", "a", "ab$c"])
def test_base64_rejects_malformed_urlsafe(bad: str) -> None:
    with pytest.raises(Base64Error):
        decode_urlsafe_base64(bad)


def test_base64_rejects_non_strings() -> None:
    with pytest.raises(Base64Error):
        decode_base64(123)  # type: ignore[arg-type]


# -- keys --------------------------------------------------------------------------------


def test_key_id_and_file_form_round_trip() -> None:
    assert KEY.key_id == "ed25519:1"
    # The spec's seed string has non-zero trailing bits (`...XA1`); decoding is lenient
    # about them, encoding writes the canonical form (`...XA0`).
    assert KEY.encode() == f"ed25519 1 {SEED_B64[:-1]}0"
    again = decode_signing_key(KEY.encode())
    assert again.version == "1"
    assert again.seed == KEY.seed
    assert again.verify_key == KEY.verify_key


def test_verify_key_base64_round_trip() -> None:
    encoded = KEY.verify_key_base64
    assert len(encoded) == 43
    assert encode_verify_key(KEY.verify_key) == encoded
    assert decode_verify_key(encoded) == KEY.verify_key


def test_generated_keys_differ_and_sign() -> None:
    a = SigningKey.generate("a_1")
    b = SigningKey.generate("a_1")
    assert a.seed != b.seed
    signed = sign_json({"x": 1}, "s", a)
    verify_json(signed, "s", "ed25519:a_1", a.verify_key)
    with pytest.raises(SignatureError):
        verify_json(signed, "s", "ed25519:a_1", b.verify_key)


def test_key_file_with_several_lines() -> None:
    other = SigningKey.generate("2")
    keys = decode_signing_keys(f"{KEY.encode()}\n\n{other.encode()}\n")
    assert [k.key_id for k in keys] == ["ed25519:1", "ed25519:2"]
    assert keys[1].seed == other.seed


def test_repr_hides_the_seed() -> None:
    assert SEED_B64 not in repr(KEY)
    assert KEY.verify_key_base64 in repr(KEY)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ed25519 1",
        f"rsa 1 {SEED_B64}",
        f"ed25519 a:b {SEED_B64}",
        "ed25519 1 notbase64!",
        "ed25519 1 Zm9v",  # 3 bytes, not a 32-byte seed
        f"ed25519 1 {SEED_B64} extra",
    ],
)
def test_bad_key_lines_are_rejected(line: str) -> None:
    with pytest.raises(KeyFormatError):
        decode_signing_key(line)


def test_bad_versions_and_seeds_are_rejected() -> None:
    with pytest.raises(KeyFormatError):
        SigningKey.generate("")
    with pytest.raises(KeyFormatError):
        SigningKey.from_seed(b"short", "1")
    with pytest.raises(KeyFormatError):
        decode_verify_key("Zm9v")
    with pytest.raises(KeyFormatError):
        decode_verify_key("**")


# -- the JSON signing vectors (appendices.md, "JSON Signing") ----------------------------


def test_vector_empty_object() -> None:
    assert sign_json({}, "domain", KEY) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/"
                "7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_vector_object_with_data() -> None:
    assert sign_json({"one": 1, "two": "Two"}, "domain", KEY) == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZ"
                "hG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }


# -- sign_json / verify_json -------------------------------------------------------------


def test_unsigned_and_signatures_are_not_covered() -> None:
    signed = sign_json({"a": 1, "unsigned": {"age": 5}}, "domain", KEY)
    assert signed["unsigned"] == {"age": 5}
    # The same signature as without `unsigned`.
    assert signed["signatures"] == sign_json({"a": 1}, "domain", KEY)["signatures"]
    changed = {**signed, "unsigned": {"age": 99}}
    verify_json(changed, "domain", "ed25519:1", KEY.verify_key)


def test_sign_json_does_not_mutate_and_keeps_other_signatures() -> None:
    other = SigningKey.generate("x")
    original = {"a": [1, 2], "signatures": {"other.org": {"ed25519:x": "sig"}}}
    before = copy.deepcopy(original)
    first = sign_json(original, "other.org", other)
    assert original == before
    both = sign_json(first, "domain", KEY)
    assert first["signatures"].keys() == {"other.org"}
    assert set(both["signatures"]) == {"other.org", "domain"}
    verify_json(both, "other.org", "ed25519:x", other.verify_key)
    verify_json(both, "domain", "ed25519:1", KEY.verify_key)


def test_two_keys_of_one_server() -> None:
    second = SigningKey.generate("2")
    signed = sign_json(sign_json({"m": "x"}, "domain", KEY), "domain", second)
    assert set(signed["signatures"]["domain"]) == {"ed25519:1", "ed25519:2"}
    verify_json(signed, "domain", "ed25519:1", KEY.verify_key)
    verify_json(signed, "domain", "ed25519:2", second.verify_key)
    verify_signed_by(
        signed, "domain", {"ed25519:1": KEY.verify_key, "ed25519:2": second.verify_key}
    )


def test_resigning_with_same_key_replaces_signature() -> None:
    signed = sign_json({"a": 1}, "domain", KEY)
    resigned = sign_json({**signed, "a": 2}, "domain", KEY)
    assert (
        resigned["signatures"]["domain"]["ed25519:1"] != signed["signatures"]["domain"]["ed25519:1"]
    )
    verify_json(resigned, "domain", "ed25519:1", KEY.verify_key)


def test_tampering_is_detected() -> None:
    signed = sign_json({"one": 1, "two": "Two"}, "domain", KEY)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_json({**signed, "one": 2}, "domain", "ed25519:1", KEY.verify_key)
    with pytest.raises(SignatureError):
        verify_json({**signed, "three": 3}, "domain", "ed25519:1", KEY.verify_key)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"a": 1}, "no `signatures`"),
        ({"signatures": {}}, "not signed by domain"),
        ({"signatures": {"domain": "x"}}, "not signed by domain"),
        ({"signatures": {"domain": {}}}, "no signature by domain"),
        ({"signatures": {"domain": {"ed25519:1": 5}}}, "Base64 string"),
        ({"signatures": {"domain": {"ed25519:1": "!!"}}}, "not Base64"),
        ({"signatures": {"domain": {"ed25519:1": "Zm9v"}}}, "64 bytes"),
    ],
)
def test_missing_or_malformed_signatures(obj: dict[str, object], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_json(obj, "domain", "ed25519:1", KEY.verify_key)


def test_wrong_verify_key_length() -> None:
    signed = sign_json({}, "domain", KEY)
    with pytest.raises(SignatureError, match="32 bytes"):
        verify_json(signed, "domain", "ed25519:1", b"short")


def test_verify_signed_by_skips_unknown_and_requires_one_known() -> None:
    signed = sign_json({"a": 1}, "domain", KEY)
    signed["signatures"]["domain"]["ed25519:old"] = "garbage"
    signed["signatures"]["domain"]["curve25519:1"] = "garbage"
    verify_signed_by(signed, "domain", {"ed25519:1": KEY.verify_key})
    with pytest.raises(SignatureError, match="known key"):
        verify_signed_by(signed, "domain", {"ed25519:2": KEY.verify_key})
    with pytest.raises(SignatureError, match="ed25519:old"):
        verify_signed_by(
            signed, "domain", {"ed25519:1": KEY.verify_key, "ed25519:old": KEY.verify_key}
        )


# -- properties --------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6)


# No deadlines: the suite shares two cores with others, and timing is not what is tested.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RELAXED
@given(st.binary(max_size=200))
def test_base64_round_trips_and_matches_stdlib(data: bytes) -> None:
    encoded = encode_base64(data)
    assert encoded == stdlib_base64.b64encode(data).decode().rstrip("=")
    assert decode_base64(encoded) == data
    assert decode_urlsafe_base64(encode_urlsafe_base64(data)) == data


@settings(RELAXED, max_examples=60)
@given(JSON_OBJECTS)
def test_sign_then_verify_any_object(obj: dict[str, object]) -> None:
    signed = sign_json(obj, "domain", KEY)
    verify_json(signed, "domain", "ed25519:1", KEY.verify_key)
    tampered = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
    tampered["__extra__"] = 1
    tampered["signatures"] = signed["signatures"]
    with pytest.raises(SignatureError):
        verify_json(tampered, "domain", "ed25519:1", KEY.verify_key)
