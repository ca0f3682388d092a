-- Where each team's LAMBDA and SQS targets may be (PUT /teams/{team}/targets): one JSON
-- registration (busway_core::targets::TeamTargets) per team.
CREATE TABLE team_targets (
    team TEXT PRIMARY KEY,
    doc TEXT NOT NULL);
