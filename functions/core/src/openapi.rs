//! The JSON Schemas of the portal's request bodies, for its OpenAPI document: each states what
//! the request's `from_json` accepts, with the limits taken from the constants it checks.

use serde_json::{Value, json};
use utoipa::openapi::{RefOr, Schema};

use crate::auth::NewKey;
use crate::portal::{CreateEvent, MAX_DESCRIPTION, NewVersion, Subscribe};
use crate::subscription::{DeliverySettings, RetryPolicy};
use crate::targets::{MAX_ENTRIES, TeamTargets};

/// `application`, `event_type`, `target_unit` and team names (`crate::names`).
pub const NAME_PATTERN: &str = "^[a-z][a-z0-9_]{1,62}$";

fn name() -> Value {
    json!({"type": "string", "pattern": NAME_PATTERN})
}

/// Optional lists of names, where `null` is the same as absent.
fn names() -> Value {
    json!({"type": ["array", "null"], "items": name()})
}

fn description() -> Value {
    json!({"type": "string", "maxLength": MAX_DESCRIPTION})
}

/// A producer's `data` schema: a JSON Schema draft 4 object, checked against draft 4's
/// meta-schema and compiled.
fn data_schema() -> Value {
    json!({
        "type": "object",
        "description": "the JSON Schema (draft 4) of the events' `data`",
    })
}

/// utoipa's model of a schema object; the tests check that each schema below round-trips.
fn schema(value: Value) -> RefOr<Schema> {
    RefOr::T(serde_json::from_value(value).unwrap_or_default())
}

fn create_event() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["application", "event_type", "description", "connection_type", "data"],
        "properties": {
            "application": name(),
            "event_type": name(),
            "description": description(),
            "connection_type": {"type": "string", "enum": ["HTTPS", "SQS"]},
            "data": data_schema(),
            "writers": names(),
            "readers": names(),
        },
    })
}

impl utoipa::PartialSchema for CreateEvent {
    fn schema() -> RefOr<Schema> {
        schema(create_event())
    }
}
impl utoipa::ToSchema for CreateEvent {}

fn new_version() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["data"],
        "properties": {"data": data_schema(), "description": description()},
    })
}

impl utoipa::PartialSchema for NewVersion {
    fn schema() -> RefOr<Schema> {
        schema(new_version())
    }
}
impl utoipa::ToSchema for NewVersion {}

fn subscribe() -> Value {
    let (attempts, age) = (RetryPolicy::ATTEMPTS, RetryPolicy::AGE_SECONDS);
    let (in_flight, rate) = (DeliverySettings::MAX_IN_FLIGHT, DeliverySettings::RATE);
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["event_type", "version", "target_unit", "connection_type", "connection_string"],
        "properties": {
            "event_type": name(),
            "version": {"oneOf": [
                {"type": "integer", "minimum": 1, "maximum": u32::MAX},
                {"type": "string", "pattern": "^[1-9][0-9]{0,8}$"},
            ]},
            "target_unit": name(),
            "connection_type": {"type": "string", "enum": ["HTTPS", "LAMBDA", "SQS"]},
            "connection_string": {
                "type": "string",
                "description": "HTTPS: the target's https:// URL (http:// on loopback where allowed); LAMBDA and SQS: the target's ARN",
            },
            "retry_policy": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "maximum_retry_attempts": {"type": "integer", "minimum": attempts.start(), "maximum": attempts.end()},
                    "maximum_event_age_seconds": {"type": "integer", "minimum": age.start(), "maximum": age.end()},
                },
            },
            "delivery": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "max_in_flight": {"type": ["integer", "null"], "minimum": in_flight.start(), "maximum": in_flight.end()},
                    "invocation_rate_limit_per_second": {"type": ["integer", "null"], "minimum": rate.start(), "maximum": rate.end()},
                },
            },
        },
    })
}

impl utoipa::PartialSchema for Subscribe {
    fn schema() -> RefOr<Schema> {
        schema(subscribe())
    }
}
impl utoipa::ToSchema for Subscribe {}

fn new_key() -> Value {
    let rate_limit = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["per_second", "burst"],
        "properties": {
            "per_second": {"type": "integer", "minimum": 1, "maximum": u32::MAX},
            "burst": {"type": "integer", "minimum": 1, "maximum": u32::MAX},
        },
    });
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["team", "role"],
        "properties": {
            "team": name(),
            "role": {"type": "string", "enum": ["platform-admin", "owner", "producer", "consumer"]},
            "application": name(),
            "rate_limit": rate_limit,
        },
        "description": "a producer key names its application and may have a rate limit; no other key has either",
    })
}

impl utoipa::PartialSchema for NewKey {
    fn schema() -> RefOr<Schema> {
        schema(new_key())
    }
}
impl utoipa::ToSchema for NewKey {}

fn team_targets() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["accounts"],
        "properties": {
            "accounts": {
                "type": "array", "minItems": 1, "maxItems": MAX_ENTRIES,
                "items": {"type": "string", "pattern": "^[0-9]{12}$"},
            },
            "name_prefixes": {
                "type": ["array", "null"], "maxItems": MAX_ENTRIES,
                "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            },
        },
        "description": "the accounts (and, when given, the name prefixes) of the team's LAMBDA and SQS targets",
    })
}

impl utoipa::PartialSchema for TeamTargets {
    fn schema() -> RefOr<Schema> {
        schema(team_targets())
    }
}
impl utoipa::ToSchema for TeamTargets {}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    fn as_written(schema: RefOr<Schema>, written: Value) {
        let kept = serde_json::to_value(schema).expect("a schema serializes");
        assert_eq!(kept, written, "utoipa's model dropped or changed a keyword");
    }

    #[test]
    fn every_request_schema_is_served_as_written() {
        as_written(CreateEvent::schema(), create_event());
        as_written(NewVersion::schema(), new_version());
        as_written(Subscribe::schema(), subscribe());
        as_written(NewKey::schema(), new_key());
        as_written(TeamTargets::schema(), team_targets());
    }
}
