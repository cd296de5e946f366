-- The history of one state key of a room (history visibility changes, one user's
-- membership changes), read for every page of history a user is served
-- (syncapi/visibility.py): without it each read scans the whole room.
CREATE INDEX sync_events_state ON sync_events (room_id, type, state_key, pos);
-- Users who deactivated their account with `erase`: their events are served redacted to
-- anyone who was not joined when they were sent. A request, not a projection of the
-- log: a rebuild keeps it.
CREATE TABLE sync_erased (
    user_id TEXT PRIMARY KEY
);
