//! The object store port's contract, the same assertions on the embedded folder buckets, on the
//! S3 adapter over moto server and on the tests' in-memory double: what is put is read back
//! byte for byte (binary, and large enough to be a claim check), the newest write wins, a
//! missing key reads as none, the three buckets are apart, and a key that would be another path
//! on a disk is refused without writing anything. On S3 every write is also an object version.

#[allow(dead_code)]
mod support;

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use busway_core::ports::{Bucket, ObjectStore, ProvisioningStarter, schema_backup_key};
use busway_core::{EventTypeName, Version};
use busway_local::objects::FolderObjectStore;
use busway_tests::memory::MemoryObjects;
use support::emulated::Account;

/// Records what the folder store notifies (S3's notification is the bucket's own, not the
/// adapter's, so the contract leaves it out).
#[derive(Default)]
struct Notified(Mutex<Vec<(Bucket, String)>>);

#[async_trait]
impl ProvisioningStarter for Notified {
    async fn start(&self, bucket: Bucket, key: &str) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((bucket, key.to_string()));
        Ok(())
    }
}

fn backup_key() -> String {
    let event_type: EventTypeName = "scanned_parcel".parse().expect("an event type");
    schema_backup_key(&event_type, Version::FIRST)
}

/// Every byte value, and more than EventBridge's 256 KB entry limit.
fn claim_check_sized() -> Vec<u8> {
    (0..300 * 1024).map(|i| (i % 256) as u8).collect()
}

async fn keeps_the_contract(objects: &dyn ObjectStore) {
    let key = backup_key();
    assert_eq!(
        objects
            .get_object(Bucket::SchemaBackup, &key)
            .await
            .expect("a read"),
        None,
        "nothing is there yet"
    );

    let large = claim_check_sized();
    objects
        .put_object(Bucket::SchemaBackup, &key, large.clone())
        .await
        .expect("a write");
    let read = objects
        .get_object(Bucket::SchemaBackup, &key)
        .await
        .expect("a read");
    assert!(read.as_ref() == Some(&large), "the bytes read back differ");

    objects
        .put_object(Bucket::SchemaBackup, &key, b"{\"v\":2}".to_vec())
        .await
        .expect("an overwrite");
    assert_eq!(
        objects
            .get_object(Bucket::SchemaBackup, &key)
            .await
            .expect("a read"),
        Some(b"{\"v\":2}".to_vec()),
        "the newest write wins"
    );
    assert_eq!(
        objects
            .get_object(Bucket::Publisher, &key)
            .await
            .expect("a read"),
        None,
        "the buckets are apart"
    );

    for unsafe_key in ["", "../x", "a//b", "a/./b", "a\\b", "/a", "a/"] {
        let refused = objects
            .put_object(Bucket::SchemaBackup, unsafe_key, b"x".to_vec())
            .await;
        assert!(refused.is_err(), "{unsafe_key:?} was written");
        assert!(
            objects
                .get_object(Bucket::SchemaBackup, unsafe_key)
                .await
                .is_err(),
            "{unsafe_key:?} was read"
        );
    }
}

#[tokio::test]
async fn the_folder_buckets_keep_the_object_store_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let notified = Arc::new(Notified::default());
    let objects =
        FolderObjectStore::new(dir.path().to_path_buf(), notified.clone()).expect("the buckets");
    keeps_the_contract(&objects).await;
    assert!(
        notified
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty(),
        "a backup write notified provisioning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keeps_the_object_store_contract() {
    let account = Account::new().await;
    keeps_the_contract(&account.objects()).await;
    let versions = account
        .s3
        .list_object_versions()
        .bucket(&account.buckets.schema_backup)
        .prefix(backup_key())
        .send()
        .await
        .expect("the versions are listed");
    assert_eq!(versions.versions().len(), 2, "each write is a version");
}

#[tokio::test]
async fn the_in_memory_double_keeps_the_object_store_contract() {
    keeps_the_contract(&MemoryObjects::default()).await;
}
