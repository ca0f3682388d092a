//! Every way the portal refuses a request: the right 4xx, the JSON error shape, every failing field
//! named, and nothing written.

use busway_tests::{Broker, seed_event, seed_subscription};
use serde_json::{Value, json};

const UNKNOWN_ID: &str = "0b8f5a52-1c1e-4a5e-9a55-6a3c2b1d0e9f";

/// A busway with the seed's event type deployed.
async fn with_seed_event() -> Broker {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
}

fn sorted(mut fields: Vec<String>) -> Vec<String> {
    fields.sort();
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_refused_as_invalid_json() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    for (path, body) in [
        ("/events", "{\"application\": \"demo\""),
        ("/events", "not json at all"),
        ("/events", ""),
        ("/subscriptions", "{bad"),
    ] {
        let reply = busway.post_raw(path, body).await;
        let fields = reply.expect_error(400, "invalid_json");
        assert!(fields.is_empty(), "{path} {body:?}: {fields:?}");
    }
    let reply = busway
        .send(
            busway
                .http
                .put(busway.portal_url("/events/scanned_parcel"))
                .body("{\"data\":"),
        )
        .await;
    reply.expect_error(400, "invalid_json");

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_json_object_is_refused() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    for body in [
        json!([seed_event()]),
        json!("scanned_parcel"),
        json!(42),
        Value::Null,
    ] {
        for reply in [
            busway.post("/events", &body).await,
            busway.post("/subscriptions", &body).await,
            busway.put("/events/scanned_parcel", &body).await,
        ] {
            let fields = reply.expect_error(400, "validation_failed");
            assert_eq!(fields, ["/"], "{body}");
        }
    }

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_missing_field_is_named_at_once() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let reply = busway.post("/events", &json!({})).await;
    assert_eq!(
        sorted(reply.expect_error(400, "validation_failed")),
        [
            "application",
            "connection_type",
            "data",
            "description",
            "event_type"
        ]
    );
    assert_eq!(reply.detail("application").as_deref(), Some("is required"));

    let reply = busway.post("/subscriptions", &json!({})).await;
    assert_eq!(
        sorted(reply.expect_error(400, "validation_failed")),
        [
            "connection_string",
            "connection_type",
            "event_type",
            "target_unit",
            "version"
        ]
    );

    let reply = busway.put("/events/scanned_parcel", &json!({})).await;
    assert_eq!(reply.expect_error(400, "validation_failed"), ["data"]);

    // A null counts as missing.
    let mut body = seed_event();
    body["description"] = Value::Null;
    body["data"] = Value::Null;
    let reply = busway.post("/events", &body).await;
    assert_eq!(
        sorted(reply.expect_error(400, "validation_failed")),
        ["data", "description"]
    );

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_the_wrong_type_is_named_at_once() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let reply = busway
        .post(
            "/events",
            &json!({
                "application": 5,
                "event_type": true,
                "description": ["Scanned parcel"],
                "connection_type": {"type": "HTTPS"},
                "data": "an object please"
            }),
        )
        .await;
    assert_eq!(
        sorted(reply.expect_error(400, "validation_failed")),
        [
            "application",
            "connection_type",
            "data",
            "description",
            "event_type"
        ]
    );
    assert_eq!(
        reply.detail("application").as_deref(),
        Some("must be a string")
    );

    let reply = busway
        .post(
            "/subscriptions",
            &json!({
                "event_type": ["scanned_parcel"],
                "version": true,
                "target_unit": 2,
                "connection_type": null,
                "connection_string": 7
            }),
        )
        .await;
    assert_eq!(
        sorted(reply.expect_error(400, "validation_failed")),
        [
            "connection_string",
            "connection_type",
            "event_type",
            "target_unit",
            "version"
        ]
    );

    for version in [json!(0), json!(-1), json!(1.5), json!("v1"), json!("")] {
        let mut body = seed_subscription();
        body["version"] = version.clone();
        let reply = busway.post("/subscriptions", &body).await;
        assert_eq!(
            reply.expect_error(400, "validation_failed"),
            ["version"],
            "version {version}"
        );
    }

    let reply = busway
        .put(
            "/events/scanned_parcel",
            &json!({"data": {"type": "object"}, "description": 3}),
        )
        .await;
    assert_eq!(
        reply.expect_error(400, "validation_failed"),
        ["description"]
    );

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_unknown_connection_types_are_refused() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let mut body = seed_event();
    body["event_type"] = json!("parcel_delivered");
    body["owner"] = json!("team_a");
    body["connection_type"] = json!("FTP");
    let reply = busway.post("/events", &body).await;
    assert_eq!(
        sorted(reply.expect_error(400, "validation_failed")),
        ["connection_type", "owner"]
    );
    assert_eq!(reply.detail("owner").as_deref(), Some("unknown field"));
    assert!(
        reply
            .detail("connection_type")
            .is_some_and(|m| m.contains("FTP")),
        "{}",
        reply.body
    );

    // Producers connect over HTTPS or SQS; LAMBDA is a consumer's connection only.
    body = seed_event();
    body["event_type"] = json!("parcel_delivered");
    body["connection_type"] = json!("LAMBDA");
    let reply = busway.post("/events", &body).await;
    assert_eq!(
        reply.expect_error(400, "validation_failed"),
        ["connection_type"]
    );

    let mut sub = seed_subscription();
    sub["connection_type"] = json!("FTP");
    sub["priority"] = json!("high");
    let reply = busway.post("/subscriptions", &sub).await;
    assert_eq!(
        sorted(reply.expect_error(400, "validation_failed")),
        ["connection_type", "priority"]
    );

    let mut sub = seed_subscription();
    sub["connection_type"] = json!("lambda");
    let reply = busway.post("/subscriptions", &sub).await;
    assert_eq!(
        reply.expect_error(400, "validation_failed"),
        ["connection_type"]
    );

    let reply = busway
        .put(
            "/events/scanned_parcel",
            &json!({"data": {"type": "object"}, "version": 7}),
        )
        .await;
    assert_eq!(reply.expect_error(400, "validation_failed"), ["version"]);

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_names_are_refused_before_they_reach_a_key() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    for name in [
        "../etc",
        "Scanned",
        "a",
        "scanned-parcel",
        "scanned parcel",
        "1parcel",
        "_parcel",
        "",
        "scanned/parcel",
        &"p".repeat(64),
    ] {
        let mut body = seed_event();
        body["event_type"] = json!(name);
        body["application"] = json!(name);
        let reply = busway.post("/events", &body).await;
        assert_eq!(
            sorted(reply.expect_error(400, "validation_failed")),
            ["application", "event_type"],
            "{name:?}"
        );

        let mut sub = seed_subscription();
        sub["target_unit"] = json!(name);
        let reply = busway.post("/subscriptions", &sub).await;
        assert_eq!(
            reply.expect_error(400, "validation_failed"),
            ["target_unit"],
            "{name:?}"
        );

        let mut sub = seed_subscription();
        sub["event_type"] = json!(name);
        let reply = busway.post("/subscriptions", &sub).await;
        assert_eq!(
            reply.expect_error(400, "validation_failed"),
            ["event_type"],
            "{name:?}"
        );
    }
    // The longest allowed name is 63 characters.
    let mut body = seed_event();
    body["event_type"] = json!("p".repeat(63));
    busway.post("/events", &body).await.expect(201);

    let after = busway.snapshot().await;
    assert_eq!(after.0["event_types"].as_array().map(Vec::len), Some(2));
    assert!(
        after
            .3
            .iter()
            .all(|f| !f.contains("..") && !f.contains("etc")),
        "{:?}",
        after.3
    );
    assert_eq!(before.1, after.1, "no subscription was stored");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_schema_that_is_not_a_draft_4_schema_is_refused_with_the_reason() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let cases = [
        (json!({"type": "strin"}), "data/type"),
        (
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}),
            "data/$schema",
        ),
        (
            json!({"type": "object", "required": "dest_house"}),
            "data/required",
        ),
        (
            json!({"type": "string", "pattern": "(unclosed"}),
            "data/pattern",
        ),
        (json!({"$ref": "#/definitions/missing"}), "data"),
        (json!("a schema, honestly"), "data"),
        (json!([{"type": "object"}]), "data"),
    ];
    for (data, field) in cases {
        let mut body = seed_event();
        body["event_type"] = json!("parcel_delivered");
        body["data"] = data.clone();
        let reply = busway.post("/events", &body).await;
        let fields = reply.expect_error(400, "validation_failed");
        assert!(fields.contains(&field.to_string()), "{data}: {fields:?}");
        assert!(
            fields.iter().all(|f| f.starts_with("data")),
            "{data}: {fields:?}"
        );

        let reply = busway
            .put("/events/scanned_parcel", &json!({"data": data}))
            .await;
        let fields = reply.expect_error(400, "validation_failed");
        assert!(fields.contains(&field.to_string()), "{data}: {fields:?}");
    }

    assert_eq!(busway.snapshot().await, before);
    let event = busway.get("/events/scanned_parcel").await;
    assert_eq!(event.expect(200)["latest_version"], 1);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_256_kib_is_refused_as_too_large() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let mut body = seed_event();
    body["event_type"] = json!("parcel_delivered");
    body["description"] = json!("x".repeat(257 * 1024));
    let reply = busway.post("/events", &body).await;
    reply.expect_error(413, "payload_too_large");

    let reply = busway
        .put(
            "/events/scanned_parcel",
            &json!({"data": {"type": "object", "description": "x".repeat(300 * 1024)}}),
        )
        .await;
    reply.expect_error(413, "payload_too_large");

    // Just under the limit the body is read, and refused only for what it says.
    body["description"] = json!("x".repeat(200 * 1024));
    let reply = busway.post("/events", &body).await;
    assert_eq!(
        reply.expect_error(400, "validation_failed"),
        ["description"]
    );

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_type_is_a_conflict_and_changes_nothing() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;
    let schema_before = busway
        .get("/events/scanned_parcel/versions/1")
        .await
        .expect(200)
        .clone();

    let mut body = seed_event();
    body["application"] = json!("intruder");
    body["description"] = json!("Another meaning");
    body["data"] = json!({"type": "object", "properties": {"x": {"type": "string"}}});
    let reply = busway.post("/events", &body).await;
    reply.expect_error(409, "already_exists");

    assert_eq!(busway.snapshot().await, before);
    assert_eq!(
        busway.get("/events/scanned_parcel/versions/1").await.body,
        schema_before
    );
    let backup = busway.read_object(
        "event-schemas-backup-bucket",
        "scanned_parcel/1/schema.json",
    );
    assert_eq!(backup, schema_before["schema"]);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_of_an_unknown_event_type_is_not_found() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    for path in ["/events/parcel_delivered", "/events/Bad", "/events/a"] {
        let reply = busway.put(path, &json!({"data": {"type": "object"}})).await;
        reply.expect_error(404, "not_found");
    }

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    for path in [
        "/events/parcel_delivered".to_string(),
        "/events/Scanned".to_string(),
        "/events/scanned_parcel/versions/2".to_string(),
        "/events/scanned_parcel/versions/0".to_string(),
        "/events/scanned_parcel/versions/abc".to_string(),
        "/events/parcel_delivered/versions/1".to_string(),
        format!("/subscriptions/{UNKNOWN_ID}"),
        "/subscriptions/not-a-uuid".to_string(),
        format!("/deployments/{UNKNOWN_ID}"),
        "/deployments/nope".to_string(),
    ] {
        busway.get(&path).await.expect_error(404, "not_found");
    }
    for path in [
        format!("/subscriptions/{UNKNOWN_ID}"),
        "/events/scanned_parcel/versions/2".to_string(),
        "/events/parcel_delivered/versions/1".to_string(),
    ] {
        busway.delete(&path).await.expect_error(404, "not_found");
    }

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_route_is_a_json_404_and_a_wrong_method_a_json_405() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    for path in [
        "/",
        "/nope",
        "/events/scanned_parcel/versions",
        "/events/a/b/c/d",
    ] {
        busway.get(path).await.expect_error(404, "not_found");
    }
    busway
        .post("/nope", &seed_event())
        .await
        .expect_error(404, "not_found");

    let cases = [
        (reqwest::Method::PATCH, "/events"),
        (reqwest::Method::DELETE, "/events"),
        (reqwest::Method::POST, "/events/scanned_parcel"),
        (reqwest::Method::DELETE, "/events/scanned_parcel"),
        (reqwest::Method::PUT, "/events/scanned_parcel/versions/1"),
        (reqwest::Method::PUT, "/subscriptions"),
        (reqwest::Method::POST, "/deployments"),
        (reqwest::Method::DELETE, "/deployments/x"),
    ];
    for (method, path) in cases {
        let reply = busway
            .send(
                busway
                    .http
                    .request(method, busway.portal_url(path))
                    .json(&seed_event()),
            )
            .await;
        reply.expect_error(405, "method_not_allowed");
    }

    assert_eq!(busway.snapshot().await, before);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_filters_are_refused_and_each_is_named() {
    let busway = with_seed_event().await;

    let cases = [
        ("/subscriptions?version=abc", vec!["version"]),
        ("/subscriptions?version=0", vec!["version"]),
        ("/subscriptions?event_type=Scanned", vec!["event_type"]),
        ("/subscriptions?target_unit=..%2Fx", vec!["target_unit"]),
        (
            "/subscriptions?version=abc&target_unit=U2",
            vec!["target_unit", "version"],
        ),
        ("/subscriptions?colour=red", vec!["colour"]),
        ("/deployments?event_type=..%2Fetc", vec!["event_type"]),
        ("/deployments?status=FAILED", vec!["status"]),
    ];
    for (path, fields) in cases {
        let reply = busway.get(path).await;
        assert_eq!(
            sorted(reply.expect_error(400, "validation_failed")),
            fields,
            "{path}"
        );
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_over_1024_characters_is_refused() {
    let busway = with_seed_event().await;
    let before = busway.snapshot().await;

    let mut body = seed_event();
    body["event_type"] = json!("parcel_delivered");
    body["description"] = json!("é".repeat(1025));
    let reply = busway.post("/events", &body).await;
    assert_eq!(
        reply.expect_error(400, "validation_failed"),
        ["description"]
    );
    let reply = busway
        .put(
            "/events/scanned_parcel",
            &json!({"data": {"type": "object"}, "description": "d".repeat(1025)}),
        )
        .await;
    assert_eq!(
        reply.expect_error(400, "validation_failed"),
        ["description"]
    );

    assert_eq!(busway.snapshot().await, before);
    body["description"] = json!("é".repeat(1024));
    busway.post("/events", &body).await.expect(201);
    busway.stop().await;
}
