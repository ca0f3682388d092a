//! What the store forgets: dead letters and embedded-queue messages expire as SQS messages do
//! (a dead-letter queue's and a queue's `MessageRetentionPeriod`), and the lowest cursor of the
//! deployed rules says which events of the log no subscription still needs. The oldest event the
//! store keeps a copy of says which claim-check objects it may still link to.

use busway_core::ports::StoreError;
use rusqlite::params;

use super::{SqliteStore, sql, unix_ms};

/// Dead letters that failed before `?1`. Compared as times, not as text: RFC 3339 text drops
/// trailing zeros of the fraction, so `…:00Z` sorts after `…:00.9Z` (`'.' < 'Z'`), and a text
/// comparison deleted letters up to a second early.
const EXPIRE_DEAD_LETTERS: &str =
    "DELETE FROM dead_letters WHERE julianday(failed_at) < julianday(?1)";

/// As times, not as text (see `EXPIRE_DEAD_LETTERS`); rows whose text is not JSON hold no link.
const OLDEST_KEPT_EVENT: &str = "SELECT min(day) FROM (
    SELECT min(julianday(json_extract(event, '$.time'))) AS day FROM retries WHERE json_valid(event)
    UNION ALL
    SELECT min(julianday(json_extract(event, '$.time'))) FROM dead_letters WHERE json_valid(event)
    UNION ALL
    SELECT min(julianday(json_extract(body, '$.time'))) FROM queue_messages WHERE json_valid(body))";

impl SqliteStore {
    /// The lowest cursor of the deployed rules: every event after it may still be needed.
    /// `None` when no rule is deployed.
    pub async fn lowest_cursor(&self) -> Result<Option<i64>, StoreError> {
        self.run(|conn| {
            conn.query_row(
                "SELECT min(cursor) FROM delivery_progress
                 WHERE subscription_id IN (SELECT subscription_id FROM rules)",
                [],
                |r| r.get(0),
            )
            .map_err(sql)
        })
        .await
    }

    /// The `time` (unix ms) of the oldest event a scheduled retry, a dead letter or a queued
    /// message holds: each may carry a claim-check link to an object written at that time or
    /// later. `None` when the store holds none. One statement, so an event that moves from one
    /// table to another meanwhile is counted in either.
    pub async fn oldest_kept_event_ms(&self) -> Result<Option<i64>, StoreError> {
        self.run(|conn| {
            conn.query_row(OLDEST_KEPT_EVENT, [], |r| r.get::<_, Option<f64>>(0))
                .map_err(sql)
        })
        .await
        // Julian days to unix milliseconds, rounded down: the object is at least as old.
        .map(|day| day.map(|day| ((day - 2_440_587.5) * 86_400_000.0).floor() as i64))
    }

    /// Deletes dead letters older than `dead_letters_ms` and queued messages older than
    /// `messages_ms`; returns how many of each.
    pub async fn expire(
        &self,
        dead_letters_ms: i64,
        messages_ms: i64,
    ) -> Result<(usize, usize), StoreError> {
        let letters_before = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(unix_ms().saturating_sub(dead_letters_ms)) * 1_000_000,
        )
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
        self.transaction(move |tx| {
            let letters = tx
                .execute(EXPIRE_DEAD_LETTERS, params![letters_before])
                .map_err(sql)?;
            let messages = tx
                .execute(
                    "DELETE FROM queue_messages WHERE sent_at < ?1",
                    params![unix_ms().saturating_sub(messages_ms)],
                )
                .map_err(sql)?;
            Ok((letters, messages))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{EXPIRE_DEAD_LETTERS, SqliteStore};

    #[tokio::test]
    async fn the_oldest_kept_event_is_the_oldest_of_retries_dead_letters_and_queued_messages() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = SqliteStore::open(&dir.path().join("busway.db")).expect("the store opens");
        assert_eq!(store.oldest_kept_event_ms().await.expect("reads"), None);
        let event = |time: &str| serde_json::json!({"id": "e", "time": time}).to_string();
        {
            let conn = store.conn.lock().expect("the connection");
            conn.execute(
                "INSERT INTO retries (subscription_id, seq, event, attempts, due_at, age_from, last_error)
                 VALUES ('s', 1, ?1, 1, 0, 0, '')",
                [event("2026-03-01T00:00:00.5Z")],
            )
            .expect("a retry");
            conn.execute(
                "INSERT INTO dead_letters (subscription_id, seq, event, error, attempts, failed_at)
                 VALUES ('s', 2, ?1, '', 1, '2026-03-20T00:00:00Z')",
                [event("2026-02-01T00:00:00Z")],
            )
            .expect("a dead letter");
            conn.execute(
                "INSERT INTO queue_messages (queue, message_id, body, sent_at)
                 VALUES ('q', 'm1', ?1, 0), ('q', 'm2', 'not json', 0)",
                [event("2026-03-10T00:00:00Z")],
            )
            .expect("queued messages");
        }
        // 2026-02-01T00:00:00Z
        assert_eq!(
            store.oldest_kept_event_ms().await.expect("reads"),
            Some(1_769_904_000_000)
        );
    }

    #[test]
    fn a_dead_letter_expires_by_its_time_not_by_its_text() -> rusqlite::Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE dead_letters (failed_at TEXT NOT NULL)")?;
        for at in [
            "2026-12-01T11:59:59.999Z",
            "2026-12-01T12:00:00.9Z",
            "2026-12-01T12:00:00.15Z",
        ] {
            conn.execute("INSERT INTO dead_letters VALUES (?1)", [at])?;
        }
        // A cutoff on a whole second (the `time` crate writes it without a fraction) and one
        // on a tenth: only the letter older than each goes.
        assert_eq!(
            conn.execute(EXPIRE_DEAD_LETTERS, ["2026-12-01T12:00:00Z"])?,
            1
        );
        assert_eq!(
            conn.execute(EXPIRE_DEAD_LETTERS, ["2026-12-01T12:00:00.1Z"])?,
            0
        );
        let left: Vec<String> = conn
            .prepare("SELECT failed_at FROM dead_letters ORDER BY failed_at")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        assert_eq!(left, ["2026-12-01T12:00:00.15Z", "2026-12-01T12:00:00.9Z"]);
        Ok(())
    }
}
