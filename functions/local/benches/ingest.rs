//! Broker ingest over loopback: starts the local host on a temp dir, deploys the seed's
//! scanned_parcel, then drives `POST /scanned_parcel/1` from keep-alive connections and reports
//! accepted events/s and latency percentiles. Load generator and broker share this machine's
//! cores, so the figures are a floor for the broker alone.
//!
//! `cargo bench -p busway-local --bench ingest -- [--connections N] [--seconds S]`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use busway_local::{Config, Running};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const EVENT: &str = r#"{"metadata":{"event_attributes":{"source":"scanner-17","target":"u2"}},"data":{"dest_postal_code":"1234AB","dest_house":7,"parcel_weight":1.5}}"#;

const CREATE: &str = r#"{"application":"demo","event_type":"scanned_parcel","description":"Scanned parcel on the workshop","connection_type":"HTTPS",
 "data":{"type":"object","properties":{"dest_postal_code":{"type":"string"},"dest_house":{"type":"integer"},"parcel_weight":{"type":"number"}},
 "required":["dest_postal_code","dest_house","parcel_weight"]}}"#;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    path: &str,
    body: &'static str,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let request = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let connections = arg("--connections", 32);
    let seconds = arg("--seconds", 10);
    let server_threads = arg("--server-threads", 2);
    let client_threads = arg("--client-threads", 1);
    let data = tempfile::tempdir()?;

    // Broker and load generator get their own runtimes so neither starves the other's tasks.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads as usize)
        .enable_all()
        .build()?;
    let running = server.block_on(Running::start(Config::new(
        data.path().to_path_buf(),
        "127.0.0.1:0".parse()?,
        "127.0.0.1:0".parse()?,
    )))?;
    let (portal, broker) = (running.portal_addr, running.broker_addr);

    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads as usize)
        .enable_all()
        .build()?;
    let (accepted, mut latencies, elapsed) = client.block_on(async move {
        let mut admin = connect(portal).await?;
        let (status, _) = send(&mut admin, portal, "/events", CREATE).await?;
        anyhow::ensure!(status == 201, "creating the event type answered {status}");
        let mut probe = connect(broker).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while send(&mut probe, broker, "/scanned_parcel/1", EVENT)
            .await?
            .0
            != 200
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the route did not deploy within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let mut workers = Vec::new();
        for _ in 0..connections {
            workers.push(tokio::spawn(async move {
                let mut sender = connect(broker).await?;
                let mut latencies = Vec::with_capacity(200_000);
                let mut accepted = 0u64;
                while Instant::now() < end {
                    let sent = Instant::now();
                    let (status, _) = send(&mut sender, broker, "/scanned_parcel/1", EVENT).await?;
                    latencies.push(sent.elapsed());
                    anyhow::ensure!(status == 200, "the broker answered {status}");
                    accepted += 1;
                }
                anyhow::Ok((accepted, latencies))
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
    server.block_on(running.stop());

    latencies.sort_unstable();
    let rate = accepted as f64 / elapsed.as_secs_f64();
    println!(
        "broker ingest, scanned_parcel envelope, {connections} keep-alive connections, {seconds} s"
    );
    println!("accepted events: {accepted} ({rate:.0}/s)");
    for (label, p) in [
        ("p50", 0.50),
        ("p90", 0.90),
        ("p99", 0.99),
        ("p99.9", 0.999),
    ] {
        println!(
            "{label}: {:.2} ms",
            percentile(&latencies, p).as_secs_f64() * 1000.0
        );
    }
    println!(
        "max: {:.2} ms",
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    Ok(())
}
