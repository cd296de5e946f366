-- The sync API's projections of the room event log. Stream positions are log offsets.
CREATE TABLE sync_position (
    id BIGINT PRIMARY KEY,
    pos BIGINT NOT NULL
);
CREATE TABLE sync_events (
    pos BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    room_version TEXT NOT NULL,
    pdu TEXT NOT NULL,
    redacted_by TEXT,
    -- For state events: the event that held this state key before (prev_content).
    replaces TEXT
);
CREATE INDEX sync_events_room ON sync_events (room_id, pos);
CREATE TABLE sync_current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE TABLE sync_memberships (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
CREATE INDEX sync_memberships_room ON sync_memberships (room_id, membership);
-- Client transaction IDs: not a projection of the log but a record of client requests,
-- kept so that a retransmission gets the first answer and the sender's device sees its
-- `transaction_id`. Dropping the projections for a rebuild keeps this table.
CREATE TABLE sync_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX sync_txns_event ON sync_txns (event_id);
CREATE TABLE sync_forgotten (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
