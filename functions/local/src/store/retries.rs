//! The per-event retry schedule of local delivery (table `retries`): each failed event of a
//! subscription waits here with its attempts, its next attempt time and its last error, so that
//! the subscription's cursor moves on at once. A row leaves the schedule when its event is
//! delivered or dead-lettered, in the same transaction as the dead letter.

use busway_core::ports::StoreError;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, sql, unix_ms};

/// An event waiting for its next attempt.
#[derive(Debug, Clone)]
pub struct ScheduledRetry {
    pub id: i64,
    pub seq: i64,
    pub event: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds `maximum_event_age_seconds` counts from.
    pub age_from: i64,
}

/// Where a failed event goes next.
#[derive(Debug, Clone)]
pub enum Failed {
    /// Another attempt at `due_at` (unix milliseconds).
    Retry { due_at: i64 },
    /// The policy is exhausted: to the dead-letter store.
    Dead,
}

/// A failed attempt of one event, with the attempts made so far (this one included).
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub subscription_id: &'a str,
    pub seq: i64,
    pub event: &'a str,
    pub attempts: u32,
    pub age_from: i64,
    pub error: &'a str,
    pub next: Failed,
}

fn now_text() -> String {
    busway_core::now()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl SqliteStore {
    /// Records a failed attempt: the event's row in the schedule is written (or replaced) with
    /// its next attempt, or it leaves the schedule for the dead-letter store, in one transaction.
    pub async fn record_failure(&self, failure: Failure<'_>) -> Result<(), StoreError> {
        let Failure {
            subscription_id,
            seq,
            event,
            attempts,
            age_from,
            error,
            next,
        } = failure;
        let (id, event, error) = (
            subscription_id.to_string(),
            event.to_string(),
            error.to_string(),
        );
        self.transaction(move |tx| {
            match next {
                Failed::Retry { due_at } => {
                    tx.execute(
                        "INSERT INTO retries (subscription_id, seq, event, attempts, due_at, age_from, last_error)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (subscription_id, seq) DO UPDATE SET attempts = excluded.attempts,
                             due_at = excluded.due_at, last_error = excluded.last_error",
                        params![id, seq, event, attempts, due_at, age_from, error],
                    )
                    .map_err(sql)?;
                }
                Failed::Dead => {
                    tx.execute(
                        "DELETE FROM retries WHERE subscription_id = ?1 AND seq = ?2",
                        params![id, seq],
                    )
                    .map_err(sql)?;
                    tx.execute(
                        "INSERT INTO dead_letters (subscription_id, seq, event, error, attempts, failed_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![id, seq, event, error, attempts, now_text()],
                    )
                    .map_err(sql)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes a delivered event from the schedule.
    pub async fn retry_delivered(&self, subscription_id: &str, seq: i64) -> Result<(), StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM retries WHERE subscription_id = ?1 AND seq = ?2",
                params![id, seq],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    /// Takes up to `max` retries that are due, oldest due first, and leases them for `lease_ms`
    /// (their due time moves on by it), so a crash during their attempt leaves them scheduled.
    /// Also answers when the next retry not taken is due.
    pub async fn take_due_retries(
        &self,
        subscription_id: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<(Vec<ScheduledRetry>, Option<i64>), StoreError> {
        let id = subscription_id.to_string();
        self.transaction(move |tx| {
            let now = unix_ms();
            let limit = i64::try_from(max).unwrap_or(i64::MAX);
            let taken: Vec<ScheduledRetry> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, seq, event, attempts, age_from FROM retries
                         WHERE subscription_id = ?1 AND due_at <= ?2 ORDER BY due_at LIMIT ?3",
                    )
                    .map_err(sql)?;
                stmt.query_map(params![id, now, limit], |r| {
                    Ok(ScheduledRetry {
                        id: r.get(0)?,
                        seq: r.get(1)?,
                        event: r.get(2)?,
                        attempts: r.get(3)?,
                        age_from: r.get(4)?,
                    })
                })
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?
            };
            let mut lease = tx
                .prepare_cached("UPDATE retries SET due_at = ?2 WHERE id = ?1")
                .map_err(sql)?;
            for retry in &taken {
                lease
                    .execute(params![retry.id, now.saturating_add(lease_ms)])
                    .map_err(sql)?;
            }
            let next = next_due(tx, &id)?;
            Ok((taken, next))
        })
        .await
    }

    /// Drops the subscription's schedule, when its rule is removed.
    pub async fn forget_retries(&self, subscription_id: &str) -> Result<(), StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM retries WHERE subscription_id = ?1",
                params![id],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    /// Moves every dead letter of the subscription into the retry schedule, due now, with no
    /// attempts made and its event age counted from now: a redriven event follows the policy
    /// again. Concurrent redrives take disjoint letters (one transaction each), so each letter is
    /// sent again once. Returns how many were taken.
    pub async fn redrive_dead_letters(&self, subscription_id: &str) -> Result<usize, StoreError> {
        let id = subscription_id.to_string();
        self.transaction(move |tx| {
            let now = unix_ms();
            let moved = tx
                .execute(
                    "INSERT INTO retries (subscription_id, seq, event, attempts, due_at, age_from, last_error)
                     SELECT subscription_id, seq, event, 0, ?2, ?2, error FROM dead_letters
                     WHERE subscription_id = ?1 AND true
                     ON CONFLICT (subscription_id, seq) DO NOTHING",
                    params![id, now],
                )
                .map_err(sql)?;
            tx.execute(
                "DELETE FROM dead_letters WHERE subscription_id = ?1",
                params![id],
            )
            .map_err(sql)?;
            Ok(moved)
        })
        .await
    }
}

fn next_due(conn: &rusqlite::Connection, subscription_id: &str) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT min(due_at) FROM retries WHERE subscription_id = ?1",
        params![subscription_id],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
    .map_err(sql)
}
