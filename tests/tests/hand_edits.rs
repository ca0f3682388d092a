//! A deploy.json edited by hand is provisioned again: broken documents end FAILED with the reason
//! and leave what is live untouched; a repaired document deploys.

use busway_tests::{
    Broker, SCAN_INTERVAL, ids, object_path_in, replace_file, seed_event, seed_subscription,
    statuses, v1_envelope, without_provisioning,
};
use serde_json::{Value, json};

const PRODUCER_BUCKET: &str = "publisher-components-bucket";
const CONSUMER_BUCKET: &str = "subscriber-components-bucket";
const PRODUCER_KEY: &str = "scanned_parcel/1/deploy.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_json_broken_by_hand_ends_failed_and_the_live_route_keeps_working() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let original = std::fs::read(busway.object_path(PRODUCER_BUCKET, PRODUCER_KEY))
        .expect("the producer deploy.json");
    let known = ids(&busway.deployments_of("scanned_parcel").await);
    let events = busway.get("/events").await.expect(200).clone();

    busway.edit_object(
        PRODUCER_BUCKET,
        PRODUCER_KEY,
        b"{\"kind\": \"producer\", oops",
    );
    let failed = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(statuses(&failed), ["PENDING", "VALIDATING", "FAILED"]);
    assert_eq!(failed["key"], PRODUCER_KEY);
    assert_eq!(failed["kind"], "producer");
    assert_eq!(failed["event_type"], "scanned_parcel");
    assert_eq!(failed["version"], 1);
    assert_eq!(failed["error"], "DeployConfig.Invalid", "{failed}");
    let error = failed["cause"].as_str().expect("a cause");
    assert!(error.contains("not valid JSON"), "{error}");
    let newest = &busway.deployments_of("scanned_parcel").await[0];
    assert_eq!(
        newest["id"], failed["id"],
        "deployments are listed newest first"
    );

    // Nothing else changed: the registered event type and the live route are as they were, and
    // the version says its newest job failed while the earlier deploy stands.
    let now = busway.get("/events").await.expect(200).clone();
    let version = |events: &Value| events["event_types"][0]["versions"][0].clone();
    assert_eq!(
        version(&now)["provisioning"],
        json!({"status": "FAILED", "deployment_id": failed["id"], "live": true})
    );
    assert_eq!(version(&events)["provisioning"]["status"], "LIVE");
    let mut unchanged = now.clone();
    unchanged["event_types"][0]["versions"][0]["provisioning"] =
        version(&events)["provisioning"].clone();
    assert_eq!(unchanged, events);
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    busway
        .publish("scanned_parcel", "1", &json!({"metadata": {}, "data": {}}))
        .await
        .expect_error(400, "validation_failed");

    // The scanner does not retry a document that has not changed again.
    tokio::time::sleep(SCAN_INTERVAL * 6).await;
    let mut known = known;
    known.push(failed["id"].as_str().expect("an id").to_string());
    assert_eq!(
        ids(&busway.deployments_of("scanned_parcel").await).len(),
        known.len()
    );

    // Putting the document back repairs it.
    busway.edit_object(PRODUCER_BUCKET, PRODUCER_KEY, &original);
    let repaired = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(repaired["status"], "SUCCEEDED", "{repaired}");
    assert_eq!(repaired["action"], "deploy");
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_deploy_json_with_a_changed_schema_ends_failed_and_the_registered_schema_stays_live()
 {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let known = ids(&busway.deployments_of("scanned_parcel").await);

    let mut doc = busway.read_object(PRODUCER_BUCKET, PRODUCER_KEY);
    doc["schema"]["properties"]["data"] = json!({"type": "object"});
    busway.edit_object(PRODUCER_BUCKET, PRODUCER_KEY, doc.to_string().as_bytes());
    let failed = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["error"], "DeployConfig.Invalid", "{failed}");
    let error = failed["cause"].as_str().expect("a cause");
    assert!(error.contains("/schema"), "{error}");

    // The hand-written schema would accept an empty data object; the registered one does not.
    let loose =
        json!({"metadata": {"event_attributes": {"source": "s", "target": "u2"}}, "data": {}});
    busway
        .publish("scanned_parcel", "1", &loose)
        .await
        .expect_error(400, "validation_failed");
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_deploy_json_with_inconsistent_derived_fields_ends_failed_naming_each() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let known = ids(&busway.deployments_of("scanned_parcel").await);

    let mut doc = busway.read_object(PRODUCER_BUCKET, PRODUCER_KEY);
    doc["source"] = json!("busway.intruder");
    doc["detail_type"] = json!("scanned_parcel.9");
    busway.edit_object(PRODUCER_BUCKET, PRODUCER_KEY, doc.to_string().as_bytes());
    let failed = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["error"], "DeployConfig.Invalid", "{failed}");
    let error = failed["cause"].as_str().expect("a cause");
    assert!(
        error.contains("/source") && error.contains("/detail_type"),
        "{error}"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deploy_json_with_an_unsafe_target_unit_ends_failed_naming_the_field() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let subscription = busway.subscribe_deployed(&seed_subscription()).await;
    let id = subscription["id"].as_str().expect("an id");
    let key = format!("scanned_parcel/1/u2/{id}/deploy.json");
    let known = ids(&busway.deployments_of("scanned_parcel").await);
    let before = busway.snapshot().await;

    let mut doc = busway.read_object(CONSUMER_BUCKET, &key);
    doc["target_unit"] = json!("../x");
    busway.edit_object(CONSUMER_BUCKET, &key, doc.to_string().as_bytes());
    let failed = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["kind"], "consumer");
    assert_eq!(failed["key"], key.as_str());
    assert_eq!(failed["subscription_id"], id);
    assert_eq!(failed["error"], "DeployConfig.Invalid", "{failed}");
    let error = failed["cause"].as_str().expect("a cause");
    assert!(error.contains("/target_unit"), "{error}");

    // The subscription is unchanged but for its newest job having failed (its rule stands), and
    // no file appeared outside the document's own folder.
    let after = busway.snapshot().await;
    assert_eq!(
        without_provisioning(&after.1),
        without_provisioning(&before.1)
    );
    assert_eq!(after.3, before.3);
    let current = busway
        .get(&format!("/subscriptions/{id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        current["provisioning"],
        json!({"status": "FAILED", "deployment_id": failed["id"], "live": true})
    );
    assert_eq!(current["delivery_state"], "RUNNING");
    let mut current = without_provisioning(&current);
    current.as_object_mut().map(|o| o.remove("delivery_state"));
    // The subscription as created; its delivery counters and lag are not part of the record.
    for counter in [
        "delivered",
        "retries",
        "dead_lettered",
        "last_error",
        "last_error_at",
        "last_delivered_at",
        "lag",
        "pending_retries",
    ] {
        current["delivery"]
            .as_object_mut()
            .map(|o| o.remove(counter));
    }
    assert_eq!(current, subscription_without_deployment(&subscription));
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deploy_json_pointing_at_another_connection_ends_failed() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let subscription = busway.subscribe_deployed(&seed_subscription()).await;
    let id = subscription["id"].as_str().expect("an id");
    let key = format!("scanned_parcel/1/u2/{id}/deploy.json");
    let known = ids(&busway.deployments_of("scanned_parcel").await);

    let mut doc = busway.read_object(CONSUMER_BUCKET, &key);
    doc["connection_string"] = json!("arn:aws:lambda:eu-west-1:123456789012:function:someone-else");
    busway.edit_object(CONSUMER_BUCKET, &key, doc.to_string().as_bytes());
    let failed = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["error"], "DeployConfig.Invalid", "{failed}");
    let error = failed["cause"].as_str().expect("a cause");
    for part in ["/connection_string", "delete it and subscribe again", id] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert!(!error.contains("/subscription_id"), "{error}");

    // An edited target unit is named first, before the rule's pattern made of it.
    let known = ids(&busway.deployments_of("scanned_parcel").await);
    let mut doc = busway.read_object(CONSUMER_BUCKET, &key);
    doc["target_unit"] = json!("u9");
    busway.edit_object(CONSUMER_BUCKET, &key, doc.to_string().as_bytes());
    let failed = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    let error = failed["cause"].as_str().expect("a cause");
    let at = |field: &str| {
        error
            .find(field)
            .unwrap_or_else(|| panic!("{field}: {error}"))
    };
    assert!(at("/target_unit") < at("/event_pattern"), "{error}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_json_broken_while_busway_was_down_ends_failed_after_the_restart() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let known = ids(&busway.deployments_of("scanned_parcel").await);

    let busway = busway
        .restart_with(|dir| {
            replace_file(&object_path_in(dir, PRODUCER_BUCKET, PRODUCER_KEY), b"[]");
        })
        .await;
    let failed = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    busway.stop().await;
}

fn subscription_without_deployment(created: &Value) -> Value {
    let mut s = created.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.remove("deployment_id");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_destroy_of_an_active_version_ends_failed_and_the_route_stays_live() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let known = ids(&busway.deployments_of("scanned_parcel").await);

    let mut doc = busway.read_object(PRODUCER_BUCKET, PRODUCER_KEY);
    doc["action"] = json!("destroy");
    busway.edit_object(PRODUCER_BUCKET, PRODUCER_KEY, doc.to_string().as_bytes());
    let finished = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(finished["status"], "FAILED", "{finished}");
    assert_eq!(finished["error"], "DeployConfig.Invalid", "{finished}");
    let error = finished["cause"].as_str().expect("a cause");
    assert!(error.contains("/version"), "{error}");
    let version = busway.get("/events/scanned_parcel/versions/1").await;
    assert_eq!(version.expect(200)["state"], "ACTIVE");
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    busway.stop().await;
}
