"""Glob matching and dot-separated paths: the spec's examples and the edge cases."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myelin.push.evaluator import PushContext, evaluate
from myelin.push.glob import whole_value_matcher, word_matcher
from myelin.push.paths import MISSING, lookup, split_path
from myelin.push.rules import RuleKind
from myelin.push.ruleset import EMPTY, effective_ruleset, put_rule


def whole(pattern: str, value: str) -> bool:
    return whole_value_matcher(pattern)(value.lower())


def word(pattern: str, value: str) -> bool:
    return word_matcher(pattern)(value.lower())


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        # push.md's example: key content.topic, pattern lunc?*
        ("lunc?*", "Lunch plans", True),
        ("lunc?*", "LUNCH", True),
        ("lunc?*", " lunch", False),
        ("lunc?*", "lunc", False),
        ("*", "", True),
        ("*", "anything\nat all", True),
        ("", "", True),
        ("", "x", False),
        ("?", "", False),
        ("?", "é", True),
        ("??", "é", False),
        ("a*b", "ab", True),
        ("a*b", "a\nb", True),  # * crosses newlines
        ("a*b", "abc", False),  # whole value
        ("m.room.message", "m.room.message", True),
        ("m.room.message", "m_room_message", False),  # dots are literal
        ("m.room.*", "m.room.member", True),
        ("[abc]", "[abc]", True),  # no character classes: brackets are literal
        ("[abc]", "a", False),
        ("a+b", "a+b", True),
        ("a+b", "aab", False),
        ("\\d", "\\d", True),
        ("\\d", "1", False),
        ("ÄBC", "äbc", True),
    ],
)
def test_whole_value_globs(pattern: str, value: str, expected: bool) -> None:
    assert whole(pattern, value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        # push.md's example: key content.body, pattern ex*ple
        ("ex*ple", "An example event.", True),
        ("ex*ple", "exple", True),
        ("ex*ple", "An exciting triple-whammy", True),
        ("ex*ple", "Anexample", False),
        ("ex*ple", "examples", False),
        ("cake", "I like cake.", True),
        ("cake", "cupcake", False),
        ("cake", "cake_shop", False),  # _ is a word character
        ("cake", "cake-shop", True),
        ("cake", "cake2", False),
        ("cake", "CAKE!", True),
        ("cake", "écake", True),  # only [A-Za-z0-9_] are word characters
        ("c?ke", "coke and cake", True),
        ("@room", "hey @room", True),
        ("two words", "say two words now", True),
        ("two words", "say two  words now", False),
        ("a", "a\nb", True),
    ],
)
def test_body_globs_match_word_bounded_substrings(pattern: str, value: str, expected: bool) -> None:
    assert word(pattern, value) is expected


def test_globs_are_compiled_once() -> None:
    assert word_matcher("some*pattern") is word_matcher("some*pattern")
    assert whole_value_matcher("x?y") is whole_value_matcher("x?y")


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("content.body", ("content", "body")),
        ("type", ("type",)),
        ("content.m\\.relates_to.rel_type", ("content", "m.relates_to", "rel_type")),
        ("content.m\\\\foo", ("content", "m\\foo")),
        ("content.m\\xfoo", ("content", "m\\xfoo")),  # other escapes stay as written
        ("a\\", ("a\\",)),
        ("a..b", ("a", "", "b")),
        ("", ("",)),
    ],
)
def test_dot_separated_paths(path: str, parts: tuple[str, ...]) -> None:
    assert split_path(path) == parts


def test_lookup() -> None:
    event: dict[str, Any] = {"content": {"m.relates_to": {"rel_type": "m.replace"}, "n": None}}
    assert lookup(event, split_path("content.m\\.relates_to.rel_type")) == "m.replace"
    assert lookup(event, ("content", "n")) is None
    assert lookup(event, ("content", "missing")) is MISSING
    assert lookup(event, ("content", "m.relates_to", "rel_type", "deeper")) is MISSING
    assert lookup(event, ("content", "n", "x")) is MISSING


def test_event_match_needs_a_string_value_even_for_star() -> None:
    ruleset = effective_ruleset(
        put_rule(
            EMPTY,
            RuleKind.OVERRIDE,
            "any-topic",
            {
                "conditions": [{"kind": "event_match", "key": "content.topic", "pattern": "*"}],
                "actions": ["notify"],
            },
        ),
        "@a:x",
    )
    context = PushContext("@a:x", 3)
    base = {"type": "m.room.topic", "sender": "@b:x", "state_key": ""}
    hit = evaluate(ruleset, {**base, "content": {"topic": ""}}, context)
    assert hit is not None and hit.rule_id == "any-topic"
    for content in ({}, {"topic": None}, {"topic": 3}, {"topic": ["a"]}):
        assert evaluate(ruleset, {**base, "content": content}, context) is None


def test_event_match_on_escaped_keys_and_body_rules_in_overrides() -> None:
    ruleset = effective_ruleset(
        put_rule(
            EMPTY,
            RuleKind.OVERRIDE,
            "beer",
            {
                "conditions": [
                    {"kind": "event_match", "key": "content.body", "pattern": "beer"},
                    {"kind": "room_member_count", "is": "<=10"},
                ],
                "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}],
            },
        ),
        "@a:x",
    )
    event = {"type": "m.room.message", "sender": "@b:x", "content": {"body": "Beer time!"}}
    hit = evaluate(ruleset, event, PushContext("@a:x", 10))
    assert hit is not None and hit.rule_id == "beer" and hit.sound == "beeroclock.wav"
    miss = evaluate(ruleset, event, PushContext("@a:x", 11))
    assert miss is not None and miss.rule_id == ".m.rule.message"
    rooted = {**event, "content": {"body": "rootbeer"}}
    rooted_result = evaluate(ruleset, rooted, PushContext("@a:x", 3))
    assert rooted_result is not None and rooted_result.rule_id == ".m.rule.message"


# --- the compiled matchers against a plain reference implementation ----------------------


def reference_whole(pattern: str, value: str) -> bool:
    """Glob semantics written the slow, obvious way (dynamic programming over both)."""
    p, v = pattern.lower(), value.lower()
    # reach[j]: the first i characters of the pattern can match v[:j]
    reach = [True] + [False] * len(v)
    for ch in p:
        if ch == "*":
            for j in range(1, len(v) + 1):
                reach[j] = reach[j] or reach[j - 1]
        else:
            reach = [False] + [reach[j] and (ch == "?" or ch == v[j]) for j in range(len(v))]
    return reach[len(v)]


def is_word_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def reference_word(pattern: str, value: str) -> bool:
    v = value.lower()
    n = len(v)
    starts = [i for i in range(n + 1) if i == 0 or not is_word_char(v[i - 1])]
    ends = [j for j in range(n + 1) if j == n or not is_word_char(v[j])]
    return any(reference_whole(pattern, v[i:j]) for i in starts for j in ends if i <= j)


PATTERNS = st.text(alphabet="ab*?.- _", max_size=6)
VALUES = st.text(alphabet="abAB.- _\n", max_size=8)


@settings(max_examples=300, deadline=None)
@given(PATTERNS, VALUES)
def test_whole_value_matcher_agrees_with_reference(pattern: str, value: str) -> None:
    assert whole(pattern, value) is reference_whole(pattern, value)


@settings(max_examples=300, deadline=None)
@given(PATTERNS, VALUES)
def test_word_matcher_agrees_with_reference(pattern: str, value: str) -> None:
    assert word(pattern, value) is reference_word(pattern, value)
