//! Delivery when consumers misbehave, measured on the real `busway up` binary driven over HTTP as
//! a user would: the bench registers `scanned_parcel`, subscribes its own HTTP consumer (a small
//! server in this process), publishes to the broker API and reads the broker's memory from
//! `/proc/{pid}/status`. Each scenario runs on a fresh data dir.
//!
//! - `--scenario poison`: `--events` good events (default 10,000) published at `--rate` per second
//!   (default 1,000), once alone and once with one event that the consumer always answers 500;
//!   the good events' publish-to-delivery p99 of both runs and their ratio (goal ≤ 2).
//! - `--scenario slow`: a consumer serving one request at a time, `--service-ms` (default 5) per
//!   request; `--events` (default 3,000) published at once: events/s delivered (goal ≥ 150) and
//!   the dead letters (goal 0), and how busy the consumer was: its own pace is the ceiling
//!   (5 ms of sleep plus the request's handling).
//! - `--scenario outage`: the consumer is down for `--down-seconds` (default 300) while `--events`
//!   (default 500,000) are published, then comes back: the broker's peak RSS (goal ≤ 150 MB) and
//!   whether every event arrived (and how long after the consumer came back).
//!
//! `cargo bench -p busway-local --bench delivery -- --scenario outage --events 50000 --down-seconds 30`

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{arg, free_port, num, percentile};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const PUBLISHERS: u64 = 8;
const POISON: &str = "poison";

/// A `busway up` process on free loopback ports, its data dir, its portal and broker.
const ADMIN_KEY: &str = "bwk_bench_0123456789abcdef0123456789abcdef";

struct Busway {
    child: Child,
    portal: String,
    broker: String,
    http: reqwest::Client,
    /// A producer key of `demo`: only producer keys publish.
    producer: String,
    _data: tempfile::TempDir,
}

impl Busway {
    async fn up() -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let (portal, broker) = (free_port()?, free_port()?);
        let child = Command::new(env!("CARGO_BIN_EXE_busway"))
            .arg("up")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--portal-addr", &portal.to_string()])
            .args(["--broker-addr", &broker.to_string()])
            .env("RUST_LOG", "error")
            .env("BUSWAY_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting busway up")?;
        let mut busway = Self {
            child,
            portal: format!("http://{portal}"),
            broker: format!("http://{broker}"),
            // The platform-admin key on every portal call.
            http: reqwest::Client::builder()
                .default_headers(reqwest::header::HeaderMap::from_iter([(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {ADMIN_KEY}").parse()?,
                )]))
                .build()?,
            producer: String::new(),
            _data: data,
        };
        let started = Instant::now();
        while busway.get("/events").await.is_err() {
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "busway up did not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let made = busway
            .post(
                "/keys",
                json!({"team": "platform", "role": "producer", "application": "demo"}),
            )
            .await?;
        busway.producer = made["key"].as_str().context("a key")?.to_string();
        Ok(busway)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let answer = self
            .http
            .get(format!("{}{path}", self.portal))
            .send()
            .await?;
        ensure!(
            answer.status().is_success(),
            "GET {path}: {}",
            answer.status()
        );
        Ok(answer.json().await?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        support::post(&self.http, &self.portal, path, body).await
    }

    /// The broker's resident memory and its peak, in bytes.
    fn rss(&self) -> (u64, u64) {
        let status = self
            .child
            .id()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn wait_for_deployment(&self, id: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let d = self.get(&format!("/deployments/{id}")).await?;
            match d["status"].as_str() {
                Some("SUCCEEDED") => return Ok(()),
                Some("FAILED") => anyhow::bail!("deployment failed: {d}"),
                _ => {}
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "deployment {id} hangs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `scanned_parcel` v1 and one HTTPS subscription to `consumer`; returns its id once live.
    async fn subscribe(&self, consumer: SocketAddr) -> anyhow::Result<String> {
        let created = self
            .post(
                "/events",
                json!({"application": "demo", "event_type": "scanned_parcel",
                       "description": "Scanned parcel", "connection_type": "HTTPS",
                       "data": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}),
            )
            .await?;
        self.wait_for_deployment(created["deployment_id"].as_str().context("a deployment")?)
            .await?;
        let subscribed = self
            .post(
                "/subscriptions",
                json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "u1",
                       "connection_type": "HTTPS", "connection_string": format!("http://{consumer}/events")}),
            )
            .await?;
        self.wait_for_deployment(
            subscribed["deployment_id"]
                .as_str()
                .context("a deployment")?,
        )
        .await?;
        Ok(subscribed["id"]
            .as_str()
            .context("a subscription id")?
            .to_string())
    }

    async fn dead_letters(&self, subscription: &str) -> anyhow::Result<usize> {
        let mut count = 0;
        let mut token = String::new();
        loop {
            let page = self
                .get(&format!(
                    "/subscriptions/{subscription}/dead-letters?limit=100{token}"
                ))
                .await?;
            count += page["dead_letters"].as_array().map_or(0, Vec::len);
            match page["next_token"].as_str() {
                Some(next) => token = format!("&next_token={next}"),
                None => return Ok(count),
            }
        }
    }

    /// Publishes events `ids` from `PUBLISHERS` connections, `rate` per second in all (0: as fast
    /// as the broker takes them), waiting out 503s; returns each event's publish time.
    async fn publish(
        &self,
        ids: Vec<String>,
        rate: u64,
        sent: Arc<Mutex<Sent>>,
    ) -> anyhow::Result<()> {
        let ids = Arc::new(ids);
        let start = Instant::now();
        let mut publishers = tokio::task::JoinSet::new();
        for worker in 0..PUBLISHERS {
            let (ids, sent) = (ids.clone(), sent.clone());
            let (http, url, producer) = (
                self.http.clone(),
                format!("{}/scanned_parcel/1", self.broker),
                self.producer.clone(),
            );
            publishers.spawn(async move {
                for (i, id) in ids.iter().enumerate().skip(worker as usize).step_by(PUBLISHERS as usize) {
                    if rate > 0 {
                        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let body = json!({"metadata": {"event_id": id, "event_attributes": {"source": "bench", "target": "u1"}},
                                      "data": {"n": i}});
                    loop {
                        let at = Instant::now();
                        let answer = http
                            .post(&url)
                            .bearer_auth(&producer)
                            .json(&body)
                            .send()
                            .await?;
                        match answer.status() {
                            StatusCode::OK => {
                                sent.lock().unwrap_or_else(|p| p.into_inner()).published(id, at);
                                break;
                            }
                            StatusCode::SERVICE_UNAVAILABLE => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            other => anyhow::bail!("publishing answered {other}"),
                        }
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = publishers.join_next().await {
            done??;
        }
        Ok(())
    }
}

/// Publish and delivery times, by event id.
#[derive(Default)]
struct Sent {
    published: std::collections::HashMap<String, Instant>,
    /// Delivered before the publisher saw its 200.
    early: std::collections::HashMap<String, Instant>,
    latencies: Vec<Duration>,
    delivered: HashSet<String>,
    /// Time the one-at-a-time consumer spent serving requests.
    busy: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Sent {
    fn published(&mut self, id: &str, at: Instant) {
        match self.early.remove(id) {
            Some(arrived) => self.latencies.push(arrived.saturating_duration_since(at)),
            None => {
                self.published.insert(id.to_string(), at);
            }
        }
    }

    fn delivered(&mut self, id: &str, at: Instant) {
        if !self.delivered.insert(id.to_string()) {
            return;
        }
        self.first.get_or_insert(at);
        self.last = Some(at);
        match self.published.remove(id) {
            Some(sent) => self.latencies.push(at - sent),
            None => {
                self.early.insert(id.to_string(), at);
            }
        }
    }
}

/// How the consumer answers.
#[derive(Clone, Copy)]
struct Behaviour {
    /// One request at a time, each taking this long.
    serial: Option<Duration>,
}

/// The consumer at `listener`: records every good delivery, answers 500 to the poisoned event.
fn consumer(listener: TcpListener, sent: Arc<Mutex<Sent>>, behaviour: Behaviour) {
    let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: Bytes| {
            let (sent, one_at_a_time) = (sent.clone(), one_at_a_time.clone());
            async move {
                let _turn = match behaviour.serial {
                    Some(_) => Some(one_at_a_time.lock().await),
                    None => None,
                };
                let serving = Instant::now();
                if let Some(service) = behaviour.serial {
                    // A thread's sleep: tokio's timer rounds up to the next millisecond.
                    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(service)).await;
                }
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = event["detail"]["metadata"]["event_id"]
                    .as_str()
                    .unwrap_or_default();
                if id == POISON {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let mut sent = sent.lock().unwrap_or_else(|p| p.into_inner());
                sent.delivered(id, Instant::now());
                sent.busy += serving.elapsed();
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
}

fn ids(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("e{i}")).collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Waits until `n` distinct events arrived, or `limit` passed; returns how many did.
async fn wait_delivered(sent: &Mutex<Sent>, n: usize, limit: Duration) -> usize {
    let started = Instant::now();
    loop {
        let got = sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .delivered
            .len();
        if got >= n || started.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One poison run: the good events' publish-to-delivery p99.
async fn poison_run(events: u64, rate: u64, poisoned: bool) -> anyhow::Result<Duration> {
    let busway = Busway::up().await?;
    let sent = Arc::new(Mutex::new(Sent::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    consumer(listener, sent.clone(), Behaviour { serial: None });
    busway.subscribe(addr).await?;
    let mut ids = ids(events);
    if poisoned {
        // Early in the stream, so that it is retried while the rest flows.
        ids.insert(ids.len().min(100), POISON.to_string());
    }
    busway.publish(ids, rate, sent.clone()).await?;
    let got = wait_delivered(&sent, events as usize, Duration::from_secs(120)).await;
    ensure!(
        got == events as usize,
        "{got} of {events} good events arrived"
    );
    let mut latencies =
        std::mem::take(&mut sent.lock().unwrap_or_else(|p| p.into_inner()).latencies);
    latencies.sort();
    println!(
        "  {}: {events} good events at {rate}/s, publish-to-delivery p50 {} p99 {} max {}",
        if poisoned {
            "with one poisoned event"
        } else {
            "reference"
        },
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    Ok(percentile(&latencies, 0.99))
}

async fn poison(events: u64, rate: u64) -> anyhow::Result<()> {
    println!("poison: one event the consumer always answers 500, among {events} good ones");
    let reference = poison_run(events, rate, false).await?;
    let poisoned = poison_run(events, rate, true).await?;
    let ratio = poisoned.as_secs_f64() / reference.as_secs_f64().max(1e-6);
    println!(
        "  p99 with the poisoned event / reference: {ratio:.2} (goal ≤ 2: {})",
        if ratio <= 2.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

async fn slow(events: u64, service: Duration) -> anyhow::Result<()> {
    println!(
        "slow: a consumer serving one request at a time, {} each, {events} events",
        ms(service)
    );
    let busway = Busway::up().await?;
    let sent = Arc::new(Mutex::new(Sent::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    consumer(
        listener,
        sent.clone(),
        Behaviour {
            serial: Some(service),
        },
    );
    let subscription = busway.subscribe(addr).await?;
    busway.publish(ids(events), 0, sent.clone()).await?;
    let limit = service * u32::try_from(events)? * 4 + Duration::from_secs(60);
    let got = wait_delivered(&sent, events as usize, limit).await;
    let (first, last, busy) = {
        let s = sent.lock().unwrap_or_else(|p| p.into_inner());
        (s.first, s.last, s.busy)
    };
    let span = match (first, last) {
        (Some(f), Some(l)) => l - f,
        _ => Duration::ZERO,
    };
    let rate = got as f64 / span.as_secs_f64().max(1e-6);
    let dead = busway.dead_letters(&subscription).await?;
    println!(
        "  {got} of {events} delivered in {:.1} s: {rate:.0} events/s (goal ≥ 150: {}), {dead} dead letters (goal 0)",
        span.as_secs_f64(),
        if rate >= 150.0 { "met" } else { "NOT met" }
    );
    println!(
        "  the consumer was busy {:.0}% of that time, {:.2} ms a request: its own pace is {:.0}/s",
        100.0 * busy.as_secs_f64() / span.as_secs_f64().max(1e-6),
        busy.as_secs_f64() * 1000.0 / got.max(1) as f64,
        got as f64 / busy.as_secs_f64().max(1e-6)
    );
    Ok(())
}

async fn outage(events: u64, down: Duration) -> anyhow::Result<()> {
    println!(
        "outage: the consumer down for {} s while {events} events are published",
        down.as_secs()
    );
    let busway = Arc::new(Busway::up().await?);
    let sent = Arc::new(Mutex::new(Sent::default()));
    // The consumer's address, not listening until it comes back: connections are refused.
    let addr = free_port()?;
    let subscription = busway.subscribe(addr).await?;
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (busway, peak) = (busway.clone(), peak.clone());
        async move {
            loop {
                peak.fetch_max(busway.rss().0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let started = Instant::now();
    busway.publish(ids(events), 0, sent.clone()).await?;
    let published = started.elapsed();
    let (rss_published, _) = busway.rss();
    println!(
        "  published in {:.1} s ({:.0}/s); broker RSS then {}",
        published.as_secs_f64(),
        events as f64 / published.as_secs_f64(),
        mb(rss_published)
    );
    tokio::time::sleep(down.saturating_sub(published)).await;
    let back = Instant::now();
    consumer(
        TcpListener::bind(addr).await?,
        sent.clone(),
        Behaviour { serial: None },
    );
    let got = wait_delivered(&sent, events as usize, Duration::from_secs(3600)).await;
    let caught_up = back.elapsed();
    sampler.abort();
    let (_, hwm) = busway.rss();
    let peak = peak.load(Ordering::Relaxed);
    let dead = busway.dead_letters(&subscription).await?;
    println!(
        "  {got} of {events} arrived {:.1} s after the consumer came back ({:.0}/s), {dead} dead letters",
        caught_up.as_secs_f64(),
        got as f64 / caught_up.as_secs_f64()
    );
    println!(
        "  broker peak RSS {} (sampled every 100 ms; VmHWM {}); goal ≤ 150 MB: {}",
        mb(peak),
        mb(hwm),
        if hwm <= 150_000_000 && got == events as usize {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let scenario = arg("--scenario").unwrap_or_else(|| "all".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    ensure!(
        Path::new("/proc/self/status").exists(),
        "the broker's memory is read from /proc"
    );
    runtime.block_on(async {
        if matches!(scenario.as_str(), "poison" | "all") {
            poison(num("--events", 10_000), num("--rate", 1_000)).await?;
        }
        if matches!(scenario.as_str(), "slow" | "all") {
            slow(
                num("--events", 3_000),
                Duration::from_millis(num("--service-ms", 5)),
            )
            .await?;
        }
        if matches!(scenario.as_str(), "outage" | "all") {
            outage(
                num("--events", 500_000),
                Duration::from_secs(num("--down-seconds", 300)),
            )
            .await?;
        }
        anyhow::Ok(())
    })
}
