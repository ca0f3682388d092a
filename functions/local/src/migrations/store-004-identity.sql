-- API keys: each key's record (JSON) beside the SHA-256 of its secret, which is all the store
-- ever sees of it.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL);
-- The secrets each HTTPS subscription's deliveries are signed with (Standard Webhooks), newest
-- first, as a JSON list: the current one and, after a rotation, the previous one until it expires.
CREATE TABLE signing_secrets (
    subscription_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL);
