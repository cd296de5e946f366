"""Which state an event cites as its `auth_events`, and the rule on that list.

An event's `auth_events` are the few state events that give its sender permission
(server-server-api.md, "Auth events selection"). Building an event uses
`auth_types_for_event`; receiving one checks the list it brought with
`check_auth_event_list` before the other rules are evaluated against those events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from myelin.core.auth import numbering
from myelin.core.auth.errors import AuthError
from myelin.core.auth.powerlevels import CREATE, JOIN_RULES, POWER_LEVELS
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import RoomVersion


def auth_types_for_event(
    room_version: RoomVersion,
    *,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> list[StateKey]:
    """The state slots an event of this shape must cite, in a stable order.

    A slot is cited only if the state holds an event there ("if any"); the create event is
    cited up to v11 and never from v12, where the room ID stands for it.
    """
    if event_type == "m.room.create":
        return []
    wanted: list[StateKey] = []
    if not room_version.room_id_from_create_event:
        wanted.append(CREATE)
    wanted += [POWER_LEVELS, ("m.room.member", sender)]
    if event_type == "m.room.member" and state_key is not None:
        wanted.append(("m.room.member", state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            wanted.append(JOIN_RULES)
        if membership == "invite":
            token = _third_party_token(content)
            if token is not None:
                wanted.append(("m.room.third_party_invite", token))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str):
                wanted.append(("m.room.member", authoriser))
    return list(dict.fromkeys(wanted))


def _third_party_token(content: Mapping[str, Any]) -> str | None:
    third_party = content.get("third_party_invite")
    signed = third_party.get("signed") if isinstance(third_party, dict) else None
    token = signed.get("token") if isinstance(signed, dict) else None
    return token if isinstance(token, str) else None


def check_auth_event_list(event: Event, auth_events: Sequence[Event]) -> None:
    """The rule "Considering the event's `auth_events`" (rule 2; rule 3 in v12).

    Checks duplicates, slots the event does not need, the create event (required up to
    v11, forbidden in v12) and the room of every entry. Whether an entry was itself
    rejected is known only to the caller, who must check that separately. A create event
    is decided by the create rule alone, which comes first, so it passes here.
    """
    version = event.room_version
    if event.type == "m.room.create":
        return
    number = numbering.top(version, "auth_events")
    allowed = set(
        auth_types_for_event(
            version,
            event_type=event.type,
            sender=event.sender,
            state_key=event.state_key,
            content=event.content,
        )
    )
    seen: set[StateKey] = set()
    for entry in auth_events:
        if entry.state_key is None:
            raise AuthError(f"{number}.2", f"auth event {entry.event_id} is not a state event")
        key = entry.state_tuple
        if key in seen:
            raise AuthError(f"{number}.1", f"auth events list {key} twice")
        seen.add(key)
        if key == CREATE and version.room_id_from_create_event:
            raise AuthError(f"{number}.2", "the create event must not be listed in auth events")
        if key not in allowed:
            raise AuthError(f"{number}.2", f"auth event {entry.event_id} for {key} is not needed")
    if not version.room_id_from_create_event and CREATE not in seen:
        raise AuthError(f"{number}.4", "auth events do not include the create event")
    for entry in auth_events:
        if entry.room_id != event.room_id:
            raise AuthError(f"{number}.5", f"auth event {entry.event_id} is from another room")


def state_from_auth_events(
    auth_events: Sequence[Event], create: Event | None = None
) -> dict[StateKey, Event]:
    """The state map for checking an event against its own auth events.

    In v12 the create event is not among the auth events but the rules still read it;
    pass it as `create` (the event whose ID the room ID names).
    """
    state = {event.state_tuple: event for event in auth_events if event.state_key is not None}
    if create is not None:
        state[CREATE] = create
    return state
