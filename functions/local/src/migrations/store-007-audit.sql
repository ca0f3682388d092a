-- The audit trail of the portal's changes (GET /audit): one JSON entry (busway_core::audit) per
-- change, read newest first by rowid, filtered by the owning team and the event type.
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    team TEXT,
    event_type TEXT,
    doc TEXT NOT NULL);
CREATE INDEX audit_by_team ON audit (team);
CREATE INDEX audit_by_event_type ON audit (event_type);
