//! Signed HTTPS deliveries, as Standard Webhooks specifies (standardwebhooks.com): each delivery
//! carries `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`, one signature per valid secret of the subscription, so a
//! consumer keeps verifying while a rotated secret and its successor overlap.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Timestamp;
use crate::ports::StoreError;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// What a Standard Webhooks secret begins with; the rest is the base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";

/// How long a rotated secret still signs beside its successor.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// One secret of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningSecret {
    pub secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// When a rotated secret stops signing.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Timestamp>,
}

impl SigningSecret {
    /// A new secret of 256 random bits.
    pub fn generate() -> anyhow::Result<Self> {
        let key = crate::auth::random_bytes::<32>()?;
        Ok(Self {
            secret: format!("{SECRET_PREFIX}{}", STANDARD.encode(key)),
            created_at: crate::now(),
            expires_at: None,
        })
    }

    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// The signing key of a `whsec_` secret.
pub fn key_of(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map_err(|e| format!("a webhook secret is base64 after {SECRET_PREFIX}: {e}"))
}

/// `v1,<signature>` of one message under one key.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` value: a signature per secret valid at `now`, newest first,
/// space-separated.
pub fn signature_header(
    secrets: &[SigningSecret],
    now: Timestamp,
    id: &str,
    body: &[u8],
) -> Result<String, String> {
    let timestamp = now.unix_timestamp();
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets.iter().filter(|s| s.is_valid_at(now)) {
        signatures.push(sign(&key_of(&secret.secret)?, id, timestamp, body));
    }
    Ok(signatures.join(" "))
}

/// The secrets that subscriptions sign with.
#[async_trait]
pub trait SigningSecrets: Send + Sync + 'static {
    /// The subscription's secrets, newest first; none for a subscription that has none.
    async fn signing_secrets(
        &self,
        subscription_id: &str,
    ) -> Result<Vec<SigningSecret>, StoreError>;
    /// Replaces the subscription's secrets if they are still `read` (what `signing_secrets`
    /// gave); `Conflict` when another writer replaced them since, whose secret would be lost.
    async fn put_signing_secrets(
        &self,
        subscription_id: &str,
        read: &[SigningSecret],
        secrets: &[SigningSecret],
    ) -> Result<(), StoreError>;
}

/// After a rotation: a new secret, and the newest old one signing beside it until `overlap` has
/// passed; older ones are dropped.
pub fn rotated(
    mut secrets: Vec<SigningSecret>,
    overlap: Duration,
) -> anyhow::Result<Vec<SigningSecret>> {
    let now = crate::now();
    secrets.retain(|s| s.is_valid_at(now));
    secrets.truncate(1);
    let ends = now + overlap;
    for old in &mut secrets {
        old.expires_at = Some(old.expires_at.map_or(ends, |at| at.min(ends)));
    }
    secrets.insert(0, SigningSecret::generate()?);
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published test vector.
    #[test]
    fn the_signature_is_the_specifications_test_vector() {
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn after_a_rotation_both_secrets_sign_until_the_old_one_expires() {
        let first = SigningSecret::generate().expect("a secret");
        let both = rotated(vec![first.clone()], ROTATION_OVERLAP).expect("rotated");
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].secret, first.secret);
        let now = crate::now();
        let header = signature_header(&both, now, "msg_1", b"{}").expect("signed");
        assert_eq!(header.split(' ').count(), 2);
        let later = now + ROTATION_OVERLAP + Duration::from_secs(1);
        let header = signature_header(&both, later, "msg_1", b"{}").expect("signed");
        assert_eq!(header.split(' ').count(), 1);
        // A second rotation keeps only the newest old secret.
        assert_eq!(rotated(both, ROTATION_OVERLAP).expect("rotated").len(), 2);
    }
}
