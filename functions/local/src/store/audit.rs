//! The audit trail (table `audit`), newest first by rowid, and the teams' target accounts
//! (table `team_targets`).

use async_trait::async_trait;
use busway_core::Team;
use busway_core::audit::{AuditEntry, AuditFilter, AuditLog};
use busway_core::page::{Page, PageRequest};
use busway_core::ports::StoreError;
use busway_core::targets::{TeamTargetStore, TeamTargets};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, from_json, page_limit, row_position, rows_page, sql, to_json};

#[async_trait]
impl AuditLog for SqliteStore {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let (id, team, event_type, doc) = (
            entry.id.clone(),
            entry.team.as_ref().map(ToString::to_string),
            entry.event_type.as_ref().map(ToString::to_string),
            to_json(entry)?,
        );
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO audit (id, team, event_type, doc) VALUES (?1, ?2, ?3, ?4)",
                params![id, team, event_type, doc],
            )
            .map(|_| ())
            .map_err(sql)
        })
        .await
    }

    async fn page_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let (team, event_type, limit) = (
            filter.team.as_ref().map(ToString::to_string),
            filter.event_type.as_ref().map(ToString::to_string),
            page.limit,
        );
        let before = row_position(page.after.as_deref())?.max(0);
        self.run(move |conn| {
            rows_page(
                conn,
                "SELECT rowid, doc FROM audit WHERE (?1 IS NULL OR team = ?1)
                 AND (?2 IS NULL OR event_type = ?2) AND (?3 = 0 OR rowid < ?3)
                 ORDER BY rowid DESC LIMIT ?4",
                params![team, event_type, before, page_limit(limit)],
                limit,
            )
        })
        .await
    }
}

#[async_trait]
impl TeamTargetStore for SqliteStore {
    async fn team_targets(&self, team: &Team) -> Result<Option<TeamTargets>, StoreError> {
        let team = team.to_string();
        self.run(move |conn| {
            conn.query_row(
                "SELECT doc FROM team_targets WHERE team = ?1",
                params![team],
                |r| from_json(&r.get::<_, String>(0)?),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }

    async fn put_team_targets(&self, targets: &TeamTargets) -> Result<(), StoreError> {
        let (team, doc) = (targets.team.to_string(), to_json(targets)?);
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO team_targets (team, doc) VALUES (?1, ?2)
                 ON CONFLICT (team) DO UPDATE SET doc = excluded.doc",
                params![team, doc],
            )
            .map(|_| ())
            .map_err(sql)
        })
        .await
    }
}
