-- A refresh token issued by refreshing another one remembers it: the spec keeps the old
-- refresh token valid until the new access or refresh token is first used.
ALTER TABLE refresh_tokens ADD COLUMN parent_id BIGINT;
