-- URL previews (GET .../preview_url): the OpenGraph answer for a URL, as JSON text, kept
-- until expires_ts (milliseconds since the epoch) so that every client showing the same
-- link costs one fetch per hour, across restarts. Several versions of one URL may exist
-- (one per fetch); readers take the newest unexpired one.
CREATE TABLE url_previews (
    url TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    og TEXT NOT NULL,
    PRIMARY KEY (url, fetched_ts)
);

CREATE INDEX url_previews_expiry ON url_previews (expires_ts);
