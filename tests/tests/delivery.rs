//! Routing: which subscriptions receive a published event, and what they receive.

use std::time::Duration;

use busway_tests::consumer::{Consumer, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope, v2_data_schema, v2_envelope};
use serde_json::{Value, json};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a target that must receive nothing more is watched.
const QUIET: Duration = Duration::from_millis(300);

async fn publish(busway: &Broker, version: &str, envelope: &Value) -> String {
    busway
        .publish("scanned_parcel", version, envelope)
        .await
        .expect(200)["event_id"]
        .as_str()
        .expect("an event_id")
        .to_string()
}

fn top_level_keys(raw: &[u8]) -> Vec<String> {
    // The keys in the order they are written: serde_json's map sorts them, so scan the text.
    let text = std::str::from_utf8(raw).expect("a UTF-8 body");
    let mut keys = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut start) = (0, false, false, 0);
    let mut expect_key = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    in_string = false;
                    if expect_key {
                        keys.push(text[start..i].to_string());
                        expect_key = false;
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                start = i + 1;
            }
            '{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            '}' | ']' => depth -= 1,
            '[' => depth += 1,
            ',' => expect_key = depth == 1,
            _ => {}
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_receives_the_eventbridge_event_json_in_the_order_aws_writes_it() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = Consumer::start().await;
    let subscription = busway
        .subscribe_deployed(&http_subscription(1, "u2", &consumer.url("/hook")))
        .await;

    let event_id = publish(&busway, "1", &v1_envelope("u2")).await;
    let delivered = consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    let request = &delivered[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hook");
    assert_eq!(
        top_level_keys(&request.body),
        [
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail"
        ],
        "{}",
        String::from_utf8_lossy(&request.body)
    );
    let event = request.json();
    assert_eq!(event["version"], "0");
    assert_eq!(event["detail-type"], "scanned_parcel.1");
    assert_eq!(event["source"], "busway.demo");
    assert_eq!(event["account"], "000000000000");
    assert_eq!(event["region"], "local");
    assert_eq!(event["resources"], json!([]));
    let id = event["id"].as_str().expect("an id");
    assert_eq!(id.len(), 36, "the id is a UUID: {id}");
    assert_ne!(
        id, event_id,
        "the EventBridge id is the bus's, not the producer's"
    );
    let time = event["time"].as_str().expect("a time");
    assert!(
        time.len() == 20 && time.ends_with('Z') && !time.contains('.'),
        "EventBridge times have whole seconds: {time}"
    );
    let logged = busway.logged_events();
    assert_eq!(logged.len(), 1);
    assert_eq!(
        event["detail"], logged[0].detail,
        "detail is the enriched envelope"
    );
    assert_eq!(event["detail"]["metadata"]["event_id"], event_id.as_str());
    assert_eq!(event["detail"]["data"], v1_envelope("u2")["data"]);

    let id = subscription["id"].as_str().expect("a subscription id");
    // The worker counts a delivery a moment after the target answered.
    let started = std::time::Instant::now();
    let delivery = loop {
        let delivery = busway
            .get(&format!("/subscriptions/{id}"))
            .await
            .expect(200)["delivery"]
            .clone();
        if delivery["delivered"] != 0 || started.elapsed() > DELIVERY_TIMEOUT {
            break delivery;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivery["delivered"], 1, "{delivery}");
    assert_eq!(delivery["retries"], 0, "{delivery}");
    assert_eq!(delivery["dead_lettered"], 0, "{delivery}");
    assert_eq!(delivery["last_error"], Value::Null, "{delivery}");
    assert!(delivery["last_delivered_at"].is_string(), "{delivery}");
    consumer.assert_no_more_than(1, QUIET).await;
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_fans_out_to_every_subscription_of_its_target_unit() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumers = [
        Consumer::start().await,
        Consumer::start().await,
        Consumer::start().await,
    ];
    for consumer in &consumers {
        busway
            .subscribe_deployed(&http_subscription(1, "u2", &consumer.url("/events")))
            .await;
    }

    let event_id = publish(&busway, "1", &v1_envelope("u2")).await;
    let mut bodies = Vec::new();
    for consumer in &consumers {
        let delivered = consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
        assert_eq!(delivered[0].event_id(), event_id);
        bodies.push(delivered[0].body.clone());
    }
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "every subscription receives the same bytes: {bodies:?}"
    );
    for consumer in &consumers {
        consumer.assert_no_more_than(1, QUIET).await;
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_receives_only_the_events_addressed_to_its_target_unit() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let u2 = Consumer::start().await;
    let u3 = Consumer::start().await;
    busway
        .subscribe_deployed(&http_subscription(1, "u2", &u2.url("/u2")))
        .await;
    busway
        .subscribe_deployed(&http_subscription(1, "u3", &u3.url("/u3")))
        .await;

    let for_u2 = publish(&busway, "1", &v1_envelope("u2")).await;
    let for_u3 = publish(&busway, "1", &v1_envelope("u3")).await;
    let for_u4 = publish(&busway, "1", &v1_envelope("u4")).await;
    let second_for_u2 = publish(&busway, "1", &v1_envelope("u2")).await;

    u2.wait_for_deliveries(2, DELIVERY_TIMEOUT).await;
    u3.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    u2.assert_no_more_than(2, QUIET).await;
    u3.assert_no_more_than(1, Duration::ZERO).await;
    assert_eq!(u2.delivered_ids(), [for_u2, second_for_u2]);
    assert_eq!(u3.delivered_ids(), [for_u3]);
    assert_eq!(
        busway.logged_events().len(),
        4,
        "{for_u4} is on the bus all the same"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_and_version_2_subscribers_each_receive_only_their_version() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
        .add_deployed_version("scanned_parcel", &json!({"data": v2_data_schema()}))
        .await;
    let v1 = Consumer::start().await;
    let v2 = Consumer::start().await;
    busway
        .subscribe_deployed(&http_subscription(1, "u2", &v1.url("/v1")))
        .await;
    busway
        .subscribe_deployed(&http_subscription(2, "u2", &v2.url("/v2")))
        .await;

    let first_v1 = publish(&busway, "1", &v1_envelope("u2")).await;
    let first_v2 = publish(&busway, "2", &v2_envelope("u2")).await;
    let second_v2 = publish(&busway, "2", &v2_envelope("u2")).await;

    v1.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    v2.wait_for_deliveries(2, DELIVERY_TIMEOUT).await;
    v1.assert_no_more_than(1, QUIET).await;
    v2.assert_no_more_than(2, Duration::ZERO).await;
    assert_eq!(v1.delivered_ids(), [first_v1]);
    assert_eq!(v2.delivered_ids(), [first_v2, second_v2]);
    for request in v1.delivered() {
        assert_eq!(request.json()["detail-type"], "scanned_parcel.1");
        assert_eq!(request.json()["detail"]["metadata"]["version"], 1);
    }
    for request in v2.delivered() {
        assert_eq!(request.json()["detail-type"], "scanned_parcel.2");
        assert_eq!(request.json()["detail"]["data"], v2_envelope("u2")["data"]);
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_target_receives_nothing_published_after_its_removal() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = Consumer::start().await;
    let subscription = busway
        .subscribe_deployed(&http_subscription(1, "u2", &consumer.url("/hook")))
        .await;
    let before = publish(&busway, "1", &v1_envelope("u2")).await;
    consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;

    let id = subscription["id"].as_str().expect("a subscription id");
    let removal = busway
        .delete(&format!("/subscriptions/{id}"))
        .await
        .expect(202)
        .clone();
    busway
        .deployed(removal["deployment_id"].as_str().expect("a deployment id"))
        .await;
    publish(&busway, "1", &v1_envelope("u2")).await;
    consumer.assert_no_more_than(1, QUIET).await;
    assert_eq!(consumer.delivered_ids(), [before]);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_id_is_answered_as_a_duplicate_and_delivered_once() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = Consumer::start().await;
    busway
        .subscribe_deployed(&http_subscription(1, "u2", &consumer.url("/events")))
        .await;

    let mut envelope = v1_envelope("u2");
    envelope["metadata"]["event_id"] = json!("order-17-scanned");
    let first = busway.publish("scanned_parcel", "1", &envelope).await;
    assert_eq!(
        first.expect(200),
        &json!({"event_id": "order-17-scanned", "duplicate": false})
    );
    // The producer retries (it never saw the answer), with a body that differs elsewhere.
    envelope["data"]["parcel_weight"] = json!(9.5);
    for _ in 0..2 {
        let again = busway.publish("scanned_parcel", "1", &envelope).await;
        assert_eq!(
            again.expect(200),
            &json!({"event_id": "order-17-scanned", "duplicate": true})
        );
    }
    let delivered = consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    assert_eq!(delivered[0].json()["detail"]["data"]["parcel_weight"], 1.25);
    consumer.assert_no_more_than(1, QUIET).await;
    busway.stop().await;
}
