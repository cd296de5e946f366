"""The push-rule evaluator: which rule of a user's rule set an event matches, and so
whether it notifies and highlights (push.md, "Push Rules", "Conditions").

This runs for every event and every local member of its room, so the work is split:
`compile_ruleset` turns a `RuleSet` into a flat list of enabled rules, each with its
conditions as prepared checks (paths split, globs compiled and cached, rules with an
unrecognised condition dropped since they can never match), and the result of each rule
is computed once. A `RuleSet` keeps its compilation, so a server holding one rule set per
user compiles each once; `compiled_rules` is that process-wide cache (a bounded LRU by
user, shared by the pusher and the unread counts of `/sync`), and the default rules,
which most users never change, are compiled once per process and shared between users.
`PreparedEvent` caches the event's looked-up and lowered
properties, so evaluating one event for many users reads each property once.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from myelin.push.defaults import LEGACY_MENTION_RULE_IDS, default_rules
from myelin.push.glob import literal_word_matcher, whole_value_matcher, word_matcher
from myelin.push.paths import MISSING, lookup, split_path
from myelin.push.rules import (
    MAX_SAFE_INTEGER,
    Action,
    Condition,
    ContainsDisplayName,
    EventMatch,
    EventPropertyContains,
    EventPropertyIs,
    PushRule,
    RoomMemberCount,
    RuleKind,
    ScalarValue,
    SenderNotificationPermission,
    UnknownCondition,
    effective_actions,
    is_scalar,
)
from myelin.push.ruleset import RuleSet, StoredRules, effective_ruleset

DEFAULT_NOTIFICATION_LEVEL = 50
"""The power level a `notifications` key needs when the room does not say (push.md and
m.room.power_levels give 50 for `room`; this server uses it for every key)."""

_BODY = ("content", "body")


@dataclass(frozen=True)
class PushContext:
    """What the evaluator needs to know beyond the event, for one user in one room.

    `member_count` is the number of joined members of the room (`room_member_count`),
    `display_name` the user's display name in the room (`contains_display_name`),
    `sender_power_level` the event sender's level and `notification_power_levels` the
    `notifications` object of the room's power levels (see `notification_power_levels`);
    these two feed `sender_notification_permission`.
    """

    user_id: str
    member_count: int
    display_name: str | None = None
    sender_power_level: int = 0
    notification_power_levels: Mapping[str, int] = field(default_factory=dict)


def notification_power_levels(power_levels: Mapping[str, Any] | None) -> dict[str, int]:
    """The integer entries of `notifications` in an m.room.power_levels content."""
    if not power_levels:
        return {}
    notifications = power_levels.get("notifications")
    if not isinstance(notifications, Mapping):
        return {}
    return {
        key: value
        for key, value in notifications.items()
        if isinstance(key, str) and type(value) is int
    }


@dataclass(frozen=True)
class PushActions:
    """The outcome for a matched rule, in the form notification counting needs.

    `is_notify`: the event counts as a notification. `is_highlight`: it also counts as a
    highlight (a `highlight` tweak with no value or `true`, on a notifying rule).
    `tweaks` maps each `set_tweak` to its value; `sound` is the `sound` tweak if a string.
    """

    kind: RuleKind
    rule_id: str
    actions: tuple[Action, ...]
    is_notify: bool
    is_highlight: bool
    sound: str | None
    tweaks: Mapping[str, Any]


def actions_result(rule: PushRule) -> PushActions:
    """The `PushActions` of a rule, read from its actions."""
    tweaks: dict[str, Any] = {}
    notify = False
    for action in rule.actions:
        if action == "notify":
            notify = True
        elif isinstance(action, Mapping):
            name = action.get("set_tweak")
            if isinstance(name, str):
                if name == "highlight":
                    tweaks[name] = action.get("value", True)
                elif "value" in action:
                    tweaks[name] = action["value"]
    sound = tweaks.get("sound")
    return PushActions(
        kind=rule.kind,
        rule_id=rule.rule_id,
        actions=effective_actions(rule.actions),
        is_notify=notify,
        is_highlight=notify and tweaks.get("highlight") is True,
        sound=sound if isinstance(sound, str) else None,
        tweaks=MappingProxyType(tweaks),
    )


class PreparedEvent:
    """An event (a JSON mapping) with caches, reusable across the users it is evaluated for.

    Besides the looked-up and lowered properties, it remembers the outcome of every
    condition that depends on the event alone, keyed by what the condition tests (not by
    rule or user): the members of a room mostly share their rules, so each is tested once.
    """

    __slots__ = ("_lowered", "_sets", "_values", "event", "results", "sender")

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event = event
        sender = event.get("sender")
        self.sender = sender if isinstance(sender, str) else None
        self._values: dict[tuple[str, ...], Any] = {}
        self._lowered: dict[tuple[str, ...], str | None] = {}
        self._sets: dict[tuple[str, ...], frozenset[tuple[str, ScalarValue]]] = {}
        self.results: dict[Hashable, bool] = {}  # test key id -> outcome

    def value(self, path: tuple[str, ...]) -> Any:
        """The property at `path`, or `MISSING`."""
        try:
            return self._values[path]
        except KeyError:
            value = self._values[path] = lookup(self.event, path)
            return value

    def scalar_set(self, path: tuple[str, ...]) -> frozenset[tuple[str, ScalarValue]]:
        """The scalar elements of the array at `path` as `_scalar_key`s (empty when the
        property is absent or not an array): one set per event, one lookup per user."""
        try:
            return self._sets[path]
        except KeyError:
            values = self.value(path)
            found: frozenset[tuple[str, ScalarValue]] = frozenset()
            if isinstance(values, list | tuple):
                found = frozenset(_scalar_key(v) for v in values if is_scalar(v))
            self._sets[path] = found
            return found

    def lowered(self, path: tuple[str, ...]) -> str | None:
        """The lowered string at `path`, or None when absent or not a string."""
        try:
            return self._lowered[path]
        except KeyError:
            value = self.value(path)
            text = value.lower() if isinstance(value, str) else None
            self._lowered[path] = text
            return text


Check = Callable[[PreparedEvent, PushContext], bool]
"""A compiled rule's whole test: does the event match, for this user in this room."""

EventTest = Callable[[PreparedEvent], bool]
"""A test of the event alone; its outcome is remembered on the `PreparedEvent`."""


_KEY_IDS: dict[Hashable, int] = {}
"""Small integers standing for the keys of event-only tests: a tuple's hash is not cached,
an int's costs nothing, and the lookup happens for every rule of every member."""


_NEXT_ID = itertools.count()


def _key_id(key: Hashable) -> int:
    found = _KEY_IDS.get(key)
    if found is None:
        # next() on a count and setdefault are each atomic: two threads compiling the same
        # key agree on one ID, and different keys never share one.
        found = _KEY_IDS.setdefault(key, next(_NEXT_ID))
    return found


@dataclass(frozen=True)
class _EventPart:
    key: Hashable
    test: EventTest


def _glob_test(path: tuple[str, ...], match: Callable[[str], bool]) -> EventTest:
    def test(event: PreparedEvent) -> bool:
        text = event.lowered(path)
        return text is not None and match(text)

    return test


def _glob_part(path: tuple[str, ...], pattern: str) -> _EventPart:
    matcher = word_matcher(pattern) if path == _BODY else whole_value_matcher(pattern)
    return _EventPart(("match", path, pattern), _glob_test(path, matcher))


def _same_scalar(a: object, b: ScalarValue) -> bool:
    # type() first: True == 1 in Python, but a boolean never matches an integer here.
    if type(a) is not type(b) or a != b:
        return False
    return not isinstance(a, int) or -MAX_SAFE_INTEGER <= a <= MAX_SAFE_INTEGER


def _scalar_key(value: ScalarValue) -> tuple[str, ScalarValue]:
    # The type is part of the key for the same reason: (True,) == (1,) in Python.
    return (type(value).__name__, value)


def _property_is_part(path: tuple[str, ...], expected: ScalarValue) -> _EventPart:
    def test(event: PreparedEvent) -> bool:
        value = event.value(path)
        return value is not MISSING and _same_scalar(value, expected)

    return _EventPart(("is", path, _scalar_key(expected)), test)


def _property_contains_part(path: tuple[str, ...], expected: ScalarValue) -> _EventPart:
    wanted = _scalar_key(expected)

    def test(event: PreparedEvent) -> bool:
        return wanted in event.scalar_set(path)

    return _EventPart(("contains", path, wanted), test)


def _equals_part(path: tuple[str, ...], expected: str) -> _EventPart:
    def test(event: PreparedEvent) -> bool:
        value = event.value(path)
        return isinstance(value, str) and value == expected

    return _EventPart(("equals", path, expected), test)


def _has_no_mentions(event: PreparedEvent) -> bool:
    return event.value(("content", "m.mentions")) is MISSING


#: The legacy mention rules never match an event that states its mentions (push.md v1.7).
_WITHOUT_MENTIONS = _EventPart(("absent", ("content", "m.mentions")), _has_no_mentions)


def _display_name_check(event: PreparedEvent, context: PushContext) -> bool:
    name = context.display_name
    if not name:
        return False
    key = ("display_name", name)
    result = event.results.get(key)
    if result is None:
        body = event.lowered(_BODY)
        result = body is not None and literal_word_matcher(name)(body)
        event.results[key] = result
    return result


_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": int.__eq__,
    "<": int.__lt__,
    ">": int.__gt__,
    "<=": int.__le__,
    ">=": int.__ge__,
}


def _member_count_check(condition: RoomMemberCount) -> Check:
    compare = _COMPARE[condition.op]
    count = condition.count

    def check(_event: PreparedEvent, context: PushContext) -> bool:
        return compare(context.member_count, count)

    return check


def _permission_check(key: str) -> Check:
    def check(_event: PreparedEvent, context: PushContext) -> bool:
        needed = context.notification_power_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
        return context.sender_power_level >= needed

    return check


def compile_condition(condition: Condition) -> _EventPart | Check | None:
    """The test of one condition: an event-only part (remembered per event), a check that
    needs the user's context, or None for a condition that never matches (unrecognised)."""
    if isinstance(condition, EventMatch):
        return _glob_part(split_path(condition.key), condition.pattern)
    if isinstance(condition, EventPropertyIs):
        return _property_is_part(split_path(condition.key), condition.value)
    if isinstance(condition, EventPropertyContains):
        return _property_contains_part(split_path(condition.key), condition.value)
    if isinstance(condition, ContainsDisplayName):
        return _display_name_check
    if isinstance(condition, RoomMemberCount):
        return _member_count_check(condition)
    if isinstance(condition, SenderNotificationPermission):
        return _permission_check(condition.key)
    assert isinstance(condition, UnknownCondition)
    return None


@dataclass(frozen=True)
class CompiledRule:
    """A rule reduced to at most two tests, both of which must pass.

    `test` is every event-only condition as one test whose outcome is remembered on the
    `PreparedEvent` under the integer `key` (None when there is none); `check` is every
    condition that needs the user's context (None when there is none).
    """

    key: int
    test: EventTest | None
    check: Check | None
    result: PushActions


def _all_checks(checks: list[Check]) -> Check | None:
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    others = tuple(checks)

    def check(event: PreparedEvent, context: PushContext) -> bool:
        return all(c(event, context) for c in others)

    return check


def _all_parts(parts: list[_EventPart]) -> tuple[int, EventTest | None]:
    if not parts:
        return -1, None
    if len(parts) == 1:
        return _key_id(parts[0].key), parts[0].test
    subtests = tuple((_key_id(part.key), part.test) for part in parts)

    def test(event: PreparedEvent) -> bool:
        # Each part is remembered on its own too: rules of different users often share
        # some of their parts (the `type` of `.m.rule.invite_for_me`) but not all.
        results = event.results
        for key, subtest in subtests:
            outcome = results.get(key)
            if outcome is None:
                outcome = results[key] = subtest(event)
            if not outcome:
                return False
        return True

    return _key_id(("all", *(part.key for part in parts))), test


def compile_rule(rule: PushRule) -> CompiledRule | None:
    """The compiled form of a rule, or None if the rule can never match (disabled, or
    with a condition this server does not recognise)."""
    if not rule.enabled:
        return None
    parts: list[_EventPart] = []
    checks: list[Check] = []
    if rule.kind is RuleKind.CONTENT:
        if rule.pattern is None:
            return None
        parts.append(_glob_part(_BODY, rule.pattern))
    elif rule.kind is RuleKind.ROOM:
        parts.append(_equals_part(("room_id",), rule.rule_id))
    elif rule.kind is RuleKind.SENDER:
        parts.append(_equals_part(("sender",), rule.rule_id))
    else:
        for condition in rule.conditions:
            compiled = compile_condition(condition)
            if compiled is None:
                return None
            if isinstance(compiled, _EventPart):
                parts.append(compiled)
            else:
                checks.append(compiled)
    if rule.default and rule.rule_id in LEGACY_MENTION_RULE_IDS:
        parts.append(_WITHOUT_MENTIONS)
    key, test = _all_parts(parts)
    return CompiledRule(key, test, _all_checks(checks), actions_result(rule))


@dataclass(frozen=True)
class CompiledRuleSet:
    """The enabled, matchable rules in priority order."""

    rules: tuple[CompiledRule, ...]
    _flat: tuple[tuple[int, EventTest | None, Check | None, PushActions], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        flat = tuple((r.key, r.test, r.check, r.result) for r in self.rules)
        object.__setattr__(self, "_flat", flat)


def _user_independent_defaults() -> frozenset[tuple[RuleKind, str]]:
    """The default rules that are the same for every user (not the mentions of the user
    or the invites to them)."""
    one, other = default_rules("@a:a.example", True), default_rules("@b:b.example", True)
    return frozenset(
        (kind, a.rule_id)
        for kind in one
        for a, b in zip(one[kind], other[kind], strict=True)
        if a.to_json() == b.to_json()
    )


_USER_INDEPENDENT = _user_independent_defaults()
#: Compiled user-independent default rules by their kind and JSON form (rules hold
#: mapping proxies, which do not hash): most users' defaults are the same rules, compiled
#: once for the process; a user's change of one is shared by users with the same change.
_SHARED: dict[tuple[RuleKind, bytes], CompiledRule | None] = {}
_MAX_SHARED = 1024


def _compile_shared(rule: PushRule) -> CompiledRule | None:
    if not rule.default or (rule.kind, rule.rule_id) not in _USER_INDEPENDENT:
        return compile_rule(rule)
    key = (rule.kind, orjson.dumps(rule.to_json()))
    if key in _SHARED:
        return _SHARED[key]
    compiled = compile_rule(rule)
    if len(_SHARED) >= _MAX_SHARED:
        _SHARED.clear()
    _SHARED[key] = compiled
    return compiled


def compile_ruleset(ruleset: RuleSet) -> CompiledRuleSet:
    """The compiled form of `ruleset`, computed once and kept on it."""
    cached = ruleset._compiled
    if isinstance(cached, CompiledRuleSet):
        return cached
    rules = (_compile_shared(rule) for rule in ruleset)
    compiled = CompiledRuleSet(tuple(rule for rule in rules if rule is not None))
    object.__setattr__(ruleset, "_compiled", compiled)
    return compiled


#: Users whose compiled rule set `compiled_rules` keeps (least recently used go first).
MAX_CACHED_USERS = 10_000
_BY_USER: OrderedDict[str, tuple[str, CompiledRuleSet]] = OrderedDict()


def compiled_rules(user_id: str, stored_json: str | None) -> CompiledRuleSet:
    """The compiled effective rules of `user_id`, whose `push_rules.stored` column is
    `stored_json` (None when the user changed nothing). One cache for the process: the
    key is the stored text itself, so a change of the user's rules is never served stale,
    whichever component (or database) asks."""
    key = stored_json or ""
    cached = _BY_USER.get(user_id)
    if cached is not None and cached[0] == key:
        _BY_USER.move_to_end(user_id)
        return cached[1]
    stored = (
        StoredRules() if stored_json is None else StoredRules.from_json(orjson.loads(stored_json))
    )
    compiled = compile_ruleset(effective_ruleset(stored, user_id))
    _BY_USER[user_id] = (key, compiled)
    _BY_USER.move_to_end(user_id)
    while len(_BY_USER) > MAX_CACHED_USERS:
        _BY_USER.popitem(last=False)
    return compiled


def evaluate(
    ruleset: RuleSet | CompiledRuleSet,
    event: Mapping[str, Any] | PreparedEvent,
    context: PushContext,
) -> PushActions | None:
    """The result of the highest-priority enabled rule the event matches, or None when no
    rule matches. Events the user sent themselves never notify them (push.md), so they
    give None too. A matching rule with no `notify` action gives `is_notify=False`."""
    compiled = ruleset if isinstance(ruleset, CompiledRuleSet) else compile_ruleset(ruleset)
    prepared = event if isinstance(event, PreparedEvent) else PreparedEvent(event)
    if prepared.sender == context.user_id:
        return None
    results = prepared.results
    for key, test, check, result in compiled._flat:
        if test is not None:
            outcome = results.get(key)
            if outcome is None:
                outcome = results[key] = test(prepared)
            if not outcome:
                continue
        if check is None or check(prepared, context):
            return result
    return None
