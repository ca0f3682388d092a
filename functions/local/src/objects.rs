//! The seed's buckets as folders under the data dir, with the same key layout, so a person can
//! open a deploy.json as in the seed's demo. Writing into a configuration bucket notifies
//! provisioning, as the S3 notification does on AWS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use busway_core::ports::{Bucket, ObjectStore, ProvisioningStarter, check_object_key};

/// Environment prefix of the local bucket names (`local-publisher-components-bucket`).
pub const LOCAL_ENV: &str = "local";

pub struct FolderObjectStore {
    root: PathBuf,
    notify: Arc<dyn ProvisioningStarter>,
}

impl FolderObjectStore {
    pub fn new(root: PathBuf, notify: Arc<dyn ProvisioningStarter>) -> anyhow::Result<Self> {
        for bucket in Bucket::ALL {
            let dir = bucket_dir(&root, bucket);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self { root, notify })
    }

    fn path(&self, bucket: Bucket, key: &str) -> anyhow::Result<PathBuf> {
        check_object_key(key)?;
        Ok(bucket_dir(&self.root, bucket).join(key))
    }
}

pub fn bucket_dir(root: &Path, bucket: Bucket) -> PathBuf {
    root.join(format!("{LOCAL_ENV}-{}", bucket.base_name()))
}

#[async_trait]
impl ObjectStore for FolderObjectStore {
    async fn put_object(&self, bucket: Bucket, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let path = self.path(bucket, key)?;
        // A unique temp name per write: concurrent writes of one key must not share a file.
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let write = {
            let (path, tmp) = (path.clone(), tmp.clone());
            move || -> std::io::Result<()> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&tmp, &body)?;
                // Rename is atomic: a reader (or the scanner) never sees half a document.
                std::fs::rename(&tmp, &path)
            }
        };
        tokio::task::spawn_blocking(write)
            .await?
            .with_context(|| format!("writing {}", path.display()))?;
        if bucket.deploy_kind().is_some() {
            self.notify.start(bucket, key).await?;
        }
        Ok(())
    }

    async fn get_object(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self.path(bucket, key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }
}
