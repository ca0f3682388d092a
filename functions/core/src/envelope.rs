//! The envelope a producer sends and the event the bus carries.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{detail_type, source_of};
use crate::{Application, EventTypeName, Timestamp, Version};

/// One event on the bus, with EventBridge's fields. `detail` is the enriched envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    /// EventBridge's own event id.
    pub id: String,
    /// `metadata.event_id`: the producer's idempotency key, or one the broker made.
    pub event_id: String,
    pub source: String,
    pub detail_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: Timestamp,
    pub detail: Value,
}

impl BusEvent {
    /// The event JSON EventBridge delivers to a target, fields in AWS's order.
    pub fn to_eventbridge_json(&self, account: &str, region: &str) -> String {
        eventbridge_json(
            &self.id,
            &self.detail_type,
            &self.source,
            account,
            &eventbridge_time(self.time),
            region,
            &json_text(&self.detail),
        )
    }
}

/// `value` as compact JSON, written by serde_json's own writer (`Display` goes through `fmt`).
pub fn json_text(value: &(impl serde::Serialize + ?Sized)) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// EventBridge's `time`: RFC 3339 in UTC, whole seconds.
pub fn eventbridge_time(time: Timestamp) -> String {
    time.replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Assembles the delivered event from stored parts without re-parsing `detail`, in the field
/// order AWS uses (`version, id, detail-type, source, account, time, region, resources, detail`).
pub fn eventbridge_json(
    id: &str,
    detail_type: &str,
    source: &str,
    account: &str,
    time: &str,
    region: &str,
    detail: &str,
) -> String {
    format!(
        r#"{{"version":"0","id":{},"detail-type":{},"source":{},"account":{},"time":{},"region":{},"resources":[],"detail":{}}}"#,
        json_text(id),
        json_text(detail_type),
        json_text(source),
        json_text(account),
        json_text(time),
        json_text(region),
        detail
    )
}

/// Adds the broker's fields to a validated envelope and wraps it as a bus event. The caller has
/// validated `envelope` against the version's schema, so `metadata` is an object.
pub fn enrich(
    mut envelope: Value,
    application: &Application,
    event_type: &EventTypeName,
    version: Version,
    received_at: Timestamp,
) -> BusEvent {
    let received = received_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let metadata = envelope
        .as_object_mut()
        .map(|root| {
            root.entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()))
        })
        .and_then(Value::as_object_mut);
    let mut event_id = String::new();
    if let Some(metadata) = metadata {
        event_id = match metadata.get("event_id").and_then(Value::as_str) {
            Some(given) => given.to_string(),
            // Time-ordered, so a log's index of event ids grows at its end instead of
            // touching a random page of it per event.
            None => uuid::Uuid::now_v7().to_string(),
        };
        metadata.insert("event_id".into(), Value::String(event_id.clone()));
        metadata.insert("event_type".into(), Value::String(event_type.to_string()));
        metadata.insert("version".into(), Value::from(version.get()));
        metadata.insert("application".into(), Value::String(application.to_string()));
        metadata.insert("received_at".into(), Value::String(received));
        // Only the bus sets it, on an event whose data it stored aside: a producer's would make
        // consumers fetch an object of the producer's choosing as the event's data.
        metadata.remove("claim_check");
    }
    BusEvent {
        id: uuid::Uuid::new_v4().to_string(),
        event_id,
        source: source_of(application),
        detail_type: detail_type(event_type, version),
        time: received_at,
        detail: envelope,
    }
}

/// Sets `metadata.request_id` of an enriched envelope: the id of the request that published it,
/// which the broker's and each delivery attempt's log lines name too.
pub fn set_request_id(detail: &mut Value, request_id: &str) {
    if let Some(metadata) = detail.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("request_id".into(), Value::String(request_id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enrichment_sets_the_brokers_fields_and_keeps_a_given_event_id() {
        let app: Application = "demo".parse().expect("app");
        let et: EventTypeName = "scanned_parcel".parse().expect("et");
        let body = json!({"metadata": {"event_attributes": {"source": "evil.source", "target": "u2"},
                          "event_id": "abc", "application": "spoofed"}, "data": {"x": 1}});
        let event = enrich(body, &app, &et, Version::FIRST, crate::now());
        assert_eq!(event.source, "busway.demo");
        assert_eq!(event.detail_type, "scanned_parcel.1");
        assert_eq!(event.event_id, "abc");
        assert_eq!(event.detail["metadata"]["application"], "demo");
        assert_eq!(event.detail["metadata"]["version"], 1);
        assert_eq!(event.detail["metadata"]["event_type"], "scanned_parcel");
        assert_eq!(event.detail["data"], json!({"x": 1}));

        let forged = enrich(
            json!({"metadata": {"claim_check": true}, "data": {"claim_check": {"bucket": "b", "key": "k"}}}),
            &app,
            &et,
            Version::FIRST,
            crate::now(),
        );
        assert_eq!(forged.detail["metadata"].get("claim_check"), None);
        assert!(crate::claim_check::link(&json!({"detail": forged.detail})).is_none());

        let fresh = enrich(
            json!({"metadata": {}, "data": {}}),
            &app,
            &et,
            Version::FIRST,
            crate::now(),
        );
        assert!(uuid::Uuid::parse_str(&fresh.event_id).is_ok());
        let text = fresh.to_eventbridge_json("000000000000", "local");
        assert!(text.starts_with(r#"{"version":"0","id":""#), "{text}");
        let wire: Value = serde_json::from_str(&text).expect("delivered JSON parses");
        assert_eq!(wire["detail-type"], "scanned_parcel.1");
        assert_eq!(wire["detail"], fresh.detail);
        assert_eq!(wire["resources"], json!([]));
        assert!(
            wire["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
            "{}",
            wire["time"]
        );
    }
}
