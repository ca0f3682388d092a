//! The portal router serves API Gateway (REST, v1 proxy events) exactly as it serves a plain HTTP
//! request: requests built by `lambda_http` from API Gateway fixtures go through the same
//! `router()` and come back with the same statuses and bodies.

// Shared with host_features.rs and retries.rs, which use the helpers this file does not.
#[allow(dead_code)]
mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use busway_core::ports::Bucket;
use lambda_http::RequestExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The seed's `POST /events` as API Gateway hands it to the portal Lambda.
const POST_EVENTS: &str = include_str!("fixtures/apigw_rest_post_events.json");
/// `GET /events/scanned_parcel` as API Gateway hands it to the portal Lambda.
const GET_EVENT: &str = include_str!("fixtures/apigw_rest_get_event.json");
const STAGE: &str = "prod";

/// What a client sees.
#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Value,
}

impl Answer {
    #[track_caller]
    fn error_code(&self) -> &str {
        let details = &self.body["error"]["details"];
        assert!(
            details.is_array(),
            "error.details is an array: {}",
            self.body
        );
        assert!(
            self.body["error"]["message"].is_string(),
            "error.message is a string: {}",
            self.body
        );
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("an error code in {}", self.body))
    }
}

async fn answer(response: Response) -> Answer {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the response body is readable");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "a JSON body ({e}): {}",
            String::from_utf8_lossy(&bytes).into_owned()
        )
    });
    Answer {
        status,
        content_type,
        body,
    }
}

/// The request the portal Lambda hands to the router: parsed by `lambda_http`, which puts the
/// stage back in front of the path (`/prod/events`), then taken off again by the bin's own
/// `busway_http::lambda::run`, with the caller its Lambda authorizer named in the context.
fn lambda_request(event: &str) -> lambda_http::Request {
    busway_http::lambda::with_caller(busway_http::lambda::without_stage(
        lambda_http::request::from_str(event).expect("a valid API Gateway REST proxy event"),
    ))
}

/// An API Gateway REST event for any request, derived from the POST fixture (a `{proxy+}`
/// resource), so that every case below goes through `lambda_http`'s parsing.
fn apigw_event(method: &str, path: &str, query: &[(&str, &str)], body: Option<&str>) -> String {
    let mut event: Value = serde_json::from_str(POST_EVENTS).expect("the fixture is JSON");
    event["httpMethod"] = json!(method);
    event["path"] = json!(path);
    event["resource"] = json!("/{proxy+}");
    event["pathParameters"] = json!({"proxy": path.trim_start_matches('/')});
    event["requestContext"]["httpMethod"] = json!(method);
    event["requestContext"]["resourcePath"] = json!("/{proxy+}");
    event["requestContext"]["path"] = json!(format!("/{STAGE}{path}"));
    if query.is_empty() {
        event["queryStringParameters"] = Value::Null;
        event["multiValueQueryStringParameters"] = Value::Null;
    } else {
        let single: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let multi: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.to_string(), json!([v])))
            .collect();
        event["queryStringParameters"] = Value::Object(single);
        event["multiValueQueryStringParameters"] = Value::Object(multi);
    }
    event["body"] = body.map_or(Value::Null, |b| json!(b));
    event.to_string()
}

/// The same request as a plain HTTP client sends it to the local host.
fn plain_request(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&str>,
) -> Request<Body> {
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a valid request");
    // The local host's key layer names the same caller the fixtures' authorizer does.
    request.extensions_mut().insert(support::admin());
    request
}

fn seed_body() -> String {
    let event: Value = serde_json::from_str(POST_EVENTS).expect("the fixture is JSON");
    event["body"]
        .as_str()
        .expect("the fixture has a body")
        .to_string()
}

#[tokio::test]
async fn the_seed_post_events_fixture_creates_the_event_type_through_the_router() {
    let (portal, memory) = support::portal();
    let request = lambda_request(POST_EVENTS);
    assert_eq!(request.method(), "POST");
    assert_eq!(request.uri().path(), "/events");

    let response = busway_portal::router(portal)
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let created = answer(response).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.content_type.as_deref(), Some("application/json"));
    assert_eq!(created.body["event_type"], "scanned_parcel");
    assert_eq!(created.body["application"], "demo");
    assert_eq!(created.body["connection_type"], "HTTPS");
    assert_eq!(created.body["latest_version"], 1);
    assert_eq!(created.body["versions"][0]["version"], 1);
    let deployment_id = created.body["deployment_id"]
        .as_str()
        .expect("a deployment id");

    let submitted: Value = serde_json::from_str(&seed_body()).expect("the seed body is JSON");
    let deploy: Value = serde_json::from_slice(
        &memory
            .object(Bucket::Publisher, "scanned_parcel/1/deploy.json")
            .expect("the producer deploy.json is written"),
    )
    .expect("deploy.json is JSON");
    assert_eq!(deploy["kind"], "producer");
    assert_eq!(deploy["deployment_id"], deployment_id);
    assert_eq!(deploy["schema"]["properties"]["data"], submitted["data"]);
    let backup: Value = serde_json::from_slice(
        &memory
            .object(Bucket::SchemaBackup, "scanned_parcel/1/schema.json")
            .expect("the schema backup is written"),
    )
    .expect("schema.json is JSON");
    assert_eq!(backup, deploy["schema"]);
    assert_eq!(memory.object_keys().len(), 2, "{:?}", memory.object_keys());
}

#[tokio::test]
async fn the_get_event_fixture_reads_back_what_the_post_fixture_created() {
    let (portal, _memory) = support::portal();
    let router = busway_portal::router(portal);

    let request = lambda_request(GET_EVENT);
    assert_eq!(request.uri().path(), "/events/scanned_parcel");
    let missing = answer(router.clone().oneshot(request).await.expect("infallible")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");

    let created = answer(
        router
            .clone()
            .oneshot(lambda_request(POST_EVENTS))
            .await
            .expect("infallible"),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let found = answer(
        router
            .oneshot(lambda_request(GET_EVENT))
            .await
            .expect("infallible"),
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let mut expected = created.body.clone();
    expected
        .as_object_mut()
        .expect("an object")
        .remove("deployment_id");
    assert_eq!(found.body, expected);
}

#[tokio::test]
async fn errors_come_back_identically_through_api_gateway_and_plain_http() {
    let (lambda_portal, _) = support::portal();
    let (plain_portal, _) = support::portal();
    let lambda = busway_portal::router(lambda_portal);
    let plain = busway_portal::router(plain_portal);

    let seed = seed_body();
    // The name of the seed's event type, taken with another meaning.
    let taken = {
        let mut body: Value = serde_json::from_str(&seed).expect("the seed body is JSON");
        body["description"] = json!("Another meaning");
        body.to_string()
    };
    let unknown_subscription = json!({
        "event_type": "parcel_delivered",
        "version": "1",
        "target_unit": "u2",
        "connection_type": "LAMBDA",
        "connection_string": "arn:aws:lambda:eu-west-1:123456789012:function:my-target-lambda-processor"
    })
    .to_string();
    let oversize = json!({"description": "x".repeat(257 * 1024)}).to_string();
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: [Case; 12] = [
        ("POST", "/events", &[], Some(&seed), 201, ""),
        ("POST", "/events", &[], Some(&taken), 409, "already_exists"),
        (
            "GET",
            "/events/parcel_delivered",
            &[],
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/events/scanned_parcel/versions/9",
            &[],
            None,
            404,
            "not_found",
        ),
        ("POST", "/events", &[], Some("{}"), 400, "validation_failed"),
        (
            "POST",
            "/events",
            &[],
            Some("{\"application\":"),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/subscriptions",
            &[],
            Some(&unknown_subscription),
            404,
            "not_found",
        ),
        (
            "GET",
            "/subscriptions",
            &[("version", "abc")],
            None,
            400,
            "validation_failed",
        ),
        (
            "GET",
            "/subscriptions",
            &[("colour", "red")],
            None,
            400,
            "validation_failed",
        ),
        ("DELETE", "/events", &[], None, 405, "method_not_allowed"),
        ("GET", "/nope", &[], None, 404, "not_found"),
        (
            "POST",
            "/events",
            &[],
            Some(&oversize),
            413,
            "payload_too_large",
        ),
    ];
    for (method, path, query, body, status, code) in cases {
        let through_lambda = answer(
            lambda
                .clone()
                .oneshot(lambda_request(&apigw_event(method, path, query, body)))
                .await
                .expect("infallible"),
        )
        .await;
        let through_plain = answer(
            plain
                .clone()
                .oneshot(plain_request(method, path, query, body))
                .await
                .expect("infallible"),
        )
        .await;
        let case = format!("{method} {path} {query:?}");
        assert_eq!(
            through_lambda.status.as_u16(),
            status,
            "{case}: {through_lambda:?}"
        );
        assert_eq!(
            through_plain.status.as_u16(),
            status,
            "{case}: {through_plain:?}"
        );
        if code.is_empty() {
            continue;
        }
        assert_eq!(through_lambda.error_code(), code, "{case}");
        assert_eq!(through_lambda, through_plain, "{case}");
    }
}

#[tokio::test]
async fn every_missing_field_is_named_through_api_gateway() {
    let (portal, memory) = support::portal();
    let event = apigw_event("POST", "/events", &[], Some("{}"));
    let refused = answer(
        busway_portal::router(portal)
            .oneshot(lambda_request(&event))
            .await
            .expect("infallible"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let mut fields: Vec<&str> = refused.body["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("a field"))
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "application",
            "connection_type",
            "data",
            "description",
            "event_type"
        ]
    );
    assert!(
        memory.object_keys().is_empty(),
        "a refused request writes nothing: {:?}",
        memory.object_keys()
    );
}

#[tokio::test]
async fn the_rest_api_stage_is_not_part_of_a_portal_route() {
    let parsed =
        lambda_http::request::from_str(POST_EVENTS).expect("a valid API Gateway REST event");
    assert_eq!(parsed.raw_http_path(), "/events");
    // lambda_http keeps the stage unless AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH is set; the bin's
    // `busway_http::lambda::run` routes the same either way.
    assert!(
        [format!("/{STAGE}/events"), "/events".to_string()]
            .contains(&parsed.uri().path().to_string()),
        "{}",
        parsed.uri()
    );
    let (portal, _) = support::portal();
    let created = answer(
        busway_portal::router(portal)
            .oneshot(lambda_request(POST_EVENTS))
            .await
            .expect("infallible"),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
}
