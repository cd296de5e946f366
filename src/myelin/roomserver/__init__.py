"""The roomserver: the single writer per room. Auth, state, numeric IDs, state snapshots;
appends accepted events to the room event log (the commit point).

    from myelin.roomserver import Roomserver, InputKind

    rs = await Roomserver.open(db, log)          # migrates, catches up from the log
    result = await rs.submit(event)             # InputResult(event_id, status, reason, offset)
    latest = await rs.latest_events(room_id)    # prev_event_ids and depth for a new event
    state = await rs.current_state(room_id)     # {(type, state_key): event_id}

Queries: `current_state`, `current_state_events`, `state_before`, `state_after`,
`membership`, `rooms_of_user`, `latest_events`, `event`, `events`, `event_status`,
`auth_chain`, `room_version`. `myelin.roomserver.rebuild.rebuild` replays the log.
"""

from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import (
    InputError,
    InputEvent,
    InputKind,
    InputResult,
    LatestEvents,
    Origin,
    RoomserverError,
    Status,
    UnknownEventError,
    UnknownRoomError,
)

__all__ = [
    "InputError",
    "InputEvent",
    "InputKind",
    "InputResult",
    "LatestEvents",
    "Origin",
    "Roomserver",
    "RoomserverError",
    "Status",
    "UnknownEventError",
    "UnknownRoomError",
]
