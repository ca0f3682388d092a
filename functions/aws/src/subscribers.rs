//! Pause and resume of a subscription on the Custom Event Bus: its subscriber (named
//! `deploy::rule_name`, or `{rule_name}-r{unix seconds}` after a replay; made by its consumer
//! stack) is STOPPED, and RUNNING again from where it stopped (`ResumePosition`
//! `LAST_PROCESSED`), so what the bus took meanwhile (it keeps every event for its retention) is
//! delivered after the resume. A replay is only checked here: `UpdateSubscriber` sets only the
//! state and the resume position, a subscriber's point in time is set when it is created, so the
//! portal has the consumer stack make a new subscriber that starts there.

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_eventbridgev2::Client;
use aws_sdk_eventbridgev2::error::DisplayErrorContext;
use aws_sdk_eventbridgev2::types::{ResumePosition, SubscriberState};
use busway_core::deploy::rule_name;
use busway_core::envelope::eventbridge_time;
use busway_core::ports::{ControlError, Replay, RunState, SubscriberControl};

pub struct CustomBusSubscribers {
    client: Client,
    bus_arn: String,
    /// How long the bus keeps every event: how far back a replay may start.
    retention: time::Duration,
}

/// Which of a subscription's subscribers is its current one: `name` itself, or a replay's
/// `{name}-r{unix seconds}`, the latest replay winning (while CloudFormation replaces one with
/// the next, both exist for a moment).
fn generation(name: &str, rule_name: &str) -> Option<i64> {
    match name.strip_prefix(rule_name)? {
        "" => Some(0),
        rest => rest.strip_prefix("-r")?.parse().ok(),
    }
}

impl CustomBusSubscribers {
    pub fn new(client: Client, bus_arn: impl Into<String>, retention: time::Duration) -> Self {
        Self {
            client,
            bus_arn: bus_arn.into(),
            retention,
        }
    }

    /// The subscription's current subscriber: its ARN and state; `None` before its consumer
    /// stack made it.
    async fn find(
        &self,
        subscription_id: &str,
    ) -> Result<Option<(String, SubscriberState)>, ControlError> {
        let name = rule_name(subscription_id);
        let mut next_token = None;
        let mut current: Option<(i64, String, SubscriberState)> = None;
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
            for s in page.subscribers() {
                let Some(generation) = s.name().and_then(|n| generation(n, &name)) else {
                    continue;
                };
                if current.as_ref().is_some_and(|(g, ..)| *g >= generation) {
                    continue;
                }
                let arn = s
                    .subscriber_arn()
                    .ok_or_else(|| anyhow!("subscriber {name} has no ARN"))?;
                let state = s.state().cloned().unwrap_or(SubscriberState::Running);
                current = Some((generation, arn.to_string(), state));
            }
            match page.next_token() {
                Some(token) => next_token = Some(token.to_string()),
                None => return Ok(current.map(|(_, arn, state)| (arn, state))),
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

    /// A start the bus still keeps; the consumer stack makes the subscriber that starts there.
    async fn replay(
        &self,
        _subscription_id: &str,
        start: time::OffsetDateTime,
    ) -> Result<Replay, ControlError> {
        let earliest = busway_core::now() - self.retention;
        if start < earliest {
            return Err(ControlError::BadStart(format!(
                "is before the bus's retention: the earliest start is {}",
                eventbridge_time(earliest)
            )));
        }
        Ok(Replay::NewSubscriber)
    }
}

#[cfg(test)]
mod tests {
    use super::generation;

    #[test]
    fn the_latest_replay_names_the_current_subscriber() {
        let rule = "busway-0b8f5a52-1c1e-4a5e-9a55-6a3c2b1d0e9f";
        assert_eq!(generation(rule, rule), Some(0));
        assert_eq!(
            generation(&format!("{rule}-r1790000000"), rule),
            Some(1_790_000_000)
        );
        assert_eq!(
            generation(&format!("{rule}0"), rule),
            None,
            "another subscription's"
        );
        assert_eq!(generation(&format!("{rule}-rx"), rule), None);
    }
}
