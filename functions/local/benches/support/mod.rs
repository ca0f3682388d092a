//! What the benchmarks that drive `busway up` over HTTP share: their arguments, free ports,
//! percentiles and the portal's JSON calls.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::ensure;
use serde_json::Value;

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// `POST {portal}{path}` with a JSON body; the answer's JSON, or an error naming its status.
pub async fn post(
    http: &reqwest::Client,
    portal: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let answer = http
        .post(format!("{portal}{path}"))
        .json(&body)
        .send()
        .await?;
    ensure!(
        answer.status().is_success(),
        "POST {path}: {}",
        answer.status()
    );
    Ok(answer.json().await?)
}
