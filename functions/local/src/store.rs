//! The embedded store: event types, versions, subscriptions, deployments, the schema registry and
//! the local broker's live routes, in one SQLite file. Records are JSON documents with the
//! columns the queries need beside them; every multi-record write is one transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use busway_core::deployment::Deployment;
use busway_core::event::{EventType, EventVersion, VersionState};
use busway_core::page::{Page, PageRequest};
use busway_core::ports::{
    DeadLetter, DeliveryStats, DeploymentStore, EventStore, SchemaRegistry, StoreError,
};
use busway_core::subscription::{Subscription, SubscriptionFilter, SubscriptionState};
use busway_core::webhook::SigningSecret;
use busway_core::{EventTypeName, Version};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::migrations::STORE;

mod audit;
mod control;
mod idempotency;
mod keys;
mod retention;
mod retries;
pub use retries::{DueRetries, Failed, Failure, ScheduledRetry};

/// The SQLite store. Cheap to clone; calls run on the blocking pool.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The subscriptions' signing secrets as stored, read on every signed delivery: filled and
    /// replaced only with the connection held, so it never keeps a replaced value.
    signing: Arc<Mutex<HashMap<String, Vec<SigningSecret>>>>,
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unexpected(e.into()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The JSON documents a query selects (its one column), in its order.
fn docs<T: DeserializeOwned>(
    conn: &Connection,
    query: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(query).map_err(sql)?;
    let rows = stmt
        .query_map(params, |r| from_json(&r.get::<_, String>(0)?))
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Unexpected(anyhow::Error::new(e).context("sqlite"))
}

fn state_str<T: Serialize>(state: &T) -> Result<String, StoreError> {
    Ok(to_json(state)?.trim_matches('"').to_string())
}

impl SqliteStore {
    /// Opens the store at `path`, migrated to this release's version; refuses a file of a newer
    /// busway before writing to it (`migrations::NewerFile`).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        // Before the connection: the check must not run while one is open.
        STORE.check(path)?;
        let mut conn =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // As the event log's: no statement is prepared again because its bindings changed.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        STORE.apply(&mut conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            signing: Arc::default(),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Unexpected(anyhow::anyhow!("store lock poisoned")))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unexpected(e.into()))?
    }

    /// Runs `f` in a transaction that commits only when `f` succeeds.
    async fn transaction<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn.transaction().map_err(sql)?;
            let value = f(&tx)?;
            tx.commit().map_err(sql)?;
            Ok(value)
        })
        .await
    }

    /// Live producer routes: (application, event type, version, schema).
    pub async fn routes(&self) -> Result<Vec<(String, String, u32, Value)>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare("SELECT application, event_type, version, schema FROM routes")
                .map_err(sql)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        from_json(&r.get::<_, String>(3)?)?,
                    ))
                })
                .map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)
        })
        .await
    }

    pub async fn put_route(
        &self,
        application: &str,
        event_type: &str,
        version: u32,
        schema: &Value,
    ) -> Result<(), StoreError> {
        let (app, et, schema) = (
            application.to_string(),
            event_type.to_string(),
            to_json(schema)?,
        );
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO routes (application, event_type, version, schema) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (event_type, version) DO UPDATE SET application = excluded.application, schema = excluded.schema",
                params![app, et, version, schema],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    pub async fn delete_route(&self, event_type: &str, version: u32) -> Result<(), StoreError> {
        let et = event_type.to_string();
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM routes WHERE event_type = ?1 AND version = ?2",
                params![et, version],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    /// Deployed consumer rules, keyed by subscription id, as their consumer deploy.json.
    pub async fn rules(&self) -> Result<Vec<(String, Value)>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare("SELECT subscription_id, doc FROM rules ORDER BY subscription_id")
                .map_err(sql)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, from_json(&r.get::<_, String>(1)?)?)))
                .map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)
        })
        .await
    }

    pub async fn put_rule(&self, subscription_id: &str, doc: &Value) -> Result<(), StoreError> {
        let (id, doc) = (subscription_id.to_string(), to_json(doc)?);
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO rules (subscription_id, doc) VALUES (?1, ?2) ON CONFLICT (subscription_id) DO UPDATE SET doc = excluded.doc",
                params![id, doc],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    pub async fn delete_rule(&self, subscription_id: &str) -> Result<(), StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            conn.execute("DELETE FROM rules WHERE subscription_id = ?1", params![id])
                .map_err(sql)?;
            // A deleted rule's pause goes with it, as a deleted subscriber's state.
            conn.execute(
                "DELETE FROM paused_subscriptions WHERE subscription_id = ?1",
                params![id],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    /// The content of the object at bucket/key that provisioning last ran on.
    pub async fn processed_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.run(move |conn| {
            conn.query_row(
                "SELECT content FROM processed_objects WHERE bucket = ?1 AND key = ?2",
                params![bucket, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }

    pub async fn mark_processed(
        &self,
        bucket: &str,
        key: &str,
        content: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO processed_objects (bucket, key, content) VALUES (?1, ?2, ?3)
                 ON CONFLICT (bucket, key) DO UPDATE SET content = excluded.content",
                params![bucket, key, content],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }
}

/// A message received from an embedded queue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueMessage {
    pub message_id: String,
    /// Present when the message stays in the queue until deleted with it.
    pub receipt_handle: Option<String>,
    /// The text as delivered, so its field order is the one EventBridge writes.
    pub body: Box<serde_json::value::RawValue>,
    pub receive_count: u32,
}

fn unix_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// A subscription's cursor in the event log and its counters.
    pub async fn progress(
        &self,
        subscription_id: &str,
    ) -> Result<Option<(i64, DeliveryStats)>, StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            conn.query_row(
                "SELECT cursor, stats FROM delivery_progress WHERE subscription_id = ?1",
                params![id],
                |r| Ok((r.get(0)?, from_json(&r.get::<_, String>(1)?)?)),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }

    pub async fn save_progress(
        &self,
        rows: &[(String, i64, DeliveryStats)],
    ) -> Result<(), StoreError> {
        let rows: Vec<(String, i64, String)> = rows
            .iter()
            .map(|(id, cursor, stats)| Ok((id.clone(), *cursor, to_json(stats)?)))
            .collect::<Result<_, StoreError>>()?;
        self.transaction(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO delivery_progress (subscription_id, cursor, stats) VALUES (?1, ?2, ?3)
                     ON CONFLICT (subscription_id) DO UPDATE SET cursor = excluded.cursor, stats = excluded.stats",
                )
                .map_err(sql)?;
            for (id, cursor, stats) in &rows {
                stmt.execute(params![id, cursor, stats]).map_err(sql)?;
            }
            Ok(())
        })
        .await
    }

    /// A page of a subscription's dead letters, oldest first.
    pub async fn dead_letters(
        &self,
        subscription_id: &str,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        let (id, limit) = (subscription_id.to_string(), page.limit);
        let after = row_position(page.after.as_deref())?;
        self.run(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, event, error, attempts, failed_at FROM dead_letters
                     WHERE subscription_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![id, after, page_limit(limit)], |r| {
                    let letter = DeadLetter {
                        id: r.get(0)?,
                        event: from_json(&r.get::<_, String>(1)?)?,
                        error: r.get(2)?,
                        attempts: r.get(3)?,
                        failed_at: r.get(4)?,
                    };
                    Ok((letter.id.to_string(), letter))
                })
                .map_err(sql)?;
            Ok(into_page(
                rows.collect::<Result<_, _>>().map_err(sql)?,
                limit,
            ))
        })
        .await
    }

    /// Appends messages to an embedded queue, all or none.
    pub async fn send_messages(&self, queue: &str, bodies: Vec<String>) -> Result<(), StoreError> {
        let queue = queue.to_string();
        self.transaction(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO queue_messages (queue, message_id, body, sent_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql)?;
            let sent_at = unix_ms();
            for body in &bodies {
                stmt.execute(params![queue, uuid::Uuid::new_v4().to_string(), body, sent_at])
                    .map_err(sql)?;
            }
            Ok(())
        })
        .await
    }

    /// Receives up to `max` visible messages, oldest first. With `delete`, they leave the queue
    /// now; otherwise they are hidden for `visibility` and come back unless deleted by receipt.
    pub async fn receive_messages(
        &self,
        queue: &str,
        max: usize,
        delete: bool,
        visibility: std::time::Duration,
    ) -> Result<Vec<QueueMessage>, StoreError> {
        let queue = queue.to_string();
        let hidden_until =
            unix_ms() + i64::try_from(visibility.as_millis()).unwrap_or(i64::MAX / 2);
        self.transaction(move |tx| {
            let mut stmt = tx
                .prepare_cached("SELECT id, message_id, body, receive_count FROM queue_messages WHERE queue = ?1 AND visible_at <= ?2 ORDER BY id LIMIT ?3")
                .map_err(sql)?;
            let limit = i64::try_from(max).unwrap_or(i64::MAX);
            let rows: Vec<(i64, String, String, u32)> = stmt
                .query_map(params![queue, unix_ms(), limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?;
            let mut messages = Vec::with_capacity(rows.len());
            for (id, message_id, body, count) in rows {
                let receipt = if delete {
                    tx.execute("DELETE FROM queue_messages WHERE id = ?1", params![id]).map_err(sql)?;
                    None
                } else {
                    let receipt = uuid::Uuid::new_v4().to_string();
                    tx.execute(
                        "UPDATE queue_messages SET receipt = ?2, visible_at = ?3, receive_count = receive_count + 1 WHERE id = ?1",
                        params![id, receipt, hidden_until],
                    )
                    .map_err(sql)?;
                    Some(receipt)
                };
                messages.push(QueueMessage {
                    message_id,
                    receipt_handle: receipt,
                    body: serde_json::value::RawValue::from_string(body)
                        .map_err(|e| StoreError::Unexpected(e.into()))?,
                    receive_count: count + 1,
                });
            }
            Ok(messages)
        })
        .await
    }

    /// Deletes a received message by its receipt handle; `false` when no message has it.
    pub async fn delete_message(&self, queue: &str, receipt: &str) -> Result<bool, StoreError> {
        let (queue, receipt) = (queue.to_string(), receipt.to_string());
        self.run(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2",
                    params![queue, receipt],
                )
                .map_err(sql)?;
            Ok(n == 1)
        })
        .await
    }
}

fn insert_deployment(tx: &Connection, d: &Deployment) -> Result<(), StoreError> {
    let event_type = d.event_type.as_ref().map(|e| e.to_string());
    tx.execute(
        "INSERT INTO deployments (id, event_type, doc) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET event_type = excluded.event_type, doc = excluded.doc",
        params![d.id, event_type, to_json(d)?],
    )
    .map_err(sql)?;
    Ok(())
}

fn insert_version(tx: &Connection, v: &EventVersion) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO event_versions (event_type, version, state, doc) VALUES (?1, ?2, ?3, ?4)",
        params![
            v.event_type.as_str(),
            v.version.get(),
            state_str(&v.state)?,
            to_json(v)?
        ],
    )
    .map_err(sql)?;
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn load_version(
    conn: &Connection,
    name: &str,
    version: u32,
) -> Result<Option<EventVersion>, StoreError> {
    conn.query_row(
        "SELECT doc FROM event_versions WHERE event_type = ?1 AND version = ?2",
        params![name, version],
        |r| from_json(&r.get::<_, String>(0)?),
    )
    .optional()
    .map_err(sql)
}

fn load_subscription(conn: &Connection, id: &str) -> Result<Option<Subscription>, StoreError> {
    conn.query_row(
        "SELECT doc FROM subscriptions WHERE id = ?1",
        params![id],
        |r| from_json(&r.get::<_, String>(0)?),
    )
    .optional()
    .map_err(sql)
}

fn active_subscriptions(
    conn: &Connection,
    name: &str,
    version: u32,
) -> Result<Vec<Subscription>, StoreError> {
    docs(
        conn,
        "SELECT doc FROM subscriptions WHERE event_type = ?1 AND version = ?2 AND state = 'ACTIVE' ORDER BY rowid",
        params![name, version],
    )
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn create_event_type(
        &self,
        event: &EventType,
        first: &EventVersion,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let (event, first, deployment) = (event.clone(), first.clone(), deployment.clone());
        self.transaction(move |tx| {
            let inserted = tx.execute(
                "INSERT INTO event_types (name, latest_version, doc) VALUES (?1, ?2, ?3)",
                params![
                    event.event_type.as_str(),
                    event.latest_version.get(),
                    to_json(&event)?
                ],
            );
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::AlreadyExists(format!(
                        "event type {}",
                        event.event_type
                    )));
                }
                other => other.map_err(sql)?,
            };
            insert_version(tx, &first)?;
            insert_deployment(tx, &deployment)
        })
        .await
    }

    async fn add_version(
        &self,
        version: &EventVersion,
        expected_latest: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let (version, deployment) = (version.clone(), deployment.clone());
        self.transaction(move |tx| {
            let name = version.event_type.as_str();
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM event_types WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            let mut event: EventType =
                from_json(&doc.ok_or_else(|| StoreError::NotFound(format!("event type {name}")))?)
                    .map_err(sql)?;
            if event.latest_version != expected_latest || version.version != expected_latest.next()
            {
                return Err(StoreError::Conflict(format!(
                    "event type {name} changed while version {} was being added; retry",
                    version.version
                )));
            }
            event.latest_version = version.version;
            tx.execute(
                "UPDATE event_types SET latest_version = ?2, doc = ?3 WHERE name = ?1",
                params![name, event.latest_version.get(), to_json(&event)?],
            )
            .map_err(sql)?;
            insert_version(tx, &version)?;
            insert_deployment(tx, &deployment)
        })
        .await
    }

    async fn delete_version(
        &self,
        event_type: &EventTypeName,
        version: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let (name, deployment) = (event_type.to_string(), deployment.clone());
        self.transaction(move |tx| {
            let mut record = load_version(tx, &name, version.get())?
                .filter(EventVersion::is_active)
                .ok_or_else(|| StoreError::NotFound(format!("version {version} of event type {name}")))?;
            let subscribers = active_subscriptions(tx, &name, version.get())?;
            if !subscribers.is_empty() {
                let ids: Vec<&str> = subscribers.iter().map(|s| s.id.as_str()).collect();
                return Err(StoreError::Conflict(format!(
                    "version {version} of event type {name} has {} active subscription(s): {}; delete them first",
                    ids.len(),
                    ids.join(", ")
                )));
            }
            record.state = VersionState::Deleted;
            tx.execute(
                "UPDATE event_versions SET state = ?3, doc = ?4 WHERE event_type = ?1 AND version = ?2",
                params![name, version.get(), state_str(&record.state)?, to_json(&record)?],
            )
            .map_err(sql)?;
            insert_deployment(tx, &deployment)
        })
        .await
    }

    async fn get_event_type(&self, name: &EventTypeName) -> Result<Option<EventType>, StoreError> {
        let name = name.to_string();
        self.run(move |conn| {
            conn.query_row(
                "SELECT doc FROM event_types WHERE name = ?1",
                params![name],
                |r| from_json(&r.get::<_, String>(0)?),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }

    async fn list_event_types(&self) -> Result<Vec<EventType>, StoreError> {
        self.run(|conn| docs(conn, "SELECT doc FROM event_types ORDER BY name", []))
            .await
    }

    async fn page_event_types(&self, page: &PageRequest) -> Result<Page<EventType>, StoreError> {
        // The position is the last name of the page before.
        if page
            .after
            .as_deref()
            .is_some_and(|a| a.parse::<EventTypeName>().is_err())
        {
            return Err(StoreError::BadPosition(
                "not a position of this list".into(),
            ));
        }
        let (after, limit) = (page.after.clone().unwrap_or_default(), page.limit);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare("SELECT name, doc FROM event_types WHERE name > ?1 ORDER BY name LIMIT ?2")
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![after, page_limit(limit)], |r| {
                    Ok((r.get::<_, String>(0)?, from_json(&r.get::<_, String>(1)?)?))
                })
                .map_err(sql)?;
            Ok(into_page(
                rows.collect::<Result<_, _>>().map_err(sql)?,
                limit,
            ))
        })
        .await
    }

    async fn list_versions(&self, name: &EventTypeName) -> Result<Vec<EventVersion>, StoreError> {
        let name = name.to_string();
        self.run(move |conn| {
            docs(
                conn,
                "SELECT doc FROM event_versions WHERE event_type = ?1 ORDER BY version",
                params![name],
            )
        })
        .await
    }

    async fn get_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<Option<EventVersion>, StoreError> {
        let name = name.to_string();
        self.run(move |conn| load_version(conn, &name, version.get()))
            .await
    }

    async fn create_subscription(
        &self,
        s: &Subscription,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let (s, deployment) = (s.clone(), deployment.clone());
        self.transaction(move |tx| {
            let name = s.event_type.as_str();
            load_version(tx, name, s.version.get())?
                .filter(EventVersion::is_active)
                .ok_or_else(|| StoreError::NotFound(format!("version {} of event type {name}", s.version)))?;
            if let Some(existing) = active_subscriptions(tx, name, s.version.get())?.into_iter().find(|e| e.same_target(&s)) {
                return Err(StoreError::AlreadyExists(format!("a subscription to the same target ({}; delete it and subscribe again to change its policy)", existing.id)));
            }
            tx.execute(
                "INSERT INTO subscriptions (id, event_type, version, target_unit, state, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.id, name, s.version.get(), s.target_unit.as_str(), state_str(&s.state)?, to_json(&s)?],
            )
            .map_err(sql)?;
            insert_deployment(tx, &deployment)
        })
        .await
    }

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let id = id.to_string();
        self.run(move |conn| load_subscription(conn, &id)).await
    }

    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
    ) -> Result<Vec<Subscription>, StoreError> {
        let filter = filter.clone();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare("SELECT doc FROM subscriptions WHERE state = 'ACTIVE' ORDER BY rowid")
                .map_err(sql)?;
            let rows = stmt
                .query_map([], |r| from_json::<Subscription>(&r.get::<_, String>(0)?))
                .map_err(sql)?;
            let all: Vec<Subscription> = rows.collect::<Result<_, _>>().map_err(sql)?;
            Ok(all.into_iter().filter(|s| filter.accepts(s)).collect())
        })
        .await
    }

    async fn page_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, StoreError> {
        let (filter, limit) = (filter.clone(), page.limit);
        let after = row_position(page.after.as_deref())?;
        self.run(move |conn| {
            // Filtered here, page by page of the table, so the answer has `limit` items when
            // that many pass.
            let mut stmt = conn
                .prepare("SELECT rowid, doc FROM subscriptions WHERE state = 'ACTIVE' AND rowid > ?1 ORDER BY rowid")
                .map_err(sql)?;
            let mut rows = stmt.query(params![after]).map_err(sql)?;
            let mut found = Vec::new();
            while let Some(row) = rows.next().map_err(sql)? {
                let s: Subscription = from_json(&row.get::<_, String>(1).map_err(sql)?).map_err(sql)?;
                if filter.accepts(&s) {
                    found.push((row.get::<_, i64>(0).map_err(sql)?.to_string(), s));
                    if found.len() > limit {
                        break;
                    }
                }
            }
            Ok(into_page(found, limit))
        })
        .await
    }

    async fn replay_subscription(
        &self,
        id: &str,
        from: busway_core::Timestamp,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let (id, deployment) = (id.to_string(), deployment.clone());
        self.transaction(move |tx| {
            let mut s = load_subscription(tx, &id)?
                .filter(|s| s.state == SubscriptionState::Active)
                .ok_or_else(|| StoreError::NotFound(format!("subscription {id}")))?;
            s.replay_from = Some(from);
            tx.execute(
                "UPDATE subscriptions SET doc = ?2 WHERE id = ?1",
                params![id, to_json(&s)?],
            )
            .map_err(sql)?;
            insert_deployment(tx, &deployment)
        })
        .await
    }

    async fn delete_subscription(
        &self,
        id: &str,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let (id, deployment) = (id.to_string(), deployment.clone());
        self.transaction(move |tx| {
            let mut s = load_subscription(tx, &id)?
                .filter(|s| s.state == SubscriptionState::Active)
                .ok_or_else(|| StoreError::NotFound(format!("subscription {id}")))?;
            s.state = SubscriptionState::Deleted;
            tx.execute(
                "UPDATE subscriptions SET state = ?2, doc = ?3 WHERE id = ?1",
                params![id, state_str(&s.state)?, to_json(&s)?],
            )
            .map_err(sql)?;
            insert_deployment(tx, &deployment)
        })
        .await
    }
}

#[async_trait]
impl DeploymentStore for SqliteStore {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        let deployment = deployment.clone();
        self.run(move |conn| insert_deployment(conn, &deployment))
            .await
    }

    async fn replace_deployment(
        &self,
        deployment: &Deployment,
        read: &Deployment,
    ) -> Result<(), StoreError> {
        let (deployment, read) = (deployment.clone(), read.clone());
        self.run(move |conn| {
            let tx = conn.transaction().map_err(sql)?;
            let stored: Option<Deployment> = tx
                .query_row(
                    "SELECT doc FROM deployments WHERE id = ?1",
                    params![deployment.id],
                    |r| from_json(&r.get::<_, String>(0)?),
                )
                .optional()
                .map_err(sql)?;
            let unchanged = stored.is_some_and(|d| {
                d.status == read.status
                    && d.execution == read.execution
                    && d.history.len() == read.history.len()
            });
            if !unchanged {
                return Err(StoreError::Conflict(format!(
                    "deployment {} changed since it was read",
                    deployment.id
                )));
            }
            insert_deployment(&tx, &deployment)?;
            tx.commit().map_err(sql)
        })
        .await
    }

    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        let id = id.to_string();
        self.run(move |conn| {
            conn.query_row(
                "SELECT doc FROM deployments WHERE id = ?1",
                params![id],
                |r| from_json(&r.get::<_, String>(0)?),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }

    async fn list_deployments(
        &self,
        event_type: Option<&EventTypeName>,
    ) -> Result<Vec<Deployment>, StoreError> {
        let event_type = event_type.map(|e| e.to_string());
        self.run(move |conn| {
            docs(
                conn,
                "SELECT doc FROM deployments WHERE ?1 IS NULL OR event_type = ?1 ORDER BY rowid DESC",
                params![event_type],
            )
        })
        .await
    }

    async fn page_deployments(
        &self,
        event_type: Option<&EventTypeName>,
        page: &PageRequest,
    ) -> Result<Page<Deployment>, StoreError> {
        let (event_type, limit) = (event_type.map(|e| e.to_string()), page.limit);
        let before = row_position(page.after.as_deref())?.max(0);
        self.run(move |conn| {
            rows_page(
                conn,
                "SELECT rowid, doc FROM deployments WHERE (?1 IS NULL OR event_type = ?1)
                 AND (?2 = 0 OR rowid < ?2) ORDER BY rowid DESC LIMIT ?3",
                params![event_type, before, page_limit(limit)],
                limit,
            )
        })
        .await
    }
}

/// One more than a page, to learn whether another follows.
fn page_limit(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// A page of up to `limit` of `found` (read with `page_limit`), each with its position.
/// The page of `(rowid, doc)` rows that `query` selects (one more than `limit`, to learn whether
/// another page follows), each row's position its rowid.
fn rows_page<T: DeserializeOwned>(
    conn: &Connection,
    query: &str,
    params: impl rusqlite::Params,
    limit: usize,
) -> Result<Page<T>, StoreError> {
    let mut stmt = conn.prepare(query).map_err(sql)?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?.to_string(),
                from_json(&r.get::<_, String>(1)?)?,
            ))
        })
        .map_err(sql)?;
    Ok(into_page(
        rows.collect::<Result<_, _>>().map_err(sql)?,
        limit,
    ))
}

fn into_page<T>(mut found: Vec<(String, T)>, limit: usize) -> Page<T> {
    let more = found.len() > limit;
    found.truncate(limit);
    let next = more
        .then(|| found.last().map(|(position, _)| position.clone()))
        .flatten();
    Page {
        items: found.into_iter().map(|(_, item)| item).collect(),
        next,
    }
}

/// A row position given as a page's `next`; 0 for the first page.
fn row_position(after: Option<&str>) -> Result<i64, StoreError> {
    after.map_or(Ok(0), |a| {
        a.parse()
            .map_err(|_| StoreError::BadPosition("not a position of this list".into()))
    })
}

#[async_trait]
impl SchemaRegistry for SqliteStore {
    async fn put_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
        schema: &Value,
    ) -> anyhow::Result<()> {
        let (name, schema) = (event_type.to_string(), serde_json::to_string(schema)?);
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO registry (event_type, version, schema) VALUES (?1, ?2, ?3)
                 ON CONFLICT (event_type, version) DO UPDATE SET schema = excluded.schema",
                params![name, version.get(), schema],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn get_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
    ) -> anyhow::Result<Option<Value>> {
        let name = event_type.to_string();
        Ok(self
            .run(move |conn| {
                conn.query_row(
                    "SELECT schema FROM registry WHERE event_type = ?1 AND version = ?2",
                    params![name, version.get()],
                    |r| from_json(&r.get::<_, String>(0)?),
                )
                .optional()
                .map_err(sql)
            })
            .await?)
    }

    async fn list_schema_versions(
        &self,
        event_type: &EventTypeName,
    ) -> anyhow::Result<Vec<Version>> {
        let name = event_type.to_string();
        let raw: Vec<u32> = self
            .run(move |conn| {
                let mut stmt = conn
                    .prepare("SELECT version FROM registry WHERE event_type = ?1 ORDER BY version")
                    .map_err(sql)?;
                let rows = stmt.query_map(params![name], |r| r.get(0)).map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)
            })
            .await?;
        raw.into_iter()
            .map(|v| Version::new(v).map_err(anyhow::Error::from))
            .collect()
    }
}
