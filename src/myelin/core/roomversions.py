"""Room versions 1-12 as data.

Every behaviour that differs between room versions is a named field here, so the rest of
the core branches on a capability ("does this version allow knocking?") rather than on a
version number. The values follow content/rooms/v*.md of the specification.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventFormat(enum.Enum):
    """How events are shaped and identified (content/rooms/fragments/*-event-format.md)."""

    V1 = 1
    """Rooms v1-v2: `event_id` is in the event and chosen by the origin server;
    `prev_events`/`auth_events` are `[event_id, {hashes}]` pairs."""
    V2 = 2
    """Room v3: event IDs are `$` + standard unpadded base64 of the reference hash."""
    V3 = 3
    """Rooms v4-v11: event IDs use URL-safe unpadded base64."""
    V4 = 4
    """Room v12: as V3, and the create event carries no `room_id`; the room ID is derived
    from the create event's ID."""


class StateResolution(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    V2_1 = "v2.1"


class RedactionRules(enum.Enum):
    """Which keys survive redaction (content/rooms/fragments/v*-redactions.md)."""

    V1 = 1
    """Rooms v1-v5."""
    V6 = 6
    """Rooms v6-v7: `m.room.aliases` content is no longer preserved."""
    V8 = 8
    """Room v8: `allow` of `m.room.join_rules` is preserved."""
    V9 = 9
    """Rooms v9-v10: `join_authorised_via_users_server` of `m.room.member` is preserved."""
    V11 = 11
    """Rooms v11+: all create content, `invite` in power levels, `signed` in
    third-party invites, `redacts` in redaction content; fewer top-level keys kept."""


@dataclass(frozen=True, slots=True)
class RoomVersion:
    """What one room version means, as flags the core branches on."""

    identifier: str
    stable: bool
    event_format: EventFormat
    state_resolution: StateResolution
    redaction: RedactionRules
    enforce_key_validity: bool
    """v5+: a signing key must be valid at the event's `origin_server_ts`."""
    strict_canonical_json: bool
    """v6+: floats and integers outside ±(2^53-1) are rejected in events."""
    special_case_aliases_auth: bool
    """v1-v5: `m.room.aliases` events have their own auth rule (state key = sender's domain)."""
    limit_notifications_power_levels: bool
    """v6+: changes to `notifications` in power levels are checked like other levels."""
    knock_join_rule: bool
    """v7+: the `knock` join rule and `knock` membership."""
    restricted_join_rule: bool
    """v8+: the `restricted` join rule with `join_authorised_via_users_server`."""
    knock_restricted_join_rule: bool
    """v10+: the `knock_restricted` join rule."""
    integer_only_power_levels: bool
    """v10+: power level values must be integers (no stringy numbers)."""
    implicit_room_creator: bool
    """v11+: the creator is the create event's `sender`; `creator` in content is not used."""
    redacts_in_content: bool
    """v11+: an `m.room.redaction` names its target in `content.redacts`."""
    privileged_creators: bool
    """v12+: creators (sender of the create event plus `additional_creators`) have infinite
    power, may not appear in power levels' `users`, and tombstones default to level 150."""
    room_id_from_create_event: bool
    """v12+: the room ID is `!` + the create event's ID without its sigil; the create event
    has no `room_id` and is not listed in `auth_events`."""

    @property
    def uses_reference_hash_event_ids(self) -> bool:
        return self.event_format is not EventFormat.V1


def _version(
    identifier: str,
    *,
    event_format: EventFormat,
    state_resolution: StateResolution,
    redaction: RedactionRules,
    since: int,
) -> RoomVersion:
    """Build a stable version whose feature flags follow from its number."""
    return RoomVersion(
        identifier=identifier,
        stable=True,
        event_format=event_format,
        state_resolution=state_resolution,
        redaction=redaction,
        enforce_key_validity=since >= 5,
        strict_canonical_json=since >= 6,
        special_case_aliases_auth=since <= 5,
        limit_notifications_power_levels=since >= 6,
        knock_join_rule=since >= 7,
        restricted_join_rule=since >= 8,
        knock_restricted_join_rule=since >= 10,
        integer_only_power_levels=since >= 10,
        implicit_room_creator=since >= 11,
        redacts_in_content=since >= 11,
        privileged_creators=since >= 12,
        room_id_from_create_event=since >= 12,
    )


def _format(n: int) -> EventFormat:
    if n <= 2:
        return EventFormat.V1
    if n == 3:
        return EventFormat.V2
    if n <= 11:
        return EventFormat.V3
    return EventFormat.V4


def _redaction(n: int) -> RedactionRules:
    if n <= 5:
        return RedactionRules.V1
    if n <= 7:
        return RedactionRules.V6
    if n == 8:
        return RedactionRules.V8
    if n <= 10:
        return RedactionRules.V9
    return RedactionRules.V11


def _state_res(n: int) -> StateResolution:
    if n == 1:
        return StateResolution.V1
    if n <= 11:
        return StateResolution.V2
    return StateResolution.V2_1


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    str(n): _version(
        str(n),
        event_format=_format(n),
        state_resolution=_state_res(n),
        redaction=_redaction(n),
        since=n,
    )
    for n in range(1, 13)
}
"""Every room version this server can take part in, by identifier."""

DEFAULT_ROOM_VERSION = KNOWN_ROOM_VERSIONS["12"]
"""The spec's recommended default for new rooms (content/rooms/_index.md)."""


class UnsupportedRoomVersion(ValueError):
    """A room version identifier this server does not know (M_UNSUPPORTED_ROOM_VERSION)."""

    def __init__(self, identifier: str) -> None:
        super().__init__(f"unsupported room version {identifier!r}")
        self.identifier = identifier


def room_version(identifier: str) -> RoomVersion:
    """Look up a room version by identifier, or raise UnsupportedRoomVersion."""
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except KeyError:
        raise UnsupportedRoomVersion(identifier) from None
