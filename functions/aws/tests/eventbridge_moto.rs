//! The EventBridge bus adapter over the real wire: moto server (started here) with a custom bus,
//! a consumer rule with the consumer rule pattern (README: Contracts) and an SQS target. The queue must receive exactly
//! the matching events, as busway puts them.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use busway_aws::eventbridge::EventBridgeBus;
use busway_core::claim_check::{ClaimChecks, DEFAULT_MAX_ENTRY_BYTES};
use busway_core::envelope::BusEvent;
use busway_core::ports::{Bucket, Bus, ObjectStore};
use busway_core::subscription::{ConsumerConnection, RetryPolicy, Subscription, SubscriptionState};
use busway_core::{Application, Version};
use busway_tests::bus_event;
use busway_tests::memory::MemoryObjects;
use busway_tests::moto::{self, Moto};
use serde_json::{Value, json};

const BUS: &str = "test.custom.events.bus";

fn event(application: &str, version: u32, target: &str, id: &str, data: Value) -> BusEvent {
    bus_event(
        application,
        version,
        json!({"metadata": {"event_attributes": {"source": "scanner", "target": target}, "event_id": id},
               "data": data}),
    )
}

#[tokio::test]
async fn the_consumer_rule_delivers_exactly_the_matching_events_to_its_queue() {
    let moto = Moto::start().await;
    let sdk = moto::sdk(&moto.endpoint).await;
    let (eb, sqs) = (
        aws_sdk_eventbridge::Client::new(&sdk),
        aws_sdk_sqs::Client::new(&sdk),
    );
    eb.create_event_bus().name(BUS).send().await.expect("bus");
    let queue_url = sqs
        .create_queue()
        .queue_name("u2-scanned-parcel-v1")
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn");

    let application: Application = "parcels".parse().expect("application");
    let subscription = Subscription {
        id: "sub-1".into(),
        event_type: "scanned_parcel".parse().expect("event type"),
        version: Version::FIRST,
        target_unit: "u2".parse().expect("target unit"),
        connection_type: ConsumerConnection::Sqs,
        connection_string: queue_arn.clone(),
        retry_policy: RetryPolicy::default(),
        delivery: Default::default(),
        state: SubscriptionState::Active,
        created_at: busway_core::now(),
        team: None,
        replay_from: None,
    };
    let pattern = busway_core::deploy::event_pattern(&application, &subscription);
    eb.put_rule()
        .name("busway-sub-1")
        .event_bus_name(BUS)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("rule");
    eb.put_targets()
        .rule("busway-sub-1")
        .event_bus_name(BUS)
        .targets(
            Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("target");

    let objects = Arc::new(MemoryObjects::default());
    let bus = EventBridgeBus::new(
        &eb,
        BUS,
        ClaimChecks {
            objects: objects.clone(),
            bucket_name: "test-event-schemas-backup-bucket".into(),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        },
    );
    let matching = event("parcels", 1, "u2", "match-1", json!({"parcel": "p-1"}));
    let large = event(
        "parcels",
        1,
        "u2",
        "match-large",
        json!({"blob": "x".repeat(DEFAULT_MAX_ENTRY_BYTES)}),
    );
    let sent = vec![
        matching.clone(),
        event("parcels", 1, "u3", "other-unit", json!({})),
        event("parcels", 2, "u2", "other-version", json!({})),
        event("couriers", 1, "u2", "other-application", json!({})),
        large.clone(),
    ];
    let results = bus.put_events(sent).await.expect("put");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // moto delivers synchronously within PutEvents; one more empty poll shows nothing else came.
    let mut received: HashMap<String, Value> = HashMap::new();
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let body: Value =
                serde_json::from_str(message.body().expect("a body")).expect("body is JSON");
            let id = body["detail"]["metadata"]["event_id"]
                .as_str()
                .expect("an event id")
                .to_string();
            received.insert(id, body);
        }
    }
    let mut ids: Vec<&str> = received.keys().map(String::as_str).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["match-1", "match-large"]);

    let delivered = &received["match-1"];
    assert_eq!(delivered["source"], "busway.parcels");
    assert_eq!(delivered["detail-type"], "scanned_parcel.1");
    assert_eq!(delivered["detail"], matching.detail);

    let linked = &received["match-large"];
    let key = linked["detail"]["data"]["claim_check"]["key"]
        .as_str()
        .expect("a claim-check key");
    let stored = objects
        .get_object(Bucket::SchemaBackup, key)
        .await
        .expect("get")
        .expect("the large event's data is stored");
    assert_eq!(
        serde_json::from_slice::<Value>(&stored).expect("JSON"),
        large.detail["data"]
    );
}
