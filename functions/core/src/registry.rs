//! Disaster recovery of the schema registry (the seed's reason for the schema backup bucket):
//! every version the event store knows is put into the registry again from its backup,
//! `{event_type}/{version}/schema.json`. The event store is walked rather than the bucket, so
//! the object store needs no list operation and a missing backup is noticed.

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::ports::{Bucket, EventStore, ObjectStore, SchemaRegistry, schema_backup_key};
use crate::{EventTypeName, Version};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaRef {
    pub event_type: EventTypeName,
    pub version: Version,
}

/// A version left out of the registry, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    #[serde(flatten)]
    pub schema: SchemaRef,
    pub reason: String,
}

/// What a restore did, version by version, in the event store's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Put into the registry from the backup.
    pub restored: Vec<SchemaRef>,
    /// Already in the registry with the backup's content; nothing was written.
    pub unchanged: Vec<SchemaRef>,
    /// No backup object for a version the event store has.
    pub missing_backups: Vec<SchemaRef>,
    /// The backup is not the schema the event store (and so the broker) validates with, or is
    /// not JSON: restoring it would make the registry disagree with the broker.
    pub mismatches: Vec<Skipped>,
    /// The registry refused the put.
    pub failed: Vec<Skipped>,
}

impl Report {
    /// Every version the event store has is in the registry.
    pub fn is_complete(&self) -> bool {
        self.missing_backups.is_empty() && self.mismatches.is_empty() && self.failed.is_empty()
    }
}

/// Restores every version of every event type, deleted versions included (the registry keeps
/// them, and on AWS a version can only follow the one before it). Idempotent: a version whose
/// registry content equals its backup is not written. `Err` only when the event store, the
/// object store or a registry read fails; per-version problems are in the report.
pub async fn restore(
    objects: &dyn ObjectStore,
    store: &dyn EventStore,
    registry: &dyn SchemaRegistry,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let event_types = store
        .list_event_types()
        .await
        .context("listing event types")?;
    for event_type in event_types {
        let name = &event_type.event_type;
        let versions = store
            .list_versions(name)
            .await
            .with_context(|| format!("listing the versions of {name}"))?;
        for version in versions {
            let at = SchemaRef {
                event_type: name.clone(),
                version: version.version,
            };
            let key = schema_backup_key(name, version.version);
            let Some(body) = objects
                .get_object(Bucket::SchemaBackup, &key)
                .await
                .with_context(|| format!("reading backup {key}"))?
            else {
                report.missing_backups.push(at);
                continue;
            };
            let backup = match serde_json::from_slice::<Value>(&body) {
                Ok(backup) if backup == version.schema => backup,
                Ok(_) => {
                    report.mismatches.push(Skipped {
                        schema: at,
                        reason: format!("{key} differs from the event store's schema"),
                    });
                    continue;
                }
                Err(e) => {
                    report.mismatches.push(Skipped {
                        schema: at,
                        reason: format!("{key} is not JSON: {e}"),
                    });
                    continue;
                }
            };
            let current = registry
                .get_schema(name, version.version)
                .await
                .with_context(|| {
                    format!("reading {name} version {} from the registry", at.version)
                })?;
            if current.as_ref() == Some(&backup) {
                report.unchanged.push(at);
                continue;
            }
            match registry.put_schema(name, version.version, &backup).await {
                Ok(()) => report.restored.push(at),
                Err(e) => report.failed.push(Skipped {
                    schema: at,
                    reason: format!("{e:#}"),
                }),
            }
        }
    }
    Ok(report)
}
