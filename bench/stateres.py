"""Benchmark: resolve two forks of a room holding 1,000 conflicted state events.

Not a test. Builds a room with `--members` joined users, forks it, and on each fork
changes the membership of a different quarter of the users: profile updates (ordinary
events, mainline-ordered) or kicks and bans (power events, reverse-topologically ordered).
Each changed key contributes its old and its new event, so `--conflicts 1000` means 1,000
events in the conflicted state set. Prints the best wall time of `--repeat` runs of
`resolve_state`, per room version and workload, once walking auth chains through the
events ("walk") and once with an auth chain index as the roomserver can pass ("index").
A second table resolves a 4-event conflict in a `--large-room` to show the cost of the
room's size alone.

    .venv/bin/python bench/stateres.py [--members 2000] [--conflicts 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from myelin.core.events import Event, StateKey
from myelin.core.roomversions import EventFormat, RoomVersion, room_version
from myelin.core.stateres import resolve_state

ADMIN = "@admin:bench.example"


class Builder:
    """Writes events of one room directly, with correct auth events, without resolving."""

    def __init__(self, version: RoomVersion) -> None:
        self.version = version
        self.events: dict[str, Event] = {}
        self.ts = 0
        self.room_id = "!CREATE" if version.room_id_from_create_event else "!r:bench.example"

    def add(self, event_id: str, type_: str, sender: str, state_key: str,
            content: dict[str, Any], auth: list[str], prev: list[str]) -> str:
        self.ts += 1
        if self.version.room_id_from_create_event:
            auth = [a for a in auth if a != "$CREATE"]
        if self.version.event_format is EventFormat.V1:
            auth_refs: list[Any] = [[a, {}] for a in auth]
            prev_refs: list[Any] = [[p, {}] for p in prev]
        else:
            auth_refs, prev_refs = list(auth), list(prev)
        pdu: dict[str, Any] = {
            "type": type_, "sender": sender, "state_key": state_key, "content": content,
            "origin_server_ts": self.ts, "depth": self.ts, "auth_events": auth_refs,
            "prev_events": prev_refs,
        }
        if not (self.version.room_id_from_create_event and type_ == "m.room.create"):
            pdu["room_id"] = self.room_id
        self.events[event_id] = Event(event_id, self.version, pdu)
        return event_id


def build(version: RoomVersion, members: int, changed: int, power_events: bool,
          ) -> tuple[dict[str, Event], list[dict[StateKey, str]]]:
    b = Builder(version)
    users = [f"@u{i}:bench.example" for i in range(members)]
    create = b.add("$CREATE", "m.room.create", ADMIN, "", {"creator": ADMIN}, [], [])
    admin = b.add("$admin", "m.room.member", ADMIN, ADMIN, {"membership": "join"},
                  [create], [create])
    levels = {} if version.privileged_creators else {ADMIN: 100}
    pl = b.add("$pl", "m.room.power_levels", ADMIN, "", {"users": levels},
               [create, admin], [admin])
    jr = b.add("$jr", "m.room.join_rules", ADMIN, "", {"join_rule": "public"},
               [create, admin, pl], [pl])
    state: dict[StateKey, str] = {("m.room.create", ""): create,
                                  ("m.room.member", ADMIN): admin,
                                  ("m.room.power_levels", ""): pl,
                                  ("m.room.join_rules", ""): jr}
    last = jr
    for i, user in enumerate(users):
        last = b.add(f"$j{i}", "m.room.member", user, user, {"membership": "join"},
                     [create, pl, jr], [last])
        state[("m.room.member", user)] = last
    forks = []
    for f in range(2):
        fork = dict(state)
        tip = last
        for i in range(f * changed, (f + 1) * changed):
            user = users[i]
            old = state[("m.room.member", user)]
            if power_events:
                membership = "ban" if f else "leave"
                tip = b.add(f"$x{i}", "m.room.member", ADMIN, user, {"membership": membership},
                            [create, pl, admin, old], [tip])
            else:
                tip = b.add(f"$x{i}", "m.room.member", user, user,
                            {"membership": "join", "displayname": f"user {i}"},
                            [create, pl, jr, old], [tip])
            fork[("m.room.member", user)] = tip
        forks.append(fork)
    return b.events, forks


def chain_index(events: dict[str, Event]) -> dict[str, frozenset[str]]:
    """Every event's auth chain, as a roomserver's index would hold it (built untimed)."""
    index: dict[str, frozenset[str]] = {}
    for event_id in sorted(events, key=lambda e: events[e].depth):
        chain: set[str] = set()
        for auth_id in events[event_id].auth_event_ids:
            chain.add(auth_id)
            chain |= index[auth_id]
        index[event_id] = frozenset(chain)
    return index


def best_of(repeat: int, version: RoomVersion, forks: list[dict[StateKey, str]],
            events: dict[str, Event], index: dict[str, frozenset[str]] | None) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        resolve_state(version, forks, events.get, None if index is None else index.__getitem__)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--conflicts", type=int, default=1000)
    parser.add_argument("--large-room", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    changed = args.conflicts // 4  # per fork; each changed key gives two conflicted events
    if 2 * changed > args.members:
        parser.error("--members must be at least half of --conflicts")
    print(f"{4 * changed} conflicted events, {args.members} members; best of {args.repeat}")
    print(f"{'room':>5} {'workload':<14} {'walk ms':>9} {'index ms':>9}")
    for identifier in ("1", "10", "12"):
        version = room_version(identifier)
        for power_events in (False, True):
            events, forks = build(version, args.members, changed, power_events)
            walk = best_of(args.repeat, version, forks, events, None)
            indexed = best_of(args.repeat, version, forks, events, chain_index(events))
            workload = "kicks+bans" if power_events else "profile joins"
            print(f"{identifier:>5} {workload:<14} {walk:9.1f} {indexed:9.1f}")
    print(f"\n4 conflicted events, {args.large_room} members; best of {args.repeat}")
    print(f"{'room':>5} {'walk ms':>9} {'index ms':>9}")
    for identifier in ("1", "10", "12"):
        version = room_version(identifier)
        events, forks = build(version, args.large_room, 1, False)
        walk = best_of(args.repeat, version, forks, events, None)
        indexed = best_of(args.repeat, version, forks, events, chain_index(events))
        print(f"{identifier:>5} {walk:9.1f} {indexed:9.1f}")


if __name__ == "__main__":
    main()
