"""`POST /rooms/{roomId}/upgrade` (room_upgrades.yaml, the "Room Upgrades" module).

The new room is built as one chain of events, like `/createRoom`, and submitted in one
input call; then the old room gets its `m.room.tombstone`, the directory moves (local
aliases, the public listing), the old room's power levels are restricted, its canonical
alias is cleared, and every local member's per-room settings (tags, `m.direct`, room push
rules) are copied to the new room, so that joining it feels like continuing the old one.

The tombstone and the new create event cite each other (`replacement_room`,
`predecessor.event_id`): for versions whose room ID is random the tombstone is built first
(it needs only the new room's ID) while the old room's writer lock is held, so that no
other event of the old room is built between it and its submission; room v12 derives the
room ID from the create event, whose `predecessor` then omits the event ID, as the spec
allows.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

from myelin.clientapi.createroom import _Chain
from myelin.clientapi.directory import Directory, check_room_id
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    bad_json,
    forbidden,
    json_response,
    not_found,
    req_str,
)
from myelin.clientapi.room_events import RoomWriter, build_error, now_ms
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.core.auth import (
    auth_types_for_event,
    get_power_level,
    get_required_level,
    is_valid_user_id,
)
from myelin.core.builder import EventBuildError, EventRef, EventSizeError, build_event
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion, room_version
from myelin.push.ruleset import StoredRules
from myelin.roomserver.roomserver import Roomserver
from myelin.userapi.accountdata import AccountData

log = logging.getLogger(__name__)

#: State copied to the new room with its content unchanged, in this order (after the
#: power levels), as the module recommends.
COPIED_STATE = (
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
)
#: Create-event fields carried over besides the version and the predecessor.
COPIED_CREATE_FIELDS = ("type", "m.federate")
TOMBSTONE_BODY = "This room has been replaced"
#: State a new room gets from its preset (`private_chat`) when the old room has none.
PRESET_DEFAULTS = (
    ("m.room.join_rules", "join_rule", "invite"),
    ("m.room.history_visibility", "history_visibility", "shared"),
    ("m.room.guest_access", "guest_access", "can_join"),
)


def _paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def parse_new_version(body: Mapping[str, Any]) -> RoomVersion:
    value = body.get("new_version")
    if value is None:
        req_str(dict(body), "new_version")  # M_MISSING_PARAM
    if not isinstance(value, str):
        raise bad_json("'new_version' must be a string")
    if value not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {value!r}")
    return room_version(value)


def _additional_creators(body: Mapping[str, Any], upgrader: str) -> list[str]:
    value = body.get("additional_creators")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise bad_json("'additional_creators' must be a list of user IDs")
    for user_id in value:
        if not is_valid_user_id(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {user_id[:100]!r}")
    return [u for u in dict.fromkeys(value) if u != upgrader]


def restricted_levels(content: Mapping[str, Any]) -> dict[str, Any] | None:
    """The old room's power levels after an upgrade: `events_default` and `invite` raised
    to the greater of 50 and `users_default + 1`; None when they are already that high."""
    users_default = _int(content.get("users_default"), 0)
    level = max(50, users_default + 1)
    out = dict(content)
    changed = False
    for name in ("events_default", "invite"):
        if _int(content.get(name), 0) < level:
            out[name] = level
            changed = True
    return out if changed else None


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def new_power_levels(
    old: Mapping[str, Any], upgrader: str, version: RoomVersion, creators: list[str], have: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The power levels of the new room: `(initial, final)`.

    `final` is the old room's content (creators of a v12 room are not listed; they outrank
    everyone). `initial` also lifts the upgrader to the highest level any initial state
    event needs, so that they can send it all; when it differs, `final` is sent last.
    """
    final = dict(old)
    users = dict(final.get("users") or {}) if isinstance(final.get("users"), dict) else {}
    if version.privileged_creators:
        for user_id in [upgrader, *creators]:
            users.pop(user_id, None)
    elif have == float("inf"):  # from a v12 room, where the upgrader was a creator
        users[upgrader] = 100
    if "users" in old or users:
        final["users"] = users
    initial = dict(final)
    if not version.privileged_creators:
        events = final.get("events") if isinstance(final.get("events"), dict) else {}
        needed = max(
            [
                _int(final.get("state_default"), 50),
                _int(final.get("ban"), 50),
                _int(final.get("events_default"), 0),
                *(_int(v, 0) for v in (events or {}).values()),
            ]
        )
        current = _int(users.get(upgrader), _int(final.get("users_default"), 0))
        if current < needed:
            initial["users"] = {**users, upgrader: needed}
    return initial, final


def _rewrite_join_rules(content: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    """Join rules whose `allow` list names the old room name the new one instead."""
    out = dict(content)
    allow = content.get("allow")
    if isinstance(allow, list):
        out["allow"] = [
            {**a, "room_id": new} if isinstance(a, dict) and a.get("room_id") == old else a
            for a in allow
        ]
    return out


def copy_push_rules(stored: StoredRules, old: str, new: str) -> StoredRules | None:
    """The user's rules plus a copy, for `new`, of each rule that is about room `old`
    (a room rule for it, or a rule with a `room_id` condition on it); None if none is."""
    doc = stored.to_json()
    changed = False
    for rules in doc.get("user", {}).values():
        ids = {r.get("rule_id") for r in rules}
        added = []
        for rule in rules:
            conditions = rule.get("conditions") or []
            about = rule.get("rule_id") == old or any(
                c.get("key") == "room_id" and c.get("pattern") == old for c in conditions
            )
            if not about:
                continue
            copy = dict(rule)
            rule_id = str(rule.get("rule_id", "")).replace(old, new)
            if rule_id in ids:
                continue
            copy["rule_id"] = rule_id
            if conditions:
                copy["conditions"] = [
                    {**c, "pattern": new}
                    if c.get("key") == "room_id" and c.get("pattern") == old
                    else c
                    for c in conditions
                ]
            added.append(copy)
            ids.add(rule_id)
        if added:
            rules.extend(added)
            changed = True
    return StoredRules.from_json(doc) if changed else None


class Upgrader:
    """Performs upgrades; one instance per process."""

    def __init__(
        self,
        rs: Roomserver,
        writer: RoomWriter,
        directory: Directory,
        account_data: AccountData | None,
    ) -> None:
        self.rs = rs
        self.writer = writer
        self.directory = directory
        self.account_data = account_data

    async def upgrade(self, user_id: str, room_id: str, body: Mapping[str, Any]) -> str:
        version = parse_new_version(body)
        extra_creators = _additional_creators(body, user_id) if version.privileged_creators else []
        if await self.rs.room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        writer = self.writer
        profile = await writer.profile_of(user_id)
        # The old room's lock: no other event of it is built while the tombstone is.
        async with await writer._lock(room_id):
            state = await self.rs.current_state_events(room_id)
            member = state.get(("m.room.member", user_id))
            if member is None or member.membership != "join":
                raise forbidden(f"User {user_id} is not joined to room {room_id}")
            have = get_power_level(user_id, state)
            if have < get_required_level("m.room.tombstone", True, state):
                raise forbidden("You may not send m.room.tombstone events in this room")
            chain = _Chain(writer, version, user_id)
            tombstone: Event | None = None
            predecessor: dict[str, Any] = {"room_id": room_id}
            if not version.room_id_from_create_event:
                chain.room_id = f"!{secrets.token_urlsafe(18)}:{writer.server_name}"
                tombstone = await self._tombstone(room_id, user_id, chain.room_id, state)
                predecessor["event_id"] = tombstone.event_id
            self._build(chain, state, room_id, user_id, predecessor, extra_creators, profile, have)
            new_room_id = chain.room_id
            assert new_room_id is not None
            if tombstone is None:
                tombstone = await self._tombstone(room_id, user_id, new_room_id, state)
            await writer.submit(chain.events)
            offset = await writer.submit([tombstone])
        await writer.notifier.wait_for_position(offset)
        await self._after(user_id, room_id, new_room_id, state)
        return new_room_id

    def _build(
        self,
        chain: _Chain,
        state: Mapping[StateKey, Event],
        old_room_id: str,
        user_id: str,
        predecessor: dict[str, Any],
        extra_creators: list[str],
        profile: Mapping[str, str],
        have: float,
    ) -> None:
        version = chain.version
        old_create = state.get(("m.room.create", ""))
        create: dict[str, Any] = {"room_version": version.identifier, "predecessor": predecessor}
        if old_create is not None:
            for name in COPIED_CREATE_FIELDS:
                if name in old_create.content:
                    create[name] = old_create.content[name]
        if not version.implicit_room_creator:
            create["creator"] = user_id
        if extra_creators:
            create["additional_creators"] = extra_creators
        chain.add("m.room.create", create)
        chain.add("m.room.member", {**profile, "membership": "join"}, user_id)
        levels = state.get(("m.room.power_levels", ""))
        old_levels = dict(levels.content) if levels is not None else {}
        initial, final = new_power_levels(old_levels, user_id, version, extra_creators, have)
        chain.add("m.room.power_levels", initial)
        for event_type in COPIED_STATE:
            event = state.get((event_type, ""))
            if event is None or not event.content:
                continue
            content = dict(event.content)
            if event_type == "m.room.join_rules":
                content = _rewrite_join_rules(content, old_room_id, chain.room_id or "")
            chain.add(event_type, content)
        # What the old room lacks comes from the `private_chat` preset, as for a new room.
        for event_type, field, value in PRESET_DEFAULTS:
            if (event_type, "") not in state:
                chain.add(event_type, {field: value})
        if old_create is not None and old_create.content.get("type") == "m.space":
            for (event_type, state_key), event in sorted(state.items()):
                if event_type == "m.space.child" and event.content:
                    chain.add(event_type, dict(event.content), state_key)
        # Bans carry over (MSC4167, as Synapse does): a banned user stays out.
        for (event_type, state_key), event in sorted(state.items()):
            if event_type == "m.room.member" and event.membership == "ban":
                chain.add("m.room.member", dict(event.content), state_key)
        if initial != final:
            chain.add("m.room.power_levels", final)

    async def _tombstone(
        self, room_id: str, user_id: str, new_room_id: str, state: Mapping[StateKey, Event]
    ) -> Event:
        """The old room's tombstone, built on its current extremities (not submitted)."""
        latest = await self.rs.latest_events(room_id)
        version = room_version(latest.room_version)
        content = {"body": TOMBSTONE_BODY, "replacement_room": new_room_id}
        keys = auth_types_for_event(
            version,
            event_type="m.room.tombstone",
            sender=user_id,
            state_key="",
            content=content,
        )
        auth = [state[k] for k in keys if k in state]
        prevs: list[EventRef] = list(latest.prev_event_ids[:20])
        v1 = version.event_format is EventFormat.V1
        if v1:
            found = await self.rs.events([str(p) for p in prevs])
            prevs = [found[str(p)] for p in prevs if str(p) in found]
        auth_refs: list[EventRef] = list(auth) if v1 else [e.event_id for e in auth]
        try:
            return build_event(
                version,
                room_id=room_id,
                sender=user_id,
                type="m.room.tombstone",
                content=content,
                state_key="",
                prev_events=prevs,
                auth_events=auth_refs,
                depth=latest.depth,
                origin_server_ts=now_ms(),
                server_name=self.writer.server_name,
                signing_key=self.writer.key,
            )
        except (EventBuildError, EventSizeError) as exc:
            raise build_error(exc) from None

    async def _after(
        self, user_id: str, old: str, new: str, state: Mapping[StateKey, Event]
    ) -> None:
        """What follows the tombstone: directory, old room restrictions, user settings.
        Each step is best effort: the upgrade itself has happened."""
        await self._move_directory(old, new)
        alias = state.get(("m.room.canonical_alias", ""))
        if alias is not None and alias.content:
            await self._try_send(old, user_id, "m.room.canonical_alias", {})
        levels = state.get(("m.room.power_levels", ""))
        restricted = restricted_levels(levels.content if levels is not None else {})
        if restricted is not None:
            await self._try_send(old, user_id, "m.room.power_levels", restricted)
        if self.account_data is not None:
            local = [
                key
                for (event_type, key), event in state.items()
                if event_type == "m.room.member"
                and event.membership == "join"
                and key.endswith(":" + self.writer.server_name)
            ]
            for member in local:
                await self._copy_user_state(member, old, new)

    async def on_joined(self, room_id: str, user_id: str, through_federation: bool) -> None:
        """A local user joined `room_id`: if it replaces an older room, the user's tags,
        `m.direct` entry and room push rules of the old room are copied to it, and when
        this server has just come into the room (`through_federation`: the upgrade was
        made elsewhere), its directory follows the upgrade too: local aliases of the old
        room point to the new one, and a published old room gives way to the new one.

        The directory moves only if the old room's tombstone names this room: a create
        event can name any room as its predecessor, and must not take over its aliases.
        Best effort: the join has happened whatever this finds."""
        try:
            old = await self._predecessor(room_id)
            if old is None:
                return
            if through_federation and await self._replaced_by(old, room_id):
                await self._move_directory(old, room_id)
            if self.account_data is not None:
                await self._copy_user_state(user_id, old, room_id)
        except Exception:
            log.exception("settings of an upgraded room not carried over to %s", room_id)

    async def _predecessor(self, room_id: str) -> str | None:
        key: StateKey = ("m.room.create", "")
        create = (await self.rs.current_state_events(room_id, [key])).get(key)
        predecessor = create.content.get("predecessor") if create is not None else None
        old = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        return old if isinstance(old, str) and old != room_id else None

    async def _replaced_by(self, old: str, new: str) -> bool:
        key: StateKey = ("m.room.tombstone", "")
        tombstone = (await self.rs.current_state_events(old, [key])).get(key)
        return tombstone is not None and tombstone.content.get("replacement_room") == new

    async def _move_directory(self, old: str, new: str) -> None:
        await self.directory.move_aliases(old, new)
        if await self.directory.is_public(old):
            await self.directory.set_public(new, True)
            await self.directory.set_public(old, False)

    async def _try_send(
        self, room_id: str, sender: str, event_type: str, content: Mapping[str, Any]
    ) -> None:
        try:
            await self.writer.send(room_id, sender, event_type, content, state_key="")
        except MatrixError as exc:  # e.g. a moderator may not change power levels
            log.info("upgrade: %s in %s not sent: %s", event_type, room_id, exc)

    async def _copy_user_state(self, user_id: str, old: str, new: str) -> None:
        """Tags, the `m.direct` entry and room push rules of `old`, for `new` too."""
        store = self.account_data
        assert store is not None
        tags = await store.get(user_id, old, "m.tag")
        if tags and not await store.get(user_id, new, "m.tag"):  # never over newer tags
            await store.put(user_id, new, "m.tag", tags)
        direct = await store.get(user_id, "", "m.direct")
        if isinstance(direct, dict):
            changed = False
            updated: dict[str, Any] = {}
            for other, rooms in direct.items():
                if isinstance(rooms, list) and old in rooms and new not in rooms:
                    updated[other] = [*rooms, new]
                    changed = True
                else:
                    updated[other] = rooms
            if changed:
                await store.put(user_id, "", "m.direct", updated)
        rules = await store.push_rules(user_id)
        if copy_push_rules(rules, old, new) is not None:

            def change(stored: StoredRules) -> StoredRules:
                return copy_push_rules(stored, old, new) or stored

            await store.update_push_rules(user_id, change)


def install(
    router: Router,
    rs: Roomserver,
    writer: RoomWriter,
    directory: Directory,
    account_data: AccountData | None,
) -> Upgrader:
    upgrader = Upgrader(rs, writer, directory, account_data)

    async def upgrade(req: Request) -> Response:
        room_id = check_room_id(req.params["room_id"])
        body = req.json()
        new_room_id = await upgrader.upgrade(req.user().user_id, room_id, body)
        return json_response({"replacement_room": new_room_id})

    router.add("POST", _paths("/rooms/{room_id}/upgrade"), upgrade, auth=True)
    return upgrader
