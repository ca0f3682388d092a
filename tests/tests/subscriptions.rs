//! Subscriptions: duplicates, unknown events, connection strings, filters, and the order in which
//! a subscribed version can be deleted.

use busway_tests::{Broker, seed_event, seed_subscription, v1_envelope, v2_data_schema};
use serde_json::{Value, json};

async fn with_seed_event() -> Broker {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
}

fn subscription(event_type: &str, version: u32, target_unit: &str) -> Value {
    json!({
        "event_type": event_type,
        "version": version,
        "target_unit": target_unit,
        "connection_type": "HTTPS",
        "connection_string": format!("https://{target_unit}.example.com/hooks/{event_type}")
    })
}

fn ids(listed: &Value) -> Vec<String> {
    listed["subscriptions"]
        .as_array()
        .expect("subscriptions is an array")
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_subscription_is_the_existing_one_another_retry_policy_of_its_target_a_conflict_and_another_unit_a_new_one()
 {
    let busway = with_seed_event().await;
    let first = busway.subscribe_deployed(&seed_subscription()).await;
    let before = busway.snapshot().await;

    // A subscribe retried after a timeout gets the subscription it made, and its deployment.
    let reply = busway.post("/subscriptions", &seed_subscription()).await;
    assert_eq!(reply.expect(201), &first);
    // Version 1 as a number is the same version as "1".
    let mut same = seed_subscription();
    same["version"] = json!(1);
    assert_eq!(
        busway.post("/subscriptions", &same).await.expect(201),
        &first
    );
    let mut retried_otherwise = seed_subscription();
    retried_otherwise["retry_policy"] = json!({"maximum_retry_attempts": 3});
    busway
        .post("/subscriptions", &retried_otherwise)
        .await
        .expect_error(409, "already_exists");
    assert_eq!(
        busway.snapshot().await,
        before,
        "neither a repeat nor a conflict writes anything"
    );

    let mut other_unit = seed_subscription();
    other_unit["target_unit"] = json!("u3");
    let second = busway.subscribe_deployed(&other_unit).await;
    assert_ne!(first["id"], second["id"]);

    // Both units keep their own consumer document: keys never collide.
    for (unit, sub) in [("u2", &first), ("u3", &second)] {
        let id = sub["id"].as_str().expect("an id");
        let deploy = busway.read_object(
            "subscriber-components-bucket",
            &format!("scanned_parcel/1/{unit}/{id}/deploy.json"),
        );
        assert_eq!(deploy["target_unit"], unit);
        assert_eq!(deploy["action"], "deploy");
    }
    let listed = busway.get("/subscriptions").await.expect(200).clone();
    assert_eq!(
        ids(&listed),
        [
            first["id"].as_str().expect("an id"),
            second["id"].as_str().expect("an id")
        ]
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_an_unknown_event_type_or_version_is_not_found() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let mut unknown_type = seed_subscription();
    unknown_type["event_type"] = json!("parcel_delivered");
    busway
        .post("/subscriptions", &unknown_type)
        .await
        .expect_error(404, "not_found");

    let mut unknown_version = seed_subscription();
    unknown_version["version"] = json!("2");
    busway
        .post("/subscriptions", &unknown_version)
        .await
        .expect_error(404, "not_found");

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_strings_are_checked_against_their_connection_type() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let refused = [
        ("LAMBDA", "arn:aws:sqs:eu-west-1:123456789012:parcels"),
        (
            "LAMBDA",
            "arn:aws:lambda:{REGION}:{ACCOUNT}:function:my-target-lambda-processor",
        ),
        ("LAMBDA", "my-target-lambda-processor"),
        ("SQS", "arn:aws:lambda:eu-west-1:123456789012:function:f"),
        (
            "SQS",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/parcels",
        ),
        ("HTTPS", "http://consumer.example.com/hook"),
        ("HTTPS", "ftp://consumer.example.com/hook"),
        ("HTTPS", "not a url"),
        ("HTTPS", "https://user:secret@consumer.example.com/hook"),
        ("HTTPS", ""),
    ];
    for (kind, connection_string) in refused {
        let mut body = seed_subscription();
        body["connection_type"] = json!(kind);
        body["connection_string"] = json!(connection_string);
        let reply = busway.post("/subscriptions", &body).await;
        assert_eq!(
            reply.expect_error(400, "validation_failed"),
            ["connection_string"],
            "{kind} {connection_string:?}"
        );
    }
    assert_eq!(busway.snapshot().await, before);

    let accepted = [
        ("SQS", "arn:aws:sqs:eu-west-1:123456789012:parcels", "u3"),
        ("HTTPS", "https://consumer.example.com/hook", "u4"),
        ("HTTPS", "http://127.0.0.1:9000/hook", "u5"),
    ];
    for (kind, connection_string, unit) in accepted {
        let mut body = seed_subscription();
        body["connection_type"] = json!(kind);
        body["connection_string"] = json!(connection_string);
        body["target_unit"] = json!(unit);
        busway.subscribe_deployed(&body).await;
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_filtered_by_event_type_version_and_target_unit() {
    let busway = with_seed_event().await;
    busway
        .add_deployed_version("scanned_parcel", &json!({"data": v2_data_schema()}))
        .await;
    let mut other = seed_event();
    other["event_type"] = json!("parcel_delivered");
    busway.create_deployed_event(&other).await;

    let mut made = Vec::new();
    for (event_type, version, unit) in [
        ("scanned_parcel", 1, "u2"),
        ("scanned_parcel", 1, "u3"),
        ("scanned_parcel", 2, "u2"),
        ("parcel_delivered", 1, "u2"),
    ] {
        let created = busway
            .subscribe_deployed(&subscription(event_type, version, unit))
            .await;
        made.push(created["id"].as_str().expect("an id").to_string());
    }
    let cases: [(&str, &[usize]); 8] = [
        ("", &[0, 1, 2, 3]),
        ("?event_type=scanned_parcel", &[0, 1, 2]),
        ("?event_type=parcel_delivered", &[3]),
        ("?version=2", &[2]),
        ("?target_unit=u2", &[0, 2, 3]),
        ("?event_type=scanned_parcel&version=1", &[0, 1]),
        ("?event_type=scanned_parcel&version=1&target_unit=u3", &[1]),
        ("?event_type=scanned_parcel&target_unit=u9", &[]),
    ];
    for (query, expected) in cases {
        let listed = busway
            .get(&format!("/subscriptions{query}"))
            .await
            .expect(200)
            .clone();
        let expected: Vec<&str> = expected.iter().map(|&i| made[i].as_str()).collect();
        assert_eq!(ids(&listed), expected, "GET /subscriptions{query}");
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_version_can_be_deleted_only_after_its_subscriptions() {
    let busway = with_seed_event().await;
    let subscription = busway.subscribe_deployed(&seed_subscription()).await;
    let id = subscription["id"].as_str().expect("an id");
    let before = busway.snapshot().await;

    let reply = busway.delete("/events/scanned_parcel/versions/1").await;
    reply.expect_error(409, "conflict");
    assert_eq!(busway.snapshot().await, before, "a conflict writes nothing");
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);

    let reply = busway.delete(&format!("/subscriptions/{id}")).await;
    let unsubscribed = reply.expect(202).clone();
    let deployment = busway
        .deployed(
            unsubscribed["deployment_id"]
                .as_str()
                .expect("a deployment id"),
        )
        .await;
    assert_eq!(deployment["action"], "destroy");
    assert_eq!(deployment["subscription_id"], id);
    let deploy = busway.read_object(
        "subscriber-components-bucket",
        &format!("scanned_parcel/1/u2/{id}/deploy.json"),
    );
    assert_eq!(deploy["action"], "destroy");
    busway
        .get(&format!("/subscriptions/{id}"))
        .await
        .expect_error(404, "not_found");
    busway
        .delete(&format!("/subscriptions/{id}"))
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        ids(busway.get("/subscriptions").await.expect(200)),
        Vec::<String>::new()
    );

    let reply = busway.delete("/events/scanned_parcel/versions/1").await;
    let deleted = reply.expect(202).clone();
    let deployment = busway
        .deployed(deleted["deployment_id"].as_str().expect("a deployment id"))
        .await;
    assert_eq!(deployment["kind"], "producer");
    assert_eq!(deployment["action"], "destroy");
    let deploy = busway.read_object(
        "publisher-components-bucket",
        "scanned_parcel/1/deploy.json",
    );
    assert_eq!(deploy["action"], "destroy");

    let reply = busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await;
    reply.expect_error(404, "not_found");
    let version = busway.get("/events/scanned_parcel/versions/1").await;
    assert_eq!(version.expect(200)["state"], "DELETED");
    busway
        .delete("/events/scanned_parcel/versions/1")
        .await
        .expect_error(404, "not_found");
    busway
        .post("/subscriptions", &seed_subscription())
        .await
        .expect_error(404, "not_found");

    // The number of a deleted version is never reused.
    let v2 = busway
        .add_deployed_version("scanned_parcel", &json!({"data": v2_data_schema()}))
        .await;
    assert_eq!(v2["version"], 2);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_string_longer_than_a_deploy_json_allows_is_refused_by_the_portal() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let mut body = seed_subscription();
    body["connection_type"] = json!("HTTPS");
    body["connection_string"] = json!(format!("https://consumer.example.com/{}", "a".repeat(2048)));
    let reply = busway.post("/subscriptions", &body).await;
    assert_eq!(
        reply.expect_error(400, "validation_failed"),
        ["connection_string"]
    );
    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}
