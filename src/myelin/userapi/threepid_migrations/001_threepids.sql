-- The 3PIDs (e-mail addresses, phone numbers) of each account; an address belongs to at
-- most one account. `address` is stored canonical (e-mail: lower case).
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);
-- The identity servers this server bound a 3PID on for a user, so that removing the
-- 3PID or deactivating the account can unbind it there too.
CREATE TABLE user_threepid_id_servers (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    PRIMARY KEY (user_id, medium, address, id_server)
);
-- Validation sessions of requestToken: the e-mail sent holds a link with the token
-- (stored as a digest); following it marks the session validated.
CREATE TABLE threepid_sessions (
    session_id TEXT PRIMARY KEY,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    last_send_attempt BIGINT NOT NULL,
    token_digest TEXT NOT NULL,
    next_link TEXT,
    created_at BIGINT NOT NULL,
    validated_at BIGINT
);
CREATE INDEX threepid_sessions_lookup ON threepid_sessions (client_secret, medium, address);
