"""The server-default push rules of Matrix v1.19 (push.md, "Predefined Rules").

v1.17 removed the legacy rules that looked for mentions in the body
(`.m.rule.contains_display_name`, `.m.rule.roomnotif`, `.m.rule.contains_user_name`), so
there is no default content rule; mentions come from `m.mentions`. The order below is the
specification's, which is the priority order within each kind. `.m.rule.master` is kept
apart because it outranks even user-defined override rules; every other default ranks
below the user's rules of its kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from myelin.push.rules import (
    Action,
    Condition,
    EventMatch,
    EventPropertyContains,
    EventPropertyIs,
    PushRule,
    RoomMemberCount,
    RuleKind,
    SenderNotificationPermission,
)

MASTER_RULE_ID = ".m.rule.master"

# Read-only, because every user's rule set shares them.
_SOUND_DEFAULT: Mapping[str, Any] = MappingProxyType({"set_tweak": "sound", "value": "default"})
_SOUND_RING: Mapping[str, Any] = MappingProxyType({"set_tweak": "sound", "value": "ring"})
_HIGHLIGHT: Mapping[str, Any] = MappingProxyType({"set_tweak": "highlight"})


def _rule(
    kind: RuleKind,
    rule_id: str,
    conditions: tuple[Condition, ...],
    actions: tuple[Action, ...],
    *,
    enabled: bool = True,
) -> PushRule:
    return PushRule(kind, rule_id, actions, enabled, True, conditions)


def _override(
    rule_id: str, conditions: tuple[Condition, ...], actions: tuple[Action, ...]
) -> PushRule:
    return _rule(RuleKind.OVERRIDE, rule_id, conditions, actions)


def _underride(
    rule_id: str, conditions: tuple[Condition, ...], actions: tuple[Action, ...]
) -> PushRule:
    return _rule(RuleKind.UNDERRIDE, rule_id, conditions, actions)


MASTER_RULE = _rule(RuleKind.OVERRIDE, MASTER_RULE_ID, (), (), enabled=False)


@lru_cache(maxsize=1024)
def default_override_rules(user_id: str) -> tuple[PushRule, ...]:
    """The default override rules after `.m.rule.master`, for `user_id`."""
    return (
        _override(
            ".m.rule.suppress_notices",
            (EventMatch("content.msgtype", "m.notice"),),
            (),
        ),
        _override(
            ".m.rule.invite_for_me",
            (
                EventMatch("type", "m.room.member"),
                EventMatch("content.membership", "invite"),
                EventMatch("state_key", user_id),
            ),
            ("notify", _SOUND_DEFAULT),
        ),
        _override(".m.rule.member_event", (EventMatch("type", "m.room.member"),), ()),
        _override(
            ".m.rule.is_user_mention",
            (EventPropertyContains("content.m\\.mentions.user_ids", user_id),),
            ("notify", _SOUND_DEFAULT, _HIGHLIGHT),
        ),
        _override(
            ".m.rule.is_room_mention",
            (
                EventPropertyIs("content.m\\.mentions.room", True),
                SenderNotificationPermission("room"),
            ),
            ("notify", _HIGHLIGHT),
        ),
        _override(
            ".m.rule.tombstone",
            (EventMatch("type", "m.room.tombstone"), EventMatch("state_key", "")),
            ("notify", _HIGHLIGHT),
        ),
        _override(".m.rule.reaction", (EventMatch("type", "m.reaction"),), ()),
        _override(
            ".m.rule.room.server_acl",
            (EventMatch("type", "m.room.server_acl"), EventMatch("state_key", "")),
            (),
        ),
        _override(
            ".m.rule.suppress_edits",
            (EventPropertyIs("content.m\\.relates_to.rel_type", "m.replace"),),
            (),
        ),
    )


DEFAULT_UNDERRIDE_RULES: tuple[PushRule, ...] = (
    _underride(".m.rule.call", (EventMatch("type", "m.call.invite"),), ("notify", _SOUND_RING)),
    _underride(
        ".m.rule.encrypted_room_one_to_one",
        (RoomMemberCount("2"), EventMatch("type", "m.room.encrypted")),
        ("notify", _SOUND_DEFAULT),
    ),
    _underride(
        ".m.rule.room_one_to_one",
        (RoomMemberCount("2"), EventMatch("type", "m.room.message")),
        ("notify", _SOUND_DEFAULT),
    ),
    _underride(".m.rule.message", (EventMatch("type", "m.room.message"),), ("notify",)),
    _underride(".m.rule.encrypted", (EventMatch("type", "m.room.encrypted"),), ("notify",)),
)


def default_rules(user_id: str) -> dict[RuleKind, tuple[PushRule, ...]]:
    """Every default rule for `user_id` by kind, in priority order (master first)."""
    return {
        RuleKind.OVERRIDE: (MASTER_RULE, *default_override_rules(user_id)),
        RuleKind.CONTENT: (),
        RuleKind.ROOM: (),
        RuleKind.SENDER: (),
        RuleKind.UNDERRIDE: DEFAULT_UNDERRIDE_RULES,
    }


DEFAULT_RULE_IDS: dict[RuleKind, frozenset[str]] = {
    kind: frozenset(rule.rule_id for rule in rules)
    for kind, rules in default_rules("@placeholder:localhost").items()
}
"""The IDs of the default rules of each kind (the same for every user)."""
