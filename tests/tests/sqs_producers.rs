//! The injector's SQS-producer handler against the local event store: each message is validated
//! against its queue's event version, the valid ones go on the bus, and the answer names exactly
//! the messages SQS must deliver again.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use busway_core::envelope::BusEvent;
use busway_core::ingest::LiveRoutes;
use busway_core::ports::{Accepted, Bus, EntryFailure};
use busway_injector::sqs::{Message, handle_batch};
use busway_local::store::SqliteStore;
use busway_tests::{Broker, seed_event, v1_envelope};
use serde_json::{Value, json};

const QUEUE: &str = "arn:aws:sqs:eu-west-1:123456789012:busway-scanned-parcel-v1";

/// A bus that keeps what it was given and refuses events addressed to target unit `refused`, or
/// the whole call when `down`.
#[derive(Default)]
struct RecordingBus {
    events: Mutex<Vec<BusEvent>>,
    down: bool,
}

#[async_trait]
impl Bus for RecordingBus {
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        anyhow::ensure!(!self.down, "ThrottlingException: rate exceeded");
        let results = events
            .iter()
            .map(|e| {
                if e.detail["metadata"]["event_attributes"]["target"] == "refused" {
                    Err(EntryFailure {
                        code: "InternalFailure".into(),
                        message: "try again".into(),
                    })
                } else {
                    Ok(Accepted::Stored)
                }
            })
            .collect();
        self.events.lock().expect("the lock").extend(events);
        Ok(results)
    }
}

fn message(id: &str, queue: &str, body: &Value) -> Message {
    Message {
        message_id: id.into(),
        source_arn: queue.into(),
        body: body.to_string(),
    }
}

/// The local host's store, where the portal registered the seed's event type.
async fn registered() -> (Broker, SqliteStore) {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let store =
        SqliteStore::open(&busway.data_dir().join("busway.db")).expect("the store opens twice");
    (busway, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_messages_that_did_not_reach_the_bus_are_named() {
    let (busway, store) = registered().await;
    let bus = Arc::new(RecordingBus::default());
    let mut spoofed = v1_envelope("u3");
    spoofed["metadata"]["application"] = json!("someone_else");
    let batch = vec![
        message("ok-1", QUEUE, &v1_envelope("u2")),
        message("bad-schema", QUEUE, &json!({"metadata": {}, "data": {}})),
        message("ok-2", QUEUE, &spoofed),
        Message {
            message_id: "bad-json".into(),
            source_arn: QUEUE.into(),
            body: "{not json".into(),
        },
        message(
            "unknown-queue",
            "arn:aws:sqs:eu-west-1:123456789012:orders",
            &v1_envelope("u2"),
        ),
        message(
            "deleted-version",
            "arn:aws:sqs:eu-west-1:123456789012:busway-scanned-parcel-v7",
            &v1_envelope("u2"),
        ),
        message("refused", QUEUE, &v1_envelope("refused")),
    ];

    let routes = Arc::new(LiveRoutes::default());
    let broker = busway_injector::Broker {
        routes: routes.clone(),
        store: Some(Arc::new(store)),
        bus: bus.clone(),
    };
    let failed = handle_batch(&broker, batch).await;

    assert_eq!(
        failed,
        [
            "bad-schema",
            "bad-json",
            "unknown-queue",
            "deleted-version",
            "refused"
        ]
    );
    let events = bus.events.lock().expect("the lock").clone();
    let targets: Vec<_> = events
        .iter()
        .map(|e| e.detail["metadata"]["event_attributes"]["target"].clone())
        .collect();
    assert_eq!(targets, ["u2", "u3", "refused"]);
    let application = seed_event()["application"].clone();
    for e in &events {
        assert_eq!(
            e.source,
            format!("busway.{}", application.as_str().expect("a name"))
        );
        assert_eq!(e.detail_type, "scanned_parcel.1");
        assert_eq!(e.detail["metadata"]["application"], application);
    }
    assert!(
        routes
            .get(
                &"scanned_parcel".parse().expect("a name"),
                busway_core::Version::FIRST
            )
            .is_some(),
        "the route learned from the store is kept for the next batch"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_refuses_the_call_fails_every_valid_message() {
    let (busway, store) = registered().await;
    let bus = RecordingBus {
        down: true,
        ..RecordingBus::default()
    };
    let batch = vec![
        message("a", QUEUE, &v1_envelope("u2")),
        message("b", QUEUE, &json!({"metadata": {}})),
        message("c", QUEUE, &v1_envelope("u4")),
    ];
    let broker = busway_injector::Broker {
        routes: Arc::new(LiveRoutes::default()),
        store: Some(Arc::new(store)),
        bus: Arc::new(bus),
    };
    let failed = handle_batch(&broker, batch).await;
    assert_eq!(failed, ["b", "a", "c"]);
    busway.stop().await;
}
