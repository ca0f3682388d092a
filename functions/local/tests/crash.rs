//! Crash safety of the real `busway` binary: SIGKILL under load, restart on the same data dir,
//! and every event answered 200 still reaches its subscriber.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const LOAD_FOR: Duration = Duration::from_millis(1500);
const PUBLISHERS: usize = 8;
const REDELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `busway up` process on free loopback ports. Dropping it kills it.
struct Busway {
    child: Child,
    portal: String,
    broker: String,
    log: PathBuf,
}

impl Drop for Busway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Busway {
    fn up(data_dir: &Path, log: PathBuf) -> Busway {
        Self::up_with(data_dir, log, "always")
    }

    /// `busway up --fsync fsync`.
    fn up_with(data_dir: &Path, log: PathBuf, fsync: &str) -> Busway {
        let log_file = std::fs::File::create(&log).expect("a log file for busway's stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_busway"))
            .args(["up", "--data-dir"])
            .arg(data_dir)
            .args([
                "--portal-addr",
                "127.0.0.1:0",
                "--broker-addr",
                "127.0.0.1:0",
                "--fsync",
                fsync,
            ])
            .env("RUST_LOG", "warn")
            .env("BUSWAY_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("busway up starts");
        let stdout = child.stdout.take().expect("busway's stdout");
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut portal, mut broker) = (None, None);
        let started = Instant::now();
        while portal.is_none() || broker.is_none() {
            let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
            let line = received.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "busway up did not print its addresses within {STARTUP_TIMEOUT:?} ({e}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            if let Some(url) = line.strip_prefix("portal: ") {
                portal = Some(url.to_string());
            } else if let Some(url) = line.strip_prefix("broker: ") {
                broker = Some(url.to_string());
            }
        }
        Busway {
            child,
            portal: portal.expect("a portal address"),
            broker: broker.expect("a broker address"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The subscriber: counts deliveries per `detail.metadata.event_id`; while it is not accepting,
/// it answers 503 and counts nothing.
#[derive(Clone, Default)]
struct Deliveries {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    refusing: Arc<AtomicBool>,
    /// Events answered 500, with the attempts they got.
    poisoned: Arc<Mutex<HashMap<String, usize>>>,
}

impl Deliveries {
    fn snapshot(&self) -> HashMap<String, usize> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn consume(State(deliveries): State<Deliveries>, body: String) -> StatusCode {
    if deliveries.refusing.load(Ordering::Acquire) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let event: Value = serde_json::from_str(&body).expect("the subscriber receives JSON");
    let id = event["detail"]["metadata"]["event_id"]
        .as_str()
        .expect("a delivered event has detail.metadata.event_id")
        .to_string();
    if let Some(attempts) = deliveries
        .poisoned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&id)
    {
        *attempts += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    *deliveries
        .counts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id)
        .or_default() += 1;
    StatusCode::OK
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: &Value) -> Value {
    let response = http
        .request(method, &url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status < 300, "{url} answered {status}: {body}");
    body
}

async fn deployed(http: &reqwest::Client, busway: &Busway, created: &Value) {
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let started = Instant::now();
    loop {
        let deployment = call(
            http,
            reqwest::Method::GET,
            format!("{}/deployments/{id}", busway.portal),
            &Value::Null,
        )
        .await;
        match deployment["status"].as_str() {
            Some("SUCCEEDED") => return,
            Some("FAILED") => panic!("deployment {id} failed: {deployment}"),
            _ => {}
        }
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "deployment {id} did not finish: {deployment}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn envelope(target: &str) -> Value {
    json!({
        "metadata": {"event_attributes": {"source": "crash_test", "target": target}},
        "data": {"dest_postal_code": "1012AB", "dest_house": 42, "parcel_weight": 1.25}
    })
}

/// Publishes until the broker stops answering; returns the event ids answered 200.
async fn publisher(http: reqwest::Client, url: String) -> Vec<String> {
    let mut acknowledged = Vec::new();
    loop {
        let response = match http.post(&url).json(&envelope("u2")).send().await {
            Ok(response) => response,
            Err(_) => return acknowledged,
        };
        if response.status() != reqwest::StatusCode::OK {
            continue;
        }
        // An answer whose body is cut by the kill was not fully received: not acknowledged.
        let Ok(body) = response.json::<Value>().await else {
            return acknowledged;
        };
        acknowledged.push(body["event_id"].as_str().expect("an event_id").to_string());
    }
}

/// Serves `deliveries` on loopback; returns its URL and the server's task.
async fn subscriber(deliveries: &Deliveries) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/events", post(consume))
        .with_state(deliveries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a subscriber port");
    let url = format!(
        "http://{}/events",
        listener.local_addr().expect("an address")
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, server)
}

/// Creates `scanned_parcel` and subscribes unit u2's `subscriber` to it, both deployed.
async fn deploy_subscription(http: &reqwest::Client, busway: &Busway, subscriber: &str) {
    let created = call(
        http,
        reqwest::Method::POST,
        format!("{}/events", busway.portal),
        &json!({
            "application": "demo",
            "event_type": "scanned_parcel",
            "description": "Scanned parcel on the workshop",
            "connection_type": "HTTPS",
            "data": {
                "type": "object",
                "properties": {
                    "dest_postal_code": {"type": "string"},
                    "dest_house": {"type": "integer"},
                    "parcel_weight": {"type": "number"}
                },
                "required": ["dest_postal_code", "dest_house", "parcel_weight"]
            }
        }),
    )
    .await;
    deployed(http, busway, &created).await;
    let created = call(
        http,
        reqwest::Method::POST,
        format!("{}/subscriptions", busway.portal),
        &json!({
            "event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
            "connection_type": "HTTPS", "connection_string": subscriber
        }),
    )
    .await;
    deployed(http, busway, &created).await;
}

/// The platform-admin key busway runs with; it registers, and makes the producer key that
/// publishes.
const ADMIN_KEY: &str = "bwk_crash_test_0123456789abcdef0123456789";

fn http_client() -> reqwest::Client {
    client_with(ADMIN_KEY)
}

/// A client sending a new producer key of `demo` (kept in the data dir across restarts).
async fn producer_client(admin: &reqwest::Client, busway: &Busway) -> reqwest::Client {
    let body = json!({"team": "platform", "role": "producer", "application": "demo"});
    let made = call(
        admin,
        reqwest::Method::POST,
        format!("{}/keys", busway.portal),
        &body,
    )
    .await;
    client_with(made["key"].as_str().expect("a key"))
}

fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_acknowledged_event_after_a_restart() {
    sigkill_under_load("always").await;
}

// Commits are flushed later, but each is in the operating system's hands before its 200: a
// killed process loses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_acknowledged_event_when_flushing_on_an_interval() {
    sigkill_under_load("interval=200").await;
}

async fn sigkill_under_load(fsync: &str) {
    let data = tempfile::tempdir().expect("a temp data dir");
    let logs = tempfile::tempdir().expect("a temp dir for logs");
    let deliveries = Deliveries::default();
    let (subscriber, server) = subscriber(&deliveries).await;
    let http = http_client();
    let mut busway = Busway::up_with(data.path(), logs.path().join("first.log"), fsync);
    deploy_subscription(&http, &busway, &subscriber).await;
    let producer = producer_client(&http, &busway).await;

    let url = format!("{}/scanned_parcel/1", busway.broker);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| tokio::spawn(publisher(producer.clone(), url.clone())))
        .collect();
    tokio::time::sleep(LOAD_FOR / 2).await;
    // The subscriber fails from here on, so the kill finds a backlog of events being retried.
    deliveries.refusing.store(true, Ordering::Release);
    tokio::time::sleep(LOAD_FOR / 2).await;
    let delivered_before_kill = deliveries.snapshot().len();
    // `Child::kill` is SIGKILL on Unix: no shutdown, no final flush.
    busway.child.kill().expect("busway is killed");
    busway.child.wait().expect("busway is reaped");
    let mut acknowledged = HashSet::new();
    for publisher in publishers {
        acknowledged.extend(publisher.await.expect("a publisher ends"));
    }
    assert!(
        acknowledged.len() > 100,
        "too little load to prove anything: {} events acknowledged in {LOAD_FOR:?}; log:\n{}",
        acknowledged.len(),
        busway.log()
    );
    assert!(
        acknowledged.len() > delivered_before_kill,
        "no acknowledged event was left to deliver at the kill ({} acknowledged, {delivered_before_kill} delivered)",
        acknowledged.len()
    );
    drop(busway);
    deliveries.refusing.store(false, Ordering::Release);

    let busway = Busway::up_with(data.path(), logs.path().join("restarted.log"), fsync);
    let started = Instant::now();
    let delivered = loop {
        let delivered = deliveries.snapshot();
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !delivered.contains_key(*id))
            .collect();
        if missing.is_empty() {
            break delivered;
        }
        assert!(
            started.elapsed() < REDELIVERY_TIMEOUT,
            "{} of {} acknowledged events never reached the subscriber within {REDELIVERY_TIMEOUT:?} of the restart; missing: {:?}; log after the restart:\n{}",
            missing.len(),
            acknowledged.len(),
            missing,
            busway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deliveries_total: usize = delivered.values().sum();
    let duplicates = deliveries_total - delivered.len();
    let unacknowledged = delivered
        .keys()
        .filter(|id| !acknowledged.contains(*id))
        .count();
    println!(
        "--fsync {fsync}: SIGKILL after {LOAD_FOR:?} of load from {PUBLISHERS} publishers: {} acknowledged, {} delivered before the kill (the subscriber answered 503 for the last {:?}), {} distinct delivered after the restart ({} deliveries, {duplicates} duplicates, {unacknowledged} delivered but never acknowledged), all delivered {:?} after the restart",
        acknowledged.len(),
        delivered_before_kill,
        LOAD_FOR / 2,
        delivered.len(),
        deliveries_total,
        started.elapsed()
    );
    drop(busway);
    server.abort();
}

/// The retry schedule of the subscription in the data dir: (event id, attempts) per row.
fn scheduled_retries(data_dir: &Path) -> Vec<(String, u32)> {
    let db = rusqlite::Connection::open(data_dir.join("busway.db")).expect("busway.db opens");
    let mut stmt = db
        .prepare("SELECT event, attempts FROM retries")
        .expect("the retry schedule");
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
        .expect("rows")
        .map(|row| {
            let (event, attempts) = row.expect("a row");
            let event: Value = serde_json::from_str(&event).expect("an event");
            let id = event["detail"]["metadata"]["event_id"]
                .as_str()
                .expect("an event id")
                .to_string();
            (id, attempts)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_retries_survive_a_sigkill_and_resume_after_the_restart() {
    let data = tempfile::tempdir().expect("a temp data dir");
    let logs = tempfile::tempdir().expect("a temp dir for logs");
    let deliveries = Deliveries::default();
    deliveries
        .poisoned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert("poisoned".into(), 0);
    let (subscriber, server) = subscriber(&deliveries).await;
    let http = http_client();
    let mut busway = Busway::up(data.path(), logs.path().join("first.log"));
    deploy_subscription(&http, &busway, &subscriber).await;
    let producer = producer_client(&http, &busway).await;

    let url = format!("{}/scanned_parcel/1", busway.broker);
    let mut poisoned = envelope("u2");
    poisoned["metadata"]["event_id"] = json!("poisoned");
    call(&producer, reqwest::Method::POST, url.clone(), &poisoned).await;
    let mut good = HashSet::new();
    for _ in 0..20 {
        let answer = call(
            &producer,
            reqwest::Method::POST,
            url.clone(),
            &envelope("u2"),
        )
        .await;
        good.insert(
            answer["event_id"]
                .as_str()
                .expect("an event_id")
                .to_string(),
        );
    }
    let started = Instant::now();
    loop {
        let attempts = deliveries
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())["poisoned"];
        let delivered: HashSet<String> = deliveries.snapshot().into_keys().collect();
        let scheduled = scheduled_retries(data.path());
        if delivered == good
            && attempts >= 2
            && scheduled.iter().any(|(id, n)| id == "poisoned" && *n >= 2)
        {
            break;
        }
        assert!(
            started.elapsed() < REDELIVERY_TIMEOUT,
            "the good events are delivered while the poisoned one is retried: {} of {} delivered, {attempts} attempts, schedule {scheduled:?}; log:\n{}",
            delivered.len(),
            good.len(),
            busway.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    busway.child.kill().expect("busway is killed");
    busway.child.wait().expect("busway is reaped");
    let kept = scheduled_retries(data.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    let attempts_before = kept[0].1;
    drop(busway);

    // Cured while the broker is down: the kept retry is what delivers it.
    deliveries
        .poisoned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let busway = Busway::up(data.path(), logs.path().join("restarted.log"));
    let started = Instant::now();
    while !deliveries.snapshot().contains_key("poisoned") {
        assert!(
            started.elapsed() < REDELIVERY_TIMEOUT,
            "the scheduled retry did not resume after the restart; log:\n{}",
            busway.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    while !scheduled_retries(data.path()).is_empty() {
        assert!(
            started.elapsed() < REDELIVERY_TIMEOUT,
            "the delivered retry stays scheduled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(attempts_before >= 2, "{attempts_before}");
    drop(busway);
    server.abort();
}
