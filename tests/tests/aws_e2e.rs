//! The AWS host end to end on moto server, through the same routers the Lambda functions serve:
//! the portal on the DynamoDB and S3 adapters registers an event type and a subscription (items in
//! the table, the schema backup and both deploy.json files in S3), a rule made from the
//! consumer's deploy.json routes the bus to a queue, and the broker on the EventBridge adapter
//! puts events on the custom bus: the queue receives exactly the matching ones. The adapters are
//! made by `Host::for_lambda_from`, from the environment a Lambda function of busway gets. moto
//! has no Schema Registry, so the registry here is the embedded one (the AWS adapter's tests mock
//! it).

#[allow(dead_code)]
mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use busway_aws::host::Host;
use busway_core::auth::Caller;
use busway_core::ingest::LiveRoutes;
use busway_core::portal::Portal;
use busway_core::ports::{Bucket, EventStore};
use busway_injector::Broker;
use busway_local::store::SqliteStore;
use busway_tests::{seed_event, seed_subscription, v1_envelope};
use serde_json::Value;
use support::emulated::Account;
use tower::ServiceExt;

/// `method path` on `app` as `caller` (the portal's: a platform admin; the broker's: a producer of
/// demo, the only kind of key that publishes).
async fn call_as(
    caller: Caller,
    app: axum::Router,
    method: &str,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request");
    request.extensions_mut().insert(caller);
    let response = app.oneshot(request).await.expect("an answer");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn call(app: axum::Router, method: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    call_as(busway_tests::admin_caller(), app, method, path, body).await
}

async fn publish(app: axum::Router, path: &str, body: &Value) -> (StatusCode, Value) {
    let producer = busway_tests::producer_caller("demo");
    call_as(producer, app, "POST", path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_type_registered_through_the_portal_routes_matching_events_to_the_subscribers_queue()
 {
    let account = Account::new().await;
    let registry_dir = tempfile::tempdir().expect("a temp dir");
    let registry = SqliteStore::open(&registry_dir.path().join("registry.db")).expect("a registry");
    // The adapters come from the wiring the Lambda functions use, given a function's environment.
    let env = account.lambda_env();
    let host =
        Host::for_lambda_from(|name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
            .expect("the Lambda environment is complete");
    let store = host.store();
    let portal = busway_portal::router(Arc::new(Portal {
        store: store.clone(),
        deployments: store.clone(),
        registry: Arc::new(registry),
        objects: host.objects(),
        deliveries: None,
        control: None,
        provisioning: Arc::new(account.provisioning().await),
        keys: store.clone(),
        bus_kind: None,
        idempotency: store.clone(),
        audit: store.clone(),
        targets: store.clone(),
        secrets: store.clone(),
        allow_loopback_targets: false,
    }));

    let (status, created) = call(portal.clone(), "POST", "/events", &seed_event()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let name = "scanned_parcel".parse().expect("a name");
    let stored = store
        .get_event_type(&name)
        .await
        .expect("the table answers")
        .expect("the event type is in the table");
    assert_eq!(stored.application.as_str(), seed_event()["application"]);
    let backup = account
        .object(Bucket::SchemaBackup, "scanned_parcel/1/schema.json")
        .await
        .expect("the schema backup is in S3");
    assert!(serde_json::from_slice::<Value>(&backup).is_ok());
    let producer: Value = serde_json::from_slice(
        &account
            .object(Bucket::Publisher, "scanned_parcel/1/deploy.json")
            .await
            .expect("the producer deploy.json is in S3"),
    )
    .expect("JSON");
    assert_eq!(producer["deployment_id"], created["deployment_id"]);

    let (status, subscription) = call(
        portal.clone(),
        "POST",
        "/subscriptions",
        &seed_subscription(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{subscription}");
    let id = subscription["id"].as_str().expect("an id");
    let queue = account
        .consumer_queue(&format!("scanned_parcel/1/u2/{id}/deploy.json"))
        .await;

    // A fresh injector: it learns the route from the table, as a new Lambda container does.
    let broker = busway_injector::router(Broker {
        routes: Arc::new(LiveRoutes::default()),
        store: Some(store.clone()),
        bus: host.deduplicated_bus().expect("the bus is configured"),
    });
    // Its OpenAPI document names the deployed version, read from the table before any publish
    // taught the container the route.
    let (status, document) = call(broker.clone(), "GET", "/openapi.json", &Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(
        document["paths"]["/scanned_parcel/1"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/scanned_parcel.v1"
    );
    assert_eq!(
        document["components"]["schemas"]["scanned_parcel.v1"]["title"],
        "scanned_parcel.1"
    );
    let mut published = Vec::new();
    for target in ["u2", "u3", "u2"] {
        let (status, answer) =
            publish(broker.clone(), "/scanned_parcel/1", &v1_envelope(target)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        if target == "u2" {
            published.push(
                answer["event_id"]
                    .as_str()
                    .expect("an event id")
                    .to_string(),
            );
        }
    }
    // A producer's retry of an accepted event_id is answered as a duplicate and not put again.
    let mut retried = v1_envelope("u2");
    retried["metadata"]["event_id"] = Value::String(published[0].clone());
    let (status, answer) = publish(broker.clone(), "/scanned_parcel/1", &retried).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");
    let (status, _) = publish(broker, "/scanned_parcel/2", &v1_envelope("u2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let received = account.drain(&queue, 10).await;
    let mut ids: Vec<String> = received
        .iter()
        .map(|e| {
            assert_eq!(
                e["source"],
                format!("busway.{}", stored.application.as_str())
            );
            assert_eq!(e["detail-type"], "scanned_parcel.1");
            assert_eq!(e["detail"]["metadata"]["event_attributes"]["target"], "u2");
            e["detail"]["metadata"]["event_id"]
                .as_str()
                .expect("an event id")
                .to_string()
        })
        .collect();
    ids.sort();
    published.sort();
    assert_eq!(ids, published, "exactly the matching events: {received:?}");
}

/// A failure injected after the domain commit, on the AWS adapters: the publisher bucket is gone
/// when the portal writes the deploy.json. The version stands and says its job FAILED and its
/// route is not live; the create retried after its timeout gets the same event type; once the
/// bucket is back, the retry writes the document as the job's next attempt, and a second retry
/// of a job that is no longer FAILED is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_failing_after_the_domain_commit_fails_the_job_and_a_retry_writes_its_document() {
    let account = Account::new().await;
    let registry_dir = tempfile::tempdir().expect("a temp dir");
    let registry = SqliteStore::open(&registry_dir.path().join("registry.db")).expect("a registry");
    let store = Arc::new(account.store());
    let portal = busway_portal::router(Arc::new(Portal {
        store: store.clone(),
        deployments: store.clone(),
        registry: Arc::new(registry),
        objects: Arc::new(account.objects()),
        deliveries: None,
        control: None,
        provisioning: Arc::new(account.provisioning().await),
        keys: store.clone(),
        bus_kind: None,
        idempotency: store.clone(),
        audit: store.clone(),
        targets: store.clone(),
        secrets: store.clone(),
        allow_loopback_targets: false,
    }));
    let publisher = account.buckets.publisher.clone();
    account
        .s3
        .delete_bucket()
        .bucket(&publisher)
        .send()
        .await
        .expect("the empty bucket is deleted");

    let (status, created) = call(portal.clone(), "POST", "/events", &seed_event()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let (_, failed) = call(
        portal.clone(),
        "GET",
        &format!("/deployments/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["error"], "Store.Unavailable", "{failed}");
    let cause = failed["cause"].as_str().expect("a cause");
    assert!(cause.contains("writing deploy.json"), "{cause}");
    let (_, version) = call(
        portal.clone(),
        "GET",
        "/events/scanned_parcel/versions/1",
        &Value::Null,
    )
    .await;
    assert_eq!(version["state"], "ACTIVE");
    assert_eq!(
        version["provisioning"],
        serde_json::json!({"status": "FAILED", "deployment_id": id, "live": false})
    );
    let (status, again) = call(portal.clone(), "POST", "/events", &seed_event()).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["deployment_id"], id);
    assert_eq!(
        busway_tests::without_provisioning(&again),
        busway_tests::without_provisioning(&created)
    );

    account
        .s3
        .create_bucket()
        .bucket(&publisher)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    busway_tests::moto::REGION,
                ))
                .build(),
        )
        .send()
        .await
        .expect("the bucket is back");
    let retry = format!("/deployments/{id}/retry");
    let (status, retried) = call(portal.clone(), "POST", &retry, &serde_json::json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["attempt"], 2);
    assert_eq!(retried["status"], "PENDING", "{retried}");
    let document: Value = serde_json::from_slice(
        &account
            .object(Bucket::Publisher, "scanned_parcel/1/deploy.json")
            .await
            .expect("the retry wrote the deploy.json"),
    )
    .expect("JSON");
    assert_eq!(document["deployment_id"], id);
    let (_, version) = call(
        portal.clone(),
        "GET",
        "/events/scanned_parcel/versions/1",
        &Value::Null,
    )
    .await;
    assert_eq!(
        version["provisioning"]["status"], "PROVISIONING",
        "{version}"
    );
    let (status, refused) = call(portal, "POST", &retry, &serde_json::json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
}

/// A replay on the Custom Event Bus, on the AWS adapters as the portal Lambda function gets them
/// from its environment: the start is checked against the bus retention, recorded on the
/// subscription in the table with a new job, and the consumer deploy.json is written again with
/// `replay_from`, so the consumer stack makes the subscriber that starts there. The subscription's
/// `provisioning` is that job. (No emulator serves `eventbridgev2`: the replay calls none of it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_on_the_custom_event_bus_records_its_start_with_a_job_and_a_new_deploy_json() {
    let account = Account::new().await;
    let registry_dir = tempfile::tempdir().expect("a temp dir");
    let registry = SqliteStore::open(&registry_dir.path().join("registry.db")).expect("a registry");
    let mut env = account.lambda_env();
    env.extend([
        ("BUSWAY_BUS_KIND", "custom".to_string()),
        (
            "BUSWAY_BUS_ARN",
            "arn:aws:events:eu-west-1:123456789012:event-busv2/busway/b-0123".to_string(),
        ),
        ("BUSWAY_BUS_RETENTION_DAYS", "3".to_string()),
    ]);
    let host =
        Host::for_lambda_from(|name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
            .expect("the Lambda environment is complete");
    let store = host.store();
    let core = Arc::new(Portal {
        store: store.clone(),
        deployments: store.clone(),
        registry: Arc::new(registry),
        objects: host.objects(),
        deliveries: None,
        control: host.subscriber_control().expect("a subscriber control"),
        provisioning: Arc::new(account.provisioning().await),
        keys: store.clone(),
        bus_kind: Some(host.bus_kind().expect("a bus kind")),
        idempotency: store.clone(),
        audit: store.clone(),
        targets: store.clone(),
        secrets: store.clone(),
        allow_loopback_targets: false,
    });
    let portal = busway_portal::router(core.clone());
    let (status, created) = call(portal.clone(), "POST", "/events", &seed_event()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, subscription) = call(
        portal.clone(),
        "POST",
        "/subscriptions",
        &seed_subscription(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{subscription}");
    let id = subscription["id"].as_str().expect("an id");
    let key = format!("scanned_parcel/1/u2/{id}/deploy.json");
    let document = |bytes: Option<Vec<u8>>| -> Value {
        serde_json::from_slice(&bytes.expect("the consumer deploy.json is in S3")).expect("JSON")
    };
    assert_eq!(
        document(account.object(Bucket::Subscriber, &key).await).get("replay_from"),
        None
    );

    let replay = format!("/subscriptions/{id}/replay");
    let now = busway_core::now();
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("a time")
    };
    for (refused, why) in [
        (now - time::Duration::days(4), "retention"),
        (now + time::Duration::hours(1), "future"),
    ] {
        let body = serde_json::json!({"start_time": rfc3339(refused)});
        let (status, answer) = call(portal.clone(), "POST", &replay, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let text = answer.to_string();
        assert!(
            text.contains("start_time") && text.contains(why),
            "{answer}"
        );
    }
    let start = (now - time::Duration::days(2))
        .replace_nanosecond(0)
        .expect("a time");
    let body = serde_json::json!({"start_time": rfc3339(start)});
    let (status, answer) = call(portal.clone(), "POST", &replay, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job = answer["deployment_id"].as_str().expect("a job").to_string();
    assert_ne!(
        job,
        subscription["deployment_id"]
            .as_str()
            .expect("the first job")
    );

    let stored = store
        .get_subscription(id)
        .await
        .expect("the table answers")
        .expect("the subscription is in the table");
    assert_eq!(stored.replay_from, Some(start));
    let written = document(account.object(Bucket::Subscriber, &key).await);
    assert_eq!(written["deployment_id"], job.as_str());
    assert_eq!(written["replay_from"], start.unix_timestamp());
    assert_eq!(written["bus_kind"], "custom");
    assert_eq!(
        written["format_version"],
        busway_core::format::DEPLOY_FORMAT
    );
    let view = core.subscription_view(id).await.expect("a view");
    let provisioning = view.provisioning.expect("its provisioning");
    assert_eq!(provisioning.deployment_id, job);
    let (status, deployment) =
        call(portal, "GET", &format!("/deployments/{job}"), &Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{deployment}");
    assert_eq!(deployment["subscription_id"], id, "{deployment}");
}
