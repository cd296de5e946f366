"""The evaluator run over the default rule set and user rules, scenario by scenario."""

from __future__ import annotations

from typing import Any

import pytest

from myelin.push.evaluator import (
    PreparedEvent,
    PushActions,
    PushContext,
    compile_ruleset,
    evaluate,
    notification_power_levels,
)
from myelin.push.rules import RuleKind
from myelin.push.ruleset import (
    EMPTY,
    RuleSet,
    StoredRules,
    effective_ruleset,
    put_rule,
    set_actions,
    set_enabled,
)

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
ROOM = "!room:example.com"
DEFAULTS = effective_ruleset(EMPTY, ALICE)


def message(body: str = "hello", **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": BOB,
        "room_id": ROOM,
        "event_id": "$e",
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def ctx(members: int = 5, **kw: Any) -> PushContext:
    return PushContext(user_id=ALICE, member_count=members, **kw)


def run(
    event: dict[str, Any], context: PushContext | None = None, ruleset: RuleSet = DEFAULTS
) -> PushActions | None:
    return evaluate(ruleset, event, context or ctx())


def rule_of(result: PushActions | None) -> str | None:
    return None if result is None else result.rule_id


def test_plain_message_in_a_group_notifies_without_highlight_or_sound() -> None:
    result = run(message())
    assert result is not None
    assert (result.rule_id, result.kind) == (".m.rule.message", RuleKind.UNDERRIDE)
    assert (result.is_notify, result.is_highlight, result.sound) == (True, False, None)


def test_user_mention_highlights() -> None:
    event = message("hi", **{"m.mentions": {"user_ids": [BOB, ALICE]}})
    result = run(event)
    assert result is not None and result.rule_id == ".m.rule.is_user_mention"
    assert (result.is_notify, result.is_highlight, result.sound) == (True, True, "default")
    # someone else mentioned, or the ID as a body substring: no highlight
    assert rule_of(run(message("hi", **{"m.mentions": {"user_ids": [BOB]}}))) == ".m.rule.message"
    assert rule_of(run(message(f"hi {ALICE}"))) == ".m.rule.message"
    # the list must hold exactly the string
    for ids in ([ALICE.upper()], ALICE, [[ALICE]]):
        assert rule_of(run(message("hi", **{"m.mentions": {"user_ids": ids}}))) == ".m.rule.message"


def test_room_mention_needs_the_notifications_room_power_level() -> None:
    event = message("@room", **{"m.mentions": {"room": True}})
    assert rule_of(run(event, ctx(sender_power_level=0))) == ".m.rule.message"
    result = run(event, ctx(sender_power_level=50))  # default level for `room` is 50
    assert result is not None and result.rule_id == ".m.rule.is_room_mention"
    assert (result.is_notify, result.is_highlight, result.sound) == (True, True, None)
    levels = notification_power_levels({"notifications": {"room": 10, "bad": "x"}})
    assert levels == {"room": 10}
    assert rule_of(run(event, ctx(sender_power_level=10, notification_power_levels=levels))) == (
        ".m.rule.is_room_mention"
    )
    high = notification_power_levels({"notifications": {"room": 100}})
    assert rule_of(run(event, ctx(sender_power_level=99, notification_power_levels=high))) == (
        ".m.rule.message"
    )
    # `room` must be the boolean true
    not_bool = message("@room", **{"m.mentions": {"room": "true"}})
    assert rule_of(run(not_bool, ctx(sender_power_level=100))) == ".m.rule.message"


def test_display_name_condition_in_a_user_rule() -> None:
    stored = put_rule(
        EMPTY,
        RuleKind.OVERRIDE,
        "dn",
        {
            "conditions": [{"kind": "contains_display_name"}],
            "actions": ["notify", {"set_tweak": "highlight"}],
        },
    )
    ruleset = effective_ruleset(stored, ALICE)
    named = ctx(display_name="Alice Smith")
    for body in ("hey alice smith!", "ALICE SMITH", "(Alice Smith)", "alice smith's cat"):
        assert rule_of(run(message(body), named, ruleset)) == "dn", body
    for body in ("alice smithson", "malice smith", "alice  smith", "alice_smith"):
        assert rule_of(run(message(body), named, ruleset)) == ".m.rule.message", body
    # no display name, or an empty one, never matches
    assert rule_of(run(message("alice smith"), ctx(), ruleset)) == ".m.rule.message"
    assert rule_of(run(message(""), ctx(display_name=""), ruleset)) == ".m.rule.message"
    # glob characters in a display name are literal
    starred = ctx(display_name="a*z")
    assert rule_of(run(message("say a*z now"), starred, ruleset)) == "dn"
    assert rule_of(run(message("say abcz now"), starred, ruleset)) == ".m.rule.message"


def test_keywords_are_user_content_rules() -> None:
    stored = put_rule(
        EMPTY,
        RuleKind.CONTENT,
        "cake",
        {
            "pattern": "cake",
            "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}],
        },
    )
    stored = put_rule(
        stored, RuleKind.CONTENT, "cakelie", {"pattern": "cake*lie", "actions": []}, before="cake"
    )
    ruleset = effective_ruleset(stored, ALICE)
    result = run(message("Who wants CAKE?"), ctx(), ruleset)
    assert result is not None and result.rule_id == "cake"
    assert result.sound == "cakealarm.wav" and result.is_notify and not result.is_highlight
    lie = run(message("the cake is a lie"), ctx(), ruleset)
    assert lie is not None and lie.rule_id == "cakelie" and not lie.is_notify
    assert rule_of(run(message("cupcakes"), ctx(), ruleset)) == ".m.rule.message"
    # content rules look at content.body only
    topic = {"type": "m.room.topic", "sender": BOB, "state_key": "", "content": {"topic": "cake"}}
    assert run(topic, ctx(), ruleset) is None


def test_direct_messages() -> None:
    dm = run(message(), ctx(members=2))
    assert dm is not None and dm.rule_id == ".m.rule.room_one_to_one"
    assert (dm.is_notify, dm.is_highlight, dm.sound) == (True, False, "default")
    encrypted = {
        "type": "m.room.encrypted",
        "sender": BOB,
        "room_id": ROOM,
        "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "..."},
    }
    result = run(encrypted, ctx(members=2))
    assert result is not None and result.rule_id == ".m.rule.encrypted_room_one_to_one"
    assert result.sound == "default"
    group = run(encrypted, ctx(members=3))
    assert group is not None and group.rule_id == ".m.rule.encrypted"
    assert (group.is_notify, group.sound) == (True, None)


def test_notices_are_suppressed() -> None:
    result = run(message("bot says", msgtype="m.notice"), ctx(members=2))
    assert result is not None and result.rule_id == ".m.rule.suppress_notices"
    assert not result.is_notify and not result.is_highlight


def test_member_events_and_invites_for_me() -> None:
    def member(state_key: str, membership: str) -> dict[str, Any]:
        return {
            "type": "m.room.member",
            "sender": BOB,
            "room_id": ROOM,
            "state_key": state_key,
            "content": {"membership": membership},
        }

    invite = run(member(ALICE, "invite"))
    assert invite is not None and invite.rule_id == ".m.rule.invite_for_me"
    assert (invite.is_notify, invite.is_highlight, invite.sound) == (True, False, "default")
    other = run(member("@carol:example.com", "invite"))
    assert other is not None and other.rule_id == ".m.rule.member_event"
    assert not other.is_notify
    assert rule_of(run(member(BOB, "join"))) == ".m.rule.member_event"


def test_tombstone_highlights_only_as_a_state_event() -> None:
    tomb = {
        "type": "m.room.tombstone",
        "sender": BOB,
        "room_id": ROOM,
        "state_key": "",
        "content": {"body": "moved", "replacement_room": "!new:example.com"},
    }
    result = run(tomb)
    assert result is not None and result.rule_id == ".m.rule.tombstone"
    assert result.is_notify and result.is_highlight
    not_state = {k: v for k, v in tomb.items() if k != "state_key"}
    assert run(not_state) is None
    assert run({**tomb, "state_key": "x"}) is None


def test_server_acl_reactions_and_edits_are_suppressed() -> None:
    acl = {"type": "m.room.server_acl", "sender": BOB, "state_key": "", "content": {}}
    assert rule_of(run(acl)) == ".m.rule.room.server_acl"
    reaction = {
        "type": "m.reaction",
        "sender": BOB,
        "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}},
    }
    result = run(reaction, ctx(members=2))
    assert result is not None and result.rule_id == ".m.rule.reaction" and not result.is_notify
    edit = message(
        "* fixed",
        **{
            "m.new_content": {"body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
        },
    )
    result = run(edit, ctx(members=2))
    assert result is not None and result.rule_id == ".m.rule.suppress_edits"
    assert not result.is_notify
    # an edit that mentions the user still highlights: is_user_mention ranks above
    mention_edit = message(
        "* hi",
        **{
            "m.mentions": {"user_ids": [ALICE]},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
        },
    )
    assert rule_of(run(mention_edit)) == ".m.rule.is_user_mention"


def test_calls_ring() -> None:
    call = {"type": "m.call.invite", "sender": BOB, "content": {"call_id": "1"}}
    result = run(call)
    assert result is not None and result.rule_id == ".m.rule.call" and result.sound == "ring"


def test_master_rule_silences_everything_when_enabled() -> None:
    stored = set_enabled(EMPTY, RuleKind.OVERRIDE, ".m.rule.master", True)
    stored = put_rule(stored, RuleKind.OVERRIDE, "mine", {"actions": ["notify"]})
    ruleset = effective_ruleset(stored, ALICE)
    mention = message("hi", **{"m.mentions": {"user_ids": [ALICE]}})
    result = run(mention, ctx(), ruleset)
    assert result is not None and result.rule_id == ".m.rule.master" and not result.is_notify
    # disabled again (the default), the user's rule outranks the default overrides
    ruleset = effective_ruleset(
        set_enabled(stored, RuleKind.OVERRIDE, ".m.rule.master", False), ALICE
    )
    assert rule_of(run(mention, ctx(), ruleset)) == "mine"


def test_disabled_and_changed_default_rules() -> None:
    stored = set_enabled(EMPTY, RuleKind.UNDERRIDE, ".m.rule.message", False)
    assert run(message(), ctx(), effective_ruleset(stored, ALICE)) is None
    stored = set_actions(
        EMPTY,
        RuleKind.UNDERRIDE,
        ".m.rule.message",
        ["notify", {"set_tweak": "highlight", "value": True}],
    )
    result = run(message(), ctx(), effective_ruleset(stored, ALICE))
    assert result is not None and result.is_highlight
    stored = set_actions(
        EMPTY, RuleKind.UNDERRIDE, ".m.rule.message", [{"set_tweak": "highlight"}]
    )  # highlight without notify
    result = run(message(), ctx(), effective_ruleset(stored, ALICE))
    assert result is not None and not result.is_notify and not result.is_highlight
    assert result.tweaks == {"highlight": True}


def test_room_and_sender_rules() -> None:
    stored = put_rule(EMPTY, RuleKind.ROOM, ROOM, {"actions": []})
    stored = put_rule(stored, RuleKind.SENDER, "@spam:example.com", {"actions": ["notify"]})
    ruleset = effective_ruleset(stored, ALICE)
    assert rule_of(run(message(), ctx(), ruleset)) == ROOM
    elsewhere = {**message(), "room_id": "!other:example.com"}
    assert rule_of(run(elsewhere, ctx(), ruleset)) == ".m.rule.message"
    spam = {**elsewhere, "sender": "@spam:example.com"}
    assert rule_of(run(spam, ctx(), ruleset)) == "@spam:example.com"
    # room IDs are compared exactly, not as case-insensitive globs
    upper = {**message(), "room_id": ROOM.upper()}
    assert rule_of(run(upper, ctx(), ruleset)) == ".m.rule.message"


def test_own_events_never_notify() -> None:
    assert run({**message(), "sender": ALICE}, ctx(members=2)) is None


def test_unknown_conditions_disable_their_rule() -> None:
    stored = put_rule(
        EMPTY,
        RuleKind.OVERRIDE,
        "future",
        {"conditions": [{"kind": "org.example.always"}], "actions": ["notify"]},
    )
    ruleset = effective_ruleset(stored, ALICE)
    assert rule_of(run(message(), ctx(), ruleset)) == ".m.rule.message"
    assert len(compile_ruleset(ruleset).rules) == len(compile_ruleset(DEFAULTS).rules)


@pytest.mark.parametrize(
    ("is_", "matches"),
    [
        ("2", [2]),
        ("==2", [2]),
        ("<3", [1, 2]),
        (">3", [4, 5]),
        ("<=3", [1, 2, 3]),
        (">=3", [3, 4, 5]),
        ("0", []),
    ],
)
def test_room_member_count_forms(is_: str, matches: list[int]) -> None:
    stored = put_rule(
        EMPTY,
        RuleKind.OVERRIDE,
        "count",
        {"conditions": [{"kind": "room_member_count", "is": is_}], "actions": ["notify"]},
    )
    ruleset = effective_ruleset(stored, ALICE)
    got = [n for n in range(1, 6) if rule_of(run(message(), ctx(members=n), ruleset)) == "count"]
    assert got == matches


def test_event_property_is_compares_type_and_value() -> None:
    def with_rule(value: Any) -> RuleSet:
        return effective_ruleset(
            put_rule(
                EMPTY,
                RuleKind.OVERRIDE,
                "p",
                {
                    "conditions": [
                        {"kind": "event_property_is", "key": "content.m\\.federate", "value": value}
                    ],
                    "actions": ["notify"],
                },
            ),
            ALICE,
        )

    create = {
        "type": "m.room.create",
        "sender": BOB,
        "state_key": "",
        "content": {"m.federate": True, "n": 1, "z": None},
    }
    assert rule_of(run(create, ctx(), with_rule(True))) == "p"
    for value in ("true", 1, False, None):
        assert run(create, ctx(), with_rule(value)) is None, value
    one = {**create, "content": {"m.federate": 1}}
    assert rule_of(run(one, ctx(), with_rule(1))) == "p"
    assert run(one, ctx(), with_rule(True)) is None
    null = {**create, "content": {"m.federate": None}}
    assert rule_of(run(null, ctx(), with_rule(None))) == "p"
    absent = {**create, "content": {}}
    assert run(absent, ctx(), with_rule(None)) is None
    compound = {**create, "content": {"m.federate": [True]}}
    assert run(compound, ctx(), with_rule(True)) is None


def test_event_property_contains_ignores_other_value_types() -> None:
    ruleset = effective_ruleset(
        put_rule(
            EMPTY,
            RuleKind.OVERRIDE,
            "c",
            {
                "conditions": [
                    {
                        "kind": "event_property_contains",
                        "key": "content.alt_aliases",
                        "value": "#myroom:example.com",
                    }
                ],
                "actions": ["notify"],
            },
        ),
        ALICE,
    )
    event = {
        "type": "m.room.canonical_alias",
        "sender": BOB,
        "state_key": "",
        "content": {"alt_aliases": ["#somewhere:example.org", {"x": 1}, "#myroom:example.com"]},
    }
    assert rule_of(run(event, ctx(), ruleset)) == "c"
    partial = {**event, "content": {"alt_aliases": [":example.com", "#MYROOM:example.com"]}}
    assert run(partial, ctx(), ruleset) is None
    not_array = {**event, "content": {"alt_aliases": "#myroom:example.com"}}
    assert run(not_array, ctx(), ruleset) is None


def test_prepared_event_and_compiled_ruleset_give_the_same_answers() -> None:
    event = message("hi", **{"m.mentions": {"user_ids": [ALICE]}})
    prepared = PreparedEvent(event)
    compiled = compile_ruleset(DEFAULTS)
    assert compile_ruleset(DEFAULTS) is compiled  # compiled once, kept on the rule set
    for members in (2, 5):
        assert evaluate(compiled, prepared, ctx(members)) == run(event, ctx(members))
    carol = effective_ruleset(EMPTY, "@carol:example.com")
    result = evaluate(carol, prepared, PushContext("@carol:example.com", 5))
    assert rule_of(result) == ".m.rule.message"


def test_each_rule_set_keeps_its_own_compilation() -> None:
    a = effective_ruleset(StoredRules(), ALICE)
    b = effective_ruleset(set_enabled(EMPTY, RuleKind.UNDERRIDE, ".m.rule.message", False), ALICE)
    assert rule_of(evaluate(a, message(), ctx())) == ".m.rule.message"
    assert evaluate(b, message(), ctx()) is None
    assert rule_of(evaluate(a, message(), ctx())) == ".m.rule.message"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({}, None),
        ({"type": 5, "sender": None, "content": "not an object"}, None),
        (
            {"type": "m.room.message", "sender": BOB, "content": {"body": 7, "msgtype": None}},
            ".m.rule.room_one_to_one",
        ),
        (
            {
                "type": "m.room.message",
                "sender": BOB,
                "content": {"body": "x", "m.mentions": ["@alice:example.com"]},
            },
            "dn",
        ),
        (
            {
                "type": "m.room.message",
                "sender": BOB,
                "content": {"body": "x", "m.mentions": {"user_ids": None, "room": 1}},
            },
            "dn",
        ),
        (
            {
                "type": "m.room.message",
                "sender": BOB,
                "content": {"body": "x", "m.relates_to": "m.replace"},
            },
            "dn",
        ),
    ],
)
def test_malformed_events_match_only_what_they_really_contain(
    event: dict[str, Any], expected: str | None
) -> None:
    stored = put_rule(EMPTY, RuleKind.CONTENT, "x", {"pattern": "x", "actions": ["notify"]})
    stored = put_rule(
        stored,
        RuleKind.OVERRIDE,
        "dn",
        {"conditions": [{"kind": "contains_display_name"}], "actions": ["notify"]},
    )
    ruleset = effective_ruleset(stored, ALICE)
    result = evaluate(ruleset, event, ctx(members=2, display_name="x", sender_power_level=100))
    assert rule_of(result) == expected


@pytest.fixture
def legacy_rules() -> Any:
    """The server configured with `push_legacy_mention_rules` for one test."""
    from myelin.push import defaults

    defaults.configure(legacy_mention_rules=True)
    try:
        yield effective_ruleset(EMPTY, ALICE)
    finally:
        defaults.configure(legacy_mention_rules=False)


def test_legacy_rules_notify_of_mentions_in_the_body_only_without_m_mentions(
    legacy_rules: RuleSet,
) -> None:
    named = ctx(display_name="Alice Smith", sender_power_level=50)
    by_name = run(message("ping alice, you there?"), named, legacy_rules)
    assert by_name is not None and by_name.rule_id == ".m.rule.contains_user_name"
    assert (by_name.is_notify, by_name.is_highlight, by_name.sound) == (True, True, "default")
    assert rule_of(run(message("hey Alice Smith!"), named, legacy_rules)) == (
        ".m.rule.contains_display_name"
    )
    assert rule_of(run(message("@room lunch"), named, legacy_rules)) == ".m.rule.roomnotif"
    assert rule_of(run(message("@room lunch"), ctx(sender_power_level=0), legacy_rules)) == (
        ".m.rule.message"
    )
    # A client that states its mentions is taken at its word (push.md v1.7).
    stated = message("ping alice", **{"m.mentions": {"user_ids": [BOB]}})
    assert rule_of(run(stated, named, legacy_rules)) == ".m.rule.message"
    stated_room = message("@room lunch", **{"m.mentions": {}})
    assert rule_of(run(stated_room, named, legacy_rules)) == ".m.rule.message"
    # The spec's rule set (the default) has none of them.
    assert rule_of(run(message("ping alice"), named)) == ".m.rule.message"


def test_legacy_content_rule_outranks_a_muted_room(legacy_rules: RuleSet) -> None:
    stored = put_rule(StoredRules(), RuleKind.ROOM, ROOM, {"actions": ["dont_notify"]})
    muted = effective_ruleset(stored, ALICE)
    assert rule_of(run(message("quiet"), ctx(), muted)) == ROOM
    assert rule_of(run(message("alice: look"), ctx(), muted)) == ".m.rule.contains_user_name"
