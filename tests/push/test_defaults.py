"""The default rule set against the specification's own definitions (push.md) and schema."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from myelin.core.canonicaljson import encode_canonical_json
from myelin.push.defaults import default_rule_ids, default_rules
from myelin.push.errors import PushRuleError
from myelin.push.rules import RuleKind
from myelin.push.ruleset import EMPTY, effective_ruleset, get_rule, pushrules_content
from tests.support.openapi import SPEC_ROOT, validate_response

USER = "@alice:example.com"
PUSH_MD = SPEC_ROOT / "content/client-server-api/modules/push.md"
BASE = "/_matrix/client/v3/pushrules"


def spec_default_rules() -> dict[str, list[dict[str, Any]]]:
    """The definitions of push.md's "Predefined Rules", by kind, in the spec's order."""
    if not PUSH_MD.is_file():
        pytest.fail(f"the Matrix specification is expected at {SPEC_ROOT} (set MYELIN_MATRIX_SPEC)")
    text = PUSH_MD.read_text(encoding="utf-8")
    section = text.split("#### Predefined Rules", 1)[1].split("#### Push Rules: API", 1)[0]
    overrides, underrides = section.split("##### Default Underride Rules", 1)
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, part in (("override", overrides), ("underride", underrides)):
        rules = []
        for block in re.findall(r"```json\n(.*?)```", part, re.DOTALL):
            rules.append(json.loads(block.replace("[the user's Matrix ID]", USER)))
        out[kind] = rules
    return out


def test_default_rules_are_exactly_the_specs_definitions_in_order() -> None:
    spec = spec_default_rules()
    ours = effective_ruleset(EMPTY, USER).to_json()
    assert [r["rule_id"] for r in spec["override"]][:2] == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
    ]
    assert ours["override"] == spec["override"]
    assert ours["underride"] == spec["underride"]
    assert ours["content"] == ours["room"] == ours["sender"] == []


def test_v1_17_removed_the_legacy_body_mention_rules() -> None:
    ids = {r["rule_id"] for kind in effective_ruleset(EMPTY, USER).to_json().values() for r in kind}
    for removed in (
        ".m.rule.contains_display_name",
        ".m.rule.roomnotif",
        ".m.rule.contains_user_name",
    ):
        assert removed not in ids
    assert len(ids) == 15
    assert ids == set().union(*(default_rule_ids(kind) for kind in RuleKind))


def test_default_rules_name_the_user() -> None:
    ruleset = effective_ruleset(EMPTY, "@bob:example.org")
    invite = ruleset.get(RuleKind.OVERRIDE, ".m.rule.invite_for_me").to_json()
    assert {"key": "state_key", "kind": "event_match", "pattern": "@bob:example.org"} in invite[
        "conditions"
    ]
    mention = ruleset.get(RuleKind.OVERRIDE, ".m.rule.is_user_mention").to_json()
    assert mention["conditions"][0]["value"] == "@bob:example.org"


def test_responses_match_the_openapi_definitions() -> None:
    ruleset = effective_ruleset(EMPTY, USER)
    validate_response("GET", f"{BASE}/", 200, pushrules_content(ruleset))
    validate_response("GET", f"{BASE}/global/", 200, ruleset.to_json())
    rule = get_rule(EMPTY, USER, RuleKind.UNDERRIDE, ".m.rule.message")
    validate_response("GET", f"{BASE}/global/underride/.m.rule.message", 200, rule.to_json())
    with pytest.raises(PushRuleError) as info:
        get_rule(EMPTY, USER, RuleKind.OVERRIDE, "nope")
    assert info.value.status == 404
    validate_response("GET", f"{BASE}/global/override/nope", 404, info.value.body())


def test_wire_output_is_plain_json_and_detached_from_the_rules() -> None:
    ruleset = effective_ruleset(EMPTY, USER)
    body = pushrules_content(ruleset)
    assert json.loads(encode_canonical_json(body)) == body
    body["global"]["override"][2]["actions"][1]["value"] = "changed"
    again = pushrules_content(effective_ruleset(EMPTY, USER))
    sound = again["global"]["override"][2]["actions"][1]
    assert sound == {"set_tweak": "sound", "value": "default"}
    rule = ruleset.get(RuleKind.OVERRIDE, ".m.rule.invite_for_me")
    with pytest.raises(TypeError):
        rule.actions[1]["value"] = "changed"  # type: ignore[index]


def test_legacy_mention_rules_sit_where_v1_16_had_them() -> None:
    """`push_legacy_mention_rules` brings back the removed rules, in their old places."""
    rules = default_rules(USER, legacy=True)
    overrides = [r.rule_id for r in rules[RuleKind.OVERRIDE]]
    assert overrides.index(".m.rule.contains_display_name") == (
        overrides.index(".m.rule.is_user_mention") + 1
    )
    assert overrides.index(".m.rule.roomnotif") == overrides.index(".m.rule.is_room_mention") + 1
    (content,) = rules[RuleKind.CONTENT]
    assert content.to_json() == {
        "rule_id": ".m.rule.contains_user_name",
        "default": True,
        "enabled": True,
        "pattern": "alice",
        "actions": [
            "notify",
            {"set_tweak": "sound", "value": "default"},
            {"set_tweak": "highlight"},
        ],
    }
    # Off by default: the spec's set.
    assert not {r.rule_id for r in default_rules(USER)[RuleKind.OVERRIDE]} & {
        ".m.rule.contains_display_name",
        ".m.rule.roomnotif",
    }
