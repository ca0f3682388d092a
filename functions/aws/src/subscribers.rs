//! Pause and resume of a subscription on the Custom Event Bus: its subscriber (named
//! `deploy::rule_name`, made by its consumer stack) is STOPPED, and RUNNING again from where it
//! stopped (`ResumePosition` `LAST_PROCESSED`), so what the bus took meanwhile (it keeps every
//! event for its retention) is delivered after the resume. A replay is not offered here:
//! `UpdateSubscriber` sets only the state and the resume position; a subscriber's starting
//! position and point in time are set when it is created, and its consumer stack owns it.

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_eventbridgev2::Client;
use aws_sdk_eventbridgev2::error::DisplayErrorContext;
use aws_sdk_eventbridgev2::types::{ResumePosition, SubscriberState};
use busway_core::deploy::rule_name;
use busway_core::ports::{ControlError, RunState, SubscriberControl};

pub struct CustomBusSubscribers {
    client: Client,
    bus_arn: String,
}

impl CustomBusSubscribers {
    pub fn new(client: Client, bus_arn: impl Into<String>) -> Self {
        Self {
            client,
            bus_arn: bus_arn.into(),
        }
    }

    /// The subscription's subscriber: its ARN and state; `None` before its consumer stack made it.
    async fn find(
        &self,
        subscription_id: &str,
    ) -> Result<Option<(String, SubscriberState)>, ControlError> {
        let name = rule_name(subscription_id);
        let mut next_token = None;
        loop {
            let page = self
                .client
                .list_subscribers()
                .event_bus_arn(&self.bus_arn)
                .name_prefix(&name)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| anyhow!("listing subscribers: {}", DisplayErrorContext(e)))?;
            let found = page
                .subscribers()
                .iter()
                .find(|s| s.name() == Some(name.as_str()));
            if let Some(s) = found {
                let arn = s
                    .subscriber_arn()
                    .ok_or_else(|| anyhow!("subscriber {name} has no ARN"))?;
                let state = s.state().cloned().unwrap_or(SubscriberState::Running);
                return Ok(Some((arn.to_string(), state)));
            }
            match page.next_token() {
                Some(token) => next_token = Some(token.to_string()),
                None => return Ok(None),
            }
        }
    }

    /// The subscriber, or `Conflict` while its consumer stack has not made it.
    async fn existing(
        &self,
        subscription_id: &str,
    ) -> Result<(String, SubscriberState), ControlError> {
        self.find(subscription_id).await?.ok_or_else(|| {
            ControlError::Conflict(format!(
                "subscription {subscription_id} has no subscriber yet: its deployment is not live"
            ))
        })
    }

    async fn update(
        &self,
        arn: String,
        state: SubscriberState,
        resume: Option<ResumePosition>,
    ) -> Result<(), ControlError> {
        self.client
            .update_subscriber()
            .subscriber_arn(arn)
            .state(state)
            .set_resume_position(resume)
            .send()
            .await
            .map_err(|e| anyhow!("updating the subscriber: {}", DisplayErrorContext(e)))?;
        Ok(())
    }
}

fn run_state(state: &SubscriberState) -> RunState {
    match state {
        SubscriberState::Stopped => RunState::Paused,
        _ => RunState::Running,
    }
}

#[async_trait]
impl SubscriberControl for CustomBusSubscribers {
    async fn state(&self, subscription_id: &str) -> Result<Option<RunState>, ControlError> {
        Ok(self
            .find(subscription_id)
            .await?
            .map(|(_, state)| run_state(&state)))
    }

    async fn pause(&self, subscription_id: &str) -> Result<(), ControlError> {
        let (arn, state) = self.existing(subscription_id).await?;
        if run_state(&state) == RunState::Paused {
            return Err(ControlError::Conflict(format!(
                "subscription {subscription_id} is paused already"
            )));
        }
        self.update(arn, SubscriberState::Stopped, None).await
    }

    async fn resume(&self, subscription_id: &str) -> Result<(), ControlError> {
        let (arn, state) = self.existing(subscription_id).await?;
        if run_state(&state) == RunState::Running {
            return Err(ControlError::Conflict(format!(
                "subscription {subscription_id} is running"
            )));
        }
        self.update(
            arn,
            SubscriberState::Running,
            Some(ResumePosition::LastProcessed),
        )
        .await
    }

    async fn replay(
        &self,
        _subscription_id: &str,
        _start: time::OffsetDateTime,
    ) -> Result<(), ControlError> {
        Err(ControlError::NotAvailable(
            "the Custom Event Bus sets a subscriber's point in time only when the subscriber is created, and its consumer stack owns it; replay is not available on AWS yet".into(),
        ))
    }
}
