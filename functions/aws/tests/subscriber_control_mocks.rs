//! Pause and resume on the Custom Event Bus (`eventbridgev2`) against the real SDK client with
//! mocked answers: the subscription's subscriber is found by its name (or its latest replay's)
//! on the platform's bus, STOPPED to pause, RUNNING from its last processed event to resume. No emulator serves
//! this API, so these mocks and the client's own serialization are what verifies the adapter.

use std::sync::{Arc, Mutex};

use aws_sdk_eventbridgev2::Client;
use aws_sdk_eventbridgev2::operation::list_subscribers::ListSubscribersOutput;
use aws_sdk_eventbridgev2::operation::update_subscriber::UpdateSubscriberOutput;
use aws_sdk_eventbridgev2::types::{ResumePosition, SubscriberState, SubscriberSummary};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use busway_aws::subscribers::CustomBusSubscribers;
use busway_core::ports::{ControlError, Replay, RunState, SubscriberControl};

const BUS_ARN: &str = "arn:aws:events:eu-west-1:111111111111:event-busv2/test-busway/b-0123";
const ID: &str = "0d5a3c1e-8f7b-4b7e-9a55-2f1c6d0e9a11";

fn arn(name: &str) -> String {
    format!("{BUS_ARN}/subscriber/{name}")
}

fn summary(name: &str, state: SubscriberState) -> SubscriberSummary {
    SubscriberSummary::builder()
        .name(name)
        .subscriber_arn(arn(name))
        .event_bus_arn(BUS_ARN)
        .state(state)
        .build()
}

/// A ListSubscribers call's bus, name prefix and token.
type List = (String, String, Option<String>);
/// An UpdateSubscriber call's ARN, state and resume position.
type Update = (String, SubscriberState, Option<ResumePosition>);

#[derive(Default, Clone)]
struct Calls {
    lists: Arc<Mutex<Vec<List>>>,
    updates: Arc<Mutex<Vec<Update>>>,
}

/// A bus whose subscribers are `pages` (each but the last answered with a next token).
fn control(pages: Vec<Vec<SubscriberSummary>>) -> (CustomBusSubscribers, Calls) {
    let calls = Calls::default();
    let lists = calls.lists.clone();
    let list = mock!(Client::list_subscribers).then_compute_response(move |input| {
        let mut lists = lists.lock().expect("lock");
        lists.push((
            input.event_bus_arn().unwrap_or_default().to_string(),
            input.name_prefix().unwrap_or_default().to_string(),
            input.next_token().map(String::from),
        ));
        let page = input
            .next_token()
            .map_or(0, |t| t.parse::<usize>().expect("a token this mock gave"));
        let mut output = ListSubscribersOutput::builder()
            .set_subscribers(Some(pages.get(page).cloned().unwrap_or_default()));
        if page + 1 < pages.len() {
            output = output.next_token((page + 1).to_string());
        }
        aws_smithy_mocks::MockResponse::Output(output.build())
    });
    let updates = calls.updates.clone();
    let update = mock!(Client::update_subscriber).then_compute_response(move |input| {
        updates.lock().expect("lock").push((
            input.subscriber_arn().unwrap_or_default().to_string(),
            input.state().cloned().expect("a state"),
            input.resume_position().cloned(),
        ));
        aws_smithy_mocks::MockResponse::Output(UpdateSubscriberOutput::builder().build())
    });
    let client = mock_client!(aws_sdk_eventbridgev2, RuleMode::MatchAny, &[&list, &update]);
    (
        CustomBusSubscribers::new(client, BUS_ARN, time::Duration::days(7)),
        calls,
    )
}

fn name() -> String {
    format!("busway-{ID}")
}

/// A subscriber whose name only starts with the subscription's, listed first.
fn longer() -> SubscriberSummary {
    summary(&format!("{}-old", name()), SubscriberState::Stopped)
}

#[tokio::test]
async fn pause_stops_exactly_the_subscriptions_subscriber_on_the_platforms_bus() {
    let (control, calls) = control(vec![vec![
        longer(),
        summary(&name(), SubscriberState::Running),
    ]]);
    assert_eq!(
        control.state(ID).await.expect("a state"),
        Some(RunState::Running)
    );
    control.pause(ID).await.expect("paused");
    let lists = calls.lists.lock().expect("lock").clone();
    assert!(
        lists
            .iter()
            .all(|(bus, prefix, _)| bus == BUS_ARN && *prefix == name()),
        "{lists:?}"
    );
    assert_eq!(
        *calls.updates.lock().expect("lock"),
        [(arn(&name()), SubscriberState::Stopped, None)]
    );
}

#[tokio::test]
async fn resume_starts_the_subscriber_from_its_last_processed_event_found_on_a_later_page() {
    let (control, calls) = control(vec![
        vec![longer()],
        vec![summary(&name(), SubscriberState::Stopped)],
    ]);
    assert_eq!(
        control.state(ID).await.expect("a state"),
        Some(RunState::Paused)
    );
    control.resume(ID).await.expect("resumed");
    assert_eq!(
        *calls.updates.lock().expect("lock"),
        [(
            arn(&name()),
            SubscriberState::Running,
            Some(ResumePosition::LastProcessed)
        )]
    );
    let tokens: Vec<Option<String>> = calls
        .lists
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, _, token)| token.clone())
        .collect();
    assert_eq!(tokens, [None, Some("1".into()), None, Some("1".into())]);
}

#[tokio::test]
async fn a_subscriber_already_in_the_asked_state_or_not_made_yet_is_a_conflict_and_not_updated() {
    let (running, calls) = control(vec![vec![summary(&name(), SubscriberState::Running)]]);
    assert!(matches!(
        running.resume(ID).await,
        Err(ControlError::Conflict(_))
    ));
    let (stopped, stopped_calls) = control(vec![vec![summary(&name(), SubscriberState::Stopped)]]);
    assert!(matches!(
        stopped.pause(ID).await,
        Err(ControlError::Conflict(_))
    ));
    let (none, none_calls) = control(vec![vec![longer()]]);
    assert_eq!(none.state(ID).await.expect("a state"), None);
    assert!(matches!(
        none.pause(ID).await,
        Err(ControlError::Conflict(_))
    ));
    for calls in [calls, stopped_calls, none_calls] {
        assert!(calls.updates.lock().expect("lock").is_empty());
    }
}

#[tokio::test]
async fn a_replay_within_the_retention_is_left_to_a_new_subscriber_and_calls_nothing() {
    let (control, calls) = control(vec![vec![summary(&name(), SubscriberState::Running)]]);
    let within = busway_core::now() - time::Duration::days(6);
    assert!(matches!(
        control.replay(ID, within).await,
        Ok(Replay::NewSubscriber)
    ));
    let before = busway_core::now() - time::Duration::days(8);
    let refused = control.replay(ID, before).await;
    assert!(
        matches!(&refused, Err(ControlError::BadStart(why)) if why.contains("retention")),
        "{refused:?}"
    );
    assert!(calls.lists.lock().expect("lock").is_empty());
    assert!(calls.updates.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn pause_stops_the_latest_replays_subscriber_while_the_old_one_is_replaced() {
    let replayed = format!("{}-r1790000000", name());
    let (control, calls) = control(vec![
        vec![summary(&replayed, SubscriberState::Running)],
        vec![
            summary(&format!("{}-r1780000000", name()), SubscriberState::Stopped),
            summary(&name(), SubscriberState::Stopped),
        ],
    ]);
    assert_eq!(
        control.state(ID).await.expect("a state"),
        Some(RunState::Running)
    );
    control.pause(ID).await.expect("paused");
    assert_eq!(
        *calls.updates.lock().expect("lock"),
        [(arn(&replayed), SubscriberState::Stopped, None)]
    );
}
