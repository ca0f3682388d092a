//! What the store forgets: dead letters and embedded-queue messages expire as SQS messages do
//! (a dead-letter queue's and a queue's `MessageRetentionPeriod`), and the lowest cursor of the
//! deployed rules says which events of the log no subscription still needs.

use busway_core::ports::StoreError;
use rusqlite::params;

use super::{SqliteStore, sql, unix_ms};

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
                .execute(
                    "DELETE FROM dead_letters WHERE failed_at < ?1",
                    params![letters_before],
                )
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
