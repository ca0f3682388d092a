//! Requests that race for the same name: one wins, the others get a 409 (or, when they are the
//! same request, what the winner made), never a 500, and what is stored stays consistent across
//! the store, the schema backup and the deploy.json.

use busway_tests::{Broker, join_all, seed_event, seed_subscription};
use serde_json::{Value, json};

const RACERS: usize = 8;
/// The races are timing-dependent; several rounds make a lost race very likely to show.
const ROUNDS: usize = 8;

fn statuses(replies: &[busway_tests::Reply]) -> Vec<u16> {
    replies.iter().map(|r| r.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_subscriptions_sent_at_once_all_get_the_one_subscription_they_made() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;

    let body = seed_subscription();
    let replies = join_all(
        (0..RACERS)
            .map(|_| busway.post("/subscriptions", &body))
            .collect(),
    )
    .await;
    assert_eq!(statuses(&replies), vec![201; RACERS], "{replies:?}");
    let made = &replies[0].body;
    for reply in &replies {
        assert_eq!(reply.body["id"], made["id"], "{replies:?}");
        assert_eq!(reply.body["deployment_id"], made["deployment_id"]);
    }
    let listed = busway.get("/subscriptions").await;
    assert_eq!(
        listed.expect(200)["subscriptions"].as_array().map(Vec::len),
        Some(1)
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_type_created_at_once_by_several_clients_gives_one_201_and_409s() {
    let busway = Broker::start().await;
    let client = &busway;
    for round in 0..ROUNDS {
        let name = format!("race_{round}");
        let replies = join_all(
            (0..RACERS)
                .map(|i| {
                    let mut body = seed_event();
                    body["event_type"] = json!(name);
                    body["data"] = json!({"type": "object", "properties": {format!("f{i}"): {"type": "string"}}});
                    async move { client.post("/events", &body).await }
                })
                .collect(),
        )
        .await;
        let mut seen = statuses(&replies);
        seen.sort_unstable();
        let mut expected = vec![409; RACERS - 1];
        expected.insert(0, 201);
        assert_eq!(seen, expected, "round {round}: {replies:?}");
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_new_versions_leave_the_backup_schema_equal_to_the_registered_one() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let client = &busway;
    for round in 0..ROUNDS {
        let replies = join_all(
            (0..RACERS)
                .map(|i| {
                    let body = json!({"data": {"type": "object", "properties": {format!("r{round}_f{i}"): {"type": "string"}}}});
                    async move { client.put("/events/scanned_parcel", &body).await }
                })
                .collect(),
        )
        .await;
        assert!(
            replies.iter().all(|r| r.status == 201 || r.status == 409),
            "round {round}: {replies:?}"
        );
        for created in replies.iter().filter(|r| r.status == 201) {
            let version = &created.body["version"];
            let stored = busway
                .get(&format!("/events/scanned_parcel/versions/{version}"))
                .await
                .expect(200)["schema"]
                .clone();
            assert_eq!(stored, created.body["schema"], "round {round}");
            let backup: Value = busway.read_object(
                "event-schemas-backup-bucket",
                &format!("scanned_parcel/{version}/schema.json"),
            );
            assert_eq!(
                backup, stored,
                "round {round}: the backup of version {version} is another request's schema"
            );
        }
    }
    busway.stop().await;
}
