//! Retention: a background task keeps the disk bounded. The event log keeps events for
//! `--retention` (24 h by default: EventBridge's longest event age), and an event no older than
//! that, or after the lowest cursor of a deployed rule, is never pruned. A scheduled retry keeps
//! its own copy of its event, so the log never holds one for it. Dead letters and embedded-queue
//! messages expire as SQS messages do (`MessageRetentionPeriod`: 4 days by default, 60 s to 14
//! days).

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use busway_core::envelope::eventbridge_time;
use tracing::{debug, warn};

use crate::eventlog::LogReader;
use crate::store::SqliteStore;

const DAY: Duration = Duration::from_secs(86_400);
/// SQS's `MessageRetentionPeriod`: its default and its range.
pub const SQS_DEFAULT: Duration = Duration::from_secs(4 * 86_400);
pub const SQS_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(14 * 86_400);
/// Events deleted per statement, so a large prune never holds the log's write lock for long.
const PRUNE_CHUNK: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Retention {
    /// How long the log keeps an event that no cursor needs.
    pub events: Duration,
    pub dead_letters: Duration,
    pub queue_messages: Duration,
    /// How often the task runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            events: DAY,
            dead_letters: SQS_DEFAULT,
            queue_messages: SQS_DEFAULT,
            every: Duration::from_secs(60),
        }
    }
}

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub dead_letters: usize,
    pub queue_messages: usize,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One pass: the log up to the lowest cursor (all of it past retention when no rule is
/// deployed), then expired dead letters and queued messages.
pub async fn prune(
    retention: &Retention,
    store: &SqliteStore,
    reader: &Arc<LogReader>,
) -> anyhow::Result<Pruned> {
    let through = store.lowest_cursor().await?.unwrap_or(i64::MAX);
    let older_than = eventbridge_time(busway_core::now() - retention.events);
    let mut pruned = Pruned::default();
    loop {
        let (reader, older_than) = (reader.clone(), older_than.clone());
        let n =
            tokio::task::spawn_blocking(move || reader.prune(through, &older_than, PRUNE_CHUNK))
                .await??;
        pruned.events += n;
        if n < PRUNE_CHUNK {
            break;
        }
    }
    (pruned.dead_letters, pruned.queue_messages) = store
        .expire(
            millis(retention.dead_letters),
            millis(retention.queue_messages),
        )
        .await?;
    Ok(pruned)
}

pub async fn run(retention: Retention, store: SqliteStore, reader: Arc<LogReader>) {
    loop {
        tokio::time::sleep(retention.every).await;
        match prune(&retention, &store, &reader).await {
            Ok(pruned) => debug!(?pruned, "retention pass"),
            Err(e) => warn!(error = %format!("{e:#}"), "retention pass failed; trying again later"),
        }
    }
}
