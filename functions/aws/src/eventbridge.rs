//! The bus on AWS: PutEvents on the custom bus, 10 entries a call, failed entries retried, and
//! entries above the bus entry limit sent as a claim check (`busway_core::claim_check`: the data
//! in S3, a link on the bus). See the README's "EventBridge bus" section for the shape.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use busway_core::claim_check::ClaimChecks;
use busway_core::envelope::BusEvent;
use busway_core::ingest::THROTTLED;
use busway_core::ports::{Accepted, Bus, EntryFailure};
use tracing::instrument;

/// PutEvents takes at most this many entries a call.
pub const MAX_ENTRIES: usize = 10;
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

pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
    claim_checks: ClaimChecks,
    backoff: Backoff,
}

impl EventBridgeBus {
    /// The client's own retries are switched off: this adapter retries whole calls and failed
    /// entries under one budget, rather than the SDK's attempts multiplying with its own.
    pub fn new(client: &Client, bus_name: impl Into<String>, claim_checks: ClaimChecks) -> Self {
        let config = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        Self {
            client: Client::from_conf(config),
            bus_name: bus_name.into(),
            claim_checks,
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The entry for one event, its detail replaced by a claim check when it is too large.
    async fn entry(&self, event: &BusEvent) -> Result<PutEventsRequestEntry, EntryFailure> {
        let detail = self.claim_checks.detail(event).await?;
        Ok(self.request_entry(event, detail))
    }

    fn request_entry(&self, event: &BusEvent, detail: String) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .time(DateTime::from_secs(event.time.unix_timestamp()))
            .source(&event.source)
            .detail_type(&event.detail_type)
            .detail(detail)
            .event_bus_name(&self.bus_name)
            .build()
    }

    /// Sends one batch, writing each entry's outcome to `results[slot]`: the whole call is
    /// retried, then only the entries that failed with a retryable code. `Err` when no call went
    /// through, so which entries EventBridge stored is unknown.
    async fn send_batch(
        &self,
        entries: Vec<(usize, PutEventsRequestEntry)>,
        results: &mut [Result<Accepted, EntryFailure>],
    ) -> anyhow::Result<()> {
        let mut pending: Vec<usize> = (0..entries.len()).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let batch = pending.iter().map(|&i| entries[i].1.clone()).collect();
            let call = self
                .client
                .put_events()
                .set_entries(Some(batch))
                .send()
                .await;
            let out = match call {
                Ok(out) => out,
                // A call that timed out may have stored its entries, so a retry can put an
                // event twice; consumers de-duplicate on `metadata.event_id`.
                Err(e) if attempt < self.backoff.attempts && crate::error::is_transient(&e) => {
                    tracing::warn!(attempt, error = %DisplayErrorContext(&e), "PutEvents failed, retrying");
                    tokio::time::sleep(self.backoff.delay(attempt)).await;
                    continue;
                }
                // Still throttled after the retries: each entry says so, and the producer is
                // told to come back later (503 with Retry-After) rather than that it failed.
                Err(e) if e.code() == Some(THROTTLED) => {
                    let failure = EntryFailure {
                        code: THROTTLED.into(),
                        message: DisplayErrorContext(&e).to_string(),
                    };
                    for i in pending {
                        results[entries[i].0] = Err(failure.clone());
                    }
                    return Ok(());
                }
                Err(e) if pending.len() == entries.len() => return Err(e).context("PutEvents"),
                // Earlier calls stored some entries: the rest fail in their slots.
                Err(e) => {
                    let failure = EntryFailure {
                        code: "PutEventsFailed".into(),
                        message: DisplayErrorContext(&e).to_string(),
                    };
                    for i in pending {
                        results[entries[i].0] = Err(failure.clone());
                    }
                    return Ok(());
                }
            };
            // Result entries are in request order.
            let answers = out.entries();
            let mut retry = Vec::new();
            for (n, &i) in pending.iter().enumerate() {
                let failure = match answers.get(n) {
                    Some(answer) => match answer.error_code() {
                        None => {
                            results[entries[i].0] = Ok(Accepted::Stored);
                            continue;
                        }
                        Some(code) => EntryFailure {
                            code: code.to_string(),
                            message: answer.error_message().unwrap_or_default().to_string(),
                        },
                    },
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
}

#[async_trait]
impl Bus for EventBridgeBus {
    #[instrument(skip_all, fields(bus = %self.bus_name, events = events.len()))]
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_ENTRIES) {
            let offset = results.len();
            // An entry that cannot be built fails in its slot; the others go out together.
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, event) in chunk.iter().enumerate() {
                match self.entry(event).await {
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
}
