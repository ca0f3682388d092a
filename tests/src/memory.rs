//! An object store in memory, for the tests of code above the `ObjectStore` port.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use busway_core::ports::{Bucket, ObjectStore, check_object_key};

/// Objects in memory; `fail` makes every call fail as an unreachable S3 would.
#[derive(Default)]
pub struct MemoryObjects {
    objects: Mutex<HashMap<(Bucket, String), Vec<u8>>>,
    pub fail: AtomicBool,
}

impl MemoryObjects {
    pub fn is_empty(&self) -> bool {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
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
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((bucket, key.to_string()), body);
        Ok(())
    }

    async fn get_object(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.check()?;
        check_object_key(key)?;
        Ok(self
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(bucket, key.to_string()))
            .cloned())
    }
}
