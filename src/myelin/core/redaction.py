"""The redaction algorithm of each room version (content/rooms/fragments/v*-redactions.md).

Redaction strips an event down to the keys the protocol needs, so that a redacted event still
authorizes, still takes its place in the room graph and still verifies: signatures cover the
redacted form, and reference hashes (event IDs from room version 3) are taken over it.
Which keys survive depends on the room version's `RedactionRules`; the tables below are the
specification's lists, one entry per rule set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from myelin.core.roomversions import RedactionRules, RoomVersion

__all__ = ["RedactionError", "redact"]

_TOP_LEVEL_V1: frozenset[str] = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
"""Top-level keys kept by rooms v1-v10."""

_TOP_LEVEL_V11: frozenset[str] = _TOP_LEVEL_V1 - {"prev_state", "origin", "membership"}
"""Rooms v11+ no longer keep `origin`, `membership` and `prev_state`."""

_POWER_LEVELS_V1 = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)

_ContentRules = Mapping[str, frozenset[str] | None]
"""Per event type, the content keys that survive; `None` means the whole content does."""

_CONTENT_V1: _ContentRules = {
    "m.room.member": frozenset({"membership"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule"}),
    "m.room.power_levels": _POWER_LEVELS_V1,
    "m.room.aliases": frozenset({"aliases"}),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}

_CONTENT_V6: _ContentRules = {k: v for k, v in _CONTENT_V1.items() if k != "m.room.aliases"}
"""v6: `m.room.aliases` content is no longer protected."""

_CONTENT_V8: _ContentRules = {**_CONTENT_V6, "m.room.join_rules": frozenset({"join_rule", "allow"})}
"""v8: restricted rooms keep their `allow` list."""

_CONTENT_V9: _ContentRules = {
    **_CONTENT_V8,
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
}
"""v9: a restricted join keeps the user that authorised it."""

_CONTENT_V11: _ContentRules = {
    **_CONTENT_V9,
    "m.room.create": None,
    "m.room.power_levels": _POWER_LEVELS_V1 | {"invite"},
    "m.room.redaction": frozenset({"redacts"}),
}
"""v11: whole create content, `invite` level, `redacts` in content (and, for members, the
`signed` part of `third_party_invite`, handled in `_redact_content`)."""

_RULES: Mapping[RedactionRules, tuple[frozenset[str], _ContentRules]] = {
    RedactionRules.V1: (_TOP_LEVEL_V1, _CONTENT_V1),
    RedactionRules.V6: (_TOP_LEVEL_V1, _CONTENT_V6),
    RedactionRules.V8: (_TOP_LEVEL_V1, _CONTENT_V8),
    RedactionRules.V9: (_TOP_LEVEL_V1, _CONTENT_V9),
    RedactionRules.V11: (_TOP_LEVEL_V11, _CONTENT_V11),
}


class RedactionError(ValueError):
    """The value given to `redact` is not an event object."""


def _redact_content(
    event_type: Any, content: Any, rules: _ContentRules, redaction: RedactionRules
) -> dict[str, Any]:
    if not isinstance(content, Mapping) or not isinstance(event_type, str):
        return {}
    if event_type not in rules:
        return {}
    allowed = rules[event_type]
    if allowed is None:
        return dict(content)
    kept = {k: v for k, v in content.items() if k in allowed}
    if redaction is RedactionRules.V11 and event_type == "m.room.member":
        invite = content.get("third_party_invite")
        if isinstance(invite, Mapping) and "signed" in invite:
            kept["third_party_invite"] = {"signed": invite["signed"]}
    return kept


def redact(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """A new dict: `pdu` with every key the room version does not protect removed.

    The input is not modified. Nested values that survive (for example the `users` map of
    power levels) are shared with the input, not copied: treat both as read-only. A missing
    `content` stays missing; a `content` that is not an object becomes `{}`.
    """
    if not isinstance(pdu, Mapping):
        raise RedactionError(f"an event must be a JSON object, not {type(pdu).__name__}")
    top_level, content_rules = _RULES[room_version.redaction]
    redacted = {k: v for k, v in pdu.items() if k in top_level}
    if "content" in redacted:
        redacted["content"] = _redact_content(
            pdu.get("type"), redacted["content"], content_rules, room_version.redaction
        )
    return redacted
