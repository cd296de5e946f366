"""The authorization rules of rooms v1-v12 (content/rooms/v*.md, "Authorisation rules").

Pure functions of an event and a room state; no I/O, no keys, no caches. The roomserver
checks each event three times (against its auth events, the state before it and the
current state) and state resolution runs the same `check_auth` in its iterative auth
checks.
"""

from myelin.core.auth.errors import AuthError
from myelin.core.auth.membership import join_rule, membership_of
from myelin.core.auth.powerlevels import (
    TOMBSTONE_LEVEL_V12,
    AuthState,
    can_redact,
    get_named_level,
    get_notification_level,
    get_power_level,
    get_required_level,
    initial_power_levels_content,
    parse_level,
    room_creators,
)
from myelin.core.auth.rules import check_auth, required_signature_servers
from myelin.core.auth.selection import (
    auth_types_for_event,
    check_auth_event_list,
    state_from_auth_events,
)
from myelin.core.auth.userids import is_valid_user_id

__all__ = [
    "TOMBSTONE_LEVEL_V12",
    "AuthError",
    "AuthState",
    "auth_types_for_event",
    "can_redact",
    "check_auth",
    "check_auth_event_list",
    "get_named_level",
    "get_notification_level",
    "get_power_level",
    "get_required_level",
    "initial_power_levels_content",
    "is_valid_user_id",
    "join_rule",
    "membership_of",
    "parse_level",
    "required_signature_servers",
    "room_creators",
    "state_from_auth_events",
]
