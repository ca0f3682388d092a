//! The Classic bus on AWS (the seed's custom event bus with rules): PutEvents of 10 entries a
//! call, failed entries retried, and entries above the bus entry limit sent as a claim check
//! (`busway_core::claim_check`: the data in S3, a link on the bus), as `crate::put_events` does
//! for both bus kinds. See the README's "EventBridge bus" section for the shape.

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use busway_core::claim_check::ClaimChecks;
use busway_core::envelope::BusEvent;
use busway_core::ports::{Accepted, Bus, EntryFailure};
use tracing::instrument;

pub use crate::put_events::Backoff;
use crate::put_events::{CallError, Publisher, PutEventsCall, entry_outcomes};

/// PutEvents takes at most this many entries a call.
pub const MAX_ENTRIES: usize = 10;

pub struct EventBridgeBus {
    bus_name: String,
    publisher: Publisher<ClassicCall>,
}

struct ClassicCall {
    client: Client,
    bus_name: String,
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
        let bus_name = bus_name.into();
        Self {
            bus_name: bus_name.clone(),
            publisher: Publisher {
                call: ClassicCall {
                    client: Client::from_conf(config),
                    bus_name,
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
impl PutEventsCall for ClassicCall {
    type Entry = PutEventsRequestEntry;
    const MAX_ENTRIES: usize = MAX_ENTRIES;

    fn entry(&self, event: &BusEvent, detail: String) -> Result<Self::Entry, EntryFailure> {
        Ok(PutEventsRequestEntry::builder()
            .time(DateTime::from_secs(event.time.unix_timestamp()))
            .source(&event.source)
            .detail_type(&event.detail_type)
            .detail(detail)
            .event_bus_name(&self.bus_name)
            .build())
    }

    async fn call(
        &self,
        entries: Vec<Self::Entry>,
    ) -> Result<Vec<Result<(), EntryFailure>>, CallError> {
        let out = self
            .client
            .put_events()
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
impl Bus for EventBridgeBus {
    #[instrument(skip_all, fields(bus = %self.bus_name, events = events.len()))]
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        self.publisher.put_events(events).await
    }
}
