"""The typed model of push rules and their exact wire format (push_rule.yaml, push_condition.yaml).

Rules arrive as JSON from clients (PUT /pushrules/...) and from storage; `parse_*` turn
that JSON into frozen values or raise `PushRuleError` with the Matrix error the endpoints
document, so nothing malformed is ever stored. `to_json` gives back the wire format of
GET /pushrules/, which is also the content of the `m.push_rules` account-data event.

Conditions of a kind this server does not know are kept as `UnknownCondition` (a client
may use a newer kind): push.md says an unrecognised condition never matches, which makes
its rule inert rather than invalid.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from myelin.push.errors import PushRuleError, invalid_param, missing_param

MAX_SAFE_INTEGER = 2**53 - 1

ScalarValue = str | int | bool | None
"""The non-compound canonical JSON values `event_property_*` conditions compare."""

Action = str | Mapping[str, Any]
"""`"notify"` or a `{"set_tweak": name, "value": ...}` object, as on the wire."""

HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})
"""Actions older versions defined. push.md says to ignore them: they are kept in the rule
as the client wrote it (GET gives back what PUT set, as Synapse does and Sytest checks)
but never take effect (`effective_actions` drops them)."""


class RuleKind(enum.Enum):
    """The five kinds of rule, declared in the order they are checked."""

    OVERRIDE = "override"
    CONTENT = "content"
    ROOM = "room"
    SENDER = "sender"
    UNDERRIDE = "underride"


RULE_KINDS: tuple[RuleKind, ...] = tuple(RuleKind)
"""All kinds in priority order (override first, underride last)."""


def parse_kind(kind: str) -> RuleKind:
    """The kind named in a request path, or M_INVALID_PARAM for an unknown one."""
    try:
        return RuleKind(kind)
    except ValueError:
        raise invalid_param(f"Unknown push rule kind: {kind!r}") from None


# --- conditions ------------------------------------------------------------------------


@dataclass(frozen=True)
class EventMatch:
    """Glob match of the event property at `key` (whole value; word-bounded on content.body)."""

    key: str
    pattern: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": "event_match", "key": self.key, "pattern": self.pattern}


@dataclass(frozen=True)
class EventPropertyIs:
    """Exact match of a scalar event property."""

    key: str
    value: ScalarValue

    def to_json(self) -> dict[str, Any]:
        return {"kind": "event_property_is", "key": self.key, "value": self.value}


@dataclass(frozen=True)
class EventPropertyContains:
    """An array event property holding exactly this scalar."""

    key: str
    value: ScalarValue

    def to_json(self) -> dict[str, Any]:
        return {"kind": "event_property_contains", "key": self.key, "value": self.value}


@dataclass(frozen=True)
class ContainsDisplayName:
    """`content.body` mentions the user's display name in the room (deprecated since v1.17)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "contains_display_name"}


_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")


@dataclass(frozen=True)
class RoomMemberCount:
    """Compares the room's member count; `is_` is the wire form, e.g. `"2"` or `"<=10"`."""

    is_: str
    op: str = field(init=False, repr=False, compare=False)
    count: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = _MEMBER_COUNT.fullmatch(self.is_)
        if m is None:
            raise invalid_param(
                f"room_member_count 'is' must be a decimal integer optionally prefixed by "
                f"==, <, >, <= or >=, not {self.is_!r}"
            )
        object.__setattr__(self, "op", m.group(1) or "==")
        object.__setattr__(self, "count", int(m.group(2)))

    def to_json(self) -> dict[str, Any]:
        return {"kind": "room_member_count", "is": self.is_}


@dataclass(frozen=True)
class SenderNotificationPermission:
    """The sender's power level reaches `notifications[key]` of the room's power levels."""

    key: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": "sender_notification_permission", "key": self.key}


@dataclass(frozen=True)
class UnknownCondition:
    """A condition of a kind this server does not implement; it never matches."""

    kind: str
    raw: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)


Condition = (
    EventMatch
    | EventPropertyIs
    | EventPropertyContains
    | ContainsDisplayName
    | RoomMemberCount
    | SenderNotificationPermission
    | UnknownCondition
)


def is_scalar(value: object) -> bool:
    """True for the values `event_property_*` compare: str, bool, null, safe integers."""
    if value is None or isinstance(value, str | bool):
        return True
    return type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def _string_param(raw: Mapping[str, Any], name: str, kind: str) -> str:
    if name not in raw:
        raise missing_param(f"{kind} condition needs '{name}'")
    value = raw[name]
    if not isinstance(value, str):
        raise invalid_param(f"{kind} condition '{name}' must be a string")
    return value


def _scalar_param(raw: Mapping[str, Any], kind: str) -> ScalarValue:
    if "value" not in raw:
        raise missing_param(f"{kind} condition needs 'value'")
    value = raw["value"]
    if not is_scalar(value):
        raise invalid_param(
            f"{kind} condition 'value' must be a string, a safe integer, a boolean or null"
        )
    result: ScalarValue = value
    return result


def parse_condition(raw: object) -> Condition:
    """A condition from its JSON form; PushRuleError for a malformed known kind."""
    if not isinstance(raw, Mapping):
        raise invalid_param("A push condition must be an object")
    kind = raw.get("kind")
    if not isinstance(kind, str):
        raise invalid_param("A push condition needs a string 'kind'")
    if kind == "event_match":
        return EventMatch(_string_param(raw, "key", kind), _string_param(raw, "pattern", kind))
    if kind == "event_property_is":
        return EventPropertyIs(_string_param(raw, "key", kind), _scalar_param(raw, kind))
    if kind == "event_property_contains":
        return EventPropertyContains(_string_param(raw, "key", kind), _scalar_param(raw, kind))
    if kind == "contains_display_name":
        return ContainsDisplayName()
    if kind == "room_member_count":
        return RoomMemberCount(_string_param(raw, "is", kind))
    if kind == "sender_notification_permission":
        return SenderNotificationPermission(_string_param(raw, "key", kind))
    return UnknownCondition(kind, dict(raw))


def parse_conditions(raw: object) -> tuple[Condition, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise invalid_param("'conditions' must be an array")
    return tuple(parse_condition(item) for item in raw)


# --- actions ---------------------------------------------------------------------------


def parse_actions(raw: object) -> tuple[Action, ...]:
    """Validated actions, historical `dont_notify`/`coalesce` kept (see HISTORICAL_ACTIONS)."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise invalid_param("'actions' must be an array")
    actions: list[Action] = []
    for item in raw:
        if isinstance(item, str):
            if item != "notify" and item not in HISTORICAL_ACTIONS:
                raise invalid_param(f"Unrecognised push action: {item!r}")
            actions.append(item)
        elif isinstance(item, Mapping):
            tweak = item.get("set_tweak")
            if not isinstance(tweak, str):
                raise invalid_param("An object push action needs a string 'set_tweak'")
            actions.append(MappingProxyType(dict(item)))  # read-only: rules are shared
        else:
            raise invalid_param("A push action must be a string or an object")
    return tuple(actions)


def effective_actions(actions: Sequence[Action]) -> tuple[Action, ...]:
    """The actions that take effect: the historical ones dropped."""
    return tuple(a for a in actions if not (isinstance(a, str) and a in HISTORICAL_ACTIONS))


# --- rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PushRule:
    """One rule. `conditions` apply to override/underride rules, `pattern` to content rules;
    room and sender rules are keyed by their `rule_id` (the room or user ID)."""

    kind: RuleKind
    rule_id: str
    actions: tuple[Action, ...]
    enabled: bool = True
    default: bool = False
    conditions: tuple[Condition, ...] = ()
    pattern: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The rule as GET /pushrules/ shows it."""
        out: dict[str, Any] = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": [a if isinstance(a, str) else dict(a) for a in self.actions],
        }
        if self.kind in (RuleKind.OVERRIDE, RuleKind.UNDERRIDE):
            out["conditions"] = [c.to_json() for c in self.conditions]
        elif self.kind is RuleKind.CONTENT:
            out["pattern"] = self.pattern
        return out


def validate_user_rule_id(kind: RuleKind, rule_id: str) -> None:
    """Refuse IDs a user may not create: empty, server-default (leading `.`), `/` or `\\`.

    Room and sender rules are keyed by a room or user ID, but any other ID is accepted
    as Synapse does (clients and Sytest use room aliases): such a rule never matches."""
    if not rule_id:
        raise invalid_param("The push rule ID must not be empty")
    if rule_id.startswith("."):
        raise invalid_param("Push rule IDs starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise invalid_param("Push rule IDs must not contain '/' or '\\'")


def parse_user_rule(
    kind: RuleKind, rule_id: str, body: object, *, enabled: bool = True
) -> PushRule:
    """A user-defined rule from a PUT /pushrules/global/{kind}/{ruleId} body."""
    validate_user_rule_id(kind, rule_id)
    if not isinstance(body, Mapping):
        raise PushRuleError(400, "M_BAD_JSON", "The push rule must be a JSON object")
    if "actions" not in body:
        raise missing_param("The push rule needs 'actions'")
    actions = parse_actions(body["actions"])
    conditions: tuple[Condition, ...] = ()
    pattern: str | None = None
    if kind in (RuleKind.OVERRIDE, RuleKind.UNDERRIDE):
        conditions = parse_conditions(body.get("conditions", []))
    elif kind is RuleKind.CONTENT:
        if "pattern" not in body:
            raise missing_param("A content rule needs 'pattern'")
        pattern = body["pattern"]
        if not isinstance(pattern, str):
            raise invalid_param("'pattern' must be a string")
    return PushRule(kind, rule_id, actions, enabled, False, conditions, pattern)


def parse_stored_rule(kind: RuleKind, raw: object) -> PushRule:
    """A user rule from its wire form as stored (`rule_id`, `enabled`, `actions`, ...)."""
    if not isinstance(raw, Mapping):
        raise invalid_param("A stored push rule must be an object")
    rule_id = raw.get("rule_id")
    if not isinstance(rule_id, str):
        raise invalid_param("A stored push rule needs a string 'rule_id'")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise invalid_param("'enabled' must be a boolean")
    return parse_user_rule(kind, rule_id, raw, enabled=enabled)
