"""Resolve the cases on standard input with the reference Synapse; print the results.

Runs under the reference Synapse's own Python (see test_against_synapse.py), never under
Myelin's. Input: one JSON object per line with `version`, `events` (event ID to PDU, the
IDs being our test names) and `sets` (lists of [type, state_key, event ID]). Synapse
derives event IDs from hashes from room version 3 on, so the events are rebuilt in depth
order with their references rewritten to Synapse's IDs, and the answer mapped back.
Output: one JSON list of [type, state_key, event ID] per case.
"""

import asyncio
import json
import sys
from typing import Any

import synapse.event_auth  # noqa: F401  (imported first to settle an import cycle)
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.events import make_event_from_dict
from synapse.state import v1, v2
from synapse.storage.databases.main.event_federation import StateDifference


class Clock:
    async def sleep(self, duration: Any) -> None:
        return None


class Store:
    """Every event is handed over as unpersisted, so Synapse computes the auth difference
    (and the v2.1 subgraph) itself; the store has nothing persisted to add."""

    def __init__(self, events: dict[str, Any]) -> None:
        self.events = events

    async def get_events(self, event_ids: Any, allow_rejected: bool = False) -> dict[str, Any]:
        return {i: self.events[i] for i in event_ids if i in self.events}

    async def get_auth_chain_difference(
        self, room_id: str, state_sets: Any, conflicted: Any, extra: Any
    ) -> Any:
        return StateDifference(
            auth_difference=set(),
            conflicted_subgraph=None if conflicted is None else set(),
        )


def rebuild(pdus: dict[str, Any], version: Any) -> tuple[dict[str, Any], dict[str, str]]:
    ids: dict[str, str] = {}
    events: dict[str, Any] = {}
    room_id = None
    for name in sorted(pdus, key=lambda n: (pdus[n]["depth"], n != "$CREATE")):
        pdu = json.loads(json.dumps(pdus[name]))
        pdu.setdefault("signatures", {})
        pdu.setdefault("hashes", {"sha256": "unused"})
        pdu.setdefault("unsigned", {})
        if version.event_format == 1:
            pdu["event_id"] = name
        else:
            pdu["auth_events"] = [ids[a] for a in pdu["auth_events"]]
            pdu["prev_events"] = [ids[p] for p in pdu["prev_events"]]
            if "room_id" in pdu and version.msc4291_room_ids_as_hashes:
                pdu["room_id"] = room_id
        event = make_event_from_dict(pdu, version)
        if name == "$CREATE" and version.msc4291_room_ids_as_hashes:
            room_id = "!" + event.event_id[1:]
        ids[name] = event.event_id
        events[event.event_id] = event
    return events, ids


async def main() -> None:
    for line in sys.stdin:
        case = json.loads(line)
        version = KNOWN_ROOM_VERSIONS[case["version"]]
        events, ids = rebuild(case["events"], version)
        names = {v: k for k, v in ids.items()}
        sets = [{(t, k): ids[e] for t, k, e in s} for s in case["sets"]]
        room_id = events[ids["$IMA"]].room_id
        if case["version"] == "1":

            async def load(wanted: Any, events: dict[str, Any] = events) -> dict[str, Any]:
                return {i: events[i] for i in wanted if i in events}

            resolved = await v1.resolve_events_with_store(room_id, version, sets, None, load)
        else:
            resolved = await v2.resolve_events_with_store(
                Clock(), room_id, version, sets, dict(events), Store(events)
            )
        print(json.dumps([[t, k, names[e]] for (t, k), e in dict(resolved).items()]))


asyncio.run(main())
