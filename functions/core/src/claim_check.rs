//! Events too large for a bus entry travel as a claim check: the event's `data` is stored in the
//! schema backup bucket under [`PREFIX`], and the bus carries the same event with
//! `metadata.claim_check = true` and `data` replaced by the link to that object. Both hosts' buses
//! decide and write it here, so a consumer receives the same event on either host. Rules match on
//! `metadata`, which the bus always carries whole.

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::envelope::{BusEvent, json_text};
use crate::ports::{Bucket, EntryFailure, ObjectStore};

/// Where claim checks live in the schema backup bucket. The `-` keeps the prefix apart from the
/// backups' `{event_type}/...` keys: event type names cannot contain one.
pub const PREFIX: &str = "claim-checks/";

/// EventBridge's limit on one PutEvents entry since January 2026: 1 MB, counted as 1,048,576
/// bytes (the limit before was 256 KB, 262,144 bytes). Measured by [`entry_size`].
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// The entry limit that accounts or regions still on the older EventBridge limit configure.
pub const LEGACY_MAX_ENTRY_BYTES: usize = 256 * 1024;

/// The object metadata key (S3: `x-amz-meta-busway-format-version`) that carries the format of a
/// claim-check object.
pub const FORMAT_METADATA_KEY: &str = "busway-format-version";

/// The format of the claim-check objects this release writes, in their metadata: format 2, the
/// event's `data` as JSON text. Format 1 is the first release's (on AWS only), written without
/// metadata: the whole detail. [`restore`] reads both (`busway_core::format`'s rule: readers
/// take every earlier format, and an object without one is format 1).
pub const FORMAT_VERSION: &str = "2";

/// How long a claim-check object is kept (infra's S3 lifecycle rule and the local sweeper): the
/// subscribers' dead-letter queues keep an event 14 days, and a dead letter redriven within
/// that time must still open. It is far above the longest retry window (24 hours).
pub const RETENTION_DAYS: u64 = 14;

/// The `EntryFailure` code of an event above the entry limit even with its data claim-checked.
pub const ENTRY_TOO_LARGE: &str = "EntryTooLarge";
/// The failure code of an event whose claim-check object could not be written.
pub const NOT_WRITTEN: &str = "ClaimCheckFailed";

/// An entry's size as EventBridge counts it
/// (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html>): 14 bytes
/// for `Time` (busway always sets it), then the UTF-8 bytes of `Source`, `DetailType` and
/// `Detail` (busway sets no `Resources`).
pub fn entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    14 + source.len() + detail_type.len() + detail.len()
}

/// A claim check's key: `claim-checks/{detail_type}/{sha256(event_id)}/{unique}.json`. The
/// `unique` part gives every stored event its own object, so an `event_id` reused with other data
/// never replaces the object an earlier event links to. The id is hashed because producers
/// choose it.
pub fn key(detail_type: &str, event_id: &str, unique: &uuid::Uuid) -> String {
    let hex = hex::encode(Sha256::digest(event_id.as_bytes()));
    format!("{PREFIX}{detail_type}/{hex}/{}.json", unique.hyphenated())
}

/// Whether `key` has the shape [`key`] makes, so that a reader of claim checks serves nothing else
/// from the bucket.
pub fn is_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [detail_type, hash, file] = parts[..] else {
        return false;
    };
    let valid_detail_type = detail_type.split_once('.').is_some_and(|(name, version)| {
        name.parse::<crate::EventTypeName>().is_ok() && version.parse::<crate::Version>().is_ok()
    });
    valid_detail_type
        && hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && file.strip_suffix(".json").is_some_and(|id| {
            uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
        })
}

/// The detail the bus carries instead of a large one: `metadata` as it was plus
/// `metadata.claim_check = true`, and `data` replaced by the link.
pub fn claim_checked(detail: &Value, bucket: &str, key: &str) -> Value {
    let mut link = detail.clone();
    if let Some(root) = link.as_object_mut() {
        if let Some(metadata) = root.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("claim_check".into(), Value::Bool(true));
        }
        root.insert(
            "data".into(),
            json!({"claim_check": {"bucket": bucket, "key": key}}),
        );
    }
    link
}

/// The bus entry limit and where `data` goes above it: the schema backup bucket through the
/// object store port. One value serves the EventBridge adapter and the local event log.
#[derive(Clone)]
pub struct ClaimChecks {
    pub objects: Arc<dyn ObjectStore>,
    /// The schema backup bucket's name as consumers address it (S3's physical name, or the local
    /// folder's name).
    pub bucket_name: String,
    /// Entries above this many bytes ([`entry_size`]) are claim-checked.
    pub max_entry_bytes: usize,
}

/// What the bus carries for an event, before anything is stored ([`ClaimChecks::split`]).
pub enum Detail {
    /// The enriched envelope itself: its entry fits.
    Whole(String),
    /// Above the limit: the link to carry, once [`ClaimChecks::store`] wrote the data.
    Large(LargeDetail),
}

pub struct LargeDetail {
    link: String,
    key: String,
    data: Vec<u8>,
}

impl ClaimChecks {
    /// The detail text the bus carries for `event`: the enriched envelope itself when its entry
    /// fits, else the claim-checked one, once its `data` is stored. The object is written before
    /// this returns, so before the event can be acknowledged.
    pub async fn detail(&self, event: &BusEvent) -> Result<String, EntryFailure> {
        match self.split(event)? {
            Detail::Whole(detail) => Ok(detail),
            Detail::Large(large) => self.store(large).await,
        }
    }

    /// [`ClaimChecks::detail`] without writing: a bus that knows an event already holds its
    /// `event_id` spares the write of a repeat's data.
    pub fn split(&self, event: &BusEvent) -> Result<Detail, EntryFailure> {
        let detail = json_text(&event.detail);
        let size = |detail: &str| entry_size(&event.source, &event.detail_type, detail);
        if size(&detail) <= self.max_entry_bytes {
            return Ok(Detail::Whole(detail));
        }
        let too_large = |why: &str| EntryFailure {
            code: ENTRY_TOO_LARGE.into(),
            message: format!("the event is above {} bytes {why}", self.max_entry_bytes),
        };
        let Some(data) = event.detail.get("data") else {
            return Err(too_large("and has no data to claim-check"));
        };
        let key = key(&event.detail_type, &event.event_id, &uuid::Uuid::new_v4());
        let link = claim_checked(&event.detail, &self.bucket_name, &key).to_string();
        if size(&link) > self.max_entry_bytes {
            return Err(too_large("even without its data"));
        }
        Ok(Detail::Large(LargeDetail {
            link,
            key,
            data: data.to_string().into_bytes(),
        }))
    }

    /// Writes a large event's data; returns the link the bus carries.
    pub async fn store(&self, large: LargeDetail) -> Result<String, EntryFailure> {
        let LargeDetail { link, key, data } = large;
        self.objects
            .put_new_object(
                Bucket::SchemaBackup,
                &key,
                data,
                &[(FORMAT_METADATA_KEY, FORMAT_VERSION)],
            )
            .await
            .map_err(|e| EntryFailure {
                code: NOT_WRITTEN.into(),
                message: format!("storing the data at {key}: {e:#}"),
            })?;
        Ok(link)
    }
}

/// Where a claim-checked event's data is: `detail.data.claim_check` of a delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub bucket: String,
    pub key: String,
}

/// The link of a delivered EventBridge event, `None` when the event carries its data whole.
pub fn link(event: &Value) -> Option<Link> {
    let detail = &event["detail"];
    if detail["metadata"]["claim_check"] != Value::Bool(true) {
        return None;
    }
    let link = &detail["data"]["claim_check"];
    Some(Link {
        bucket: link["bucket"].as_str()?.to_string(),
        key: link["key"].as_str()?.to_string(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "the claim-check object has format {0:?}: it was written by a newer busway, and this one reads formats up to {FORMAT_VERSION}"
    )]
    UnknownFormat(String),
    #[error("the claim-check object is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("the event is not claim-checked")]
    NotClaimChecked,
}

/// Turns a delivered claim-checked event back into the full event, as it would have been
/// delivered had it fit, from the object at [`link`]'s place: its bytes and its
/// [`FORMAT_METADATA_KEY`] metadata value (`None` when it has none).
pub fn restore(
    mut event: Value,
    format_version: Option<&str>,
    object: &[u8],
) -> Result<Value, RestoreError> {
    if link(&event).is_none() {
        return Err(RestoreError::NotClaimChecked);
    }
    match format_version {
        // The first release's object is the whole detail as it would have been on the bus.
        None | Some("1") => event["detail"] = serde_json::from_slice(object)?,
        Some(FORMAT_VERSION) => {
            let detail = &mut event["detail"];
            if let Some(metadata) = detail["metadata"].as_object_mut() {
                metadata.remove("claim_check");
            }
            detail["data"] = serde_json::from_slice(object)?;
        }
        Some(newer) => return Err(RestoreError::UnknownFormat(newer.to_string())),
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_stored_event_and_only_claim_check_keys_are_recognised() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let first = key("scanned_parcel.1", "abc", &a);
        assert_ne!(first, key("scanned_parcel.1", "abc", &b));
        assert!(
            first.starts_with(
                "claim-checks/scanned_parcel.1/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad/"
            ),
            "{first}"
        );
        assert!(is_key(&first), "{first}");
        crate::ports::check_object_key(&first).expect("a safe object key");
        for other in [
            "scanned_parcel/1/schema.json".to_string(),
            format!("{first}.metadata"),
            first.replace("claim-checks/", "claim-checks/../"),
            first.replace("scanned_parcel.1", "Scanned.1"),
            first.replace(".json", ".JSON"),
            first.to_uppercase(),
        ] {
            assert!(!is_key(&other), "{other}");
        }
    }

    #[test]
    fn a_restored_event_is_the_event_as_it_would_have_been_delivered_whole_in_either_format() {
        let whole = json!({"version": "0", "detail-type": "scanned_parcel.1", "detail": {
            "metadata": {"event_id": "abc", "event_attributes": {"target": "u2"}},
            "data": {"blob": "x".repeat(10)}}});
        let mut delivered = whole.clone();
        delivered["detail"] = claim_checked(&whole["detail"], "bucket", "claim-checks/k.json");
        assert_eq!(delivered["detail"]["metadata"]["claim_check"], true);
        assert_eq!(
            link(&delivered),
            Some(Link {
                bucket: "bucket".into(),
                key: "claim-checks/k.json".into()
            })
        );
        assert_eq!(link(&whole), None);
        let object = whole["detail"]["data"].to_string();
        let restored = restore(delivered.clone(), Some(FORMAT_VERSION), object.as_bytes())
            .expect("format 2 restores");
        assert_eq!(restored, whole);
        assert!(matches!(
            restore(delivered.clone(), Some("3"), object.as_bytes()),
            Err(RestoreError::UnknownFormat(v)) if v == "3"
        ));
        // The first release stored the whole detail, without metadata.
        let first_release = whole["detail"].to_string();
        for format in [None, Some("1")] {
            let restored = restore(delivered.clone(), format, first_release.as_bytes())
                .expect("format 1 restores");
            assert_eq!(restored, whole, "{format:?}");
        }
        assert!(matches!(
            restore(whole, Some(FORMAT_VERSION), object.as_bytes()),
            Err(RestoreError::NotClaimChecked)
        ));
    }

    #[test]
    fn an_entry_is_measured_as_eventbridge_measures_it() {
        assert_eq!(
            entry_size("busway.demo", "scanned_parcel.1", "{}"),
            14 + 11 + 16 + 2
        );
        assert_eq!(entry_size("é", "", ""), 14 + 2);
    }
}
