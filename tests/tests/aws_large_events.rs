//! Large events on the AWS host, through the injector's Lambda path on moto server: API Gateway
//! REST proxy events, parsed by `lambda_http` as the injector Lambda parses them, reach the broker
//! router on the adapters `Host::for_lambda_from` makes. A 3 MB body is stored in the schema
//! backup bucket and the bus carries its link to the subscriber's queue; a 600 KB one goes on the
//! bus whole. The SQS producer path takes a message as large as SQS carries (1 MiB).

#[allow(dead_code)]
mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use busway_aws::host::Host;
use busway_core::claim_check::{self, FORMAT_METADATA_KEY, FORMAT_VERSION};
use busway_core::ingest::LiveRoutes;
use busway_core::portal::Portal;
use busway_injector::sqs::{Message, handle_batch};
use busway_injector::{Broker, MAX_EVENT_BYTES};
use busway_local::store::SqliteStore;
use busway_tests::{blob_envelope, blob_event_type, seed_subscription};
use serde_json::{Value, json};
use support::emulated::Account;
use tower::ServiceExt;

/// `POST /scanned_parcel/1` as API Gateway REST hands it to the injector Lambda.
const PUBLISH: &str = include_str!("fixtures/apigw_rest_publish.json");
/// What a synchronous Lambda invocation's request may hold (6 MB).
const LAMBDA_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// The largest SQS message (1 MiB).
const SQS_MESSAGE_BYTES: usize = 1024 * 1024;

/// The API Gateway event carrying `body`.
fn apigw_event(body: &str) -> String {
    let mut event: Value = serde_json::from_str(PUBLISH).expect("the fixture is JSON");
    event["body"] = json!(body);
    event.to_string()
}

/// The request the injector Lambda hands to the router: parsed by `lambda_http`, the stage taken
/// off its path as `busway_http::lambda::run` does.
fn lambda_request(event: &str) -> lambda_http::Request {
    let mut request = busway_http::lambda::without_stage(
        lambda_http::request::from_str(event).expect("a valid API Gateway REST proxy event"),
    );
    request
        .extensions_mut()
        .insert(busway_tests::producer_caller("demo"));
    request
}

async fn call(router: axum::Router, body: &str) -> (StatusCode, Value) {
    let event = apigw_event(body);
    assert!(
        event.len() < LAMBDA_REQUEST_BYTES,
        "the invocation must fit: {}",
        event.len()
    );
    let response = router
        .oneshot(lambda_request(&event))
        .await
        .expect("the router is infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[test]
fn a_body_at_the_limit_fits_a_synchronous_lambda_invocation_even_when_every_byte_escapes() {
    // `\"` inside a JSON string: both bytes are escaped again in the API Gateway event.
    let quotes = blob_envelope(MAX_EVENT_BYTES, None, 'q')
        .to_string()
        .replace("qq", r#"\""#);
    assert_eq!(quotes.len(), MAX_EVENT_BYTES);
    let event = apigw_event(&quotes);
    assert!(
        event.len() < LAMBDA_REQUEST_BYTES,
        "{} bytes of API Gateway event",
        event.len()
    );
    assert_eq!(
        lambda_request(&event).body().as_ref(),
        quotes.as_bytes(),
        "lambda_http hands the body over as sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_mb_api_event_and_a_1_mib_sqs_message_are_claim_checked_in_s3_and_reach_the_queue() {
    let account = Account::new().await;
    let env = account.lambda_env();
    let host =
        Host::for_lambda_from(|name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
            .expect("the Lambda environment is complete");
    let store = host.store();
    let registry_dir = tempfile::tempdir().expect("a temp dir");
    let registry = SqliteStore::open(&registry_dir.path().join("registry.db")).expect("a registry");
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
    let created = portal
        .clone()
        .oneshot(json_request("/events", &blob_event_type()))
        .await
        .expect("infallible");
    assert_eq!(created.status(), StatusCode::CREATED);
    let subscribed = portal
        .oneshot(json_request("/subscriptions", &seed_subscription()))
        .await
        .expect("infallible");
    assert_eq!(subscribed.status(), StatusCode::CREATED);
    let subscription: Value = serde_json::from_slice(
        &axum::body::to_bytes(subscribed.into_body(), usize::MAX)
            .await
            .expect("a body"),
    )
    .expect("JSON");
    let id = subscription["id"].as_str().expect("an id");
    let queue = account
        .consumer_queue(&format!("scanned_parcel/1/u2/{id}/deploy.json"))
        .await;

    let state = Broker {
        routes: Arc::new(LiveRoutes::default()),
        store: Some(store),
        bus: host.deduplicated_bus().expect("the bus is configured"),
    };
    let broker = busway_injector::router(state.clone());
    let large = blob_envelope(3_000_000, Some("large"), 'l');
    let medium = blob_envelope(600_000, Some("medium"), 'm');
    for envelope in [&large, &medium] {
        let (status, answer) = call(broker.clone(), &envelope.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (status, answer) = call(
        broker,
        &blob_envelope(MAX_EVENT_BYTES + 1, None, 'x').to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    // The SQS producer path: a message as large as SQS carries (1 MiB), enriched above the
    // entry limit, is claim-checked too.
    let from_queue = blob_envelope(SQS_MESSAGE_BYTES, Some("from-queue"), 'q');
    let failed = handle_batch(
        &state,
        vec![Message {
            message_id: "m-1".into(),
            source_arn: "arn:aws:sqs:eu-west-1:123456789012:busway-scanned-parcel-v1".into(),
            body: from_queue.to_string(),
        }],
    )
    .await;
    assert_eq!(failed, Vec::<String>::new());

    let listed = account
        .s3
        .list_objects_v2()
        .bucket(&account.buckets.schema_backup)
        .prefix(claim_check::PREFIX)
        .send()
        .await
        .expect("the bucket lists");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 2, "the 3 MB and the 1 MiB event: {keys:?}");

    let received = account.drain(&queue, 10).await;
    assert_eq!(received.len(), 3, "every event reaches the queue");
    let event = |id: &str| {
        received
            .iter()
            .find(|e| e["detail"]["metadata"]["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} reached the queue"))
            .clone()
    };
    let whole = event("medium");
    assert_eq!(
        whole["detail"]["data"], medium["data"],
        "600 KB goes on the bus whole"
    );
    assert_eq!(claim_check::link(&whole), None);

    let linked = event("large");
    let link = claim_check::link(&linked).expect("the bus event carries the link");
    assert_eq!(link.bucket, account.buckets.schema_backup);
    assert!(keys.contains(&link.key.as_str()), "{keys:?}");
    let object = account
        .s3
        .get_object()
        .bucket(&link.bucket)
        .key(&link.key)
        .send()
        .await
        .expect("the consumer's GetObject");
    let format = object
        .metadata()
        .and_then(|m| m.get(FORMAT_METADATA_KEY))
        .cloned();
    assert_eq!(format.as_deref(), Some(FORMAT_VERSION));
    let data = object.body.collect().await.expect("the body").into_bytes();
    assert!(
        *data == *large["data"].to_string().as_bytes(),
        "the object is the data sent"
    );
    let restored =
        claim_check::restore(linked, format.as_deref(), &data).expect("the event restores");
    assert_eq!(restored["detail"]["data"], large["data"]);
    assert_eq!(restored["detail"]["metadata"].get("claim_check"), None);

    let queued = event("from-queue");
    let link = claim_check::link(&queued).expect("the SQS producer's event carries a link");
    let object = account
        .object(busway_core::ports::Bucket::SchemaBackup, &link.key)
        .await
        .expect("its object is in the bucket");
    assert!(object == from_queue["data"].to_string().into_bytes());
}

fn json_request(path: &str, body: &Value) -> axum::http::Request<axum::body::Body> {
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a request");
    request
        .extensions_mut()
        .insert(busway_tests::admin_caller());
    request
}
