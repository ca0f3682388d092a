//! The local bus: an append-only, ordered event log in its own SQLite file. One writer thread
//! commits whatever arrived while its previous commit and flush ran (group commit), so every
//! producer waiting at that moment shares one fsync. The router learns which event types each
//! commit holds, in order, and its workers read the events from the log.
//!
//! `Fsync` says when a commit reaches the disk: before its events are answered (`always`, by the
//! writer), or at most an interval later (`interval=<ms>`, by a flusher thread, so the writer
//! never waits for the disk). Either way a commit is written to the operating system before the
//! answer, so killing the process loses no answered event; a power loss can lose the last
//! interval's events in the second mode.
//!
//! Every queue on the way is bounded: when producers outrun the disk, a request that finds the
//! writer's queue full is refused as throttled (the broker answers 503 with `Retry-After`), and
//! when the router falls behind, the writer waits for it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use busway_core::claim_check::{ClaimChecks, Detail};
use busway_core::envelope::{BusEvent, eventbridge_json, eventbridge_time};
use busway_core::ingest::THROTTLED;
use busway_core::ports::{Accepted, Bus, EntryFailure};
use rusqlite::config::DbConfig;
use rusqlite::wal::CheckpointMode::PASSIVE;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::migrations::EVENT_LOG;

const MAX_BATCH: usize = 4096;
/// Requests waiting for the writer; beyond them, producers are told to retry.
pub const WRITER_QUEUE: usize = 8192;
/// Commits the router has not heard of yet; beyond them, the writer waits.
pub const ROUTER_QUEUE: usize = 64;

/// The `account` and `region` of events delivered by the local host.
pub const LOCAL_ACCOUNT: &str = "000000000000";
pub const LOCAL_REGION: &str = "local";

/// When a commit of the log is flushed to disk (`busway up --fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Every group commit is flushed before any of its events is answered.
    #[default]
    Always,
    /// Commits are answered once the operating system has them, and flushed at most this long
    /// after: a power loss may lose that window, a killed process loses nothing.
    Interval(Duration),
}

impl FromStr for Fsync {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "always" {
            return Ok(Self::Always);
        }
        let ms = text
            .strip_prefix("interval=")
            .and_then(|ms| ms.strip_suffix("ms").unwrap_or(ms).parse::<u64>().ok())
            .filter(|ms| (1..=60_000).contains(ms))
            .ok_or_else(|| {
                format!("{text:?}: expected `always` or `interval=<ms>` with 1 to 60000 ms")
            })?;
        Ok(Self::Interval(Duration::from_millis(ms)))
    }
}

type Reply = oneshot::Sender<anyhow::Result<Vec<Result<Accepted, EntryFailure>>>>;

/// A committed event: its position in the log and the JSON a target receives.
#[derive(Debug, Clone)]
pub struct Logged {
    pub seq: i64,
    pub detail_type: String,
    pub json: Arc<str>,
    /// The event's `time` in unix milliseconds: its age counts from it.
    pub time_ms: i64,
}

/// An event as stored: serialized by the caller, so the single writer only writes.
struct Row {
    id: String,
    event_id: String,
    source: String,
    detail_type: String,
    time: String,
    detail: String,
}

impl Row {
    /// `detail` is the text the bus carries: the event's detail, or its claim check.
    fn new(event: BusEvent, detail: String) -> Self {
        Self {
            time: eventbridge_time(event.time),
            detail,
            id: event.id,
            event_id: event.event_id,
            source: event.source,
            detail_type: event.detail_type,
        }
    }

    fn logged(&self, seq: i64) -> Logged {
        Logged {
            seq,
            detail_type: self.detail_type.clone(),
            time_ms: unix_ms(&self.time),
            json: eventbridge_json(
                &self.id,
                &self.detail_type,
                &self.source,
                LOCAL_ACCOUNT,
                &self.time,
                LOCAL_REGION,
                &self.detail,
            )
            .into(),
        }
    }
}

/// `time` as stored (RFC 3339) in unix milliseconds; 0 for text that is not a time, which
/// makes such an event as old as can be.
fn unix_ms(time: &str) -> i64 {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub struct EventLog {
    tx: mpsc::SyncSender<(Vec<Row>, Reply)>,
    /// Reads whether the log holds a large event's `event_id` before its data is written.
    seen: Arc<LogReader>,
    /// The large events whose data is being written and logged.
    storing: Arc<Mutex<HashSet<(String, String)>>>,
    /// Why the writer's last commit or flush failed; `None` once one succeeds (`/readyz`).
    failing: Failing,
    /// The entry limit and the claim checks above it, as on EventBridge.
    claim_checks: ClaimChecks,
}

type Failing = Arc<Mutex<Option<String>>>;

fn set(failing: &Failing, why: Option<String>) {
    *failing.lock().unwrap_or_else(|p| p.into_inner()) = why;
}

/// Reads the log from a position, on its own connection (WAL readers never block the writer).
pub struct LogReader {
    conn: Mutex<Connection>,
}

/// Opens a connection to the log migrated to this release's version; refuses a file of a newer
/// busway before writing to it (`migrations::NewerFile`).
fn open(path: &Path) -> anyhow::Result<Connection> {
    let mut conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Plans that never depend on bound values: otherwise a statement with `LIMIT ?` is prepared
    // again on every use of the cache, which clears its bindings (SQLite's `sqlite3ExprIsInteger`).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    EVENT_LOG.apply(&mut conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: a commit is written to the WAL without waiting for the disk; the writer flushes
    // the WAL itself, once per group commit or per interval (`Fsync`). SQLite still flushes
    // around its checkpoints, and the log stays consistent whatever a power loss cuts.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl EventLog {
    /// Opens the log; the event types of each commit are sent to `live` in order. Events whose
    /// entry is above `claim_checks.max_entry_bytes` are logged claim-checked.
    pub fn open(
        path: &Path,
        claim_checks: ClaimChecks,
        live: tokio_mpsc::Sender<Vec<String>>,
    ) -> anyhow::Result<(Self, LogReader)> {
        Self::open_with(path, claim_checks, live, Fsync::Always)
    }

    /// `open`, flushing commits as `fsync` says.
    pub fn open_with(
        path: &Path,
        claim_checks: ClaimChecks,
        live: tokio_mpsc::Sender<Vec<String>>,
        fsync: Fsync,
    ) -> anyhow::Result<(Self, LogReader)> {
        // Once, before the first connection: the check must not run while one is open.
        EVENT_LOG.check(path)?;
        let mut conn = open(path)?;
        checkpoint_apart(&mut conn, open(path)?)?;
        let reader = LogReader {
            conn: Mutex::new(open(path)?),
        };
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let failing = Failing::default();
        let writer = Writer::new(conn, wal.into(), fsync, live, failing.clone())?;
        let (tx, rx) = mpsc::sync_channel(WRITER_QUEUE);
        std::thread::Builder::new()
            .name("busway-eventlog".into())
            .spawn(move || writer.run(rx))
            .context("starting the event log writer")?;
        Ok((
            Self {
                tx,
                seen: Arc::new(LogReader {
                    conn: Mutex::new(open(path)?),
                }),
                storing: Arc::default(),
                failing,
                claim_checks,
            },
            reader,
        ))
    }

    /// Whether the log takes events: `Err` with the reason while its last commit or flush
    /// failed (a full disk), and for good once a flush failed.
    pub fn writes(&self) -> Result<(), String> {
        match &*self.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }
}

/// The log's one thread: commits every request that arrived while its last commit (and, with
/// `always`, its flush) ran, in one transaction the operating system holds when it returns;
/// flushes the WAL file (`fdatasync`) before answering (`always`) or leaves that to the
/// `Flusher` (`interval`); tells the router; answers. With `always` the flush stays on this
/// thread: a second thread that flushed while this one wrote the next batch cost a hand-off per
/// commit, a quarter more CPU per event and 10% fewer events/s at 32 connections
/// (docs/benchmarks.md). With `interval` a flush on this thread held every producer up once per
/// interval, which made `interval` slower than `always`.
struct Writer {
    conn: Connection,
    flushing: Flushing,
    live: tokio_mpsc::Sender<Vec<String>>,
    failing: Failing,
}

/// Who flushes the writer's commits.
enum Flushing {
    /// `always`: the writer, the WAL after each commit.
    Always(Wal),
    /// `interval`: the thread that flushes the commits of the last interval.
    Interval(Flusher),
}

impl Flushing {
    /// Whether the flusher's thread failed a flush.
    fn stopped(&self) -> bool {
        matches!(self, Self::Interval(flusher) if flusher.stopped())
    }
}

impl Writer {
    fn new(
        conn: Connection,
        wal: PathBuf,
        fsync: Fsync,
        live: tokio_mpsc::Sender<Vec<String>>,
        failing: Failing,
    ) -> anyhow::Result<Self> {
        let wal = Wal::new(wal);
        let flushing = match fsync {
            Fsync::Always => Flushing::Always(wal),
            Fsync::Interval(every) => {
                Flushing::Interval(Flusher::spawn(wal, every, failing.clone())?)
            }
        };
        Ok(Self {
            conn,
            flushing,
            live,
            failing,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<(Vec<Row>, Reply)>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut count = batch[0].0.len();
            while count < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => {
                        count += next.0.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            if self.flushing.stopped() {
                fail(batch, STOPPED);
                return stop(rx, &self.failing);
            }
            let (types, accepted) = match append(&mut self.conn, &batch) {
                Ok(appended) => appended,
                Err(e) => {
                    let why = format!("event log commit failed: {e:#}");
                    tracing::error!(error = %why, "event log commit failed");
                    set(&self.failing, Some(why.clone()));
                    fail(batch, &why);
                    continue;
                }
            };
            // A failed flush of the flusher's stays told.
            if !self.flushing.stopped() {
                set(&self.failing, None);
            }
            match &mut self.flushing {
                Flushing::Always(wal) => {
                    if !wal.flush() {
                        fail(batch, STOPPED);
                        return stop(rx, &self.failing);
                    }
                }
                Flushing::Interval(flusher) => flusher.written(),
            }
            self.answer(types, batch, accepted);
        }
        if let Flushing::Interval(flusher) = self.flushing {
            flusher.finish();
        }
    }

    /// Tells the router which event types the commit holds, then answers its producers.
    fn answer(&self, types: Vec<String>, batch: Vec<(Vec<Row>, Reply)>, accepted: Vec<Accepted>) {
        if !types.is_empty() {
            let _ = self.live.blocking_send(types);
        }
        let mut accepted = accepted.into_iter();
        for (rows, reply) in batch {
            let _ = reply.send(Ok(accepted.by_ref().take(rows.len()).map(Ok).collect()));
        }
    }
}

/// The log's WAL file, flushed with `fdatasync`. SQLite reuses the file from its start after a
/// checkpoint but never replaces it while the log is open, so one handle serves for good.
struct Wal {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Wal {
    fn new(path: PathBuf) -> Self {
        Self { path, file: None }
    }

    /// fdatasync of the WAL file; false when it failed.
    fn flush(&mut self) -> bool {
        let flushed = match &self.file {
            Some(file) => file.sync_data(),
            None => std::fs::File::open(&self.path).and_then(|file| {
                let flushed = file.sync_data();
                self.file = Some(file);
                flushed
            }),
        };
        if let Err(e) = &flushed {
            tracing::error!(error = %e, wal = %self.path.display(), "flushing the event log failed");
        }
        flushed.is_ok()
    }
}

/// `Fsync::Interval`'s thread: asleep while every commit is flushed; woken by the first commit
/// after a flush, it flushes the WAL the interval after that commit, covering every commit
/// made meanwhile. The writer tells it once per interval, not once per commit.
struct Flusher {
    /// A commit was written after the last flush began.
    unflushed: Arc<AtomicBool>,
    /// A flush failed: the log takes nothing more (`STOPPED`).
    failed: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Flusher {
    fn spawn(mut wal: Wal, every: Duration, failing: Failing) -> anyhow::Result<Self> {
        let unflushed = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let (wake, woken) = mpsc::channel::<()>();
        let (dirty, stopped) = (unflushed.clone(), failed.clone());
        let thread = std::thread::Builder::new()
            .name("busway-flush".into())
            .spawn(move || {
                // Ends, after a last flush, when the writer does.
                while woken.recv().is_ok() {
                    let at = Instant::now() + every;
                    let ending = loop {
                        match woken.recv_timeout(at.saturating_duration_since(Instant::now())) {
                            Ok(()) => continue,
                            Err(mpsc::RecvTimeoutError::Timeout) => break false,
                            Err(mpsc::RecvTimeoutError::Disconnected) => break true,
                        }
                    };
                    // Cleared before the flush: a commit written during it wakes this thread
                    // again, one written before it is covered by it.
                    // The writer logs the stop when it refuses its next request.
                    if dirty.swap(false, Ordering::SeqCst) && !wal.flush() {
                        stopped.store(true, Ordering::SeqCst);
                        set(&failing, Some(STOPPED.into()));
                        return;
                    }
                    if ending {
                        return;
                    }
                }
            })
            .context("starting the event log flusher")?;
        Ok(Self {
            unflushed,
            failed,
            wake,
            thread,
        })
    }

    /// A commit was written: the first since the last flush wakes the thread.
    fn written(&self) {
        if !self.unflushed.swap(true, Ordering::SeqCst) {
            let _ = self.wake.send(());
        }
    }

    fn stopped(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Flushes what is left and ends the thread.
    fn finish(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

/// WAL pages after which the log is checkpointed (SQLite's own default).
const CHECKPOINT_PAGES: i32 = 1000;
/// WAL pages the checkpointer's last pass left after which it is woken again. Each pass flushes
/// the WAL and the log's file; woken after every commit, it flushed several times per flush of
/// the writer's, on the same disk.
const CHECKPOINT_STEP: i32 = 256;
/// WAL pages after which the writer checkpoints the few the checkpointer has not, so that its
/// next commit can write the WAL from its start again: the WAL only starts over when a commit
/// finds it wholly checkpointed, which a checkpointer racing a busy writer never leaves it.
const CHECKPOINT_BY_WRITER_PAGES: i32 = 4 * CHECKPOINT_PAGES;
/// WAL pages past which the writer checkpoints whatever is left after each commit, as SQLite
/// would: the checkpointer does not keep up, and the writer slows down instead of the WAL
/// growing without end.
const WAL_MOST_PAGES: i32 = 8 * CHECKPOINT_PAGES;

/// Moves the writer's checkpoints to a thread of their own with `checkpointer`, a connection
/// to the same log. SQLite's own checkpoint runs inside the commit that fills the WAL past
/// 1,000 pages, so its copies and flushes (a few milliseconds here) held up that commit's
/// producers and every one queued behind them; a WAL lets a checkpoint run beside the writer,
/// which now only wakes the thread (each `CHECKPOINT_STEP` pages), and past
/// `CHECKPOINT_BY_WRITER_PAGES` copies what the thread's last pass left (at most
/// `CHECKPOINT_PAGES`) itself. When a long reader (a backup) held the WAL, the thread catches
/// up first: the writer copies a backlog only past `WAL_MOST_PAGES`.
fn checkpoint_apart(writer: &mut Connection, checkpointer: Connection) -> anyhow::Result<()> {
    // A long reader (a backup) lets the WAL grow past its bound, and SQLite keeps the file at
    // its largest size: it is cut back to the bound when the WAL starts over after it.
    let page_size: i64 = writer.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    writer.pragma_update(
        None,
        "journal_size_limit",
        i64::from(WAL_MOST_PAGES) * page_size,
    )?;
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    // Held by whichever of the two checkpoints, so that the writer's never finds the
    // checkpointer's running (SQLite would refuse it as busy) but waits for its short pass.
    let checkpointing = Arc::new(Mutex::new(()));
    // The WAL pages the thread's last pass had copied, counted from the WAL's start.
    let copied = Arc::new(AtomicI32::new(0));
    let (held, copying) = (checkpointing.clone(), copied.clone());
    std::thread::Builder::new()
        .name("busway-checkpoint".into())
        .spawn(move || {
            // Ends when the writer's connection, and its hook, are dropped.
            while woken.recv().is_ok() {
                let _held = held.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, done)) = told(checkpointer.wal_checkpoint_v2(None::<&str>, PASSIVE))
                {
                    copying.store(done, Ordering::SeqCst);
                }
            }
        })
        .context("starting the event log checkpointer")?;
    // The WAL's pages at the writer's last commit: fewer now when it started over since.
    let mut before = 0;
    // Replaces SQLite's automatic checkpoint, itself a WAL hook.
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages < before {
            copied.store(0, Ordering::SeqCst);
        }
        before = pages;
        let (wakes, by_writer) = checkpoints_after(pages, copied.load(Ordering::SeqCst));
        if wakes {
            // Full when the thread has a wake-up pending already.
            let _ = wake.try_send(());
        }
        if by_writer {
            // The commit is already made: a checkpoint that fails must not fail it, and the
            // next commit tries again.
            let _held = checkpointing.lock().unwrap_or_else(|p| p.into_inner());
            told(wal.checkpoint_v2(PASSIVE));
        }
        Ok(())
    }))?;
    Ok(())
}

/// After a commit that left `pages` in the WAL, of which the checkpointer's last pass had
/// copied `copied`: whether to wake the checkpointer, and whether the writer checkpoints.
fn checkpoints_after(pages: i32, copied: i32) -> (bool, bool) {
    if pages < CHECKPOINT_PAGES {
        return (false, false);
    }
    // More than the WAL holds: a pass before it started over.
    let copied = Some(copied).filter(|copied| *copied <= pages);
    let left = pages - copied.unwrap_or(0);
    let few_left = copied.is_some() && left <= CHECKPOINT_PAGES;
    (
        left >= CHECKPOINT_STEP,
        pages >= WAL_MOST_PAGES || (pages >= CHECKPOINT_BY_WRITER_PAGES && few_left),
    )
}

/// A checkpoint's WAL pages and those copied, or why it failed, logged; one refused because
/// another connection's runs (a retention pass checkpoints after its commit, as SQLite does)
/// is no failure.
fn told(checkpoint: rusqlite::Result<(i32, i32)>) -> Option<(i32, i32)> {
    match checkpoint {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "checkpointing the event log failed");
            None
        }
        Ok(counts) => Some(counts),
    }
}

/// Why every request after a failed flush is refused.
const STOPPED: &str =
    "the event log could not be flushed to disk and accepts no more events; restart busway";

/// Refuses every request from now on. After a failed fdatasync the kernel may have dropped the
/// WAL's pages and still report later flushes as done (PostgreSQL's "fsyncgate"), so no later
/// answer could be trusted; a restart recovers the log from what the disk holds.
fn stop(rx: mpsc::Receiver<(Vec<Row>, Reply)>, failing: &Failing) {
    tracing::error!("the event log stopped accepting events after a failed flush; restart busway");
    set(failing, Some(STOPPED.into()));
    for (_, reply) in rx {
        let _ = reply.send(Err(anyhow::anyhow!(STOPPED)));
    }
}

/// Answers every request of `batch` with `why`.
fn fail(batch: Vec<(Vec<Row>, Reply)>, why: &str) {
    for (_, reply) in batch {
        let _ = reply.send(Err(anyhow::anyhow!("{why}")));
    }
}

/// Appends the batch in one transaction; returns the event types it stored and, for each row,
/// whether it was stored or repeated an event the log holds.
fn append(
    conn: &mut Connection,
    batch: &[(Vec<Row>, Reply)],
) -> anyhow::Result<(Vec<String>, Vec<Accepted>)> {
    let tx = conn.transaction()?;
    let mut committed: Vec<String> = Vec::new();
    let mut accepted = Vec::with_capacity(batch.len());
    {
        // A repeated event_id of one event version is the producer retrying: it is stored once,
        // for as long as the log keeps the first (`--retention`).
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (id, event_id, source, detail_type, time, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (detail_type, event_id) DO NOTHING",
        )?;
        for row in batch.iter().flat_map(|(rows, _)| rows) {
            if insert.execute(params![
                row.id,
                row.event_id,
                row.source,
                row.detail_type,
                row.time,
                row.detail
            ])? == 1
            {
                if !committed.contains(&row.detail_type) {
                    committed.push(row.detail_type.clone());
                }
                accepted.push(Accepted::Stored);
            } else {
                accepted.push(Accepted::Duplicate);
            }
        }
    }
    tx.commit()?;
    Ok((committed, accepted))
}

#[async_trait]
impl Bus for EventLog {
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        // An event whose claim check cannot be written fails in its slot; the others are logged.
        let mut results = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        // Held until the writer answered.
        let mut storing = Vec::new();
        for event in events {
            let detail = match self.claim_checks.split(&event) {
                Ok(Detail::Whole(detail)) => Ok(detail),
                // A producer's retry of a large event would otherwise write its data again
                // each time, to be kept unlinked for the claim checks' retention.
                Ok(Detail::Large(large)) => {
                    let Some(turn) = Storing::take(&self.storing, &event) else {
                        results.push(Err(EntryFailure {
                            code: THROTTLED.into(),
                            message: format!(
                                "an event with event_id {} is being stored; retry later",
                                event.event_id
                            ),
                        }));
                        continue;
                    };
                    if self.holds(&event).await? {
                        results.push(Ok(Accepted::Duplicate));
                        continue;
                    }
                    storing.push(turn);
                    self.claim_checks.store(large).await
                }
                Err(failure) => Err(failure),
            };
            match detail {
                Ok(detail) => {
                    rows.push(Row::new(event, detail));
                    results.push(Ok(Accepted::Stored));
                }
                Err(failure) => results.push(Err(failure)),
            }
        }
        if rows.is_empty() {
            return Ok(results);
        }
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send((rows, reply)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                let throttled = EntryFailure {
                    code: THROTTLED.into(),
                    message: "the event log cannot keep up; retry later".into(),
                };
                for slot in results.iter_mut().filter(|r| r.is_ok()) {
                    *slot = Err(throttled.clone());
                }
                return Ok(results);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                anyhow::bail!("the event log writer has stopped")
            }
        }
        let logged = answer
            .await
            .context("the event log writer dropped the request")??;
        let mut logged = logged.into_iter();
        for slot in results.iter_mut().filter(|r| r.is_ok()) {
            *slot = logged.next().unwrap_or_else(|| {
                Err(EntryFailure {
                    code: "InternalFailure".into(),
                    message: "the event log answered no result for this event".into(),
                })
            });
        }
        Ok(results)
    }
}

impl EventLog {
    /// Whether the log holds an event of `event`'s version and `event_id`.
    async fn holds(&self, event: &BusEvent) -> anyhow::Result<bool> {
        let seen = self.seen.clone();
        let (detail_type, event_id) = (event.detail_type.clone(), event.event_id.clone());
        tokio::task::spawn_blocking(move || seen.holds(&detail_type, &event_id)).await?
    }
}

/// A large event's turn to write its data and be logged: a repeat of its `event_id` meanwhile
/// is told to retry (503), as on AWS while an injector holds the event's claim.
struct Storing {
    set: Arc<Mutex<HashSet<(String, String)>>>,
    key: (String, String),
}

impl Storing {
    fn take(set: &Arc<Mutex<HashSet<(String, String)>>>, event: &BusEvent) -> Option<Self> {
        let key = (event.detail_type.clone(), event.event_id.clone());
        let taken = set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        taken.then(|| Self {
            set: set.clone(),
            key,
        })
    }
}

impl Drop for Storing {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// What a page of the log holds at most, whatever its count: an entry may be up to a MiB
/// (`--max-entry-bytes`), and every worker and shared reader holds a page or two.
pub const PAGE_BYTES: usize = 8 << 20;

/// Whether a page read with `limit` stopped at its count or its bytes, so that more may follow.
pub fn is_full(page: &[Logged], limit: usize) -> bool {
    page.len() >= limit || bytes(page) >= PAGE_BYTES
}

/// The JSON bytes `events` hold.
pub fn bytes(events: &[Logged]) -> usize {
    events.iter().map(|e| e.json.len()).sum()
}

/// A page of one event type's events after a position, and of all events.
const AFTER_OF_TYPE: &str = "SELECT seq, id, detail_type, source, time, detail FROM events
    WHERE detail_type = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
const AFTER: &str = "SELECT seq, id, detail_type, source, time, detail FROM events
    WHERE seq > ?1 ORDER BY seq LIMIT ?2";

impl LogReader {
    /// Whether the log holds an event of `detail_type` with `event_id`.
    pub fn holds(&self, detail_type: &str, event_id: &str) -> anyhow::Result<bool> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("log reader lock poisoned"))?;
        let mut query =
            conn.prepare_cached("SELECT 1 FROM events WHERE detail_type = ?1 AND event_id = ?2")?;
        Ok(query.exists(params![detail_type, event_id])?)
    }

    /// Up to `limit` events after `seq`, of one detail type when given, oldest first, and no
    /// more than reach [`PAGE_BYTES`] ([`is_full`] tells whether more may follow).
    pub fn after(
        &self,
        seq: i64,
        detail_type: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<Logged>> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("log reader lock poisoned"))?;
        let read = |r: &rusqlite::Row<'_>| {
            let row = Row {
                id: r.get(1)?,
                event_id: String::new(),
                detail_type: r.get(2)?,
                source: r.get(3)?,
                time: r.get(4)?,
                detail: r.get(5)?,
            };
            Ok(row.logged(r.get(0)?))
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A statement per case, so that a type's reads walk its index whatever the binding.
        let (mut of_type, mut all);
        let rows = match detail_type {
            Some(detail_type) => {
                of_type = conn.prepare_cached(AFTER_OF_TYPE)?;
                of_type.query_map(params![detail_type, seq, limit], read)?
            }
            None => {
                all = conn.prepare_cached(AFTER)?;
                all.query_map(params![seq, limit], read)?
            }
        };
        let (mut page, mut bytes) = (Vec::new(), 0);
        for row in rows {
            let event = row?;
            bytes += event.json.len();
            page.push(event);
            if bytes >= PAGE_BYTES {
                break;
            }
        }
        Ok(page)
    }

    /// Deletes up to `limit` of the oldest events at or before `through` whose `time` is
    /// before `older_than` (RFC 3339, as stored); returns how many. The deduplication index
    /// goes with them: an `event_id` is idempotent within the retention.
    pub fn prune(&self, through: i64, older_than: &str, limit: usize) -> anyhow::Result<usize> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("log reader lock poisoned"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(conn.execute(
            "DELETE FROM events WHERE seq IN
             (SELECT seq FROM events WHERE seq <= ?1 AND time < ?2 ORDER BY seq LIMIT ?3)",
            params![through, older_than, limit],
        )?)
    }

    /// The first position whose event's `time` (RFC 3339, as stored) is at or after `time`.
    pub fn first_at_or_after(&self, time: &str) -> anyhow::Result<Option<i64>> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("log reader lock poisoned"))?;
        Ok(conn.query_row(
            "SELECT MIN(seq) FROM events WHERE time >= ?1",
            params![time],
            |r| r.get(0),
        )?)
    }

    /// How many events of `detail_type` are after `seq`, and the `time` (unix ms) of the first.
    pub fn backlog(&self, seq: i64, detail_type: &str) -> anyhow::Result<(u64, Option<i64>)> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("log reader lock poisoned"))?;
        let count: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE detail_type = ?1 AND seq > ?2",
            params![detail_type, seq],
            |r| r.get(0),
        )?;
        let first: Option<String> = conn
            .query_row(
                "SELECT time FROM events WHERE detail_type = ?1 AND seq > ?2 ORDER BY seq LIMIT 1",
                params![detail_type, seq],
                |r| r.get(0),
            )
            .optional()?;
        Ok((
            u64::try_from(count).unwrap_or(0),
            first.as_deref().map(unix_ms),
        ))
    }

    /// The `time` (unix ms) of the log's first event, `None` for an empty log. The log is in
    /// the order events were received, give or take the moments a request waits to be written.
    pub fn first_time(&self) -> anyhow::Result<Option<i64>> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("log reader lock poisoned"))?;
        let time: Option<String> = conn
            .query_row("SELECT time FROM events ORDER BY seq LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(time.as_deref().map(unix_ms))
    }

    /// The position of the newest event, 0 for an empty log.
    pub fn last_seq(&self) -> anyhow::Result<i64> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("log reader lock poisoned"))?;
        Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_event_is_stored_by_one_request_at_a_time() {
        let storing = Arc::default();
        let turn = Storing::take(&storing, &event(1)).expect("the first turn");
        assert!(
            Storing::take(&storing, &event(1)).is_none(),
            "a repeat waits"
        );
        assert!(
            Storing::take(&storing, &event(2)).is_some(),
            "another event does not"
        );
        drop(turn);
        assert!(
            Storing::take(&storing, &event(1)).is_some(),
            "the turn ends with its request"
        );
    }

    fn event(n: usize) -> BusEvent {
        BusEvent {
            id: format!("id-{n}"),
            event_id: format!("event-{n}"),
            source: "busway.demo".into(),
            detail_type: "scanned_parcel.1".into(),
            time: busway_core::now(),
            detail: serde_json::json!({"n": n}),
        }
    }

    #[test]
    fn the_checkpointer_is_woken_once_a_step_of_pages_is_left_not_after_every_commit() {
        // Below SQLite's own threshold, nothing.
        assert_eq!(checkpoints_after(CHECKPOINT_PAGES - 1, 0), (false, false));
        assert_eq!(checkpoints_after(CHECKPOINT_PAGES, 0), (true, false));
        // Its last pass copied nearly all: the commits after it wait for a step of pages.
        let copied = CHECKPOINT_PAGES + 500;
        assert_eq!(checkpoints_after(copied + 10, copied), (false, false));
        assert_eq!(
            checkpoints_after(copied + CHECKPOINT_STEP, copied),
            (true, false)
        );
        // A pass that ended before the WAL started over copied none of the pages there now.
        assert_eq!(checkpoints_after(CHECKPOINT_PAGES, copied), (true, false));
        // Past 4,000 pages the writer copies the few left, so that the WAL can start over...
        let copied = CHECKPOINT_BY_WRITER_PAGES - 100;
        assert_eq!(
            checkpoints_after(CHECKPOINT_BY_WRITER_PAGES, copied),
            (false, true)
        );
        // ...but not a backlog, unless the WAL is past its most.
        assert_eq!(
            checkpoints_after(CHECKPOINT_BY_WRITER_PAGES, 0),
            (true, false)
        );
        assert_eq!(checkpoints_after(WAL_MOST_PAGES, 0), (true, true));
    }

    /// A log in a temp dir (kept while the test runs) flushed each second, not to wait for the
    /// disk; its commits are told to nobody.
    fn flushed_each_second() -> (tempfile::TempDir, EventLog, LogReader) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (live, mut committed) = tokio_mpsc::channel(ROUTER_QUEUE);
        tokio::spawn(async move { while committed.recv().await.is_some() {} });
        let (log, reader) = EventLog::open_with(
            &dir.path().join("events.db"),
            claim_checks(dir.path()),
            live,
            Fsync::Interval(Duration::from_secs(1)),
        )
        .expect("opens");
        (dir, log, reader)
    }

    fn size(file: &Path) -> u64 {
        std::fs::metadata(file).map_or(0, |m| m.len())
    }

    /// Checkpoints run beside the writer, and a writer that never pauses still gets its WAL
    /// back: it stays within `WAL_MOST_PAGES` while the log's file takes the events.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_while_the_writer_never_pauses() {
        let (dir, log, reader) = flushed_each_second();
        let log = Arc::new(log);
        let (path, wal) = (
            dir.path().join("events.db"),
            dir.path().join("events.db-wal"),
        );
        // Each event about three pages: twice the bound in all, from producers that keep the
        // writer's queue full.
        let total = 6_000;
        let filler = "x".repeat(12_000);
        let mut largest = 0;
        let mut puts = tokio::task::JoinSet::new();
        for n in 0..total {
            let (log, mut event) = (log.clone(), event(n));
            event.detail = serde_json::json!({ "n": n, "filler": filler });
            puts.spawn(async move { log.put_events(vec![event]).await.expect("an answer") });
            if puts.len() >= 64 {
                let put = puts.join_next().await.expect("a put").expect("it ends");
                assert!(put[0].is_ok(), "{put:?}");
                largest = largest.max(size(&wal));
            }
        }
        while let Some(put) = puts.join_next().await {
            assert!(put.expect("it ends")[0].is_ok());
        }
        largest = largest.max(size(&wal));
        // Checkpointed whole at the latest when a commit takes it past `WAL_MOST_PAGES`, the WAL
        // starts over at the next commit: it is at most that and one batch (64 events of 3 to
        // 5 pages) long.
        let bound = u64::try_from(WAL_MOST_PAGES + 64 * 5).expect("positive") * 4_200;
        assert!(largest <= bound, "the WAL grew to {largest} bytes");
        assert!(
            size(&path) > 20_000_000,
            "the log's file holds what was checkpointed: {} bytes",
            size(&path)
        );
        assert_eq!(
            reader.last_seq().expect("reads"),
            i64::try_from(total).expect("fits")
        );
    }

    /// A WAL a long reader let grow past its bound is cut back once it starts over after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wal_a_long_reader_let_grow_is_cut_back_when_it_starts_over() {
        let (dir, log, _reader) = flushed_each_second();
        let path = dir.path().join("events.db");
        let wal = dir.path().join("events.db-wal");
        let filler = "x".repeat(12_000);
        let put = |from: usize, count: usize| {
            let events = (from..from + count)
                .map(|n| BusEvent {
                    detail: serde_json::json!({ "n": n, "filler": filler }),
                    ..event(n)
                })
                .collect();
            let stored = log.put_events(events);
            async move {
                let stored = stored.await.expect("an answer");
                assert!(stored.iter().all(Result::is_ok), "{stored:?}");
            }
        };
        put(0, 1).await;
        // A backup's read: the WAL cannot start over while it lasts.
        let backup = Connection::open(&path).expect("a reader");
        backup.execute_batch("BEGIN").expect("begins");
        let _: i64 = backup
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .expect("reads");
        let bound = u64::try_from(WAL_MOST_PAGES).expect("positive") * 4_096;
        let mut n = 1;
        while size(&wal) < bound + 8_000_000 {
            put(n, 50).await;
            n += 50;
        }
        backup.execute_batch("COMMIT").expect("ends");
        drop(backup);
        // Past its bound the writer checkpoints after each commit; the WAL starts over at the
        // next commit once all of it was copied.
        for _ in 0..20 {
            put(n, 5).await;
            n += 5;
        }
        assert!(
            size(&wal) <= bound + 20 * 5 * 5 * 4_200,
            "the WAL file stayed at {} bytes",
            size(&wal)
        );
    }

    /// Large events fill a page by their bytes before its count: a page holds no more than
    /// `PAGE_BYTES` (give or take its last event), and says that more may follow.
    #[tokio::test]
    async fn a_page_of_large_events_stops_at_its_bytes() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (live, mut committed) = tokio_mpsc::channel(ROUTER_QUEUE);
        tokio::spawn(async move { while committed.recv().await.is_some() {} });
        let (log, reader) = EventLog::open(
            &dir.path().join("events.db"),
            claim_checks(dir.path()),
            live,
        )
        .expect("opens");
        let fill = "x".repeat(700_000);
        let events = (0..20)
            .map(|n| BusEvent {
                detail: serde_json::json!({"n": n, "fill": fill}),
                ..event(n)
            })
            .collect();
        let stored = log.put_events(events).await.expect("an answer");
        assert!(stored.iter().all(Result::is_ok), "{stored:?}");

        let first = reader.after(0, None, 512).expect("reads");
        assert!(is_full(&first, 512), "more follow");
        assert!(
            first.len() < 20 && bytes(&first) < PAGE_BYTES + 800_000,
            "{}",
            first.len()
        );
        let last = first.last().map(|e| e.seq).expect("a page");
        let rest = reader.after(last, None, 512).expect("reads");
        assert_eq!(first.len() + rest.len(), 20);
        assert!(!is_full(&rest, 512), "the log's end");
    }

    #[test]
    fn the_fsync_setting_reads_always_or_an_interval_in_milliseconds() {
        assert_eq!("always".parse(), Ok(Fsync::Always));
        assert_eq!(
            "interval=10".parse(),
            Ok(Fsync::Interval(Duration::from_millis(10)))
        );
        assert_eq!(
            "interval=250ms".parse(),
            Ok(Fsync::Interval(Duration::from_millis(250)))
        );
        for wrong in [
            "never",
            "interval=0",
            "interval=60001",
            "interval=",
            "interval=1s",
        ] {
            assert!(wrong.parse::<Fsync>().is_err(), "{wrong}");
        }
    }

    #[test]
    fn reading_the_log_again_reuses_its_prepared_statements() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let reader = LogReader {
            conn: Mutex::new(open(&dir.path().join("events.db")).expect("the log opens")),
        };
        for from in [0, 7, 0] {
            reader.after(from, Some("a.1"), 10).expect("reads");
            reader.after(from, None, 10).expect("reads");
        }
        let conn = reader.conn.lock().expect("the connection");
        for sql in [AFTER_OF_TYPE, AFTER] {
            let statement = conn.prepare_cached(sql).expect("cached");
            // Each read rebinds `LIMIT ?`, which SQLite would take as a reason to prepare the
            // statement again, were plans allowed to depend on bound values.
            assert_eq!(
                statement.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
            assert_eq!(statement.get_status(rusqlite::StatementStatus::Run), 3);
        }
    }

    fn claim_checks(dir: &Path) -> ClaimChecks {
        let (starter, _notifications) = crate::provisioning::LocalStarter::new();
        let objects: Arc<dyn busway_core::ports::ObjectStore> = Arc::new(
            crate::objects::FolderObjectStore::new(dir.join("buckets"), Arc::new(starter))
                .expect("the folders"),
        );
        ClaimChecks {
            objects,
            bucket_name: "local-event-schemas-backup-bucket".into(),
            max_entry_bytes: busway_core::claim_check::DEFAULT_MAX_ENTRY_BYTES,
        }
    }

    /// A process that closes the log's last connection checkpoints and deletes its WAL. It must
    /// never believe it holds the last one while the broker runs: the broker's next commits
    /// would go to a deleted file. It does when the broker lost its locks on the file, which
    /// closing any other descriptor of it in the broker's process does (POSIX `fcntl` locks).
    #[tokio::test]
    async fn another_process_closing_the_log_leaves_the_brokers_wal() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (live, _committed) = tokio_mpsc::channel(ROUTER_QUEUE);
        let path = dir.path().join("events.db");
        // The log of an earlier run, in WAL mode already: the broker's connections hold their
        // lock from their first read on.
        drop(open(&path).expect("an earlier log"));
        let (log, _reader) = EventLog::open(&path, claim_checks(dir.path()), live).expect("opens");
        let stored = log.put_events(vec![event(0)]).await.expect("an answer");
        assert!(stored[0].is_ok(), "{stored:?}");

        // The sqlite3 shell of SQLite 3.40 deletes the WAL when the broker has lost its locks
        // (the bundled 3.54 did not, in this test).
        let child = std::process::Command::new("sqlite3")
            .arg(&path)
            .arg("SELECT count(*) FROM events")
            .output()
            .expect("the sqlite3 shell runs (scripts/setup.sh installs it)");
        assert_eq!(
            String::from_utf8_lossy(&child.stdout).trim(),
            "1",
            "{child:?}"
        );
        let mut wal = path.into_os_string();
        wal.push("-wal");
        assert!(
            Path::new(&wal).exists(),
            "the other process took its connection for the last one and deleted the WAL"
        );
    }

    type Requests = mpsc::SyncSender<(Vec<Row>, Reply)>;

    /// A writer on `conn` flushing `wal` as `fsync` says, on its own thread, and what it tells.
    fn spawn_writer(
        conn: Connection,
        wal: PathBuf,
        fsync: Fsync,
    ) -> (Requests, std::thread::JoinHandle<()>, Failing) {
        let (live, _committed) = tokio_mpsc::channel(ROUTER_QUEUE);
        let failing = Failing::default();
        let writer = Writer::new(conn, wal, fsync, live, failing.clone()).expect("a writer");
        let (tx, rx) = mpsc::sync_channel(WRITER_QUEUE);
        (tx, std::thread::spawn(move || writer.run(rx)), failing)
    }

    #[test]
    fn after_a_failed_flush_the_writer_refuses_every_request() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("events.db");
        // No file there: the first flush fails.
        let wal = dir.path().join("missing").join("events.db-wal");
        let (tx, running, failing) =
            spawn_writer(open(&path).expect("the log opens"), wal, Fsync::Always);
        for n in 0..2 {
            let error = send(&tx, n).expect_err("refused");
            assert_eq!(error.to_string(), STOPPED);
        }
        assert_eq!(
            *failing.lock().expect("not poisoned"),
            Some(STOPPED.to_string())
        );
        drop(tx);
        running.join().expect("the writer ends");
        assert_eq!(count(&path), 1, "nothing is written after the failed flush");
    }

    /// With `interval` the commit is answered before its flush; the flush that fails, an
    /// interval later on the flusher's thread, stops the log as with `always`.
    #[test]
    fn after_a_failed_interval_flush_the_writer_refuses_every_request() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("events.db");
        let wal = dir.path().join("missing").join("events.db-wal");
        let every = Duration::from_millis(20);
        let (tx, running, failing) = spawn_writer(
            open(&path).expect("the log opens"),
            wal,
            Fsync::Interval(every),
        );
        let started = Instant::now();
        send(&tx, 0).expect("answered before the flush");
        while failing.lock().expect("not poisoned").is_none() {
            assert!(started.elapsed() < Duration::from_secs(10), "no flush ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(started.elapsed() >= every, "flushed before the interval");
        assert_eq!(
            *failing.lock().expect("not poisoned"),
            Some(STOPPED.to_string())
        );
        let error = send(&tx, 1).expect_err("refused");
        assert_eq!(error.to_string(), STOPPED);
        drop(tx);
        running.join().expect("the writer ends");
        assert_eq!(count(&path), 1, "nothing is written after the failed flush");
    }

    /// One event sent to a writer, and its answer.
    fn send(tx: &Requests, n: usize) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        let (reply, answer) = oneshot::channel();
        tx.send((vec![Row::new(event(n), "{}".into())], reply))
            .expect("the writer runs");
        answer.blocking_recv().expect("an answer")
    }

    fn count(path: &Path) -> i64 {
        open(path)
            .expect("the log opens")
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .expect("counts")
    }

    /// A full disk fails a commit, which `/readyz` tells until a commit goes through again.
    #[test]
    fn a_failed_commit_is_told_until_one_succeeds() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("events.db");
        let conn = open(&path).expect("the log opens");
        // The file may grow by two pages: a large event does not fit, a small one does.
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("counted");
        conn.pragma_update(None, "max_page_count", pages + 2)
            .expect("limited");
        let (tx, running, failing) =
            spawn_writer(conn, dir.path().join("events.db-wal"), Fsync::Always);
        let send = |n: usize, detail: String| {
            let (reply, answer) = oneshot::channel();
            tx.send((vec![Row::new(event(n), detail)], reply))
                .expect("the writer runs");
            answer.blocking_recv().expect("an answer")
        };
        let large = format!("{{\"x\":\"{}\"}}", "x".repeat(64 * 1024));
        send(0, large).expect_err("the disk is full");
        let told = failing.lock().expect("not poisoned").clone();
        assert!(
            told.as_deref().is_some_and(|t| t.contains("full")),
            "{told:?}"
        );
        send(1, "{}".into()).expect("a small event fits");
        assert_eq!(*failing.lock().expect("not poisoned"), None);
        drop(tx);
        running.join().expect("the writer ends");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_cannot_keep_up_throttles_instead_of_queueing() {
        let dir = tempfile::tempdir().expect("a temp dir");
        // A router that reads nothing: the writer hands it one commit, then waits.
        let (live, committed) = tokio_mpsc::channel(1);
        let (log, reader) = EventLog::open(
            &dir.path().join("events.db"),
            claim_checks(dir.path()),
            live,
        )
        .expect("opens");
        let log = Arc::new(log);
        // At most two batches go through (one in the router's queue, one the writer holds
        // while it waits), then the writer's queue fills: more than that is refused whatever
        // the timing.
        let total = WRITER_QUEUE + 2 * MAX_BATCH + 500;
        let throttled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut puts = tokio::task::JoinSet::new();
        for n in 0..total {
            let (log, throttled) = (log.clone(), throttled.clone());
            puts.spawn(async move {
                let result = log.put_events(vec![event(n)]).await.expect("an answer");
                if result[0].as_ref().is_err_and(|f| f.code == THROTTLED) {
                    throttled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                result[0].is_ok()
            });
        }
        let started = std::time::Instant::now();
        while throttled.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "no request was throttled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The router catches up: everything queued is written.
        drop(committed);
        let mut stored = 0;
        while let Some(ok) = puts.join_next().await {
            stored += usize::from(ok.expect("a put ends"));
        }
        let throttled = throttled.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(stored + throttled, total);
        assert!(stored >= WRITER_QUEUE, "{stored} stored");
        let in_log = reader.after(0, None, total).expect("the log reads").len();
        assert_eq!(in_log, stored, "exactly the accepted events are in the log");
    }
}
