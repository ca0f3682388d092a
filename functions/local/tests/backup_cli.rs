//! `busway backup` of a data dir while `busway up` serves it, and the copy served afterwards.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use busway_local::{Config, Running};
use serde_json::{Value, json};

const ADMIN: &str = "bwk_backup_0123456789abcdef0123456789abcdef";

async fn call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let request = match method {
        "POST" => http.post(url).json(&body.unwrap_or(Value::Null)),
        _ => http.get(url),
    };
    let response = request.bearer_auth(ADMIN).send().await.expect("answers");
    assert!(
        response.status().is_success(),
        "{method} {url}: {}",
        response.status()
    );
    response.json().await.expect("a JSON answer")
}

/// Publishes `event` as `producer`; the broker's answer, a 200.
async fn publish(http: &reqwest::Client, broker: &str, producer: &str, event: &Value) -> Value {
    let answer = http
        .post(format!("{broker}/scanned_parcel/1"))
        .bearer_auth(producer)
        .json(event)
        .send()
        .await
        .expect("answers");
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("JSON")
}

fn backup(data_dir: &Path, to: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_busway"))
        .args(["backup", "--data-dir"])
        .arg(data_dir)
        .arg("--to")
        .arg(to)
        .output()
        .expect("busway runs")
}

async fn start(dir: &Path) -> Running {
    let any = "127.0.0.1:0".parse().expect("an address");
    let mut config = Config::new(dir.to_path_buf(), any, any);
    config.admin_key = Some(ADMIN.into());
    Running::start(config).await.expect("busway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_busway_runs_is_served_as_it_was() {
    let data = tempfile::tempdir().expect("a data dir");
    let running = start(data.path()).await;
    let (portal, broker) = (
        format!("http://{}", running.portal_addr),
        format!("http://{}", running.broker_addr),
    );
    let http = reqwest::Client::new();
    let created = call(
        &http,
        "POST",
        &format!("{portal}/events"),
        Some(json!({
        "application": "demo", "event_type": "scanned_parcel", "description": "d",
        "connection_type": "HTTPS", "data": {"type": "object"}})),
    )
    .await;
    let deployment = format!(
        "{portal}/deployments/{}",
        created["deployment_id"].as_str().expect("an id")
    );
    let started = Instant::now();
    while call(&http, "GET", &deployment, None).await["status"] != "SUCCEEDED" {
        assert!(started.elapsed() < Duration::from_secs(30), "not deployed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = call(
        &http,
        "POST",
        &format!("{portal}/keys"),
        Some(json!({
        "team": "platform", "role": "producer", "application": "demo"})),
    )
    .await;
    let producer = producer["key"].as_str().expect("a key").to_string();
    let event = json!({"metadata": {"event_attributes": {"source": "s", "target": "u1"},
        "event_id": "kept-1"}, "data": {}});
    publish(&http, &broker, &producer, &event).await;

    let copy = data.path().join("copy");
    let output = backup(data.path(), &copy);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A second backup into the same folder is refused rather than mixed with the first.
    assert!(!backup(data.path(), &copy).status.success());
    running.stop().await;

    let restored = start(&copy).await;
    let (portal, broker) = (
        format!("http://{}", restored.portal_addr),
        format!("http://{}", restored.broker_addr),
    );
    let kept = call(
        &http,
        "GET",
        &format!("{portal}/events/scanned_parcel"),
        None,
    )
    .await;
    assert_eq!(kept["event_type"], "scanned_parcel");
    // The copied log still knows the event: its repeat is a duplicate, with the copied key.
    let repeat = publish(&http, &broker, &producer, &event).await;
    assert_eq!(repeat["duplicate"], true, "{repeat}");
    restored.stop().await;
}
