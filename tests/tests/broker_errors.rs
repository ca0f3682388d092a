//! Every way the broker refuses an event: the right 4xx, the JSON error shape, each failing path
//! named, and nothing on the bus.

use busway_tests::{Broker, seed_event, v1_envelope};
use serde_json::{Value, json};

async fn with_seed_event() -> Broker {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_an_unknown_event_type_or_version_is_not_found() {
    let busway = with_seed_event().await;

    for (event_type, version) in [
        ("parcel_delivered", "1"),
        ("scanned_parcel", "2"),
        ("scanned_parcel", "0"),
        ("scanned_parcel", "01"),
        ("scanned_parcel", "one"),
        ("Scanned_parcel", "1"),
        ("..", "1"),
    ] {
        let reply = busway
            .publish(event_type, version, &v1_envelope("u2"))
            .await;
        reply.expect_error(404, "not_found");
    }
    for path in ["/", "/scanned_parcel", "/scanned_parcel/1/extra"] {
        let reply = busway
            .send(
                busway
                    .http
                    .post(busway.broker_url(path))
                    .json(&v1_envelope("u2")),
            )
            .await;
        reply.expect_error(404, "not_found");
    }
    let reply = busway
        .send(busway.http.get(busway.broker_url("/scanned_parcel/1")))
        .await;
    reply.expect_error(405, "method_not_allowed");

    assert_eq!(busway.logged_events(), Vec::new());
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_envelope_is_refused_naming_each_failing_path() {
    let busway = with_seed_event().await;

    let reply = busway
        .publish(
            "scanned_parcel",
            "1",
            &json!({
                "metadata": {"event_attributes": {"source": "", "target": "U2!"}, "event_id": 7},
                "data": {"dest_postal_code": 1012, "dest_house": "42"}
            }),
        )
        .await;
    let fields = reply.expect_error(400, "validation_failed");
    for expected in [
        "/metadata/event_attributes/source",
        "/metadata/event_attributes/target",
        "/metadata/event_id",
        "/data/dest_postal_code",
        "/data/dest_house",
        "/data",
    ] {
        assert!(
            fields.contains(&expected.to_string()),
            "{expected} missing from {fields:?}"
        );
    }

    let cases: [(Value, &str); 5] = [
        (json!({"data": v1_envelope("u2")["data"]}), "/"),
        (json!({"metadata": v1_envelope("u2")["metadata"]}), "/"),
        (
            json!({"metadata": {"event_attributes": {"source": "s"}}, "data": v1_envelope("u2")["data"]}),
            "/metadata/event_attributes",
        ),
        (
            json!({"metadata": "m", "data": v1_envelope("u2")["data"]}),
            "/metadata",
        ),
        (json!([v1_envelope("u2")]), "/"),
    ];
    for (envelope, path) in cases {
        let reply = busway.publish("scanned_parcel", "1", &envelope).await;
        let fields = reply.expect_error(400, "validation_failed");
        assert!(fields.contains(&path.to_string()), "{envelope}: {fields:?}");
    }

    assert_eq!(busway.logged_events(), Vec::new());
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_is_not_json_or_too_large_is_refused() {
    let busway = with_seed_event().await;

    for body in ["{\"metadata\":", "", "metadata=1"] {
        let reply = busway
            .send(
                busway
                    .http
                    .post(busway.broker_url("/scanned_parcel/1"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        reply.expect_error(400, "invalid_json");
    }

    let mut big = v1_envelope("u2");
    big["data"]["note"] = json!("x".repeat(busway_injector::MAX_EVENT_BYTES));
    let reply = busway.publish("scanned_parcel", "1", &big).await;
    reply.expect_error(413, "payload_too_large");

    assert_eq!(busway.logged_events(), Vec::new());
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_deleted_version_is_not_found_once_its_destroy_deployment_succeeded() {
    let busway = with_seed_event().await;
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);

    let reply = busway.delete("/events/scanned_parcel/versions/1").await;
    let deleted = reply.expect(202).clone();
    busway
        .deployed(deleted["deployment_id"].as_str().expect("a deployment id"))
        .await;

    let reply = busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await;
    reply.expect_error(404, "not_found");
    assert_eq!(busway.logged_events().len(), 1);
    busway.stop().await;
}

/// A bus that fails every entry with `code`, or, without one, the whole call.
struct FailingBus(Option<&'static str>);

#[async_trait::async_trait]
impl busway_core::ports::Bus for FailingBus {
    async fn put_events(
        &self,
        events: Vec<busway_core::envelope::BusEvent>,
    ) -> anyhow::Result<Vec<Result<busway_core::ports::Accepted, busway_core::ports::EntryFailure>>>
    {
        let Some(code) = self.0 else {
            anyhow::bail!("event log commit failed: database or disk is full");
        };
        let failure = busway_core::ports::EntryFailure {
            code: code.into(),
            message: "failed".into(),
        };
        Ok(vec![Err(failure); events.len()])
    }
}

/// What a producer is answered when the bus fails: 503 with `Retry-After` for what passes
/// (EventBridge throttling past its quota or the local writer falling behind, its retryable
/// `InternalFailure`, a claim check not written, a whole call that failed after the bus's own
/// retries, a full disk), 500 for an entry the bus refused otherwise.
#[tokio::test]
async fn a_bus_failure_that_passes_answers_503_with_retry_after() {
    use tower::ServiceExt;
    let routes = std::sync::Arc::new(busway_core::ingest::LiveRoutes::default());
    routes
        .insert(
            "demo".parse().expect("an application"),
            Vec::new(),
            "scanned_parcel".parse().expect("an event type"),
            busway_core::Version::new(1).expect("a version"),
            &json!({"type": "object"}),
        )
        .expect("a route");
    for (failing, status) in [
        (Some(busway_core::ingest::THROTTLED), 503),
        (Some("InternalFailure"), 503),
        (Some(busway_core::claim_check::NOT_WRITTEN), 503),
        (None, 503),
        (Some("MalformedDetail"), 500),
    ] {
        let app = busway_injector::router(busway_injector::Broker {
            routes: routes.clone(),
            store: None,
            bus: std::sync::Arc::new(FailingBus(failing)),
        });
        let mut request = axum::http::Request::post("/scanned_parcel/1")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(v1_envelope("u2").to_string()))
            .expect("a request");
        request.extensions_mut().insert(busway_core::auth::Caller {
            key_id: "key_producer".into(),
            team: "platform".parse().expect("a team"),
            role: busway_core::auth::Role::Producer,
            application: Some("demo".parse().expect("an application")),
        });
        let response = app.oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), status, "{failing:?}");
        if status == 503 {
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1"),
                "{failing:?}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("a body");
            let body: Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(body["error"]["code"], "unavailable", "{failing:?}: {body}");
        }
    }
}
