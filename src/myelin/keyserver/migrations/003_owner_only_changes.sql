-- Some key changes are visible to their owner alone (a new user-signing key: /keys/query
-- serves it only to its owner), so they are announced to the owner's own devices only.
ALTER TABLE e2e_device_list_stream ADD COLUMN owner_only INTEGER NOT NULL DEFAULT 0;
