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

/// `bytes` in lowercase hex. Keys are hashed on every request, so without a `format!` per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// The current time, truncated to milliseconds so it survives a round trip through storage.
pub fn now() -> Timestamp {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}
