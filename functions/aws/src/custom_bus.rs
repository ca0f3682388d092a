//! The Custom Event Bus on AWS (EventBridge's second generation, API `eventbridgev2`): PutEvents
//! of up to 100 entries a call on the bus's ARN, each entry with the event's `event_id` as its
//! `DeduplicationId`, so the bus itself drops a second put of the same event within its
//! deduplication window (a producer's retry, or this adapter's retry of a call that timed out
//! after the bus stored it). Batching, retries and claim checks are `crate::put_events`'s, as for
//! the Classic bus.

use async_trait::async_trait;
use aws_sdk_eventbridgev2::Client;
use aws_sdk_eventbridgev2::config::retry::RetryConfig;
use aws_sdk_eventbridgev2::primitives::DateTime;
use aws_sdk_eventbridgev2::types::{PutEventsRequestEntry, PutEventsSystemMetadata};
use busway_core::claim_check::ClaimChecks;
use busway_core::envelope::BusEvent;
use busway_core::ports::{Accepted, Bus, EntryFailure};
use tracing::instrument;

use crate::put_events::{Backoff, CallError, Publisher, PutEventsCall, entry_outcomes};

/// PutEvents takes at most this many entries a call.
pub const MAX_ENTRIES: usize = 100;

pub struct CustomBus {
    bus_arn: String,
    publisher: Publisher<CustomCall>,
}

struct CustomCall {
    client: Client,
    bus_arn: String,
}

impl CustomBus {
    /// The client's own retries are switched off, as for the Classic bus: the adapter's budget
    /// covers whole calls and failed entries.
    pub fn new(client: &Client, bus_arn: impl Into<String>, claim_checks: ClaimChecks) -> Self {
        let config = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        let bus_arn = bus_arn.into();
        Self {
            bus_arn: bus_arn.clone(),
            publisher: Publisher {
                call: CustomCall {
                    client: Client::from_conf(config),
                    bus_arn,
                },
                claim_checks,
                backoff: Backoff::default(),
            },
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.publisher.backoff = backoff;
        self
    }
}

#[async_trait]
impl PutEventsCall for CustomCall {
    type Entry = PutEventsRequestEntry;
    const MAX_ENTRIES: usize = MAX_ENTRIES;

    fn entry(&self, event: &BusEvent, detail: String) -> Result<Self::Entry, EntryFailure> {
        let mut system_metadata = PutEventsSystemMetadata::builder();
        if let Some(id) = event.detail["metadata"]["event_id"].as_str() {
            system_metadata = system_metadata.deduplication_id(id);
        }
        PutEventsRequestEntry::builder()
            .time(DateTime::from_secs(event.time.unix_timestamp()))
            .source(&event.source)
            .detail_type(&event.detail_type)
            .detail(detail)
            .system_metadata(system_metadata.build())
            .build()
            .map_err(|e| EntryFailure {
                code: "InvalidEntry".into(),
                message: e.to_string(),
            })
    }

    async fn call(
        &self,
        entries: Vec<Self::Entry>,
    ) -> Result<Vec<Result<(), EntryFailure>>, CallError> {
        let out = self
            .client
            .put_events()
            .event_bus_arn(&self.bus_arn)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(CallError::from_sdk)?;
        Ok(entry_outcomes(out.entries().iter().map(|answer| {
            (answer.error_code(), answer.error_message())
        })))
    }
}

#[async_trait]
impl Bus for CustomBus {
    #[instrument(skip_all, fields(bus = %self.bus_arn, events = events.len()))]
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        self.publisher.put_events(events).await
    }
}
