"""Dot-separated property paths (appendices.md, "Dot-separated property paths").

`content.m\\.relates_to.rel_type` names `event["content"]["m.relates_to"]["rel_type"]`:
a backslash escapes a literal dot or backslash in a property name, and any other escape
sequence stays as written (a backslash followed by the character). Paths are split once,
when a rule is compiled, never per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

MISSING: Any = object()
"""Returned by `lookup` for an absent property (distinct from a JSON `null`)."""


@lru_cache(maxsize=4096)
def split_path(path: str) -> tuple[str, ...]:
    """The property names of a dot-separated path, with `\\.` and `\\\\` unescaped."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    n = len(path)
    while i < n:
        ch = path[i]
        if ch == "\\" and i + 1 < n and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` in `event`, or `MISSING` when any step is absent or not an object."""
    value: Any = event
    for name in path:
        if type(value) is not dict and not isinstance(value, Mapping):
            return MISSING
        value = value.get(name, MISSING)
        if value is MISSING:
            return MISSING
    return value
