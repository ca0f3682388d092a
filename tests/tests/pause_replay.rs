//! Pause, resume and replay of one subscription on the local host, over HTTP: a paused
//! subscription's cursor waits (across a restart) and a replay moves it back in the log.

use std::collections::BTreeSet;
use std::time::Duration;

use busway_tests::consumer::{Consumer, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope};
use serde_json::{Value, json};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a target that must receive nothing more is watched.
const QUIET: Duration = Duration::from_millis(500);

async fn publish(busway: &Broker, target: &str) -> String {
    busway
        .publish("scanned_parcel", "1", &v1_envelope(target))
        .await
        .expect(200)["event_id"]
        .as_str()
        .expect("an event_id")
        .to_string()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("a formattable time")
}

async fn subscribe(busway: &Broker, consumer: &Consumer, path: &str) -> String {
    busway
        .subscribe_deployed(&http_subscription(1, "u2", &consumer.url(path)))
        .await["id"]
        .as_str()
        .expect("a subscription id")
        .to_string()
}

async fn delivery_state(busway: &Broker, id: &str) -> Value {
    busway
        .get(&format!("/subscriptions/{id}"))
        .await
        .expect(200)["delivery_state"]
        .clone()
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_redelivers_exactly_that_subscriptions_events_since_its_start_and_no_others() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let (replayed, other) = (Consumer::start().await, Consumer::start().await);
    // Both subscriptions match the same events.
    let id = subscribe(&busway, &replayed, "/replayed").await;
    subscribe(&busway, &other, "/other").await;

    let before = publish(&busway, "u2").await;
    replayed.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    // The log keeps whole seconds: the start falls in a later second than `before`'s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let start = rfc3339(busway_core::now());
    let since = [publish(&busway, "u2").await, publish(&busway, "u2").await];
    // An event the subscription's pattern does not match.
    publish(&busway, "u3").await;
    replayed.wait_for_deliveries(3, DELIVERY_TIMEOUT).await;
    other.wait_for_deliveries(3, DELIVERY_TIMEOUT).await;

    let reply = busway
        .post(
            &format!("/subscriptions/{id}/replay"),
            &json!({"start_time": start}),
        )
        .await;
    assert!(
        reply.expect(202)["replaying_from"].is_string(),
        "{}",
        reply.body
    );

    let delivered = replayed
        .wait_for_deliveries(5, DELIVERY_TIMEOUT)
        .await
        .iter()
        .map(|r| r.event_id())
        .collect::<Vec<_>>();
    assert_eq!(
        sorted(&delivered[..3]),
        sorted(&[before.clone(), since[0].clone(), since[1].clone()])
    );
    assert_eq!(sorted(&delivered[3..]), sorted(&since), "{delivered:?}");
    replayed.assert_no_more_than(5, QUIET).await;
    other.assert_no_more_than(3, QUIET).await;
    assert_eq!(delivery_state(&busway, &id).await, "RUNNING");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_paused_arrive_after_resume_and_the_pause_survives_a_restart() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let (paused, running) = (Consumer::start().await, Consumer::start().await);
    let id = subscribe(&busway, &paused, "/paused").await;
    subscribe(&busway, &running, "/running").await;
    assert_eq!(delivery_state(&busway, &id).await, "RUNNING");
    let mut published = vec![publish(&busway, "u2").await];
    paused.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;

    let reply = busway
        .post(&format!("/subscriptions/{id}/pause"), &json!({}))
        .await;
    assert_eq!(reply.expect(200)["delivery_state"], "PAUSED");
    assert_eq!(delivery_state(&busway, &id).await, "PAUSED");
    for _ in 0..5 {
        published.push(publish(&busway, "u2").await);
    }
    // The other subscription of the same events is not paused.
    running.wait_for_deliveries(6, DELIVERY_TIMEOUT).await;
    paused.assert_no_more_than(1, QUIET).await;

    let busway = busway.restart().await;
    assert_eq!(delivery_state(&busway, &id).await, "PAUSED");
    for _ in 0..5 {
        published.push(publish(&busway, "u2").await);
    }
    running.wait_for_deliveries(11, DELIVERY_TIMEOUT).await;
    paused.assert_no_more_than(1, QUIET).await;

    let reply = busway
        .post(&format!("/subscriptions/{id}/resume"), &json!({}))
        .await;
    assert_eq!(reply.expect(200)["delivery_state"], "RUNNING");
    assert_eq!(delivery_state(&busway, &id).await, "RUNNING");
    paused.wait_for_deliveries(11, DELIVERY_TIMEOUT).await;
    let delivered: BTreeSet<String> = paused.delivered_ids().into_iter().collect();
    assert_eq!(
        delivered,
        published.iter().cloned().collect::<BTreeSet<_>>()
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_replay_answer_the_error_contract() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = Consumer::start().await;
    let id = subscribe(&busway, &consumer, "/hook").await;

    for action in ["pause", "resume"] {
        busway
            .post(&format!("/subscriptions/nope/{action}"), &json!({}))
            .await
            .expect_error(404, "not_found");
    }
    busway
        .post(
            "/subscriptions/nope/replay",
            &json!({"start_time": rfc3339(busway_core::now())}),
        )
        .await
        .expect_error(404, "not_found");

    busway
        .post(&format!("/subscriptions/{id}/resume"), &json!({}))
        .await
        .expect_error(409, "conflict");
    busway
        .post(&format!("/subscriptions/{id}/pause"), &json!({}))
        .await
        .expect(200);
    busway
        .post(&format!("/subscriptions/{id}/pause"), &json!({}))
        .await
        .expect_error(409, "conflict");

    let replay = format!("/subscriptions/{id}/replay");
    let future = busway_core::now() + Duration::from_secs(3600);
    // The default retention is 24 hours.
    let too_old = busway_core::now() - Duration::from_secs(25 * 3600);
    for body in [
        json!({"start_time": rfc3339(future)}),
        json!({"start_time": rfc3339(too_old)}),
        json!({"start_time": "yesterday"}),
        json!({}),
    ] {
        let fields = busway
            .post(&replay, &body)
            .await
            .expect_error(400, "validation_failed");
        assert_eq!(fields, ["start_time"], "{body}");
    }
    let fields = busway
        .post(
            &replay,
            &json!({"start_time": rfc3339(busway_core::now()), "speed": 2}),
        )
        .await
        .expect_error(400, "validation_failed");
    assert_eq!(fields, ["speed"]);
    // A replay of a paused subscription waits for its resume.
    busway
        .post(&replay, &json!({"start_time": rfc3339(busway_core::now())}))
        .await
        .expect(202);
    assert_eq!(delivery_state(&busway, &id).await, "PAUSED");
    busway.stop().await;
}
