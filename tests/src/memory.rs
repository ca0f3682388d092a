//! An object store in memory, for the tests of code above the `ObjectStore` port.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use busway_core::ports::{Bucket, ObjectStore, StoreError, check_object_key};

type Object = (Vec<u8>, BTreeMap<String, String>);

/// Objects with their metadata in memory; `fail` makes every call fail as an unreachable S3
/// would.
#[derive(Default)]
pub struct MemoryObjects {
    objects: Mutex<HashMap<(Bucket, String), Object>>,
    pub fail: AtomicBool,
}

impl MemoryObjects {
    pub fn is_empty(&self) -> bool {
        self.objects().is_empty()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<(Bucket, String), Object>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            anyhow::bail!("S3 is unreachable");
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn put_object(&self, bucket: Bucket, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        self.check()?;
        check_object_key(key)?;
        self.objects()
            .insert((bucket, key.to_string()), (body, BTreeMap::new()));
        Ok(())
    }

    async fn get_object(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.check()?;
        check_object_key(key)?;
        Ok(self
            .objects()
            .get(&(bucket, key.to_string()))
            .map(|(body, _)| body.clone()))
    }

    async fn put_new_object(
        &self,
        bucket: Bucket,
        key: &str,
        body: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.check()?;
        check_object_key(key)?;
        match self.objects().entry((bucket, key.to_string())) {
            Entry::Occupied(_) => Err(StoreError::AlreadyExists(key.to_string()).into()),
            Entry::Vacant(slot) => {
                let metadata = metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                slot.insert((body, metadata));
                Ok(())
            }
        }
    }

    async fn object_metadata(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        self.check()?;
        check_object_key(key)?;
        Ok(self
            .objects()
            .get(&(bucket, key.to_string()))
            .map(|(_, metadata)| metadata.clone()))
    }
}
