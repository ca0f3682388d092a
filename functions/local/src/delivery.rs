//! Routing and delivery: each deployed rule has a worker that takes its events from the log
//! after its cursor and delivers each one at least once to its target (`target`), within its
//! subscription's flow control (`flow`). A worker at the log's end is fed by its event type's
//! shared reader, which reads each new page once and matches it against every rule of the type
//! at once (`feed`); a worker behind it (resumed, replaying, or too slow to keep up) reads the
//! log and matches by itself until it reaches the end, then joins the shared reader again.
//!
//! Each event is retried on its own, as EventBridge does: a failed attempt goes into the
//! subscription's durable retry schedule (`store::retries`) with exponential backoff and full
//! jitter, and the cursor and the other events move on at once. An event past its retry policy
//! (attempts, or age counted from the event's `time`) goes to the dead-letter store with the
//! attempts made and the last error. Order is not promised.
//!
//! The cursor is the position below which every event is settled (delivered, scheduled for a
//! retry, or dead-lettered). A worker holds at most a page of the log in memory, and its inbox
//! at the shared reader at most another, so a backlog of any size costs disk, not memory; the
//! router only wakes the readers of the event types a committed batch holds.
//!
//! A paused subscription has no worker: its cursor and its retry schedule wait where they are,
//! and the log keeps every event after its cursor. A replay moves its cursor back to just before
//! the first event published at or after the start time, so the worker reads them again as first
//! deliveries; the retry schedule is left as it is (an event both scheduled and replayed may be
//! delivered twice: at least once).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use async_trait::async_trait;
use busway_core::deploy::ConsumerDeploy;
use busway_core::envelope::eventbridge_time;
use busway_core::page::{Page, PageRequest};
use busway_core::ports::{
    ControlError, DeadLetter, Deliveries, DeliveryStats, EventStore, Lag, Replay, RunState,
    StoreError, SubscriberControl,
};
use busway_core::subscription::RetryPolicy;
use busway_pattern::{Pattern, PatternOptions};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::eventlog::{LogReader, Logged, is_full};
use crate::feed::{Fanout, Feed, Next, PAGE};
use crate::flow::Flow;
use crate::store::{Failed, Failure, ScheduledRetry, SqliteStore};
use crate::target::{AttemptError, Client, Target, rules_into_queue};

/// The longest pause of a subscription whose target keeps struggling, so it is tried again
/// soon after it recovers.
const PAUSE_CAP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Lambda Invoke API endpoint (`cargo lambda watch`); LAMBDA subscriptions need it.
    pub lambda_endpoint: Option<String>,
    /// An SQS-API server (moto, ElasticMQ, ...) for SQS subscriptions; embedded queues without it.
    pub sqs_endpoint: Option<String>,
    /// First retry delay; each retry doubles it up to `retry_cap`, and the wait is drawn from
    /// zero to that delay (full jitter).
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Per attempt, as EventBridge API destinations.
    pub timeout: Duration,
    /// How often cursors and counts are written.
    pub flush_every: Duration,
    /// How far back a replay may start: the log's retention.
    pub replay_window: Duration,
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
            replay_window: crate::retention::Retention::default().events,
        }
    }
}

impl DeliveryConfig {
    /// The wait before the attempt after `attempts` failed ones: drawn from zero to
    /// `retry_base * 2^(attempts - 1)`, capped at `retry_cap` (full jitter), so retries of many
    /// events spread out instead of arriving together.
    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self.retry_base.saturating_mul(
            1u32.checked_shl(attempts.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        exp.min(self.retry_cap).mul_f64(fastrand::f64())
    }
}

fn unix_ms() -> i64 {
    i64::try_from(busway_core::now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn now_text() -> String {
    busway_core::now()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

struct Shared {
    store: SqliteStore,
    reader: Arc<LogReader>,
    client: Client,
    config: DeliveryConfig,
}

/// A subscription's live counters, flushed with its cursor.
#[derive(Default)]
struct Progress {
    cursor: i64,
    stats: DeliveryStats,
    dirty: bool,
}

impl Progress {
    /// Every event up to `cursor` is settled.
    fn advance(&mut self, cursor: i64) {
        if cursor > self.cursor {
            self.cursor = cursor;
            self.dirty = true;
        }
    }

    fn failed(&mut self, error: &str) {
        self.stats.last_error = Some(error.to_string());
        self.stats.last_error_at = Some(now_text());
        self.dirty = true;
    }
}

struct Worker {
    doc: Arc<ConsumerDeploy>,
    /// Redriven dead letters are in the retry schedule.
    redriven: Arc<Notify>,
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::AbortHandle,
    feed: Arc<Feed>,
    detail_type: String,
}

/// The local EventBridge: one worker per deployed rule.
pub struct Router {
    shared: Arc<Shared>,
    workers: Mutex<HashMap<String, Worker>>,
    /// The shared reader of each event type with a deployed rule.
    fanouts: Mutex<HashMap<String, Arc<Fanout>>>,
    /// Tells workers' memberships of a shared reader apart.
    members: AtomicU64,
    tasks: Mutex<JoinSet<()>>,
    /// Held while cursors are written, so a pause or replay never races a flush of the cursor
    /// it replaces.
    saving: tokio::sync::Mutex<()>,
}

impl Router {
    pub fn new(
        store: SqliteStore,
        reader: Arc<LogReader>,
        config: DeliveryConfig,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                client: Client::new(store.clone(), &config)?,
                store,
                reader,
                config,
            }),
            workers: Mutex::new(HashMap::new()),
            fanouts: Mutex::new(HashMap::new()),
            members: AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
            saving: tokio::sync::Mutex::new(()),
        }))
    }

    /// Starts the workers of every deployed rule, then wakes the shared readers of the event
    /// types of each commit until `live` ends.
    pub async fn run(self: Arc<Self>, mut live: mpsc::Receiver<Vec<String>>) {
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
        while let Some(types) = live.recv().await {
            let fanouts = self.fanouts.lock().unwrap_or_else(|p| p.into_inner());
            for detail_type in &types {
                if let Some(fanout) = fanouts.get(detail_type) {
                    fanout.notify();
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

    /// Deploys a rule: compiles its pattern, checks its target, persists it, starts its worker
    /// (or keeps the running one of an unchanged rule). A new rule sees events committed from
    /// now on, as an EventBridge rule does. A paused subscription's rule is kept without a
    /// worker until it is resumed.
    pub async fn add_rule(&self, doc: ConsumerDeploy) -> anyhow::Result<()> {
        let _saving = self.saving.lock().await;
        self.deploy(doc).await
    }

    /// An embedded queue is read by the keys of the one team whose rules deliver into it, so a
    /// rule of another ARN of that name, or of another team, may not share it: each team could
    /// read and delete the other's messages.
    async fn queue_is_free(&self, name: &str, doc: &ConsumerDeploy) -> anyhow::Result<()> {
        let store = &self.shared.store;
        let team = |id: &str| {
            let id = id.to_owned();
            async move { anyhow::Ok(store.get_subscription(&id).await?.and_then(|s| s.team)) }
        };
        let ours = team(&doc.subscription_id).await?;
        for other in rules_into_queue(store, name).await? {
            if other.subscription_id == doc.subscription_id {
                continue;
            }
            let why = if other.connection_string != doc.connection_string {
                "the local host names embedded queues by the ARN's last part; choose another queue name".to_owned()
            } else {
                match team(&other.subscription_id).await? {
                    theirs if theirs == ours => continue,
                    Some(theirs) => {
                        format!("the queue belongs to team {theirs}, whose keys read it")
                    }
                    None => "the queue belongs to another team, whose keys read it".to_owned(),
                }
            };
            bail!(
                "embedded queue {name} already receives rule {} of subscription {}: {why}",
                other.rule_name,
                other.subscription_id
            );
        }
        Ok(())
    }

    async fn deploy(&self, doc: ConsumerDeploy) -> anyhow::Result<()> {
        let pattern =
            Pattern::parse_with(&doc.event_pattern.to_string(), &PatternOptions::default())
                .map_err(|e| anyhow!("{e}"))?;
        let target = Arc::new(Target::new(&doc, &self.shared.config)?);
        if let Target::Queue { name } = &*target {
            self.queue_is_free(name, &doc).await?;
        }
        let id = doc.subscription_id.clone();
        self.shared
            .store
            .put_rule(&id, &serde_json::to_value(&doc)?)
            .await?;
        // Another deployment of an unchanged rule: its running worker goes on where it is.
        let unchanged = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|w| !w.task.is_finished() && same_rule(&w.doc, &doc));
        if unchanged {
            info!(subscription = %id, "rule deployed, unchanged");
            return Ok(());
        }
        // A changed rule's worker stops where it is, and its successor starts from there.
        self.stop_saving(&id).await?;
        let last_seq = self.shared.reader.last_seq()?;
        let (cursor, stats) = match self.shared.store.progress(&id).await? {
            Some((cursor, stats)) if cursor <= last_seq => (cursor, stats),
            // New, or past the end: a power loss can take the log's last events, not yet
            // flushed, after they were delivered, and their positions are given again. The
            // cursor is saved at the end now, so a paused subscription resumes from there and
            // pruning never reads the stale one.
            saved => {
                let stats = saved.map(|(_, stats)| stats).unwrap_or_default();
                self.shared
                    .store
                    .save_progress(&[(id.clone(), last_seq, stats.clone())])
                    .await?;
                (last_seq, stats)
            }
        };
        if self.shared.store.is_paused(&id).await? {
            info!(subscription = %id, "rule deployed, paused");
            return Ok(());
        }
        let progress = Arc::new(Mutex::new(Progress {
            cursor,
            stats,
            dirty: false,
        }));
        let (wake, redriven) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let detail_type = doc.detail_type.clone();
        let moved = progress.clone();
        let feed = Arc::new(Feed::new(
            self.fanout(&detail_type)?,
            self.members.fetch_add(1, Ordering::Relaxed),
            pattern.clone(),
            wake.clone(),
            Arc::new(move |cursor| {
                moved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .advance(cursor)
            }),
        ));
        let doc = Arc::new(doc);
        let run = WorkerRun {
            shared: self.shared.clone(),
            doc: doc.clone(),
            pattern,
            target,
            progress: progress.clone(),
            feed: feed.clone(),
            wake: wake.clone(),
            redriven: redriven.clone(),
        };
        let task = self.spawn(run.run());
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                Worker {
                    doc,
                    redriven,
                    progress,
                    task,
                    feed,
                    detail_type,
                },
            );
        info!(subscription = %id, "rule deployed");
        Ok(())
    }

    /// Removes a rule and stops its worker; its scheduled retries go with it (as a deleted
    /// EventBridge rule's), its dead letters stay readable.
    pub async fn remove_rule(&self, subscription_id: &str) -> anyhow::Result<()> {
        // A resume or replay between reading the rule and writing it back would deploy it again.
        let _saving = self.saving.lock().await;
        self.remove_worker(subscription_id);
        self.shared.store.delete_rule(subscription_id).await?;
        self.shared.store.forget_retries(subscription_id).await?;
        Ok(())
    }

    fn remove_worker(&self, id: &str) -> Option<Worker> {
        let worker = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)?;
        worker.task.abort();
        worker.feed.leave();
        Some(worker)
    }

    /// The shared reader of `detail_type`, started at the log's end when it is new.
    fn fanout(&self, detail_type: &str) -> anyhow::Result<Arc<Fanout>> {
        let mut fanouts = self.fanouts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fanout) = fanouts.get(detail_type) {
            return Ok(fanout.clone());
        }
        let fanout = Fanout::new(
            detail_type.to_string(),
            self.shared.reader.clone(),
            self.shared.reader.last_seq()?,
        );
        fanouts.insert(detail_type.to_string(), fanout.clone());
        self.spawn(fanout.clone().run());
        Ok(fanout)
    }

    /// Stops a subscription's worker and saves where it was: every event below its cursor is
    /// settled, those above are read again by the next worker. Called with `saving` held.
    async fn stop_saving(&self, id: &str) -> anyhow::Result<()> {
        if let Some(worker) = self.remove_worker(id) {
            let (cursor, stats) = {
                let p = worker.progress.lock().unwrap_or_else(|p| p.into_inner());
                (p.cursor, p.stats.clone())
            };
            self.shared
                .store
                .save_progress(&[(id.to_string(), cursor, stats)])
                .await?;
        }
        Ok(())
    }

    /// Starts the worker of a deployed rule again from its saved cursor. Called with `saving`
    /// held.
    async fn restart(&self, id: &str) -> anyhow::Result<()> {
        if let Some(doc) = self.shared.store.rule(id).await? {
            self.deploy(serde_json::from_value(doc)?).await?;
        }
        Ok(())
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
        let _saving = self.saving.lock().await;
        let all: Vec<(String, Arc<Mutex<Progress>>)> = {
            let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            workers
                .iter()
                .map(|(id, w)| (id.clone(), w.progress.clone()))
                .collect()
        };
        let mut rows = Vec::new();
        for (id, progress) in &all {
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

    /// The backlog after `cursor` of the events of `detail_type`.
    async fn lag(&self, cursor: i64, detail_type: String) -> anyhow::Result<Lag> {
        let reader = self.shared.reader.clone();
        let (events, first_ms) =
            tokio::task::spawn_blocking(move || reader.backlog(cursor, &detail_type)).await??;
        let behind_ms = first_ms.map_or(0, |first| unix_ms().saturating_sub(first).max(0));
        Ok(Lag {
            events,
            seconds: behind_ms as f64 / 1000.0,
        })
    }

    /// Every deployed rule (paused ones too) with its delivery counts and lag.
    pub async fn health(&self) -> anyhow::Result<Vec<(ConsumerDeploy, DeliveryStats)>> {
        let mut all = Vec::new();
        for (id, doc) in self.shared.store.rules().await? {
            let Ok(doc) = serde_json::from_value::<ConsumerDeploy>(doc) else {
                continue;
            };
            all.push((doc, self.stats(&id).await?));
        }
        Ok(all)
    }

    /// Whether the event log answers a read.
    pub async fn log_reachable(&self) -> anyhow::Result<()> {
        let reader = self.shared.reader.clone();
        tokio::task::spawn_blocking(move || reader.last_seq()).await??;
        Ok(())
    }

    /// Workers whose task ended, which only a bug does: they deliver nothing until a restart.
    pub fn stopped_workers(&self) -> Vec<String> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, w)| w.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect()
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
    /// The counts as the worker holds them (or as saved, for a paused subscription), with the
    /// lag behind the log measured now.
    async fn stats(&self, subscription_id: &str) -> anyhow::Result<DeliveryStats> {
        let live = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(subscription_id)
            .map(|w| {
                let p = w.progress.lock().unwrap_or_else(|p| p.into_inner());
                (p.cursor, p.stats.clone(), w.detail_type.clone())
            });
        let (cursor, mut stats, detail_type) = match live {
            Some(live) => live,
            None => {
                let store = &self.shared.store;
                let Some((cursor, stats)) = store.progress(subscription_id).await? else {
                    return Ok(DeliveryStats::default());
                };
                let rule = store.rule(subscription_id).await?;
                let Some(detail_type) = rule
                    .as_ref()
                    .and_then(|doc| doc.get("detail_type")?.as_str())
                else {
                    return Ok(stats);
                };
                (cursor, stats, detail_type.to_string())
            }
        };
        stats.lag = Some(self.lag(cursor, detail_type).await?);
        stats.pending_retries = Some(self.shared.store.pending_retries(subscription_id).await?);
        Ok(stats)
    }

    async fn dead_letters(
        &self,
        subscription_id: &str,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        self.shared.store.dead_letters(subscription_id, page).await
    }

    /// Moves the dead letters into the retry schedule in one transaction, so two redrives at
    /// once take each letter once; the worker sends them under the retry policy afresh.
    /// A paused subscription's redriven letters wait in the schedule until it is resumed.
    async fn redrive(&self, subscription_id: &str) -> Result<usize, ControlError> {
        let redriven = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(subscription_id)
            .map(|w| w.redriven.clone());
        if redriven.is_none() && !self.shared.store.is_paused(subscription_id).await? {
            return Err(ControlError::Conflict(format!(
                "subscription {subscription_id} has no deployed rule yet"
            )));
        }
        let count = self
            .shared
            .store
            .redrive_dead_letters(subscription_id)
            .await?;
        if let Some(redriven) = redriven {
            redriven.notify_one();
        }
        Ok(count)
    }
}

#[async_trait]
impl SubscriberControl for Router {
    /// A subscription whose rule is not deployed yet shows the state it will start in.
    async fn state(&self, subscription_id: &str) -> Result<Option<RunState>, ControlError> {
        Ok(Some(
            if self.shared.store.is_paused(subscription_id).await? {
                RunState::Paused
            } else {
                RunState::Running
            },
        ))
    }

    async fn pause(&self, subscription_id: &str) -> Result<(), ControlError> {
        let _saving = self.saving.lock().await;
        if !self.shared.store.set_paused(subscription_id, true).await? {
            return Err(ControlError::Conflict(format!(
                "subscription {subscription_id} is paused already"
            )));
        }
        self.stop_saving(subscription_id).await?;
        info!(subscription = %subscription_id, "paused");
        Ok(())
    }

    async fn resume(&self, subscription_id: &str) -> Result<(), ControlError> {
        let _saving = self.saving.lock().await;
        if !self.shared.store.set_paused(subscription_id, false).await? {
            return Err(ControlError::Conflict(format!(
                "subscription {subscription_id} is running"
            )));
        }
        self.restart(subscription_id).await?;
        info!(subscription = %subscription_id, "resumed");
        Ok(())
    }

    /// Moves the cursor back (never forward, which would skip events) to just before the first
    /// event whose `time` is at or after `start` (to the second, as the log keeps it).
    async fn replay(
        &self,
        subscription_id: &str,
        start: time::OffsetDateTime,
    ) -> Result<Replay, ControlError> {
        let earliest = busway_core::now() - self.shared.config.replay_window;
        if start < earliest {
            return Err(ControlError::BadStart(format!(
                "is before the log's retention: the earliest start is {}",
                eventbridge_time(earliest)
            )));
        }
        let _saving = self.saving.lock().await;
        self.stop_saving(subscription_id).await?;
        let replayed = async {
            let Some((cursor, stats)) = self.shared.store.progress(subscription_id).await? else {
                return Err(ControlError::Conflict(format!(
                    "subscription {subscription_id} has no deployed rule yet"
                )));
            };
            let (reader, from) = (self.shared.reader.clone(), eventbridge_time(start));
            let first = tokio::task::spawn_blocking(move || reader.first_at_or_after(&from))
                .await
                .map_err(anyhow::Error::from)??;
            let cursor = first.map_or(cursor, |seq| cursor.min(seq - 1));
            self.shared
                .store
                .save_progress(&[(subscription_id.to_string(), cursor, stats)])
                .await?;
            info!(subscription = %subscription_id, cursor, "replaying");
            Ok(())
        }
        .await;
        // A paused subscription replays when resumed.
        self.restart(subscription_id).await?;
        replayed.map(|()| Replay::Started)
    }
}

/// Where an attempted event came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Read from the log after the cursor: its first attempt.
    Log,
    /// The retry schedule, with the attempts made before and where its age counts from.
    Retry { attempts: u32, age_from: i64 },
}

struct Outcome {
    event: Logged,
    source: Source,
    result: Result<(), AttemptError>,
    /// From the attempt's start to its answer.
    took: Duration,
    /// For a failed attempt: what comes next, already recorded in the store.
    next: Option<Failed>,
}

struct WorkerRun {
    shared: Arc<Shared>,
    doc: Arc<ConsumerDeploy>,
    pattern: Pattern,
    /// Shared with each attempt's task.
    target: Arc<Target>,
    progress: Arc<Mutex<Progress>>,
    feed: Arc<Feed>,
    wake: Arc<Notify>,
    redriven: Arc<Notify>,
}

/// A worker's position: events read from the log and not yet settled.
struct Reading {
    /// The last position read from the log.
    read_to: i64,
    /// Read, matching, not yet attempted: at most a page.
    pending: VecDeque<Logged>,
    /// First attempts in flight, by position.
    in_flight: BTreeSet<i64>,
    /// The last read found nothing new; a wake says there is more.
    at_end: bool,
}

impl Reading {
    /// Every event before the first unsettled one is settled.
    fn cursor(&self) -> i64 {
        let first = [
            self.in_flight.first().copied(),
            self.pending.front().map(|e| e.seq),
        ]
        .into_iter()
        .flatten()
        .min();
        first.map_or(self.read_to, |seq| seq - 1)
    }
}

impl WorkerRun {
    fn id(&self) -> &str {
        &self.doc.subscription_id
    }

    async fn run(self) {
        let config = &self.shared.config;
        let mut flow = Flow::new(
            &self.doc.delivery,
            config.retry_base,
            config.retry_cap.min(PAUSE_CAP),
            config.timeout,
        );
        let mut reading = Reading {
            read_to: self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .cursor,
            pending: VecDeque::new(),
            in_flight: BTreeSet::new(),
            at_end: false,
        };
        // When the next scheduled retry is due (unix ms); checked at start, as a restart
        // resumes the schedule where it was.
        let mut retry_due = Some(0);
        let mut attempts: JoinSet<Outcome> = JoinSet::new();
        loop {
            self.start_attempts(&mut flow, &mut reading, &mut retry_due, &mut attempts)
                .await;
            if reading.at_end && reading.pending.is_empty() && reading.in_flight.is_empty() {
                reading.read_to = self.feed.rest(reading.read_to);
            }
            self.set_cursor(reading.cursor());
            let now = Instant::now();
            let wake_at = wake_at(
                now,
                flow.wait_until(now),
                flow.window().saturating_sub(attempts.len()),
                !reading.pending.is_empty() || !reading.at_end,
                retry_due.map(|due| {
                    Duration::from_millis(u64::try_from(due.saturating_sub(unix_ms())).unwrap_or(0))
                }),
            );
            tokio::select! {
                Some(joined) = attempts.join_next(), if !attempts.is_empty() => {
                    if let Ok(outcome) = joined {
                        self.settle(outcome, &mut flow, &mut reading, &mut retry_due).await;
                    }
                }
                () = self.wake.notified() => reading.at_end = false,
                () = self.redriven.notified() => retry_due = Some(0),
                () = sleep_until(wake_at), if wake_at.is_some() => {}
            }
        }
    }

    /// Starts as many attempts as the flow allows: due retries first (they are older), then
    /// events from the log.
    async fn start_attempts(
        &self,
        flow: &mut Flow,
        reading: &mut Reading,
        retry_due: &mut Option<i64>,
        attempts: &mut JoinSet<Outcome>,
    ) {
        loop {
            let now = Instant::now();
            let room = flow.window().saturating_sub(attempts.len());
            if room == 0 || flow.wait_until(now).is_some() {
                return;
            }
            if retry_due.is_some_and(|due| due <= unix_ms()) {
                let lease = self.shared.config.timeout + Duration::from_secs(5);
                let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
                match self
                    .shared
                    .store
                    .take_due_retries(self.id(), room, lease, max_age_ms(&self.doc.retry_policy))
                    .await
                {
                    Ok(due) => {
                        *retry_due = due.next_due;
                        if due.dead_lettered > 0 {
                            info!(subscription = %self.id(), count = due.dead_lettered, "scheduled retries past their maximum age dead-lettered");
                            let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
                            p.stats.dead_lettered += due.dead_lettered as u64;
                            p.dirty = true;
                        }
                        for retry in due.taken {
                            flow.started(Instant::now());
                            self.start(attempts, retry_event(&self.doc, retry));
                        }
                    }
                    Err(e) => {
                        warn!(subscription = %self.id(), error = %e, "the retry schedule could not be read; trying again");
                        *retry_due = Some(unix_ms() + 1000);
                    }
                }
                continue;
            }
            if let Some(event) = reading.pending.pop_front() {
                reading.in_flight.insert(event.seq);
                flow.started(now);
                self.start(attempts, (event, Source::Log));
                continue;
            }
            if reading.at_end {
                return;
            }
            let until = match self.feed.next(reading.read_to) {
                Next::Page(to, matching) => {
                    reading.read_to = to;
                    reading.pending.extend(matching);
                    continue;
                }
                Next::Nothing => {
                    reading.at_end = true;
                    continue;
                }
                Next::Read(until) => until,
            };
            match self.read_page(reading.read_to, until).await {
                Ok((Some(last), matching, full)) => {
                    reading.read_to = last;
                    reading.pending.extend(matching);
                    // A page short of full reached the log's end as it read: the shared reader
                    // takes over, as a log that keeps growing may never be found at its end.
                    if until.is_none() && !full {
                        self.feed.join(last);
                    }
                }
                Ok((None, _, _)) => match until {
                    // Nothing of this type up to the shared reader's position.
                    Some(until) => reading.read_to = until,
                    // The end of the log: the shared reader takes over from here.
                    None => self.feed.join(reading.read_to),
                },
                Err(e) => {
                    warn!(subscription = %self.id(), error = %format!("{e:#}"), "reading the log failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return;
                }
            }
        }
    }

    /// This rule's events after `from`, up to `until` when given: the last position read, those
    /// that match, and whether the page was full (more may follow at once).
    async fn read_page(
        &self,
        from: i64,
        until: Option<i64>,
    ) -> anyhow::Result<(Option<i64>, Vec<Logged>, bool)> {
        let (reader, detail_type) = (self.shared.reader.clone(), self.doc.detail_type.clone());
        let mut page =
            tokio::task::spawn_blocking(move || reader.after(from, Some(&detail_type), PAGE))
                .await??;
        let full = is_full(&page, PAGE);
        let mut last = page.last().map(|e| e.seq);
        if let Some(until) = until
            && last.is_some_and(|last| last > until)
        {
            page.retain(|e| e.seq <= until);
            last = Some(until);
        }
        let matching = page
            .into_iter()
            .filter(|e| self.pattern.matches_text(&e.json).unwrap_or(false))
            .collect();
        Ok((last, matching, full))
    }

    /// An attempt, and its bookkeeping in the store: done in the attempt's own task, so a
    /// failure's durable write never holds the worker from starting and settling the others (the
    /// event stays unsettled, the cursor behind it, until the write is done).
    fn start(&self, attempts: &mut JoinSet<Outcome>, (event, source): (Logged, Source)) {
        let (shared, doc) = (self.shared.clone(), self.doc.clone());
        let target = self.target.clone();
        attempts.spawn(async move {
            let started = Instant::now();
            let result = shared.client.attempt(&target, &event).await;
            let took = started.elapsed();
            let id = doc.subscription_id.as_str();
            let next = match &result {
                Ok(()) => {
                    if matches!(source, Source::Retry { .. })
                        && let Err(e) = shared.store.retry_delivered(id, event.seq).await
                    {
                        // Left scheduled, it is sent again: at least once.
                        warn!(subscription = %id, error = %e, "a delivered retry could not be unscheduled");
                    }
                    None
                }
                Err(error) => {
                    let (made, age_from) = match source {
                        Source::Log => (1, event.time_ms),
                        Source::Retry { attempts, age_from } => (attempts + 1, age_from),
                    };
                    let next = next_step(
                        &shared.config,
                        &doc.retry_policy,
                        error,
                        made,
                        age_from,
                        unix_ms(),
                    );
                    let failure = Failure {
                        subscription_id: id,
                        seq: event.seq,
                        event: &event.json,
                        attempts: made,
                        age_from,
                        error: &error.message,
                        next: next.clone(),
                    };
                    while let Err(e) = shared.store.record_failure(failure.clone()).await {
                        warn!(subscription = %id, error = %e, "a failed delivery could not be recorded; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Some(next)
                }
            };
            log_attempt(id, &event, &source, &result, next.as_ref());
            Outcome {
                event,
                source,
                result,
                took,
                next,
            }
        });
    }

    fn set_cursor(&self, cursor: i64) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .advance(cursor);
    }

    /// Counts a delivery, or schedules the next attempt, or dead-letters the event: durably
    /// before the cursor can pass it.
    async fn settle(
        &self,
        outcome: Outcome,
        flow: &mut Flow,
        reading: &mut Reading,
        retry_due: &mut Option<i64>,
    ) {
        let Outcome {
            event,
            source,
            result,
            took,
            next,
        } = outcome;
        match result {
            Ok(()) => {
                flow.succeeded(took);
                let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
                p.stats.delivered += 1;
                p.stats.last_delivered_at = Some(now_text());
                p.dirty = true;
            }
            Err(error) => {
                if error.congestion {
                    flow.struggled(Instant::now(), error.retry_after);
                }
                let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
                p.failed(&error.message);
                match next {
                    Some(Failed::Retry { due_at }) => {
                        p.stats.retries += 1;
                        *retry_due = Some(retry_due.map_or(due_at, |d| d.min(due_at)));
                    }
                    Some(Failed::Dead) => p.stats.dead_lettered += 1,
                    None => {}
                }
            }
        }
        if matches!(source, Source::Log) {
            reading.in_flight.remove(&event.seq);
        }
    }
}

/// One line per delivery attempt, naming the event's `event_id` and `request_id`, so an event
/// is followed from the request that published it to each attempt. The event is parsed only
/// when the line is written.
fn log_attempt(
    subscription: &str,
    event: &Logged,
    source: &Source,
    result: &Result<(), crate::target::AttemptError>,
    next: Option<&Failed>,
) {
    let written = if matches!(next, Some(Failed::Dead)) {
        tracing::enabled!(tracing::Level::WARN)
    } else {
        tracing::enabled!(tracing::Level::INFO)
    };
    if !written {
        return;
    }
    let attempt = match source {
        Source::Log => 1,
        Source::Retry { attempts, .. } => attempts + 1,
    };
    let parsed: serde_json::Value = serde_json::from_str(&event.json).unwrap_or_default();
    let metadata = &parsed["detail"]["metadata"];
    let (event_id, request_id) = (
        metadata["event_id"].as_str().unwrap_or_default(),
        metadata["request_id"].as_str().unwrap_or_default(),
    );
    match (result, next) {
        (Ok(()), _) => info!(%subscription, event_id, request_id, attempt, "delivered"),
        (Err(e), Some(Failed::Retry { due_at })) => {
            let retry_in_ms = due_at.saturating_sub(unix_ms()).max(0);
            info!(%subscription, event_id, request_id, attempt, error = %e.message, retry_in_ms, "delivery attempt failed")
        }
        // The event's last attempt: an operator looks for these.
        (Err(e), _) => {
            warn!(%subscription, event_id, request_id, attempt, error = %e.message, "delivery failed for good: dead-lettered")
        }
    }
}

/// Whether two deployed documents describe the same rule: they differ at most in the
/// deployment that wrote them.
fn same_rule(running: &ConsumerDeploy, deployed: &ConsumerDeploy) -> bool {
    let running = ConsumerDeploy {
        deployment_id: deployed.deployment_id.clone(),
        ..running.clone()
    };
    running == *deployed
}

fn max_age_ms(policy: &RetryPolicy) -> i64 {
    i64::from(policy.maximum_event_age_seconds) * 1000
}

/// After `made` failed attempts at `now`: another one, unless the error is final or the policy
/// is spent (retries, or age from `age_from`). An attempt that would fall at or past the age is
/// not scheduled, as the schedule dead-letters a retry past its age when it is due.
fn next_step(
    config: &DeliveryConfig,
    policy: &RetryPolicy,
    error: &AttemptError,
    made: u32,
    age_from: i64,
    now: i64,
) -> Failed {
    let deadline = age_from.saturating_add(max_age_ms(policy));
    if !error.retryable || made > policy.maximum_retry_attempts {
        return Failed::Dead;
    }
    let wait = config
        .backoff(made)
        .max(error.retry_after.unwrap_or_default());
    let due_at = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    if due_at >= deadline {
        return Failed::Dead;
    }
    Failed::Retry { due_at }
}

fn retry_event(doc: &ConsumerDeploy, retry: ScheduledRetry) -> (Logged, Source) {
    (
        Logged {
            seq: retry.seq,
            detail_type: doc.detail_type.clone(),
            json: retry.event.into(),
            time_ms: retry.age_from,
        },
        Source::Retry {
            attempts: retry.attempts,
            age_from: retry.age_from,
        },
    )
}

/// When a worker wakes by itself, given its flow's wait, the `room` left in its window, whether
/// it has events to attempt, and when its next retry is due. A full window waits for an attempt
/// to finish, which wakes the worker anyway; otherwise no attempt starts before the flow allows,
/// so a due retry never wakes it sooner (it would spin through the flow's whole pause).
fn wake_at(
    now: Instant,
    flow_wait: Option<Instant>,
    room: usize,
    has_work: bool,
    retry_in: Option<Duration>,
) -> Option<Instant> {
    if room == 0 {
        return None;
    }
    let retry = retry_in.map(|wait| flow_wait.map_or(now + wait, |flow| flow.max(now + wait)));
    [flow_wait.filter(|_| has_work), retry]
        .into_iter()
        .flatten()
        .min()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use busway_core::deploy::{DeployAction, consumer_deploy};
    use busway_core::subscription::{
        ConsumerConnection, DeliverySettings, Subscription, SubscriptionState,
    };

    use super::*;
    use crate::eventlog::EventLog;

    fn https_rule(id: &str) -> ConsumerDeploy {
        let subscription = Subscription {
            id: id.into(),
            event_type: "scanned_parcel".parse().expect("a name"),
            version: busway_core::Version::FIRST,
            target_unit: "u2".parse().expect("a unit"),
            connection_type: ConsumerConnection::Https,
            connection_string: "https://consumer.example.com/hook".into(),
            retry_policy: RetryPolicy::default(),
            delivery: DeliverySettings::default(),
            state: SubscriptionState::Active,
            created_at: busway_core::now(),
            team: None,
            replay_from: None,
        };
        let application = "demo".parse().expect("an application");
        consumer_deploy(
            DeployAction::Deploy,
            "6f1c1f5e-7b1a-4f59-8f0e-2b2f1f0e4c11",
            &application,
            &subscription,
            None,
        )
    }

    /// As after a power loss took the log's last events: the saved cursors are past its end,
    /// and the positions come again. Both are saved at the end, so the paused one resumes from
    /// there and pruning reads the lowered cursors.
    #[tokio::test]
    async fn a_cursor_past_the_logs_end_is_saved_at_the_end_for_paused_and_running_rules() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = SqliteStore::open(&dir.path().join("busway.db")).expect("a store");
        let (starter, _notifications) = crate::provisioning::LocalStarter::new();
        let claim_checks = busway_core::claim_check::ClaimChecks {
            objects: Arc::new(
                crate::objects::FolderObjectStore::new(
                    dir.path().join("buckets"),
                    Arc::new(starter),
                )
                .expect("the folders"),
            ),
            bucket_name: "local-event-schemas-backup-bucket".into(),
            max_entry_bytes: busway_core::claim_check::DEFAULT_MAX_ENTRY_BYTES,
        };
        let (live, _committed) = mpsc::channel(crate::eventlog::ROUTER_QUEUE);
        let (_log, reader) =
            EventLog::open(&dir.path().join("events.db"), claim_checks, live).expect("a log");
        let end = reader.last_seq().expect("the log's end");
        let router = Router::new(store.clone(), Arc::new(reader), DeliveryConfig::default())
            .expect("a router");
        let (paused, running) = ("paused-subscription", "running-subscription");
        let past_end =
            [paused, running].map(|id| (id.to_string(), end + 5, DeliveryStats::default()));
        store.save_progress(&past_end).await.expect("saved");
        store.set_paused(paused, true).await.expect("paused");

        for id in [paused, running] {
            router.add_rule(https_rule(id)).await.expect("deployed");
            let (cursor, _) = store.progress(id).await.expect("read").expect("a cursor");
            assert_eq!(cursor, end, "{id}");
        }
        assert_eq!(store.lowest_cursor().await.expect("read"), Some(end));
        router.shutdown().await;
    }

    #[test]
    fn backoff_is_full_jitter_up_to_the_doubled_delay_within_the_cap() {
        let config = DeliveryConfig {
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_millis(1000),
            ..DeliveryConfig::default()
        };
        for (attempts, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let waits: Vec<Duration> = (0..500).map(|_| config.backoff(attempts)).collect();
            let ceiling = Duration::from_millis(ceiling);
            assert!(waits.iter().all(|w| *w <= ceiling), "{attempts}: {waits:?}");
            // Full jitter draws from zero: some waits are short, some near the ceiling.
            assert!(waits.iter().any(|w| *w < ceiling / 4), "{attempts}");
            assert!(waits.iter().any(|w| *w > ceiling * 3 / 4), "{attempts}");
        }
    }

    #[test]
    fn a_retry_that_would_fall_at_or_past_the_events_age_is_dead_lettered_at_once() {
        let config = DeliveryConfig::default();
        let policy = RetryPolicy::new(185, 60).expect("a valid policy");
        let asked_ten_seconds = AttemptError {
            message: "503".into(),
            retryable: true,
            congestion: true,
            retry_after: Some(Duration::from_secs(10)),
        };
        let now = unix_ms();
        let step = |age_from| next_step(&config, &policy, &asked_ten_seconds, 1, age_from, now);
        assert!(matches!(step(now - 55_000), Failed::Dead));
        assert!(matches!(step(now - 50_000), Failed::Dead), "due at the age");
        assert!(matches!(step(now - 61_000), Failed::Dead));
        let Failed::Retry { due_at } = step(now) else {
            panic!("a fresh event is retried");
        };
        assert!((now + 10_000..now + 60_000).contains(&due_at), "{due_at}");
    }

    #[test]
    fn a_due_retry_wakes_the_worker_only_when_an_attempt_can_start() {
        let now = Instant::now();
        let due = Some(Duration::ZERO);
        let paused = Some(now + Duration::from_secs(5));
        assert_eq!(wake_at(now, None, 1, false, due), Some(now));
        assert_eq!(
            wake_at(now, None, 0, false, due),
            None,
            "a full window waits for an attempt to finish"
        );
        assert_eq!(
            wake_at(now, paused, 0, true, due),
            None,
            "a full window waits for an attempt to finish"
        );
        assert_eq!(wake_at(now, paused, 2, false, due), paused);
    }

    #[test]
    fn a_worker_wakes_when_its_flow_lets_its_next_attempt_start() {
        let now = Instant::now();
        let paused = Some(now + Duration::from_secs(5));
        let (soon, later) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(wake_at(now, paused, 2, false, Some(soon)), paused);
        assert_eq!(
            wake_at(now, paused, 2, false, Some(later)),
            Some(now + later)
        );
        assert_eq!(wake_at(now, paused, 2, true, Some(later)), paused);
        assert_eq!(wake_at(now, paused, 2, true, None), paused);
        assert_eq!(
            wake_at(now, paused, 2, false, None),
            None,
            "nothing to attempt"
        );
        assert_eq!(wake_at(now, None, 2, false, Some(later)), Some(now + later));
    }
}
