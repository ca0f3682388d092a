//! API keys, each stored by the SHA-256 of its secret, and the subscriptions' signing secrets.

use async_trait::async_trait;
use busway_core::auth::{ApiKey, KeyStore};
use busway_core::ports::{EventStore, StoreError};
use busway_core::webhook::{SigningSecret, SigningSecrets};
use busway_core::{Application, EventTypeName};
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, docs, from_json, is_unique_violation, sql, to_json};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteStore {
    /// The writers of an event type besides its application; none for an unknown one.
    pub async fn writers(&self, name: &EventTypeName) -> Result<Vec<Application>, StoreError> {
        Ok(self
            .get_event_type(name)
            .await?
            .map(|e| e.writers)
            .unwrap_or_default())
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn put_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        let (id, hash, doc) = (key.id.clone(), hash.to_string(), to_json(key)?);
        self.run(move |conn| {
            match conn.execute(
                "INSERT INTO api_keys (id, hash, doc) VALUES (?1, ?2, ?3)",
                params![id, hash, doc],
            ) {
                Err(e) if is_unique_violation(&e) => {
                    Err(StoreError::AlreadyExists(format!("key {id}")))
                }
                done => done.map(drop).map_err(sql),
            }
        })
        .await
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash = hash.to_string();
        self.run(move |conn| {
            conn.query_row(
                "SELECT doc FROM api_keys WHERE hash = ?1",
                params![hash],
                |r| from_json(&r.get::<_, String>(0)?),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_string();
        self.run(move |conn| {
            conn.query_row("SELECT doc FROM api_keys WHERE id = ?1", params![id], |r| {
                from_json(&r.get::<_, String>(0)?)
            })
            .optional()
            .map_err(sql)
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.run(|conn| docs(conn, "SELECT doc FROM api_keys ORDER BY rowid", []))
            .await
    }

    async fn update_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let (id, doc) = (key.id.clone(), to_json(key)?);
        self.run(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE api_keys SET doc = ?2 WHERE id = ?1",
                    params![id, doc],
                )
                .map_err(sql)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("key {id}")));
            }
            Ok(())
        })
        .await
    }
}

/// A subscription's signing secrets as stored; none when it has none.
fn stored_secrets(conn: &Connection, id: &str) -> Result<Vec<SigningSecret>, StoreError> {
    conn.query_row(
        "SELECT doc FROM signing_secrets WHERE subscription_id = ?1",
        params![id],
        |r| from_json(&r.get::<_, String>(0)?),
    )
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(sql)
}

#[async_trait]
impl SigningSecrets for SqliteStore {
    async fn signing_secrets(
        &self,
        subscription_id: &str,
    ) -> Result<Vec<SigningSecret>, StoreError> {
        if let Some(known) = lock(&self.signing).get(subscription_id) {
            return Ok(known.clone());
        }
        let (id, signing) = (subscription_id.to_string(), self.signing.clone());
        self.run(move |conn| {
            let secrets = stored_secrets(conn, &id)?;
            lock(&signing).insert(id, secrets.clone());
            Ok(secrets)
        })
        .await
    }

    async fn put_signing_secrets(
        &self,
        subscription_id: &str,
        read: &[SigningSecret],
        secrets: &[SigningSecret],
    ) -> Result<(), StoreError> {
        let (id, doc) = (subscription_id.to_string(), to_json(&secrets)?);
        let (read, secrets, signing) = (read.to_vec(), secrets.to_vec(), self.signing.clone());
        self.run(move |conn| {
            // One connection serves the store, so nothing writes between this read and the write.
            let stored = stored_secrets(conn, &id)?;
            if stored != read {
                return Err(StoreError::Conflict(format!(
                    "the signing secrets of subscription {id} changed since they were read"
                )));
            }
            conn.execute(
                "INSERT INTO signing_secrets (subscription_id, doc) VALUES (?1, ?2)
                 ON CONFLICT (subscription_id) DO UPDATE SET doc = excluded.doc",
                params![id, doc],
            )
            .map_err(sql)?;
            lock(&signing).insert(id, secrets);
            Ok(())
        })
        .await
    }
}
