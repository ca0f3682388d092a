//! CloudWatch metrics from the Lambdas as Embedded Metric Format lines: one JSON document per
//! line on stdout, which Lambda sends to CloudWatch Logs and CloudWatch turns into metrics, with
//! no API call on the request's path. The counters are those the local host serves at
//! `/metrics`; the alarms and the dashboard of infra/ read them.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The namespace the functions write to (infra sets `busway/{env}`).
pub const NAMESPACE: &str = "BUSWAY_METRICS_NAMESPACE";
const DEFAULT_NAMESPACE: &str = "busway";

/// Metric names, shared with infra's alarms and dashboard.
pub const EVENTS_ACCEPTED: &str = "EventsAccepted";
pub const EVENTS_REJECTED: &str = "EventsRejected";
pub const INGEST_LATENCY: &str = "IngestLatency";
pub const PUT_EVENTS_THROTTLED: &str = "PutEventsThrottled";
pub const PUT_EVENTS_FAILED_ENTRIES: &str = "PutEventsFailedEntries";

/// CloudWatch units this module writes.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF document: each of `metrics` (name, unit, value) under `dimensions` (name, value),
/// recorded both per those dimensions and as one total without them; `properties` are kept
/// in the log line for searching, not as metrics.
pub fn document(
    namespace: &str,
    timestamp_ms: i64,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, Unit, f64)],
    properties: &[(&str, Value)],
) -> Value {
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let sets = if names.is_empty() {
        vec![names]
    } else {
        vec![names, Vec::new()]
    };
    let mut doc = Map::new();
    for (name, value) in properties {
        doc.insert((*name).into(), value.clone());
    }
    for (name, value) in dimensions {
        doc.insert((*name).into(), json!(value));
    }
    for (name, _, value) in metrics {
        doc.insert((*name).into(), json!(value));
    }
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": sets,
                "Metrics": metrics
                    .iter()
                    .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    Value::Object(doc)
}

fn namespace() -> &'static str {
    static NS: OnceLock<String> = OnceLock::new();
    NS.get_or_init(|| std::env::var(NAMESPACE).unwrap_or_else(|_| DEFAULT_NAMESPACE.into()))
}

/// Writes one document, stamped now, on its own line of stdout.
pub fn emit(
    dimensions: &[(&str, &str)],
    metrics: &[(&str, Unit, f64)],
    properties: &[(&str, Value)],
) {
    let now = busway_core::now();
    let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    println!(
        "{}",
        document(namespace(), ms, dimensions, metrics, properties)
    );
}

/// A publish to an event version (or to `busway_injector::observe::UNKNOWN`), accepted or
/// not, handled in `elapsed`; `properties` say how it came (the HTTP status, the SQS queue).
pub fn published(
    (event_type, version): (&str, &str),
    accepted: bool,
    elapsed: Duration,
    properties: &[(&str, Value)],
) {
    emit(
        &[("EventType", event_type), ("Version", version)],
        &[
            (EVENTS_ACCEPTED, Unit::Count, f64::from(u8::from(accepted))),
            (EVENTS_REJECTED, Unit::Count, f64::from(u8::from(!accepted))),
            (
                INGEST_LATENCY,
                Unit::Milliseconds,
                elapsed.as_secs_f64() * 1000.0,
            ),
        ],
        properties,
    );
}

/// A PutEvents call the bus throttled (retried or not).
pub fn put_events_throttled() {
    emit(&[], &[(PUT_EVENTS_THROTTLED, Unit::Count, 1.0)], &[]);
}

/// Entries a PutEvents call answered with an error code.
pub fn put_events_failed_entries(count: usize) {
    emit(
        &[],
        &[(PUT_EVENTS_FAILED_ENTRIES, Unit::Count, count as f64)],
        &[],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's rules for a document's `_aws` member, checked as the spec states
    /// them rather than against a copy of the output.
    fn assert_valid_emf(doc: &Value) {
        let root = doc.as_object().expect("the document is a JSON object");
        let aws = root["_aws"].as_object().expect("_aws is an object");
        assert!(
            aws["Timestamp"].as_i64().is_some_and(|t| t > 0),
            "Timestamp: epoch ms"
        );
        let directives = aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics is an array");
        assert!(!directives.is_empty());
        for directive in directives {
            let namespace = directive["Namespace"]
                .as_str()
                .expect("Namespace is a string");
            assert!((1..=255).contains(&namespace.len()), "{namespace}");
            let sets = directive["Dimensions"]
                .as_array()
                .expect("Dimensions: an array");
            for set in sets {
                let set = set.as_array().expect("each dimension set is an array");
                assert!(set.len() <= 30, "at most 30 dimensions in a set");
                for name in set {
                    let name = name.as_str().expect("dimension names are strings");
                    assert!(
                        root.get(name).is_some_and(Value::is_string),
                        "dimension {name} is a string member of the root"
                    );
                }
            }
            let metrics = directive["Metrics"].as_array().expect("Metrics: an array");
            assert!(metrics.len() <= 100, "at most 100 metrics");
            for metric in metrics {
                let name = metric["Name"].as_str().expect("Name is a string");
                assert!((1..=255).contains(&name.len()));
                let unit = metric["Unit"].as_str().expect("a Unit");
                assert!(["Count", "Milliseconds"].contains(&unit), "{unit}");
                assert!(
                    root.get(name).is_some_and(Value::is_number),
                    "metric {name} has a number value in the root"
                );
            }
        }
    }

    #[test]
    fn a_publish_is_an_accepted_or_rejected_count_and_a_latency_per_event_version() {
        let doc = document(
            "busway/test",
            1_700_000_000_000,
            &[("EventType", "scanned_parcel"), ("Version", "1")],
            &[
                (EVENTS_ACCEPTED, Unit::Count, 0.0),
                (EVENTS_REJECTED, Unit::Count, 1.0),
                (INGEST_LATENCY, Unit::Milliseconds, 2.5),
            ],
            &[("Status", json!(400))],
        );
        assert_valid_emf(&doc);
        assert_eq!(doc["EventType"], "scanned_parcel");
        assert_eq!(doc["EventsRejected"], 1.0);
        assert_eq!(doc["Status"], 400);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "busway/test");
        assert_eq!(
            directive["Dimensions"],
            json!([["EventType", "Version"], []]),
            "per event version, and a total across them"
        );
    }

    #[test]
    fn a_document_without_dimensions_has_one_empty_dimension_set() {
        let doc = document(
            "busway",
            1,
            &[],
            &[(PUT_EVENTS_THROTTLED, Unit::Count, 1.0)],
            &[],
        );
        assert_valid_emf(&doc);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
    }
}
