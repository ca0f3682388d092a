//! The upgrade fixtures of tests/fixtures/upgrades/: one folder per release that changed a stored
//! format, each holding what that release's code left behind for the seed's demo flow (README.md
//! there). Helpers here write them and read them back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Body;
use axum::http::Request;
use busway_aws::host::Host;
use busway_aws::sfn::SfnProvisioning;
use busway_core::portal::Portal;
use busway_local::store::SqliteStore;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::emulated::Account;

/// Names the folder a fixture writer fills; an existing fixture is never overwritten.
pub const FIXTURE_ENV: &str = "BUSWAY_FIXTURE";

/// The loopback address the local fixtures' HTTPS subscription delivers to: a kept data dir
/// names its consumer's URL, so the test that opens it serves that address again. Below Linux's
/// ephemeral range, so no port-0 listener of another test takes it.
pub const HTTPS_CONSUMER: &str = "127.0.0.1:18017";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/upgrades")
}

/// Every kept release's `part` folder (`local` or `aws`), oldest first.
pub fn releases(part: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root())
        .expect("tests/fixtures/upgrades exists")
        .map(|entry| entry.expect("a dir entry").path().join(part))
        .filter(|path| path.is_dir())
        .collect();
    found.sort();
    assert!(
        !found.is_empty(),
        "no {part} fixture under {}",
        root().display()
    );
    found
}

/// The new, empty `part` folder of the fixture named by `BUSWAY_FIXTURE`.
pub fn new_release_dir(part: &str) -> PathBuf {
    let name = std::env::var(FIXTURE_ENV)
        .unwrap_or_else(|_| panic!("set {FIXTURE_ENV} to the new fixture's name, e.g. 002-owners"));
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
        "{FIXTURE_ENV} must be a plain folder name, not {name:?}"
    );
    let dir = root().join(name).join(part);
    assert!(
        !dir.exists(),
        "{} exists: a kept fixture is never rewritten",
        dir.display()
    );
    std::fs::create_dir_all(&dir).expect("the fixture folder is created");
    dir
}

pub fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON") + "\n";
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("the copy's folder is created");
    for entry in std::fs::read_dir(from).expect("a readable folder") {
        let path = entry.expect("a dir entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target)
                .unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
        }
    }
}

/// Asserts that `now` still says everything `kept` said: every field of an object (new fields
/// may appear), every element of an array in its order, every scalar equal.
#[track_caller]
pub fn assert_keeps(what: &str, kept: &Value, now: &Value) {
    if let Err(at) = keeps(kept, now, String::new()) {
        panic!("{what} lost what the old release answered at {at}:\nkept: {kept}\nnow:  {now}");
    }
}

fn keeps(kept: &Value, now: &Value, at: String) -> Result<(), String> {
    match (kept, now) {
        (Value::Object(old), Value::Object(new)) => old.iter().try_for_each(|(k, v)| {
            let at = format!("{at}/{k}");
            match new.get(k) {
                Some(n) => keeps(v, n, at),
                None => Err(at),
            }
        }),
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => old
            .iter()
            .zip(new)
            .enumerate()
            .try_for_each(|(i, (o, n))| keeps(o, n, format!("{at}/{i}"))),
        _ if kept == now => Ok(()),
        _ => Err(if at.is_empty() { "/".into() } else { at }),
    }
}

/// An item as DynamoDB's own JSON (`{"S": ...}`, `{"N": ...}`, `{"M": {...}}`, ...), the form
/// an export of the table takes, so it loads back attribute for attribute.
pub fn item_to_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_to_json(v)))
            .collect(),
    )
}

fn attribute_to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::L(xs) => json!({"L": xs.iter().map(attribute_to_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => json!({"M": item_to_json(m)}),
        other => panic!("busway writes no attribute of this type: {other:?}"),
    }
}

pub fn item_from_json(item: &Value) -> HashMap<String, AttributeValue> {
    item.as_object()
        .expect("an item is an object")
        .iter()
        .map(|(k, v)| (k.clone(), attribute_from_json(v)))
        .collect()
}

fn attribute_from_json(value: &Value) -> AttributeValue {
    let typed: &Map<String, Value> = value.as_object().expect("a typed attribute");
    let (kind, inner) = typed.iter().next().expect("an attribute type");
    let text = || inner.as_str().expect("a string").to_string();
    match kind.as_str() {
        "S" => AttributeValue::S(text()),
        "N" => AttributeValue::N(text()),
        "BOOL" => AttributeValue::Bool(inner.as_bool().expect("a bool")),
        "NULL" => AttributeValue::Null(true),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .expect("a list")
                .iter()
                .map(attribute_from_json)
                .collect(),
        ),
        "M" => AttributeValue::M(item_from_json(inner)),
        other => panic!("unknown attribute type {other}"),
    }
}

/// One request to a router as a platform admin, as its Lambda function or local server would
/// pass it: the status and the JSON body (null when there is none).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call_as(app, busway_tests::admin_caller(), method, path, body).await
}

/// One publish to the broker's router by a producer of `demo` (only producer keys publish).
pub async fn publish(app: &axum::Router, path: &str, body: &Value) -> (u16, Value) {
    let producer = busway_tests::producer_caller("demo");
    call_as(app, producer, "POST", path, Some(body)).await
}

async fn call_as(
    app: &axum::Router,
    caller: busway_core::auth::Caller,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a request");
    request.extensions_mut().insert(caller);
    let response = app.clone().oneshot(request).await.expect("an answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The adapters of `account` as a busway Lambda function wires them from its environment, and
/// the portal's router on them. moto has no Schema Registry, so the registry is an embedded one in
/// `registry_dir`; it is not among the formats the fixtures keep.
pub fn lambda_portal(account: &Account, registry_dir: &Path) -> (Host, axum::Router) {
    let env = account.lambda_env();
    let host =
        Host::for_lambda_from(|name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
            .expect("the Lambda environment is complete");
    let store = host.store();
    let registry = SqliteStore::open(&registry_dir.join("registry.db")).expect("a registry");
    let provisioning = SfnProvisioning::for_host(&host, account.state_machine_arn());
    let portal = busway_portal::router(Arc::new(Portal {
        store: store.clone(),
        deployments: store.clone(),
        registry: Arc::new(registry),
        objects: host.objects(),
        deliveries: None,
        control: None,
        provisioning: Arc::new(provisioning),
        keys: store.clone(),
        bus_kind: Some(host.bus_kind().expect("a bus kind")),
        idempotency: store.clone(),
        audit: store.clone(),
        targets: store.clone(),
        secrets: store,
        allow_loopback_targets: false,
    }));
    (host, portal)
}
