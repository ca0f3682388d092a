//! The delivery function's handler against a consumer of its own on loopback: a delivery is
//! signed as Standard Webhooks specifies (checked here with HMAC-SHA256 computed by this test,
//! not by busway's code), with every secret of a rotation; a retryable answer fails the
//! invocation, a refused one does not, and neither does a deleted subscription or a target the
//! SSRF guard refuses.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use busway_core::ports::StoreError;
use busway_core::subscription::{Subscription, SubscriptionState};
use busway_core::webhook::SigningSecret;
use busway_delivery::{Delivered, Retry, Subscriptions, deliver};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

struct Fake {
    subscription: Subscription,
    secrets: Vec<SigningSecret>,
}

#[async_trait]
impl Subscriptions for Fake {
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(Some(self.subscription.clone()).filter(|s| s.id == id))
    }

    async fn secrets(&self, _: &str) -> Result<Vec<SigningSecret>, StoreError> {
        Ok(self.secrets.clone())
    }
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A consumer answering `status`, keeping what it received.
async fn consumer(status: StatusCode) -> (String, Seen) {
    let seen = Seen::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().expect("lock").push((headers, body.to_vec()));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn subscription(url: &str) -> Subscription {
    serde_json::from_value(json!({
        "id": "sub_1", "event_type": "scanned_parcel", "version": 1, "target_unit": "u2",
        "connection_type": "HTTPS", "connection_string": url, "state": "ACTIVE",
        "created_at": "2026-11-30T10:00:00Z", "team": "logistics"
    }))
    .expect("a subscription")
}

fn secret(key: &[u8]) -> SigningSecret {
    SigningSecret {
        secret: format!("whsec_{}", STANDARD.encode(key)),
        created_at: busway_core::now(),
        expires_at: None,
    }
}

fn input() -> Value {
    json!({"subscription_id": "sub_1", "event": {"version": "0", "id": "evt-1",
        "detail-type": "scanned_parcel.1", "source": "busway.demo", "detail": {"data": {"n": 1}}}})
}

/// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, as the specification says.
fn expected(key: &[u8], headers: &HeaderMap, body: &[u8]) -> String {
    let header = |name: &str| headers[name].to_str().expect("a header").to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("a key");
    mac.update(format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_delivery_is_signed_with_every_secret_of_its_subscription() {
    let (url, seen) = consumer(StatusCode::OK).await;
    let (old, new) = (
        b"old secret key 0123456789abcdef".to_vec(),
        b"new secret key 0123456789abcdef".to_vec(),
    );
    let store = Fake {
        subscription: subscription(&url),
        secrets: vec![secret(&new), secret(&old)],
    };
    let http = busway_delivery::http_client().expect("a client");
    let delivered = deliver(&store, &http, &input()).await.expect("delivered");
    assert_eq!(delivered, Delivered::Accepted);
    let seen = seen.lock().expect("lock");
    let (headers, body) = &seen[0];
    let received: Value = serde_json::from_slice(body).expect("JSON");
    assert_eq!(received, input()["event"]);
    assert_eq!(headers["webhook-id"], "evt-1");
    let signatures: Vec<&str> = headers["webhook-signature"]
        .to_str()
        .expect("a header")
        .split(' ')
        .collect();
    assert_eq!(
        signatures,
        [expected(&new, headers, body), expected(&old, headers, body)]
    );
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert!(!signatures.contains(&expected(&new, headers, &tampered).as_str()));
}

#[tokio::test]
async fn a_retryable_answer_fails_the_invocation_and_a_refusal_does_not() {
    let http = busway_delivery::http_client().expect("a client");
    for (status, retried) in [
        (StatusCode::SERVICE_UNAVAILABLE, true),
        (StatusCode::TOO_MANY_REQUESTS, true),
        (StatusCode::INTERNAL_SERVER_ERROR, true),
        (StatusCode::BAD_REQUEST, false),
        (StatusCode::GONE, false),
    ] {
        let (url, seen) = consumer(status).await;
        let store = Fake {
            subscription: subscription(&url),
            secrets: vec![secret(b"k")],
        };
        let outcome = deliver(&store, &http, &input()).await;
        assert_eq!(seen.lock().expect("lock").len(), 1, "{status}");
        match outcome {
            Err(Retry::Target(_)) => assert!(retried, "{status} was retried"),
            Ok(Delivered::Dropped(_)) => assert!(!retried, "{status} was not retried"),
            other => panic!("{status}: {other:?}"),
        }
    }
    // Nobody listening: retried.
    let store = Fake {
        subscription: subscription("http://127.0.0.1:9/hook"),
        secrets: vec![],
    };
    assert!(matches!(
        deliver(&store, &http, &input()).await,
        Err(Retry::Target(_))
    ));
}

#[tokio::test]
async fn a_deleted_subscription_or_a_private_target_is_dropped_without_a_request() {
    let http = busway_delivery::http_client().expect("a client");
    let mut deleted = subscription("https://consumer.example.com/hook");
    deleted.state = SubscriptionState::Deleted;
    for sub in [
        deleted,
        subscription("https://10.0.0.1/hook"),
        subscription("http://10.0.0.1/hook"),
    ] {
        let store = Fake {
            subscription: sub.clone(),
            secrets: vec![],
        };
        let outcome = deliver(&store, &http, &input()).await;
        assert!(
            matches!(outcome, Ok(Delivered::Dropped(_))),
            "{}: {outcome:?}",
            sub.connection_string
        );
    }
    let store = Fake {
        subscription: subscription("https://consumer.example.com/hook"),
        secrets: vec![],
    };
    assert!(matches!(
        deliver(&store, &http, &json!({"event": {}})).await,
        Err(Retry::Input(_))
    ));
}

#[tokio::test]
async fn a_host_name_is_called_only_on_the_public_addresses_it_resolves_to() {
    let (url, seen) = consumer(StatusCode::OK).await;
    let http = busway_delivery::http_client().expect("a client");
    let deliver_to = |url: String| {
        let http = http.clone();
        async move {
            let store = Fake {
                subscription: subscription(&url),
                secrets: vec![],
            };
            deliver(&store, &http, &input()).await
        }
    };
    // `localhost` is resolved by the client's resolver, which lets plain http reach loopback.
    let by_name = url.replacen("127.0.0.1", "localhost", 1);
    let outcome = deliver_to(by_name).await;
    assert!(matches!(outcome, Ok(Delivered::Accepted)), "{outcome:?}");
    // This machine's own name resolves (through /etc/hosts) to loopback or a private address.
    // The URL passes the check made before the request; the connection is refused on the
    // address the name resolved to, as a rebinding name's would be.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("a host name");
    let port = reqwest::Url::parse(&url)
        .expect("a URL")
        .port()
        .expect("a port");
    let outcome = deliver_to(format!("https://{}:{port}/hook", host.trim())).await;
    assert!(
        matches!(&outcome, Ok(Delivered::Dropped(why)) if why.contains("not a public address")),
        "{outcome:?}"
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "only the loopback call"
    );
}
