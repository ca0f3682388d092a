//! HTTPS deliveries are signed as Standard Webhooks specifies, checked here by a verifier of the
//! test's own (not busway's signing code) that first proves itself on the specification's
//! published test vector.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use busway_tests::consumer::{Consumer, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(10);

/// Whether `header` (space-separated `v1,<base64>` signatures) holds a valid signature of
/// `{id}.{timestamp}.{body}` under `secret` (`whsec_<base64 key>`), compared in constant time.
fn verifies(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("a base64 secret");
    header.split(' ').any(|signature| {
        let Some(encoded) = signature.strip_prefix("v1,") else {
            return false;
        };
        let Ok(expected) = STANDARD.decode(encoded) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    })
}

#[test]
fn the_verifier_accepts_the_specifications_test_vector_and_nothing_else() {
    let (secret, id, timestamp, body) = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
    );
    let signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert!(verifies(secret, id, timestamp, body, signature));
    assert!(!verifies(
        secret,
        id,
        timestamp,
        br#"{"test": 2432232315}"#,
        signature
    ));
    assert!(!verifies(secret, id, "1614265331", body, signature));
}

fn header(request: &busway_tests::consumer::Request, name: &str) -> String {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("the delivery has no {name} header"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_deliveries_are_signed_and_a_rotated_secret_signs_beside_its_successor() {
    let busway = Broker::start().await;
    let consumer = Consumer::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let made = busway
        .post(
            "/subscriptions",
            &http_subscription(1, "u2", &consumer.url("/events")),
        )
        .await;
    let made = made.expect(201).clone();
    busway
        .deployed(made["deployment_id"].as_str().expect("a deployment"))
        .await;
    let id = made["id"].as_str().expect("an id");
    let first = made["secret"]
        .as_str()
        .expect("the secret, in the 201 only")
        .to_string();
    assert!(first.starts_with("whsec_"), "{first}");
    let read = busway.get(&format!("/subscriptions/{id}")).await;
    assert!(read.expect(200).get("secret").is_none(), "{}", read.body);

    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    let delivered = consumer.wait_for_deliveries(1, WAIT).await;
    let (event_id, timestamp, signature) = (
        header(&delivered[0], "webhook-id"),
        header(&delivered[0], "webhook-timestamp"),
        header(&delivered[0], "webhook-signature"),
    );
    assert_eq!(event_id, delivered[0].json()["id"], "the id is the event's");
    let sent_at: i64 = timestamp.parse().expect("seconds");
    assert!((busway_core::now().unix_timestamp() - sent_at).abs() < 60);
    assert!(verifies(
        &first,
        &event_id,
        &timestamp,
        &delivered[0].body,
        &signature
    ));
    let mut tampered = delivered[0].body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(!verifies(
        &first, &event_id, &timestamp, &tampered, &signature
    ));

    let rotated = busway
        .post(
            &format!("/subscriptions/{id}/secret/rotate"),
            &serde_json::json!({}),
        )
        .await;
    let second = rotated.expect(201)["secret"]
        .as_str()
        .expect("a new secret")
        .to_string();
    assert_ne!(second, first);
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    let delivered = consumer.wait_for_deliveries(2, WAIT).await;
    let last = &delivered[1];
    let (event_id, timestamp, signature) = (
        header(last, "webhook-id"),
        header(last, "webhook-timestamp"),
        header(last, "webhook-signature"),
    );
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    for secret in [&first, &second] {
        assert!(verifies(
            secret, &event_id, &timestamp, &last.body, &signature
        ));
    }
    consumer.stop().await;
    busway.stop().await;
}
