//! The end-to-end harness: a local broker started on port 0 with its own temp data dir, driven
//! over HTTP exactly as a producer, a consumer or a person with curl would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use busway_core::envelope::{BusEvent, enrich};
use busway_core::{Application, EventTypeName, Version};
use busway_local::{Config, Running};
use serde_json::{Value, json};
use tempfile::TempDir;

pub mod cfn;
pub mod consumer;
pub mod gate;
pub mod iam;
pub mod lambda;
pub mod memory;
pub mod moto;

/// How long a deployment may take before a test gives up. Local deployments finish in
/// milliseconds; the margin is for a loaded 2-core CI machine.
const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The scanner looks for hand-edited deploy.json files this often in tests (500 ms by default).
pub const SCAN_INTERVAL: Duration = Duration::from_millis(50);

/// The seed's "Full demo example": `POST /events`.
pub fn seed_event() -> Value {
    json!({
        "application": "demo",
        "event_type": "scanned_parcel",
        "description": "Scanned parcel on the workshop",
        "connection_type": "HTTPS",
        "data": seed_data_schema()
    })
}

pub fn seed_data_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "dest_postal_code": {"type": "string"},
            "dest_house": {"type": "integer"},
            "parcel_weight": {"type": "number"}
        },
        "required": ["dest_postal_code", "dest_house", "parcel_weight"]
    })
}

/// A second, incompatible data schema for `scanned_parcel` version 2.
pub fn v2_data_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "parcel_id": {"type": "string", "minLength": 1},
            "weight_grams": {"type": "integer", "minimum": 0}
        },
        "required": ["parcel_id", "weight_grams"],
        "additionalProperties": false
    })
}

/// The seed's `POST /subscriptions` body, with `{REGION}` and `{ACCOUNT}` filled in.
pub fn seed_subscription() -> Value {
    json!({
        "event_type": "scanned_parcel",
        "version": "1",
        "target_unit": "u2",
        "connection_type": "LAMBDA",
        "connection_string": "arn:aws:lambda:eu-west-1:123456789012:function:my-target-lambda-processor"
    })
}

/// A producer's envelope for version 1 of `scanned_parcel`, addressed to `target`.
pub fn v1_envelope(target: &str) -> Value {
    json!({
        "metadata": {"event_attributes": {"source": "workshop_scanner", "target": target}},
        "data": {"dest_postal_code": "1012AB", "dest_house": 42, "parcel_weight": 1.25}
    })
}

/// `envelope` as the broker puts it on the bus: a `scanned_parcel` event of `application`'s
/// `version`, enriched now.
pub fn bus_event(application: &str, version: u32, envelope: Value) -> BusEvent {
    let application: Application = application.parse().expect("an application");
    let event_type: EventTypeName = "scanned_parcel".parse().expect("an event type");
    let version = Version::new(version).expect("a version");
    enrich(
        envelope,
        &application,
        &event_type,
        version,
        busway_core::now(),
    )
}

pub fn v2_envelope(target: &str) -> Value {
    json!({
        "metadata": {"event_attributes": {"source": "workshop_scanner", "target": target}},
        "data": {"parcel_id": "P-0001", "weight_grams": 1250}
    })
}

/// `scanned_parcel` whose data is one string, so that an event's size is the string's.
pub fn blob_event_type() -> Value {
    json!({
        "application": "demo",
        "event_type": "scanned_parcel",
        "description": "a scanned document",
        "connection_type": "HTTPS",
        "data": {
            "type": "object",
            "properties": {"blob": {"type": "string"}},
            "required": ["blob"],
            "additionalProperties": false
        }
    })
}

/// A `blob_event_type` envelope for target unit u2 whose JSON text is exactly `bytes` long, its
/// blob made of `fill`.
pub fn blob_envelope(bytes: usize, event_id: Option<&str>, fill: char) -> Value {
    let mut envelope = json!({
        "metadata": {"event_attributes": {"source": "scanner", "target": "u2"}},
        "data": {"blob": ""}
    });
    if let Some(id) = event_id {
        envelope["metadata"]["event_id"] = json!(id);
    }
    let base = envelope.to_string().len();
    envelope["data"]["blob"] = json!(fill.to_string().repeat(bytes - base));
    assert_eq!(envelope.to_string().len(), bytes, "{fill:?} is one byte");
    envelope
}

/// The caller a test's requests to a router carry, as the host's key layer or the API Gateway
/// authorizer would name it: a platform admin, whom every route lets through.
pub fn admin_caller() -> busway_core::auth::Caller {
    busway_core::auth::Caller {
        key_id: "key_test_admin".into(),
        team: "platform".parse().expect("a team"),
        role: busway_core::auth::Role::PlatformAdmin,
        application: None,
    }
}

/// The caller of a producer key of `application`, as the key layer or the authorizer names it:
/// only producer keys publish.
pub fn producer_caller(application: &str) -> busway_core::auth::Caller {
    busway_core::auth::Caller {
        key_id: format!("key_test_{application}"),
        team: "platform".parse().expect("a team"),
        role: busway_core::auth::Role::Producer,
        application: Some(application.parse().expect("an application")),
    }
}

/// An HTTP answer: the status and the body, which busway always sends as JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    what: String,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "{} answered {} instead of {status}: {}",
            self.what, self.status, self.body
        );
        &self.body
    }

    /// Asserts an error answer: the status, `error.code`, a non-empty `error.message` and an
    /// `error.details` array; returns the fields named in the details.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> Vec<String> {
        assert!(
            self.status < 500,
            "{} answered a server error {}: {}",
            self.what,
            self.status,
            self.body
        );
        self.expect(status);
        let error = self
            .body
            .get("error")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{} has no error object: {}", self.what, self.body));
        assert_eq!(
            error.get("code").and_then(Value::as_str),
            Some(code),
            "{}: wrong error code in {}",
            self.what,
            self.body
        );
        assert!(
            error
                .get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty()),
            "{}: error.message must be a non-empty string: {}",
            self.what,
            self.body
        );
        let details = error
            .get("details")
            .and_then(Value::as_array)
            .unwrap_or_else(|| {
                panic!(
                    "{}: error.details must be an array: {}",
                    self.what, self.body
                )
            });
        details
            .iter()
            .map(|d| {
                assert!(
                    d.get("message").and_then(Value::as_str).is_some(),
                    "{}: a detail without a message: {d}",
                    self.what
                );
                d.get("field")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("{}: a detail without a field: {d}", self.what))
                    .to_string()
            })
            .collect()
    }

    /// The message of the detail about `field`.
    pub fn detail(&self, field: &str) -> Option<String> {
        self.body["error"]["details"]
            .as_array()?
            .iter()
            .find(|d| d["field"] == field)
            .and_then(|d| d["message"].as_str())
            .map(str::to_string)
    }
}

/// One row of the local bus (`events.db`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub event_id: String,
    pub source: String,
    pub detail_type: String,
    pub detail: Value,
}

/// The file of `key` in the local bucket `bucket` of the data dir `data_dir`.
pub fn object_path_in(data_dir: &Path, bucket: &str, key: &str) -> PathBuf {
    data_dir
        .join("buckets")
        .join(format!("local-{bucket}"))
        .join(key)
}

/// Replaces a file atomically (write aside, then rename), as an editor that saves safely does.
pub fn replace_file(path: &Path, content: &[u8]) {
    let tmp = path.with_file_name("deploy.json.edit");
    std::fs::write(&tmp, content)
        .unwrap_or_else(|e| panic!("writing {} failed: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("replacing {} failed: {e}", path.display()));
}

/// A local busway on port 0 with a data dir of its own. Requests sent through it carry a key:
/// a platform-admin key on the portal, and on the broker a producer key of the application
/// that owns the event type in the path (made on first use).
pub struct Broker {
    dir: TempDir,
    running: Running,
    pub http: reqwest::Client,
    /// The platform-admin key busway was started with (`BUSWAY_ADMIN_KEY`).
    pub admin_key: String,
    producer_keys: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// A platform-admin key for one test's busway.
fn new_admin_key() -> String {
    format!(
        "bwk_test_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Broker {
    pub async fn start() -> Broker {
        Self::start_with(|_| {}).await
    }

    /// Starts busway with the harness's configuration as changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Broker {
        let dir = tempfile::tempdir().expect("a temp data dir");
        Self::start_in_with(dir, configure).await
    }

    /// Starts busway on a data dir that already holds state (a kept fixture's copy).
    pub async fn start_in(dir: TempDir) -> Broker {
        Self::start_in_with(dir, |_| {}).await
    }

    async fn start_in_with(dir: TempDir, configure: impl FnOnce(&mut Config)) -> Broker {
        let any_port = "127.0.0.1:0".parse().expect("a socket address");
        let mut config = Config::new(dir.path().to_path_buf(), any_port, any_port);
        config.scan_interval = SCAN_INTERVAL;
        // The seed's subscriptions are LAMBDA ones, which need an Invoke endpoint to deploy;
        // nothing listens here, so tests that deliver to Lambda start their own.
        config.delivery.lambda_endpoint = Some("http://127.0.0.1:9".into());
        let admin_key = new_admin_key();
        config.admin_key = Some(admin_key.clone());
        configure(&mut config);
        let running = Running::start(config)
            .await
            .expect("busway starts on port 0");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        Broker {
            dir,
            running,
            http,
            admin_key,
            producer_keys: std::sync::Mutex::default(),
        }
    }

    /// Stops busway and starts it again on the same data dir, on new ports.
    pub async fn restart(self) -> Broker {
        self.restart_with(|_| {}).await
    }

    /// Stops busway, lets `while_down` touch the data dir, and starts busway again on it.
    pub async fn restart_with(self, while_down: impl FnOnce(&Path)) -> Broker {
        let Broker { dir, running, .. } = self;
        running.stop().await;
        while_down(dir.path());
        Self::start_in(dir).await
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// The data dir busway runs in.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn portal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.portal_addr)
    }

    pub fn broker_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.broker_addr)
    }

    /// A new key made through the portal with the admin key: `{"team", "role",
    /// "application"}`; returns the secret.
    pub async fn create_key(&self, team: &str, role: &str, application: Option<&str>) -> String {
        let answer = self
            .http
            .post(self.portal_url("/keys"))
            .bearer_auth(&self.admin_key)
            .json(&json!({"team": team, "role": role, "application": application}))
            .send()
            .await
            .expect("POST /keys answers");
        assert_eq!(answer.status().as_u16(), 201, "POST /keys");
        let body: Value = answer.json().await.expect("a JSON key");
        body["key"].as_str().expect("the new key").to_string()
    }

    /// A producer key of the application that owns `event_type` (of `demo` when there is no
    /// such event type), made once per event type.
    pub async fn producer_key(&self, event_type: &str) -> String {
        if let Some(key) = self
            .producer_keys
            .lock()
            .expect("the key cache")
            .get(event_type)
        {
            return key.clone();
        }
        let answer = self
            .http
            .get(self.portal_url(&format!("/events/{event_type}")))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .expect("GET /events/{event_type} answers");
        let (team, application) = if answer.status().is_success() {
            let event: Value = answer.json().await.expect("a JSON event type");
            let team = event["team"].as_str().unwrap_or("platform").to_string();
            (
                team,
                event["application"].as_str().unwrap_or("demo").to_string(),
            )
        } else {
            ("platform".to_string(), "demo".to_string())
        };
        let key = self.create_key(&team, "producer", Some(&application)).await;
        self.producer_keys
            .lock()
            .expect("the key cache")
            .insert(event_type.to_string(), key.clone());
        key
    }

    /// The key a request carries unless it has one: a producer key on the broker API, the
    /// admin key on the portal.
    async fn default_key(&self, request: &reqwest::Request) -> String {
        let broker = format!("http://{}/", self.running.broker_addr);
        match request.url().as_str().strip_prefix(&broker) {
            Some(path) => {
                let event_type = path.split(['/', '?']).next().unwrap_or_default();
                self.producer_key(event_type).await
            }
            None => self.admin_key.clone(),
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let mut request = request.build().expect("a well-formed request");
        if !request
            .headers()
            .contains_key(reqwest::header::AUTHORIZATION)
        {
            let key = self.default_key(&request).await;
            request.headers_mut().insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {key}").parse().expect("a header value"),
            );
        }
        self.execute(request).await
    }

    /// Sends `request` with `key`, or with no key at all.
    pub async fn send_as(&self, request: reqwest::RequestBuilder, key: Option<&str>) -> Reply {
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        self.execute(request.build().expect("a well-formed request"))
            .await
    }

    async fn execute(&self, request: reqwest::Request) -> Reply {
        let what = format!("{} {}", request.method(), request.url());
        let response = self
            .http
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"));
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
        let body = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{what} answered {status} with a non-JSON body ({e}): {text}")
        });
        Reply { status, body, what }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.portal_url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.post(self.portal_url(path)).json(body))
            .await
    }

    /// POSTs bytes as they are, for bodies that are not (valid) JSON.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(
            self.http
                .post(self.portal_url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.put(self.portal_url(path)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.portal_url(path))).await
    }

    /// `POST /{event_type}/{version}` on the broker API.
    pub async fn publish(&self, event_type: &str, version: &str, envelope: &Value) -> Reply {
        self.send(
            self.http
                .post(self.broker_url(&format!("/{event_type}/{version}")))
                .json(envelope),
        )
        .await
    }

    /// Polls `GET /deployments/{id}` until it ended: SUCCEEDED, FAILED or SUPERSEDED.
    pub async fn wait_for_deployment(&self, id: &str) -> Value {
        self.wait_for_deployment_within(id, DEPLOYMENT_TIMEOUT)
            .await
    }

    /// `wait_for_deployment` for deployments that take longer (a build step running `cdk synth`).
    pub async fn wait_for_deployment_within(&self, id: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let reply = self.get(&format!("/deployments/{id}")).await;
            let deployment = reply.expect(200);
            match deployment["status"].as_str() {
                Some("SUCCEEDED" | "FAILED" | "SUPERSEDED") => return deployment.clone(),
                Some(_) => {}
                None => panic!("deployment {id} has no status: {deployment}"),
            }
            assert!(
                started.elapsed() < limit,
                "deployment {id} did not finish within {limit:?}; last seen: {deployment}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits for the deployment and asserts it SUCCEEDED.
    pub async fn deployed(&self, id: &str) -> Value {
        let deployment = self.wait_for_deployment(id).await;
        assert_eq!(
            deployment["status"], "SUCCEEDED",
            "deployment {id} failed: {deployment}"
        );
        deployment
    }

    /// Every deployment of `event_type`, newest first.
    pub async fn deployments_of(&self, event_type: &str) -> Vec<Value> {
        self.get(&format!("/deployments?event_type={event_type}"))
            .await
            .expect(200)["deployments"]
            .as_array()
            .expect("deployments is an array")
            .clone()
    }

    /// Waits for a finished deployment of `event_type` whose id is not in `known`, as the scanner
    /// starts one for a hand-edited deploy.json.
    pub async fn wait_for_new_deployment(&self, event_type: &str, known: &[String]) -> Value {
        let started = Instant::now();
        loop {
            let fresh: Vec<Value> = self
                .deployments_of(event_type)
                .await
                .into_iter()
                .filter(|d| !known.iter().any(|k| d["id"] == k.as_str()))
                .collect();
            if let Some(first) = fresh.first()
                && matches!(first["status"].as_str(), Some("SUCCEEDED" | "FAILED"))
            {
                assert_eq!(fresh.len(), 1, "more than one new deployment: {fresh:?}");
                return first.clone();
            }
            assert!(
                started.elapsed() < DEPLOYMENT_TIMEOUT,
                "no new finished deployment of {event_type} within {DEPLOYMENT_TIMEOUT:?}; new ones: {fresh:?}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// `POST /events` and wait until its deployment SUCCEEDED; returns the created event type.
    pub async fn create_deployed_event(&self, body: &Value) -> Value {
        let created = self.post("/events", body).await.expect(201).clone();
        self.deployed(created["deployment_id"].as_str().expect("a deployment_id"))
            .await;
        created
    }

    /// `POST /subscriptions` and wait until its deployment SUCCEEDED; returns the subscription.
    pub async fn subscribe_deployed(&self, body: &Value) -> Value {
        let created = self.post("/subscriptions", body).await.expect(201).clone();
        self.deployed(created["deployment_id"].as_str().expect("a deployment_id"))
            .await;
        created
    }

    /// `PUT /events/{event_type}` and wait until the new version is deployed.
    pub async fn add_deployed_version(&self, event_type: &str, body: &Value) -> Value {
        let created = self
            .put(&format!("/events/{event_type}"), body)
            .await
            .expect(201)
            .clone();
        self.deployed(created["deployment_id"].as_str().expect("a deployment_id"))
            .await;
        created
    }

    /// The file of `key` in the local bucket `bucket` (`publisher-components-bucket`, ...).
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        object_path_in(self.dir.path(), bucket, key)
    }

    pub fn read_object(&self, bucket: &str, key: &str) -> Value {
        let path = self.object_path(bucket, key);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
    }

    /// Replaces an object as a person would, but atomically, so the scanner never sees half a
    /// file and starts exactly one deployment.
    pub fn edit_object(&self, bucket: &str, key: &str, content: &[u8]) {
        replace_file(&self.object_path(bucket, key), content);
    }

    /// Every file under the configuration and backup buckets, relative to `buckets/`.
    pub fn bucket_files(&self) -> Vec<String> {
        let root = self.dir.path().join("buckets");
        let mut found = Vec::new();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("a readable bucket dir") {
                let path = entry.expect("a dir entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(&root).expect("under the root");
                    found.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        found.sort();
        found
    }

    /// Every event on the local bus, in order.
    pub fn logged_events(&self) -> Vec<LoggedEvent> {
        let path = self.dir.path().join("events.db");
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| panic!("{} cannot be opened: {e}", path.display()));
        let mut query = conn
            .prepare("SELECT event_id, source, detail_type, detail FROM events ORDER BY seq")
            .expect("the events table");
        query
            .query_map([], |row| {
                let detail: String = row.get(3)?;
                Ok(LoggedEvent {
                    event_id: row.get(0)?,
                    source: row.get(1)?,
                    detail_type: row.get(2)?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                })
            })
            .expect("reading events")
            .collect::<Result<_, _>>()
            .expect("rows of events")
    }

    /// The state a refused request must leave untouched: what the portal lists, and the files.
    pub async fn snapshot(&self) -> (Value, Value, Value, Vec<String>) {
        (
            self.get("/events").await.expect(200).clone(),
            self.get("/subscriptions").await.expect(200).clone(),
            self.get("/deployments").await.expect(200).clone(),
            self.bucket_files(),
        )
    }
}

/// A portal answer without what provisioning made of its versions and subscriptions
/// (`provisioning`, read from their jobs), which moves on as jobs run while the records stay.
pub fn without_provisioning(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(name, _)| name.as_str() != "provisioning")
                .map(|(name, v)| (name.clone(), without_provisioning(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_provisioning).collect()),
        other => other.clone(),
    }
}

/// Runs `futures` concurrently on the current task and returns their outputs in order. Requests
/// in flight at the same time are what the races under test need; no extra crate is needed.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// The `id` of each record (deployments, subscriptions), in order.
pub fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_string())
        .collect()
}

/// A deployment's statuses in the order its history records them.
pub fn statuses(deployment: &Value) -> Vec<String> {
    deployment["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|h| h["status"].as_str().expect("a status").to_string())
        .collect()
}
