-- Projections for relations (threads, edits, reactions, references), the search index and
-- event timestamps (`/timestamp_to_event`); all rebuilt from the log. Reports are requests
-- of clients, not projections, and survive a rebuild.
CREATE TABLE sync_relations (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    -- For annotations: the key (the reaction); NULL otherwise.
    aggregation_key TEXT,
    origin_server_ts BIGINT NOT NULL,
    pos BIGINT NOT NULL
);
CREATE INDEX sync_relations_parent ON sync_relations (parent_id, pos);
CREATE INDEX sync_relations_thread ON sync_relations (room_id, rel_type, pos);
CREATE TABLE sync_search (
    pos BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL
);
CREATE INDEX sync_search_room ON sync_search (room_id, pos);
CREATE TABLE sync_timestamps (
    pos BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL
);
CREATE INDEX sync_timestamps_room ON sync_timestamps (room_id, origin_server_ts);
CREATE TABLE sync_reports (
    id AUTO_ID,
    room_id TEXT NOT NULL,
    event_id TEXT,
    user_id TEXT NOT NULL,
    reason TEXT,
    score BIGINT,
    received_ts BIGINT NOT NULL
);
