-- The answers kept for the portal's Idempotency-Key headers (busway_core::idempotency): one row
-- per caller-scoped key, a claim while its request runs (status and body NULL), then its answer
-- until expires_at (unix seconds). Expired rows are deleted by the next claim.
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    token TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    expires_at INTEGER NOT NULL);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
