"""A user's push rules: what is stored, the effective rule set, and the REST operations.

What a server stores per user is `StoredRules`: the user's own rules of each kind in
priority order, plus the user's changes to server-default rules (only `enabled` and
`actions` of a default rule can change). The effective `RuleSet`, the one GET /pushrules/
returns and the evaluator runs, is computed from it by `effective_ruleset`, so a server
upgrade that changes the default rules reaches every user without rewriting stored data.

Every operation is a pure function: it returns a new `StoredRules` or raises
`PushRuleError` (with the errcode pushrules.yaml documents) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from myelin.push.defaults import MASTER_RULE_ID, default_rule_ids, default_rules
from myelin.push.errors import PushRuleError, invalid_param, not_found
from myelin.push.rules import (
    RULE_KINDS,
    Action,
    PushRule,
    RuleKind,
    parse_actions,
    parse_stored_rule,
    parse_user_rule,
)


@dataclass(frozen=True)
class RuleSet:
    """The effective rules of one user, each kind in priority order (highest first)."""

    override: tuple[PushRule, ...] = ()
    content: tuple[PushRule, ...] = ()
    room: tuple[PushRule, ...] = ()
    sender: tuple[PushRule, ...] = ()
    underride: tuple[PushRule, ...] = ()
    _compiled: Any = field(default=None, init=False, repr=False, compare=False)

    def of_kind(self, kind: RuleKind) -> tuple[PushRule, ...]:
        rules: tuple[PushRule, ...] = getattr(self, kind.value)
        return rules

    def __iter__(self) -> Iterator[PushRule]:
        """Every rule in the order they are checked."""
        for kind in RULE_KINDS:
            yield from self.of_kind(kind)

    def get(self, kind: RuleKind, rule_id: str) -> PushRule:
        """The rule, or M_NOT_FOUND."""
        for rule in self.of_kind(kind):
            if rule.rule_id == rule_id:
                return rule
        raise not_found()

    def to_json(self) -> dict[str, Any]:
        """The ruleset object of GET /pushrules/global/ (all five kinds, always present)."""
        return {kind.value: [rule.to_json() for rule in self.of_kind(kind)] for kind in RULE_KINDS}


def pushrules_content(ruleset: RuleSet) -> dict[str, Any]:
    """The body of GET /pushrules/ and the content of the `m.push_rules` account data."""
    return {"global": ruleset.to_json()}


@dataclass(frozen=True)
class DefaultRuleChange:
    """A user's change to a server-default rule; `None` keeps the default's value."""

    enabled: bool | None = None
    actions: tuple[Action, ...] | None = None


@dataclass(frozen=True)
class StoredRules:
    """What is persisted per user. `user` holds the user's own rules by kind (priority
    order); `defaults` holds changes to server-default rules keyed by (kind, rule_id)."""

    user: Mapping[RuleKind, tuple[PushRule, ...]] = field(default_factory=dict)
    defaults: Mapping[tuple[RuleKind, str], DefaultRuleChange] = field(default_factory=dict)

    def user_rules(self, kind: RuleKind) -> tuple[PushRule, ...]:
        return self.user.get(kind, ())

    def to_json(self) -> dict[str, Any]:
        """A JSON document for storage; `from_json` reads it back."""
        defaults: dict[str, dict[str, Any]] = {}
        for (kind, rule_id), change in sorted(
            self.defaults.items(), key=lambda item: (item[0][0].value, item[0][1])
        ):
            entry: dict[str, Any] = {}
            if change.enabled is not None:
                entry["enabled"] = change.enabled
            if change.actions is not None:
                entry["actions"] = [a if isinstance(a, str) else dict(a) for a in change.actions]
            defaults.setdefault(kind.value, {})[rule_id] = entry
        return {
            "user": {
                kind.value: [rule.to_json() for rule in self.user_rules(kind)]
                for kind in RULE_KINDS
                if self.user_rules(kind)
            },
            "defaults": defaults,
        }

    @classmethod
    def from_json(cls, raw: object) -> StoredRules:
        """Reads `to_json` output back, validating it as strictly as a client request."""
        if not isinstance(raw, Mapping):
            raise invalid_param("Stored push rules must be an object")
        user_raw = raw.get("user", {})
        defaults_raw = raw.get("defaults", {})
        if not isinstance(user_raw, Mapping) or not isinstance(defaults_raw, Mapping):
            raise invalid_param("Stored push rules: 'user' and 'defaults' must be objects")
        user: dict[RuleKind, tuple[PushRule, ...]] = {}
        for kind_name, rules in user_raw.items():
            kind = _stored_kind(kind_name)
            if not isinstance(rules, list):
                raise invalid_param("Stored push rules of a kind must be an array")
            parsed = tuple(parse_stored_rule(kind, rule) for rule in rules)
            if len({rule.rule_id for rule in parsed}) != len(parsed):
                raise invalid_param("Stored push rules repeat a rule ID")
            user[kind] = parsed
        defaults: dict[tuple[RuleKind, str], DefaultRuleChange] = {}
        for kind_name, changes in defaults_raw.items():
            kind = _stored_kind(kind_name)
            if not isinstance(changes, Mapping):
                raise invalid_param("Stored default-rule changes must be an object")
            for rule_id, change in changes.items():
                defaults[(kind, rule_id)] = _parse_change(change)
        return cls(user, defaults)


def _stored_kind(name: object) -> RuleKind:
    try:
        return RuleKind(name)
    except ValueError:
        raise invalid_param(f"Stored push rules name an unknown kind: {name!r}") from None


def _parse_change(raw: object) -> DefaultRuleChange:
    if not isinstance(raw, Mapping):
        raise invalid_param("A stored default-rule change must be an object")
    enabled = raw.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise invalid_param("'enabled' must be a boolean")
    actions = parse_actions(raw["actions"]) if "actions" in raw else None
    return DefaultRuleChange(enabled, actions)


EMPTY = StoredRules()
"""A user who never changed a push rule."""


# --- the effective rule set ------------------------------------------------------------


def _apply_change(rule: PushRule, change: DefaultRuleChange | None) -> PushRule:
    if change is None:
        return rule
    return replace(
        rule,
        enabled=rule.enabled if change.enabled is None else change.enabled,
        actions=rule.actions if change.actions is None else change.actions,
    )


def effective_ruleset(stored: StoredRules, user_id: str) -> RuleSet:
    """The user's rule set: for each kind the user's rules, then the server defaults with
    the user's changes applied; except `.m.rule.master`, which comes before everything."""
    defaults = default_rules(user_id)
    by_kind: dict[str, tuple[PushRule, ...]] = {}
    for kind in RULE_KINDS:
        changed = tuple(
            _apply_change(rule, stored.defaults.get((kind, rule.rule_id)))
            for rule in defaults[kind]
        )
        user = stored.user_rules(kind)
        if kind is RuleKind.OVERRIDE and changed and changed[0].rule_id == MASTER_RULE_ID:
            by_kind[kind.value] = (changed[0], *user, *changed[1:])
        else:
            by_kind[kind.value] = (*user, *changed)
    return RuleSet(**by_kind)


def get_rule(stored: StoredRules, user_id: str, kind: RuleKind, rule_id: str) -> PushRule:
    """The effective rule (user or default), or M_NOT_FOUND."""
    return effective_ruleset(stored, user_id).get(kind, rule_id)


# --- operations ------------------------------------------------------------------------


def _is_default(kind: RuleKind, rule_id: str) -> bool:
    return rule_id in default_rule_ids(kind)


def _with_user_rules(
    stored: StoredRules, kind: RuleKind, rules: tuple[PushRule, ...]
) -> StoredRules:
    user = dict(stored.user)
    if rules:
        user[kind] = rules
    else:
        user.pop(kind, None)
    return StoredRules(user, stored.defaults)


def _anchor_index(rules: tuple[PushRule, ...], anchor: str, which: str) -> int:
    for index, rule in enumerate(rules):
        if rule.rule_id == anchor:
            return index
    raise PushRuleError(400, "M_UNKNOWN", f"{which} rule not found: {anchor}")


def put_rule(
    stored: StoredRules,
    kind: RuleKind,
    rule_id: str,
    body: object,
    *,
    before: str | None = None,
    after: str | None = None,
) -> StoredRules:
    """PUT /pushrules/global/{kind}/{ruleId}: create or replace a user rule.

    A new rule is enabled. With `before` (which wins when both are given) the rule becomes
    the next more important rule than that user rule; with `after`, the next less
    important one; an anchor that is not a user rule of this kind is M_UNKNOWN (rules
    cannot be placed relative to server-default rules). Without either, a replaced rule
    keeps its place and a new one becomes the most important user rule of its kind.
    Server-default rules cannot be replaced (their IDs start with `.`): only their
    `enabled` and `actions` can change, through `set_enabled` and `set_actions`.
    """
    current = stored.user_rules(kind)
    existing = next((i for i, r in enumerate(current) if r.rule_id == rule_id), None)
    enabled = True if existing is None else current[existing].enabled
    rule = parse_user_rule(kind, rule_id, body, enabled=enabled)
    others = tuple(r for r in current if r.rule_id != rule_id)
    if before is not None:
        index = _anchor_index(others, before, "before")
    elif after is not None:
        index = _anchor_index(others, after, "after") + 1
    elif existing is not None:
        index = existing
    else:
        index = 0
    return _with_user_rules(stored, kind, (*others[:index], rule, *others[index:]))


def delete_rule(stored: StoredRules, kind: RuleKind, rule_id: str) -> StoredRules:
    """DELETE /pushrules/global/{kind}/{ruleId}: only user rules can be deleted."""
    if _is_default(kind, rule_id):
        raise invalid_param("Server-default push rules cannot be deleted")
    current = stored.user_rules(kind)
    remaining = tuple(r for r in current if r.rule_id != rule_id)
    if len(remaining) == len(current):
        raise not_found()
    return _with_user_rules(stored, kind, remaining)


def _change_rule(
    stored: StoredRules,
    kind: RuleKind,
    rule_id: str,
    enabled: bool | None,
    actions: tuple[Action, ...] | None,
) -> StoredRules:
    if _is_default(kind, rule_id):
        old = stored.defaults.get((kind, rule_id), DefaultRuleChange())
        change = DefaultRuleChange(
            old.enabled if enabled is None else enabled,
            old.actions if actions is None else actions,
        )
        defaults = dict(stored.defaults)
        defaults[(kind, rule_id)] = change
        return StoredRules(stored.user, defaults)
    current = stored.user_rules(kind)
    for index, rule in enumerate(current):
        if rule.rule_id == rule_id:
            updated = replace(
                rule,
                enabled=rule.enabled if enabled is None else enabled,
                actions=rule.actions if actions is None else actions,
            )
            return _with_user_rules(
                stored, kind, (*current[:index], updated, *current[index + 1 :])
            )
    raise not_found()


def set_enabled(stored: StoredRules, kind: RuleKind, rule_id: str, enabled: object) -> StoredRules:
    """PUT .../{ruleId}/enabled: allowed on user and server-default rules alike."""
    if not isinstance(enabled, bool):
        raise invalid_param("'enabled' must be a boolean")
    return _change_rule(stored, kind, rule_id, enabled, None)


def set_actions(stored: StoredRules, kind: RuleKind, rule_id: str, actions: object) -> StoredRules:
    """PUT .../{ruleId}/actions: allowed on user and server-default rules alike."""
    return _change_rule(stored, kind, rule_id, None, parse_actions(actions))
