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

/// What `take_due_retries` did.
#[derive(Debug)]
pub struct DueRetries {
    /// Leased for their next attempt.
    pub taken: Vec<ScheduledRetry>,
    /// Due but past the maximum event age: moved to the dead-letter store without an attempt.
    pub dead_lettered: usize,
    /// When the next retry not taken is due (unix milliseconds).
    pub next_due: Option<i64>,
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
    /// Records a failed attempt: the event's row in the schedule is written (or updated) with
    /// its next attempt, or it leaves the schedule for the dead-letter store, in one transaction.
    /// A row of another event at the same position is replaced: a power loss can take the log's
    /// last events, not yet flushed, and their positions are given again while this store (fully
    /// synchronous) keeps their rows.
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
                    // SET reads the row as stored: `event` in the CASE is the stored event's.
                    tx.execute(
                        "INSERT INTO retries (subscription_id, seq, event, attempts, due_at, age_from, last_error)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (subscription_id, seq) DO UPDATE SET attempts = excluded.attempts,
                             due_at = excluded.due_at, last_error = excluded.last_error,
                             age_from = CASE WHEN event = excluded.event THEN age_from ELSE excluded.age_from END,
                             event = excluded.event",
                        params![id, seq, event, attempts, due_at, age_from, error],
                    )
                    .map_err(sql)?;
                }
                Failed::Dead => dead_letter(tx, &id, seq, &event, &error, attempts)?,
            }
            Ok(())
        })
        .await
    }

    /// How many of the subscription's events wait for another attempt.
    pub async fn pending_retries(&self, subscription_id: &str) -> Result<u64, StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            let count: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM retries WHERE subscription_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            Ok(count.unsigned_abs())
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
    /// Due retries whose age (from `age_from`) has reached `max_age_ms`, as after a pause or a
    /// stop, are dead-lettered instead, in the same transaction. Also answers when the next
    /// retry not taken is due.
    pub async fn take_due_retries(
        &self,
        subscription_id: &str,
        max: usize,
        lease_ms: i64,
        max_age_ms: i64,
    ) -> Result<DueRetries, StoreError> {
        let id = subscription_id.to_string();
        self.transaction(move |tx| {
            let now = unix_ms();
            let expired: Vec<(i64, String, u32, String)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, event, attempts, last_error FROM retries
                         WHERE subscription_id = ?1 AND due_at <= ?2 AND age_from <= ?3",
                    )
                    .map_err(sql)?;
                stmt.query_map(params![id, now, now.saturating_sub(max_age_ms)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?
            };
            for (seq, event, attempts, error) in &expired {
                dead_letter(tx, &id, *seq, event, error, *attempts)?;
            }
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
            Ok(DueRetries {
                taken,
                dead_lettered: expired.len(),
                next_due: next_due(tx, &id)?,
            })
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

/// Moves an event from the schedule to the dead-letter store.
fn dead_letter(
    tx: &rusqlite::Transaction<'_>,
    subscription_id: &str,
    seq: i64,
    event: &str,
    error: &str,
    attempts: u32,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM retries WHERE subscription_id = ?1 AND seq = ?2",
        params![subscription_id, seq],
    )
    .map_err(sql)?;
    tx.execute(
        "INSERT INTO dead_letters (subscription_id, seq, event, error, attempts, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![subscription_id, seq, event, error, attempts, now_text()],
    )
    .map_err(sql)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use busway_core::page::PageRequest;

    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = SqliteStore::open(&dir.path().join("busway.db")).expect("the store");
        (dir, store)
    }

    fn failure<'a>(
        seq: i64,
        event: &'a str,
        attempts: u32,
        age_from: i64,
        due_at: i64,
    ) -> Failure<'a> {
        Failure {
            subscription_id: "sub",
            seq,
            event,
            attempts,
            age_from,
            error: "500",
            next: Failed::Retry { due_at },
        }
    }

    #[tokio::test]
    async fn a_due_retry_past_its_maximum_age_is_dead_lettered_without_an_attempt() {
        let (_dir, store) = store();
        let (now, hour) = (unix_ms(), 3_600_000);
        let (old, fresh, leased) = (r#"{"id":"old"}"#, r#"{"id":"fresh"}"#, r#"{"id":"leased"}"#);
        for retry in [
            failure(1, old, 3, now - 2 * hour, now - hour),
            failure(2, fresh, 1, now - 1000, now - 1),
            // In flight: its lease is not over, so its attempt settles it.
            failure(3, leased, 2, now - 2 * hour, now + hour),
        ] {
            store.record_failure(retry).await.expect("scheduled");
        }

        let due = store
            .take_due_retries("sub", 10, 60_000, hour)
            .await
            .expect("taken");
        let taken: Vec<&str> = due.taken.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(taken, [fresh]);
        assert_eq!(due.dead_lettered, 1);
        let letters = store
            .dead_letters("sub", &PageRequest::default())
            .await
            .expect("dead letters")
            .items;
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].event["id"], "old");
        assert_eq!((letters[0].attempts, letters[0].error.as_str()), (3, "500"));
        assert!(
            due.next_due.is_some_and(|at| at > now),
            "the lease and the leased retry stay scheduled"
        );
    }

    #[tokio::test]
    async fn a_failure_of_another_event_at_a_scheduled_position_replaces_its_row() {
        let (_dir, store) = store();
        let now = unix_ms();
        let (lost, reused) = (r#"{"id":"lost"}"#, r#"{"id":"reused"}"#);
        store
            .record_failure(failure(7, lost, 4, now - 60_000, now - 2))
            .await
            .expect("scheduled");
        store
            .record_failure(failure(7, reused, 1, now - 10, now - 1))
            .await
            .expect("scheduled");

        let due = store
            .take_due_retries("sub", 10, 60_000, 3_600_000)
            .await
            .expect("taken");
        let [retry] = &due.taken[..] else {
            panic!("one row per position: {:?}", due.taken);
        };
        assert_eq!(
            (retry.event.as_str(), retry.attempts, retry.age_from),
            (reused, 1, now - 10)
        );
    }

    #[tokio::test]
    async fn a_failed_retry_of_the_same_event_keeps_where_its_age_counts_from() {
        let (_dir, store) = store();
        let now = unix_ms();
        let event = r#"{"id":"redriven"}"#;
        store
            .record_failure(failure(7, event, 1, now - 60_000, now - 2))
            .await
            .expect("scheduled");
        // Read again from the log (a replay): a first attempt, whose age counts from the
        // event's time, while its row's counts from its redrive.
        store
            .record_failure(failure(7, event, 1, now - 120_000, now - 1))
            .await
            .expect("scheduled");

        let due = store
            .take_due_retries("sub", 10, 60_000, 3_600_000)
            .await
            .expect("taken");
        let ages: Vec<i64> = due.taken.iter().map(|r| r.age_from).collect();
        assert_eq!(ages, [now - 60_000]);
    }
}
