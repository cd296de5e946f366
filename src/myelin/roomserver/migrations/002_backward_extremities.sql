-- Backward extremities: events a room's DAG here refers to (as prev events of events with
-- state) without having them with state (unknown, or known only as outliers). They are
-- where history continues on other servers: `/backfill` starts from them. Rebuilt from
-- the log like every other table here.
CREATE TABLE rs_backward_extremities (
    room_nid BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_nid, event_id)
);
CREATE INDEX rs_backward_extremities_event ON rs_backward_extremities (event_id);
