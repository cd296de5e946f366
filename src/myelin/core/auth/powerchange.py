"""The rule for `m.room.power_levels` events: who may set which level.

A user may only touch levels at or below their own, may not raise anyone above
themselves, and may not demote a peer or superior (they may demote themselves). From v10
every value must be a real integer; in v12 creators may not be listed at all, since their
level is infinite and fixed by the create event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from myelin.core.auth import numbering
from myelin.core.auth.errors import AuthError
from myelin.core.auth.powerlevels import (
    LEVEL_KEYS,
    POWER_LEVELS,
    AuthState,
    parse_level,
    room_creators,
)
from myelin.core.auth.userids import is_valid_user_id
from myelin.core.events import Event
from myelin.core.roomversions import RoomVersion

_MISSING = object()


def _map(content: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = content.get(key)
    return value if isinstance(value, dict) else {}


def _check_shape(event: Event) -> None:
    """v10+ rules on value types, and every version's rule on `users`."""
    version = event.room_version
    content = event.content
    if version.integer_only_power_levels:
        for key in LEVEL_KEYS:
            if key in content and type(content[key]) is not int:
                raise AuthError(numbering.power(version, "fields"), f"{key} is not an integer")
        for key in ("events", "notifications"):
            if key not in content:
                continue
            value = content[key]
            if not isinstance(value, dict) or any(type(v) is not int for v in value.values()):
                raise AuthError(
                    numbering.power(version, "maps"),
                    f"{key} is not an object with integer values",
                )
    users = content.get("users", _MISSING)
    if users is _MISSING:
        return
    rule = numbering.power(version, "users")
    if not isinstance(users, dict):
        raise AuthError(rule, "users is not an object")
    for user_id, level in users.items():
        if not is_valid_user_id(user_id):
            raise AuthError(rule, f"users has an invalid user ID {user_id!r}")
        if parse_level(level, version) is None:
            raise AuthError(rule, f"users has a level for {user_id} that is not an integer")


def _changed(old: Mapping[str, Any], new: Mapping[str, Any], key: str) -> bool:
    """Added, changed or removed; values compare as JSON (so `"50"` differs from `50`)."""
    if (key in old) != (key in new):
        return True
    return key in old and (type(old[key]) is not type(new[key]) or old[key] != new[key])


def _level(value: Any, version: RoomVersion, rule: str, what: str) -> int:
    level = parse_level(value, version)
    if level is None:
        raise AuthError(rule, f"{what} is not a power level: {value!r}")
    return level


def _old_level(value: Any, version: RoomVersion) -> int | None:
    """A value already in room state; None if it cannot be read as a level (possible in
    v1-v9, which only validate `users`), in which case it limits nobody."""
    return parse_level(value, version)


def check_power_levels_event(
    event: Event, auth_state: AuthState, sender_level: int | float
) -> None:
    """Apply the `m.room.power_levels` rule; raises AuthError, returns if allowed."""
    version = event.room_version
    _check_shape(event)
    content = event.content
    if version.privileged_creators:
        listed = room_creators(auth_state).intersection(_map(content, "users"))
        if listed:
            raise AuthError(
                numbering.power(version, "creators"),
                f"room creators may not be listed in users: {', '.join(sorted(listed))}",
            )
    previous = auth_state.get(POWER_LEVELS)
    if previous is None:
        return
    old = previous.content

    rule = numbering.power(version, "levels")
    for key in LEVEL_KEYS:
        if not _changed(old, content, key):
            continue
        if key in old:
            current = _old_level(old[key], version)
            if current is not None and current > sender_level:
                raise AuthError(rule, f"{key} is currently {current}, above the sender's level")
        if key in content and _level(content[key], version, rule, key) > sender_level:
            raise AuthError(rule, f"{key} would be raised above the sender's level")

    maps = ["events"]
    if version.limit_notifications_power_levels:
        maps.append("notifications")
    old_rule = numbering.power(version, "maps_old")
    new_rule = numbering.power(version, "maps_new")
    for name in maps:
        old_map, new_map = _map(old, name), _map(content, name)
        for key in old_map:
            if _changed(old_map, new_map, key):
                current = _old_level(old_map[key], version)
                if current is not None and current > sender_level:
                    raise AuthError(
                        old_rule, f"{name}[{key}] is currently {current}, above the sender's level"
                    )
        for key in new_map:
            if _changed(old_map, new_map, key):
                what = f"{name}[{key}]"
                if _level(new_map[key], version, new_rule, what) > sender_level:
                    raise AuthError(new_rule, f"{what} would be set above the sender's level")

    old_users, new_users = _map(old, "users"), _map(content, "users")
    users_old_rule = numbering.power(version, "users_old")
    for user_id in old_users:
        if user_id == event.sender or not _changed(old_users, new_users, user_id):
            continue
        current = _old_level(old_users[user_id], version)
        if current is not None and current >= sender_level:
            raise AuthError(
                users_old_rule,
                f"{user_id} has level {current}, not below the sender's; it cannot be changed",
            )
    users_new_rule = numbering.power(version, "users_new")
    for user_id in new_users:
        if not _changed(old_users, new_users, user_id):
            continue
        if _level(new_users[user_id], version, users_new_rule, user_id) > sender_level:
            raise AuthError(users_new_rule, f"{user_id} would be raised above the sender's level")
