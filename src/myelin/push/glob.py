"""Glob patterns (appendices.md, "Glob-style matching") compiled to regular expressions.

`*` matches zero or more characters and `?` exactly one; everything else is literal.
Matching is case-insensitive, and this implementation defines that as: both the pattern
and the value are lowered with `str.lower()` before comparing. Compilation is cached,
because the same few patterns are matched for every event and every member of a room.

Two shapes are needed: `event_match` compares against the whole value, except on
`content.body`, where the pattern must match a substring that starts and ends at a word
boundary, a boundary being the start or end of the value or any character outside
`[A-Za-z0-9_]` (push.md, "Conditions").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

Matcher = Callable[[str], bool]
"""Takes an already lowered value and says whether it matches."""

_WORD = "A-Za-z0-9_"


def _glob_body(pattern: str) -> str:
    out: list[str] = []
    for ch in pattern.lower():
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return "".join(out)


@lru_cache(maxsize=8192)
def whole_value_matcher(pattern: str) -> Matcher:
    """A matcher for `pattern` against the entire (lowered) value."""
    lowered = pattern.lower()
    if "*" not in lowered and "?" not in lowered:
        return lowered.__eq__
    if lowered == "*":
        return _always
    return _fullmatch(re.compile(_glob_body(pattern), re.DOTALL))


@lru_cache(maxsize=8192)
def word_matcher(pattern: str) -> Matcher:
    """A matcher for `pattern` against any word-bounded substring of the (lowered) value."""
    regex = re.compile(f"(?<![{_WORD}])(?:{_glob_body(pattern)})(?![{_WORD}])", re.DOTALL)
    return _search(regex)


@lru_cache(maxsize=8192)
def literal_word_matcher(text: str) -> Matcher:
    """A matcher for the literal `text` (no glob characters) as a word-bounded substring."""
    regex = re.compile(f"(?<![{_WORD}])(?:{re.escape(text.lower())})(?![{_WORD}])", re.DOTALL)
    return _search(regex)


def _always(_value: str) -> bool:
    return True


def _fullmatch(regex: re.Pattern[str]) -> Matcher:
    fullmatch = regex.fullmatch

    def match(value: str) -> bool:
        return fullmatch(value) is not None

    return match


def _search(regex: re.Pattern[str]) -> Matcher:
    search = regex.search

    def match(value: str) -> bool:
        return search(value) is not None

    return match
