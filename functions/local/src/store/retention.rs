//! What the store forgets: dead letters and embedded-queue messages expire as SQS messages do
//! (a dead-letter queue's and a queue's `MessageRetentionPeriod`), and the lowest cursor of the
//! deployed rules says which events of the log no subscription still needs.

use busway_core::ports::StoreError;
use rusqlite::params;

use super::{SqliteStore, sql, unix_ms};

/// Dead letters that failed before `?1`. Compared as times, not as text: RFC 3339 text drops
/// trailing zeros of the fraction, so `…:00Z` sorts after `…:00.9Z` (`'.' < 'Z'`), and a text
/// comparison deleted letters up to a second early.
const EXPIRE_DEAD_LETTERS: &str =
    "DELETE FROM dead_letters WHERE julianday(failed_at) < julianday(?1)";

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

    use super::EXPIRE_DEAD_LETTERS;

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
