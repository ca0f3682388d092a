//! The Custom Event Bus adapter (`eventbridgev2`) against the real SDK client with mocked
//! answers: batches of 100, the event id as each entry's deduplication id, failed entries,
//! throttling, and a claim-checked entry. No emulator serves this API, so these mocks and the
//! client's own serialization are what verifies the adapter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_eventbridgev2::Client;
use aws_sdk_eventbridgev2::config::http::HttpResponse;
use aws_sdk_eventbridgev2::operation::put_events::{PutEventsError, PutEventsOutput};
use aws_sdk_eventbridgev2::types::{PutEventsRequestEntry, PutEventsResultEntry};
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use busway_aws::custom_bus::CustomBus;
use busway_aws::eventbridge::Backoff;
use busway_core::claim_check::{ClaimChecks, DEFAULT_MAX_ENTRY_BYTES, entry_size};
use busway_core::envelope::BusEvent;
use busway_core::ports::{Accepted, Bucket, Bus, ObjectStore};
use busway_tests::bus_event;
use busway_tests::memory::MemoryObjects;
use serde_json::{Value, json};

const BUS_ARN: &str = "arn:aws:events:eu-west-1:111111111111:event-busv2/test-busway/b-0123";
const BACKUP_BUCKET: &str = "test-event-schemas-backup-bucket-111111111111";
const ATTEMPTS: u32 = 4;

/// Each call's bus ARN and entries.
type Requests = Arc<Mutex<Vec<(String, Vec<PutEventsRequestEntry>)>>>;
type Answer = MockResponse<PutEventsOutput, PutEventsError>;

/// A bus whose PutEvents calls are answered by `answer(call number from 0, entries)`.
fn bus<F>(answer: F) -> (CustomBus, Requests, Arc<MemoryObjects>)
where
    F: Fn(usize, &[PutEventsRequestEntry]) -> Answer + Send + Sync + 'static,
{
    let requests = Requests::default();
    let log = requests.clone();
    let rule = mock!(Client::put_events).then_compute_response(move |input| {
        let mut log = log.lock().expect("requests lock");
        let bus = input.event_bus_arn().unwrap_or_default().to_string();
        log.push((bus, input.entries().to_vec()));
        answer(log.len() - 1, &log[log.len() - 1].1)
    });
    let client = mock_client!(aws_sdk_eventbridgev2, RuleMode::MatchAny, &[&rule]);
    let objects = Arc::new(MemoryObjects::default());
    let bus = CustomBus::new(
        &client,
        BUS_ARN,
        ClaimChecks {
            objects: objects.clone(),
            bucket_name: BACKUP_BUCKET.into(),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
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

/// An error answer as the bus sends it: Smithy RPC v2 CBOR, a map with the error type in
/// `__type`. Two short text strings, encoded by hand.
fn http_error(status: u16, error_type: &str) -> Answer {
    fn text(out: &mut Vec<u8>, s: &str) {
        let len = u8::try_from(s.len()).expect("a short string");
        if len < 24 {
            out.push(0x60 | len);
        } else {
            out.extend([0x78, len]);
        }
        out.extend(s.as_bytes());
    }
    let mut body = vec![0xa2];
    for s in ["__type", error_type, "message", "mocked"] {
        text(&mut body, s);
    }
    MockResponse::Http(HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(body),
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

fn dedup_ids(entries: &[PutEventsRequestEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            e.system_metadata()
                .and_then(|m| m.deduplication_id())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn requests(log: &Requests) -> Vec<Vec<PutEventsRequestEntry>> {
    log.lock()
        .expect("requests lock")
        .iter()
        .map(|(_, entries)| entries.clone())
        .collect()
}

#[tokio::test]
async fn an_entry_carries_the_source_the_detail_type_the_envelope_and_its_event_id_as_deduplication_id()
 {
    let (bus, log, _) = bus(|_, entries| all_stored(entries));
    let sent = event(7, json!({"parcel": "p-1"}));
    let results = bus.put_events(vec![sent.clone()]).await.expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored)]);
    let (arn, entries) = log.lock().expect("requests lock")[0].clone();
    assert_eq!(arn, BUS_ARN);
    let entry = &entries[0];
    assert_eq!(entry.source(), "busway.parcels");
    assert_eq!(entry.detail_type(), "scanned_parcel.1");
    assert_eq!(detail(entry), sent.detail);
    assert_eq!(
        entry.time().map(|t| t.secs()),
        Some(sent.time.unix_timestamp())
    );
    assert_eq!(dedup_ids(&entries), vec!["e-7"]);
    assert_eq!(
        entry.system_metadata().and_then(|m| m.event_group_id()),
        None,
        "no ordering group: events of one type are not serialized"
    );
}

#[tokio::test]
async fn two_hundred_fifty_events_go_out_as_calls_of_one_hundred_one_hundred_and_fifty_in_order() {
    let (bus, log, _) = bus(|_, entries| all_stored(entries));
    let results = bus.put_events(events(250)).await.expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored); 250]);
    let requests = requests(&log);
    let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let order: Vec<String> = requests.iter().flat_map(|r| dedup_ids(r)).collect();
    let expected: Vec<String> = (0..250).map(|n| format!("e-{n}")).collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn a_partial_failure_resends_only_the_failed_entries_with_the_same_deduplication_ids() {
    let (bus, log, _) = bus(|call, entries| {
        if call == 0 {
            answer(entries, |i| match i {
                1 => Some("InternalFailure"),
                3 => Some("ThrottlingException"),
                4 => Some("MalformedDetail"),
                _ => None,
            })
        } else {
            all_stored(entries)
        }
    });
    let results = bus.put_events(events(5)).await.expect("put");
    assert_eq!(results[..4], vec![Ok(Accepted::Stored); 4]);
    assert_eq!(
        results[4].clone().expect_err("not retryable").code,
        "MalformedDetail"
    );
    let requests = requests(&log);
    assert_eq!(requests.len(), 2);
    assert_eq!(dedup_ids(&requests[1]), vec!["e-1", "e-3"]);
}

#[tokio::test]
async fn an_entry_that_keeps_failing_is_reported_in_its_slot_after_the_budget() {
    let (bus, log, _) = bus(|_, entries| {
        answer(entries, |i| {
            (dedup_ids(&entries[i..=i]) == ["e-2"]).then_some("ThrottlingException")
        })
    });
    let results = bus.put_events(events(4)).await.expect("put");
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
    assert_eq!(
        results[2].clone().expect_err("entry 2 failed").code,
        "ThrottlingException"
    );
    let requests = requests(&log);
    assert_eq!(requests.len(), ATTEMPTS as usize);
    assert!(requests[1..].iter().all(|r| dedup_ids(r) == ["e-2"]));
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
            .all(|r| dedup_ids(r) == ["e-0", "e-1", "e-2"])
    );
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
    }
    assert_eq!(requests(&log).len(), ATTEMPTS as usize);
}

#[tokio::test]
async fn a_rejected_call_is_not_retried() {
    let (bus, log, _) = bus(|_, _| http_error(400, "AccessDeniedException"));
    let error = bus.put_events(events(1)).await.expect_err("nothing stored");
    assert!(
        format!("{error:#}").contains("AccessDeniedException"),
        "{error:#}"
    );
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
        .put_events(events(150))
        .await
        .expect("the first batch is stored");
    assert!(results[..100].iter().all(Result::is_ok));
    for result in &results[100..] {
        assert_eq!(result.clone().expect_err("failed").code, "PutEventsFailed");
    }
}

#[tokio::test]
async fn an_oversized_entry_goes_out_as_a_claim_check_with_its_event_id_as_deduplication_id() {
    let (bus, log, objects) = bus(|_, entries| all_stored(entries));
    let small = event(0, json!({"n": 0}));
    let mut large = event(1, json!({"pad": ""}));
    large.detail["data"]["pad"] = Value::String("x".repeat(DEFAULT_MAX_ENTRY_BYTES));
    let results = bus
        .put_events(vec![small.clone(), large.clone()])
        .await
        .expect("put");
    assert_eq!(results, vec![Ok(Accepted::Stored), Ok(Accepted::Stored)]);
    let requests = requests(&log);
    assert_eq!(requests.len(), 1, "both entries go out in one call");
    assert_eq!(dedup_ids(&requests[0]), vec!["e-0", "e-1"]);
    assert_eq!(detail(&requests[0][0]), small.detail);
    let link = detail(&requests[0][1]);
    assert_eq!(link["metadata"]["claim_check"], true);
    let key = link["data"]["claim_check"]["key"]
        .as_str()
        .expect("a key in the link");
    let stored = objects
        .get_object(Bucket::SchemaBackup, key)
        .await
        .expect("get")
        .expect("the data is stored");
    assert_eq!(stored, large.detail["data"].to_string().into_bytes());
    let sent = &requests[0][1];
    assert!(
        entry_size(
            sent.source(),
            sent.detail_type(),
            sent.detail().unwrap_or_default()
        ) <= DEFAULT_MAX_ENTRY_BYTES
    );
}
