-- The to-device stream's last handed-out position, kept apart from the inbox rows: those
-- are deleted once delivered, and SQLite would otherwise give a new row `max(pos) + 1`,
-- a position that devices' sync tokens may already have passed. Senders take positions
-- from here (the row lock also orders concurrent senders on PostgreSQL).
CREATE TABLE e2e_to_device_stream (
    id BIGINT PRIMARY KEY,
    pos BIGINT NOT NULL
);
INSERT INTO e2e_to_device_stream (id, pos) SELECT 1, COALESCE(max(pos), 0) FROM e2e_to_device;
