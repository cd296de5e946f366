-- The log offset up to which the federation sender has queued events (one row, id = 1).
CREATE TABLE federation_sender_position (
    id BIGINT PRIMARY KEY,
    pos BIGINT NOT NULL
);
