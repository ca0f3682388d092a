//! The Schema Registry adapter against the real SDK client with mocked answers (moto has no
//! schemas service): version 1 by CreateSchema, later versions by UpdateSchema, reads by
//! DescribeSchema with the version, pages of ListSchemaVersions, throttling.

use std::time::Duration;

use aws_sdk_schemas::Client;
use aws_sdk_schemas::config::http::HttpResponse;
use aws_sdk_schemas::config::retry::RetryConfig;
use aws_sdk_schemas::operation::create_schema::CreateSchemaOutput;
use aws_sdk_schemas::operation::describe_schema::DescribeSchemaOutput;
use aws_sdk_schemas::operation::list_schema_versions::ListSchemaVersionsOutput;
use aws_sdk_schemas::operation::update_schema::UpdateSchemaOutput;
use aws_sdk_schemas::types::{SchemaVersionSummary, Type};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use busway_aws::schemas::EventBridgeSchemaRegistry;
use busway_core::ports::SchemaRegistry;
use busway_core::{EventTypeName, Version};
use serde_json::{Value, json};

const REGISTRY: &str = "test.busway.schemas";

fn registry(rules: &[&Rule]) -> EventBridgeSchemaRegistry {
    let client = mock_client!(aws_sdk_schemas, RuleMode::MatchAny, rules, |config| {
        config.retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
    });
    EventBridgeSchemaRegistry::new(client, REGISTRY)
}

fn scanned_parcel() -> EventTypeName {
    "scanned_parcel".parse().expect("event type")
}

fn v(n: u32) -> Version {
    Version::new(n).expect("version")
}

fn schema(n: u32) -> Value {
    json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
           "properties": {"data": {"type": "object", "title": format!("v{n}")}}})
}

/// An error answer as the registry sends it (restJson: the type in a header and the body).
fn error_response(status: u16, code: &str) -> HttpResponse {
    let mut response = HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(json!({"Code": code, "Message": "mocked"}).to_string()),
    );
    response
        .headers_mut()
        .insert("x-amzn-errortype", code.to_string());
    response
}

fn http_error<O, E>(status: u16, code: &str) -> MockResponse<O, E> {
    MockResponse::Http(error_response(status, code))
}

fn described(version: u32, content: &Value) -> DescribeSchemaOutput {
    DescribeSchemaOutput::builder()
        .schema_name("scanned_parcel")
        .schema_version(version.to_string())
        .r#type("JSONSchemaDraft4")
        .content(content.to_string())
        .build()
}

/// DescribeSchema of the given version (`None`: the latest) answered with `answer`.
fn describe(
    version: Option<u32>,
    answer: impl Fn() -> MockResponse<
        DescribeSchemaOutput,
        aws_sdk_schemas::operation::describe_schema::DescribeSchemaError,
    > + Send
    + Sync
    + 'static,
) -> Rule {
    let wanted = version.map(|n| n.to_string());
    mock!(Client::describe_schema)
        .match_requests(move |req| {
            req.registry_name() == Some(REGISTRY)
                && req.schema_name() == Some("scanned_parcel")
                && req.schema_version() == wanted.as_deref()
        })
        .then_compute_response(move |_| answer())
}

fn content_of(text: Option<&str>) -> Value {
    serde_json::from_str(text.expect("content")).expect("content is JSON")
}

#[tokio::test]
async fn the_first_version_is_created_as_a_draft_4_schema_named_after_the_event_type() {
    let missing = describe(Some(1), || http_error(404, "NotFoundException"));
    let no_schema = describe(None, || http_error(404, "NotFoundException"));
    let create = mock!(Client::create_schema)
        .match_requests(|req| {
            req.registry_name() == Some(REGISTRY)
                && req.schema_name() == Some("scanned_parcel")
                && req.r#type() == Some(&Type::JsonSchemaDraft4)
                && content_of(req.content()) == schema(1)
        })
        .then_output(|| CreateSchemaOutput::builder().schema_version("1").build());
    let update = mock!(Client::update_schema).then_output(|| UpdateSchemaOutput::builder().build());
    registry(&[&missing, &no_schema, &create, &update])
        .put_schema(&scanned_parcel(), v(1), &schema(1))
        .await
        .expect("put");
    assert_eq!(create.num_calls(), 1);
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn a_later_version_is_added_by_update_schema() {
    let missing = describe(Some(2), || http_error(404, "NotFoundException"));
    let latest = describe(None, || MockResponse::Output(described(1, &schema(1))));
    let create = mock!(Client::create_schema).then_output(|| CreateSchemaOutput::builder().build());
    let update = mock!(Client::update_schema)
        .match_requests(|req| {
            req.schema_name() == Some("scanned_parcel")
                && req.r#type() == Some(&Type::JsonSchemaDraft4)
                && content_of(req.content()) == schema(2)
        })
        .then_output(|| UpdateSchemaOutput::builder().schema_version("2").build());
    registry(&[&missing, &latest, &create, &update])
        .put_schema(&scanned_parcel(), v(2), &schema(2))
        .await
        .expect("put");
    assert_eq!(update.num_calls(), 1);
    assert_eq!(create.num_calls(), 0);
}

#[tokio::test]
async fn putting_a_version_the_registry_holds_with_the_same_content_writes_nothing() {
    let present = describe(Some(1), || MockResponse::Output(described(1, &schema(1))));
    let create = mock!(Client::create_schema).then_output(|| CreateSchemaOutput::builder().build());
    let update = mock!(Client::update_schema).then_output(|| UpdateSchemaOutput::builder().build());
    registry(&[&present, &create, &update])
        .put_schema(&scanned_parcel(), v(1), &schema(1))
        .await
        .expect("put");
    assert_eq!(create.num_calls() + update.num_calls(), 0);
}

#[tokio::test]
async fn a_version_the_registry_holds_with_other_content_is_refused() {
    let present = describe(Some(1), || MockResponse::Output(described(1, &schema(9))));
    let update = mock!(Client::update_schema).then_output(|| UpdateSchemaOutput::builder().build());
    let error = registry(&[&present, &update])
        .put_schema(&scanned_parcel(), v(1), &schema(1))
        .await
        .expect_err("a registry version cannot change");
    assert!(
        format!("{error:#}").contains("cannot be changed"),
        "{error:#}"
    );
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn a_version_after_a_gap_is_refused() {
    let missing = describe(Some(3), || http_error(404, "NotFoundException"));
    let latest = describe(None, || MockResponse::Output(described(1, &schema(1))));
    let update = mock!(Client::update_schema).then_output(|| UpdateSchemaOutput::builder().build());
    let error = registry(&[&missing, &latest, &update])
        .put_schema(&scanned_parcel(), v(3), &schema(3))
        .await
        .expect_err("version 2 is missing");
    assert!(
        format!("{error:#}").contains("up to version 1"),
        "{error:#}"
    );
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn a_create_that_lost_a_race_to_the_same_version_succeeds() {
    let versions = mock!(Client::describe_schema)
        .match_requests(|req| req.schema_version() == Some("1"))
        .sequence()
        .http_response(|| {
            let mut r = HttpResponse::new(
                StatusCode::try_from(404).expect("status"),
                SdkBody::from(r#"{"Code":"NotFoundException","Message":"mocked"}"#),
            );
            r.headers_mut()
                .insert("x-amzn-errortype", "NotFoundException");
            r
        })
        .output(|| described(1, &schema(1)))
        .build();
    let no_schema = describe(None, || http_error(404, "NotFoundException"));
    let create = mock!(Client::create_schema)
        .then_compute_response(|_| http_error(409, "ConflictException"));
    registry(&[&versions, &no_schema, &create])
        .put_schema(&scanned_parcel(), v(1), &schema(1))
        .await
        .expect("the other writer put the same schema");
    assert_eq!(create.num_calls(), 1);
    assert_eq!(versions.num_calls(), 2);
}

#[tokio::test]
async fn a_version_the_registry_lacks_reads_as_none() {
    let missing = describe(Some(4), || http_error(404, "NotFoundException"));
    let present = describe(Some(1), || MockResponse::Output(described(1, &schema(1))));
    let registry = registry(&[&missing, &present]);
    assert_eq!(
        registry
            .get_schema(&scanned_parcel(), v(4))
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        registry
            .get_schema(&scanned_parcel(), v(1))
            .await
            .expect("get"),
        Some(schema(1))
    );
}

#[tokio::test]
async fn versions_are_listed_across_pages_in_order() {
    let summary = |n: &str| SchemaVersionSummary::builder().schema_version(n).build();
    let first = mock!(Client::list_schema_versions)
        .match_requests(|req| {
            req.schema_name() == Some("scanned_parcel") && req.next_token().is_none()
        })
        .then_output(move || {
            ListSchemaVersionsOutput::builder()
                .schema_versions(summary("2"))
                .schema_versions(summary("1"))
                .next_token("page-2")
                .build()
        });
    let second = mock!(Client::list_schema_versions)
        .match_requests(|req| req.next_token() == Some("page-2"))
        .then_output(move || {
            ListSchemaVersionsOutput::builder()
                .schema_versions(summary("3"))
                .build()
        });
    let versions = registry(&[&first, &second])
        .list_schema_versions(&scanned_parcel())
        .await
        .expect("list");
    assert_eq!(versions, vec![v(1), v(2), v(3)]);
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

#[tokio::test]
async fn an_event_type_the_registry_lacks_has_no_versions() {
    let missing = mock!(Client::list_schema_versions)
        .then_compute_response(|_| http_error(404, "NotFoundException"));
    let versions = registry(&[&missing])
        .list_schema_versions(&scanned_parcel())
        .await
        .expect("list");
    assert!(versions.is_empty());
}

#[tokio::test]
async fn a_throttled_call_is_retried() {
    let throttled = mock!(Client::describe_schema)
        .sequence()
        .http_response(|| {
            let mut r = HttpResponse::new(
                StatusCode::try_from(429).expect("status"),
                SdkBody::from(r#"{"Code":"TooManyRequestsException","Message":"slow down"}"#),
            );
            r.headers_mut()
                .insert("x-amzn-errortype", "TooManyRequestsException");
            r
        })
        .output(|| described(1, &schema(1)))
        .build();
    let got = registry(&[&throttled])
        .get_schema(&scanned_parcel(), v(1))
        .await
        .expect("get after a retry");
    assert_eq!(got, Some(schema(1)));
    assert_eq!(throttled.num_calls(), 2);
}

#[tokio::test]
async fn an_unavailable_registry_is_an_error_naming_the_call() {
    // A sequence, because the mock answers the client's retries without their input.
    let down = mock!(Client::describe_schema)
        .sequence()
        .http_response(|| error_response(503, "ServiceUnavailableException"))
        .repeatedly()
        .build();
    let error = registry(&[&down])
        .get_schema(&scanned_parcel(), v(1))
        .await
        .expect_err("the registry is down");
    let text = format!("{error:#}");
    assert!(text.contains("DescribeSchema scanned_parcel"), "{text}");
    assert_eq!(
        down.num_calls(),
        3,
        "the client's retry policy made three attempts"
    );
}
