//! What the portal answers for what a host lacks or cannot reach right now: a host without a
//! delivery store (AWS: EventBridge keeps those) says 501 for dead letters and leaves `delivery`
//! out of a subscription. On AWS consumer documents name the platform's bus kind.

// Shared with lambda_fixture.rs, which uses the helpers this file does not.
#[allow(dead_code)]
mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use busway_core::deploy::{self, BusKind, DeployDoc, DeployKind};
use busway_core::portal::Portal;
use busway_core::ports::Bucket;
use serde_json::{Value, json};
use support::call;

#[tokio::test]
async fn without_a_delivery_store_dead_letters_are_not_available_and_delivery_counts_are_left_out()
{
    let (with, _) = support::portal();
    let portal = Arc::new(Portal {
        store: with.store.clone(),
        deployments: with.deployments.clone(),
        registry: with.registry.clone(),
        objects: with.objects.clone(),
        deliveries: None,
        control: None,
        provisioning: with.provisioning.clone(),
        keys: with.keys.clone(),
        bus_kind: with.bus_kind,
        idempotency: with.idempotency.clone(),
        audit: with.audit.clone(),
        targets: with.targets.clone(),
        secrets: with.secrets.clone(),
        allow_loopback_targets: false,
    });
    let event = json!({"event_type": "scanned_parcel", "application": "parcel_tracking",
        "description": "A parcel was scanned", "connection_type": "HTTPS",
        "data": {"type": "object", "properties": {"id": {"type": "string"}}}});
    let (status, body) = call(&portal, "POST", "/events", Some(event)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let subscription = json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
        "connection_type": "HTTPS", "connection_string": "https://example.com/hook"});
    let (status, created) = call(&portal, "POST", "/subscriptions", Some(subscription)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("an id");

    let (status, body) = call(&portal, "GET", &format!("/subscriptions/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], id);
    // The settings only: this host keeps no counts.
    assert_eq!(body["delivery"], json!({"max_in_flight": 4}), "{body}");

    for (method, path) in [
        ("GET", format!("/subscriptions/{id}/dead-letters")),
        ("POST", format!("/subscriptions/{id}/dead-letters/redrive")),
    ] {
        let (status, body) = call(&portal, method, &path, None).await;
        assert_eq!(
            status,
            StatusCode::NOT_IMPLEMENTED,
            "{method} {path}: {body}"
        );
        assert_eq!(body["error"]["code"], "not_available");
        let message = body["error"]["message"].as_str().expect("a message");
        assert!(message.contains(&format!("busway-{id}")), "{message}");
    }

    // Without a subscriber control (the Classic bus) there is no delivery state, and pause,
    // resume and replay are not available.
    assert_eq!(body.get("delivery_state"), None, "{body}");
    for (action, request) in [
        ("pause", json!({})),
        ("resume", json!({})),
        ("replay", json!({"start_time": "2020-01-01T00:00:00Z"})),
    ] {
        let path = format!("/subscriptions/{id}/{action}");
        let (status, body) = call(&portal, "POST", &path, Some(request)).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_available");
        let message = body["error"]["message"].as_str().expect("a message");
        assert!(message.contains("Classic"), "{message}");
    }
    let (status, _) = call(
        &portal,
        "POST",
        "/subscriptions/nope/pause",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// On AWS the portal names its bus in every consumer deploy.json, so the consumer build makes a
/// subscriber on the Custom Event Bus or a rule on the Classic one whatever the build's own
/// default; the local host names none.
#[tokio::test]
async fn consumer_documents_name_the_bus_kind_of_the_portal() {
    for kind in [None, Some(BusKind::Custom), Some(BusKind::Classic)] {
        let (with, memory) = support::portal();
        let portal = Arc::new(Portal {
            store: with.store.clone(),
            deployments: with.deployments.clone(),
            registry: with.registry.clone(),
            objects: with.objects.clone(),
            deliveries: None,
            control: None,
            provisioning: with.provisioning.clone(),
            keys: with.keys.clone(),
            bus_kind: kind,
            idempotency: with.idempotency.clone(),
            audit: with.audit.clone(),
            targets: with.targets.clone(),
            secrets: with.secrets.clone(),
            allow_loopback_targets: false,
        });
        let event = json!({"event_type": "scanned_parcel", "application": "parcel_tracking",
            "description": "A parcel was scanned", "connection_type": "HTTPS",
            "data": {"type": "object", "properties": {"id": {"type": "string"}}}});
        let (status, body) = call(&portal, "POST", "/events", Some(event)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let subscription = json!({"event_type": "scanned_parcel", "version": "1",
            "target_unit": "u2", "connection_type": "HTTPS",
            "connection_string": "https://example.com/hook"});
        let (status, created) = call(&portal, "POST", "/subscriptions", Some(subscription)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().expect("an id");
        let key = format!("scanned_parcel/1/u2/{id}/deploy.json");
        let written = memory
            .object(Bucket::Subscriber, &key)
            .expect("the consumer deploy.json");
        let DeployDoc::Consumer(doc) =
            deploy::parse(DeployKind::Consumer, &written).expect("a valid document")
        else {
            panic!("not a consumer document");
        };
        assert_eq!(doc.bus_kind, kind);
        let raw: Value = serde_json::from_slice(&written).expect("JSON");
        assert_eq!(raw.get("bus_kind").is_some(), kind.is_some(), "{raw}");
    }
}
