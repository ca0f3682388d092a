-- The subscriptions whose delivery is paused (POST /subscriptions/{id}/pause): their cursors
-- and retry schedules stay as they are until resumed, across restarts.
CREATE TABLE paused_subscriptions (
    subscription_id TEXT PRIMARY KEY,
    paused_at TEXT NOT NULL);
