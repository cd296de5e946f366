-- Read receipts: the latest receipt per (room, type, user, thread); thread_id '' is an
-- unthreaded receipt. `pos` is the receipt stream position of its latest change.
CREATE TABLE receipt_stream (
    pos AUTO_ID,
    room_id TEXT NOT NULL
);
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts (room_id, pos);
-- Presence: one row per user who ever set it, `pos` in the presence stream.
CREATE TABLE presence_stream (
    pos AUTO_ID,
    user_id TEXT NOT NULL
);
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    pos BIGINT NOT NULL
);
