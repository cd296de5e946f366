"""Values the roomserver takes and gives: input kinds, results, errors, log records.

The log record is the roomserver's commit point and the only input of `myelin rebuild`,
so it carries everything the projections need without re-running auth or state
resolution: the event, its status, the state before it (as a delta against the state
after one of its prev events) and the change it made to the room's current state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from myelin.core.events import Event, StateKey
from myelin.core.roomversions import room_version

RECORD_VERSION = 1


class InputKind(enum.Enum):
    NEW = "new"
    """A new event at the front of the DAG: checked against current state too (soft fail),
    moves the forward extremities and the current state."""
    BACKFILL = "backfill"
    """An old event from history (backfill): state is computed, extremities and current
    state stay. One stored as an outlier gets its place in the DAG. The prev events it
    lacks become the room's backward extremities (where backfill goes on from)."""
    OUTLIER = "outlier"
    """An event known without its place in the DAG (e.g. an auth event fetched on its
    own): checked against its auth events only; no state."""


class Origin(enum.Enum):
    LOCAL = "local"
    FEDERATED = "federated"


class Status(enum.Enum):
    ACCEPTED = "accepted"
    SOFT_FAILED = "soft_failed"
    """Authorised by the state before it but not by current state: stored, never served
    to clients, not a forward extremity."""
    REJECTED = "rejected"
    """Not authorised: recorded so it is not processed again, never served."""
    OUTLIER = "outlier"


@dataclass(frozen=True, slots=True)
class ClientTxn:
    """The client request a local event answers (`PUT .../{txnId}`): carried in the
    event's log record, so the transaction is recorded in the same commit as the event
    (a retransmission after any crash finds it, and `myelin rebuild` restores it)."""

    user_id: str
    device_id: str
    scope: str
    txn_id: str


@dataclass(frozen=True, slots=True)
class InputEvent:
    event: Event
    kind: InputKind = InputKind.NEW
    origin: Origin = Origin.LOCAL
    txn: ClientTxn | None = None
    fresh: bool = False
    """Built by this server just now (a new event ID): the duplicate check looks in
    memory only (whatever this writer committed recently), never in the database."""
    state: Mapping[StateKey, str] | None = None
    """The state before the event as another server gave it (a join over federation,
    or an event whose prev events could not be fetched): used instead of the state after
    its prev events, which need not be known. Its events must be stored already; the
    roomserver drops (and logs) those that may not stand in the room's state: rejected
    ones, ones of another room, non-state ones and ones listed under another key."""


@dataclass(frozen=True, slots=True)
class InputResult:
    """What became of an input event. `log_offset` is where it sits in the log (durable)."""

    event_id: str
    status: Status
    reason: str | None
    log_offset: int
    duplicate: bool = False


class RoomserverError(Exception):
    """Base class of the roomserver's errors."""


class InputError(RoomserverError):
    """An input event that can't be processed as given (nothing was stored): an unknown
    room, missing prev or auth events, a malformed event."""


class UnknownEventError(RoomserverError):
    """A query named an event that is not stored (or was rejected)."""


class UnknownRoomError(RoomserverError):
    """A query named a room this server does not know."""


@dataclass(frozen=True, slots=True)
class LatestEvents:
    """What a new local event needs: its `prev_events`, `depth` and auth state."""

    room_id: str
    room_version: str
    prev_event_ids: tuple[str, ...]
    depth: int
    """The depth for the new event: one more than the deepest prev event."""


StateChange = tuple[str, str, str | None]
"""`(type, state_key, event_id or None for removal)`."""


@dataclass(frozen=True, slots=True)
class LogPayload:
    """The body of one log record (JSON)."""

    event: Event
    status: Status
    kind: InputKind
    origin: Origin
    reason: str | None = None
    before_base: str | None = None
    """The event whose state-after the state before this one starts from (None: empty)."""
    before_delta: Sequence[StateChange] = ()
    has_state: bool = True
    """False for outliers: no state is known."""
    extremities: Sequence[str] | None = None
    """The room's forward extremities after this event, when it changed them."""
    state_delta: Sequence[StateChange] = field(default=())
    """Changes to the room's current state."""
    txn: ClientTxn | None = None
    """The client transaction of a local event, if any."""

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": RECORD_VERSION,
            "event_id": self.event.event_id,
            "room_version": self.event.room_version.identifier,
            "pdu": self.event.pdu,
            "status": self.status.value,
            "kind": self.kind.value,
            "origin": self.origin.value,
            "reason": self.reason,
        }
        if self.has_state:
            body["before"] = {"base": self.before_base, "delta": list(self.before_delta)}
        if self.extremities is not None:
            body["extremities"] = list(self.extremities)
        body["state_delta"] = list(self.state_delta)
        if self.txn is not None:
            t = self.txn
            body["txn"] = [t.user_id, t.device_id, t.scope, t.txn_id]
        return orjson.dumps(body)

    @staticmethod
    def decode(data: bytes) -> LogPayload:
        body = orjson.loads(data)
        if not isinstance(body, dict) or body.get("v") != RECORD_VERSION:
            raise RoomserverError("not a roomserver log record of a known version")
        version = room_version(body["room_version"])
        event = Event(body["event_id"], version, body["pdu"])
        before = body.get("before")
        txn = body.get("txn")
        return LogPayload(
            event=event,
            status=Status(body["status"]),
            kind=InputKind(body["kind"]),
            origin=Origin(body["origin"]),
            reason=body.get("reason"),
            before_base=before["base"] if before else None,
            before_delta=[tuple(c) for c in before["delta"]] if before else (),
            has_state=before is not None,
            extremities=body.get("extremities"),
            state_delta=[tuple(c) for c in body.get("state_delta", ())],
            txn=ClientTxn(*txn) if txn else None,
        )


def diff_state(old: Mapping[StateKey, str], new: Mapping[StateKey, str]) -> list[StateChange]:
    """The changes that turn `old` into `new`, in a stable order."""
    changes: list[StateChange] = []
    for key, event_id in new.items():
        if old.get(key) != event_id:
            changes.append((key[0], key[1], event_id))
    for key in old:
        if key not in new:
            changes.append((key[0], key[1], None))
    changes.sort(key=lambda c: (c[0], c[1]))
    return changes
