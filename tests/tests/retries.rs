//! Delivery guarantees: retries with backoff on 429, 5xx, timeouts and connection errors, the
//! retry budget, the dead-letter store and its redrive.

use std::time::{Duration, Instant};

use busway_tests::consumer::{Consumer, Failure, event_id, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope};
use serde_json::{Value, json};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);

/// Retries a few milliseconds apart, so a budget of several attempts is spent in well under a
/// second.
async fn fast_broker() -> Broker {
    let busway = Broker::start_with(|config| {
        config.delivery.retry_base = Duration::from_millis(5);
        config.delivery.retry_cap = Duration::from_millis(40);
        config.delivery.timeout = Duration::from_millis(300);
    })
    .await;
    busway.create_deployed_event(&seed_event()).await;
    busway
}

async fn subscribe(busway: &Broker, url: &str, retries: Option<u32>) -> String {
    let mut body = http_subscription(1, "u2", url);
    if let Some(attempts) = retries {
        body["retry_policy"] =
            json!({"maximum_retry_attempts": attempts, "maximum_event_age_seconds": 3600});
    }
    busway.subscribe_deployed(&body).await["id"]
        .as_str()
        .expect("a subscription id")
        .to_string()
}

async fn publish(busway: &Broker) -> String {
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200)["event_id"]
        .as_str()
        .expect("an event_id")
        .to_string()
}

async fn delivery(busway: &Broker, id: &str) -> Value {
    busway
        .get(&format!("/subscriptions/{id}"))
        .await
        .expect(200)["delivery"]
        .clone()
}

async fn dead_letters(busway: &Broker, id: &str) -> Vec<Value> {
    busway
        .get(&format!("/subscriptions/{id}/dead-letters"))
        .await
        .expect(200)["dead_letters"]
        .as_array()
        .expect("dead_letters is an array")
        .clone()
}

/// Polls the dead-letter store until it holds `n` letters.
async fn wait_for_dead_letters(busway: &Broker, id: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let letters = dead_letters(busway, id).await;
        if letters.len() >= n {
            return letters;
        }
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "{n} dead letters expected within {DELIVERY_TIMEOUT:?}, found {}: {letters:?}; delivery: {}",
            letters.len(),
            delivery(busway, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /subscriptions/{id}` until its delivery counts satisfy `done`: a worker counts a
/// batch once all of it is settled, a moment after the target answered.
async fn wait_for_delivery(busway: &Broker, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let stats = delivery(busway, id).await;
        if done(&stats) {
            return stats;
        }
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "delivery counts not reached within {DELIVERY_TIMEOUT:?}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_answering_500_for_a_while_gets_every_event_after_it_recovers() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail(Failure::Status(500), 8);
    let id = subscribe(&busway, &consumer.url("/hook"), None).await;

    let mut published = Vec::new();
    for _ in 0..5 {
        published.push(publish(&busway).await);
    }
    consumer.wait_for_deliveries(5, DELIVERY_TIMEOUT).await;
    let failed = consumer
        .requests()
        .iter()
        .filter(|r| r.answered == Some(500))
        .count();
    assert_eq!(failed, 8, "the consumer failed exactly as scripted");
    assert_eq!(
        sorted(consumer.delivered_ids()),
        sorted(published.clone()),
        "every event is delivered once it recovers"
    );

    let stats = wait_for_delivery(&busway, &id, |s| s["delivered"] == 5).await;
    assert_eq!(stats["dead_lettered"], 0, "{stats}");
    assert!(
        stats["retries"].as_u64() >= Some(8),
        "each failure is retried: {stats}"
    );
    let last_error = stats["last_error"]
        .as_str()
        .expect("the last error is kept");
    assert!(last_error.contains("500"), "{last_error}");
    assert!(stats["last_error_at"].is_string(), "{stats}");
    assert_eq!(stats["pending_retries"], 0, "{stats}");
    assert!(dead_letters(&busway, &id).await.is_empty());
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_for_a_retry_are_counted_apart_from_the_lag() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(500));
    let id = subscribe(&busway, &consumer.url("/hook"), Some(185)).await;
    for _ in 0..3 {
        publish(&busway).await;
    }
    // The cursor moves past a failed event, so the lag alone would say all is caught up.
    let stats = wait_for_delivery(&busway, &id, |s| {
        s["pending_retries"] == 3 && s["lag"]["events"] == 0
    })
    .await;
    assert_eq!(stats["delivered"], 0, "{stats}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_timeouts_are_retried_like_server_errors() {
    let busway = fast_broker().await;
    let throttled = Consumer::start().await;
    throttled.fail(Failure::Status(429), 3);
    let slow = Consumer::start().await;
    slow.fail(Failure::Hang, 2);
    let throttled_id = subscribe(&busway, &throttled.url("/throttled"), Some(5)).await;
    let slow_id = subscribe(&busway, &slow.url("/slow"), Some(5)).await;

    let event = publish(&busway).await;
    throttled.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    slow.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    assert_eq!(throttled.delivered_ids(), std::slice::from_ref(&event));
    assert_eq!(slow.delivered_ids(), [event]);
    assert_eq!(
        throttled.requests().len(),
        4,
        "3 throttled attempts, then one delivery"
    );
    assert_eq!(
        slow.requests().len(),
        3,
        "2 timed-out attempts, then one delivery"
    );

    let stats = wait_for_delivery(&busway, &throttled_id, |s| s["delivered"] == 1).await;
    assert_eq!(stats["retries"], 3, "{stats}");
    assert!(
        stats["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("429")),
        "{stats}"
    );
    let stats = wait_for_delivery(&busway, &slow_id, |s| s["delivered"] == 1).await;
    assert_eq!(stats["retries"], 2, "{stats}");
    assert!(
        stats["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{stats}"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_retried_up_to_its_budget_then_dead_lettered() {
    let busway = fast_broker().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    // A consumer's token in the query stays out of the kept error (and the log).
    let url = format!(
        "http://{}/hook?token=s3cret",
        closed.local_addr().expect("an address")
    );
    drop(closed);
    let id = subscribe(&busway, &url, Some(2)).await;

    let event = publish(&busway).await;
    let letters = wait_for_dead_letters(&busway, &id, 1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(event_id(&letter["event"]), event);
    assert_eq!(letter["attempts"], 3, "one attempt and 2 retries: {letter}");
    assert!(
        letter["error"]
            .as_str()
            .is_some_and(|e| e.contains("connection failed") && e.contains("refused")),
        "the cause is said: {letter}"
    );
    assert!(!letter.to_string().contains("s3cret"), "{letter}");
    let stats = wait_for_delivery(&busway, &id, |s| s["dead_lettered"] == 1).await;
    assert_eq!(stats["retries"], 2, "{stats}");
    assert_eq!(stats["delivered"], 0, "{stats}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_dead_lettered_at_once_without_retries() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(400));
    let id = subscribe(&busway, &consumer.url("/hook"), None).await;

    let event = publish(&busway).await;
    let letters = wait_for_dead_letters(&busway, &id, 1).await;
    assert_eq!(event_id(&letters[0]["event"]), event);
    assert_eq!(letters[0]["attempts"], 1, "{letters:?}");
    assert!(
        letters[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("400")),
        "{letters:?}"
    );
    consumer.assert_no_more_than(1, QUIET).await;
    let stats = wait_for_delivery(&busway, &id, |s| s["dead_lettered"] == 1).await;
    assert_eq!(stats["retries"], 0, "{stats}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_recovers_fills_the_dead_letter_store_and_a_redrive_delivers() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(503));
    let id = subscribe(&busway, &consumer.url("/hook"), Some(2)).await;

    let mut published = Vec::new();
    for _ in 0..3 {
        published.push(publish(&busway).await);
    }
    let letters = wait_for_dead_letters(&busway, &id, 3).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["attempts"], 3, "{letter}");
        assert!(
            letter["error"].as_str().is_some_and(|e| e.contains("503")),
            "{letter}"
        );
        assert!(letter["failed_at"].is_string(), "{letter}");
        assert_eq!(letter["event"]["detail-type"], "scanned_parcel.1");
        assert_eq!(letter["event"]["account"], "000000000000");
    }
    let dead: Vec<String> = letters.iter().map(|l| event_id(&l["event"])).collect();
    assert_eq!(sorted(dead), sorted(published.clone()));
    assert_eq!(consumer.requests().len(), 9, "3 events, 3 attempts each");
    // The dead letters page as every list does: oldest first, `limit`, then `next_token`.
    let path = format!("/subscriptions/{id}/dead-letters");
    let first = busway
        .get(&format!("{path}?limit=2"))
        .await
        .expect(200)
        .clone();
    let token = first["next_token"].as_str().expect("a next_token");
    let rest = busway
        .get(&format!("{path}?limit=2&next_token={token}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(rest.get("next_token"), None, "{rest}");
    let paged: Vec<Value> = [&first, &rest]
        .iter()
        .flat_map(|p| p["dead_letters"].as_array().expect("a list").clone())
        .collect();
    assert_eq!(paged, letters, "the pages hold every letter once, in order");
    busway
        .get(&format!("{path}?limit=0"))
        .await
        .expect_error(400, "validation_failed");
    busway
        .get(&format!("{path}?next_token=zz"))
        .await
        .expect_error(400, "validation_failed");
    let stats = wait_for_delivery(&busway, &id, |s| s["dead_lettered"] == 3).await;
    assert_eq!(stats["delivered"], 0, "{stats}");
    assert!(
        stats["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{stats}"
    );

    consumer.recover();
    let redrive = busway
        .post(
            &format!("/subscriptions/{id}/dead-letters/redrive"),
            &json!({}),
        )
        .await;
    assert_eq!(redrive.expect(202)["redriving"], 3);
    consumer.wait_for_deliveries(3, DELIVERY_TIMEOUT).await;
    assert_eq!(sorted(consumer.delivered_ids()), sorted(published));
    for request in consumer.delivered() {
        assert_eq!(request.json(), letters_event(&letters, &request.event_id()));
    }

    let started = Instant::now();
    while !dead_letters(&busway, &id).await.is_empty() {
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "redriven letters stay in the store: {:?}",
            dead_letters(&busway, &id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_delivery_is_counted_in_the_subscription_delivery() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(500));
    let id = subscribe(&busway, &consumer.url("/hook"), Some(0)).await;
    publish(&busway).await;
    wait_for_dead_letters(&busway, &id, 1).await;
    assert_eq!(
        delivery(&busway, &id).await["last_delivered_at"],
        Value::Null
    );

    consumer.recover();
    busway
        .post(
            &format!("/subscriptions/{id}/dead-letters/redrive"),
            &json!({}),
        )
        .await
        .expect(202);
    consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    wait_for_delivery(&busway, &id, |s| {
        s["delivered"] == 1 && s["last_delivered_at"].is_string()
    })
    .await;
    busway.stop().await;
}

fn letters_event(letters: &[Value], id: &str) -> Value {
    letters
        .iter()
        .find(|l| event_id(&l["event"]) == id)
        .map(|l| l["event"].clone())
        .unwrap_or_else(|| panic!("no dead letter for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_event_that_fails_again_follows_the_policy_again() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(500));
    let id = subscribe(&busway, &consumer.url("/hook"), Some(1)).await;
    let event = publish(&busway).await;
    wait_for_dead_letters(&busway, &id, 1).await;
    assert_eq!(consumer.requests().len(), 2, "one attempt and one retry");

    let redrive = busway
        .post(
            &format!("/subscriptions/{id}/dead-letters/redrive"),
            &json!({}),
        )
        .await;
    assert_eq!(redrive.expect(202)["redriving"], 1);
    consumer
        .wait_until("a redrive's 2 attempts", DELIVERY_TIMEOUT, |r| r.len() >= 4)
        .await;
    // The letter comes back with the attempts of its second round: the policy applied afresh.
    let letters = wait_for_dead_letters(&busway, &id, 1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(event_id(&letters[0]["event"]), event);
    assert_eq!(letters[0]["attempts"], 2, "{letters:?}");
    consumer.assert_no_more_than(4, QUIET).await;
    let stats = wait_for_delivery(&busway, &id, |s| s["dead_lettered"] == 2).await;
    assert_eq!(stats["retries"], 2, "{stats}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redrives_at_once_send_each_dead_letter_once() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(500));
    let id = subscribe(&busway, &consumer.url("/hook"), Some(0)).await;
    let mut published = Vec::new();
    for _ in 0..6 {
        published.push(publish(&busway).await);
    }
    wait_for_dead_letters(&busway, &id, 6).await;
    consumer.recover();

    let path = format!("/subscriptions/{id}/dead-letters/redrive");
    let empty = json!({});
    let (first, second) = tokio::join!(busway.post(&path, &empty), busway.post(&path, &empty));
    let counts = [
        first.expect(202)["redriving"].as_u64().expect("a count"),
        second.expect(202)["redriving"].as_u64().expect("a count"),
    ];
    assert_eq!(
        counts.iter().sum::<u64>(),
        6,
        "each letter is taken once: {counts:?}"
    );
    consumer.wait_for_deliveries(6, DELIVERY_TIMEOUT).await;
    consumer.assert_no_more_than(6 + 6, QUIET).await;
    assert_eq!(
        sorted(consumer.delivered_ids()),
        sorted(published),
        "every letter is delivered exactly once"
    );
    assert!(dead_letters(&busway, &id).await.is_empty());
    let again = busway.post(&path, &json!({})).await;
    assert_eq!(
        again.expect(202)["redriving"],
        0,
        "nothing is left to redrive"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_does_not_hold_the_events_published_after_it() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.poison("poisoned");
    let id = subscribe(&busway, &consumer.url("/hook"), None).await;

    let mut poisoned = v1_envelope("u2");
    poisoned["metadata"]["event_id"] = json!("poisoned");
    busway
        .publish("scanned_parcel", "1", &poisoned)
        .await
        .expect(200);
    consumer
        .wait_until(
            "the poisoned event's first attempt",
            DELIVERY_TIMEOUT,
            |r| r.iter().any(|r| r.answered == Some(500)),
        )
        .await;
    let started = Instant::now();
    let mut good = Vec::new();
    for _ in 0..50 {
        good.push(publish(&busway).await);
    }
    consumer.wait_for_deliveries(50, DELIVERY_TIMEOUT).await;
    let took = started.elapsed();
    assert_eq!(sorted(consumer.delivered_ids()), sorted(good));
    assert!(
        took < Duration::from_secs(3),
        "the good events waited behind the failing one: {took:?}"
    );
    // The poisoned event is still being retried on its own (185 retries, an hour).
    consumer
        .wait_until("the poisoned event's retries", DELIVERY_TIMEOUT, |r| {
            r.iter().filter(|r| r.answered == Some(500)).count() >= 3
        })
        .await;
    assert!(dead_letters(&busway, &id).await.is_empty());

    consumer.cure("poisoned");
    consumer
        .wait_until("the poisoned event, once cured", DELIVERY_TIMEOUT, |r| {
            r.iter().any(|r| r.succeeded && r.event_id() == "poisoned")
        })
        .await;
    let stats = wait_for_delivery(&busway, &id, |s| s["delivered"] == 51).await;
    assert_eq!(stats["dead_lettered"], 0, "{stats}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_age_counts_from_its_time_not_from_its_first_attempt() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(500));
    // 185 retries within an hour.
    let id = subscribe(&busway, &consumer.url("/hook"), Some(185)).await;
    // An event published two hours ago, waiting in the log (as after downtime): past the
    // subscription's hour at its first attempt.
    let busway = busway
        .restart_with(|dir| {
            let log = rusqlite::Connection::open(dir.join("events.db")).expect("the log");
            let old = (time::OffsetDateTime::now_utc() - time::Duration::hours(2))
                .replace_nanosecond(0)
                .expect("whole seconds")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("a time");
            log.execute(
                "INSERT INTO events (id, event_id, source, detail_type, time, detail)
                 VALUES ('old-id', 'old', 'busway.demo', 'scanned_parcel.1', ?1, ?2)",
                rusqlite::params![
                    old,
                    json!({"metadata": {"event_id": "old", "event_attributes": {"source": "workshop_scanner", "target": "u2"}},
                           "data": {}}).to_string()
                ],
            )
            .expect("an old event in the log");
        })
        .await;
    let letters = wait_for_dead_letters(&busway, &id, 1).await;
    assert_eq!(event_id(&letters[0]["event"]), "old");
    assert_eq!(
        letters[0]["attempts"], 1,
        "no retry past its age: {letters:?}"
    );

    // A fresh event under the same policy is retried instead.
    publish(&busway).await;
    consumer
        .wait_until("the fresh event's retries", DELIVERY_TIMEOUT, |r| {
            r.iter().filter(|r| r.event_id() != "old").count() >= 3
        })
        .await;
    assert_eq!(dead_letters(&busway, &id).await.len(), 1);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_event_reaches_the_consumer_byte_for_byte_as_first_sent() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(500));
    let id = subscribe(&busway, &consumer.url("/hook"), Some(0)).await;
    publish(&busway).await;
    wait_for_dead_letters(&busway, &id, 1).await;
    let first = consumer.requests()[0].body.clone();

    consumer.recover();
    busway
        .post(
            &format!("/subscriptions/{id}/dead-letters/redrive"),
            &json!({}),
        )
        .await
        .expect(202);
    let delivered = consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    assert_eq!(
        String::from_utf8_lossy(&delivered[0].body),
        String::from_utf8_lossy(&first)
    );
    busway.stop().await;
}

/// Rows of the retry schedule in the data dir.
fn scheduled(busway: &Broker) -> i64 {
    rusqlite::Connection::open(busway.data_dir().join("busway.db"))
        .and_then(|db| db.query_row("SELECT count(*) FROM retries", [], |r| r.get(0)))
        .expect("the retry schedule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_subscription_drops_its_scheduled_retries() {
    let busway = fast_broker().await;
    let consumer = Consumer::start().await;
    consumer.fail_forever(Failure::Status(500));
    let id = subscribe(&busway, &consumer.url("/hook"), None).await;
    publish(&busway).await;
    let started = Instant::now();
    while scheduled(&busway) == 0 {
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "nothing was scheduled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deleted = busway.delete(&format!("/subscriptions/{id}")).await;
    let deployment = deleted.expect(202)["deployment_id"]
        .as_str()
        .expect("a deployment id")
        .to_string();
    busway.wait_for_deployment(&deployment).await;
    assert_eq!(scheduled(&busway), 0);
    let attempts = consumer.requests().len();
    consumer.assert_no_more_than(attempts, QUIET).await;
    busway.stop().await;
}
