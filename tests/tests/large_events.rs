//! Large events on the local host, over HTTP: the broker accepts bodies up to its limit
//! (`busway up --max-event-bytes`, 413 naming it above), events within the bus entry limit are
//! delivered whole, larger ones as a claim check whose link the portal serves, objects are written
//! only for valid events, never replaced, and expire with the local retention.

use std::time::{Duration, Instant};

use busway_core::claim_check::{self, FORMAT_VERSION, LEGACY_MAX_ENTRY_BYTES};
use busway_injector::MAX_EVENT_BYTES;
use busway_tests::consumer::{Consumer, http_subscription};
use busway_tests::{Broker, blob_envelope, blob_event_type};
use serde_json::{Value, json};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
const BACKUP_BUCKET: &str = "event-schemas-backup-bucket";
const FORMAT_HEADER: &str = "x-amz-meta-busway-format-version";

/// A broker with the blob event type and an HTTP consumer subscribed as u2.
async fn with_subscriber(configure: impl FnOnce(&mut busway_local::Config)) -> (Broker, Consumer) {
    let busway = Broker::start_with(configure).await;
    busway.create_deployed_event(&blob_event_type()).await;
    let consumer = Consumer::start().await;
    busway
        .subscribe_deployed(&http_subscription(1, "u2", &consumer.url("/hook")))
        .await;
    (busway, consumer)
}

/// Posts the envelope's JSON text as it is, so the body is exactly its length.
async fn publish_text(busway: &Broker, envelope: &Value) -> busway_tests::Reply {
    busway
        .send(
            busway
                .http
                .post(busway.broker_url("/scanned_parcel/1"))
                .header("content-type", "application/json")
                .body(envelope.to_string()),
        )
        .await
}

/// The portal's answer for a claim-check link to the platform admin: status, format header, body.
async fn fetch(busway: &Broker, key: &str) -> (u16, Option<String>, Vec<u8>) {
    fetch_as(busway, key, Some(&busway.admin_key)).await
}

async fn fetch_as(
    busway: &Broker,
    key: &str,
    api_key: Option<&str>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut request = busway.http.get(busway.portal_url(&format!("/{key}")));
    if let Some(api_key) = api_key {
        request = request.bearer_auth(api_key);
    }
    let response = request.send().await.expect("the portal answers");
    let status = response.status().as_u16();
    let format = response
        .headers()
        .get(FORMAT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.expect("a body").to_vec();
    (status, format, body)
}

/// The files of claim checks and their metadata in the data dir.
fn claim_check_files(busway: &Broker) -> Vec<String> {
    busway
        .bucket_files()
        .into_iter()
        .filter(|f| f.contains("claim-checks/"))
        .collect()
}

fn delivered_link(event: &Value) -> claim_check::Link {
    claim_check::link(event)
        .unwrap_or_else(|| panic!("a claim-checked event: {}", event["detail"]["metadata"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_600_kb_event_is_delivered_whole_and_a_3_mb_one_as_a_claim_check_whose_link_returns_its_data()
 {
    let (busway, consumer) = with_subscriber(|_| {}).await;
    let medium = blob_envelope(600_000, Some("medium"), 'm');
    let large = blob_envelope(MAX_EVENT_BYTES, Some("large"), 'l');
    publish_text(&busway, &medium).await.expect(200);
    publish_text(&busway, &large).await.expect(200);

    let delivered = consumer.wait_for_deliveries(2, DELIVERY_TIMEOUT).await;
    let event = |id: &str| {
        delivered
            .iter()
            .map(|r| r.json())
            .find(|e| e["detail"]["metadata"]["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} was delivered"))
    };
    let whole = event("medium");
    assert_eq!(whole["detail"]["data"], medium["data"]);
    assert_eq!(whole["detail"]["metadata"].get("claim_check"), None);

    let linked = event("large");
    assert_eq!(linked["detail"]["metadata"]["claim_check"], true);
    assert_eq!(
        linked["detail"]["metadata"]["event_attributes"],
        large["metadata"]["event_attributes"]
    );
    let link = delivered_link(&linked);
    assert_eq!(link.bucket, "local-event-schemas-backup-bucket");
    assert!(
        link.key.starts_with("claim-checks/scanned_parcel.1/"),
        "{}",
        link.key
    );
    let (status, format, body) = fetch(&busway, &link.key).await;
    assert_eq!(status, 200);
    assert_eq!(format.as_deref(), Some(FORMAT_VERSION));
    assert!(
        body == large["data"].to_string().into_bytes(),
        "the link returns exactly the data sent"
    );
    assert!(busway.object_path(BACKUP_BUCKET, &link.key).exists());

    let mut metadata = linked["detail"]["metadata"].clone();
    metadata.as_object_mut().map(|m| m.remove("claim_check"));
    let restored = claim_check::restore(linked, format.as_deref(), &body).expect("it restores");
    assert_eq!(
        restored["detail"],
        json!({"metadata": metadata, "data": large["data"]}),
        "the event as it would have been delivered whole"
    );

    // Teams that may subscribe read it (every team here: no readers are set); no key is 401 and
    // a producer key 403, as on AWS only consumers' roles get the reader policy.
    let reader = busway.create_key("billing", "consumer", None).await;
    assert_eq!(fetch_as(&busway, &link.key, Some(&reader)).await.2, body);
    assert_eq!(fetch_as(&busway, &link.key, None).await.0, 401);
    let producer = busway.producer_key("scanned_parcel").await;
    assert_eq!(fetch_as(&busway, &link.key, Some(&producer)).await.0, 403);

    for not_a_claim_check in [
        "claim-checks/scanned_parcel.1/nope.json".to_string(),
        format!("{}.json", link.key),
        "scanned_parcel/1/schema.json".to_string(),
    ] {
        assert_eq!(
            fetch(&busway, &not_a_claim_check).await.0,
            404,
            "{not_a_claim_check}"
        );
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_300_kb_event_is_refused_with_400_before_any_object_is_written() {
    // With EventBridge's older 256 KB entry limit, a valid 300 KB event is claim-checked.
    let (busway, consumer) =
        with_subscriber(|config| config.max_entry_bytes = LEGACY_MAX_ENTRY_BYTES).await;
    let mut invalid = blob_envelope(300_000, None, 'i');
    invalid["data"]["page"] = json!(1);
    let reply = publish_text(&busway, &invalid).await;
    let fields = reply.expect_error(400, "validation_failed");
    assert!(!fields.is_empty(), "{}", reply.body);
    assert_eq!(claim_check_files(&busway), Vec::<String>::new());
    assert_eq!(busway.logged_events(), Vec::new());

    let valid = blob_envelope(300_000, None, 'v');
    publish_text(&busway, &valid).await.expect(200);
    let delivered = consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    let link = delivered_link(&delivered[0].json());
    let (status, _, body) = fetch(&busway, &link.key).await;
    assert_eq!(status, 200);
    assert!(body == valid["data"].to_string().into_bytes());
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_above_the_body_limit_is_413_naming_the_limit() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&blob_event_type()).await;
    let reply = publish_text(&busway, &blob_envelope(MAX_EVENT_BYTES + 1, None, 'x')).await;
    reply.expect_error(413, "payload_too_large");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&MAX_EVENT_BYTES.to_string()), "{message}");
    assert_eq!(busway.logged_events(), Vec::new());
    assert_eq!(claim_check_files(&busway), Vec::<String>::new());
    busway.stop().await;

    // `busway up --max-event-bytes 100000`
    let busway = Broker::start_with(|config| config.max_event_bytes = 100_000).await;
    busway.create_deployed_event(&blob_event_type()).await;
    publish_text(&busway, &blob_envelope(100_000, None, 'x'))
        .await
        .expect(200);
    let reply = publish_text(&busway, &blob_envelope(100_001, None, 'x')).await;
    reply.expect_error(413, "payload_too_large");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("100000"), "{message}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_id_writes_no_second_object_and_the_first_link_keeps_its_data() {
    let (busway, consumer) = with_subscriber(|_| {}).await;
    let first = blob_envelope(2_000_000, Some("reused"), 'a');
    let second = blob_envelope(2_000_000, Some("reused"), 'b');
    assert_eq!(
        publish_text(&busway, &first).await.expect(200)["duplicate"],
        false
    );
    // A producer's retries, the last with other data: duplicates, whose data is not kept.
    for repeat in [&first, &first, &second] {
        assert_eq!(
            publish_text(&busway, repeat).await.expect(200)["duplicate"],
            true
        );
    }

    let delivered = consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    consumer
        .assert_no_more_than(1, Duration::from_millis(300))
        .await;
    let link = delivered_link(&delivered[0].json());
    let (_, _, body) = fetch(&busway, &link.key).await;
    assert!(
        body == first["data"].to_string().into_bytes(),
        "the delivered link still returns the first event's data"
    );
    let objects: Vec<String> = claim_check_files(&busway)
        .into_iter()
        .filter(|f| !f.starts_with(".metadata/"))
        .collect();
    assert_eq!(objects.len(), 1, "one object per stored event: {objects:?}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_check_objects_expire_with_the_local_retention() {
    // An object goes once past its retention and once no event kept links to it: here the log
    // prunes the delivered event within a second too.
    let (busway, consumer) = with_subscriber(|config| {
        config.claim_check_retention = Duration::from_secs(1);
        config.claim_check_sweep_interval = Duration::from_millis(100);
        config.retention.events = Duration::from_secs(1);
        config.retention.every = Duration::from_millis(100);
    })
    .await;
    publish_text(&busway, &blob_envelope(1_500_000, None, 'e'))
        .await
        .expect(200);
    let delivered = consumer.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    let link = delivered_link(&delivered[0].json());
    let started = Instant::now();
    while fetch(&busway, &link.key).await.0 != 404 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the claim check did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!busway.object_path(BACKUP_BUCKET, &link.key).exists());
    let started = Instant::now();
    while !claim_check_files(&busway).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "left behind: {:?}",
            claim_check_files(&busway)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    busway.stop().await;
}
