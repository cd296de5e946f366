-- Account data (global: room_id = ''), the user's push rules, pushers and profiles.
-- Every write to account data takes a new position in the account-data stream, which
-- `/sync` tokens carry; a row keeps the position of its latest write.
CREATE TABLE account_data_stream (
    pos AUTO_ID,
    user_id TEXT NOT NULL
);
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_pos ON account_data (user_id, pos);
-- What the push-rule engine calls `StoredRules`, as JSON: the user's own rules and their
-- changes to server-default rules (the effective set is computed from it).
CREATE TABLE push_rules (
    user_id TEXT PRIMARY KEY,
    stored TEXT NOT NULL
);
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    pusher TEXT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT
);
