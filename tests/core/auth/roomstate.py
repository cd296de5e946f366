"""Build rooms and events for the authorization tests in a few lines.

`Room` holds a state map like the one the roomserver passes to `check_auth`; `Room.event`
builds an event without adding it, `Room.add` builds it and puts it into the state. The
create event follows the version's shape (a `creator` up to v10, no `room_id` in v12,
where the room ID is derived from the create event's ID).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from myelin.core.auth import AuthError, check_auth
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import EventFormat, RoomVersion, room_version

ALL_VERSIONS = [str(n) for n in range(1, 13)]

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:a.example"

_counter = itertools.count(1)


def versions(predicate: Any = None) -> list[str]:
    """Version identifiers whose RoomVersion satisfies `predicate` (all if None)."""
    if predicate is None:
        return ALL_VERSIONS
    return [v for v in ALL_VERSIONS if predicate(room_version(v))]


class Room:
    """A room in one version with its current state."""

    def __init__(
        self,
        version: str,
        creator: str = ALICE,
        *,
        create_content: dict[str, Any] | None = None,
    ) -> None:
        self.version: RoomVersion = room_version(version)
        self.state: dict[StateKey, Event] = {}
        self.creator = creator
        self.room_id = ""
        content: dict[str, Any] = {"room_version": version}
        if not self.version.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        server = creator.partition(":")[2]
        if self.version.room_id_from_create_event:
            self.create = self.add("m.room.create", creator, content, "", prev=[])
            self.room_id = "!" + self.create.event_id[1:]
        else:
            self.room_id = f"!room{next(_counter)}:{server}"
            self.create = self.add("m.room.create", creator, content, "", prev=[])

    def new_event_id(self, sender: str) -> str:
        n = next(_counter)
        if self.version.event_format is EventFormat.V1:
            return f"$e{n}:{sender.partition(':')[2]}"
        return f"$E{n:040d}"

    def event(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        prev: list[str] | None = None,
        event_id: str | None = None,
        **extra: Any,
    ) -> Event:
        """A new event (not added to the state)."""
        event_id = event_id or self.new_event_id(sender)
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": 1_700_000_000_000,
            "depth": 1,
            "auth_events": [],
            "prev_events": prev if prev is not None else ["$prev"],
            "signatures": {sender.partition(":")[2]: {"ed25519:a": "sig"}},
        }
        v12_create = self.version.room_id_from_create_event and event_type == "m.room.create"
        if not v12_create:
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.version.event_format is EventFormat.V1:
            pdu["event_id"] = event_id
            pdu["prev_events"] = [[p, {}] for p in pdu["prev_events"]]
        pdu.update(extra)
        return Event(event_id=event_id, room_version=self.version, pdu=pdu)

    def add(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str = "",
        **kwargs: Any,
    ) -> Event:
        """Build a state event and put it into the state (without checking it)."""
        event = self.event(event_type, sender, content, state_key, **kwargs)
        self.state[event.state_tuple] = event
        return event

    # Shorthands for common state.

    def member(
        self, user: str, membership: str, sender: str | None = None, **content: Any
    ) -> Event:
        return self.add(
            "m.room.member", sender or user, {"membership": membership, **content}, user
        )

    def member_event(
        self, user: str, membership: str, sender: str | None = None, **kwargs: Any
    ) -> Event:
        """A member event for `user` (not added); `content=` extends the content."""
        content = {"membership": membership, **kwargs.pop("content", {})}
        return self.event("m.room.member", sender or user, content, user, **kwargs)

    def join_rules(self, rule: str, **content: Any) -> Event:
        return self.add("m.room.join_rules", self.creator, {"join_rule": rule, **content})

    def power_levels(self, content: dict[str, Any], sender: str | None = None) -> Event:
        return self.add("m.room.power_levels", sender or self.creator, content)

    def creator_levels(self, users: dict[str, Any] | None = None, **content: Any) -> Event:
        """Power levels listing the creator at 100 (only before v12) and `users`."""
        listed: dict[str, Any] = {} if self.version.privileged_creators else {self.creator: 100}
        listed.update(users or {})
        return self.power_levels({"users": listed, **content})

    # Checking.

    def allows(self, event: Event) -> None:
        check_auth(event, self.state)

    def denies(self, event: Event, rule: str | None = None) -> AuthError:
        """Assert that the rules reject `event` (by `rule`, when given)."""
        with pytest.raises(AuthError) as caught:
            check_auth(event, self.state)
        if rule is not None:
            assert caught.value.rule == rule, str(caught.value)
        return caught.value


def standard_room(version: str, join_rule: str = "invite") -> Room:
    """Alice created the room, joined, holds 100 (or is creator in v12); a join rule set."""
    room = Room(version)
    room.member(ALICE, "join")
    room.creator_levels()
    room.join_rules(join_rule)
    return room


def at(version: str, numbers: dict[int, str]) -> str:
    """The rule number printed in `version`'s document, given the numbers from the
    version each numbering starts at: `at("7", {1: "5.2", 6: "4.2"}) == "4.2"`."""
    n = int(version)
    return numbers[max(k for k in numbers if k <= n)]
