//! `busway queue receive`: what an SQS subscription delivered into an embedded queue, as a
//! developer reads it from the command line.

use std::process::Command;
use std::time::{Duration, Instant};

use busway_local::{Config, Running};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(15);

/// The platform-admin key busway made at its first start.
fn admin_key(busway: &Running) -> &str {
    busway
        .new_admin_key
        .as_deref()
        .expect("a new data dir gets a platform-admin key")
}

/// A client that sends `key`.
fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

async fn call(http: &reqwest::Client, url: String, body: &Value) -> Value {
    let response = http
        .post(&url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status < 300, "{url} answered {status}: {body}");
    body
}

async fn deployed(http: &reqwest::Client, portal: &str, created: &Value) {
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let started = Instant::now();
    loop {
        let deployment: Value = http
            .get(format!("{portal}/deployments/{id}"))
            .send()
            .await
            .expect("the portal answers")
            .json()
            .await
            .expect("a deployment");
        match deployment["status"].as_str() {
            Some("SUCCEEDED") => return,
            Some("FAILED") => panic!("deployment {id} failed: {deployment}"),
            _ => {}
        }
        assert!(started.elapsed() < TIMEOUT, "deployment {id}: {deployment}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broker with scanned_parcel and an SQS subscription of u2 to the queue `orders`; returns it
/// with the event ids of two published events.
async fn queue_with_two_events() -> (Running, tempfile::TempDir, Vec<String>) {
    let data = tempfile::tempdir().expect("a temp data dir");
    let any = "127.0.0.1:0".parse().expect("an address");
    let busway = Running::start(Config::new(data.path().to_path_buf(), any, any))
        .await
        .expect("busway starts");
    let portal = format!("http://{}", busway.portal_addr);
    let http = client_with(admin_key(&busway));
    let created = call(
        &http,
        format!("{portal}/events"),
        &json!({
            "application": "demo", "event_type": "scanned_parcel",
            "description": "Scanned parcel", "connection_type": "HTTPS",
            "data": {"type": "object", "properties": {"dest_house": {"type": "integer"}}}
        }),
    )
    .await;
    deployed(&http, &portal, &created).await;
    let created = call(
        &http,
        format!("{portal}/subscriptions"),
        &json!({
            "event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
            "connection_type": "SQS", "connection_string": "arn:aws:sqs:eu-west-1:123456789012:orders"
        }),
    )
    .await;
    deployed(&http, &portal, &created).await;
    // Only producer keys publish.
    let made = call(
        &http,
        format!("{portal}/keys"),
        &json!({"team": "platform", "role": "producer", "application": "demo"}),
    )
    .await;
    let producer = client_with(made["key"].as_str().expect("a key"));
    let mut ids = Vec::new();
    for house in [1, 2] {
        let answer = call(
            &producer,
            format!("http://{}/scanned_parcel/1", busway.broker_addr),
            &json!({
                "metadata": {"event_attributes": {"source": "scanner", "target": "u2"}},
                "data": {"dest_house": house}
            }),
        )
        .await;
        ids.push(
            answer["event_id"]
                .as_str()
                .expect("an event_id")
                .to_string(),
        );
    }
    (busway, data, ids)
}

/// Runs `busway queue receive orders` with `key` until it printed `n` lines.
async fn receive_lines(portal: String, key: &str, n: usize) -> Vec<String> {
    let started = Instant::now();
    let mut lines = Vec::new();
    while lines.len() < n {
        let (portal, key) = (portal.clone(), key.to_string());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_busway"))
                .args([
                    "queue", "receive", "orders", "--portal", &portal, "--max", "10", "--key", &key,
                ])
                .output()
                .expect("busway runs")
        })
        .await
        .expect("the command ran");
        assert!(
            output.status.success(),
            "busway queue receive failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        lines.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string),
        );
        assert!(started.elapsed() < TIMEOUT, "{n} lines expected: {lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_receive_prints_each_delivered_event_once_as_a_json_line() {
    let (busway, _data, ids) = queue_with_two_events().await;
    let portal = format!("http://{}", busway.portal_addr);
    let lines = receive_lines(portal.clone(), admin_key(&busway), 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let received: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON event"))
        .collect();
    let received_ids: Vec<&Value> = received
        .iter()
        .map(|e| &e["detail"]["metadata"]["event_id"])
        .collect();
    assert_eq!(received_ids, [&json!(ids[0]), &json!(ids[1])]);
    for event in &received {
        assert_eq!(event["detail-type"], "scanned_parcel.1");
        assert_eq!(event["source"], "busway.demo");
        assert_eq!(event["account"], "000000000000");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_busway"))
        .args(["queue", "receive", "orders", "--portal", &portal])
        .args(["--key", admin_key(&busway)])
        .output()
        .expect("busway runs");
    assert!(output.status.success());
    // Without a key of the queue's team, nothing is read: the portal answers 401.
    let refused = Command::new(env!("CARGO_BIN_EXE_busway"))
        .args(["queue", "receive", "orders", "--portal", &portal])
        .args(["--key", "bwk_unknown"])
        .output()
        .expect("busway runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "",
        "received messages are deleted"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_receive_prints_the_event_in_the_order_eventbridge_writes_it() {
    let (busway, _data, _) = queue_with_two_events().await;
    let lines = receive_lines(
        format!("http://{}", busway.portal_addr),
        admin_key(&busway),
        1,
    )
    .await;
    assert!(
        lines[0].starts_with(r#"{"version":"0","id":"#),
        "{}",
        lines[0]
    );
    busway.stop().await;
}
