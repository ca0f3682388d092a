//! What the local host tells about itself: `GET /metrics` (Prometheus' text exposition, in its
//! OpenMetrics form), `GET /healthz` (the process answers) and `GET /readyz` (the store and the
//! event log answer, the log's last commit went through, and every background task and
//! delivery worker runs). On AWS the Lambdas
//! write the same counters as CloudWatch metrics (`busway_aws::emf`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use busway_core::deploy::ConsumerDeploy;
use busway_core::ports::DeliveryStats;
use busway_http::ApiError;
use busway_http::auth::Authenticated;
use busway_injector::observe::PublishObserver;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::delivery::Router;
use crate::eventlog::EventLog;
use crate::store::SqliteStore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event_type: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    event_type: String,
    version: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProvisioningLabels {
    /// `producer` or `consumer`.
    kind: String,
    /// The deployment's final status (`SUCCEEDED`, `FAILED`, ...), or `UNFINISHED`.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabels {
    subscription: String,
    event_type: String,
    version: String,
    target_unit: String,
    connection_type: String,
}

/// Seconds from 0.5 ms to about 8 s: a publish is a validation and a log commit.
fn ingest_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Seconds from 50 ms to about 14 minutes: a build with `--synth` runs `cdk synth`.
fn provisioning_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

/// The host's counters, one set per started busway (tests start several in one process).
pub struct Metrics {
    registry: Registry,
    accepted: Family<EventLabels, Counter>,
    rejected: Family<RejectedLabels, Counter>,
    ingest: Family<EventLabels, Histogram, fn() -> Histogram>,
    provisioning: Family<ProvisioningLabels, Histogram, fn() -> Histogram>,
    subscriptions: Arc<Subscriptions>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("busway");
        let accepted = Family::<EventLabels, Counter>::default();
        let rejected = Family::<RejectedLabels, Counter>::default();
        let ingest = Family::new_with_constructor(ingest_histogram as fn() -> Histogram);
        let provisioning =
            Family::new_with_constructor(provisioning_histogram as fn() -> Histogram);
        let subscriptions = Arc::new(Subscriptions::default());
        registry.register(
            "events_accepted",
            "Events the broker accepted (2xx, duplicates included), per event version",
            accepted.clone(),
        );
        registry.register(
            "events_rejected",
            "Publishes the broker refused, per event version (_unknown: no such deployed version) and HTTP status",
            rejected.clone(),
        );
        registry.register(
            "ingest_duration_seconds",
            "Time from a publish's arrival to its answer, per event version",
            ingest.clone(),
        );
        registry.register(
            "provisioning_duration_seconds",
            "Time a deployment took from its document to its final status, per kind and status",
            provisioning.clone(),
        );
        registry.register_collector(Box::new(subscriptions.clone()));
        Self {
            registry,
            accepted,
            rejected,
            ingest,
            provisioning,
            subscriptions,
        }
    }
}

impl PublishObserver for Metrics {
    fn published(&self, event_type: &str, version: &str, status: StatusCode, elapsed: Duration) {
        let labels = EventLabels {
            event_type: event_type.to_string(),
            version: version.to_string(),
        };
        if status.is_success() {
            self.accepted.get_or_create(&labels).inc();
        } else {
            self.rejected
                .get_or_create(&RejectedLabels {
                    event_type: labels.event_type.clone(),
                    version: labels.version.clone(),
                    status: status.as_u16().to_string(),
                })
                .inc();
        }
        self.ingest
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    /// A deployment ended (or was left unfinished) after `elapsed`.
    pub fn provisioned(&self, kind: &str, status: &str, elapsed: Duration) {
        self.provisioning
            .get_or_create(&ProvisioningLabels {
                kind: kind.to_string(),
                status: status.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// A metric family read from each subscription's counts: name, help, and its value.
type Reading<T> = (&'static str, &'static str, fn(&DeliveryStats) -> T);

/// Each deployed subscription's delivery counts and lag, as last read: the delivery workers
/// keep them (and save them across restarts), so they are read at each scrape rather than
/// counted twice.
#[derive(Debug, Default)]
struct Subscriptions {
    read: Mutex<Vec<(SubscriptionLabels, DeliveryStats)>>,
}

impl Subscriptions {
    fn set(&self, all: Vec<(ConsumerDeploy, DeliveryStats)>) {
        let samples = all
            .into_iter()
            .map(|(doc, stats)| {
                let connection_type = serde_json::to_value(doc.connection_type)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let labels = SubscriptionLabels {
                    subscription: doc.subscription_id,
                    event_type: doc.event_type.to_string(),
                    version: doc.version.to_string(),
                    target_unit: doc.target_unit.to_string(),
                    connection_type,
                };
                (labels, stats)
            })
            .collect();
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) = samples;
    }
}

impl Collector for Subscriptions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let counters: [Reading<u64>; 3] = [
            (
                "deliveries",
                "Events delivered to the subscription's target",
                |s| s.delivered,
            ),
            (
                "delivery_retries",
                "Failed attempts followed by another one",
                |s| s.retries,
            ),
            (
                "dead_letters",
                "Events that exhausted the retry policy",
                |s| s.dead_lettered,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, stats) in read.iter() {
                ConstCounter::new(value(stats)).encode(family.encode_family(labels)?)?;
            }
        }
        let gauges: [Reading<f64>; 3] = [
            (
                "subscription_lag_events",
                "Events of the subscription's version in the log after its cursor",
                |s| s.lag.as_ref().map_or(0.0, |l| l.events as f64),
            ),
            (
                "subscription_lag_seconds",
                "Age of the oldest of those events",
                |s| s.lag.as_ref().map_or(0.0, |l| l.seconds),
            ),
            (
                "subscription_pending_retries",
                "Events of the subscription waiting for another attempt",
                |s| s.pending_retries.unwrap_or_default() as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, stats) in read.iter() {
                ConstGauge::new(value(stats)).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Background tasks that ended: only a bug, or the stop, ends one.
#[derive(Clone, Default)]
pub struct Tasks(Arc<Mutex<BTreeSet<&'static str>>>);

impl Tasks {
    /// `task` that marks itself ended when it returns, panics or is aborted.
    pub fn watch(
        &self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let ended = Ended(self.clone(), name);
        async move {
            let _ended = ended;
            task.await;
        }
    }

    fn ended(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

struct Ended(Tasks, &'static str);

impl Drop for Ended {
    fn drop(&mut self) {
        (self.0)
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.1);
    }
}

#[derive(Clone)]
struct Host {
    metrics: Arc<Metrics>,
    router: Arc<Router>,
    log: Arc<EventLog>,
    store: SqliteStore,
    tasks: Tasks,
    /// One scrape at a time reads the subscriptions and encodes them.
    scraping: Arc<tokio::sync::Mutex<()>>,
}

/// `/metrics` (platform-admin keys: its labels name every team's subscriptions), and the
/// probes `/healthz` and `/readyz`, which need no key.
pub fn router(
    metrics: Arc<Metrics>,
    router: Arc<Router>,
    log: Arc<EventLog>,
    store: SqliteStore,
    tasks: Tasks,
) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Host {
            metrics,
            router,
            log,
            store,
            tasks,
            scraping: Arc::default(),
        })
}

async fn scrape(
    State(host): State<Host>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden(
            "the metrics name every team's subscriptions: a platform-admin key reads them",
        ));
    }
    let _one = host.scraping.lock().await;
    let subscriptions = host
        .router
        .health()
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    host.metrics.subscriptions.set(subscriptions);
    let mut text = String::new();
    encode(&mut text, &host.metrics.registry).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when every check passes, else 503; the body names each check's result.
async fn readyz(State(host): State<Host>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let mut check = |name: &str, result: Result<(), String>| {
        ready &= result.is_ok();
        checks.insert(
            name.into(),
            json!(result.err().unwrap_or_else(|| "ok".into())),
        );
    };
    check(
        "store",
        host.store
            .rules()
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    check(
        "event_log",
        host.router
            .log_reachable()
            .await
            .map_err(|e| format!("{e:#}")),
    );
    check("event_log_writes", host.log.writes());
    let ended = host.tasks.ended();
    check(
        "background_tasks",
        if ended.is_empty() {
            Ok(())
        } else {
            Err(format!("ended: {}", ended.join(", ")))
        },
    );
    let stopped = host.router.stopped_workers();
    check(
        "delivery_workers",
        if stopped.is_empty() {
            Ok(())
        } else {
            Err(format!("stopped: {}", stopped.join(", ")))
        },
    );
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (status, Json(json!({"status": word, "checks": checks}))).into_response()
}
