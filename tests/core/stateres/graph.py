"""A tiny room history for state resolution tests.

Events are declared in a list (their position gives `origin_server_ts`, as in the spec's
tie-breaks) and linked by `prev_events` chains. Walking the graph in topological order,
the state before each event is the resolution of the states after its prev events, and
its `auth_events` are picked from that state by the auth events selection rules, as a real
server would. Nothing here is a stand-in: resolution and auth are the real ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from myelin.core.auth import auth_types_for_event
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import EventFormat, RoomVersion, room_version
from myelin.core.stateres import resolve_state

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"


@dataclass(frozen=True)
class Spec:
    """One event to create: `name` becomes its ID (`$name`)."""

    name: str
    type: str
    sender: str
    content: Mapping[str, Any]
    state_key: str | None = None


def member(name: str, sender: str, membership: str, target: str | None = None) -> Spec:
    target = target or sender
    return Spec(name, "m.room.member", sender, {"membership": membership}, target)


def power(name: str, sender: str, users: Mapping[str, int]) -> Spec:
    return Spec(name, "m.room.power_levels", sender, {"users": dict(users)}, "")


def topic(name: str, sender: str) -> Spec:
    return Spec(name, "m.room.topic", sender, {"topic": name}, "")


def join_rules(name: str, sender: str, rule: str) -> Spec:
    return Spec(name, "m.room.join_rules", sender, {"join_rule": rule}, "")


def initial_events() -> list[Spec]:
    """The start of every scenario: Alice creates a public room that Bob, Charlie and Zara
    join, then START and END markers (messages) between which each scenario forks."""
    return [
        Spec("CREATE", "m.room.create", ALICE, {"creator": ALICE}, ""),
        member("IMA", ALICE, "join"),
        power("IPOWER", ALICE, {ALICE: 100}),
        join_rules("IJR", ALICE, "public"),
        member("IMB", BOB, "join"),
        member("IMC", CHARLIE, "join"),
        member("IMZ", ZARA, "join"),
        Spec("START", "m.room.message", ZARA, {"body": "start"}),
        Spec("END", "m.room.message", ZARA, {"body": "end"}),
    ]


INITIAL_CHAIN = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"]


@dataclass
class Room:
    """Events of one room by ID, with the state after each."""

    version: RoomVersion
    events: dict[str, Event] = field(default_factory=dict)
    state_after: dict[str, dict[StateKey, str]] = field(default_factory=dict)

    def fetch(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def resolve(self, state_sets: Sequence[Mapping[StateKey, str]]) -> dict[StateKey, str]:
        return resolve_state(self.version, state_sets, self.fetch)

    @property
    def room_id(self) -> str:
        if self.version.room_id_from_create_event:
            return "!CREATE"
        return "!room:example.com"

    def event_id(self, name: str) -> str:
        return name if name.startswith("$") else "$" + name

    def add(
        self,
        spec: Spec,
        prev: Sequence[str],
        ts: int,
        auth: Sequence[str] | None = None,
    ) -> Event:
        """Create `spec` on top of `prev` (names), as a server would, and record it."""
        prev_ids = [self.event_id(p) for p in prev]
        before = self.resolve([self.state_after[p] for p in prev_ids]) if prev_ids else {}
        content = dict(spec.content)
        if spec.type == "m.room.power_levels" and self.version.privileged_creators:
            # From v12 the creator (Alice) has infinite power and may not be listed.
            users = {u: lvl for u, lvl in content.get("users", {}).items() if u != ALICE}
            content["users"] = users
        if auth is None:
            wanted = auth_types_for_event(
                self.version,
                event_type=spec.type,
                sender=spec.sender,
                state_key=spec.state_key,
                content=content,
            )
            auth_ids = [before[k] for k in wanted if k in before]
        else:
            auth_ids = [self.event_id(a) for a in auth]
        event = self.make(spec, content, prev_ids, auth_ids, ts)
        state = dict(before)
        if event.is_state:
            state[event.state_tuple] = event.event_id
        self.events[event.event_id] = event
        self.state_after[event.event_id] = state
        return event

    def make(
        self,
        spec: Spec,
        content: Mapping[str, Any],
        prev_ids: Sequence[str],
        auth_ids: Sequence[str],
        ts: int,
    ) -> Event:
        v1_refs = self.version.event_format is EventFormat.V1

        def refs(ids: Iterable[str]) -> list[Any]:
            return [[i, {"sha256": "x"}] for i in ids] if v1_refs else list(ids)

        pdu: dict[str, Any] = {
            "type": spec.type,
            "sender": spec.sender,
            "content": dict(content),
            "origin_server_ts": ts,
            "prev_events": refs(prev_ids),
            "auth_events": refs(auth_ids),
            "depth": 1 + max((self.events[p].depth for p in prev_ids), default=0),
        }
        if not (self.version.room_id_from_create_event and spec.type == "m.room.create"):
            pdu["room_id"] = self.room_id
        if spec.state_key is not None:
            pdu["state_key"] = spec.state_key
        return Event(event_id=self.event_id(spec.name), room_version=self.version, pdu=pdu)


def chains_to_prevs(chains: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    """`[["END", "B", "A"], ...]` (newest first) to each event's prev events."""
    prevs: dict[str, list[str]] = {}
    for chain in chains:
        for child, parent in itertools.pairwise(chain):
            bucket = prevs.setdefault(child, [])
            if parent not in bucket:
                bucket.append(parent)
    return prevs


def build(version: str, events: Sequence[Spec], chains: Iterable[Sequence[str]]) -> Room:
    """Build the initial room plus `events`, linked by the `chains` of prev events.

    Timestamps follow declaration order (initial events first); events are then created
    in a topological order of the prev graph.
    """
    room = Room(room_version(version))
    specs = initial_events()
    specs[-1:-1] = list(events)  # END stays last
    ts = {spec.name: 100 + i for i, spec in enumerate(specs)}
    prevs = chains_to_prevs([INITIAL_CHAIN, *chains])
    pending = {spec.name: spec for spec in specs}
    while pending:
        done = room.events
        ready = [n for n in pending if all(room.event_id(p) in done for p in prevs.get(n, []))]
        assert ready, f"cycle among {sorted(pending)}"
        for name in ready:
            room.add(pending.pop(name), prevs.get(name, []), ts[name])
    return room
