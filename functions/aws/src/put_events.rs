//! What both EventBridge bus adapters share: events in batches of the bus's entry count, each
//! entry claim-checked when it is above the entry limit (`busway_core::claim_check`), whole calls
//! and failed entries retried under one budget, and every event's outcome in its own slot. Each
//! adapter says how one call is made ([`PutEventsCall`]).

use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use busway_core::claim_check::ClaimChecks;
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

pub(crate) struct Publisher<C> {
    pub call: C,
    pub claim_checks: ClaimChecks,
    pub backoff: Backoff,
}

impl<C: PutEventsCall> Publisher<C> {
    pub async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(C::MAX_ENTRIES) {
            let offset = results.len();
            // An entry that cannot be built fails in its slot; the others go out together.
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, event) in chunk.iter().enumerate() {
                let entry = match self.claim_checks.detail(event).await {
                    Ok(detail) => self.call.entry(event, detail),
                    Err(failure) => Err(failure),
                };
                match entry {
                    Ok(entry) => {
                        entries.push((i, entry));
                        results.push(Ok(Accepted::Stored));
                    }
                    Err(failure) => results.push(Err(failure)),
                }
            }
            if entries.is_empty() {
                continue;
            }
            let stored_before = results[..offset].iter().any(Result::is_ok);
            if let Err(e) = self.send_batch(entries, &mut results[offset..]).await {
                if !stored_before {
                    return Err(e);
                }
                // Earlier batches are on the bus: this one and the rest fail in their slots.
                let failure = EntryFailure {
                    code: "PutEventsFailed".into(),
                    message: format!("{e:#}"),
                };
                results.truncate(offset);
                results.resize(events.len(), Err(failure));
                return Ok(results);
            }
        }
        Ok(results)
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
