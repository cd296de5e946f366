"""The server-default push rules of Matrix v1.19 (push.md, "Predefined Rules").

v1.17 removed the legacy rules that looked for mentions in the body
(`.m.rule.contains_display_name`, `.m.rule.roomnotif`, `.m.rule.contains_user_name`), so
there is no default content rule; mentions come from `m.mentions`. The order below is the
specification's, which is the priority order within each kind. `.m.rule.master` is kept
apart because it outranks even user-defined override rules; every other default ranks
below the user's rules of its kind.

A server whose users still run clients older than intentional mentions (v1.7: they send no
`m.mentions`, so nobody is notified of their mentions) may turn the legacy rules back on
with the `push_legacy_mention_rules` setting (`configure`). They then sit where v1.16 had
them and, as v1.7 specified, never match an event whose content has `m.mentions`: a
client that says whom it mentions is taken at its word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from myelin.push.rules import (
    Action,
    Condition,
    ContainsDisplayName,
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

CONTAINS_DISPLAY_NAME = ".m.rule.contains_display_name"
ROOMNOTIF = ".m.rule.roomnotif"
CONTAINS_USER_NAME = ".m.rule.contains_user_name"
#: The body-matching rules v1.17 removed (see the module's docstring).
LEGACY_MENTION_RULE_IDS = frozenset({CONTAINS_DISPLAY_NAME, ROOMNOTIF, CONTAINS_USER_NAME})


@dataclass
class _Settings:
    legacy_mention_rules: bool = False


#: The process's choice, made once at start-up from the configuration (`configure`): the
#: default rules are the same for every user of one server.
_SETTINGS = _Settings()


def configure(*, legacy_mention_rules: bool) -> None:
    """Choose the server's default rules (before any rule set is built)."""
    _SETTINGS.legacy_mention_rules = legacy_mention_rules


def legacy_mention_rules() -> bool:
    return _SETTINGS.legacy_mention_rules


@lru_cache(maxsize=1024)
def default_override_rules(user_id: str, legacy: bool = False) -> tuple[PushRule, ...]:
    """The default override rules after `.m.rule.master`, for `user_id` (with the
    legacy body-matching ones when `legacy`)."""
    display_name = (
        (
            _override(
                CONTAINS_DISPLAY_NAME,
                (ContainsDisplayName(),),
                ("notify", _SOUND_DEFAULT, _HIGHLIGHT),
            ),
        )
        if legacy
        else ()
    )
    roomnotif = (
        (
            _override(
                ROOMNOTIF,
                (EventMatch("content.body", "@room"), SenderNotificationPermission("room")),
                ("notify", _HIGHLIGHT),
            ),
        )
        if legacy
        else ()
    )
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
        *display_name,
        _override(
            ".m.rule.is_room_mention",
            (
                EventPropertyIs("content.m\\.mentions.room", True),
                SenderNotificationPermission("room"),
            ),
            ("notify", _HIGHLIGHT),
        ),
        *roomnotif,
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


def _contains_user_name(user_id: str) -> PushRule:
    localpart = user_id[1:].split(":", 1)[0]
    return PushRule(
        RuleKind.CONTENT,
        CONTAINS_USER_NAME,
        ("notify", _SOUND_DEFAULT, _HIGHLIGHT),
        True,
        True,
        (),
        localpart,
    )


def default_rules(user_id: str, legacy: bool | None = None) -> dict[RuleKind, tuple[PushRule, ...]]:
    """Every default rule for `user_id` by kind, in priority order (master first); with
    the legacy mention rules when `legacy`, or when configured if it is None."""
    if legacy is None:
        legacy = _SETTINGS.legacy_mention_rules
    return {
        RuleKind.OVERRIDE: (MASTER_RULE, *default_override_rules(user_id, legacy)),
        RuleKind.CONTENT: (_contains_user_name(user_id),) if legacy else (),
        RuleKind.ROOM: (),
        RuleKind.SENDER: (),
        RuleKind.UNDERRIDE: DEFAULT_UNDERRIDE_RULES,
    }


_DEFAULT_RULE_IDS: dict[bool, dict[RuleKind, frozenset[str]]] = {
    legacy: {
        kind: frozenset(rule.rule_id for rule in rules)
        for kind, rules in default_rules("@placeholder:localhost", legacy).items()
    }
    for legacy in (False, True)
}


def default_rule_ids(kind: RuleKind) -> frozenset[str]:
    """The IDs of this server's default rules of a kind (the same for every user)."""
    return _DEFAULT_RULE_IDS[_SETTINGS.legacy_mention_rules][kind]
