"""Canonical JSON (appendices.md, "Canonical JSON"): the byte form that is hashed and signed.

Canonical JSON is the shortest UTF-8 encoding with object keys sorted by code point, and
its values are restricted: numbers are integers in `[-(2**53)+1, (2**53)-1]`, no floats,
no NaN or infinities. orjson with sorted keys produces exactly these bytes (the same
escapes as the specification's reference encoder: `\\b \\t \\n \\f \\r \\" \\\\`, lowercase
`\\u00XX` for the other control characters, everything else raw UTF-8), so encoding is
orjson plus a check of the value model, and decoding is orjson plus the same check.

The check is one pass over the parsed value in Python; everything else (UTF-8 validity,
lone surrogates, syntax, NaN/Infinity literals, non-string keys) is left to orjson, which
rejects those anyway. Duplicate object keys, which orjson silently collapses, are found
without another pass: the check counts the strings (keys and values) that survived
parsing, and the raw text's count of string tokens is known from its quote characters;
the two differ exactly when a duplicate key was dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer canonical JSON allows; the smallest is its negation."""

MAX_DEPTH = 254
"""The deepest nesting of arrays and objects that is accepted (orjson encodes no deeper)."""

CanonicalJsonErrorKind = Literal[
    "syntax",
    "invalid_utf8",
    "lone_surrogate",
    "non_finite",
    "float",
    "integer_range",
    "duplicate_key",
    "non_string_key",
    "unsupported_type",
    "too_deep",
]


class CanonicalJsonError(ValueError):
    """JSON that cannot be canonical JSON; `kind` says why, for machines (one of
    `CanonicalJsonErrorKind`), the message says why, for people."""

    def __init__(self, kind: CanonicalJsonErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: CanonicalJsonErrorKind = kind

    @property
    def errcode(self) -> str:
        """The Matrix error code for a request body that failed this way: `M_NOT_JSON`
        when the bytes are not JSON text (a lone surrogate cannot be UTF-8, so it counts
        as such), `M_BAD_JSON` when they are JSON that canonical JSON does not allow."""
        return "M_NOT_JSON" if self.kind in _NOT_JSON_KINDS else "M_BAD_JSON"


_NOT_JSON_KINDS = frozenset({"syntax", "invalid_utf8", "lone_surrogate", "non_finite"})


_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_STRICT_INTEGER
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


def _to_builtin(value: Any) -> Any:
    """orjson's `default`: the container types the checker accepts beyond dict/list."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"type {type(value).__name__} is not JSON")


def _count_strings(value: Any, depth: int = 1) -> int:
    """Check that `value` is in the canonical value model; return how many strings
    (object keys included) it holds.

    Exact-type tests come first because values parsed by orjson are always exactly
    dict/list/str/int/bool/None/float; other values (subclasses, tuples, read-only
    mappings) take the slower isinstance path. `depth` counts enclosing containers: the
    encoder refuses more than MAX_DEPTH, and a cyclic value would otherwise never end.
    """
    t = type(value)
    if t is dict:
        if depth > MAX_DEPTH:
            raise _too_deep()
        n = len(value)
        for item in value.values():
            n += 1 if type(item) is str else _count_strings(item, depth + 1)
        return n
    if t is list:
        if depth > MAX_DEPTH:
            raise _too_deep()
        n = 0
        for item in value:
            n += 1 if type(item) is str else _count_strings(item, depth + 1)
        return n
    if t is str:
        return 1
    if t is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return 0
        raise CanonicalJsonError("integer_range", f"integer {value} is outside ±(2**53-1)")
    if value is None or t is bool:
        return 0
    return _count_other(value, depth)


def _too_deep() -> CanonicalJsonError:
    return CanonicalJsonError("too_deep", f"more than {MAX_DEPTH} nested arrays/objects")


def _count_other(value: Any, depth: int) -> int:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise CanonicalJsonError("non_finite", f"{value} is not a JSON number")
        if value.is_integer() and abs(value) > MAX_SAFE_INTEGER:
            # Also how orjson parses integer literals beyond 64 bits.
            raise CanonicalJsonError("integer_range", f"number {value!r} is outside ±(2**53-1)")
        raise CanonicalJsonError("float", f"float {value!r} is not allowed in canonical JSON")
    if isinstance(value, str | bool):
        return int(isinstance(value, str))
    if isinstance(value, int):
        return _count_strings(int(value), depth)
    if isinstance(value, Mapping):
        return _count_strings(dict(value), depth)
    if isinstance(value, list | tuple):
        return _count_strings(list(value), depth)
    raise CanonicalJsonError(
        "unsupported_type", f"type {type(value).__name__} cannot be encoded as canonical JSON"
    )


def _check(value: Any) -> int:
    try:
        return _count_strings(value)
    except RecursionError:
        raise _too_deep() from None


def _encode_error(exc: orjson.JSONEncodeError) -> CanonicalJsonError:
    message = str(exc)
    lowered = message.lower()
    if "utf-8" in lowered or "surrogate" in lowered:
        return CanonicalJsonError("lone_surrogate", f"string is not valid Unicode: {message}")
    if "key must be str" in lowered:
        return CanonicalJsonError("non_string_key", "object keys must be strings")
    if "53-bit" in lowered or "64-bit" in lowered:
        return CanonicalJsonError("integer_range", "integer is outside ±(2**53-1)")
    if "recursion" in lowered:
        return CanonicalJsonError("too_deep", "value is nested too deeply")
    return CanonicalJsonError("unsupported_type", message)


def encode_canonical_json(value: Any) -> bytes:
    """Encode as canonical JSON: sorted keys, no insignificant whitespace, UTF-8.

    Raises CanonicalJsonError for anything canonical JSON cannot hold: floats (NaN and
    infinities included), integers outside ±(2**53-1), non-string keys, strings with lone
    surrogates and any type other than dict/Mapping, list/tuple, str, int, bool and None.
    """
    _check(value)
    try:
        return orjson.dumps(value, default=_to_builtin, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise _encode_error(exc) from None


def check_canonical_value(value: Any) -> None:
    """Raise CanonicalJsonError unless `value` can be encoded as canonical JSON.

    For objects parsed by something other than `decode_canonical_json` (request bodies,
    values built in code) before they are hashed, signed or stored.
    """
    encode_canonical_json(value)


def _decode_error(exc: orjson.JSONDecodeError) -> CanonicalJsonError:
    message = str(exc)
    lowered = message.lower()
    if "surrogate" in lowered and "utf-8" not in lowered:
        return CanonicalJsonError("lone_surrogate", f"lone surrogate escape: {message}")
    if "utf-8" in lowered:
        return CanonicalJsonError("invalid_utf8", f"invalid UTF-8: {message}")
    if "recursion" in lowered or "depth" in lowered:
        return CanonicalJsonError("too_deep", "JSON is nested too deeply")
    doc = exc.doc if isinstance(exc.doc, str) else ""
    if doc[exc.pos : exc.pos + 9].startswith(("NaN", "Infinity", "-Infinity")):
        return CanonicalJsonError("non_finite", "NaN and Infinity are not JSON numbers")
    return CanonicalJsonError("syntax", f"invalid JSON: {message}")


def _string_tokens(data: bytes) -> int:
    """How many string tokens (keys and values) the JSON text `data` contains.

    Every string contributes two unescaped quotes; a quote inside a string is written
    `\\"`. A backslash only ever occurs inside strings, as the first character of an
    escape, so removing escaped backslashes (`\\\\`) left to right leaves exactly the
    escaped quotes as `\\"`.
    """
    quotes = data.count(b'"')
    if b"\\" not in data:
        return quotes // 2
    unescaped = data.replace(b"\\\\", b"") if b"\\\\" in data else data
    return (quotes - unescaped.count(b'\\"')) // 2


def decode_canonical_json(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON that must be valid canonical-JSON data (signed events, request bodies).

    Whitespace and key order are free (the bytes need not be canonical), but the values
    must be: integers only, within ±(2**53-1), no NaN/Infinity, no duplicate keys, valid
    UTF-8 without lone surrogates. `-0` is read as the integer 0. Raises
    CanonicalJsonError with a `kind` for each failure.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalJsonError("lone_surrogate", "string contains a lone surrogate") from None
    elif isinstance(data, bytes):
        raw = data
    elif isinstance(data, bytearray | memoryview):
        raw = bytes(data)
    else:
        raise TypeError(f"expected bytes or str, not {type(data).__name__}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc) from None
    strings = _check(value)
    if strings != _string_tokens(raw):
        raise CanonicalJsonError("duplicate_key", "an object has the same key twice")
    return value


def canonicalize_json(data: bytes | str) -> bytes:
    """Re-encode any JSON text as canonical JSON, as the specification's examples do.

    Unlike `decode_canonical_json`, numbers written with a fraction or exponent are
    accepted when they denote an integer in range (`1e10`, `2.0`), so this is for
    tools and tests, not for checking signed data, which must not contain them.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc) from None
    return encode_canonical_json(_integral(value))


def _integral(value: Any) -> Any:
    if type(value) is dict:
        return {k: _integral(v) for k, v in value.items()}
    if type(value) is list:
        return [_integral(v) for v in value]
    if type(value) is float and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    return value
