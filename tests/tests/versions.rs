//! Versions of one event type live side by side: each has its own schema, route and detail type.

use busway_tests::{
    Broker, seed_data_schema, seed_event, v1_envelope, v2_data_schema, v2_envelope,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_two_deploys_beside_version_one_and_each_route_enforces_its_own_schema() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;

    let reply = busway
        .put(
            "/events/scanned_parcel",
            &json!({"data": v2_data_schema(), "description": "Parcel scanned by id"}),
        )
        .await;
    let v2 = reply.expect(201).clone();
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["event_type"], "scanned_parcel");
    let deployment = busway
        .deployed(v2["deployment_id"].as_str().expect("a deployment id"))
        .await;
    assert_eq!(deployment["key"], "scanned_parcel/2/deploy.json");
    let deploy = busway.read_object(
        "publisher-components-bucket",
        "scanned_parcel/2/deploy.json",
    );
    assert_eq!(deploy["version"], 2);
    assert_eq!(deploy["detail_type"], "scanned_parcel.2");
    // Version 1's document is left as it was.
    let v1_deploy = busway.read_object(
        "publisher-components-bucket",
        "scanned_parcel/1/deploy.json",
    );
    assert_eq!(v1_deploy["version"], 1);

    let one = busway.get("/events/scanned_parcel/versions/1").await;
    let two = busway.get("/events/scanned_parcel/versions/2").await;
    assert_eq!(
        one.expect(200)["schema"]["properties"]["data"],
        seed_data_schema()
    );
    assert_eq!(
        two.expect(200)["schema"]["properties"]["data"],
        v2_data_schema()
    );
    assert_eq!(two.body["description"], "Parcel scanned by id");
    assert_ne!(one.body["schema"], two.body["schema"]);

    let event = busway
        .get("/events/scanned_parcel")
        .await
        .expect(200)
        .clone();
    assert_eq!(event["latest_version"], 2);
    let listed: Vec<_> = event["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| (v["version"].clone(), v["state"].clone()))
        .collect();
    assert_eq!(
        listed,
        [(json!(1), json!("ACTIVE")), (json!(2), json!("ACTIVE"))]
    );

    let first = busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await;
    let second = busway
        .publish("scanned_parcel", "2", &v2_envelope("u2"))
        .await;
    let first_id = first.expect(200)["event_id"].clone();
    let second_id = second.expect(200)["event_id"].clone();

    let crossed = busway
        .publish("scanned_parcel", "2", &v1_envelope("u2"))
        .await;
    let fields = crossed.expect_error(400, "validation_failed");
    assert!(fields.iter().any(|f| f.starts_with("/data")), "{fields:?}");
    let crossed = busway
        .publish("scanned_parcel", "1", &v2_envelope("u2"))
        .await;
    let fields = crossed.expect_error(400, "validation_failed");
    assert!(fields.iter().any(|f| f.starts_with("/data")), "{fields:?}");

    let logged = busway.logged_events();
    let seen: Vec<_> = logged
        .iter()
        .map(|e| (e.event_id.as_str(), e.detail_type.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (first_id.as_str().expect("an id"), "scanned_parcel.1"),
            (second_id.as_str().expect("an id"), "scanned_parcel.2"),
        ]
    );
    assert_eq!(logged[1].detail["metadata"]["version"], 2);

    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_without_a_description_keeps_the_event_types_description() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;

    let v2 = busway
        .add_deployed_version("scanned_parcel", &json!({"data": v2_data_schema()}))
        .await;
    assert_eq!(v2["description"], "Scanned parcel on the workshop");

    busway.stop().await;
}
