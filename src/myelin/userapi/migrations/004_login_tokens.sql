-- m.login.token tokens (POST /login/get_token): only a digest of the token is stored; a
-- token is deleted when used (single use) and is refused after `expires_at` (ms).
CREATE TABLE login_tokens (
    token_digest TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_tokens_expiry ON login_tokens (expires_at);
