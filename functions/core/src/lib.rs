//! busway's domain: what an event type, a version, a subscription, a deploy config and a
//! deployment are, the rules they obey, and the ports the hosts implement. Nothing here knows
//! AWS, axum or Lambda.

pub mod asyncapi;
pub mod audit;
pub mod auth;
pub mod claim_check;
pub mod deploy;
pub mod deployment;
pub mod envelope;
pub mod error;
pub mod event;
pub mod format;
pub mod idempotency;
pub mod ingest;
pub mod names;
pub mod openapi;
pub mod page;
pub mod portal;
pub mod ports;
pub mod provisioning;
pub mod registry;
pub mod schema;
pub mod ssrf;
pub mod subscription;
pub mod targets;
pub mod tasks;
pub mod webhook;

pub use error::{FieldError, ValidationErrors};
pub use names::{Application, EventTypeName, TargetUnit, Team, Version};

/// Timestamps are UTC and serialize as RFC 3339.
pub type Timestamp = time::OffsetDateTime;

/// The current time, truncated to milliseconds so it survives a round trip through storage.
pub fn now() -> Timestamp {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}
