-- The per-event retry schedule of local delivery: a failed delivery waits here with its own
-- attempts and next attempt time, so its subscription's cursor and other events move on. The row
-- keeps the event's text, so a scheduled retry never needs the log (which may be pruned).
CREATE TABLE retries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    -- The event's position in the log; a row exists once per event and subscription.
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    -- Unix milliseconds.
    due_at INTEGER NOT NULL,
    -- Where maximum_event_age_seconds counts from: the event's time, or its redrive.
    age_from INTEGER NOT NULL,
    last_error TEXT NOT NULL);
CREATE INDEX retries_by_due ON retries (subscription_id, due_at);
CREATE UNIQUE INDEX retries_by_event ON retries (subscription_id, seq);
-- When each queued message was sent (unix milliseconds), so it expires as SQS's do. Messages
-- already queued count from this migration.
ALTER TABLE queue_messages ADD COLUMN sent_at INTEGER NOT NULL DEFAULT 0;
UPDATE queue_messages SET sent_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
