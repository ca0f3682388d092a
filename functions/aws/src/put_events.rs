//! What both EventBridge bus adapters share: events in calls within the bus's entry count and
//! request size (`CallSize`), each entry claim-checked when it is above the entry limit
//! (`busway_core::claim_check`), whole calls and failed entries retried under one budget, and
//! every event's outcome in its own slot. Each adapter says how one call is made
//! ([`PutEventsCall`]).

use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use busway_core::claim_check::{ClaimChecks, entry_size};
use busway_core::envelope::BusEvent;
use busway_core::ingest::THROTTLED;
use busway_core::ports::{Accepted, EntryFailure};

/// Per-entry error codes that EventBridge documents as retryable; the others
/// (`MalformedDetail`, `AccessDeniedException`, ...) fail the same way every time.
const RETRYABLE_ENTRY_CODES: &[&str] = &["InternalFailure", "ThrottlingException"];

/// Exponential backoff with full jitter: before retry `n` (from 1) the adapter sleeps a random
/// time between zero and `min(cap, base * 2^(n-1))`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Calls per batch, the first one included.
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A PutEvents call that did not go through.
pub(crate) struct CallError {
    /// Throttled, timed out, a 5xx: the same call may succeed later.
    pub transient: bool,
    /// The bus's own throttling error code.
    pub throttled: bool,
    pub error: anyhow::Error,
}

impl CallError {
    /// A PutEvents call's SDK error, as both buses' SDKs report it.
    pub fn from_sdk<E>(e: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Self {
            transient: crate::error::is_transient(&e),
            throttled: e.code() == Some(THROTTLED),
            error: anyhow!("{}", DisplayErrorContext(&e)).context("PutEvents"),
        }
    }
}

/// Each entry's outcome from its answer's error code and message, in request order.
pub(crate) fn entry_outcomes<'a>(
    answers: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Vec<Result<(), EntryFailure>> {
    answers
        .into_iter()
        .map(|(code, message)| match code {
            None => Ok(()),
            Some(code) => Err(EntryFailure {
                code: code.to_string(),
                message: message.unwrap_or_default().to_string(),
            }),
        })
        .collect()
}

/// One bus's PutEvents.
#[async_trait]
pub(crate) trait PutEventsCall: Send + Sync {
    type Entry: Clone + Send + Sync;
    /// The most entries one call takes.
    const MAX_ENTRIES: usize;

    /// The request entry for `event`, with `detail` as its detail (the event's, or its claim
    /// check).
    fn entry(&self, event: &BusEvent, detail: String) -> Result<Self::Entry, EntryFailure>;

    /// Puts `entries`; the answers are in request order, `Err` with the entry's error code.
    /// Fewer answers than entries count the missing ones as failed.
    async fn call(
        &self,
        entries: Vec<Self::Entry>,
    ) -> Result<Vec<Result<(), EntryFailure>>, CallError>;
}

/// What one PutEvents call holds so far, to decide where the next call starts. EventBridge takes
/// at most `max_entries` entries a call, and refuses a whole call (ValidationException) whose
/// entries' summed size, each counted as [`entry_size`] does, is above its request limit: an
/// entry that would take the call over either limit starts the next call. An entry alone always
/// fits: claim checks keep every entry within the entry limit.
///
/// The request limit is the entry limit (`ClaimChecks::max_entry_bytes`): EventBridge documents
/// one figure for both ("the total entry size must be less than" it, on
/// [eb-putevent-size](https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html)),
/// 1 MB since January 2026, and where `BUSWAY_MAX_ENTRY_BYTES` keeps the older 256 KB for an
/// account still on it, that account's requests are limited to 256 KB too.
#[derive(Debug, Clone, Copy)]
struct CallSize {
    max_entries: usize,
    max_bytes: usize,
    entries: usize,
    bytes: usize,
}

impl CallSize {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            entries: 0,
            bytes: 0,
        }
    }

    /// Whether an entry of `bytes` joins this call rather than starting the next one.
    fn fits(&self, bytes: usize) -> bool {
        self.entries == 0
            || (self.entries < self.max_entries
                && self.bytes.saturating_add(bytes) <= self.max_bytes)
    }

    fn add(&mut self, bytes: usize) {
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// No further entry fits, whatever its size.
    fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }
}

pub(crate) struct Publisher<C> {
    pub call: C,
    pub claim_checks: ClaimChecks,
    pub backoff: Backoff,
}

impl<C: PutEventsCall> Publisher<C> {
    /// Puts `events` in calls of at most `C::MAX_ENTRIES` entries and at most the request limit
    /// ([`CallSize`]), in order; each event's outcome is in its slot.
    pub async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        let total = events.len();
        let mut results = Vec::with_capacity(total);
        // The entries of the next call, each with its event's slot.
        let mut batch: Vec<(usize, C::Entry)> = Vec::new();
        let mut size = CallSize::new(C::MAX_ENTRIES, self.claim_checks.max_entry_bytes);
        for event in &events {
            // An entry that cannot be built fails in its slot; the others go out together.
            let built = match self.claim_checks.detail(event).await {
                Ok(detail) => {
                    let bytes = entry_size(&event.source, &event.detail_type, &detail);
                    self.call.entry(event, detail).map(|entry| (bytes, entry))
                }
                Err(failure) => Err(failure),
            };
            let (bytes, entry) = match built {
                Ok(built) => built,
                Err(failure) => {
                    results.push(Err(failure));
                    continue;
                }
            };
            if !size.fits(bytes) {
                if !self.flush(&mut batch, &mut results, total).await? {
                    return Ok(results);
                }
                size = CallSize::new(C::MAX_ENTRIES, self.claim_checks.max_entry_bytes);
            }
            size.add(bytes);
            batch.push((results.len(), entry));
            results.push(Ok(Accepted::Stored));
            // A full call goes out before the next event's claim check is written.
            if size.is_full() {
                if !self.flush(&mut batch, &mut results, total).await? {
                    return Ok(results);
                }
                size = CallSize::new(C::MAX_ENTRIES, self.claim_checks.max_entry_bytes);
            }
        }
        self.flush(&mut batch, &mut results, total).await?;
        Ok(results)
    }

    /// Sends `batch` (emptying it) and writes its outcomes to `results`. `Err` when its call
    /// failed and no earlier call stored anything; `Ok(false)` when its call failed after an
    /// earlier one stored entries: then `results` is final, its entries and every event after
    /// them failing in their slots as `PutEventsFailed`.
    async fn flush(
        &self,
        batch: &mut Vec<(usize, C::Entry)>,
        results: &mut Vec<Result<Accepted, EntryFailure>>,
        total: usize,
    ) -> anyhow::Result<bool> {
        let Some(&(first, _)) = batch.first() else {
            return Ok(true);
        };
        let entries = std::mem::take(batch);
        let slots: Vec<usize> = entries.iter().map(|(slot, _)| *slot).collect();
        let stored_before = results[..first].iter().any(Result::is_ok);
        let Err(e) = self.send_batch(entries, results).await else {
            return Ok(true);
        };
        if !stored_before {
            return Err(e);
        }
        // Earlier calls are on the bus: this one and the rest fail in their slots.
        let failure = EntryFailure {
            code: "PutEventsFailed".into(),
            message: format!("{e:#}"),
        };
        for slot in slots {
            results[slot] = Err(failure.clone());
        }
        results.resize(total, Err(failure));
        Ok(false)
    }

    /// Sends one batch, writing each entry's outcome to `results[slot]`: the whole call is
    /// retried, then only the entries that failed with a retryable code. `Err` when no call went
    /// through, so which entries the bus stored is unknown.
    async fn send_batch(
        &self,
        entries: Vec<(usize, C::Entry)>,
        results: &mut [Result<Accepted, EntryFailure>],
    ) -> anyhow::Result<()> {
        let mut pending: Vec<usize> = (0..entries.len()).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let batch = pending.iter().map(|&i| entries[i].1.clone()).collect();
            let answers = self.call.call(batch).await;
            if let Err(e) = &answers
                && e.throttled
            {
                crate::emf::put_events_throttled();
            }
            let answers = match answers {
                Ok(answers) => answers,
                // A call that timed out may have stored its entries, so a retry can put an
                // event twice: the Classic bus stores it again (consumers de-duplicate on
                // `metadata.event_id`), the Custom bus drops it by its deduplication id.
                Err(e) if attempt < self.backoff.attempts && e.transient => {
                    tracing::warn!(
                        attempt,
                        error = format!("{:#}", e.error),
                        "PutEvents failed, retrying"
                    );
                    tokio::time::sleep(self.backoff.delay(attempt)).await;
                    continue;
                }
                // Still throttled after the retries: each entry says so, and the producer is
                // told to come back later (503 with Retry-After) rather than that it failed.
                Err(e) if e.throttled => {
                    self.fail_pending(&entries, &pending, results, THROTTLED, &e.error);
                    return Ok(());
                }
                Err(e) if pending.len() == entries.len() => return Err(e.error),
                // Earlier calls stored some entries: the rest fail in their slots.
                Err(e) => {
                    self.fail_pending(&entries, &pending, results, "PutEventsFailed", &e.error);
                    return Ok(());
                }
            };
            let mut retry = Vec::new();
            for (n, &i) in pending.iter().enumerate() {
                let failure = match answers.get(n) {
                    Some(Ok(())) => {
                        results[entries[i].0] = Ok(Accepted::Stored);
                        continue;
                    }
                    Some(Err(failure)) => failure.clone(),
                    None => EntryFailure {
                        code: "InternalFailure".into(),
                        message: "PutEvents returned no result for this entry".into(),
                    },
                };
                if RETRYABLE_ENTRY_CODES.contains(&failure.code.as_str()) {
                    retry.push(i);
                }
                results[entries[i].0] = Err(failure);
            }
            let failed = pending
                .iter()
                .filter(|&&i| results[entries[i].0].is_err())
                .count();
            if failed > 0 {
                crate::emf::put_events_failed_entries(failed);
            }
            if retry.is_empty() || attempt >= self.backoff.attempts {
                return Ok(());
            }
            tracing::warn!(
                attempt,
                failed = retry.len(),
                "PutEvents failed entries, retrying them"
            );
            pending = retry;
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        }
    }

    fn fail_pending(
        &self,
        entries: &[(usize, C::Entry)],
        pending: &[usize],
        results: &mut [Result<Accepted, EntryFailure>],
        code: &str,
        error: &anyhow::Error,
    ) {
        let failure = EntryFailure {
            code: code.into(),
            message: format!("{error:#}"),
        };
        for &i in pending {
            results[entries[i].0] = Err(failure.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CallSize;

    const MB: usize = 1024 * 1024;

    /// How many entries of `sizes` each call takes.
    fn calls(sizes: &[usize], max_entries: usize, max_bytes: usize) -> Vec<usize> {
        let mut calls = Vec::new();
        let mut size = CallSize::new(max_entries, max_bytes);
        for &bytes in sizes {
            if !size.fits(bytes) {
                calls.push(size.entries);
                size = CallSize::new(max_entries, max_bytes);
            }
            size.add(bytes);
        }
        if size.entries > 0 {
            calls.push(size.entries);
        }
        calls
    }

    #[test]
    fn small_entries_are_cut_by_count_only() {
        assert_eq!(calls(&[100; 25], 10, MB), vec![10, 10, 5]);
        assert_eq!(calls(&[100; 250], 100, MB), vec![100, 100, 50]);
    }

    #[test]
    fn an_entry_that_would_take_the_call_over_the_request_limit_starts_the_next_call() {
        // Ten SQS messages of ~300 KB: three a call (900 KB), not ten (3 MB).
        assert_eq!(calls(&[300_000; 10], 10, MB), vec![3, 3, 3, 1]);
        // Exactly the limit is within it; one byte more is not.
        assert_eq!(calls(&[MB / 2, MB / 2, 1], 10, MB), vec![2, 1]);
        assert_eq!(calls(&[MB / 2, MB / 2 + 1], 10, MB), vec![1, 1]);
        // Entries of the whole limit go one a call.
        assert_eq!(calls(&[MB; 3], 10, MB), vec![1, 1, 1]);
        // Small entries after a large one fill the rest of its call.
        assert_eq!(calls(&[MB - 300, 100, 100, 100, 100], 10, MB), vec![4, 1]);
        // The legacy 256 KB limit.
        assert_eq!(calls(&[100_000; 5], 10, 256 * 1024), vec![2, 2, 1]);
    }

    #[test]
    fn an_entry_alone_always_fits() {
        assert!(CallSize::new(10, MB).fits(MB + 1));
        assert_eq!(calls(&[MB + 1, 1], 10, MB), vec![1, 1]);
    }

    #[test]
    fn a_call_is_full_at_its_entry_count() {
        let mut size = CallSize::new(2, MB);
        size.add(1);
        assert!(!size.is_full());
        size.add(1);
        assert!(size.is_full());
        assert!(!size.fits(1));
    }
}
