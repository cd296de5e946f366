"""The authorization rules of every room version, evaluated against a given state.

`check_auth` is called with three different states for each event (its auth events, the
state before it, the current state: server-server-api.md, "Checks performed on receipt of
a PDU") and by state resolution's iterative auth checks, so it is a pure function of the
event and the state map and reads only the few slots the rules need.

The rules run in the order of the version's list; the first that decides wins. Where
versions differ the code branches on `RoomVersion` feature flags, never on version
numbers, and errors carry the rule's number as the version's own document prints it.
"""

from __future__ import annotations

from myelin.core.auth import numbering
from myelin.core.auth.errors import AuthError
from myelin.core.auth.membership import authoriser_of, check_member_event, membership_of
from myelin.core.auth.powerchange import check_power_levels_event
from myelin.core.auth.powerlevels import (
    CREATE,
    AuthState,
    get_named_level,
    get_power_level,
    get_required_level,
)
from myelin.core.auth.userids import is_valid_user_id, server_of
from myelin.core.events import Event
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, EventFormat


def check_auth(event: Event, auth_state: AuthState) -> None:
    """Raise AuthError if `event` is not authorised by `auth_state`; return if it is.

    `auth_state` maps `(type, state_key)` to events and must include the create event
    (in every version, v12 too). The rule on the event's own `auth_events` list is
    `check_auth_event_list`; whether auth events were rejected is the caller's to check.
    """
    version = event.room_version
    if event.type == "m.room.create":
        _check_create(event)
        return

    create = auth_state.get(CREATE)
    if version.room_id_from_create_event:
        rule = numbering.top(version, "room_id")
        if create is None:
            raise AuthError(rule, "no create event in the state")
        if event.room_id != "!" + create.event_id[1:]:
            raise AuthError(rule, "room_id is not derived from the create event's ID")
    elif create is None:
        raise AuthError(
            f"{numbering.top(version, 'auth_events')}.4", "no create event in the state"
        )
    elif create.room_id != event.room_id:
        raise AuthError(
            f"{numbering.top(version, 'auth_events')}.5", "the create event is from another room"
        )

    if create.content.get("m.federate") is False and event.origin != create.origin:
        raise AuthError(
            numbering.top(version, "federate"),
            "the room does not federate and the sender is on another server",
        )

    if version.special_case_aliases_auth and event.type == "m.room.aliases":
        rule = numbering.top(version, "aliases")
        if event.state_key is None:
            raise AuthError(f"{rule}.1", "m.room.aliases without a state_key")
        if event.state_key != event.origin:
            raise AuthError(f"{rule}.2", "m.room.aliases state_key is not the sender's server")
        return

    if event.type == "m.room.member":
        check_member_event(event, auth_state)
        return

    if membership_of(event.sender, auth_state) != "join":
        raise AuthError(numbering.top(version, "sender_joined"), f"{event.sender} is not joined")

    sender_level = get_power_level(event.sender, auth_state)
    if event.type == "m.room.third_party_invite":
        if sender_level >= get_named_level("invite", auth_state):
            return
        raise AuthError(
            f"{numbering.top(version, 'third_party_invite')}.1",
            "third-party invites need the invite level",
        )

    required = get_required_level(event.type, event.is_state, auth_state)
    if required > sender_level:
        raise AuthError(
            numbering.top(version, "required_level"),
            f"{event.type} needs level {required}, sender has {sender_level}",
        )

    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        raise AuthError(
            numbering.top(version, "state_key"),
            "a state_key starting with @ must be the sender's user ID",
        )

    if event.type == "m.room.power_levels":
        check_power_levels_event(event, auth_state, sender_level)
        return

    if numbering.has_redaction_rule(version) and event.type == "m.room.redaction":
        if sender_level >= get_named_level("redact", auth_state):
            return
        target = event.redacts or ""
        if server_of(target) and server_of(target) == server_of(event.event_id):
            return
        raise AuthError(
            f"{numbering.top(version, 'redaction')}.3",
            "redacting another server's event needs the redact level",
        )


def _check_create(event: Event) -> None:
    """Rule 1: a create event stands alone; its content fixes the room's version and
    creators."""
    version = event.room_version

    def fail(step: int, reason: str) -> AuthError:
        return AuthError(f"1.{step}", reason)

    if event.pdu.get("prev_events"):
        raise fail(1, "a create event has no prev_events")
    if version.room_id_from_create_event:
        if "room_id" in event.pdu:
            raise fail(2, "a v12 create event has no room_id; the room ID comes from its ID")
    elif not server_of(event.room_id) or server_of(event.room_id) != event.origin:
        raise fail(2, "the room ID's server is not the sender's")
    content = event.content
    declared = content.get("room_version", "1")
    if not isinstance(declared, str) or declared not in KNOWN_ROOM_VERSIONS:
        raise fail(3, f"unknown room_version {content['room_version']!r}")
    if version.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise fail(4, "additional_creators must be a list of user IDs")
    if not version.implicit_room_creator and "creator" not in content:
        raise fail(4, "create content has no creator")


def required_signature_servers(event: Event) -> frozenset[str]:
    """The servers whose signatures an event must carry for the rules to hold.

    The sender's server always; in v1-v2 also the server of the event ID; from v8 also the
    server of `join_authorised_via_users_server` on a member event that has it. Signature
    verification (which holds the keys) checks each of these; the rules only check that
    the authorising server's signature is present.
    """
    servers = {event.origin}
    if event.room_version.event_format is EventFormat.V1 and server_of(event.event_id):
        servers.add(server_of(event.event_id))
    if event.room_version.restricted_join_rule and event.type == "m.room.member":
        authoriser = authoriser_of(event)
        if isinstance(authoriser, str) and server_of(authoriser):
            servers.add(server_of(authoriser))
    return frozenset(servers)
