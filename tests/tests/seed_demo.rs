//! The seed's "Full demo example", step by step, with its own payloads.

use busway_tests::{Broker, seed_data_schema, seed_event, seed_subscription, v1_envelope};
use serde_json::{Value, json};

const DRAFT4: &str = "http://json-schema.org/draft-04/schema#";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_seed_event_deploys_its_producer_route_and_stores_its_schema() {
    let busway = Broker::start().await;

    let created = busway.post("/events", &seed_event()).await;
    let created = created.expect(201);
    assert_eq!(created["event_type"], "scanned_parcel");
    assert_eq!(created["application"], "demo");
    assert_eq!(created["connection_type"], "HTTPS");
    assert_eq!(created["latest_version"], 1);
    let deployment_id = created["deployment_id"]
        .as_str()
        .expect("the answer names its deployment");

    let deployment = busway.deployed(deployment_id).await;
    assert_eq!(deployment["kind"], "producer");
    assert_eq!(deployment["action"], "deploy");
    assert_eq!(deployment["event_type"], "scanned_parcel");
    assert_eq!(deployment["version"], 1);
    assert_eq!(deployment["key"], "scanned_parcel/1/deploy.json");
    assert_eq!(deployment["error"], Value::Null);
    let history = deployment["history"].as_array().expect("a history");
    let statuses: Vec<&str> = history
        .iter()
        .map(|h| h["status"].as_str().expect("a status"))
        .collect();
    assert_eq!(statuses, ["PENDING", "VALIDATING", "BUILDING", "SUCCEEDED"]);
    let times: Vec<&str> = history
        .iter()
        .map(|h| h["at"].as_str().expect("a time"))
        .collect();
    assert!(
        times.iter().all(|t| t.ends_with('Z')),
        "times are RFC 3339 UTC: {times:?}"
    );

    let version = busway
        .get("/events/scanned_parcel/versions/1")
        .await
        .expect(200)
        .clone();
    let schema = &version["schema"];
    assert_eq!(schema["$schema"], DRAFT4);
    assert_eq!(schema["properties"]["data"], seed_data_schema());
    assert_eq!(
        schema["required"],
        json!(["metadata", "data"]),
        "the envelope requires metadata and data: {schema}"
    );
    assert_eq!(version["state"], "ACTIVE");

    let deploy = busway.read_object(
        "publisher-components-bucket",
        "scanned_parcel/1/deploy.json",
    );
    assert_eq!(deploy["kind"], "producer");
    assert_eq!(deploy["action"], "deploy");
    assert_eq!(deploy["deployment_id"], deployment_id);
    assert_eq!(deploy["event_type"], "scanned_parcel");
    assert_eq!(deploy["version"], 1);
    assert_eq!(deploy["source"], "busway.demo");
    assert_eq!(deploy["detail_type"], "scanned_parcel.1");
    assert_eq!(&deploy["schema"], schema);

    let backup = busway.read_object(
        "event-schemas-backup-bucket",
        "scanned_parcel/1/schema.json",
    );
    assert_eq!(&backup, schema);

    let listed = busway.get("/events").await.expect(200).clone();
    let names: Vec<&Value> = listed["event_types"]
        .as_array()
        .expect("event_types is an array")
        .iter()
        .map(|e| &e["event_type"])
        .collect();
    assert_eq!(names, [&json!("scanned_parcel")]);

    let one = busway
        .get("/events/scanned_parcel")
        .await
        .expect(200)
        .clone();
    assert_eq!(one["description"], "Scanned parcel on the workshop");
    assert_eq!(one["application"], "demo");
    assert_eq!(one["latest_version"], 1);
    let versions = one["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "{one}");
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["state"], "ACTIVE");

    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_envelope_is_enriched_and_put_on_the_bus_with_the_registered_source() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;

    let mut envelope = v1_envelope("u2");
    // The source a producer writes is its own attribute; the bus source is the application's.
    envelope["metadata"]["event_attributes"]["source"] = json!("busway.evil");
    let reply = busway.publish("scanned_parcel", "1", &envelope).await;
    let event_id = reply.expect(200)["event_id"]
        .as_str()
        .expect("an event_id")
        .to_string();
    assert!(!event_id.is_empty());

    let logged = busway.logged_events();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let event = &logged[0];
    assert_eq!(event.event_id, event_id);
    assert_eq!(event.source, "busway.demo");
    assert_eq!(event.detail_type, "scanned_parcel.1");
    let metadata = &event.detail["metadata"];
    assert_eq!(metadata["event_id"], event_id.as_str());
    assert_eq!(metadata["event_type"], "scanned_parcel");
    assert_eq!(metadata["version"], 1);
    assert_eq!(metadata["application"], "demo");
    let received_at = metadata["received_at"].as_str().expect("received_at");
    assert!(
        received_at.starts_with("20") && received_at.ends_with('Z'),
        "received_at is an RFC 3339 UTC time: {received_at}"
    );
    assert_eq!(
        metadata["event_attributes"],
        json!({"source": "busway.evil", "target": "u2"})
    );
    assert_eq!(event.detail["data"], v1_envelope("u2")["data"]);

    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_event_id_is_kept_and_publishing_it_twice_stores_it_once() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;

    let mut envelope = v1_envelope("u2");
    envelope["metadata"]["event_id"] = json!("parcel-2026-0001");
    for attempt in 1..=2 {
        let reply = busway.publish("scanned_parcel", "1", &envelope).await;
        assert_eq!(
            reply.expect(200)["event_id"],
            "parcel-2026-0001",
            "attempt {attempt}"
        );
    }
    let other = busway
        .publish("scanned_parcel", "1", &v1_envelope("u3"))
        .await;
    let other_id = other.expect(200)["event_id"].clone();
    assert_ne!(other_id, "parcel-2026-0001");

    let ids: Vec<String> = busway
        .logged_events()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        ids,
        ["parcel-2026-0001", other_id.as_str().expect("a string id")]
    );

    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_lambda_subscription_is_created_and_its_consumer_is_deployed() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;

    let reply = busway.post("/subscriptions", &seed_subscription()).await;
    let created = reply.expect(201).clone();
    let id = created["id"].as_str().expect("a subscription id");
    let deployment_id = created["deployment_id"].as_str().expect("a deployment id");
    assert_eq!(created["version"], 1, "the string \"1\" is version 1");
    assert_eq!(created["target_unit"], "u2");
    assert_eq!(created["connection_type"], "LAMBDA");
    assert_eq!(created["state"], "ACTIVE");

    let deployment = busway.deployed(deployment_id).await;
    assert_eq!(deployment["kind"], "consumer");
    assert_eq!(deployment["subscription_id"], id);
    let statuses: Vec<&str> = deployment["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|h| h["status"].as_str().expect("a status"))
        .collect();
    assert_eq!(statuses, ["PENDING", "VALIDATING", "BUILDING", "SUCCEEDED"]);

    let key = format!("scanned_parcel/1/u2/{id}/deploy.json");
    assert_eq!(deployment["key"], key.as_str());
    let deploy = busway.read_object("subscriber-components-bucket", &key);
    assert_eq!(deploy["kind"], "consumer");
    assert_eq!(deploy["action"], "deploy");
    assert_eq!(deploy["deployment_id"], deployment_id);
    assert_eq!(deploy["subscription_id"], id);
    assert_eq!(deploy["target_unit"], "u2");
    assert_eq!(deploy["connection_type"], "LAMBDA");
    assert_eq!(
        deploy["connection_string"],
        "arn:aws:lambda:eu-west-1:123456789012:function:my-target-lambda-processor"
    );
    assert_eq!(
        deploy["event_pattern"],
        json!({
            "source": ["busway.demo"],
            "detail-type": ["scanned_parcel.1"],
            "detail": {"metadata": {"event_attributes": {"target": ["u2"]}}}
        })
    );

    let fetched = busway.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(fetched.expect(200)["id"], id);

    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_producer_event_id_on_another_event_type_is_not_dropped() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let mut other = seed_event();
    other["application"] = json!("depot");
    other["event_type"] = json!("parcel_delivered");
    busway.create_deployed_event(&other).await;

    let mut envelope = v1_envelope("u2");
    envelope["metadata"]["event_id"] = json!("0001");
    for event_type in ["scanned_parcel", "parcel_delivered"] {
        let reply = busway.publish(event_type, "1", &envelope).await;
        assert_eq!(reply.expect(200)["event_id"], "0001");
    }
    let detail_types: Vec<String> = busway
        .logged_events()
        .into_iter()
        .map(|e| e.detail_type)
        .collect();
    assert_eq!(detail_types, ["scanned_parcel.1", "parcel_delivered.1"]);
    busway.stop().await;
}
