//! The storage adapters' failure paths on the real SDK clients, with `aws-smithy-mocks` serving
//! DynamoDB's and S3's answers as HTTP responses: throttling, server errors, and the condition
//! failures of a writer that lost a race. The same calls over the wire (moto) are in
//! tests/tests/store_contract.rs.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use busway_aws::{BucketNames, DynamoStore, S3ObjectStore};
use busway_core::deploy::DeployKind;
use busway_core::deployment::{Deployment, new_id};
use busway_core::event::{EventType, EventVersion, ProducerConnection, VersionState};
use busway_core::ports::{Bucket, EventStore, ObjectStore, StoreError};
use busway_core::{Application, EventTypeName, Version, now};
use serde_json::{Value, json};

/// The SDK's standard retries, without the waits.
fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
}

fn store(rules: &[&Rule]) -> DynamoStore {
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, rules, |c| c
        .retry_config(retries()));
    DynamoStore::new(client, "events")
}

/// DynamoDB's JSON error answer.
fn dynamodb_error(status: u16, code: &str, extra: Value) -> HttpResponse {
    let mut body = json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
        "message": "mocked",
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(body.to_string()),
    )
}

/// A cancelled transaction, with one reason code per write in order.
fn cancelled(reasons: &[&str]) -> HttpResponse {
    let reasons: Vec<Value> = reasons
        .iter()
        .map(|code| json!({"Code": code, "Message": "mocked"}))
        .collect();
    dynamodb_error(
        400,
        "TransactionCanceledException",
        json!({"CancellationReasons": reasons}),
    )
}

fn parcel() -> EventTypeName {
    EventTypeName::new("parcel").expect("a valid name")
}

fn event_type(description: &str) -> (EventType, EventVersion, Deployment) {
    let event = EventType {
        event_type: parcel(),
        application: Application::new("demo").expect("a valid name"),
        description: description.into(),
        connection_type: ProducerConnection::Https,
        latest_version: Version::FIRST,
        created_at: now(),
        team: None,
        writers: Vec::new(),
        readers: None,
    };
    let first = version(1);
    let deployment = Deployment::pending(
        new_id(),
        DeployKind::Producer,
        "publisher".into(),
        "parcel/1/deploy.json".into(),
        now(),
    );
    (event, first, deployment)
}

fn version(number: u32) -> EventVersion {
    EventVersion {
        event_type: parcel(),
        version: Version::new(number).expect("a valid version"),
        description: "v".into(),
        schema: json!({"type": "object"}),
        state: VersionState::Active,
        created_at: now(),
    }
}

#[tokio::test]
async fn throttled_reads_are_retried_then_reported_unavailable() {
    let throttled = mock!(Client::get_item)
        .sequence()
        .http_response(|| dynamodb_error(400, "ThrottlingException", Value::Null))
        .repeatedly()
        .build();

    let read = store(&[&throttled]).get_event_type(&parcel()).await;

    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    assert_eq!(throttled.num_calls(), 3, "the SDK retried before giving up");
}

#[tokio::test]
async fn a_throttled_write_that_succeeds_when_retried_is_no_error() {
    let rule = mock!(Client::transact_write_items)
        .sequence()
        .http_response(|| {
            dynamodb_error(400, "ProvisionedThroughputExceededException", Value::Null)
        })
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let (event, first, deployment) = event_type("first");

    store(&[&rule])
        .create_event_type(&event, &first, &deployment)
        .await
        .expect("written on the second attempt");

    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn the_second_of_two_creates_of_one_event_type_is_told_it_already_exists() {
    // DynamoDB applies the first create; the second's `attribute_not_exists(PK)` on the event
    // type fails and cancels its whole transaction.
    let guarded =
        |req: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput| {
            req.transact_items()
                .first()
                .and_then(|write| write.put())
                .is_some_and(|put| {
                    put.condition_expression() == Some("attribute_not_exists(PK)")
                        && put.item().get("PK") == Some(&AttributeValue::S("EVENT#parcel".into()))
                })
        };
    let rule = mock!(Client::transact_write_items)
        .match_requests(guarded)
        .sequence()
        .output(|| TransactWriteItemsOutput::builder().build())
        .http_response(|| cancelled(&["ConditionalCheckFailed", "None", "None"]))
        .build();
    let store = store(&[&rule]);
    let (first, first_v1, first_deployment) = event_type("first");
    let (second, second_v1, second_deployment) = event_type("second");

    let (a, b) = tokio::join!(
        store.create_event_type(&first, &first_v1, &first_deployment),
        store.create_event_type(&second, &second_v1, &second_deployment),
    );

    assert!(a.is_ok(), "{a:?}");
    assert!(
        matches!(&b, Err(StoreError::AlreadyExists(what)) if what == "event type parcel"),
        "{b:?}"
    );
    assert_eq!(rule.num_calls(), 2, "a failed condition is not retried");
}

#[tokio::test]
async fn a_version_added_by_someone_else_first_is_a_conflict_and_an_unknown_event_type_not_found() {
    let lost = mock!(Client::transact_write_items)
        .then_http_response(|| cancelled(&["ConditionalCheckFailed", "None", "None"]));
    let exists = mock!(Client::get_item).then_output(|| {
        let (event, _, _) = event_type("first");
        let item = [
            ("PK", AttributeValue::S("EVENT#parcel".into())),
            ("SK", AttributeValue::S("EVENT".into())),
            (
                "event_type",
                AttributeValue::S(event.event_type.to_string()),
            ),
            ("application", AttributeValue::S("demo".into())),
            ("description", AttributeValue::S(event.description)),
            ("connection_type", AttributeValue::S("HTTPS".into())),
            ("latest_version", AttributeValue::N("2".into())),
            (
                "created_at",
                AttributeValue::S("2026-11-27T03:00:00Z".into()),
            ),
        ];
        GetItemOutput::builder()
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ))
            .build()
    });
    let (_, _, deployment) = event_type("first");

    let conflict = store(&[&lost, &exists])
        .add_version(&version(2), Version::FIRST, &deployment)
        .await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict(_))),
        "{conflict:?}"
    );

    let lost = mock!(Client::transact_write_items)
        .then_http_response(|| cancelled(&["ConditionalCheckFailed", "None", "None"]));
    let missing = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
    let unknown = store(&[&lost, &missing])
        .add_version(&version(2), Version::FIRST, &deployment)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn transactions_cancelled_by_contention_and_server_errors_are_unavailable() {
    let contended = mock!(Client::transact_write_items)
        .then_http_response(|| cancelled(&["None", "TransactionConflict", "None"]));
    let (event, first, deployment) = event_type("first");
    let written = store(&[&contended])
        .create_event_type(&event, &first, &deployment)
        .await;
    assert!(
        matches!(written, Err(StoreError::Unavailable(_))),
        "{written:?}"
    );

    let failing = mock!(Client::transact_write_items)
        .sequence()
        .http_response(|| dynamodb_error(500, "InternalServerError", Value::Null))
        .repeatedly()
        .build();
    let written = store(&[&failing])
        .create_event_type(&event, &first, &deployment)
        .await;
    assert!(
        matches!(written, Err(StoreError::Unavailable(_))),
        "{written:?}"
    );
    assert_eq!(failing.num_calls(), 3, "the SDK retried before giving up");
}

#[tokio::test]
async fn a_request_dynamodb_refuses_is_unexpected_and_not_retried() {
    let rule = mock!(Client::get_item)
        .sequence()
        .http_response(|| dynamodb_error(400, "ValidationException", Value::Null))
        .repeatedly()
        .build();

    let read = store(&[&rule]).get_event_type(&parcel()).await;

    assert!(matches!(read, Err(StoreError::Unexpected(_))), "{read:?}");
    assert_eq!(rule.num_calls(), 1);
}

fn s3_store(rules: &[&Rule]) -> S3ObjectStore {
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, rules, |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    let names = BucketNames {
        schema_backup: "backup".into(),
        publisher: "publisher-123456789012".into(),
        subscriber: "subscriber".into(),
    };
    S3ObjectStore::new(client, names)
}

fn s3_error(
    status: u16,
    code: &str,
) -> MockResponse<
    aws_sdk_s3::operation::get_object::GetObjectOutput,
    aws_sdk_s3::operation::get_object::GetObjectError,
> {
    MockResponse::Http(HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>mocked</Message></Error>"
        )),
    ))
}

#[tokio::test]
async fn a_missing_object_is_none_and_a_slowed_down_read_is_unavailable() {
    let missing = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|req| {
            req.bucket() == Some("publisher-123456789012")
                && req.key() == Some("parcel/1/deploy.json")
        })
        .then_compute_response(|_| s3_error(404, "NoSuchKey"));
    let read = s3_store(&[&missing])
        .get_object(Bucket::Publisher, "parcel/1/deploy.json")
        .await
        .expect("a missing object is no error");
    assert_eq!(read, None);

    let slow =
        mock!(aws_sdk_s3::Client::get_object).then_compute_response(|_| s3_error(503, "SlowDown"));
    let err = s3_store(&[&slow])
        .get_object(Bucket::Publisher, "parcel/1/deploy.json")
        .await
        .expect_err("S3 asked to slow down");
    assert!(
        matches!(
            err.downcast_ref::<StoreError>(),
            Some(StoreError::Unavailable(_))
        ),
        "{err:#}"
    );
}

fn s3_put_error(
    status: u16,
    code: &str,
) -> MockResponse<
    aws_sdk_s3::operation::put_object::PutObjectOutput,
    aws_sdk_s3::operation::put_object::PutObjectError,
> {
    MockResponse::Http(HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>mocked</Message></Error>"
        )),
    ))
}

#[tokio::test]
async fn a_new_object_is_put_only_if_none_is_there_and_a_conflicting_write_is_unavailable() {
    let key = "claim-checks/parcel.1/0f/1.json";
    let exists = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|req| {
            req.if_none_match() == Some("*")
                && req.metadata().and_then(|m| m.get("busway-format-version"))
                    == Some(&"1".to_string())
        })
        .then_compute_response(|_| s3_put_error(412, "PreconditionFailed"));
    let err = s3_store(&[&exists])
        .put_new_object(
            Bucket::SchemaBackup,
            key,
            b"{}".to_vec(),
            &[("busway-format-version", "1")],
        )
        .await
        .expect_err("the key holds an object");
    assert!(
        matches!(
            err.downcast_ref::<StoreError>(),
            Some(StoreError::AlreadyExists(_))
        ),
        "{err:#}"
    );
    assert_eq!(exists.num_calls(), 1);

    let racing = mock!(aws_sdk_s3::Client::put_object)
        .then_compute_response(|_| s3_put_error(409, "ConditionalRequestConflict"));
    let err = s3_store(&[&racing])
        .put_new_object(Bucket::SchemaBackup, key, b"{}".to_vec(), &[])
        .await
        .expect_err("another conditional write of the key is in progress");
    assert!(
        matches!(
            err.downcast_ref::<StoreError>(),
            Some(StoreError::Unavailable(_))
        ),
        "{err:#}"
    );
}
