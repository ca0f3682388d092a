//! The Lambda functions as AWS runs them: each `bootstrap` built by `scripts/build-lambdas.sh`
//! is started as a process against an emulation of the Lambda Runtime API (the protocol
//! `lambda_runtime` speaks: `GET /2018-06-01/runtime/invocation/next`, `POST .../response`), with
//! its AWS calls going to moto server. Measured per function: cold start (process start to the
//! first answer, which includes the first requests to DynamoDB, S3 or EventBridge), warm
//! invocation latency, CPU per warm invocation (user + system time of the process, network
//! client work included), peak RSS, and the zip and binary sizes. Figures in docs/benchmarks.md.
//! An arm64 build (`scripts/build-lambdas.sh --arm64`) runs through qemu-user on an x86_64
//! machine: its figures are the emulator's, comparable only with another emulated build's.
//!
//!   scripts/build-lambdas.sh && cargo bench -p busway-tests --bench lambda \
//!     [-- --runs N --warm N --only FUNCTION]

#[allow(dead_code)]
#[path = "../tests/support/emulated.rs"]
mod emulated;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use busway_core::Version;
use busway_core::deploy::producer_key;
use busway_core::portal::Portal;
use busway_core::ports::{Bucket, ObjectStore};
use busway_local::store::SqliteStore;
use busway_provisioner::STATE_MACHINE_ARN;
use busway_tests::lambda::{Function as Process, api_gateway_event, authorized_as};
use busway_tests::moto::REGION;
use busway_tests::{seed_event, v1_envelope};
use emulated::Account;
use serde_json::{Value, json};
use tower::ServiceExt;

/// User + system CPU time of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in USER_HZ, 100 per second on every supported architecture.
    Duration::from_millis(ticks * 10)
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("reading /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM")
}

struct Function {
    name: &'static str,
    /// One invocation's event, and a check of its answer.
    event: String,
    ok: fn(&str) -> bool,
}

struct Figures {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    cpu_per_warm: Vec<Duration>,
    peak_rss_kib: Vec<u64>,
}

fn bootstrap(dir: &Path, name: &str) -> PathBuf {
    let zip = zip_path(name);
    assert!(
        zip.exists(),
        "{} is missing: run scripts/build-lambdas.sh first",
        zip.display()
    );
    let out = dir.join(name);
    std::fs::create_dir_all(&out).expect("a folder");
    let status = Command::new("unzip")
        .args(["-o", "-q"])
        .arg(&zip)
        .arg("-d")
        .arg(&out)
        .status()
        .expect("unzip runs");
    assert!(status.success(), "unzip {}", zip.display());
    out.join("bootstrap")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where scripts/build-lambdas.sh put the function's zip: under `CARGO_TARGET_DIR` when set (a
/// relative one is the repository's, where the script runs), else the repository's target/.
fn zip_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), |dir| repo().join(dir));
    target.join(format!("lambda/{name}/bootstrap.zip"))
}

async fn measure(
    f: &Function,
    binary: &Path,
    env: &[(String, String)],
    runs: usize,
    warm: usize,
) -> Figures {
    let mut figures = Figures {
        cold: Vec::new(),
        warm: Vec::new(),
        cpu_per_warm: Vec::new(),
        peak_rss_kib: Vec::new(),
    };
    for _ in 0..runs {
        let started = Instant::now();
        let process = Process::start(f.name, binary, env).await;
        let first = process.invoke(&f.event).await;
        assert!(
            first.ok && (f.ok)(&first.body),
            "{}: unexpected first answer {}",
            f.name,
            first.body
        );
        figures.cold.push(first.at - started);
        let pid = process.pid();
        let cpu_before = cpu_time(pid);
        for _ in 0..warm {
            let sent = Instant::now();
            let answer = process.invoke(&f.event).await;
            assert!(
                answer.ok && (f.ok)(&answer.body),
                "{}: unexpected answer {}",
                f.name,
                answer.body
            );
            figures.warm.push(answer.at - sent);
        }
        let cpu = cpu_time(pid) - cpu_before;
        figures
            .cpu_per_warm
            .push(cpu / u32::try_from(warm.max(1)).unwrap_or(u32::MAX));
        figures.peak_rss_kib.push(peak_rss_kib(pid));
    }
    figures
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// An API Gateway REST proxy event of a route on the stage infra names (`live`, `api`).
fn apigw(method: &str, path: &str, body: Option<&Value>) -> String {
    api_gateway_event("live", method, path, path, &[], body)
}

fn status_is(body: &str, expected: u64) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v["statusCode"] == expected)
}

/// `--runs`, `--warm`, and the one function `--only` names, if any.
fn args() -> (usize, usize, Option<String>) {
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (value("--runs", 5), value("--warm", 200), only)
}

#[tokio::main]
async fn main() {
    let (runs, warm, only) = args();
    let account = Account::new().await;
    // The seed's event type, registered through the portal on the AWS adapters (moto has no
    // Schema Registry: the embedded one stands in).
    let scratch = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(account.store());
    let portal = busway_portal::router(Arc::new(Portal {
        store: store.clone(),
        deployments: store.clone(),
        registry: Arc::new(SqliteStore::open(&scratch.path().join("r.db")).expect("a registry")),
        objects: Arc::new(account.objects()),
        deliveries: None,
        control: None,
        provisioning: Arc::new(account.provisioning().await),
        keys: store.clone(),
        bus_kind: None,
        idempotency: store.clone(),
        audit: store.clone(),
        targets: store.clone(),
        secrets: store.clone(),
        allow_loopback_targets: false,
    }));
    let created = portal
        .oneshot(
            axum::http::Request::post("/events")
                .header("content-type", "application/json")
                .extension(busway_tests::admin_caller())
                .body(axum::body::Body::from(seed_event().to_string()))
                .expect("a request"),
        )
        .await
        .expect("an answer");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = serde_json::from_slice(
        &axum::body::to_bytes(created.into_body(), usize::MAX)
            .await
            .expect("a body"),
    )
    .expect("a JSON answer");
    // The state machine's first task on the producer deploy.json the portal just wrote: reads
    // it from S3, reads and updates the deployment in DynamoDB.
    // The state machine names the exact object version the S3 notification named.
    let key = producer_key(&"scanned_parcel".parse().expect("a name"), Version::FIRST);
    let object_version = account
        .objects()
        .get_object_version(Bucket::Publisher, &key, None)
        .await
        .expect("reading the deploy.json")
        .expect("the portal wrote the deploy.json")
        .version;
    let validate = json!({
        "task": "validate",
        "deployment_id": created["deployment_id"],
        "bucket": account.buckets.publisher,
        "key": key,
        "object_version": object_version,
    })
    .to_string();

    let sqs_batch = json!({"Records": (0..10).map(|i| json!({
        "messageId": format!("m{i}"), "receiptHandle": "r", "body": v1_envelope("u2").to_string(),
        "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:busway-scanned-parcel-v1",
        "awsRegion": "eu-west-1"})).collect::<Vec<_>>()})
    .to_string();
    let functions = [
        Function {
            name: "portal",
            // Every route of both APIs needs the caller the key authorizer names.
            event: authorized_as(
                &apigw("GET", "/events/scanned_parcel", None),
                &busway_tests::admin_caller(),
            ),
            ok: |b| status_is(b, 200),
        },
        Function {
            name: "injector",
            // Only producer keys publish.
            event: authorized_as(
                &apigw("POST", "/scanned_parcel/1", Some(&v1_envelope("u2"))),
                &busway_tests::producer_caller("demo"),
            ),
            ok: |b| status_is(b, 200),
        },
        Function {
            name: "injector-sqs",
            event: sqs_batch,
            ok: |b| {
                serde_json::from_str::<Value>(b)
                    .is_ok_and(|v| v["batchItemFailures"].as_array().is_some_and(Vec::is_empty))
            },
        },
        Function {
            name: "provisioner",
            event: validate,
            ok: |b| serde_json::from_str::<Value>(b).is_ok_and(|v| v["kind"] == "producer"),
        },
    ];

    let mut env: Vec<(String, String)> = account
        .lambda_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    // Read at start; the validate task starts no execution.
    env.push((
        STATE_MACHINE_ARN.to_string(),
        format!("arn:aws:states:{REGION}:123456789012:stateMachine:unused"),
    ));
    // The portal reads it at start; GET /events makes no API Gateway call.
    env.push((
        busway_aws::usage_plans::USAGE_PLAN.to_string(),
        "unused-event-broker-api-default".to_string(),
    ));
    env.push(("RUST_LOG".to_string(), "warn".to_string()));
    println!(
        "| function | zip (bytes) | binary (bytes) | cold start p50 / max (ms) | warm p50 / p99 (ms) | CPU per warm invocation (ms) | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    if let Some(only) = &only {
        assert!(
            functions.iter().any(|f| f.name == only),
            "--only {only}: not one of the functions measured"
        );
    }
    for f in functions
        .iter()
        .filter(|f| only.as_ref().is_none_or(|only| f.name == only))
    {
        let binary = bootstrap(scratch.path(), f.name);
        let zip = std::fs::metadata(zip_path(f.name)).expect("the zip").len();
        let size = std::fs::metadata(&binary).expect("the binary").len();
        let mut m = measure(f, &binary, &env, runs, warm).await;
        let cold_max = *m.cold.iter().max().expect("a run");
        let cpu = percentile(&mut m.cpu_per_warm, 0.5);
        let rss = m.peak_rss_kib.iter().max().copied().unwrap_or_default();
        println!(
            "| {} | {zip} | {size} | {} / {} | {} / {} | {:.3} | {:.1} |",
            f.name,
            ms(percentile(&mut m.cold, 0.5)),
            ms(cold_max),
            ms(percentile(&mut m.warm, 0.5)),
            ms(percentile(&mut m.warm, 0.99)),
            cpu.as_secs_f64() * 1000.0,
            rss as f64 / 1024.0
        );
    }
}
