-- The first release's schema (created with IF NOT EXISTS, so its data dirs already have it).
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    source TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    time TEXT NOT NULL,
    detail TEXT NOT NULL,
    UNIQUE (detail_type, event_id));
CREATE INDEX IF NOT EXISTS events_by_detail_type ON events (detail_type, seq);
