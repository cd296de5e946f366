"""Power levels as the authorization rules read them.

Every level is computed from the room state given to the rules, never from a cache: the
same event is checked against three different states (its auth events, the state before it,
the current state) and each must see its own levels. Lookups are lazy (one user, one event
type), so a check costs the same in a room of ten members as in one of ten thousand.

Old room versions accept levels written as strings (v1-v9, "stringy power levels") and as
floats (v1-v5, "floaty power levels"); from v10 only integers count. Room v12 gives the
room's creators an infinite level that no power levels event can change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from myelin.core.auth.userids import server_of
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import RoomVersion

AuthState = Mapping[StateKey, Event]
"""Room state as the rules see it: `(type, state_key)` to event."""

CREATE: Final[StateKey] = ("m.room.create", "")
POWER_LEVELS: Final[StateKey] = ("m.room.power_levels", "")
JOIN_RULES: Final[StateKey] = ("m.room.join_rules", "")

LEVEL_KEYS: Final = (
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
)
"""The plain integer properties of `m.room.power_levels` content."""

NAMED_DEFAULTS: Final[Mapping[str, int]] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}
"""Defaults when a property (or the whole event) is absent (server-server-api.md,
"Definitions"; m.room.power_levels schema)."""

CREATOR_LEVEL_WITHOUT_POWER_LEVELS: Final = 100
"""Rooms v1-v11: with no power levels event, the creator has level 100 and everyone else 0."""

TOMBSTONE_LEVEL_V12: Final = 150
"""Room v12: the initial power levels must give `m.room.tombstone` a level above
`state_default`; the spec's example, and our default, is 150 (m.room.power_levels schema)."""

_STRINGY = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
"""v1-v9: a level may be a string holding a base-10 integer, optionally signed, with leading
zeroes and surrounding whitespace (fragments/v1-stringy-power-levels.md)."""


def parse_level(value: Any, version: RoomVersion) -> int | None:
    """The integer a power level value stands for in `version`, or None if it is not one.

    Booleans are not levels even though Python counts them as integers.
    """
    if type(value) is int:
        return value
    if version.integer_only_power_levels:
        return None
    if isinstance(value, str):
        if not _STRINGY.fullmatch(value):
            return None
        try:
            return int(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return None
    if isinstance(value, float) and not version.strict_canonical_json and math.isfinite(value):
        return int(value)  # truncation toward zero, as the floaty fragment asks
    return None


def create_event(auth_state: AuthState) -> Event | None:
    return auth_state.get(CREATE)


def _version_of(auth_state: AuthState) -> RoomVersion | None:
    for key in (CREATE, POWER_LEVELS):
        event = auth_state.get(key)
        if event is not None:
            return event.room_version
    return None


def room_creators(auth_state: AuthState) -> frozenset[str]:
    """The room's creators, by the rules of the create event's room version.

    v1-v10: `content.creator` (which rule 1.4 requires); v11: the create event's sender;
    v12: the sender plus every string in `content.additional_creators`.
    """
    create = auth_state.get(CREATE)
    if create is None:
        return frozenset()
    version = create.room_version
    if version.privileged_creators:
        extra = create.content.get("additional_creators")
        others = [u for u in extra if isinstance(u, str)] if isinstance(extra, list) else []
        return frozenset([create.sender, *others])
    if version.implicit_room_creator:
        return frozenset([create.sender])
    creator = create.content.get("creator")
    return frozenset([creator if isinstance(creator, str) else create.sender])


def _named(content: Mapping[str, Any], name: str, version: RoomVersion) -> int:
    level = parse_level(content.get(name), version)
    return NAMED_DEFAULTS[name] if level is None else level


def get_power_level(user_id: str, auth_state: AuthState) -> int | float:
    """`user_id`'s power level: `math.inf` for a v12 creator, else from power levels.

    Without a power levels event the creator has 100 (v1-v11) and everyone else 0.
    """
    version = _version_of(auth_state)
    if version is None:
        return 0
    if version.privileged_creators and user_id in room_creators(auth_state):
        return math.inf
    power_levels = auth_state.get(POWER_LEVELS)
    if power_levels is None:
        if not version.privileged_creators and user_id in room_creators(auth_state):
            return CREATOR_LEVEL_WITHOUT_POWER_LEVELS
        return 0
    content = power_levels.content
    users = content.get("users")
    if isinstance(users, dict) and user_id in users:
        level = parse_level(users[user_id], version)
        if level is not None:
            return level
    return _named(content, "users_default", version)


def get_required_level(event_type: str, is_state: bool, auth_state: AuthState) -> int:
    """The *required power level* to send an event of this type (server-server-api.md):
    `events[type]`, else `state_default` (50) or `events_default` (0)."""
    power_levels = auth_state.get(POWER_LEVELS)
    if power_levels is None:
        return NAMED_DEFAULTS["state_default" if is_state else "events_default"]
    version = power_levels.room_version
    content = power_levels.content
    events = content.get("events")
    if isinstance(events, dict) and event_type in events:
        level = parse_level(events[event_type], version)
        if level is not None:
            return level
    return _named(content, "state_default" if is_state else "events_default", version)


def get_named_level(name: str, auth_state: AuthState) -> int:
    """The *invite*, *kick*, *ban* or *redact* level (or another property of LEVEL_KEYS)."""
    if name not in NAMED_DEFAULTS:
        raise ValueError(f"{name!r} is not a power levels property")
    power_levels = auth_state.get(POWER_LEVELS)
    if power_levels is None:
        return NAMED_DEFAULTS[name]
    return _named(power_levels.content, name, power_levels.room_version)


def get_notification_level(key: str, auth_state: AuthState) -> int:
    """The level needed to trigger a notification of this kind (`room`: 50 by default)."""
    power_levels = auth_state.get(POWER_LEVELS)
    default = 50 if key == "room" else 0
    if power_levels is None:
        return default
    notifications = power_levels.content.get("notifications")
    if isinstance(notifications, dict):
        level = parse_level(notifications.get(key), power_levels.room_version)
        if level is not None:
            return level
    return default


def can_redact(redaction_sender: str, original_sender: str, auth_state: AuthState) -> bool:
    """Whether an authorised redaction should be applied to its target (rooms v3+,
    "Handling redactions"): the redacting user has the *redact level*, or both senders are
    on the same server."""
    if get_power_level(redaction_sender, auth_state) >= get_named_level("redact", auth_state):
        return True
    return server_of(redaction_sender) == server_of(original_sender) != ""


def initial_power_levels_content(version: RoomVersion, creator: str) -> dict[str, Any]:
    """Our default power levels for a new room, before any client override.

    v1-v11 list the creator at 100; v12 must not list creators (their level is infinite)
    and gives `m.room.tombstone` a level above `state_default`.
    """
    events: dict[str, int] = {
        "m.room.name": 50,
        "m.room.power_levels": 100,
        "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50,
        "m.room.avatar": 50,
        "m.room.tombstone": TOMBSTONE_LEVEL_V12 if version.privileged_creators else 100,
        "m.room.server_acl": 100,
        "m.room.encryption": 100,
    }
    content: dict[str, Any] = {
        "users": {} if version.privileged_creators else {creator: 100},
        "users_default": 0,
        "events": events,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    }
    return content
