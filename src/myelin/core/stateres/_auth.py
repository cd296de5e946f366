"""The two questions state resolution asks of the authorization rules.

The rules themselves live in `myelin.core.auth`; this module only adapts their API to the
shape the algorithms use, so the algorithms never depend on more of it than this.
"""

from __future__ import annotations

from collections.abc import Mapping

from myelin.core.auth import AuthError, auth_types_for_event, check_auth, get_power_level
from myelin.core.events import Event, StateKey


def allowed(event: Event, auth_state: Mapping[StateKey, Event]) -> bool:
    """Whether the auth rules allow `event` against `auth_state`."""
    try:
        check_auth(event, auth_state)
    except AuthError:
        return False
    return True


def auth_types(event: Event) -> list[StateKey]:
    """The state slots the auth rules consult for `event`."""
    return auth_types_for_event(
        event.room_version,
        event_type=event.type,
        sender=event.sender,
        state_key=event.state_key,
        content=event.content,
    )


def sender_power_level(event: Event, auth_events: Mapping[StateKey, Event]) -> int | float:
    """The sender's power level according to the event's own auth events.

    This is what the reverse topological power ordering compares; `math.inf` for a room
    creator from room version 12.
    """
    return get_power_level(event.sender, auth_events)
