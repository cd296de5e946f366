"""Editing a user's push rules as the REST API does: pure functions, typed errors."""

from __future__ import annotations

from typing import Any

import pytest

from myelin.push.errors import PushRuleError
from myelin.push.rules import (
    EventMatch,
    RuleKind,
    UnknownCondition,
    effective_actions,
    parse_actions,
    parse_condition,
    parse_kind,
)
from myelin.push.ruleset import (
    EMPTY,
    StoredRules,
    delete_rule,
    effective_ruleset,
    get_rule,
    put_rule,
    set_actions,
    set_enabled,
)

USER = "@alice:example.com"
CONTENT = RuleKind.CONTENT
OVERRIDE = RuleKind.OVERRIDE


def content_ids(stored: StoredRules) -> list[str]:
    return [r.rule_id for r in stored.user_rules(CONTENT)]


def keyword(pattern: str) -> dict[str, Any]:
    return {"pattern": pattern, "actions": ["notify"]}


def error(exc: pytest.ExceptionInfo[PushRuleError]) -> tuple[int, str]:
    return exc.value.status, exc.value.errcode


def test_new_rules_go_first_and_before_after_place_them() -> None:
    stored = put_rule(EMPTY, CONTENT, "a", keyword("a"))
    stored = put_rule(stored, CONTENT, "b", keyword("b"))
    assert content_ids(stored) == ["b", "a"]  # a new rule is the most important
    stored = put_rule(stored, CONTENT, "c", keyword("c"), after="b")
    assert content_ids(stored) == ["b", "c", "a"]
    stored = put_rule(stored, CONTENT, "d", keyword("d"), before="a")
    assert content_ids(stored) == ["b", "c", "d", "a"]
    stored = put_rule(stored, CONTENT, "e", keyword("e"), after="a")
    assert content_ids(stored) == ["b", "c", "d", "a", "e"]
    # both given: `before` decides (pushrules.yaml)
    stored = put_rule(stored, CONTENT, "f", keyword("f"), before="c", after="e")
    assert content_ids(stored) == ["b", "f", "c", "d", "a", "e"]
    # moving an existing rule
    stored = put_rule(stored, CONTENT, "e", keyword("e2"), before="b")
    assert content_ids(stored) == ["e", "b", "f", "c", "d", "a"]
    assert stored.user_rules(CONTENT)[0].pattern == "e2"


def test_replacing_without_anchor_keeps_place_and_enabled_state() -> None:
    stored = put_rule(EMPTY, CONTENT, "a", keyword("a"))
    stored = put_rule(stored, CONTENT, "b", keyword("b"))
    stored = set_enabled(stored, CONTENT, "a", False)
    stored = put_rule(stored, CONTENT, "a", keyword("new"))
    assert content_ids(stored) == ["b", "a"]
    rule = get_rule(stored, USER, CONTENT, "a")
    assert (rule.pattern, rule.enabled, rule.default) == ("new", False, False)


def test_unknown_anchor_is_an_error_and_changes_nothing() -> None:
    stored = put_rule(EMPTY, CONTENT, "a", keyword("a"))
    with pytest.raises(PushRuleError) as info:
        put_rule(stored, CONTENT, "b", keyword("b"), before="missing")
    assert error(info) == (400, "M_UNKNOWN")
    assert info.value.body() == {"errcode": "M_UNKNOWN", "error": "before rule not found: missing"}
    with pytest.raises(PushRuleError):
        put_rule(stored, CONTENT, "b", keyword("b"), after="missing")
    # rules cannot be placed relative to server-default rules
    with pytest.raises(PushRuleError) as info:
        put_rule(stored, OVERRIDE, "x", {"actions": []}, before=".m.rule.master")
    assert error(info) == (400, "M_UNKNOWN")
    assert content_ids(stored) == ["a"]


@pytest.mark.parametrize(
    ("kind", "rule_id"),
    [
        (CONTENT, ".m.rule.mine"),
        (OVERRIDE, ".m.rule.suppress_notices"),  # cannot change a default's conditions
        (CONTENT, "a/b"),
        (CONTENT, "a\\b"),
        (CONTENT, ""),
    ],
)
def test_bad_rule_ids_are_refused(kind: RuleKind, rule_id: str) -> None:
    with pytest.raises(PushRuleError) as info:
        put_rule(EMPTY, kind, rule_id, keyword("x"))
    assert error(info) == (400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    ("kind", "body", "errcode"),
    [
        (CONTENT, {"actions": ["notify"]}, "M_MISSING_PARAM"),  # content needs a pattern
        (CONTENT, {"pattern": 3, "actions": []}, "M_INVALID_PARAM"),
        (OVERRIDE, {"conditions": []}, "M_MISSING_PARAM"),
        (OVERRIDE, {"actions": "notify"}, "M_INVALID_PARAM"),
        (OVERRIDE, {"actions": ["explode"]}, "M_INVALID_PARAM"),
        (OVERRIDE, {"actions": [{"value": 1}]}, "M_INVALID_PARAM"),
        (OVERRIDE, {"actions": [], "conditions": {}}, "M_INVALID_PARAM"),
        (OVERRIDE, {"actions": [], "conditions": [{"key": "type"}]}, "M_INVALID_PARAM"),
        (
            OVERRIDE,
            {"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]},
            "M_MISSING_PARAM",
        ),
        (
            OVERRIDE,
            {"actions": [], "conditions": [{"kind": "room_member_count", "is": "~2"}]},
            "M_INVALID_PARAM",
        ),
        (
            OVERRIDE,
            {
                "actions": [],
                "conditions": [{"kind": "event_property_is", "key": "a", "value": 1.5}],
            },
            "M_INVALID_PARAM",
        ),
        (
            OVERRIDE,
            {
                "actions": [],
                "conditions": [{"kind": "event_property_is", "key": "a", "value": 2**53}],
            },
            "M_INVALID_PARAM",
        ),
        (
            OVERRIDE,
            {
                "actions": [],
                "conditions": [{"kind": "event_property_contains", "key": "a", "value": [1]}],
            },
            "M_INVALID_PARAM",
        ),
        (OVERRIDE, ["actions"], "M_BAD_JSON"),
    ],
)
def test_bad_bodies_are_refused(kind: RuleKind, body: Any, errcode: str) -> None:
    with pytest.raises(PushRuleError) as info:
        put_rule(EMPTY, kind, "mine", body)
    assert info.value.errcode == errcode
    assert info.value.status == 400


def test_override_rule_round_trip_and_unknown_conditions_are_kept() -> None:
    body = {
        "conditions": [
            {"kind": "event_match", "key": "content.body", "pattern": "beer"},
            {"kind": "room_member_count", "is": "<=10"},
            {"kind": "org.example.future", "foo": [1, 2]},
        ],
        "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}, "dont_notify"],
        "pattern": "ignored for override rules",
    }
    stored = put_rule(EMPTY, OVERRIDE, "beer", body)
    rule = get_rule(stored, USER, OVERRIDE, "beer")
    assert rule.to_json() == {
        "rule_id": "beer",
        "default": False,
        "enabled": True,
        "conditions": body["conditions"],
        "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}, "dont_notify"],
    }
    assert isinstance(rule.conditions[2], UnknownCondition)


def test_user_overrides_rank_between_master_and_default_overrides() -> None:
    stored = put_rule(EMPTY, OVERRIDE, "mine", {"actions": []})
    stored = put_rule(stored, RuleKind.UNDERRIDE, "low", {"actions": []})
    ruleset = effective_ruleset(stored, USER)
    assert [r.rule_id for r in ruleset.override][:3] == [
        ".m.rule.master",
        "mine",
        ".m.rule.suppress_notices",
    ]
    assert ruleset.underride[0].rule_id == "low"
    assert ruleset.underride[-1].rule_id == ".m.rule.encrypted"


def test_room_and_sender_rules_have_no_conditions_or_pattern_on_the_wire() -> None:
    stored = put_rule(EMPTY, RuleKind.ROOM, "!r:example.com", {"actions": [], "pattern": "x"})
    stored = put_rule(stored, RuleKind.SENDER, "@spam:example.com", {"actions": []})
    ruleset = effective_ruleset(stored, USER).to_json()
    assert ruleset["room"] == [
        {"rule_id": "!r:example.com", "default": False, "enabled": True, "actions": []}
    ]
    assert ruleset["sender"][0]["rule_id"] == "@spam:example.com"


def test_delete() -> None:
    stored = put_rule(EMPTY, CONTENT, "a", keyword("a"))
    assert content_ids(delete_rule(stored, CONTENT, "a")) == []
    assert content_ids(stored) == ["a"]  # the old value is untouched
    with pytest.raises(PushRuleError) as info:
        delete_rule(stored, CONTENT, "b")
    assert error(info) == (404, "M_NOT_FOUND")
    with pytest.raises(PushRuleError) as info:
        delete_rule(stored, OVERRIDE, ".m.rule.master")
    assert error(info) == (400, "M_INVALID_PARAM")
    with pytest.raises(PushRuleError) as info:
        delete_rule(stored, OVERRIDE, "a")  # right ID, wrong kind
    assert error(info) == (404, "M_NOT_FOUND")


def test_enabled_and_actions_of_default_and_user_rules() -> None:
    stored = set_enabled(EMPTY, OVERRIDE, ".m.rule.master", True)
    stored = set_actions(stored, RuleKind.UNDERRIDE, ".m.rule.message", ["notify", "coalesce"])
    stored = set_actions(stored, OVERRIDE, ".m.rule.master", ["notify"])
    stored = set_enabled(stored, OVERRIDE, ".m.rule.master", False)
    master = get_rule(stored, USER, OVERRIDE, ".m.rule.master")
    assert (master.enabled, master.actions, master.default) == (False, ("notify",), True)
    message = get_rule(stored, USER, RuleKind.UNDERRIDE, ".m.rule.message")
    assert message.actions == ("notify", "coalesce")  # historical action kept as written
    assert effective_actions(message.actions) == ("notify",)  # ... and ignored
    assert message.conditions == (EventMatch("type", "m.room.message"),)

    stored = put_rule(stored, CONTENT, "a", keyword("a"))
    stored = set_actions(stored, CONTENT, "a", [{"set_tweak": "highlight"}])
    stored = set_enabled(stored, CONTENT, "a", False)
    rule = get_rule(stored, USER, CONTENT, "a")
    assert (rule.enabled, rule.actions) == (False, ({"set_tweak": "highlight"},))

    with pytest.raises(PushRuleError) as info:
        set_enabled(stored, CONTENT, "zzz", True)
    assert error(info) == (404, "M_NOT_FOUND")
    with pytest.raises(PushRuleError) as info:
        set_actions(stored, CONTENT, ".m.rule.master", [])  # a default, but of another kind
    assert error(info) == (404, "M_NOT_FOUND")
    with pytest.raises(PushRuleError) as info:
        set_enabled(stored, OVERRIDE, ".m.rule.nonexistent", True)
    assert error(info) == (404, "M_NOT_FOUND")
    with pytest.raises(PushRuleError) as info:
        set_enabled(stored, CONTENT, "a", "yes")
    assert error(info) == (400, "M_INVALID_PARAM")


def test_stored_rules_round_trip_through_json() -> None:
    stored = put_rule(EMPTY, CONTENT, "a", keyword("cake*lie"))
    stored = put_rule(
        stored,
        OVERRIDE,
        "o",
        {
            "actions": ["notify"],
            "conditions": [{"kind": "event_property_is", "key": "content.x", "value": None}],
        },
    )
    stored = set_enabled(stored, CONTENT, "a", False)
    stored = set_enabled(stored, OVERRIDE, ".m.rule.master", True)
    stored = set_actions(stored, RuleKind.UNDERRIDE, ".m.rule.call", [])
    raw = stored.to_json()
    again = StoredRules.from_json(raw)
    assert again == stored
    assert effective_ruleset(again, USER) == effective_ruleset(stored, USER)
    assert StoredRules.from_json(EMPTY.to_json()) == EMPTY


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"user": []},
        {"user": {"bogus": []}},
        {"user": {"content": [{"rule_id": "a", "actions": []}]}},  # no pattern
        {"user": {"content": [{"rule_id": ".x", "pattern": "a", "actions": []}]}},
        {"user": {"content": [{"rule_id": "a", "pattern": "a", "actions": [], "enabled": 1}]}},
        {"user": {"room": [{"rule_id": "!a", "actions": []}, {"rule_id": "!a", "actions": []}]}},
        {"defaults": {"override": {".m.rule.master": {"enabled": "no"}}}},
        {"defaults": {"override": {".m.rule.master": {"actions": ["bad"]}}}},
    ],
)
def test_corrupt_stored_rules_are_refused(raw: Any) -> None:
    with pytest.raises(PushRuleError):
        StoredRules.from_json(raw)


def test_kinds_and_actions_parsing() -> None:
    assert parse_kind("underride") is RuleKind.UNDERRIDE
    with pytest.raises(PushRuleError) as info:
        parse_kind("global")
    assert error(info) == (400, "M_INVALID_PARAM")
    assert parse_actions(["dont_notify", "coalesce"]) == ("dont_notify", "coalesce")
    assert effective_actions(parse_actions(["dont_notify", "coalesce"])) == ()
    assert parse_condition({"kind": "room_member_count", "is": ">=3"}).to_json() == {
        "kind": "room_member_count",
        "is": ">=3",
    }
