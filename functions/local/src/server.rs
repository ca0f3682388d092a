//! The local host: wires the embedded adapters to the portal and broker routers, runs local
//! provisioning, and serves both APIs until stopped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use busway_core::claim_check::{self, ClaimChecks};
use busway_core::ingest::LiveRoutes;
use busway_core::portal::Portal;
use busway_core::ports::{Bucket, ObjectStore};
use busway_core::provisioning::Provisioner;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::claim_checks;
use crate::delivery::{DeliveryConfig, Router};
use crate::eventlog::{EventLog, Fsync};
use crate::metrics::{self, Metrics, Tasks};
use crate::migrations::{EVENT_LOG, STORE};
use crate::objects::{FolderObjectStore, LOCAL_ENV};
use crate::provisioning::{self, LocalBuilder, LocalStarter, LocalTasks, Synth};
use crate::queues;
use crate::retention::{self, Retention};
use crate::store::SqliteStore;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub portal_addr: SocketAddr,
    pub broker_addr: SocketAddr,
    /// How often the configuration buckets are scanned for hand-edited deploy.json files.
    pub scan_interval: Duration,
    pub delivery: DeliveryConfig,
    pub retention: Retention,
    /// `--fsync`: when the event log's commits are flushed to disk.
    pub fsync: Fsync,
    /// `--synth`: the build step also synthesizes each deployed document's CDK template.
    pub synth: Option<Synth>,
    /// `--max-event-bytes`: the broker API's body limit.
    pub max_event_bytes: usize,
    /// `--max-entry-bytes`: the bus entry limit, above which events are claim-checked.
    pub max_entry_bytes: usize,
    /// How long claim-check objects are kept, and how often the expired ones are looked for.
    pub claim_check_retention: Duration,
    pub claim_check_sweep_interval: Duration,
    /// Each server answers 408 to a request that takes longer.
    pub request_timeout: Duration,
    /// Requests each server serves at once; the others wait for a turn within their timeout.
    pub max_concurrent_requests: usize,
    /// `BUSWAY_ADMIN_KEY`: a platform-admin key to accept; without it, one is made on the first
    /// start and shown once (`Running::new_admin_key`).
    pub admin_key: Option<String>,
    /// `--allow-loopback-targets`: accept `http://` loopback targets although the portal
    /// listens beyond loopback.
    pub allow_loopback_targets: bool,
}

impl Config {
    pub fn new(data_dir: PathBuf, portal_addr: SocketAddr, broker_addr: SocketAddr) -> Self {
        Self {
            data_dir,
            portal_addr,
            broker_addr,
            scan_interval: Duration::from_millis(500),
            delivery: DeliveryConfig::default(),
            retention: Retention::default(),
            fsync: Fsync::Always,
            synth: None,
            max_event_bytes: busway_injector::MAX_EVENT_BYTES,
            max_entry_bytes: claim_check::DEFAULT_MAX_ENTRY_BYTES,
            claim_check_retention: Duration::from_secs(claim_check::RETENTION_DAYS * 24 * 3600),
            claim_check_sweep_interval: Duration::from_secs(3600),
            request_timeout: REQUEST_TIMEOUT,
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
            admin_key: None,
            allow_loopback_targets: false,
        }
    }
}

/// Locks `DATA_DIR/busway.lock` for this process, or says which process has it: two brokers on
/// one data dir would each deliver every event and each serve only the routes it deployed.
/// `busway keys` and `busway queue` do not take it, so they work beside a running broker.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("busway.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "data dir {} is in use by another busway up (process {}): stop it, or give another --data-dir",
                dir.display(),
                holder.trim()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// A started local broker. Dropping it does not stop it; call `stop`.
pub struct Running {
    pub portal_addr: SocketAddr,
    pub broker_addr: SocketAddr,
    /// The platform-admin key this start made, when the data dir had none.
    pub new_admin_key: Option<String>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    router: Arc<Router>,
    /// Held until `stop` ends: one `busway up` per data dir.
    _lock: std::fs::File,
}

impl Running {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        let (db, log) = (dir.join("busway.db"), dir.join("events.db"));
        // Both files are checked before either is opened: a data dir of a newer busway is
        // refused whole, with neither file migrated (nor a lock file added).
        STORE.check(&db)?;
        EVENT_LOG.check(&log)?;
        let lock = lock_data_dir(dir)?;
        // The ports before the files: a start that cannot serve leaves an older data dir as
        // it was, for the release that wrote it.
        let portal_listener = TcpListener::bind(config.portal_addr)
            .await
            .with_context(|| format!("binding portal to {}", config.portal_addr))?;
        let broker_listener = TcpListener::bind(config.broker_addr)
            .await
            .with_context(|| format!("binding broker to {}", config.broker_addr))?;
        let portal_addr = portal_listener.local_addr()?;
        let broker_addr = broker_listener.local_addr()?;
        let store = SqliteStore::open(&db)?;
        let new_admin_key = busway_core::auth::bootstrap_admin(&store, config.admin_key.as_deref())
            .await
            .context("setting up the platform-admin key")?;
        let (starter, notifications) = LocalStarter::new();
        let starter = Arc::new(starter);
        let buckets = dir.join("buckets");
        let folders = Arc::new(FolderObjectStore::new(buckets.clone(), starter.clone())?);
        let objects: Arc<dyn ObjectStore> = folders.clone();
        let claim_checks = ClaimChecks {
            objects: objects.clone(),
            bucket_name: format!("{LOCAL_ENV}-{}", Bucket::SchemaBackup.base_name()),
            max_entry_bytes: config.max_entry_bytes,
        };
        let (live, committed) = tokio::sync::mpsc::channel(crate::eventlog::ROUTER_QUEUE);
        let (bus, reader) = EventLog::open_with(&log, claim_checks, live, config.fsync)?;
        let bus = Arc::new(bus);
        let reader = Arc::new(reader);
        let delivery = DeliveryConfig {
            replay_window: config.retention.events,
            ..config.delivery.clone()
        };
        let router = Router::new(store.clone(), reader.clone(), delivery)?;

        let routes = Arc::new(LiveRoutes::default());
        for (application, event_type, version, schema) in store.routes().await? {
            let writers = match event_type.parse() {
                Ok(name) => store.writers(&name).await?,
                Err(_) => Vec::new(),
            };
            let restored = (|| -> anyhow::Result<()> {
                routes
                    .insert(
                        application.parse()?,
                        writers,
                        event_type.parse()?,
                        busway_core::Version::new(version)?,
                        &schema,
                    )
                    .map_err(anyhow::Error::msg)
            })();
            if let Err(e) = restored {
                warn!(%event_type, version, error = %e, "a stored route could not be restored");
            }
        }

        let shared = Arc::new(store.clone());
        let portal = Arc::new(Portal {
            store: shared.clone(),
            deployments: shared.clone(),
            registry: shared.clone(),
            objects: objects.clone(),
            deliveries: Some(router.clone()),
            control: Some(router.clone()),
            provisioning: starter.clone(),
            keys: shared.clone(),
            bus_kind: None,
            idempotency: shared.clone(),
            audit: shared.clone(),
            targets: shared.clone(),
            secrets: shared.clone(),
            allow_loopback_targets: config.allow_loopback_targets
                || config.portal_addr.ip().is_loopback(),
        });
        let key_auth = busway_http::auth::KeyAuth::new(shared.clone());
        let machine = provisioning::state_machine()?;
        let provisioning_tasks = LocalTasks {
            provisioner: Provisioner {
                store: shared.clone(),
                deployments: shared,
                objects: objects.clone(),
            },
            builder: LocalBuilder {
                store: store.clone(),
                routes: routes.clone(),
                router: router.clone(),
            },
            synth: config.synth.clone(),
        };

        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let metrics = Arc::new(Metrics::default());
        let watched = Tasks::default();
        tasks.spawn(watched.watch("delivery router", router.clone().run(committed)));
        tasks.spawn(watched.watch(
            "retention",
            retention::run(config.retention.clone(), store.clone(), reader.clone()),
        ));
        tasks.spawn(watched.watch(
            "provisioning runner",
            provisioning::run(
                machine,
                provisioning_tasks,
                store.clone(),
                objects,
                metrics.clone(),
                notifications,
            ),
        ));
        tasks.spawn(watched.watch(
            "bucket scanner",
            provisioning::scan(
                buckets.clone(),
                store.clone(),
                starter,
                config.scan_interval,
            ),
        ));
        tasks.spawn(watched.watch(
            "claim-check sweeper",
            claim_checks::sweep(
                buckets,
                config.claim_check_retention,
                config.claim_check_sweep_interval,
                store.clone(),
                reader,
            ),
        ));
        let limits = (config.request_timeout, config.max_concurrent_requests);
        tasks.spawn(serve(
            portal_listener,
            // One document and one key layer for every portal route, the local host's own ones
            // included; the probes and the catalog page's sign-in take no key.
            busway_http::with_fallbacks(
                busway_http::openapi::documented(
                    busway_portal::api(portal)
                        .layer(axum::Extension(busway_portal::BrokerUrl(url::Url::parse(
                            &format!("http://{broker_addr}"),
                        )?)))
                        .merge(queues::api(store.clone()))
                        .merge(claim_checks::api(folders, store.clone())),
                )
                .layer(axum::middleware::from_fn_with_state(
                    key_auth.clone(),
                    busway_http::auth::key_auth,
                ))
                .merge(
                    metrics::router(
                        metrics.clone(),
                        router.clone(),
                        bus.clone(),
                        store.clone(),
                        watched,
                    )
                    .layer(axum::middleware::from_fn_with_state(
                        key_auth.clone(),
                        busway_http::auth::key_auth,
                    )),
                )
                .merge(crate::ui::router(key_auth.clone(), broker_addr))
                .layer(axum::middleware::from_fn(crate::ui::session_cookie)),
            ),
            limits,
            stopped.clone(),
        ));
        // The publish metrics and key authentication around the broker's router once, as
        // `serve`'s own layers (whose comment says why).
        let broker = tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                busway_injector::observe::Observing {
                    routes: routes.clone(),
                    observer: metrics,
                },
                busway_injector::observe::observe,
            ))
            .layer(axum::middleware::from_fn_with_state(
                key_auth.rate_limited(),
                busway_http::auth::key_auth,
            ))
            .service(busway_injector::router_with_limit(
                busway_injector::Broker {
                    routes,
                    store: None,
                    bus,
                },
                config.max_event_bytes,
            ));
        tasks.spawn(serve(broker_listener, broker, limits, stopped));
        info!(%portal_addr, %broker_addr, data_dir = %dir.display(), "busway is up");
        Ok(Self {
            portal_addr,
            broker_addr,
            new_admin_key,
            stop,
            tasks,
            router,
            _lock: lock,
        })
    }

    /// Stops serving, lets requests in flight finish, and ends the background work.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        // The servers end on the signal; the runner, scanner and sweeper loop forever and are aborted.
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        let mut served = 0;
        while served < 2 {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    Some(Ok(())) => served += 1,
                    Some(Err(_)) => {}
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        self.tasks.shutdown().await;
        self.router.shutdown().await;
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn wait_for_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        info!("shutting down");
        self.stop().await;
        Ok(())
    }
}

/// A request that takes longer is answered 408: every handler's wait (the store's lock, the
/// log's commit, a deployment) ends.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests served at once by each server; the others wait for a turn (within the timeout), so
/// a burst of clients cannot take every thread and connection of the store.
pub const MAX_CONCURRENT_REQUESTS: usize = 512;

async fn serve<S>(
    listener: TcpListener,
    api: S,
    (timeout, max_concurrent): (Duration, usize),
    mut stopped: watch::Receiver<bool>,
) where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    // Around the router once: `Router::layer` wraps each route in them, and each request then
    // clones and boxes its route's copy (about 6% of the broker's CPU per event).
    let service = tower::ServiceBuilder::new()
        // Outermost, so that every answer, a timeout's too, names its request.
        .layer(axum::middleware::from_fn(busway_http::request_id::layer))
        .layer(axum::middleware::from_fn_with_state(timeout, time_limit))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            max_concurrent,
        ))
        .service(api);
    if let Err(e) = axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service(service),
    )
    .with_graceful_shutdown(shutdown)
    .await
    {
        warn!(error = %e, "server ended with an error");
    }
}

/// Ends a request still running after `timeout` with 408 and the error body every other
/// refusal has.
async fn time_limit(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(busway_http::ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not answered within {} s (its body included)",
                timeout.as_secs()
            ),
        )),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
