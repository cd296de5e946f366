"""`POST /createRoom` (create_room.yaml): the initial events of a new room.

The events are built here as one chain (each cites the previous one and picks its auth
events from the state built so far) and handed to the roomserver in one input call, so
a new room costs one group commit. Order, as the spec lists it: create, the creator's
join, power levels (with `power_level_content_override`), canonical alias, the preset's
join rules / history visibility / guest access, `initial_state`, name, topic, invites.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from myelin.clientapi.http import (
    MatrixError,
    bad_json,
    invalid_param,
    opt_bool,
    opt_dict,
    opt_str,
    opt_str_list,
)
from myelin.clientapi.room_events import RoomWriter, build_error, now_ms
from myelin.core.auth import (
    AuthError,
    auth_types_for_event,
    check_auth,
    initial_power_levels_content,
    is_valid_user_id,
)
from myelin.core.builder import EventBuildError, EventRef, EventSizeError, build_event
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion, room_version

CREATE: StateKey = ("m.room.create", "")
PRESETS = {
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", None),
}


class _Chain:
    """Builds the events of a new room one after another."""

    def __init__(self, writer: RoomWriter, version: RoomVersion, sender: str) -> None:
        self.writer = writer
        self.version = version
        self.sender = sender
        self.room_id: str | None = None
        self.state: dict[StateKey, Event] = {}
        self.events: list[Event] = []

    def add(
        self,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = "",
        sender: str | None = None,
    ) -> Event:
        sender = sender or self.sender
        keys = auth_types_for_event(
            self.version,
            event_type=event_type,
            sender=sender,
            state_key=state_key,
            content=content,
        )
        auth = [self.state[k] for k in keys if k in self.state]
        v1 = self.version.event_format is EventFormat.V1
        prev: list[EventRef] = []
        if self.events:
            prev = [self.events[-1] if v1 else self.events[-1].event_id]
        auth_refs: list[EventRef] = list(auth) if v1 else [e.event_id for e in auth]
        room_id = self.room_id
        if event_type == "m.room.create" and self.version.room_id_from_create_event:
            room_id = None
        try:
            event = build_event(
                self.version,
                room_id=room_id,
                sender=sender,
                type=event_type,
                content=content,
                state_key=state_key,
                prev_events=prev,
                auth_events=auth_refs,
                depth=len(self.events) + 1,
                origin_server_ts=now_ms(),
                server_name=self.writer.server_name,
                signing_key=self.writer.key,
            )
        except (EventBuildError, EventSizeError) as exc:
            raise build_error(exc) from None
        # Checked here, before anything is submitted, so that a request whose events
        # could not all be accepted (say, malformed power levels) creates nothing.
        try:
            auth_state = {e.state_tuple: e for e in auth}
            if CREATE in self.state:  # v12 cites no create event; the rules still need it
                auth_state.setdefault(CREATE, self.state[CREATE])
            check_auth(event, auth_state)
        except AuthError as exc:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"The room's {event_type} event would be refused: {exc}"
            ) from None
        if event_type == "m.room.create":
            self.room_id = event.room_id
        self.events.append(event)
        if state_key is not None:
            self.state[(event_type, state_key)] = event
        return event


def parse_version(body: Mapping[str, Any], default: str) -> RoomVersion:
    value = body.get("room_version", default)
    if not isinstance(value, str):  # e.g. a number: not a version string at all
        raise MatrixError(400, "M_BAD_JSON", "'room_version' must be a string")
    if value not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {value!r}")
    return room_version(value)


def _state_list(body: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    value = body.get("initial_state")
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_json("'initial_state' must be a list")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_json("'initial_state' entries must be objects")
        event_type = item.get("type")
        state_key = item.get("state_key", "")
        content = item.get("content")
        if not isinstance(event_type, str) or not isinstance(state_key, str):
            raise bad_json("'initial_state' entries need a string type and state_key")
        if not isinstance(content, dict):
            raise bad_json("'initial_state' entries need an object content")
        out.append((event_type, state_key, content))
    return out


def build_room(
    writer: RoomWriter,
    creator: str,
    body: Mapping[str, Any],
    default_version: str,
    alias: str | None,
    *,
    creator_profile: Mapping[str, str] | None = None,
) -> tuple[str, list[Event]]:
    """The room ID and events of a new room, validated and built but not yet submitted.

    `creator_profile` (display name, avatar URL) goes into the creator's join event.
    """
    version = parse_version(body, default_version)
    visibility = opt_str(dict(body), "visibility") or "private"
    if visibility not in ("public", "private"):
        raise invalid_param("'visibility' must be 'public' or 'private'")
    preset = opt_str(dict(body), "preset") or (
        "public_chat" if visibility == "public" else "private_chat"
    )
    if preset not in PRESETS:
        raise invalid_param(f"Unknown preset {preset!r}")
    invites = opt_str_list(dict(body), "invite") or []
    for user_id in invites:
        if not is_valid_user_id(user_id):
            raise invalid_param(f"Invalid user ID {user_id!r}")
    is_direct = opt_bool(dict(body), "is_direct")
    name = opt_str(dict(body), "name")
    topic = opt_str(dict(body), "topic")
    creation = dict(opt_dict(dict(body), "creation_content") or {})
    override = opt_dict(dict(body), "power_level_content_override")
    initial_state = _state_list(body)

    chain = _Chain(writer, version, creator)
    create_content: dict[str, Any] = dict(creation)
    create_content["room_version"] = version.identifier
    if version.implicit_room_creator:
        create_content.pop("creator", None)
    else:
        create_content["creator"] = creator
    if preset == "trusted_private_chat" and version.privileged_creators and invites:
        extra = create_content.get("additional_creators", [])
        if not isinstance(extra, list):
            raise bad_json("'additional_creators' must be a list")
        create_content["additional_creators"] = list(dict.fromkeys([*extra, *invites]))
    if not version.room_id_from_create_event:
        chain.room_id = f"!{secrets.token_urlsafe(18)}:{writer.server_name}"
    chain.add("m.room.create", create_content)
    chain.add("m.room.member", {**(creator_profile or {}), "membership": "join"}, creator)

    levels = initial_power_levels_content(version, creator)
    if preset == "trusted_private_chat" and not version.privileged_creators:
        for user_id in invites:
            levels["users"][user_id] = 100
    if override:
        levels.update(override)
    chain.add("m.room.power_levels", levels)
    if alias is not None:
        chain.add("m.room.canonical_alias", {"alias": alias})
    join_rule, history, guest = PRESETS[preset]
    # `initial_state` takes precedence over the preset: a preset event it replaces is not
    # sent at all (else, with history visibility, the room's first events would fall
    # under the preset's setting instead of the one asked for).
    given = {(event_type, key) for event_type, key, _ in initial_state}
    for event_type, field, value in (
        ("m.room.join_rules", "join_rule", join_rule),
        ("m.room.history_visibility", "history_visibility", history),
        ("m.room.guest_access", "guest_access", guest),
    ):
        if value is not None and (event_type, "") not in given:
            chain.add(event_type, {field: value})
    for event_type, state_key, content in initial_state:
        chain.add(event_type, content, state_key)
    if name is not None:
        chain.add("m.room.name", {"name": name})
    if topic is not None:
        chain.add("m.room.topic", {"topic": topic})
    for user_id in invites:
        invite: dict[str, Any] = {"membership": "invite"}
        if is_direct:
            invite["is_direct"] = True
        chain.add("m.room.member", invite, user_id)
    assert chain.room_id is not None
    return chain.room_id, chain.events
