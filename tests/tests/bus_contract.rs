//! The bus port's contract, the same assertions on the embedded event log and on the EventBridge
//! adapter over moto server: a put of 25 events (more than one PutEvents batch) answers one
//! success per event, and exactly those events arrive, in EventBridge's event shape with the
//! Source, DetailType and Detail that were put.

#[allow(dead_code)]
mod support;

use std::collections::HashMap;

use busway_core::envelope::BusEvent;
use busway_core::ports::Bus;
use busway_local::eventlog::EventLog;
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
        assert_eq!(result, &Ok(()), "event {i}");
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

#[tokio::test]
async fn the_event_log_keeps_the_bus_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (live, _committed) = tokio::sync::mpsc::channel(busway_local::eventlog::ROUTER_QUEUE);
    let (bus, reader) = EventLog::open(&dir.path().join("events.db"), live).expect("the log opens");
    let put = put(&bus).await;
    let delivered: Vec<Value> = reader
        .after(0, None, 1000)
        .expect("the log reads")
        .iter()
        .map(|l| serde_json::from_str(&l.json).expect("a JSON event"))
        .collect();
    arrived(&put, &delivered);
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
