//! Format versions of what busway keeps outside its SQLite files (which carry a version of their
//! own, busway-local's `migrations`): the table's records on AWS (event types, versions,
//! subscriptions, deployments) and the deploy.json documents on both hosts.
//!
//! Each carries `format_version`. Writers write the current format; readers take every earlier
//! one. The first release wrote no `format_version`: a record or document without one is format 1.
//! A field added later gets a serde default that says what an older record meant (as the README's
//! "Format versions" lists), so reading an older format is decoding it. A record of a newer format
//! than the reader knows was written by a newer busway and is refused: an older writer would drop
//! the fields it does not know when it wrote the record back.

use serde_json::{Map, Value};

/// The field that holds the format, in a record's attributes and in a deploy.json.
pub const FORMAT_FIELD: &str = "format_version";

/// The format of the table's records that this release writes. 2 added `execution` and
/// `attempt` to deployment records (format 1: no known execution, the first attempt); 3 added
/// `delivery` to subscriptions (absent before: the defaults); 4 added the owning `team` to event
/// types and subscriptions and `writers`, `readers` to event types (absent before: no owning
/// team, so only platform admins change them; only the owning application writes; every team
/// reads); 5 added `replay_from` to subscriptions (absent before: never replayed on the Custom
/// Event Bus).
pub const RECORD_FORMAT: u32 = 5;

/// The format of deploy.json documents that this release writes; the `maximum` of
/// `format_version` in both schemas of `functions/core/schemas/`. 2: consumer documents carry
/// `delivery` (absent in format 1: the defaults); 3: consumer documents carry `replay_from`
/// (absent before: the subscriber starts at the newest event).
pub const DEPLOY_FORMAT: u32 = 3;

/// What a record or document without `format_version` is: the first release's format.
pub const FIRST_FORMAT: u32 = 1;

/// serde's default of `format_version`.
pub fn first_format() -> u32 {
    FIRST_FORMAT
}

/// A record whose format this release does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} has format_version {found}: it was written by a newer busway, and this one reads formats up to {supported}"
)]
pub struct UnknownFormat {
    pub what: String,
    /// The field as stored.
    pub found: Value,
    pub supported: u32,
}

/// Takes `format_version` out of a stored record's fields and returns the record's format:
/// [`FIRST_FORMAT`] when absent, an error when it is not a format up to `supported`.
pub fn take_format(
    fields: &mut Map<String, Value>,
    supported: u32,
    what: &str,
) -> Result<u32, UnknownFormat> {
    let Some(found) = fields.remove(FORMAT_FIELD) else {
        return Ok(FIRST_FORMAT);
    };
    found
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| (FIRST_FORMAT..=supported).contains(v))
        .ok_or_else(|| UnknownFormat {
            what: what.to_string(),
            found,
            supported,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn a_record_of_the_first_release_is_format_1() {
        let mut record = fields(json!({"id": "a"}));
        assert_eq!(take_format(&mut record, RECORD_FORMAT, "a record"), Ok(1));
        assert_eq!(record, fields(json!({"id": "a"})));
    }

    #[test]
    fn the_format_is_taken_out_of_the_fields() {
        let mut record = fields(json!({"id": "a", "format_version": RECORD_FORMAT}));
        assert_eq!(
            take_format(&mut record, RECORD_FORMAT, "a record"),
            Ok(RECORD_FORMAT)
        );
        assert!(!record.contains_key(FORMAT_FIELD));
    }

    #[test]
    fn a_newer_or_broken_format_is_refused_with_both_versions() {
        for found in [json!(RECORD_FORMAT + 1), json!(0), json!("1"), json!(-1)] {
            let mut record = fields(json!({"format_version": found}));
            let error =
                take_format(&mut record, RECORD_FORMAT, "event type x").expect_err("refused");
            assert_eq!(error.found, found);
            let message = error.to_string();
            assert!(
                message.contains(&format!("format_version {found}"))
                    && message.contains(&format!("up to {RECORD_FORMAT}")),
                "{message}"
            );
        }
    }
}
