-- The first release's schema (created with IF NOT EXISTS, so its data dirs already have it).
CREATE TABLE IF NOT EXISTS event_types (
    name TEXT PRIMARY KEY, latest_version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS event_versions (
    event_type TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (event_type, version));
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY, event_type TEXT NOT NULL, version INTEGER NOT NULL,
    target_unit TEXT NOT NULL, state TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS subscriptions_by_event ON subscriptions (event_type, version, state);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, event_type TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deployments_by_event ON deployments (event_type);
CREATE TABLE IF NOT EXISTS registry (
    event_type TEXT NOT NULL, version INTEGER NOT NULL, schema TEXT NOT NULL,
    PRIMARY KEY (event_type, version));
CREATE TABLE IF NOT EXISTS routes (
    event_type TEXT NOT NULL, version INTEGER NOT NULL, application TEXT NOT NULL, schema TEXT NOT NULL,
    PRIMARY KEY (event_type, version));
CREATE TABLE IF NOT EXISTS rules (
    subscription_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS delivery_progress (
    subscription_id TEXT PRIMARY KEY, cursor INTEGER NOT NULL, stats TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, subscription_id TEXT NOT NULL, seq INTEGER NOT NULL,
    event TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, failed_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_by_subscription ON dead_letters (subscription_id, id);
CREATE TABLE IF NOT EXISTS queue_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, message_id TEXT NOT NULL,
    body TEXT NOT NULL, receipt TEXT, visible_at INTEGER NOT NULL DEFAULT 0,
    receive_count INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS queue_messages_by_queue ON queue_messages (queue, visible_at, id);
CREATE TABLE IF NOT EXISTS processed_objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, content BLOB NOT NULL, PRIMARY KEY (bucket, key));
