//! One event is followed by its request id: the broker answers the caller's `x-request-id` (or
//! one it made), the delivered event carries it as `metadata.request_id`, and the log line of
//! each delivery attempt names it beside the event's `event_id`, as a refused publish's names it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busway_tests::consumer::{Consumer, Failure, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope};

/// busway's log lines, as this test process's tracing subscriber wrote them.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text =
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// The delivery attempt lines naming `request_id`, once there are `n` or `within` has
    /// passed: a consumer has the event before busway hears its answer and logs the attempt.
    async fn attempts(&self, request_id: &str, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let attempts: Vec<String> = self
                .lines_with(&format!("request_id=\"{request_id}\""))
                .into_iter()
                .filter(|l| l.contains("attempt="))
                .collect();
            if attempts.len() >= n || Instant::now() >= deadline {
                return attempts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_follows_an_event_from_its_publish_to_each_delivery_attempt() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let busway = Broker::start_with(|config| {
        config.delivery.retry_base = Duration::from_millis(5);
        config.delivery.retry_cap = Duration::from_millis(40);
    })
    .await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = Consumer::start().await;
    busway
        .subscribe_deployed(&http_subscription(1, "u2", &consumer.url("/hook")))
        .await;
    // The first attempt fails, so the event has two attempts to follow.
    consumer.fail(Failure::Status(500), 1);

    let request_id = "trace-7f3a-publish";
    let response = busway
        .http
        .post(busway.broker_url("/scanned_parcel/1"))
        .bearer_auth(busway.producer_key("scanned_parcel").await)
        .header("x-request-id", request_id)
        .json(&v1_envelope("u2"))
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], request_id);
    let published: serde_json::Value = response.json().await.expect("a JSON answer");
    let event_id = published["event_id"]
        .as_str()
        .expect("an event_id")
        .to_string();

    let delivered = consumer
        .wait_for_deliveries(1, Duration::from_secs(30))
        .await;
    let event = delivered[0].json();
    assert_eq!(event["detail"]["metadata"]["request_id"], request_id);
    assert_eq!(event["detail"]["metadata"]["event_id"], event_id.as_str());

    let attempts = log.attempts(request_id, 2, Duration::from_secs(10)).await;
    assert_eq!(attempts.len(), 2, "one line per attempt: {attempts:#?}");
    assert!(attempts[0].contains("delivery attempt failed") && attempts[0].contains("attempt=1"));
    assert!(attempts[1].contains("delivered") && attempts[1].contains("attempt=2"));
    assert!(
        attempts.iter().all(|l| l.contains(&event_id)),
        "{attempts:#?}"
    );

    // Without the header, the broker makes an id and answers it.
    let response = busway
        .http
        .post(busway.broker_url("/scanned_parcel/1"))
        .bearer_auth(busway.producer_key("scanned_parcel").await)
        .json(&v1_envelope("u2"))
        .send()
        .await
        .expect("the broker answers");
    let made = response.headers()["x-request-id"]
        .to_str()
        .expect("a header")
        .to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let delivered = consumer
        .wait_for_deliveries(2, Duration::from_secs(30))
        .await;
    assert!(
        delivered
            .iter()
            .any(|d| d.json()["detail"]["metadata"]["request_id"] == made.as_str())
    );

    // A refused publish is logged under its request id too.
    let refused = "trace-refused-publish";
    let response = busway
        .http
        .post(busway.broker_url("/scanned_parcel/1"))
        .bearer_auth(busway.producer_key("scanned_parcel").await)
        .header("x-request-id", refused)
        .json(&serde_json::json!({"metadata": {}, "data": {}}))
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(response.status(), 400);
    let lines = log.lines_with(refused);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("publish refused") && l.contains("status=400")),
        "{lines:#?}"
    );

    // An event's last attempt says that it went to the dead letters.
    consumer.fail(Failure::Status(400), 1);
    let dead = "trace-dead-letter";
    let response = busway
        .http
        .post(busway.broker_url("/scanned_parcel/1"))
        .bearer_auth(busway.producer_key("scanned_parcel").await)
        .header("x-request-id", dead)
        .json(&v1_envelope("u2"))
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(response.status(), 200);
    let attempts = log.attempts(dead, 1, Duration::from_secs(10)).await;
    assert!(
        attempts.len() == 1
            && attempts[0].contains("WARN")
            && attempts[0].contains("dead-lettered"),
        "{attempts:#?}"
    );
    busway.stop().await;
}
