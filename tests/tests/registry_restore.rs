//! `busway registry restore`'s logic on the embedded adapters: event types made through the
//! portal, the registry table wiped, the registry rebuilt from the schema backup bucket.

use std::path::Path;
use std::sync::Arc;

use busway_core::registry::{Report, restore};
use busway_local::objects::FolderObjectStore;
use busway_local::provisioning::LocalStarter;
use busway_local::store::SqliteStore;
use busway_tests::{Broker, seed_event, v2_data_schema};
use serde_json::{Value, json};

const BACKUPS: &str = "event-schemas-backup-bucket";

/// The registry table: (event type, version, schema) in order.
fn registry_rows(data_dir: &Path) -> Vec<(String, u32, Value)> {
    let conn = rusqlite::Connection::open(data_dir.join("busway.db")).expect("busway.db opens");
    let mut query = conn
        .prepare("SELECT event_type, version, schema FROM registry ORDER BY event_type, version")
        .expect("the registry table");
    query
        .query_map([], |row| {
            let schema: String = row.get(2)?;
            Ok((
                row.get(0)?,
                row.get(1)?,
                serde_json::from_str(&schema).unwrap_or(Value::Null),
            ))
        })
        .expect("reading the registry")
        .collect::<Result<_, _>>()
        .expect("registry rows")
}

fn wipe_registry(data_dir: &Path) {
    rusqlite::Connection::open(data_dir.join("busway.db"))
        .expect("busway.db opens")
        .execute("DELETE FROM registry", [])
        .expect("the registry is wiped");
}

/// Runs the restore on the data dir's own adapters, as `busway registry restore` does.
async fn restore_in(data_dir: &Path) -> Report {
    let store = SqliteStore::open(&data_dir.join("busway.db")).expect("the store opens");
    let (starter, _) = LocalStarter::new();
    let objects = FolderObjectStore::new(data_dir.join("buckets"), Arc::new(starter))
        .expect("the buckets open");
    restore(&objects, &store, &store)
        .await
        .expect("restore runs")
}

fn names(refs: &[busway_core::registry::SchemaRef]) -> Vec<String> {
    refs.iter()
        .map(|r| format!("{}/{}", r.event_type, r.version))
        .collect()
}

/// scanned_parcel versions 1 and 2, and delivered_parcel version 1.
async fn broker_with_three_versions() -> Broker {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
        .add_deployed_version(
            "scanned_parcel",
            &json!({"data": v2_data_schema(), "description": "Parcel scanned by id"}),
        )
        .await;
    let mut delivered = seed_event();
    delivered["event_type"] = json!("delivered_parcel");
    busway.create_deployed_event(&delivered).await;
    busway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_registry_is_rebuilt_from_the_backups_and_a_second_restore_writes_nothing() {
    let busway = broker_with_three_versions().await;
    let dir = busway.data_dir();
    let before = registry_rows(dir);
    assert_eq!(before.len(), 3);

    wipe_registry(dir);
    assert!(registry_rows(dir).is_empty());
    let report = restore_in(dir).await;
    assert!(report.is_complete(), "{report:?}");
    let mut restored = names(&report.restored);
    restored.sort();
    assert_eq!(
        restored,
        vec!["delivered_parcel/1", "scanned_parcel/1", "scanned_parcel/2"]
    );
    assert_eq!(registry_rows(dir), before);

    let again = restore_in(dir).await;
    assert!(again.restored.is_empty(), "{again:?}");
    assert_eq!(names(&again.unchanged).len(), 3);
    assert_eq!(registry_rows(dir), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_altered_backups_are_reported_and_not_restored() {
    let busway = broker_with_three_versions().await;
    let dir = busway.data_dir();
    let before = registry_rows(dir);
    std::fs::remove_file(busway.object_path(BACKUPS, "delivered_parcel/1/schema.json"))
        .expect("the backup is removed");
    std::fs::write(
        busway.object_path(BACKUPS, "scanned_parcel/2/schema.json"),
        br#"{"type": "object"}"#,
    )
    .expect("the backup is altered");

    wipe_registry(dir);
    let report = restore_in(dir).await;
    assert!(!report.is_complete());
    assert_eq!(names(&report.restored), vec!["scanned_parcel/1"]);
    assert_eq!(names(&report.missing_backups), vec!["delivered_parcel/1"]);
    assert_eq!(report.mismatches.len(), 1);
    assert_eq!(
        report.mismatches[0].schema.event_type.as_str(),
        "scanned_parcel"
    );
    assert_eq!(report.mismatches[0].schema.version.get(), 2);
    let rows = registry_rows(dir);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0],
        before
            .iter()
            .find(|r| r.0 == "scanned_parcel" && r.1 == 1)
            .cloned()
            .expect("v1 was registered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_entry_that_drifted_from_its_backup_is_put_back() {
    let busway = broker_with_three_versions().await;
    let dir = busway.data_dir();
    let before = registry_rows(dir);
    rusqlite::Connection::open(dir.join("busway.db"))
        .expect("busway.db opens")
        .execute(
            "UPDATE registry SET schema = '{}' WHERE event_type = 'scanned_parcel' AND version = 1",
            [],
        )
        .expect("the registry entry is changed");

    let report = restore_in(dir).await;
    assert_eq!(names(&report.restored), vec!["scanned_parcel/1"]);
    assert_eq!(report.unchanged.len(), 2);
    assert_eq!(registry_rows(dir), before);
}
