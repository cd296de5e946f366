-- The roomserver's projections of the room event log. Everything here is rebuilt by
-- `myelin rebuild` from the log; numeric IDs (NIDs) are assigned by the database, from 1.

CREATE TABLE rs_rooms (
    room_nid AUTO_ID,
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL
);

CREATE TABLE rs_event_types (
    type_nid AUTO_ID,
    event_type TEXT NOT NULL UNIQUE
);

CREATE TABLE rs_state_keys (
    state_key_nid AUTO_ID,
    state_key TEXT NOT NULL UNIQUE
);

-- status: accepted, soft_failed, rejected, outlier. Snapshots are NULL for outliers.
CREATE TABLE rs_events (
    event_nid AUTO_ID,
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL,
    type_nid BIGINT NOT NULL,
    state_key_nid BIGINT,
    depth BIGINT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    before_snapshot_nid BIGINT,
    after_snapshot_nid BIGINT,
    log_offset BIGINT NOT NULL,
    pdu BLOB NOT NULL
);
CREATE INDEX rs_events_room_depth ON rs_events (room_nid, depth);

-- A block: sorted (type NID, state key NID, event NID) triples packed as little-endian
-- int64, identified by the hash of those bytes and shared by every snapshot that has it.
CREATE TABLE rs_state_blocks (
    block_nid AUTO_ID,
    hash BLOB NOT NULL UNIQUE,
    entries BLOB NOT NULL
);

-- A snapshot: sorted (bucket, block NID) pairs packed the same way, one block per
-- non-empty bucket of the state's keys; identified by the hash of those bytes.
CREATE TABLE rs_state_snapshots (
    snapshot_nid AUTO_ID,
    hash BLOB NOT NULL UNIQUE,
    blocks BLOB NOT NULL
);

CREATE TABLE rs_forward_extremities (
    room_nid BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);

CREATE TABLE rs_current_state (
    room_nid BIGINT NOT NULL,
    type_nid BIGINT NOT NULL,
    state_key_nid BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, type_nid, state_key_nid)
);

CREATE TABLE rs_memberships (
    room_nid BIGINT NOT NULL,
    user_nid BIGINT NOT NULL,
    membership TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, user_nid)
);
CREATE INDEX rs_memberships_user ON rs_memberships (user_nid, membership);

-- How far into the room event log the projections above have been brought.
CREATE TABLE rs_position (
    id BIGINT PRIMARY KEY,
    log_offset BIGINT NOT NULL
);
