-- The log offset up to which the pusher has handled events (one row, id = 1).
CREATE TABLE push_position (
    id BIGINT PRIMARY KEY,
    pos BIGINT NOT NULL
);
