//! The bus on AWS: PutEvents on the custom bus, 10 entries a call, failed entries retried, and
//! entries above EventBridge's 256 KB limit sent as a claim check (the detail in S3, a link on
//! the bus). See the README's "EventBridge bus" section for the claim-check shape.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use busway_core::envelope::BusEvent;
use busway_core::ingest::THROTTLED;
use busway_core::ports::{Bucket, Bus, EntryFailure, ObjectStore};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::instrument;

/// PutEvents takes at most this many entries a call.
pub const MAX_ENTRIES: usize = 10;
/// EventBridge's limit on one entry, measured by [`entry_size`].
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// Where claim checks live in the schema backup bucket. The `-` keeps the prefix apart from
/// the backups' `{event_type}/...` keys: event type names cannot contain one.
pub const CLAIM_CHECK_PREFIX: &str = "claim-checks/";

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

/// Where entries too large for the bus are stored: the schema backup bucket through the
/// `ObjectStore` port, under [`CLAIM_CHECK_PREFIX`].
pub struct ClaimChecks {
    pub objects: Arc<dyn ObjectStore>,
    /// The schema backup bucket's physical name, which consumers need to fetch the detail.
    pub bucket_name: String,
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
        let detail = event.detail.to_string();
        if entry_size(&event.source, &event.detail_type, &detail) <= MAX_ENTRY_BYTES {
            return Ok(self.request_entry(event, detail));
        }
        let key = claim_check_key(&event.detail_type, &event.event_id);
        self.claim_checks
            .objects
            .put_object(Bucket::SchemaBackup, &key, detail.into_bytes())
            .await
            .map_err(|e| EntryFailure {
                code: "ClaimCheckFailed".into(),
                message: format!("storing the detail at {key}: {e:#}"),
            })?;
        let link = claim_checked(&event.detail, &self.claim_checks.bucket_name, &key).to_string();
        if entry_size(&event.source, &event.detail_type, &link) > MAX_ENTRY_BYTES {
            return Err(EntryFailure {
                code: "EntryTooLarge".into(),
                message: "the event is above 256 KB even without its data".into(),
            });
        }
        Ok(self.request_entry(event, link))
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
        results: &mut [Result<(), EntryFailure>],
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
                            results[entries[i].0] = Ok(());
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

/// An entry's size as EventBridge counts it against the 256 KB limit: 14 bytes for `Time`
/// (always set here), then the UTF-8 bytes of `Source`, `DetailType` and `Detail` (busway sets
/// no `Resources`).
pub fn entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    14 + source.len() + detail_type.len() + detail.len()
}

/// The claim check's key: one per event version and `event_id`, so a producer's retry of the
/// same event writes the same object. The id is hashed because producers choose it.
pub fn claim_check_key(detail_type: &str, event_id: &str) -> String {
    let digest = Sha256::digest(event_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{CLAIM_CHECK_PREFIX}{detail_type}/{hex}.json")
}

/// The detail the bus carries instead of a large one: `metadata` as it was (rules match on it)
/// plus `metadata.claim_check = true`, and `data` replaced by the link to the full detail.
pub fn claim_checked(detail: &Value, bucket: &str, key: &str) -> Value {
    let mut link = detail.clone();
    if let Some(root) = link.as_object_mut() {
        if let Some(metadata) = root.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("claim_check".into(), Value::Bool(true));
        }
        root.insert(
            "data".into(),
            json!({"claim_check": {"bucket": bucket, "key": key}}),
        );
    }
    link
}

#[async_trait]
impl Bus for EventBridgeBus {
    #[instrument(skip_all, fields(bus = %self.bus_name, events = events.len()))]
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<(), EntryFailure>>> {
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_ENTRIES) {
            let offset = results.len();
            // An entry that cannot be built fails in its slot; the others go out together.
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, event) in chunk.iter().enumerate() {
                match self.entry(event).await {
                    Ok(entry) => {
                        entries.push((i, entry));
                        results.push(Ok(()));
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
