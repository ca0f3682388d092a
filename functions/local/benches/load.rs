//! The broker's ingest and end-to-end delivery against the HTTP limit of this machine, as a user
//! would measure them: `wrk` (an external load generator, `scripts/setup.sh` installs it) drives
//! a bare axum reference server and the real `busway up` binary with the same requests, and one
//! table compares them. Each process is separate: this bench only orchestrates, and hosts the
//! consumer of the end-to-end runs.
//!
//! - reference: this bench re-run as `--reference ADDR`, a bare axum server that parses the
//!   seed's envelope and answers `{"event_id"}`: what HTTP alone costs here.
//! - durable reference: `--reference ADDR --durable DIR --fsync MODE [--relay URL]`, the same
//!   server plus the least a durable broker does (a group-committed append, flushed as MODE
//!   says; with `--relay`, a POST of each event to the end-to-end consumer): what this
//!   machine's disk and HTTP leave for any broker's own work.
//! - ingest: `POST /scanned_parcel/1` at 32 and 128 keep-alive connections, for both
//!   `--fsync always` and `--fsync interval=<ms>`; events/s are the 200s per second.
//! - end to end, in both fsync modes: 1 or 1,000 HTTPS subscriptions (target units u0..uN-1, events spread over them
//!   so each event matches one rule among N) to a consumer in this process; events/s are the
//!   deliveries that arrived within the load window, p50/p99 publish-to-delivery (wrk stamps the
//!   send time into each event_id).
//!
//! Each busway run is paired with reference runs made just before it, with as many connections:
//! this VM's speed drifts by up to a fifth between minutes, so a ratio compares runs seconds
//! apart, not the first minute's reference with the last minute's broker.
//!
//! `cargo bench -p busway-local --bench load -- --seconds 8 --interval-ms 10 [--only ingest|e2e]`

mod support;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use axum::body::Bytes;
use axum::response::IntoResponse as _;
use busway_local::eventlog::Fsync;
use serde_json::{Value, json};
use support::{arg, free_port, num, percentile};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// The platform-admin key of the benchmarked busway: it registers and makes the producer key.
const ADMIN_KEY: &str = "bwk_bench_0123456789abcdef0123456789abcdef";
/// Each subscription's deliveries in flight: the most a subscription may ask for (the default,
/// 4, caps one subscription near 4 deliveries per round trip).
const MAX_IN_FLIGHT: u32 = 100;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wrk/publish.lua");

async fn answers(addr: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{addr} does not answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The reference: the same route, a JSON parse of the body and an id in the answer, nothing else.
fn reference(addr: SocketAddr) -> anyhow::Result<()> {
    serve_publish(
        addr,
        axum::routing::post(|body: Bytes| async move {
            match serde_json::from_slice::<Value>(&body) {
                Ok(_) => (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({"event_id": uuid::Uuid::new_v4().to_string()})),
                ),
                Err(_) => (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({}))),
            }
        }),
    )
}

/// Serves `publish` at the broker's publish route on `addr`, on a runtime of its own.
fn serve_publish(addr: SocketAddr, publish: axum::routing::MethodRouter) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/{event_type}/{version}", publish);
    tokio::runtime::Runtime::new()?.block_on(async move {
        axum::serve(TcpListener::bind(addr).await?, app).await?;
        anyhow::Ok(())
    })
}

/// The durable reference: the reference, plus the least a durable broker does. Each body is
/// appended to a file in `dir`; one thread writes whatever arrived meanwhile and, with
/// `--fsync always`, answers once an `fdatasync` covering it returned (waiting requests share
/// a flush, as busway's log writer shares its commits); with `interval=<ms>` it answers once
/// written, and flushes with the first write after the interval has passed. With `relay`, each
/// accepted body is then posted to that URL as an event's `detail`, at most [`MAX_IN_FLIGHT`]
/// at once: the least a broker that delivers over HTTP does. No index, no deduplication, no
/// schema, no key.
fn durable_reference(
    addr: SocketAddr,
    dir: &std::path::Path,
    fsync: &str,
    relay: Option<String>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    type Waiting = (Bytes, tokio::sync::oneshot::Sender<()>);
    let every = match fsync.parse::<Fsync>().map_err(anyhow::Error::msg)? {
        Fsync::Always => None,
        Fsync::Interval(every) => Some(every),
    };
    // Shared, so that each request's copy of the handler does not copy the URL.
    let relay: Option<Arc<str>> = relay.map(Into::into);
    let mut file = std::fs::File::create(dir.join("log"))?;
    let (tx, rx) = std::sync::mpsc::channel::<Waiting>();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let (mut buf, mut flushed_at) = (Vec::new(), Instant::now());
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            buf.clear();
            for (body, _) in &batch {
                buf.extend_from_slice(body);
                buf.push(b'\n');
            }
            file.write_all(&buf)?;
            if every.is_none_or(|every| flushed_at.elapsed() >= every) {
                file.sync_data()?;
                flushed_at = Instant::now();
            }
            for (_, answer) in batch {
                let _ = answer.send(());
            }
        }
        Ok(())
    });
    let http = reqwest::Client::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT as usize));
    serve_publish(
        addr,
        axum::routing::post(move |body: Bytes| async move {
            if serde_json::from_slice::<Value>(&body).is_err() {
                return axum::http::StatusCode::BAD_REQUEST.into_response();
            }
            let (logged, written) = tokio::sync::oneshot::channel();
            if tx.send((body.clone(), logged)).is_err() || written.await.is_err() {
                return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            if let Some(url) = relay {
                let in_flight = in_flight.clone();
                tokio::spawn(async move {
                    let permit = in_flight.acquire_owned().await;
                    let mut event = br#"{"detail":"#.to_vec();
                    event.extend_from_slice(&body);
                    event.push(b'}');
                    let _ = http.post(&*url).body(event).send().await;
                    drop(permit);
                });
            }
            axum::Json(json!({"event_id": uuid::Uuid::new_v4().to_string()})).into_response()
        }),
    )
}

/// What one wrk run measured.
struct Load {
    ok_per_s: f64,
    p50: Duration,
    p99: Duration,
    ok: u64,
    window: (Instant, Instant),
}

/// `wrk` with `connections` keep-alive connections for `seconds` against `url`, sending `key`;
/// `units` as in publish.lua.
async fn wrk(
    url: &str,
    key: &str,
    connections: u64,
    seconds: u64,
    units: u64,
) -> anyhow::Result<Load> {
    let started = Instant::now();
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--timeout", "10s", "-s", SCRIPT, url])
        .env("BUSWAY_BENCH_KEY", key)
        .env("BUSWAY_BENCH_UNITS", units.to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running wrk (scripts/setup.sh installs it)")?;
    let ended = Instant::now();
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("busway-bench "))
        .with_context(|| format!("no summary from wrk: {stdout}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} in {line}"))
    };
    let (requests, refused, errors) = (
        field("requests")?,
        field("non2xx")?,
        field("socket_errors")?,
    );
    ensure!(
        errors == 0,
        "{errors} socket errors against {url}: {stdout}"
    );
    let ok = requests - refused;
    Ok(Load {
        ok_per_s: ok as f64 / (field("duration_us")? as f64 / 1e6),
        p50: Duration::from_micros(field("p50_us")?),
        p99: Duration::from_micros(field("p99_us")?),
        ok,
        window: (started, ended),
    })
}

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
    /// `busway up --fsync fsync` on a fresh data dir on this machine's disk, with
    /// `scanned_parcel` v1 deployed.
    async fn up(fsync: &str) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let (portal, broker) = (free_port()?, free_port()?);
        let child = Command::new(env!("CARGO_BIN_EXE_busway"))
            .arg("up")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--portal-addr", &portal.to_string()])
            .args(["--broker-addr", &broker.to_string()])
            .args(["--fsync", fsync])
            .env("RUST_LOG", "error")
            .env("BUSWAY_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting busway up")?;
        answers(portal).await?;
        let mut busway = Self {
            child,
            portal: format!("http://{portal}"),
            broker: format!("http://{broker}/scanned_parcel/1"),
            http: reqwest::Client::builder()
                .default_headers(reqwest::header::HeaderMap::from_iter([(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {ADMIN_KEY}").parse()?,
                )]))
                .build()?,
            producer: String::new(),
            _data: data,
        };
        let made = busway
            .post(
                "/keys",
                json!({"team": "platform", "role": "producer", "application": "demo"}),
            )
            .await?;
        busway.producer = made["key"].as_str().context("a key")?.to_string();
        let created = busway
            .post(
                "/events",
                json!({"application": "demo", "event_type": "scanned_parcel",
                   "description": "Scanned parcel on the workshop", "connection_type": "HTTPS",
                   "data": {"type": "object",
                            "properties": {"dest_postal_code": {"type": "string"}, "dest_house": {"type": "integer"},
                                           "parcel_weight": {"type": "number"}},
                            "required": ["dest_postal_code", "dest_house", "parcel_weight"]}}),
            )
            .await?;
        busway.deployed(&created).await?;
        Ok(busway)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        support::post(&self.http, &self.portal, path, body).await
    }

    async fn deployed(&self, created: &Value) -> anyhow::Result<()> {
        let id = created["deployment_id"]
            .as_str()
            .context("a deployment id")?;
        let started = Instant::now();
        loop {
            let d: Value = self
                .http
                .get(format!("{}/deployments/{id}", self.portal))
                .send()
                .await?
                .json()
                .await?;
            match d["status"].as_str() {
                Some("SUCCEEDED") => return Ok(()),
                Some("FAILED") => bail!("deployment failed: {d}"),
                _ => {}
            }
            ensure!(
                started.elapsed() < Duration::from_secs(600),
                "deployment {id} hangs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// HTTPS subscriptions of units u0..u{n-1} to `consumer`, all deployed.
    async fn subscribe(&self, n: u64, consumer: SocketAddr) -> anyhow::Result<()> {
        let mut last = Value::Null;
        for unit in 0..n {
            last = self
                .post(
                    "/subscriptions",
                    json!({"event_type": "scanned_parcel", "version": "1", "target_unit": format!("u{unit}"),
                           "connection_type": "HTTPS", "connection_string": format!("http://{consumer}/events"),
                           "delivery": {"max_in_flight": MAX_IN_FLIGHT}}),
                )
                .await?;
        }
        // Deployments run in order: when the last one succeeded, every rule is live.
        self.deployed(&last).await
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Deliveries the consumer received: when, and the publish-to-delivery time of each.
#[derive(Default)]
struct Deliveries {
    ids: HashSet<String>,
    arrived: Vec<(Instant, Duration)>,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The subscribers' endpoint; reads the send time wrk put in each event_id (`t<µs>-…`).
async fn consumer(deliveries: Arc<Mutex<Deliveries>>) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: Bytes| {
            let deliveries = deliveries.clone();
            async move {
                let (now, at) = (unix_micros(), Instant::now());
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = event["detail"]["metadata"]["event_id"].as_str();
                let sent =
                    id.and_then(|id| id.strip_prefix('t')?.split('-').next()?.parse::<u64>().ok());
                if let (Some(id), Some(sent)) = (id, sent) {
                    let mut d = deliveries.lock().unwrap_or_else(|p| p.into_inner());
                    if d.ids.insert(id.to_string()) {
                        d.arrived
                            .push((at, Duration::from_micros(now.saturating_sub(sent))));
                    }
                }
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

struct Row {
    what: String,
    reference: f64,
    /// The reference's own p99 in the same run: what the box alone gives at that load.
    reference_p99: Duration,
    /// The durable reference's events/s and p99 in the same run (ingest: its answers; end to
    /// end: its deliveries, publish to delivery).
    durable: f64,
    durable_p99: Duration,
    busway: f64,
    p50: Duration,
    p99: Duration,
    note: String,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn ingest(
    rows: &mut Vec<Row>,
    fsync: &str,
    reference: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let durable = Durable::start(fsync, None).await?;
    let busway = Busway::up(fsync).await?;
    for connections in [32, 128] {
        let reference = wrk(reference, "", connections, seconds, 0).await?;
        let durable_load = wrk(&durable.url, "", connections, seconds, 0).await?;
        let load = wrk(&busway.broker, &busway.producer, connections, seconds, 0).await?;
        rows.push(Row {
            what: format!("ingest, --fsync {fsync}, {connections} connections"),
            reference: reference.ok_per_s,
            reference_p99: reference.p99,
            durable: durable_load.ok_per_s,
            durable_p99: durable_load.p99,
            busway: load.ok_per_s,
            p50: load.p50,
            p99: load.p99,
            note: "ingest latency (wrk)".into(),
        });
    }
    busway.stop().await;
    Ok(())
}

/// The durable reference (`--durable`) in its own process, its log in a fresh directory on
/// the disk that busway's data dir is on.
struct Durable {
    _server: Child,
    url: String,
    _log: tempfile::TempDir,
}

impl Durable {
    async fn start(fsync: &str, relay: Option<SocketAddr>) -> anyhow::Result<Self> {
        let (log, addr) = (tempfile::tempdir()?, free_port()?);
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--reference", &addr.to_string(), "--fsync", fsync])
            .arg("--durable")
            .arg(log.path())
            .kill_on_drop(true);
        if let Some(consumer) = relay {
            command.args(["--relay", &format!("http://{consumer}/events")]);
        }
        let server = command.spawn()?;
        answers(addr).await?;
        Ok(Self {
            _server: server,
            url: format!("http://{addr}/scanned_parcel/1"),
            _log: log,
        })
    }
}

/// What a consumer received of a load: deliveries within its window per second, and p50 and
/// p99 publish to delivery of all of them.
struct Delivered {
    per_s: f64,
    p50: Duration,
    p99: Duration,
    all: usize,
}

/// Waits up to a minute for every answered event of `load` to be delivered, then counts those
/// that arrived within the load's window.
async fn delivered(deliveries: &Mutex<Deliveries>, load: &Load) -> Delivered {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && (deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len() as u64)
            < load.ok
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = std::mem::take(&mut *deliveries.lock().unwrap_or_else(|p| p.into_inner()));
    let (start, end) = load.window;
    let in_window = d
        .arrived
        .iter()
        .filter(|(at, _)| (start..=end).contains(at))
        .count();
    let mut latencies: Vec<Duration> = d.arrived.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    Delivered {
        per_s: in_window as f64 / (end - start).as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        all: d.ids.len(),
    }
}

async fn end_to_end(
    rows: &mut Vec<Row>,
    fsync: &str,
    subscriptions: u64,
    reference: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let relayed = Arc::new(Mutex::new(Deliveries::default()));
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let relay = Durable::start(fsync, Some(consumer(relayed.clone()).await?)).await?;
    let consumer = consumer(deliveries.clone()).await?;
    let busway = Busway::up(fsync).await?;
    busway.subscribe(subscriptions, consumer).await?;
    let reference = wrk(reference, "", 32, seconds, 0).await?;
    let relay_load = wrk(&relay.url, "", 32, seconds, subscriptions).await?;
    let relayed = delivered(&relayed, &relay_load).await;
    // Stopped before busway's run, once it has delivered what it accepted.
    drop(relay);
    let load = wrk(&busway.broker, &busway.producer, 32, seconds, subscriptions).await?;
    let busway_delivered = delivered(&deliveries, &load).await;
    busway.stop().await;
    rows.push(Row {
        what: format!("end to end, --fsync {fsync}, {subscriptions} subscription(s), 32 connections"),
        reference: reference.ok_per_s,
        reference_p99: reference.p99,
        durable: relayed.per_s,
        durable_p99: relayed.p99,
        busway: busway_delivered.per_s,
        p50: busway_delivered.p50,
        p99: busway_delivered.p99,
        note: format!(
            "publish-to-delivery; ingest p99 {}; {} events delivered within 60 s of the load's end, of {} answered 200 (those in flight when wrk stops are delivered uncounted)",
            ms(load.p99),
            busway_delivered.all,
            load.ok
        ),
    });
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Some(addr) = arg("--reference") {
        return match arg("--durable") {
            Some(dir) => durable_reference(
                addr.parse()?,
                dir.as_ref(),
                &arg("--fsync").unwrap_or_else(|| "always".into()),
                arg("--relay"),
            ),
            None => reference(addr.parse()?),
        };
    }
    let seconds = num("--seconds", 8);
    let interval = format!("interval={}", num("--interval-ms", 10));
    // Setup calls and the consumer: one thread, so the two servers keep the rest of the box.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let addr = free_port()?;
        let mut server = Command::new(std::env::current_exe()?)
            .args(["--reference", &addr.to_string()])
            .kill_on_drop(true)
            .spawn()?;
        answers(addr).await?;
        let reference = format!("http://{addr}/scanned_parcel/1");
        let mut rows = Vec::new();
        let only = arg("--only");
        if only.as_deref() != Some("e2e") {
            for fsync in ["always", interval.as_str()] {
                ingest(&mut rows, fsync, &reference, seconds).await?;
            }
        }
        if only.as_deref() != Some("ingest") {
            for fsync in ["always", interval.as_str()] {
                for subscriptions in [1, 1000] {
                    end_to_end(&mut rows, fsync, subscriptions, &reference, seconds).await?;
                }
            }
        }
        server.kill().await?;
        anyhow::Ok(rows)
    })?;
    let mut table = String::from(
        "| what | reference req/s | busway events/s | ratio | p50 | p99 | p50/p99 of | reference p99 | durable reference events/s | ratio to it | its p99 |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        writeln!(
            table,
            "| {} | {} | {} | {:.2}x | {} | {} | {} | {} | {} | {:.2}x | {} |",
            row.what,
            thousands(row.reference),
            thousands(row.busway),
            row.busway / row.reference,
            ms(row.p50),
            ms(row.p99),
            row.note,
            ms(row.reference_p99),
            thousands(row.durable),
            row.busway / row.durable,
            ms(row.durable_p99)
        )?;
    }
    println!(
        "wrk -t1, {seconds} s per run, keep-alive; reference = bare axum, same requests; durable reference = the same plus a group-committed append and fdatasync in the row's fsync mode (end to end: and a POST of each event to a consumer); both run just before each row's busway run\n"
    );
    print!("{table}");
    Ok(())
}
