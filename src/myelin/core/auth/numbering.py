"""Rule numbers as each room version's document prints them.

The rules are the same few dozen checks in every version, but versions insert and remove
rules (aliases until v5, the `join_authorised_via_users_server` signature from v8, the room
ID check in v12, integer checks on power levels from v10), which shifts the numbers. An
error that names "rule 4.3.2" must name it as the reader's version of the spec does, so the
numbers are computed here, in one place, from the version's feature flags.
"""

from __future__ import annotations

from typing import Literal

from myelin.core.roomversions import EventFormat, RoomVersion

TopRule = Literal[
    "create",
    "room_id",
    "auth_events",
    "federate",
    "aliases",
    "member",
    "sender_joined",
    "third_party_invite",
    "required_level",
    "state_key",
    "power_levels",
    "redaction",
]

MemberRule = Literal[
    "shape", "authoriser_signature", "join", "invite", "leave", "ban", "knock", "unknown"
]

PowerRule = Literal[
    "fields",
    "maps",
    "users",
    "creators",
    "no_previous",
    "levels",
    "maps_old",
    "maps_new",
    "users_old",
    "users_new",
]


def top(version: RoomVersion, rule: TopRule) -> str:
    """The number of a top-level rule in `version`'s list."""
    order: list[TopRule] = ["create"]
    if version.room_id_from_create_event:
        order.append("room_id")
    order += ["auth_events", "federate"]
    if version.special_case_aliases_auth:
        order.append("aliases")
    order += [
        "member",
        "sender_joined",
        "third_party_invite",
        "required_level",
        "state_key",
        "power_levels",
    ]
    if has_redaction_rule(version):
        order.append("redaction")
    return str(order.index(rule) + 1)


def member(version: RoomVersion, rule: MemberRule, *sub: int) -> str:
    """The number of a rule under "If type is `m.room.member`"."""
    order: list[MemberRule] = ["shape"]
    if version.restricted_join_rule:
        order.append("authoriser_signature")
    order += ["join", "invite", "leave", "ban"]
    if version.knock_join_rule:
        order.append("knock")
    order.append("unknown")
    parts = [top(version, "member"), str(order.index(rule) + 1), *map(str, sub)]
    return ".".join(parts)


def join(
    version: RoomVersion,
    step: Literal["creator", "sender", "banned", "invite", "restricted", "public", "otherwise"],
) -> str:
    """The number of a step under "If `membership` is `join`"."""
    steps = ["creator", "sender", "banned", "invite"]
    if version.restricted_join_rule:
        steps.append("restricted")
    steps += ["public", "otherwise"]
    return member(version, "join", steps.index(step) + 1)


def power(version: RoomVersion, rule: PowerRule) -> str:
    """The number of a step under "If type is `m.room.power_levels`"."""
    order: list[PowerRule] = []
    if version.integer_only_power_levels:
        order += ["fields", "maps"]
    order.append("users")
    if version.privileged_creators:
        order.append("creators")
    order += ["no_previous", "levels", "maps_old", "maps_new", "users_old", "users_new"]
    return f"{top(version, 'power_levels')}.{order.index(rule) + 1}"


def has_redaction_rule(version: RoomVersion) -> bool:
    """Rooms v1-v2 authorise redactions by the redact level or the event ID's domain
    (v1 rule 11); from v3 on, event IDs have no domain and that rule is gone."""
    return version.event_format is EventFormat.V1
