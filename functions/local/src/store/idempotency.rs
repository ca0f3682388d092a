//! The answers kept for the portal's `Idempotency-Key`s (table `idempotency_keys`).

use async_trait::async_trait;
use busway_core::idempotency::{Answer, IdempotencyStore, Record};
use busway_core::ports::StoreError;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, sql};

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim(&self, claim: &Record, now: i64) -> Result<Option<Record>, StoreError> {
        let claim = claim.clone();
        self.transaction(move |tx| {
            tx.execute(
                "DELETE FROM idempotency_keys WHERE expires_at < ?1",
                params![now],
            )
            .map_err(sql)?;
            let found = tx
                .query_row(
                    "SELECT fingerprint, token, status, body, expires_at FROM idempotency_keys
                     WHERE key = ?1",
                    params![claim.key],
                    |r| {
                        let status: Option<u16> = r.get(2)?;
                        let body: Option<String> = r.get(3)?;
                        Ok(Record {
                            key: claim.key.clone(),
                            fingerprint: r.get(0)?,
                            token: r.get(1)?,
                            answer: status
                                .zip(body)
                                .map(|(status, body)| Answer { status, body }),
                            expires_at: r.get(4)?,
                        })
                    },
                )
                .optional()
                .map_err(sql)?;
            if found.is_none() {
                tx.execute(
                    "INSERT INTO idempotency_keys (key, fingerprint, token, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![claim.key, claim.fingerprint, claim.token, claim.expires_at],
                )
                .map_err(sql)?;
            }
            Ok(found)
        })
        .await
    }

    async fn complete(&self, done: &Record) -> Result<(), StoreError> {
        let done = done.clone();
        let Some(answer) = done.answer.clone() else {
            return Err(StoreError::Unexpected(anyhow::anyhow!(
                "an idempotency record completed without an answer"
            )));
        };
        self.run(move |conn| {
            conn.execute(
                "UPDATE idempotency_keys SET status = ?1, body = ?2, expires_at = ?3
                 WHERE key = ?4 AND token = ?5",
                params![
                    answer.status,
                    answer.body,
                    done.expires_at,
                    done.key,
                    done.token
                ],
            )
            .map(drop)
            .map_err(sql)
        })
        .await
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let (key, token) = (key.to_string(), token.to_string());
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM idempotency_keys WHERE key = ?1 AND token = ?2",
                params![key, token],
            )
            .map(drop)
            .map_err(sql)
        })
        .await
    }
}
