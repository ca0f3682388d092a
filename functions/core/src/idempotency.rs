//! `Idempotency-Key` on the portal's create routes (draft-ietf-httpapi-idempotency-key-header, as
//! Stripe answers it): the first request with a key runs and its successful answer is kept for
//! [`RETENTION`]; a retry with the same key and the same request gets that answer again; the
//! same key with another request is refused (422), and one that arrives while the first still
//! runs is told to retry (409). A request that did not succeed keeps nothing, so its retry runs
//! again (the create routes also answer an identical body with what it made).

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::ports::StoreError;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The header a replayed answer carries (Stripe's name for it).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a kept answer is replayed.
pub const RETENTION: time::Duration = time::Duration::hours(24);
/// How long a request holds its key before another may take it over: longer than a portal
/// request with its step retries, so only a request whose host died loses it.
pub const LEASE: time::Duration = time::Duration::seconds(60);
/// Keys are opaque strings of visible ASCII (UUIDs are the common choice).
pub const MAX_KEY_LEN: usize = 255;

/// The answer a request got, as kept for its retries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub status: u16,
    /// The JSON body as sent.
    pub body: String,
}

/// One key's record: a claim while its request runs (`answer` absent), then that request's
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The caller's scope and the key, hashed ([`scoped_key`]).
    pub key: String,
    /// The request the key was first sent with ([`fingerprint`]).
    pub fingerprint: String,
    /// Which claim this is, so only its own request completes or releases it.
    pub token: String,
    pub answer: Option<Answer>,
    /// Unix seconds: the claim's lease end, or once answered the end of [`RETENTION`]. A record
    /// past it counts as absent (DynamoDB's TTL deletes items late).
    pub expires_at: i64,
}

/// Where the hosts keep the records: the SQLite store locally, the platform table on AWS.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Writes `claim` unless an unexpired record of its key exists at `now` (unix seconds);
    /// that record otherwise, and nothing is written.
    async fn claim(&self, claim: &Record, now: i64) -> Result<Option<Record>, StoreError>;
    /// Keeps `done`'s answer, while the record is still its claim (`token`).
    async fn complete(&self, done: &Record) -> Result<(), StoreError>;
    /// Deletes the claim of `key` while it is still `token`'s.
    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError>;
}

/// A key scoped to what its caller may do, so a key is never answered to a caller who could not
/// have made the request: the SHA-256 of the caller's team, role and application, and the key.
/// A rotated key's successor keeps all three, so it still finds the records of its predecessor.
pub fn caller_key(caller: &Caller, key: &str) -> String {
    let application = caller.application.as_ref().map_or("", |a| a.as_str());
    scoped_key(
        &[caller.team.as_str(), caller.role.as_str(), application].join("\0"),
        key,
    )
}

/// `key` scoped to `scope`: the SHA-256 of both.
fn scoped_key(scope: &str, key: &str) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(scope.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize(),
    )
}

/// The request a key was sent with: method, path and body exactly as sent.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(method.as_bytes())
            .chain_update([0])
            .chain_update(path.as_bytes())
            .chain_update([0])
            .chain_update(body)
            .finalize(),
    )
}

/// Whether `raw` is a usable key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn check_key(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > MAX_KEY_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ));
    }
    Ok(())
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This request holds the key: run it, then [`finish`] with its answer.
    Run(Record),
    /// The key's request was answered so: answer it again.
    Replay(Answer),
    /// The key's request still runs.
    InFlight,
    /// The key was sent with another request.
    Mismatch,
}

fn unix(at: crate::Timestamp) -> i64 {
    at.unix_timestamp()
}

/// Claims `key` (already scoped) for the request `fingerprint`, or says why not.
pub async fn begin(
    store: &dyn IdempotencyStore,
    key: String,
    fingerprint: String,
) -> Result<Decision, StoreError> {
    let now = crate::now();
    let claim = Record {
        key,
        fingerprint,
        token: uuid::Uuid::new_v4().to_string(),
        answer: None,
        expires_at: unix(now + LEASE),
    };
    Ok(match store.claim(&claim, unix(now)).await? {
        None => Decision::Run(claim),
        Some(found) if found.fingerprint != claim.fingerprint => Decision::Mismatch,
        Some(Record {
            answer: Some(answer),
            ..
        }) => Decision::Replay(answer),
        Some(_) => Decision::InFlight,
    })
}

/// Keeps a successful (2xx) answer for [`RETENTION`]; releases the key after any other, so a
/// retry runs the request again.
pub async fn finish(
    store: &dyn IdempotencyStore,
    mut claim: Record,
    answer: Answer,
) -> Result<(), StoreError> {
    if !(200..300).contains(&answer.status) {
        return store.release(&claim.key, &claim.token).await;
    }
    claim.expires_at = unix(crate::now() + RETENTION);
    claim.answer = Some(answer);
    store.complete(&claim).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(check_key("9f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b").is_ok());
        for bad in ["", "a b", "é", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_and_requests_are_told_apart() {
        assert_ne!(scoped_key("a", "k"), scoped_key("b", "k"));
        // The separator keeps ("ab", "k") and ("a", "bk") apart.
        assert_ne!(scoped_key("ab", "k"), scoped_key("a", "bk"));
        let owner = Caller {
            key_id: "k1".into(),
            team: "logistics".parse().expect("a team"),
            role: crate::auth::Role::Owner,
            application: None,
        };
        // A rotated key's successor finds the records; a key of another role does not.
        let successor = Caller {
            key_id: "k2".into(),
            ..owner.clone()
        };
        assert_eq!(caller_key(&owner, "k"), caller_key(&successor, "k"));
        let producer = Caller {
            role: crate::auth::Role::Producer,
            application: Some("depot".parse().expect("an application")),
            ..owner.clone()
        };
        assert_ne!(caller_key(&owner, "k"), caller_key(&producer, "k"));
        let put = fingerprint("PUT", "/events/t", b"{}");
        assert_ne!(put, fingerprint("POST", "/events/t", b"{}"));
        assert_ne!(put, fingerprint("PUT", "/events/u", b"{}"));
        assert_ne!(put, fingerprint("PUT", "/events/t", b"{ }"));
        assert_eq!(put, fingerprint("PUT", "/events/t", b"{}"));
    }
}
