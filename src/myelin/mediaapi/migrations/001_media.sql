-- Local media: one row per mxc://<this server>/<media_id>. The bytes are a file in the
-- data directory; this row is the truth about whether they are complete. A row whose
-- size is NULL was made by POST /_matrix/media/v1/create and still awaits its content
-- until unused_expires_at (milliseconds since the epoch).
CREATE TABLE media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    unused_expires_at BIGINT,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    uploaded_ts BIGINT
);

CREATE INDEX media_pending ON media (user_id, unused_expires_at);

-- Thumbnails generated from local media, cached as files; width, height and method are
-- the advertised size they were made for (the image itself may be smaller).
CREATE TABLE media_thumbnails (
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (media_id, width, height, method)
);
