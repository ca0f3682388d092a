//! Deduplication of producer-supplied `event_id`s on AWS (the `Bus` port's promise): before an
//! event goes to the bus, the injector claims its `event_id` with a conditional put on the
//! platform table. The claim of an event already on the bus answers `Accepted::Duplicate`, and
//! the event is not put again, for as long as the window (`BUSWAY_DEDUP_WINDOW`, 24 hours by
//! default, as the local log's retention) — DynamoDB's TTL removes the item some time after.
//!
//! A claim is first a lease: the event is on its way to the bus. It becomes permanent once the
//! bus took the event, and is released when the bus refused it, so the producer's retry puts it.
//! A lease whose injector died before either is taken over once it ends; until then a repeat is
//! answered as throttled (503, retry later) rather than as a duplicate of an event that may never
//! have reached the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use busway_core::envelope::BusEvent;
use busway_core::ingest::THROTTLED;
use busway_core::ports::{Accepted, Bus, EntryFailure};
use sha2::{Digest, Sha256};
use tracing::warn;

/// The default window: the local event log's default retention, so both hosts answer alike.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long a claim waits for its event to reach the bus before another put may take it over:
/// longer than an injector's PutEvents with its retries.
pub const LEASE: Duration = Duration::from_secs(60);
/// The item's TTL attribute (the table's `timeToLiveAttribute` in infra).
pub const EXPIRES_AT: &str = "expires_at";
const PENDING: &str = "pending";
const STORED: &str = "stored";
const SK: &str = "EVENT_ID";

type Item = HashMap<String, AttributeValue>;

/// A bus that puts each `event_id` once within `window`.
pub struct DeduplicatedBus {
    inner: Arc<dyn Bus>,
    client: Client,
    table: String,
    window: Duration,
}

/// What a claim found.
enum Claim {
    /// This put holds the lease: its token.
    Mine(String),
    Duplicate,
    /// Another put holds a lease that has not ended.
    InFlight,
}

/// The claim's key: the hash keeps any producer's `event_id` within DynamoDB's key size.
fn key(event: &BusEvent) -> Item {
    let hash = hex::encode(Sha256::digest(event.event_id.as_bytes()));
    HashMap::from([
        (
            "PK".to_string(),
            AttributeValue::S(format!("EVENT_ID#{}#{hash}", event.detail_type)),
        ),
        ("SK".to_string(), AttributeValue::S(SK.into())),
    ])
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unavailable(message: String) -> EntryFailure {
    EntryFailure {
        code: THROTTLED.into(),
        message,
    }
}

impl DeduplicatedBus {
    pub fn new(
        inner: Arc<dyn Bus>,
        client: Client,
        table: impl Into<String>,
        window: Duration,
    ) -> Self {
        Self {
            inner,
            client,
            table: table.into(),
            window,
        }
    }

    async fn claim(&self, event: &BusEvent) -> Result<Claim, EntryFailure> {
        let now = unix_now();
        let token = uuid::Uuid::new_v4().to_string();
        let mut item = key(event);
        item.extend([
            ("state".to_string(), s(PENDING)),
            ("token".to_string(), s(&token)),
            ("lease_until".to_string(), n(now + LEASE.as_secs())),
            (EXPIRES_AT.to_string(), n(now + self.window.as_secs())),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // TTL deletes expired items late: an expired or abandoned claim is taken over.
            .condition_expression(
                "attribute_not_exists(PK) OR #expires < :now OR (#state = :pending AND lease_until < :now)",
            )
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":pending", s(PENDING))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Mine(token)),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let state = failed.item().and_then(|i| i.get("state"));
                    Ok(
                        match state.and_then(|s| s.as_s().ok()).map(String::as_str) {
                            Some(STORED) => Claim::Duplicate,
                            _ => Claim::InFlight,
                        },
                    )
                }
                _ => Err(unavailable(format!(
                    "the deduplication index did not answer: {}",
                    DisplayErrorContext(&e)
                ))),
            },
        }
    }

    /// Makes the claim at `key` permanent (`stored`) or gives it up, if it is still this put's.
    async fn settle(&self, key: Item, token: &str, stored: bool, event_id: &str) {
        let done = if stored {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression("SET #state = :stored REMOVE lease_until")
                .condition_expression("#token = :token")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":stored", s(STORED))
                .expression_attribute_values(":token", s(token))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(e).to_string())
        } else {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression("#token = :token")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":token", s(token))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(e).to_string())
        };
        // The lease ends by itself: a repeat is then put again (at least once, never lost).
        if let Err(error) = done {
            warn!(event_id, stored, %error, "the deduplication claim was not settled");
        }
    }
}

#[async_trait]
impl Bus for DeduplicatedBus {
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        // A repeat within the call shares its first's fate, without a claim of its own.
        let repeats: Vec<Option<usize>> = {
            let mut first_of = HashMap::new();
            events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let first = *first_of.entry((&e.detail_type, &e.event_id)).or_insert(i);
                    (first != i).then_some(first)
                })
                .collect()
        };
        let claims = futures_util::future::join_all(events.iter().zip(&repeats).map(
            |(e, repeat)| async move {
                match repeat {
                    Some(_) => None,
                    None => Some(self.claim(e).await),
                }
            },
        ))
        .await;
        let mut results = Vec::with_capacity(events.len());
        let mut claimed = Vec::new();
        let mut to_put = Vec::new();
        for (event, claim) in events.into_iter().zip(claims) {
            results.push(match claim {
                // A repeat: filled in below, once its first's outcome is known.
                None => Ok(Accepted::Duplicate),
                Some(Ok(Claim::Mine(token))) => {
                    claimed.push((results.len(), token, key(&event), event.event_id.clone()));
                    to_put.push(event);
                    Ok(Accepted::Stored)
                }
                Some(Ok(Claim::Duplicate)) => Ok(Accepted::Duplicate),
                Some(Ok(Claim::InFlight)) => Err(unavailable(format!(
                    "an event with event_id {} is being put; retry later",
                    event.event_id
                ))),
                Some(Err(failure)) => Err(failure),
            });
        }
        if !to_put.is_empty() {
            let put = match self.inner.put_events(to_put).await {
                Ok(put) => put,
                Err(e) => {
                    for (_, token, key, event_id) in claimed {
                        self.settle(key, &token, false, &event_id).await;
                    }
                    return Err(e);
                }
            };
            let settled = claimed.into_iter().zip(put).map(|(claim, result)| {
                let (slot, token, key, event_id) = claim;
                let stored = result.is_ok();
                results[slot] = result;
                async move { self.settle(key, &token, stored, &event_id).await }
            });
            futures_util::future::join_all(settled).await;
        }
        for (i, repeat) in repeats.iter().enumerate() {
            if let Some(first) = *repeat {
                results[i] = results[first].clone().map(|_| Accepted::Duplicate);
            }
        }
        Ok(results)
    }
}
