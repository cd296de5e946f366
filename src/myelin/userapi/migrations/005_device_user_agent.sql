-- The User-Agent a device last called with, beside its last address and time: the
-- `connections` of GET /admin/whois/{userId} name all three.
ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;
