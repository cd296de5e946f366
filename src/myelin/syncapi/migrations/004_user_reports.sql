-- Reports about users (POST /users/{userId}/report, Matrix 1.14): like sync_reports, client
-- requests kept for the server's administrators, not projections of the log.
CREATE TABLE sync_user_reports (
    id AUTO_ID,
    reported_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT,
    received_ts BIGINT NOT NULL
);
