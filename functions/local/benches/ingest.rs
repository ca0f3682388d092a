//! The broker over loopback, in one process with its load generator (so the figures are a
//! floor: both share this machine's cores).
//!
//! - `--mode ingest`: `POST /scanned_parcel/1` from keep-alive connections: accepted events/s and
//!   ingest latency percentiles.
//! - `--mode e2e --subscriptions N`: the same, with N HTTP subscriptions (target units u0..uN-1,
//!   events spread round-robin over them, so each event matches one rule among N) delivering to a
//!   local consumer: events/s delivered, ingest p99 and publish-to-delivery p99.
//! - `--mode bare`: a bare axum server that parses the same body and answers the same JSON: the
//!   HTTP limit of the box, to compare against.
//!
//! `cargo bench -p busway-local --bench ingest -- --mode e2e --subscriptions 100 --seconds 10`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use busway_local::{Config, Running};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

// The same allocator as the busway binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    body: Bytes,
    key: &str,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// The platform-admin key the benchmarked busway starts with; it registers the event type and
/// makes the producer key that publishes.
const ADMIN_KEY: &str = "bwk_bench_0123456789abcdef0123456789abcdef";

fn event(target: &str, event_id: &str) -> Bytes {
    Bytes::from(
        json!({"metadata": {"event_attributes": {"source": "scanner-17", "target": target}, "event_id": event_id},
               "data": {"dest_postal_code": "1234AB", "dest_house": 7, "parcel_weight": 1.5}})
        .to_string(),
    )
}

const CREATE: &str = r#"{"application":"demo","event_type":"scanned_parcel","description":"Scanned parcel on the workshop","connection_type":"HTTPS",
 "data":{"type":"object","properties":{"dest_postal_code":{"type":"string"},"dest_house":{"type":"integer"},"parcel_weight":{"type":"number"}},
 "required":["dest_postal_code","dest_house","parcel_weight"]}}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Publish times by event id, and the delivery latencies the consumer measured.
#[derive(Default)]
struct Deliveries {
    sent: HashMap<String, Instant>,
    latencies: Vec<Duration>,
    early: HashMap<String, Instant>,
}

async fn consumer(deliveries: Arc<Mutex<Deliveries>>) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: Bytes| {
            let deliveries = deliveries.clone();
            async move {
                let arrived = Instant::now();
                if let Ok(event) = serde_json::from_slice::<Value>(&body)
                    && let Some(id) = event["detail"]["metadata"]["event_id"].as_str()
                {
                    let mut d = deliveries.lock().unwrap_or_else(|p| p.into_inner());
                    match d.sent.get(id).copied() {
                        Some(sent) => d.latencies.push(arrived - sent),
                        // Delivered before the publisher recorded its 200: settle it then.
                        None => {
                            d.early.insert(id.to_string(), arrived);
                        }
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

async fn bare() -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/{event_type}/{version}",
        axum::routing::post(|body: Bytes| async move {
            let parsed: Result<Value, _> = serde_json::from_slice(&body);
            match parsed {
                Ok(_) => (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({"event_id": uuid_like()})),
                ),
                Err(_) => (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({}))),
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn uuid_like() -> String {
    format!("{:032x}", fastrand_u128())
}

fn fastrand_u128() -> u128 {
    (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(..))
}

async fn setup(
    portal: SocketAddr,
    broker: SocketAddr,
    subscriptions: u64,
    consumer: Option<SocketAddr>,
) -> anyhow::Result<String> {
    let mut admin = connect(portal).await?;
    let (status, body) = send(
        &mut admin,
        portal,
        hyper::Method::POST,
        "/events",
        Bytes::from_static(CREATE.as_bytes()),
        ADMIN_KEY,
    )
    .await?;
    ensure!(
        status == 201,
        "creating the event type answered {status}: {body:?}"
    );
    // Only producer keys publish.
    let new_key = json!({"team": "platform", "role": "producer", "application": "demo"});
    let (status, made) = send(
        &mut admin,
        portal,
        hyper::Method::POST,
        "/keys",
        Bytes::from(new_key.to_string()),
        ADMIN_KEY,
    )
    .await?;
    ensure!(status == 201, "making the producer key answered {status}");
    let made: Value = serde_json::from_slice(&made)?;
    let producer = made["key"].as_str().context("a key")?.to_string();
    let producer = producer.as_str();
    let mut last = None;
    for unit in 0..subscriptions {
        let consumer = consumer.context("e2e needs a consumer")?;
        let body = json!({"event_type": "scanned_parcel", "version": 1, "target_unit": format!("u{unit}"),
                          "connection_type": "HTTPS", "connection_string": format!("http://{consumer}/events")});
        let (status, answer) = send(
            &mut admin,
            portal,
            hyper::Method::POST,
            "/subscriptions",
            Bytes::from(body.to_string()),
            ADMIN_KEY,
        )
        .await?;
        ensure!(status == 201, "subscribing answered {status}: {answer:?}");
        let answer: Value = serde_json::from_slice(&answer)?;
        last = answer["deployment_id"].as_str().map(str::to_string);
    }
    // Deployments run in order: when the last one succeeded, every route and rule is live.
    let deadline = Instant::now() + Duration::from_secs(300);
    if let Some(id) = last {
        loop {
            let (_, body) = send(
                &mut admin,
                portal,
                hyper::Method::GET,
                &format!("/deployments/{id}"),
                Bytes::new(),
                ADMIN_KEY,
            )
            .await?;
            let d: Value = serde_json::from_slice(&body)?;
            if d["status"] == "SUCCEEDED" {
                break;
            }
            ensure!(
                d["status"] != "FAILED" && Instant::now() < deadline,
                "subscription deployment did not succeed: {d}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut probe = connect(broker).await?;
    loop {
        let (status, _) = send(
            &mut probe,
            broker,
            hyper::Method::POST,
            "/scanned_parcel/1",
            event("probe", &uuid_like()),
            producer,
        )
        .await?;
        if status == 200 {
            return Ok(producer.to_string());
        }
        ensure!(Instant::now() < deadline, "the route did not deploy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let mode = arg("--mode").unwrap_or_else(|| "ingest".into());
    let connections = num("--connections", 32);
    let seconds = num("--seconds", 10);
    let subscriptions = if mode == "e2e" {
        num("--subscriptions", 1).max(1)
    } else {
        0
    };
    let data = tempfile::tempdir()?;

    // Broker and load generator get their own runtimes so neither starves the other's tasks.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));

    let (target, running, producer) = if mode == "bare" {
        (server.block_on(bare())?, None, String::new())
    } else {
        let any = "127.0.0.1:0".parse()?;
        let mut config = Config::new(data.path().to_path_buf(), any, any);
        config.admin_key = Some(ADMIN_KEY.into());
        let running = server.block_on(Running::start(config))?;
        let consumer_addr = if subscriptions > 0 {
            Some(client.block_on(consumer(deliveries.clone()))?)
        } else {
            None
        };
        let producer = client.block_on(setup(
            running.portal_addr,
            running.broker_addr,
            subscriptions,
            consumer_addr,
        ))?;
        (running.broker_addr, Some(running), producer)
    };
    let producer = Arc::new(producer);

    let d = deliveries.clone();
    let (accepted, mut latencies, elapsed) = client.block_on(async move {
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let mut workers = Vec::new();
        for worker in 0..connections {
            let (d, producer) = (d.clone(), producer.clone());
            workers.push(tokio::spawn(async move {
                let mut sender = connect(target).await?;
                let mut latencies = Vec::with_capacity(200_000);
                let mut n = 0u64;
                while Instant::now() < end {
                    let id = format!("w{worker}-{n}");
                    let unit = if subscriptions > 0 {
                        format!("u{}", (worker * 7919 + n) % subscriptions)
                    } else {
                        "u2".into()
                    };
                    let sent = Instant::now();
                    let (status, _) = send(
                        &mut sender,
                        target,
                        hyper::Method::POST,
                        "/scanned_parcel/1",
                        event(&unit, &id),
                        &producer,
                    )
                    .await?;
                    latencies.push(sent.elapsed());
                    ensure!(status == 200, "the broker answered {status}");
                    if subscriptions > 0 {
                        let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
                        match d.early.remove(&id) {
                            Some(arrived) => {
                                d.latencies.push(arrived.saturating_duration_since(sent))
                            }
                            None => {
                                d.sent.insert(id, sent);
                            }
                        }
                    }
                    n += 1;
                }
                anyhow::Ok((n, latencies))
            }));
        }
        let mut accepted = 0;
        let mut all = Vec::new();
        for worker in workers {
            let (n, mut l) = worker.await??;
            accepted += n;
            all.append(&mut l);
        }
        anyhow::Ok((accepted, all, start.elapsed()))
    })?;

    // Let deliveries drain, then measure how many arrived and when.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let count = deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latencies
            .len() as u64;
        if subscriptions == 0 || count >= accepted || Instant::now() > drain_deadline {
            break count;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(running) = running {
        server.block_on(running.stop());
    }

    latencies.sort_unstable();
    println!(
        "mode {mode}, {connections} keep-alive connections, {seconds} s, {subscriptions} subscription(s)"
    );
    println!(
        "accepted events: {accepted} ({:.0}/s)",
        accepted as f64 / elapsed.as_secs_f64()
    );
    println!(
        "ingest latency: p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 0.999)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    if subscriptions > 0 {
        let mut delivery = std::mem::take(
            &mut deliveries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .latencies,
        );
        delivery.sort_unstable();
        println!(
            "delivered events: {delivered} of {accepted} ({:.0}/s over the load window)",
            delivered.min(accepted) as f64 / elapsed.as_secs_f64()
        );
        println!(
            "publish-to-delivery: p50 {} · p99 {} · max {}",
            ms(percentile(&delivery, 0.5)),
            ms(percentile(&delivery, 0.99)),
            ms(delivery.last().copied().unwrap_or_default())
        );
    }
    Ok(())
}
