//! Routing and delivery: every committed event is matched against the deployed rules with the
//! EventBridge matcher and handed to each matching subscription's worker, which delivers it at
//! least once to its target (HTTPS, Lambda Invoke API, or a queue), retrying with backoff and
//! jitter under the subscription's retry policy, then dead-lettering it.
//!
//! Each worker has its own cursor in the log. A worker whose queue overflows, or that starts,
//! catches up by reading the log from its cursor, so a slow consumer never holds up another and
//! nothing committed is skipped across restarts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use busway_core::deploy::ConsumerDeploy;
use busway_core::ports::{DeadLetter, Deliveries, DeliveryStats};
use busway_core::subscription::{ConsumerConnection, RetryPolicy};
use busway_pattern::{Pattern, PatternOptions, SharedRuleSet};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::eventlog::{LogReader, Logged};
use crate::store::SqliteStore;

/// Events a worker holds in memory before it falls back to reading the log.
const QUEUE_DEPTH: usize = 10_000;
/// Events a worker delivers at once; its cursor moves when the whole batch is settled.
const BATCH: usize = 64;
const CATCH_UP_PAGE: usize = 512;

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Lambda Invoke API endpoint (`cargo lambda watch`); LAMBDA subscriptions need it.
    pub lambda_endpoint: Option<String>,
    /// An SQS-API server (moto, ElasticMQ, ...) for SQS subscriptions; embedded queues without it.
    pub sqs_endpoint: Option<String>,
    /// First retry delay; each retry doubles it up to `retry_cap`, with full jitter.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Per attempt, as EventBridge API destinations.
    pub timeout: Duration,
    /// How often cursors and counts are written.
    pub flush_every: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            lambda_endpoint: None,
            sqs_endpoint: None,
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            flush_every: Duration::from_millis(200),
        }
    }
}

/// Where a subscription's events go.
#[derive(Debug, Clone)]
enum Target {
    Http { url: reqwest::Url },
    Lambda { invoke_url: reqwest::Url },
    Queue { name: String },
    Sqs(SqsQueue),
}

/// A queue on an SQS-API server, addressed by its ARN; its URL is looked up once.
#[derive(Debug, Clone)]
struct SqsQueue {
    client: aws_sdk_sqs::Client,
    name: String,
    account: String,
    url: Arc<tokio::sync::OnceCell<String>>,
}

impl SqsQueue {
    fn new(endpoint: &str, arn: &str) -> anyhow::Result<Self> {
        // arn:aws:sqs:{region}:{account}:{name}
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [_, _, _, region, account, name] = parts[..] else {
            bail!("not an SQS queue ARN: {arn}");
        };
        let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into());
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into());
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(region.to_string()))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key, secret, None, None, "busway",
            ))
            .build();
        Ok(Self {
            client: aws_sdk_sqs::Client::from_conf(config),
            name: name.to_string(),
            account: account.to_string(),
            url: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// SendMessageBatch in tens; a failed entry is retried, the others are not sent again.
    async fn send(&self, events: &[Logged]) -> Vec<Result<(), AttemptError>> {
        let url = match self
            .url
            .get_or_try_init(|| async {
                let found = self
                    .client
                    .get_queue_url()
                    .queue_name(&self.name)
                    .queue_owner_aws_account_id(&self.account)
                    .send()
                    .await;
                found
                    .map_err(|e| {
                        format!(
                            "queue {} not found: {}",
                            self.name,
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        )
                    })?
                    .queue_url
                    .ok_or_else(|| format!("queue {} has no URL", self.name))
            })
            .await
        {
            Ok(url) => url.clone(),
            Err(e) => {
                return events
                    .iter()
                    .map(|_| Err(AttemptError::retryable(e.clone())))
                    .collect();
            }
        };
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(10) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(e.json.as_ref())
                        .build()
                })
                .collect();
            let sent = match entries {
                Ok(entries) => {
                    self.client
                        .send_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                }
                Err(e) => {
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(AttemptError::fatal(e.to_string()))),
                    );
                    continue;
                }
            };
            match sent {
                Ok(out) => {
                    let failed: HashMap<String, String> = out
                        .failed()
                        .iter()
                        .map(|f| {
                            (
                                f.id().to_string(),
                                format!("{}: {}", f.code(), f.message().unwrap_or_default()),
                            )
                        })
                        .collect();
                    results.extend((0..chunk.len()).map(|i| match failed.get(&i.to_string()) {
                        Some(error) => Err(AttemptError::retryable(format!(
                            "SendMessageBatch entry failed: {error}"
                        ))),
                        None => Ok(()),
                    }));
                }
                Err(e) => {
                    let message = format!(
                        "SendMessageBatch failed: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    );
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(AttemptError::retryable(message.clone()))),
                    );
                }
            }
        }
        results
    }
}

impl Target {
    fn new(doc: &ConsumerDeploy, config: &DeliveryConfig) -> anyhow::Result<Self> {
        match doc.connection_type {
            ConsumerConnection::Https => Ok(Self::Http {
                url: doc
                    .connection_string
                    .parse()
                    .context("connection string is not a URL")?,
            }),
            ConsumerConnection::Lambda => {
                let Some(endpoint) = &config.lambda_endpoint else {
                    bail!(
                        "LAMBDA subscriptions need a Lambda Invoke API endpoint on this machine: start busway with \
                         `busway up --lambda-endpoint http://127.0.0.1:9000` (the address `cargo lambda watch` serves)"
                    );
                };
                // arn:aws:lambda:{region}:{account}:function:{name}[:{qualifier}]
                let mut parts = doc.connection_string.splitn(8, ':').skip(6);
                let name = parts
                    .next()
                    .ok_or_else(|| anyhow!("not a Lambda function ARN"))?;
                let mut url: reqwest::Url = format!(
                    "{}/2015-03-31/functions/{name}/invocations",
                    endpoint.trim_end_matches('/')
                )
                .parse()
                .context("--lambda-endpoint is not a URL")?;
                if let Some(qualifier) = parts.next() {
                    url.query_pairs_mut().append_pair("Qualifier", qualifier);
                }
                Ok(Self::Lambda { invoke_url: url })
            }
            ConsumerConnection::Sqs => match &config.sqs_endpoint {
                Some(endpoint) => Ok(Self::Sqs(SqsQueue::new(endpoint, &doc.connection_string)?)),
                None => {
                    let name = doc
                        .connection_string
                        .rsplit(':')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    Ok(Self::Queue { name })
                }
            },
        }
    }
}

/// Why one attempt failed, and whether another attempt may succeed.
#[derive(Debug)]
struct AttemptError {
    message: String,
    retryable: bool,
}

impl AttemptError {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// HTTPS targets must not reach this machine's or its network's private addresses: plain
/// `http://` is allowed only to loopback (checked when subscribing), `https://` only to public ones.
async fn check_ssrf(url: &reqwest::Url) -> Result<(), AttemptError> {
    let host = url
        .host_str()
        .ok_or_else(|| AttemptError::fatal("URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    if url.scheme() == "http" {
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        return if loopback {
            Ok(())
        } else {
            Err(AttemptError::fatal(
                "http:// is allowed only for loopback hosts",
            ))
        };
    }
    let addrs = tokio::net::lookup_host((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .map_err(|e| AttemptError::retryable(format!("cannot resolve {host}: {e}")))?;
    for addr in addrs {
        if !is_public(addr.ip()) {
            return Err(AttemptError::fatal(format!(
                "{host} resolves to {} which is not a public address",
                addr.ip()
            )));
        }
    }
    Ok(())
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

fn classify(status: reqwest::StatusCode) -> Result<(), AttemptError> {
    if status.is_success() {
        Ok(())
    } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(AttemptError::retryable(format!("target answered {status}")))
    } else {
        Err(AttemptError::fatal(format!("target answered {status}")))
    }
}

fn request_error(e: reqwest::Error) -> AttemptError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    AttemptError::retryable(format!("{kind}: {e}"))
}

struct Shared {
    store: SqliteStore,
    reader: Arc<LogReader>,
    http: reqwest::Client,
    config: DeliveryConfig,
}

impl Shared {
    async fn attempt(&self, target: &Target, events: &[Logged]) -> Vec<Result<(), AttemptError>> {
        match target {
            Target::Queue { name } => {
                let bodies: Vec<String> = events.iter().map(|e| e.json.to_string()).collect();
                match self.store.send_messages(name, bodies).await {
                    Ok(()) => events.iter().map(|_| Ok(())).collect(),
                    Err(e) => events
                        .iter()
                        .map(|_| Err(AttemptError::retryable(format!("queue write failed: {e}"))))
                        .collect(),
                }
            }
            Target::Sqs(queue) => queue.send(events).await,
            _ => futures_util::future::join_all(events.iter().map(|e| self.post(target, e))).await,
        }
    }

    async fn post(&self, target: &Target, event: &Logged) -> Result<(), AttemptError> {
        let (url, lambda) = match target {
            Target::Http { url } => {
                check_ssrf(url).await?;
                (url, false)
            }
            Target::Lambda { invoke_url } => (invoke_url, true),
            Target::Queue { .. } | Target::Sqs(_) => {
                return Err(AttemptError::fatal("queues are not posted to"));
            }
        };
        let response = self
            .http
            .post(url.clone())
            .header("content-type", "application/json")
            .body(event.json.to_string())
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(request_error)?;
        classify(response.status())?;
        if lambda && let Some(kind) = response.headers().get("x-amz-function-error") {
            let kind = kind.to_str().unwrap_or("Unhandled").to_string();
            let body = response.text().await.unwrap_or_default();
            return Err(AttemptError::retryable(format!(
                "function error {kind}: {}",
                truncate(&body, 512)
            )));
        }
        Ok(())
    }

    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .config
            .retry_base
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX));
        let cap = exp.min(self.config.retry_cap);
        // Full jitter: spread retries of many events so they do not arrive together.
        cap.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A subscription's live counters, flushed with its cursor.
#[derive(Default)]
struct Progress {
    cursor: i64,
    stats: DeliveryStats,
    dirty: bool,
}

struct Worker {
    queue: mpsc::Sender<Logged>,
    lagging: Arc<AtomicBool>,
    wake: Arc<Notify>,
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::AbortHandle,
    doc: Arc<ConsumerDeploy>,
    target: Target,
}

/// The local EventBridge: rules compiled into one matcher, one worker per rule.
pub struct Router {
    shared: Arc<Shared>,
    rules: SharedRuleSet<String>,
    workers: Mutex<HashMap<String, Worker>>,
    tasks: Mutex<JoinSet<()>>,
}

fn now_text() -> String {
    busway_core::now()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Router {
    pub fn new(
        store: SqliteStore,
        reader: Arc<LogReader>,
        config: DeliveryConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("busway/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                store,
                reader,
                http,
                config,
            }),
            rules: SharedRuleSet::new(),
            workers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        }))
    }

    /// Starts the workers of every deployed rule, then routes committed events until `live` ends.
    pub async fn run(self: Arc<Self>, mut live: mpsc::UnboundedReceiver<Vec<Logged>>) {
        match self.shared.store.rules().await {
            Ok(rules) => {
                for (id, doc) in rules {
                    match serde_json::from_value::<ConsumerDeploy>(doc) {
                        Ok(doc) => {
                            if let Err(e) = self.add_rule(doc).await {
                                warn!(subscription = %id, error = %format!("{e:#}"), "a deployed rule could not be restored");
                            }
                        }
                        Err(e) => {
                            warn!(subscription = %id, error = %e, "a stored rule is unreadable")
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "deployed rules could not be read"),
        }
        let flusher = self.clone();
        self.spawn(async move { flusher.flush_loop().await });
        while let Some(events) = live.recv().await {
            let rules = self.rules.snapshot();
            if rules.is_empty() {
                continue;
            }
            for event in events {
                let matched = match rules.matching_text(&event.json) {
                    Ok(ids) => ids,
                    Err(e) => {
                        warn!(seq = event.seq, error = %e, "a logged event could not be matched");
                        continue;
                    }
                };
                if matched.is_empty() {
                    continue;
                }
                let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
                for id in matched {
                    if let Some(worker) = workers.get(&id)
                        && worker.queue.try_send(event.clone()).is_err()
                    {
                        // Full: the worker will read the log from its cursor instead.
                        worker.lagging.store(true, Ordering::Release);
                        worker.wake.notify_one();
                    }
                }
            }
        }
    }

    fn spawn(
        &self,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(fut)
    }

    /// Deploys a rule: compiles its pattern, checks its target, persists it, starts its worker.
    /// A new rule sees events committed from now on, as an EventBridge rule does.
    pub async fn add_rule(&self, doc: ConsumerDeploy) -> anyhow::Result<()> {
        let pattern =
            Pattern::parse_with(&doc.event_pattern.to_string(), &PatternOptions::default())
                .map_err(|e| anyhow!("{e}"))?;
        let target = Target::new(&doc, &self.shared.config)?;
        let id = doc.subscription_id.clone();
        self.shared
            .store
            .put_rule(&id, &serde_json::to_value(&doc)?)
            .await?;
        let (cursor, stats) = match self.shared.store.progress(&id).await? {
            Some(p) => p,
            None => {
                let start = self.shared.reader.last_seq()?;
                self.shared
                    .store
                    .save_progress(&[(id.clone(), start, DeliveryStats::default())])
                    .await?;
                (start, DeliveryStats::default())
            }
        };
        self.remove_worker(&id);
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let progress = Arc::new(Mutex::new(Progress {
            cursor,
            stats,
            dirty: false,
        }));
        let lagging = Arc::new(AtomicBool::new(true));
        let wake = Arc::new(Notify::new());
        let doc = Arc::new(doc);
        let run = WorkerRun {
            shared: self.shared.clone(),
            doc: doc.clone(),
            pattern: pattern.clone(),
            target: target.clone(),
            progress: progress.clone(),
            lagging: lagging.clone(),
            wake: wake.clone(),
        };
        let task = self.spawn(run.run(rx));
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                Worker {
                    queue,
                    lagging,
                    wake,
                    progress,
                    task,
                    doc,
                    target,
                },
            );
        self.rules
            .update(|rules| rules.insert(id.clone(), &pattern));
        info!(subscription = %id, "rule deployed");
        Ok(())
    }

    /// Removes a rule and stops its worker; its dead letters stay readable.
    pub async fn remove_rule(&self, subscription_id: &str) -> anyhow::Result<()> {
        self.rules
            .update(|rules| rules.remove(&subscription_id.to_string()));
        self.remove_worker(subscription_id);
        self.shared.store.delete_rule(subscription_id).await?;
        Ok(())
    }

    fn remove_worker(&self, id: &str) {
        if let Some(worker) = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            worker.task.abort();
        }
    }

    async fn flush_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.shared.config.flush_every).await;
            if let Err(e) = self.flush().await {
                warn!(error = %format!("{e:#}"), "delivery progress could not be saved");
            }
        }
    }

    /// Writes every changed cursor and counter in one transaction.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let dirty: Vec<(String, Arc<Mutex<Progress>>)> = {
            let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            workers
                .iter()
                .map(|(id, w)| (id.clone(), w.progress.clone()))
                .collect()
        };
        let mut rows = Vec::new();
        for (id, progress) in &dirty {
            let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
            if p.dirty {
                p.dirty = false;
                rows.push((id.clone(), p.cursor, p.stats.clone()));
            }
        }
        if !rows.is_empty() {
            self.shared.store.save_progress(&rows).await?;
        }
        Ok(())
    }

    /// Stops every worker after saving their progress.
    pub async fn shutdown(&self) {
        if let Err(e) = self.flush().await {
            warn!(error = %format!("{e:#}"), "delivery progress could not be saved at shutdown");
        }
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        tasks.shutdown().await;
    }
}

#[async_trait]
impl Deliveries for Router {
    async fn stats(&self, subscription_id: &str) -> anyhow::Result<DeliveryStats> {
        let live = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(subscription_id)
            .map(|w| {
                w.progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .stats
                    .clone()
            });
        match live {
            Some(stats) => Ok(stats),
            None => Ok(self
                .shared
                .store
                .progress(subscription_id)
                .await?
                .map(|(_, s)| s)
                .unwrap_or_default()),
        }
    }

    async fn dead_letters(&self, subscription_id: &str) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(self.shared.store.dead_letters(subscription_id).await?)
    }

    async fn redrive(&self, subscription_id: &str) -> anyhow::Result<usize> {
        let (doc, target, progress) = {
            let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            let worker = workers
                .get(subscription_id)
                .ok_or_else(|| anyhow!("subscription {subscription_id} has no deployed rule"))?;
            (
                worker.doc.clone(),
                worker.target.clone(),
                worker.progress.clone(),
            )
        };
        let letters = self
            .shared
            .store
            .dead_letter_events(subscription_id)
            .await?;
        let count = letters.len();
        let shared = self.shared.clone();
        self.spawn(async move {
            for (letter, text, attempts_before) in letters {
                let event = Logged {
                    seq: 0,
                    detail_type: doc.detail_type.clone(),
                    json: text.into(),
                };
                let outcome = deliver(
                    &shared,
                    &target,
                    &doc.retry_policy,
                    std::slice::from_ref(&event),
                    &progress,
                )
                .await;
                let result = match outcome.into_iter().next() {
                    Some(Ok(())) => {
                        // A redriven delivery counts like any other.
                        {
                            let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
                            p.stats.delivered += 1;
                            p.stats.last_delivered_at = Some(now_text());
                            p.dirty = true;
                        }
                        shared.store.delete_dead_letter(letter).await
                    }
                    Some(Err((error, attempts))) => {
                        shared
                            .store
                            .update_dead_letter(letter, &error, attempts_before + attempts)
                            .await
                    }
                    None => Ok(()),
                };
                if let Err(e) = result {
                    warn!(error = %e, "dead letter could not be updated after redrive");
                }
            }
        });
        Ok(count)
    }
}

/// Delivers `events` with retries; returns per event `Ok` or the last error and attempts made.
async fn deliver(
    shared: &Shared,
    target: &Target,
    policy: &RetryPolicy,
    events: &[Logged],
    progress: &Mutex<Progress>,
) -> Vec<Result<(), (String, u32)>> {
    let started = Instant::now();
    let max_age = Duration::from_secs(u64::from(policy.maximum_event_age_seconds));
    let mut outcome: Vec<Option<Result<(), (String, u32)>>> = events.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..events.len()).collect();
    let mut attempt = 0u32;
    while !pending.is_empty() {
        attempt += 1;
        let batch: Vec<Logged> = pending.iter().map(|&i| events[i].clone()).collect();
        let results = shared.attempt(target, &batch).await;
        let mut still = Vec::new();
        let mut last_error = None;
        for (&i, result) in pending.iter().zip(results) {
            match result {
                Ok(()) => outcome[i] = Some(Ok(())),
                Err(e) => {
                    let exhausted = !e.retryable
                        || attempt > policy.maximum_retry_attempts
                        || started.elapsed() >= max_age;
                    last_error = Some(e.message.clone());
                    if exhausted {
                        outcome[i] = Some(Err((e.message, attempt)));
                    } else {
                        still.push(i);
                    }
                }
            }
        }
        {
            let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(error) = last_error {
                p.stats.last_error = Some(error);
                p.stats.last_error_at = Some(now_text());
            }
            p.stats.retries += still.len() as u64;
            p.dirty = true;
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(shared.backoff(attempt - 1)).await;
        }
    }
    outcome.into_iter().map(|o| o.unwrap_or(Ok(()))).collect()
}

struct WorkerRun {
    shared: Arc<Shared>,
    doc: Arc<ConsumerDeploy>,
    pattern: Pattern,
    target: Target,
    progress: Arc<Mutex<Progress>>,
    lagging: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl WorkerRun {
    fn cursor(&self) -> i64 {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cursor
    }

    async fn run(self, mut rx: mpsc::Receiver<Logged>) {
        loop {
            if self.lagging.swap(false, Ordering::AcqRel) {
                if let Err(e) = self.catch_up().await {
                    warn!(subscription = %self.doc.subscription_id, error = %format!("{e:#}"), "catching up from the log failed; retrying");
                    self.lagging.store(true, Ordering::Release);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
            let first = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                () = self.wake.notified() => continue,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            let cursor = self.cursor();
            batch.retain(|e| e.seq > cursor);
            self.settle(batch).await;
        }
    }

    /// Reads this rule's events from the log after its cursor, up to the end.
    async fn catch_up(&self) -> anyhow::Result<()> {
        loop {
            let (reader, from, detail_type) = (
                self.shared.reader.clone(),
                self.cursor(),
                self.doc.detail_type.clone(),
            );
            let page = tokio::task::spawn_blocking(move || {
                reader.after(from, Some(&detail_type), CATCH_UP_PAGE)
            })
            .await??;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(());
            };
            let matching: Vec<Logged> = page
                .into_iter()
                .filter(|e| self.pattern.matches_text(&e.json).unwrap_or(false))
                .collect();
            debug!(subscription = %self.doc.subscription_id, from, events = matching.len(), "catching up");
            for chunk in matching.chunks(BATCH) {
                self.settle(chunk.to_vec()).await;
            }
            let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            p.cursor = p.cursor.max(last);
            p.dirty = true;
        }
    }

    /// Delivers a batch, dead-letters what exhausted the policy, then moves the cursor past it.
    async fn settle(&self, batch: Vec<Logged>) {
        let Some(last) = batch.last().map(|e| e.seq) else {
            return;
        };
        let results = deliver(
            &self.shared,
            &self.target,
            &self.doc.retry_policy,
            &batch,
            &self.progress,
        )
        .await;
        let mut delivered = 0u64;
        let mut dead = 0u64;
        for (event, result) in batch.iter().zip(results) {
            match result {
                Ok(()) => delivered += 1,
                Err((error, attempts)) => {
                    // The dead letter is durable before the cursor can move past the event.
                    loop {
                        match self
                            .shared
                            .store
                            .add_dead_letter(
                                &self.doc.subscription_id,
                                event.seq,
                                &event.json,
                                &error,
                                attempts,
                            )
                            .await
                        {
                            Ok(()) => break,
                            Err(e) => {
                                warn!(error = %e, "dead letter could not be written; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                    dead += 1;
                }
            }
        }
        let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        p.cursor = p.cursor.max(last);
        p.stats.delivered += delivered;
        p.stats.dead_lettered += dead;
        if delivered > 0 {
            p.stats.last_delivered_at = Some(now_text());
        }
        p.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass_the_ssrf_guard() {
        for private in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[test]
    fn only_throttling_timeouts_and_server_errors_are_retried() {
        use reqwest::StatusCode;
        assert!(classify(StatusCode::OK).is_ok());
        for retry in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::REQUEST_TIMEOUT,
        ] {
            assert!(classify(retry).is_err_and(|e| e.retryable), "{retry}");
        }
        for fatal in [
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
        ] {
            assert!(classify(fatal).is_err_and(|e| !e.retryable), "{fatal}");
        }
    }
}
