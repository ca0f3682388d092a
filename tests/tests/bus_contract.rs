//! The bus port's contract, the same assertions on the embedded event log and on the EventBridge
//! adapter over moto server: a put of 25 events (more than one PutEvents batch) answers one
//! success per event, and exactly those events arrive, in EventBridge's event shape with the
//! Source, DetailType and Detail that were put. Large events: one of 600 KB arrives whole, one
//! above the 1 MB entry limit arrives claim-checked, its data (format 2) in the schema backup
//! bucket of the host's object store, and restores to the event that was put.
//!
//! Deduplication: an event whose `event_id` (and detail type) repeats one the bus accepted within
//! its window, at least `MIN_DEDUP_WINDOW` (5 minutes), is answered `Accepted::Duplicate` and is
//! not put again, whether it comes in the same call or a later one. On AWS that is the bus the
//! injectors put on (`Host::deduplicated_bus`: a DynamoDB claim of the `event_id`, then PutEvents).

#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::sync::Arc;

use busway_core::claim_check::{self, ClaimChecks, DEFAULT_MAX_ENTRY_BYTES, FORMAT_METADATA_KEY};
use busway_core::envelope::BusEvent;
use busway_core::ports::{Accepted, Bucket, Bus, ObjectStore};
use busway_local::eventlog::{EventLog, LogReader};
use busway_local::objects::FolderObjectStore;
use busway_local::provisioning::LocalStarter;
use busway_tests::bus_event;
use serde_json::{Value, json};
use support::emulated::Account;

const EVENTS: usize = 25;

fn events() -> Vec<BusEvent> {
    (0..EVENTS)
        .map(|i| {
            bus_event(
                "parcel_tracking",
                1,
                json!({
                    "metadata": {"event_attributes": {"source": "scanner", "target": format!("u{i}")}},
                    "data": {"dest_postal_code": "1234AB", "dest_house": i, "parcel_weight": 1.5}
                }),
            )
        })
        .collect()
}

/// Puts the events; every one is answered with a success, in order.
async fn put(bus: &dyn Bus) -> Vec<BusEvent> {
    let events = events();
    let results = bus
        .put_events(events.clone())
        .await
        .expect("the bus answers");
    assert_eq!(results.len(), EVENTS);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result, &Ok(Accepted::Stored), "event {i}");
    }
    events
}

/// Exactly the events put arrived, each as EventBridge delivers it.
fn arrived(put: &[BusEvent], delivered: &[Value]) {
    assert_eq!(delivered.len(), put.len(), "{delivered:?}");
    let by_event_id: HashMap<&str, &Value> = delivered
        .iter()
        .map(|d| {
            let id = d["detail"]["metadata"]["event_id"]
                .as_str()
                .expect("an event id");
            (id, d)
        })
        .collect();
    for e in put {
        let d = by_event_id
            .get(e.event_id.as_str())
            .unwrap_or_else(|| panic!("event {} did not arrive", e.event_id));
        assert_eq!(d["version"], "0");
        assert_eq!(d["source"], e.source.as_str());
        assert_eq!(d["detail-type"], e.detail_type.as_str());
        assert_eq!(d["detail"], e.detail);
        assert!(d["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}

/// A 600 KB event, carried whole, and one of 1.5 MB, above the entry limit.
fn large_events() -> Vec<BusEvent> {
    [600_000, 1_500_000]
        .into_iter()
        .map(|size| {
            bus_event(
                "parcel_tracking",
                1,
                json!({
                    "metadata": {"event_attributes": {"source": "scanner", "target": "u2"}},
                    "data": {"blob": "x".repeat(size)}
                }),
            )
        })
        .collect()
}

/// The 600 KB event arrived as it was put; the other as a claim check in `bucket` of `objects`,
/// whose object is its data and restores it whole.
async fn large_arrived(
    put: &[BusEvent],
    delivered: &[Value],
    objects: &dyn ObjectStore,
    bucket: &str,
) {
    assert_eq!(delivered.len(), 2, "both large events arrive");
    let by_event_id: HashMap<&str, &Value> = delivered
        .iter()
        .map(|d| {
            (
                d["detail"]["metadata"]["event_id"]
                    .as_str()
                    .expect("an event id"),
                d,
            )
        })
        .collect();
    let whole = by_event_id[put[0].event_id.as_str()];
    assert_eq!(whole["detail"], put[0].detail);
    assert_eq!(claim_check::link(whole), None);

    let linked = by_event_id[put[1].event_id.as_str()];
    assert_eq!(linked["detail"]["metadata"]["claim_check"], true);
    let link = claim_check::link(linked).expect("a claim-check link");
    assert_eq!(link.bucket, bucket);
    assert!(claim_check::is_key(&link.key), "{}", link.key);
    let data = objects
        .get_object(Bucket::SchemaBackup, &link.key)
        .await
        .expect("the object store answers")
        .expect("the data is stored");
    assert_eq!(data, put[1].detail["data"].to_string().into_bytes());
    let metadata = objects
        .object_metadata(Bucket::SchemaBackup, &link.key)
        .await
        .expect("the object store answers")
        .expect("the object has metadata");
    let format = metadata.get(FORMAT_METADATA_KEY).map(String::as_str);
    assert_eq!(format, Some(claim_check::FORMAT_VERSION));
    let restored =
        claim_check::restore((*linked).clone(), format, &data).expect("the event restores");
    assert_eq!(restored["detail"], put[1].detail);
}

/// A producer's event with its own `event_id`; each call makes a new bus id, as a retry does.
fn retried(event_id: &str) -> BusEvent {
    bus_event(
        "parcel_tracking",
        1,
        json!({
            "metadata": {"event_id": event_id, "event_attributes": {"source": "scanner", "target": "u1"}},
            "data": {"dest_postal_code": "1234AB", "dest_house": 1, "parcel_weight": 1.5}
        }),
    )
}

/// Puts an event, its repeat in the same call and another event, then the repeat again in a later
/// call: the repeats are answered as duplicates. Returns the events that must be on the bus.
async fn put_with_repeats(bus: &dyn Bus) -> Vec<BusEvent> {
    let id = format!("order-{}", uuid::Uuid::new_v4());
    let (first, other) = (retried(&id), retried(&format!("{id}-other")));
    let results = bus
        .put_events(vec![first.clone(), retried(&id), other.clone()])
        .await
        .expect("the bus answers");
    assert_eq!(
        results,
        vec![
            Ok(Accepted::Stored),
            Ok(Accepted::Duplicate),
            Ok(Accepted::Stored)
        ]
    );
    let again = bus
        .put_events(vec![retried(&id)])
        .await
        .expect("the bus answers");
    assert_eq!(again, vec![Ok(Accepted::Duplicate)]);
    vec![first, other]
}

/// A log on a folder object store, as `busway up` opens it.
fn event_log(dir: &std::path::Path) -> (EventLog, LogReader, Arc<FolderObjectStore>) {
    let (starter, _) = LocalStarter::new();
    let objects = Arc::new(
        FolderObjectStore::new(dir.join("buckets"), Arc::new(starter)).expect("the folders"),
    );
    let claim_checks = ClaimChecks {
        objects: objects.clone(),
        bucket_name: "local-event-schemas-backup-bucket".into(),
        max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
    };
    let (live, _committed) = tokio::sync::mpsc::channel(busway_local::eventlog::ROUTER_QUEUE);
    let (bus, reader) =
        EventLog::open(&dir.join("events.db"), claim_checks, live).expect("the log opens");
    (bus, reader, objects)
}

fn logged(reader: &LogReader) -> Vec<Value> {
    reader
        .after(0, None, 1000)
        .expect("the log reads")
        .iter()
        .map(|l| serde_json::from_str(&l.json).expect("a JSON event"))
        .collect()
}

#[tokio::test]
async fn the_event_log_keeps_the_bus_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (bus, reader, _) = event_log(dir.path());
    let put = put(&bus).await;
    arrived(&put, &logged(&reader));
}

#[tokio::test]
async fn the_event_log_carries_large_events_as_the_contract_says() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (bus, reader, objects) = event_log(dir.path());
    let put = large_events();
    let results = bus.put_events(put.clone()).await.expect("the bus answers");
    assert_eq!(results, vec![Ok(Accepted::Stored); 2]);
    large_arrived(
        &put,
        &logged(&reader),
        objects.as_ref(),
        "local-event-schemas-backup-bucket",
    )
    .await;
}

#[tokio::test]
async fn the_event_log_puts_a_repeated_event_id_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (bus, reader, _) = event_log(dir.path());
    let put = put_with_repeats(&bus).await;
    arrived(&put, &logged(&reader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injectors_eventbridge_bus_puts_a_repeated_event_id_once() {
    let account = Account::new().await;
    let queue = account
        .rule_to_queue(
            "deduplicated-events",
            r#"{"source":[{"prefix":"busway."}]}"#,
        )
        .await;
    let env = account.lambda_env();
    let host = busway_aws::host::Host::for_lambda_from(|name| {
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
    .expect("the injector's environment");
    let bus = host.deduplicated_bus().expect("the injector's bus");
    let put = put_with_repeats(bus.as_ref()).await;
    arrived(&put, &account.drain(&queue, 10).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eventbridge_bus_keeps_the_bus_contract() {
    let account = Account::new().await;
    let queue = account
        .rule_to_queue("every-busway-event", r#"{"source":[{"prefix":"busway."}]}"#)
        .await;
    let put = put(&account.bus()).await;
    arrived(&put, &account.drain(&queue, 10).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eventbridge_bus_carries_large_events_as_the_contract_says() {
    let account = Account::new().await;
    let queue = account
        .rule_to_queue(
            "large-busway-events",
            r#"{"source":[{"prefix":"busway."}]}"#,
        )
        .await;
    let put = large_events();
    let results = account
        .bus()
        .put_events(put.clone())
        .await
        .expect("the bus answers");
    assert_eq!(results, vec![Ok(Accepted::Stored); 2]);
    large_arrived(
        &put,
        &account.drain(&queue, 10).await,
        &account.objects(),
        &account.buckets.schema_backup,
    )
    .await;
}
