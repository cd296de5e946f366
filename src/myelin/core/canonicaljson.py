"""Canonical JSON (appendices.md, "Canonical JSON"): the byte form that is hashed and signed."""

from __future__ import annotations

from typing import Any

import orjson


def encode_canonical_json(value: Any) -> bytes:
    """Encode as canonical JSON: sorted keys, no insignificant whitespace, UTF-8."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
