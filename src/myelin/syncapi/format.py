"""Events as clients see them (client-server-api "Room Event Format").

Served from the stored PDU: redacted events are served redacted with
`unsigned.redacted_because`, and `unsigned` carries the event's `age` and, for the
device that sent it, its `transaction_id`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.core.redaction import redact
from myelin.core.roomversions import room_version

CLIENT_KEYS = ("content", "event_id", "origin_server_ts", "sender", "state_key", "type")
STRIPPED_KEYS = ("content", "sender", "state_key", "type")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the served timeline."""

    pos: int
    room_id: str
    event_id: str
    sender: str
    type: str
    state_key: str | None
    room_version: str
    pdu_json: str
    redacted_by: str | None
    replaces: str | None = None

    @property
    def pdu(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.pdu_json)
        return value


EVENT_COLUMNS = (
    "pos, room_id, event_id, sender, type, state_key, room_version, pdu, redacted_by, replaces"
)


def stored_event(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(*row)


def now_ms() -> int:
    return int(time.time() * 1000)


def client_event(
    event: StoredEvent,
    *,
    redactions: Mapping[str, StoredEvent] | None = None,
    txn_ids: Mapping[str, str] | None = None,
    replaced: Mapping[str, StoredEvent] | None = None,
    relations: Mapping[str, Mapping[str, Any]] | None = None,
    with_room_id: bool = True,
    now: int | None = None,
) -> dict[str, Any]:
    """The client format of `event`; `redactions` maps redaction event IDs to their rows
    (for `redacted_because`), `txn_ids` event IDs to the requesting device's txn IDs,
    `replaced` the state events that state events replaced (for `prev_content`),
    `relations` event IDs to their bundled aggregations (`unsigned["m.relations"]`)."""
    pdu = event.pdu
    if event.redacted_by is not None:
        pdu = redact(pdu, room_version(event.room_version))
    out: dict[str, Any] = {k: pdu[k] for k in CLIENT_KEYS if k in pdu}
    out["event_id"] = event.event_id
    out.setdefault("content", {})
    if with_room_id:
        out["room_id"] = event.room_id
    unsigned: dict[str, Any] = {}
    ts = pdu.get("origin_server_ts")
    if isinstance(ts, int):
        unsigned["age"] = max(0, (now if now is not None else now_ms()) - ts)
    if txn_ids and event.event_id in txn_ids:
        unsigned["transaction_id"] = txn_ids[event.event_id]
    if event.redacted_by is not None:
        unsigned["redacted_by"] = event.redacted_by  # as Synapse serves it (Sytest reads it)
        because = (redactions or {}).get(event.redacted_by)
        if because is not None:
            unsigned["redacted_because"] = client_event(because, now=now)
    if event.replaces is not None and replaced and event.replaces in replaced:
        previous = replaced[event.replaces]
        prev_pdu = previous.pdu
        if previous.redacted_by is not None:
            prev_pdu = redact(prev_pdu, room_version(previous.room_version))
        unsigned["replaces_state"] = previous.event_id
        unsigned["prev_content"] = prev_pdu.get("content", {})
        unsigned["prev_sender"] = previous.sender
    if event.type == "m.room.redaction" and event.redacted_by is None:
        redacts = pdu.get("redacts") or pdu.get("content", {}).get("redacts")
        if isinstance(redacts, str):
            out["redacts"] = redacts
    if relations and event.event_id in relations:
        unsigned["m.relations"] = dict(relations[event.event_id])
    out["unsigned"] = unsigned
    return out


def federation_event(event: StoredEvent, served: Mapping[str, Any]) -> dict[str, Any]:
    """The federation format of `event` (a filter's `event_format: federation`): the PDU
    as servers exchange it, redacted if it was, with the `event_id` (which PDUs of room
    version 3 on do not carry: clients still need it to refer to the event) and the
    `unsigned` of its client format `served` (age, transaction ID, redaction)."""
    pdu = event.pdu
    if event.redacted_by is not None:
        pdu = redact(pdu, room_version(event.room_version))
    out = dict(pdu)
    out["event_id"] = event.event_id
    out["room_id"] = event.room_id
    out["unsigned"] = served.get("unsigned", {})
    return out


def stripped_event(event: StoredEvent) -> dict[str, Any]:
    """Stripped state (invites): type, state_key, content and sender only."""
    pdu = event.pdu
    return {k: pdu[k] for k in STRIPPED_KEYS if k in pdu}
