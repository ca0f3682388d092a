//! The EventBridge bus adapter against the real SDK client with mocked answers: batching, failed
//! entries, throttling, and claim checks of oversized entries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::http::HttpResponse;
use aws_sdk_eventbridge::operation::put_events::{PutEventsError, PutEventsOutput};
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, PutEventsResultEntry};
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use busway_aws::eventbridge::{Backoff, EventBridgeBus};
use busway_core::claim_check::{
    self, ClaimChecks, DEFAULT_MAX_ENTRY_BYTES, FORMAT_METADATA_KEY, FORMAT_VERSION,
    LEGACY_MAX_ENTRY_BYTES, entry_size,
};
use busway_core::envelope::BusEvent;
use busway_core::ports::{Accepted, Bucket, Bus, ObjectStore};
use busway_tests::bus_event;
use busway_tests::memory::MemoryObjects;
use serde_json::{Value, json};

const BUS: &str = "test.custom.events.bus";
const BACKUP_BUCKET: &str = "test-event-schemas-backup-bucket-111111111111";
const ATTEMPTS: u32 = 4;

type Requests = Arc<Mutex<Vec<Vec<PutEventsRequestEntry>>>>;
type Answer = MockResponse<PutEventsOutput, PutEventsError>;

/// A bus whose PutEvents calls are answered by `answer(call number from 0, entries)`; every
/// request's entries are recorded.
fn bus<F>(answer: F) -> (EventBridgeBus, Requests, Arc<MemoryObjects>)
where
    F: Fn(usize, &[PutEventsRequestEntry]) -> Answer + Send + Sync + 'static,
{
    bus_with_limit(DEFAULT_MAX_ENTRY_BYTES, answer)
}

/// `bus` with the entry limit `max_entry_bytes`.
fn bus_with_limit<F>(
    max_entry_bytes: usize,
    answer: F,
) -> (EventBridgeBus, Requests, Arc<MemoryObjects>)
where
    F: Fn(usize, &[PutEventsRequestEntry]) -> Answer + Send + Sync + 'static,
{
    let requests = Requests::default();
    let log = requests.clone();
    let rule = mock!(Client::put_events).then_compute_response(move |input| {
        let mut log = log.lock().expect("requests lock");
        log.push(input.entries().to_vec());
        answer(
            log.len() - 1,
            log.last().map(Vec::as_slice).unwrap_or_default(),
        )
    });
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, &[&rule]);
    let objects = Arc::new(MemoryObjects::default());
    let bus = EventBridgeBus::new(
        &client,
        BUS,
        ClaimChecks {
            objects: objects.clone(),
            bucket_name: BACKUP_BUCKET.into(),
            max_entry_bytes,
        },
    )
    .with_backoff(Backoff {
        attempts: ATTEMPTS,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    });
    (bus, requests, objects)
}

/// Every entry stored, except those `fail` names with an error code.
fn answer(
    entries: &[PutEventsRequestEntry],
    fail: impl Fn(usize) -> Option<&'static str>,
) -> Answer {
    let results: Vec<_> = (0..entries.len())
        .map(|i| match fail(i) {
            Some(code) => PutEventsResultEntry::builder()
                .error_code(code)
                .error_message(format!("{code} for entry {i}"))
                .build(),
            None => PutEventsResultEntry::builder()
                .event_id(format!("eb-{i}"))
                .build(),
        })
        .collect();
    let failed = results.iter().filter(|r| r.error_code().is_some()).count();
    MockResponse::Output(
        PutEventsOutput::builder()
            .failed_entry_count(i32::try_from(failed).expect("a small count"))
            .set_entries(Some(results))
            .build(),
    )
}

fn all_stored(entries: &[PutEventsRequestEntry]) -> Answer {
    answer(entries, |_| None)
}

/// An error answer as EventBridge sends it (awsJson 1.1: the type in `__type`).
fn http_error(status: u16, error_type: &str) -> Answer {
    MockResponse::Http(HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(json!({"__type": error_type, "message": "mocked"}).to_string()),
    ))
}

fn event(n: usize, data: Value) -> BusEvent {
    bus_event(
        "parcels",
        1,
        json!({
            "metadata": {"event_attributes": {"source": "scanner", "target": "u2"}, "event_id": format!("e-{n}")},
            "data": data,
        }),
    )
}

fn events(count: usize) -> Vec<BusEvent> {
    (0..count).map(|n| event(n, json!({"n": n}))).collect()
}

fn detail(entry: &PutEventsRequestEntry) -> Value {
    serde_json::from_str(entry.detail().expect("a detail")).expect("detail is JSON")
}

fn event_ids(entries: &[PutEventsRequestEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            detail(e)["metadata"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn requests(log: &Requests) -> Vec<Vec<PutEventsRequestEntry>> {
    log.lock().expect("requests lock").clone()
}

#[tokio::test]
async fn entries_carry_the_registered_source_the_detail_type_and_the_enriched_envelope() {
    let (bus, log, _) = bus(|_, entries| all_stored(entries));
    let sent = event(7, json!({"parcel": "p-1"}));
    let results = bus.put_events(vec![sent.clone()]).await.expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored)]);
    let requests = requests(&log);
    let entry = &requests[0][0];
    assert_eq!(entry.source(), Some("busway.parcels"));
    assert_eq!(entry.detail_type(), Some("scanned_parcel.1"));
    assert_eq!(entry.event_bus_name(), Some(BUS));
    assert_eq!(detail(entry), sent.detail);
    assert_eq!(
        entry.time().map(|t| t.secs()),
        Some(sent.time.unix_timestamp())
    );
}

#[tokio::test]
async fn twenty_five_events_go_out_as_three_calls_of_ten_ten_and_five_in_order() {
    let (bus, log, _) = bus(|_, entries| all_stored(entries));
    let results = bus.put_events(events(25)).await.expect("put");
    assert_eq!(results.len(), 25);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let requests = requests(&log);
    let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    let order: Vec<String> = requests.iter().flat_map(|r| event_ids(r)).collect();
    let expected: Vec<String> = (0..25).map(|n| format!("e-{n}")).collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn a_partial_failure_resends_only_the_failed_entries() {
    let (bus, log, _) = bus(|call, entries| {
        if call == 0 {
            answer(entries, |i| match i {
                1 => Some("InternalFailure"),
                3 => Some("ThrottlingException"),
                _ => None,
            })
        } else {
            all_stored(entries)
        }
    });
    let results = bus.put_events(events(5)).await.expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored); 5]);
    let requests = requests(&log);
    assert_eq!(requests.len(), 2);
    assert_eq!(event_ids(&requests[1]), vec!["e-1", "e-3"]);
}

#[tokio::test]
async fn an_entry_that_keeps_failing_is_reported_in_its_slot() {
    let (bus, log, _) = bus(|_, entries| {
        answer(entries, |i| {
            let id = detail(&entries[i])["metadata"]["event_id"].clone();
            (id == "e-2").then_some("ThrottlingException")
        })
    });
    let results = bus.put_events(events(4)).await.expect("put");
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
    let failure = results[2].clone().expect_err("entry 2 failed");
    assert_eq!(failure.code, "ThrottlingException");
    let requests = requests(&log);
    assert_eq!(
        requests.len(),
        ATTEMPTS as usize,
        "the retry budget is bounded"
    );
    assert!(requests[1..].iter().all(|r| event_ids(r) == vec!["e-2"]));
}

#[tokio::test]
async fn an_entry_failing_with_a_non_retryable_code_is_not_resent() {
    let (bus, log, _) =
        bus(|_, entries| answer(entries, |i| (i == 0).then_some("MalformedDetail")));
    let results = bus.put_events(events(2)).await.expect("put");
    assert_eq!(
        results[0].clone().expect_err("entry 0 failed").code,
        "MalformedDetail"
    );
    assert!(results[1].is_ok());
    assert_eq!(requests(&log).len(), 1);
}

#[tokio::test]
async fn throttling_and_server_errors_on_the_whole_call_are_retried() {
    let (bus, log, _) = bus(|call, entries| match call {
        0 => http_error(400, "ThrottlingException"),
        1 => http_error(500, "InternalException"),
        _ => all_stored(entries),
    });
    let results = bus.put_events(events(3)).await.expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored); 3]);
    let requests = requests(&log);
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| event_ids(r) == vec!["e-0", "e-1", "e-2"])
    );
}

#[tokio::test]
async fn a_whole_call_failure_that_persists_is_an_error_after_the_budget() {
    let (bus, log, _) = bus(|_, _| http_error(500, "InternalException"));
    let error = bus.put_events(events(3)).await.expect_err("nothing stored");
    assert!(
        format!("{error:#}").contains("InternalException"),
        "{error:#}"
    );
    // The SDK's own retries are off, so the adapter's budget is the whole story.
    assert_eq!(requests(&log).len(), ATTEMPTS as usize);
}

#[tokio::test]
async fn throttling_that_persists_fails_each_entry_as_throttled() {
    let (bus, log, _) = bus(|_, _| http_error(400, "ThrottlingException"));
    let results = bus
        .put_events(events(3))
        .await
        .expect("an answer per entry");
    for result in results {
        let failure = result.expect_err("throttled");
        assert_eq!(failure.code, busway_core::ingest::THROTTLED);
        assert!(
            failure.message.contains("ThrottlingException"),
            "{failure:?}"
        );
    }
    assert_eq!(requests(&log).len(), ATTEMPTS as usize);
}

#[tokio::test]
async fn a_rejected_call_is_not_retried() {
    let (bus, log, _) = bus(|_, _| http_error(400, "AccessDeniedException"));
    assert!(bus.put_events(events(1)).await.is_err());
    assert_eq!(requests(&log).len(), 1);
}

#[tokio::test]
async fn once_a_batch_is_stored_a_later_failing_call_fails_its_entries_in_their_slots() {
    let (bus, _, _) = bus(|call, entries| {
        if call == 0 {
            all_stored(entries)
        } else {
            http_error(500, "InternalException")
        }
    });
    let results = bus
        .put_events(events(15))
        .await
        .expect("the first batch is stored");
    assert!(results[..10].iter().all(Result::is_ok));
    for result in &results[10..] {
        assert_eq!(result.clone().expect_err("failed").code, "PutEventsFailed");
    }
}

/// An event whose entry is exactly `size` bytes as EventBridge counts them; the padding is
/// two-byte characters, so counting characters instead of bytes would be caught.
fn event_of_size(n: usize, size: usize) -> BusEvent {
    let probe = event(n, json!({"pad": ""}));
    let base = entry_size(&probe.source, &probe.detail_type, &probe.detail.to_string());
    let missing = size - base;
    let mut pad = "é".repeat(missing / 2);
    if missing % 2 == 1 {
        pad.push('a');
    }
    let mut sized = probe;
    sized.detail["data"]["pad"] = Value::String(pad);
    assert_eq!(
        entry_size(&sized.source, &sized.detail_type, &sized.detail.to_string()),
        size
    );
    sized
}

/// The summed size of a call's entries, as EventBridge counts it against its request limit.
fn request_size(entries: &[PutEventsRequestEntry]) -> usize {
    entries
        .iter()
        .map(|e| {
            entry_size(
                e.source().unwrap_or_default(),
                e.detail_type().unwrap_or_default(),
                e.detail().unwrap_or_default(),
            )
        })
        .sum()
}

#[tokio::test]
async fn ten_entries_of_300_kb_go_out_as_calls_within_the_request_limit() {
    // An SQS producer batch: ten messages, each within the entry limit, 3 MB together.
    let (bus, log, objects) = bus(|_, entries| all_stored(entries));
    let sent: Vec<BusEvent> = (0..10).map(|n| event_of_size(n, 300_000)).collect();
    let results = bus.put_events(sent).await.expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored); 10]);
    let requests = requests(&log);
    let counts: Vec<usize> = requests.iter().map(Vec::len).collect();
    assert_eq!(counts, vec![3, 3, 3, 1]);
    for request in &requests {
        assert!(
            request_size(request) <= DEFAULT_MAX_ENTRY_BYTES,
            "{} bytes in one call",
            request_size(request)
        );
    }
    let order: Vec<String> = requests.iter().flat_map(|r| event_ids(r)).collect();
    let expected: Vec<String> = (0..10).map(|n| format!("e-{n}")).collect();
    assert_eq!(order, expected);
    assert!(objects.is_empty(), "nothing is claim-checked");
}

#[tokio::test]
async fn an_entry_at_the_limit_goes_on_the_bus_whole_under_either_limit() {
    for limit in [DEFAULT_MAX_ENTRY_BYTES, LEGACY_MAX_ENTRY_BYTES] {
        let (bus, log, objects) = bus_with_limit(limit, |_, entries| all_stored(entries));
        let at_limit = event_of_size(0, limit);
        bus.put_events(vec![at_limit.clone()]).await.expect("put");
        assert_eq!(
            detail(&requests(&log)[0][0]),
            at_limit.detail,
            "limit {limit}"
        );
        assert!(objects.is_empty(), "limit {limit}");
    }
}

#[tokio::test]
async fn an_entry_one_byte_above_the_legacy_limit_is_claim_checked_when_that_limit_is_set() {
    let above = event_of_size(0, LEGACY_MAX_ENTRY_BYTES + 1);
    let (bus, log, _) = bus(|_, entries| all_stored(entries));
    bus.put_events(vec![above.clone()]).await.expect("put");
    assert_eq!(
        detail(&requests(&log)[0][0]),
        above.detail,
        "1 MB carries it"
    );
    let (bus, log, _) = bus_with_limit(LEGACY_MAX_ENTRY_BYTES, |_, entries| all_stored(entries));
    bus.put_events(vec![above]).await.expect("put");
    assert_eq!(
        detail(&requests(&log)[0][0])["metadata"]["claim_check"],
        true
    );
}

#[tokio::test]
async fn an_oversized_entry_has_its_data_in_s3_and_the_bus_carries_a_claim_check() {
    let (bus, log, objects) = bus(|_, entries| all_stored(entries));
    let small = event(0, json!({"n": 0}));
    let large = event_of_size(1, DEFAULT_MAX_ENTRY_BYTES + 1);
    let results = bus
        .put_events(vec![small.clone(), large.clone()])
        .await
        .expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored), Ok(Accepted::Stored)]);

    let requests = requests(&log);
    assert_eq!(requests.len(), 1, "both entries go out in one call");
    assert_eq!(detail(&requests[0][0]), small.detail);
    let link = detail(&requests[0][1]);
    let key = link["data"]["claim_check"]["key"]
        .as_str()
        .expect("a key in the link")
        .to_string();
    assert_eq!(
        link["data"],
        json!({"claim_check": {"bucket": BACKUP_BUCKET, "key": key}})
    );
    // sha256("e-1"): the event's id, hashed, then the object's own name.
    assert!(
        key.starts_with(
            "claim-checks/scanned_parcel.1/b94f523196aaacd8bdb9ef0d8cf2e1d8f9b766ab5097f086ff541b7112699b7b/"
        ),
        "{key}"
    );
    assert!(claim_check::is_key(&key), "{key}");
    let stored = objects
        .get_object(Bucket::SchemaBackup, &key)
        .await
        .expect("get")
        .expect("the data is stored");
    assert_eq!(stored, large.detail["data"].to_string().into_bytes());
    let metadata = objects
        .object_metadata(Bucket::SchemaBackup, &key)
        .await
        .expect("metadata")
        .expect("the object exists");
    assert_eq!(
        metadata.get(FORMAT_METADATA_KEY).map(String::as_str),
        Some(FORMAT_VERSION)
    );

    assert_eq!(link["metadata"]["claim_check"], true);
    let mut metadata = link["metadata"].clone();
    metadata
        .as_object_mut()
        .expect("metadata object")
        .remove("claim_check");
    assert_eq!(
        metadata, large.detail["metadata"],
        "rules still match on metadata"
    );
    let sent = &requests[0][1];
    assert!(
        entry_size(
            sent.source().unwrap_or_default(),
            sent.detail_type().unwrap_or_default(),
            sent.detail().unwrap_or_default()
        ) <= DEFAULT_MAX_ENTRY_BYTES
    );
}

#[tokio::test]
async fn an_event_id_put_again_gets_its_own_claim_check_object() {
    let (bus, log, objects) = bus(|_, entries| all_stored(entries));
    let first = event_of_size(7, DEFAULT_MAX_ENTRY_BYTES + 10);
    let mut second = first.clone();
    second.detail["data"]["pad"] = Value::String("b".repeat(DEFAULT_MAX_ENTRY_BYTES));
    bus.put_events(vec![first.clone()]).await.expect("put");
    bus.put_events(vec![second.clone()]).await.expect("put");
    let keys: Vec<String> = requests(&log)
        .iter()
        .map(|r| {
            detail(&r[0])["data"]["claim_check"]["key"]
                .as_str()
                .expect("a key")
                .to_string()
        })
        .collect();
    assert_ne!(keys[0], keys[1]);
    for (key, event) in keys.iter().zip([&first, &second]) {
        let stored = objects
            .get_object(Bucket::SchemaBackup, key)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored, event.detail["data"].to_string().into_bytes());
    }
}

#[tokio::test]
async fn a_claim_check_that_cannot_be_stored_fails_its_entry_and_nothing_links_to_it() {
    let (bus, log, objects) = bus(|_, entries| all_stored(entries));
    objects
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let small = event(0, json!({"n": 0}));
    let large = event_of_size(1, DEFAULT_MAX_ENTRY_BYTES + 1);
    let results = bus
        .put_events(vec![small.clone(), large])
        .await
        .expect("put");
    assert_eq!(results[0], Ok(Accepted::Stored));
    assert_eq!(
        results[1].clone().expect_err("not stored").code,
        "ClaimCheckFailed"
    );
    let requests = requests(&log);
    assert_eq!(requests[0].len(), 1, "only the small entry went out");
    assert_eq!(detail(&requests[0][0]), small.detail);
}

#[tokio::test]
async fn an_event_too_large_even_without_its_data_is_refused_before_anything_is_stored() {
    let (bus, log, objects) =
        bus_with_limit(LEGACY_MAX_ENTRY_BYTES, |_, entries| all_stored(entries));
    let mut huge = event(0, json!({"n": 0}));
    huge.detail["metadata"]["event_attributes"]["source"] =
        Value::String("s".repeat(LEGACY_MAX_ENTRY_BYTES));
    let results = bus.put_events(vec![huge]).await.expect("put");
    assert_eq!(
        results[0].clone().expect_err("refused").code,
        claim_check::ENTRY_TOO_LARGE
    );
    assert!(requests(&log).is_empty());
    assert!(objects.is_empty());
}
