//! Everything busway knows survives a restart on the same data dir.

use busway_local::{Config, Running};
use busway_tests::{
    Broker, seed_event, seed_subscription, v1_envelope, v2_data_schema, v2_envelope,
};
use serde_json::{Value, json};

/// Every read the portal offers, for comparing before and after.
async fn everything(busway: &Broker) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/events",
        "/events/scanned_parcel",
        "/events/parcel_delivered",
        "/events/scanned_parcel/versions/1",
        "/events/scanned_parcel/versions/2",
        "/events/parcel_delivered/versions/1",
        "/subscriptions",
        "/subscriptions?target_unit=u3",
        "/deployments",
        "/deployments?event_type=scanned_parcel",
    ] {
        seen.push(json!({"path": path, "body": busway.get(path).await.expect(200).clone()}));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_data_dir_keeps_every_event_type_subscription_deployment_and_route() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
        .add_deployed_version("scanned_parcel", &json!({"data": v2_data_schema()}))
        .await;
    let mut delivered = seed_event();
    delivered["event_type"] = json!("parcel_delivered");
    busway.create_deployed_event(&delivered).await;
    let first = busway.subscribe_deployed(&seed_subscription()).await;
    let mut second = seed_subscription();
    second["version"] = json!(2);
    second["target_unit"] = json!("u3");
    second["connection_type"] = json!("SQS");
    second["connection_string"] = json!("arn:aws:sqs:eu-west-1:123456789012:parcels");
    busway.subscribe_deployed(&second).await;
    let deleted = busway.delete("/events/parcel_delivered/versions/1").await;
    busway
        .deployed(
            deleted.expect(202)["deployment_id"]
                .as_str()
                .expect("an id"),
        )
        .await;
    let one = busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await;
    let two = busway
        .publish("scanned_parcel", "2", &v2_envelope("u3"))
        .await;
    let published = [
        one.expect(200)["event_id"].clone(),
        two.expect(200)["event_id"].clone(),
    ];

    let before = everything(&busway).await;
    let files_before = busway.bucket_files();
    let events_before = busway.logged_events();
    let (old_portal, old_broker) = (busway.portal_url("/"), busway.broker_url("/"));

    let busway = busway.restart().await;
    assert_eq!(everything(&busway).await, before);
    assert_eq!(busway.bucket_files(), files_before);
    assert_eq!(busway.logged_events(), events_before);
    assert_eq!(
        busway
            .logged_events()
            .iter()
            .map(|e| json!(e.event_id))
            .collect::<Vec<_>>(),
        published
    );
    // The old listeners are gone: requests reach only the new process.
    assert!(
        busway.http.get(&old_portal).send().await.is_err() || old_portal == busway.portal_url("/")
    );
    assert!(
        busway.http.get(&old_broker).send().await.is_err() || old_broker == busway.broker_url("/")
    );

    let deployments = before[8]["body"]["deployments"]
        .as_array()
        .expect("deployments")
        .clone();
    assert_eq!(deployments.len(), 6, "{deployments:?}");
    for deployment in &deployments {
        let id = deployment["id"].as_str().expect("an id");
        let reply = busway.get(&format!("/deployments/{id}")).await;
        assert_eq!(reply.expect(200), deployment);
        assert_eq!(deployment["status"], "SUCCEEDED");
    }

    // The routes are live again with their validators, and the deleted one stays gone.
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    busway
        .publish("scanned_parcel", "2", &v2_envelope("u3"))
        .await
        .expect(200);
    busway
        .publish("scanned_parcel", "1", &v2_envelope("u2"))
        .await
        .expect_error(400, "validation_failed");
    busway
        .publish("scanned_parcel", "2", &v1_envelope("u2"))
        .await
        .expect_error(400, "validation_failed");
    busway
        .publish("parcel_delivered", "1", &v1_envelope("u2"))
        .await
        .expect_error(404, "not_found");
    assert_eq!(busway.logged_events().len(), 4);

    // The portal carries on where it stopped: conflicts, creates answered with what they made,
    // new versions and unsubscribes.
    let mut taken = seed_event();
    taken["description"] = json!("Another meaning");
    busway
        .post("/events", &taken)
        .await
        .expect_error(409, "already_exists");
    let again = busway.post("/subscriptions", &seed_subscription()).await;
    assert_eq!(again.expect(201)["id"], first["id"]);
    let v3 = busway
        .add_deployed_version("scanned_parcel", &json!({"data": {"type": "object"}}))
        .await;
    assert_eq!(v3["version"], 3);
    let v2_again = busway
        .add_deployed_version("parcel_delivered", &json!({"data": {"type": "object"}}))
        .await;
    assert_eq!(
        v2_again["version"], 2,
        "a deleted version's number is not reused"
    );
    let id = first["id"].as_str().expect("an id");
    let unsubscribed = busway.delete(&format!("/subscriptions/{id}")).await;
    busway
        .deployed(
            unsubscribed.expect(202)["deployment_id"]
                .as_str()
                .expect("an id"),
        )
        .await;

    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_provision_finished_documents_again() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway.subscribe_deployed(&seed_subscription()).await;
    let known: Vec<Value> = busway.get("/deployments").await.expect(200)["deployments"]
        .as_array()
        .expect("deployments")
        .clone();

    let busway = busway.restart().await;
    // Several scans pass; none of them may start a deployment for an unchanged deploy.json.
    tokio::time::sleep(busway_tests::SCAN_INTERVAL * 6).await;
    let after = busway.get("/deployments").await.expect(200)["deployments"]
        .as_array()
        .expect("deployments")
        .clone();
    assert_eq!(after, known);
    busway.stop().await;
}

/// Creates five event types back to back and restarts at once, so the runner is in the middle
/// of one of them when busway stops; returns the deployment ids the portal answered.
async fn create_several_and_restart(busway: Broker) -> (Broker, Vec<String>) {
    let mut answered = Vec::new();
    for name in ["parcel_a", "parcel_b", "parcel_c", "parcel_d", "parcel_e"] {
        let mut body = seed_event();
        body["event_type"] = json!(name);
        let created = busway.post("/events", &body).await;
        answered.push(
            created.expect(201)["deployment_id"]
                .as_str()
                .expect("a deployment id")
                .to_string(),
        );
    }
    (busway.restart().await, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_interrupted_by_a_stop_finish_under_their_own_id_after_the_restart() {
    let (busway, answered) = create_several_and_restart(Broker::start().await).await;
    for id in &answered {
        busway.deployed(id).await;
    }
    for name in ["parcel_a", "parcel_e"] {
        busway
            .publish(name, "1", &v1_envelope("u2"))
            .await
            .expect(200);
    }
    let deployments = busway.get("/deployments").await.expect(200)["deployments"]
        .as_array()
        .expect("deployments")
        .clone();
    for deployment in &deployments {
        assert_eq!(deployment["status"], "SUCCEEDED", "{deployment}");
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_provisioned_just_before_a_stop_is_not_provisioned_again() {
    // The window is small: several rounds make hitting it likely.
    for round in 0..20 {
        let (busway, answered) = create_several_and_restart(Broker::start().await).await;
        for id in &answered {
            busway.deployed(id).await;
        }
        let all = busway.get("/deployments").await.expect(200)["deployments"]
            .as_array()
            .expect("deployments")
            .len();
        assert_eq!(
            all,
            answered.len(),
            "round {round}: one deployment per document"
        );
        busway.stop().await;
    }
}

/// Two brokers on one data dir would each deliver every event and each serve only the routes it
/// deployed: the second is refused, naming the first's process, until the first stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_a_data_dir_in_use_is_refused() {
    let busway = Broker::start().await;
    let any_port = "127.0.0.1:0".parse().expect("a socket address");
    let second = Config::new(busway.data_dir().into(), any_port, any_port);
    let refused = Running::start(second)
        .await
        .err()
        .expect("the second broker is refused");
    let message = format!("{refused:#}");
    for part in [
        "is in use by another busway up",
        &format!("(process {})", std::process::id()),
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    let busway = busway.restart().await;
    busway.get("/events").await.expect(200);
    busway.stop().await;
}
