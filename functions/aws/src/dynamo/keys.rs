//! The table's keys (functions/aws/README.md has the whole design). Names and versions are
//! validated domain values, so a `#` never appears inside a key part.

use busway_core::subscription::Subscription;
use busway_core::{EventTypeName, TargetUnit, Version};
use sha2::{Digest, Sha256};

/// Item keys: the event type's partition holds its versions and its active targets.
pub const PK: &str = "PK";
pub const SK: &str = "SK";
pub const EVENT_SK: &str = "EVENT";
pub const VERSION_PREFIX: &str = "VERSION#";
pub const TARGET_PREFIX: &str = "TARGET#";
pub const SUBSCRIPTION_SK: &str = "SUBSCRIPTION";
/// Fixed by the provisioning state machine (statemachines/README.md).
pub const DEPLOYMENT_SK: &str = "DEPLOYMENT";

/// GSI1: every record of a kind, in the order its list call returns them.
pub const GSI1: &str = "GSI1";
pub const GSI1PK: &str = "GSI1PK";
pub const GSI1SK: &str = "GSI1SK";
pub const ALL_EVENT_TYPES: &str = "EVENT_TYPES";
pub const ALL_SUBSCRIPTIONS: &str = "SUBSCRIPTIONS";
pub const ALL_DEPLOYMENTS: &str = "DEPLOYMENTS";

/// GSI2: the records of one owner: a target unit's subscriptions, an event type's deployments.
pub const GSI2: &str = "GSI2";
pub const GSI2PK: &str = "GSI2PK";
pub const GSI2SK: &str = "GSI2SK";

pub fn event_pk(name: &EventTypeName) -> String {
    format!("EVENT#{name}")
}

/// Zero-padded so the sort key orders versions as numbers.
pub fn version_sk(version: Version) -> String {
    format!("{VERSION_PREFIX}{:010}", version.get())
}

/// The active-target item of a subscription: one exists per distinct target of a version, so
/// creating it with `attribute_not_exists` is what keeps identical subscriptions out. The
/// connection string (up to 2 KB) is hashed to fit a sort key.
pub fn target_sk(s: &Subscription) -> String {
    let mut hash = Sha256::new();
    for part in [
        s.target_unit.as_str(),
        s.connection_type.as_str(),
        &s.connection_string,
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let hex = hex::encode(hash.finalize());
    format!("{TARGET_PREFIX}{:010}#{hex}", s.version.get())
}

pub fn subscription_pk(id: &str) -> String {
    format!("SUBSCRIPTION#{id}")
}

/// Fixed by the provisioning state machine (statemachines/README.md).
pub fn deployment_pk(id: &str) -> String {
    format!("DEPLOYMENT#{id}")
}

/// GSI1 sort key of an active subscription: by event type, then version, then age, so one
/// partition answers "all", "of this event type" and "of this version" by prefix.
pub fn subscription_gsi1sk(s: &Subscription, order: &str) -> String {
    format!(
        "{}{order}",
        subscriptions_prefix(&s.event_type, Some(s.version))
    )
}

pub fn subscriptions_prefix(event_type: &EventTypeName, version: Option<Version>) -> String {
    match version {
        Some(v) => format!("{event_type}#{:010}#", v.get()),
        None => format!("{event_type}#"),
    }
}

pub fn unit_pk(unit: &TargetUnit) -> String {
    format!("UNIT#{unit}")
}

pub fn deployments_of(event_type: &EventTypeName) -> String {
    format!("DEPLOYMENTS#{event_type}")
}

/// The order of first writes: nanoseconds since the epoch, zero-padded, then the id for records
/// written in the same nanosecond. Lists sort on it as the embedded store sorts on insertion.
pub fn order(id: &str) -> String {
    let nanos = time::OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .max(0);
    format!("{nanos:020}#{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_sort_as_numbers() {
        let keys: Vec<String> = [9, 10, 100]
            .into_iter()
            .map(|v| version_sk(Version::new(v).expect("a version")))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
