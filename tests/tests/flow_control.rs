//! Flow control per subscription: bounded requests in flight, a rate limit, and a back-off that
//! follows the target when it struggles, so a slow consumer still gets every event.

use std::time::{Duration, Instant};

use busway_tests::consumer::{Consumer, Failure, Request, http_subscription};
use busway_tests::{Broker, join_all, seed_event, v1_envelope};
use serde_json::{Value, json};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

async fn broker() -> Broker {
    let busway = Broker::start_with(|config| {
        config.delivery.retry_base = Duration::from_millis(20);
        config.delivery.retry_cap = Duration::from_millis(500);
        config.delivery.timeout = Duration::from_millis(500);
    })
    .await;
    busway.create_deployed_event(&seed_event()).await;
    busway
}

async fn subscribe(busway: &Broker, url: &str, delivery: Option<Value>) -> String {
    let mut body = http_subscription(1, "u2", url);
    if let Some(delivery) = delivery {
        body["delivery"] = delivery;
    }
    busway.subscribe_deployed(&body).await["id"]
        .as_str()
        .expect("a subscription id")
        .to_string()
}

/// Publishes `n` events from 8 producers at once; returns their ids.
async fn publish_burst(busway: &Broker, n: usize) -> Vec<String> {
    let envelope = v1_envelope("u2");
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let answers = join_all(
            chunk
                .iter()
                .map(|_| busway.publish("scanned_parcel", "1", &envelope))
                .collect(),
        )
        .await;
        ids.extend(answers.iter().map(|a| {
            a.expect(200)["event_id"]
                .as_str()
                .expect("an id")
                .to_string()
        }));
    }
    ids
}

async fn delivery(busway: &Broker, id: &str) -> Value {
    busway
        .get(&format!("/subscriptions/{id}"))
        .await
        .expect(200)["delivery"]
        .clone()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_serving_one_request_at_a_time_gets_every_event_without_dead_letters() {
    let busway = broker().await;
    // 40 ms a request: 64 requests at once would wait 2.5 s, far past the 500 ms timeout.
    let consumer = Consumer::serial(Duration::from_millis(40)).await;
    let id = subscribe(&busway, &consumer.url("/hook"), None).await;

    let started = Instant::now();
    let published = publish_burst(&busway, 100).await;
    consumer.wait_for_deliveries(100, DELIVERY_TIMEOUT).await;
    let took = started.elapsed();
    let mut delivered = consumer.delivered_ids();
    delivered.dedup();
    assert_eq!(sorted(delivered), sorted(published));
    let stats = delivery(&busway, &id).await;
    assert_eq!(stats["dead_lettered"], 0, "{stats}");
    let timeouts = consumer.requests().len() - 100;
    assert!(
        timeouts <= 4,
        "{timeouts} requests more than events: {stats}"
    );
    // Its own pace is 25 a second: 100 events take 4 s; close to it, not ten times that.
    assert!(took < Duration::from_secs(8), "100 events took {took:?}");
    assert!(
        consumer.max_concurrency() <= 4,
        "the default sends at most 4 at once, it saw {}",
        consumer.max_concurrency()
    );
    busway.stop().await;
}

/// A consumer serving one request at a time in 30% of the attempt timeout: the default 4 in
/// flight would have the fourth answered after 120% of it. After the first timeout the window
/// settles where every answer comes in time, instead of growing back on the slow answers and
/// timing out (and sending the same events again) over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_slower_than_a_quarter_of_the_timeout_is_not_timed_out_again_and_again() {
    let busway = broker().await;
    let consumer = Consumer::serial(Duration::from_millis(150)).await;
    let id = subscribe(&busway, &consumer.url("/hook"), None).await;
    let published = sorted(publish_burst(&busway, 40).await);
    let requests = consumer
        .wait_until("every event delivered", DELIVERY_TIMEOUT, |requests| {
            let mut ids: Vec<String> = requests
                .iter()
                .filter(|r| r.succeeded)
                .map(Request::event_id)
                .collect();
            ids.sort();
            ids.dedup();
            ids == published
        })
        .await;
    let stats = delivery(&busway, &id).await;
    assert_eq!(stats["dead_lettered"], 0, "{stats}");
    let again = requests.len() - 40;
    assert!(again <= 4, "{again} requests more than events: {stats}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_the_requests_a_target_sees_at_once() {
    let busway = broker().await;
    let consumer = Consumer::serial(Duration::from_millis(5)).await;
    subscribe(
        &busway,
        &consumer.url("/hook"),
        Some(json!({"max_in_flight": 1})),
    )
    .await;
    publish_burst(&busway, 40).await;
    consumer.wait_for_deliveries(40, DELIVERY_TIMEOUT).await;
    assert_eq!(consumer.max_concurrency(), 1);

    let wide = Consumer::serial(Duration::from_millis(20)).await;
    subscribe(
        &busway,
        &wide.url("/wide"),
        Some(json!({"max_in_flight": 16})),
    )
    .await;
    publish_burst(&busway, 40).await;
    wide.wait_for_deliveries(40, DELIVERY_TIMEOUT).await;
    assert!(
        (5..=16).contains(&wide.max_concurrency()),
        "{}",
        wide.max_concurrency()
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invocation_rate_limit_spaces_deliveries() {
    let busway = broker().await;
    let consumer = Consumer::start().await;
    let id = subscribe(
        &busway,
        &consumer.url("/hook"),
        Some(json!({"max_in_flight": 10, "invocation_rate_limit_per_second": 20})),
    )
    .await;
    let settings = delivery(&busway, &id).await;
    assert_eq!(settings["max_in_flight"], 10, "{settings}");
    assert_eq!(
        settings["invocation_rate_limit_per_second"], 20,
        "{settings}"
    );
    let started = Instant::now();
    publish_burst(&busway, 21).await;
    consumer.wait_for_deliveries(21, DELIVERY_TIMEOUT).await;
    // 21 starts at 20 a second: the last one at least a second after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_target_is_left_alone_for_its_retry_after_then_gets_everything() {
    let busway = broker().await;
    let consumer = Consumer::start().await;
    consumer.fail(Failure::Throttle(1), 1);
    let id = subscribe(
        &busway,
        &consumer.url("/hook"),
        Some(json!({"max_in_flight": 1})),
    )
    .await;
    let started = Instant::now();
    let published = publish_burst(&busway, 5).await;
    consumer.wait_for_deliveries(5, DELIVERY_TIMEOUT).await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "the target asked for a second's rest: {:?}",
        started.elapsed()
    );
    assert_eq!(sorted(consumer.delivered_ids()), sorted(published));
    let all = consumer.requests();
    assert_eq!(all[0].answered, Some(429));
    assert_eq!(all.len(), 6, "one throttled request, then each event once");
    let stats = delivery(&busway, &id).await;
    assert!(
        stats["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("429")),
        "{stats}"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_settings_out_of_range_are_refused_by_name() {
    let busway = broker().await;
    let mut body = http_subscription(1, "u2", "http://127.0.0.1:9/hook");
    body["delivery"] =
        json!({"max_in_flight": 0, "invocation_rate_limit_per_second": 1000, "burst": 1});
    let reply = busway.post("/subscriptions", &body).await;
    let fields = reply.expect_error(400, "validation_failed");
    assert!(fields.iter().any(|f| f == "delivery/burst"), "{fields:?}");
    // Every bad field is named, with its range.
    assert_eq!(
        reply.detail("delivery/max_in_flight").as_deref(),
        Some("must be from 1 to 100"),
        "{fields:?}"
    );
    assert_eq!(
        reply
            .detail("delivery/invocation_rate_limit_per_second")
            .as_deref(),
        Some("must be from 1 to 300"),
        "{fields:?}"
    );

    body["delivery"] = json!({"max_in_flight": 1});
    body["retry_policy"] = json!({"maximum_retry_attempts": 200, "maximum_event_age_seconds": 10});
    let reply = busway.post("/subscriptions", &body).await;
    let mut fields = reply.expect_error(400, "validation_failed");
    fields.sort();
    assert_eq!(
        fields,
        [
            "retry_policy/maximum_event_age_seconds",
            "retry_policy/maximum_retry_attempts"
        ]
    );
    busway.stop().await;
}
