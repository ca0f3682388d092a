//! Bounded disk: the log is pruned past its retention, but never of an event that a
//! subscription's cursor has not passed or that waits for a retry; dead letters expire.

use std::time::{Duration, Instant};

use busway_tests::consumer::{Consumer, Failure, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Everything older than the current second is past retention, and pruning runs constantly.
async fn pruning_broker() -> Broker {
    let busway = Broker::start_with(|config| {
        config.retention.events = Duration::ZERO;
        config.retention.dead_letters = Duration::from_secs(1);
        config.retention.every = Duration::from_millis(50);
        config.delivery.retry_base = Duration::from_millis(20);
        config.delivery.retry_cap = Duration::from_millis(200);
        config.delivery.timeout = Duration::from_millis(500);
    })
    .await;
    busway.create_deployed_event(&seed_event()).await;
    busway
}

async fn subscribe(busway: &Broker, body: Value) -> String {
    busway.subscribe_deployed(&body).await["id"]
        .as_str()
        .expect("a subscription id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_never_drops_an_event_a_cursor_or_a_retry_still_needs() {
    let busway = pruning_broker().await;
    let fast = Consumer::start().await;
    subscribe(&busway, http_subscription(1, "u2", &fast.url("/fast"))).await;
    // One request at a time, 100 ms each: its cursor trails the log by seconds.
    let slow = Consumer::serial(Duration::from_millis(100)).await;
    slow.poison("poisoned");
    let mut body = http_subscription(1, "u2", &slow.url("/slow"));
    body["delivery"] = json!({"max_in_flight": 1});
    subscribe(&busway, body).await;

    let mut poisoned = v1_envelope("u2");
    poisoned["metadata"]["event_id"] = json!("poisoned");
    busway
        .publish("scanned_parcel", "1", &poisoned)
        .await
        .expect(200);
    let mut published = vec!["poisoned".to_string()];
    for _ in 0..30 {
        let answer = busway
            .publish("scanned_parcel", "1", &v1_envelope("u2"))
            .await;
        published.push(
            answer.expect(200)["event_id"]
                .as_str()
                .expect("an id")
                .to_string(),
        );
    }
    fast.wait_for_deliveries(31, TIMEOUT).await;

    // While the slow subscription is still working through them, the log shrinks behind it.
    let started = Instant::now();
    let mut pruned_while_needed = false;
    loop {
        let in_log = busway.logged_events().len();
        let delivered = slow.delivered().len();
        if in_log < published.len() && delivered < 30 {
            pruned_while_needed = true;
        }
        if delivered >= 30 {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the slow subscription got {delivered} of 30"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        pruned_while_needed,
        "the log was never pruned during the run"
    );
    // The poisoned event is no longer in the log: only its retry holds it.
    let started = Instant::now();
    while !busway.logged_events().is_empty() {
        assert!(
            started.elapsed() < TIMEOUT,
            "the log is never pruned to empty"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slow.cure("poisoned");
    slow.wait_until("the poisoned event from its retry", TIMEOUT, |r| {
        r.iter().any(|r| r.succeeded && r.event_id() == "poisoned")
    })
    .await;
    let mut delivered = slow.delivered_ids();
    delivered.sort();
    delivered.dedup();
    published.sort();
    assert_eq!(
        delivered, published,
        "every event reached the slow subscription"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_expire_after_their_retention() {
    let busway = pruning_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(400));
    let id = subscribe(&busway, http_subscription(1, "u2", &consumer.url("/hook"))).await;
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    let path = format!("/subscriptions/{id}/dead-letters");
    let letters = |reply: &busway_tests::Reply| {
        reply.expect(200)["dead_letters"]
            .as_array()
            .expect("an array")
            .len()
    };
    let started = Instant::now();
    while letters(&busway.get(&path).await) == 0 {
        assert!(started.elapsed() < TIMEOUT, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lettered = Instant::now();
    while letters(&busway.get(&path).await) == 1 {
        assert!(started.elapsed() < TIMEOUT, "the dead letter never expires");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        lettered.elapsed() >= Duration::from_millis(500),
        "expired before its retention: {:?}",
        lettered.elapsed()
    );
    busway.stop().await;
}
