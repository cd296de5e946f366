"""Building real, signed events for roomserver tests."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from myelin.core.auth import auth_types_for_event
from myelin.core.builder import build_event
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import room_version
from myelin.core.signing import SigningKey
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputResult

SERVER = "test.example"
KEY = SigningKey.from_seed(b"\x01" * 32, "a1")
_clock = itertools.count(1_700_000_000_000)


def user(name: str) -> str:
    return f"@{name}:{SERVER}"


class RoomScript:
    """Builds events of one room against what the roomserver reports, and submits them."""

    def __init__(self, rs: Roomserver, version: str = "10") -> None:
        self.rs = rs
        self.version = room_version(version)
        self.room_id: str | None = None
        self.events: dict[str, Event] = {}

    def build(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None,
        prevs: Sequence[str],
        auth_state: Mapping[StateKey, str],
        depth: int,
        room_id: str | None = None,
    ) -> Event:
        keys = auth_types_for_event(
            self.version,
            event_type=event_type,
            sender=sender,
            state_key=state_key,
            content=content,
        )
        auth = [auth_state[k] for k in keys if k in auth_state]
        return build_event(
            self.version,
            room_id=room_id if room_id is not None else self.room_id,
            sender=sender,
            type=event_type,
            content=content,
            state_key=state_key,
            prev_events=list(prevs),
            auth_events=auth,
            depth=depth,
            origin_server_ts=next(_clock),
            server_name=SERVER,
            signing_key=KEY,
        )

    async def create(self, creator: str) -> Event:
        content: dict[str, Any] = {"room_version": self.version.identifier}
        if not self.version.implicit_room_creator:
            content["creator"] = creator
        room_id = (
            None if self.version.room_id_from_create_event else f"!room{next(_clock)}:{SERVER}"
        )
        event = self.build(
            "m.room.create",
            creator,
            content,
            state_key="",
            prevs=[],
            auth_state={},
            depth=1,
            room_id=room_id,
        )
        self.room_id = event.room_id
        result = await self.rs.submit(event)
        assert result.status.value == "accepted", result
        return event

    async def make(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prevs: Sequence[str] | None = None,
    ) -> Event:
        """An event after `prevs` (default: the room's forward extremities), citing auth
        events from the state before it as the roomserver knows it."""
        assert self.room_id is not None
        if prevs is None:
            latest = await self.rs.latest_events(self.room_id)
            prevs, depth = latest.prev_event_ids, latest.depth
            state = await self.rs.current_state(self.room_id)
        else:
            found = await self.rs.events(list(prevs))
            depth = max(found[p].depth for p in prevs) + 1
            if len(prevs) == 1:
                state = await self.rs.state_after(prevs[0])
            else:
                state = await self.rs.current_state(self.room_id)
        return self.build(
            event_type,
            sender,
            content,
            state_key=state_key,
            prevs=prevs,
            auth_state=state,
            depth=depth,
        )

    async def send(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prevs: Sequence[str] | None = None,
    ) -> tuple[Event, InputResult]:
        event = await self.make(event_type, sender, content, state_key=state_key, prevs=prevs)
        return event, await self.rs.submit(event)

    async def join(self, who: str) -> Event:
        event, result = await self.send("m.room.member", who, {"membership": "join"}, state_key=who)
        assert result.status.value == "accepted", result
        return event


@dataclass
class Chain:
    """A linear run of events of one room, built but not submitted (as another server made
    them): each names the one before as its prev event, has the next depth, and is
    authorised by the state the run has built so far (`state`, which a test may change)."""

    room: RoomScript
    events: list[Event] = field(default_factory=list)
    state: dict[StateKey, str] = field(default_factory=dict)

    def add(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
    ) -> Event:
        event = self.room.build(
            event_type,
            sender,
            content,
            state_key=state_key,
            prevs=[self.events[-1].event_id] if self.events else [],
            auth_state=self.state,
            depth=len(self.events) + 1,
        )
        self.events.append(event)
        if state_key is not None:
            self.state[(event_type, state_key)] = event.event_id
        return event

    def opening(self, creator: str) -> tuple[Event, Event, Event]:
        """The room's create event, its creator's join and public join rules."""
        create = self.add(
            "m.room.create",
            creator,
            {"room_version": self.room.version.identifier, "creator": creator},
            "",
        )
        join = self.add("m.room.member", creator, {"membership": "join"}, creator)
        rules = self.add("m.room.join_rules", creator, {"join_rule": "public"}, "")
        return create, join, rules
