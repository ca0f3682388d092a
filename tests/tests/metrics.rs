//! The local host's metrics and probes over HTTP: `/metrics` moves as the seed's demo runs
//! (publish, deliver, a failing consumer's retries and dead letters, provisioning), a paused
//! subscription's lag shows, and `/healthz` and `/readyz` answer without a key.

use std::time::{Duration, Instant};

use busway_tests::consumer::{Consumer, Failure, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Retries a few milliseconds apart, so a failing consumer's budget is spent at once.
async fn fast_broker() -> Broker {
    Broker::start_with(|config| {
        config.delivery.retry_base = Duration::from_millis(5);
        config.delivery.retry_cap = Duration::from_millis(40);
        config.delivery.timeout = Duration::from_millis(300);
    })
    .await
}

async fn scrape_as(busway: &Broker, key: Option<&str>) -> (u16, String, String) {
    let mut request = busway.http.get(busway.portal_url("/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("GET /metrics answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        content_type,
        response.text().await.expect("a text body"),
    )
}

async fn scrape(busway: &Broker) -> String {
    let (status, _, text) = scrape_as(busway, Some(&busway.admin_key)).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// The value of the sample `name` whose labels include every pair of `labels`; none when no
/// such sample is exposed.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

/// Scrapes until `done` holds of the text, and returns it.
async fn scrape_until(busway: &Broker, what: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = scrape(busway).await;
        if done(&text) {
            return text;
        }
        assert!(
            started.elapsed() < WAIT,
            "{what} not seen within {WAIT:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn subscribe(busway: &Broker, url: &str, retries: u32) -> String {
    let mut body = http_subscription(1, "u2", url);
    body["retry_policy"] =
        json!({"maximum_retry_attempts": retries, "maximum_event_age_seconds": 3600});
    busway.subscribe_deployed(&body).await["id"]
        .as_str()
        .expect("a subscription id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_the_seed_demo_runs() {
    let busway = fast_broker().await;
    let before = scrape(&busway).await;
    assert!(
        before.contains("# TYPE busway_deliveries counter"),
        "the subscriptions' families are described before there is any:\n{before}"
    );
    assert_eq!(sample(&before, "busway_events_accepted_total", &[]), None);
    let producer_ok = [("kind", "producer"), ("status", "SUCCEEDED")];
    assert_eq!(
        sample(
            &before,
            "busway_provisioning_duration_seconds_count",
            &producer_ok
        ),
        None
    );

    // 1. the event type: one producer deployment, succeeded.
    busway.create_deployed_event(&seed_event()).await;
    let text = scrape_until(&busway, "the producer deployment", |t| {
        value(
            t,
            "busway_provisioning_duration_seconds_count",
            &producer_ok,
        ) == 1.0
    })
    .await;
    assert!(
        value(
            &text,
            "busway_provisioning_duration_seconds_sum",
            &producer_ok
        ) > 0.0,
        "{text}"
    );

    // 3. two subscribers of u2: one that takes every event, one that always fails.
    let (good, bad) = (Consumer::start().await, Consumer::start().await);
    bad.fail_forever(Failure::Status(500));
    let good_id = subscribe(&busway, &good.url("/hook"), 2).await;
    let bad_id = subscribe(&busway, &bad.url("/hook"), 2).await;
    let consumer_ok = [("kind", "consumer"), ("status", "SUCCEEDED")];
    let text = scrape(&busway).await;
    assert_eq!(
        value(
            &text,
            "busway_provisioning_duration_seconds_count",
            &consumer_ok
        ),
        2.0,
        "{text}"
    );

    // 4. three valid events, one invalid, one to a version that does not exist.
    for _ in 0..3 {
        busway
            .publish("scanned_parcel", "1", &v1_envelope("u2"))
            .await
            .expect(200);
    }
    busway
        .publish(
            "scanned_parcel",
            "1",
            &json!({"metadata": {}, "data": {"dest_postal_code": 1234}}),
        )
        .await
        .expect(400);
    busway
        .publish("scanned_parcel", "9", &v1_envelope("u2"))
        .await
        .expect(404);
    // Requests that are not publishes are not counted as ones.
    for path in ["/openapi.json", "/scanned_parcel/1", "/healthz"] {
        let reply = busway
            .send_as(busway.http.get(busway.broker_url(path)), None)
            .await;
        assert_ne!(reply.status, 200, "{path}");
    }

    let event = [("event_type", "scanned_parcel"), ("version", "1")];
    let text = scrape_until(&busway, "the deliveries and dead letters", |t| {
        value(t, "busway_deliveries_total", &[("subscription", &good_id)]) == 3.0
            && value(t, "busway_dead_letters_total", &[("subscription", &bad_id)]) == 3.0
    })
    .await;
    assert_eq!(value(&text, "busway_events_accepted_total", &event), 3.0);
    assert_eq!(
        value(
            &text,
            "busway_events_rejected_total",
            &[
                ("event_type", "scanned_parcel"),
                ("version", "1"),
                ("status", "400")
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "busway_events_rejected_total",
            &[
                ("event_type", "_unknown"),
                ("version", "_unknown"),
                ("status", "404")
            ]
        ),
        1.0,
        "a version that is not deployed is not a label of its own:\n{text}"
    );
    for status in ["401", "404", "405"] {
        assert_eq!(
            value(
                &text,
                "busway_events_rejected_total",
                &[("event_type", "scanned_parcel"), ("status", status)]
            ),
            0.0,
            "{text}"
        );
    }
    assert_eq!(
        value(&text, "busway_ingest_duration_seconds_count", &event),
        4.0,
        "every publish to the version is timed:\n{text}"
    );
    let good_labels = [
        ("subscription", good_id.as_str()),
        ("event_type", "scanned_parcel"),
        ("version", "1"),
        ("target_unit", "u2"),
        ("connection_type", "HTTPS"),
    ];
    assert_eq!(value(&text, "busway_deliveries_total", &good_labels), 3.0);
    assert_eq!(
        value(
            &text,
            "busway_delivery_retries_total",
            &[("subscription", &good_id)]
        ),
        0.0
    );
    // Each event: a first attempt and two retries, then the dead-letter store.
    assert_eq!(
        value(
            &text,
            "busway_delivery_retries_total",
            &[("subscription", &bad_id)]
        ),
        6.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "busway_deliveries_total",
            &[("subscription", &bad_id)]
        ),
        0.0
    );
    for id in [&good_id, &bad_id] {
        assert_eq!(
            sample(
                &text,
                "busway_subscription_lag_events",
                &[("subscription", id)]
            ),
            Some(0.0),
            "a settled subscription is not behind:\n{text}"
        );
    }
    good.stop().await;
    bad.stop().await;
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscription_shows_how_far_behind_it_is() {
    let busway = fast_broker().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = Consumer::start().await;
    let id = subscribe(&busway, &consumer.url("/hook"), 2).await;
    busway
        .post(&format!("/subscriptions/{id}/pause"), &json!({}))
        .await
        .expect(200);
    for _ in 0..2 {
        busway
            .publish("scanned_parcel", "1", &v1_envelope("u2"))
            .await
            .expect(200);
    }
    // The log keeps `time` to the second: after a second and a bit, the oldest is a second old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let on = [("subscription", id.as_str())];
    let text = scrape(&busway).await;
    assert_eq!(
        value(&text, "busway_subscription_lag_events", &on),
        2.0,
        "{text}"
    );
    assert!(
        value(&text, "busway_subscription_lag_seconds", &on) >= 1.0,
        "{text}"
    );
    let read = busway.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(
        read.expect(200)["delivery"]["lag"]["events"],
        2,
        "the portal shows the same lag: {}",
        read.body
    );

    busway
        .post(&format!("/subscriptions/{id}/resume"), &json!({}))
        .await
        .expect(200);
    consumer.wait_for_deliveries(2, WAIT).await;
    scrape_until(&busway, "the backlog delivered", |t| {
        value(t, "busway_subscription_lag_events", &on) == 0.0
            && value(t, "busway_deliveries_total", &on) == 2.0
    })
    .await;
    consumer.stop().await;
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_platform_admins_read_the_metrics_and_the_probes_need_no_key() {
    let busway = Broker::start().await;
    let (status, content_type, text) = scrape_as(&busway, Some(&busway.admin_key)).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (status, _, text) = scrape_as(&busway, None).await;
    assert_eq!(status, 401, "{text}");
    let owner = busway.create_key("logistics", "owner", None).await;
    let (status, _, text) = scrape_as(&busway, Some(&owner)).await;
    assert_eq!(status, 403, "{text}");

    for (path, word) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let reply = busway
            .send_as(busway.http.get(busway.portal_url(path)), None)
            .await;
        let body: &Value = reply.expect(200);
        assert_eq!(body["status"], word, "{path}: {body}");
    }
    let ready = busway
        .send_as(busway.http.get(busway.portal_url("/readyz")), None)
        .await;
    for check in [
        "store",
        "event_log",
        "event_log_writes",
        "background_tasks",
        "delivery_workers",
    ] {
        assert_eq!(ready.body["checks"][check], "ok", "{}", ready.body);
    }
    busway.stop().await;
}
