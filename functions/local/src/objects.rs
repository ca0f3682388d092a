//! The seed's buckets as folders under the data dir, with the same key layout, so a person can
//! open a deploy.json as in the seed's demo. Writing into a configuration bucket notifies
//! provisioning, as the S3 notification does on AWS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use busway_core::ports::{Bucket, ObjectStore, ProvisioningStarter, StoreError, check_object_key};

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

    /// Where an object's user metadata is kept: a JSON map at the same key under
    /// `.metadata/{bucket}`, so that a bucket's folder holds only its objects, as on S3.
    fn metadata_path(&self, bucket: Bucket, key: &str) -> anyhow::Result<PathBuf> {
        check_object_key(key)?;
        Ok(metadata_dir(&self.root, bucket).join(key))
    }
}

/// The folder of the buckets' object metadata.
pub fn metadata_dir(root: &Path, bucket: Bucket) -> PathBuf {
    root.join(".metadata")
        .join(format!("{LOCAL_ENV}-{}", bucket.base_name()))
}

/// Writes `body` beside `path` and renames it into place, which is atomic: a reader never sees
/// half a file. A unique temp name per write: concurrent writes of one key must not share a file.
/// Durable when it returns, as S3's PUT is: a deploy.json or a claim check's metadata answered
/// must survive a power loss.
fn write_atomically(root: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = write_aside(path, body)?;
    std::fs::rename(&tmp, path)?;
    sync_folders(root, path)
}

/// Writes `body` at `path` unless a file is there: the full content is written aside, then
/// hard-linked into place, which fails rather than replaces when `path` exists. Durable when it
/// returns: a claim check's event is acknowledged (and flushed) after it, and must never link to
/// an object a power loss took.
fn create_atomically(root: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = write_aside(path, body)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_folders(root, path)
}

/// Writes `body` to a new temporary file beside `path`, flushed to disk, and returns its path.
fn write_aside(path: &Path, body: &[u8]) -> std::io::Result<PathBuf> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        std::io::Write::write_all(&mut file, body)?;
        file.sync_data()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Flushes the folders from `path`'s up to `root`: a new entry reaches the disk with its
/// folder's, and a new key usually created folders (`claim-checks/{type}/{hash}/`) on the way.
fn sync_folders(root: &Path, path: &Path) -> std::io::Result<()> {
    for dir in path.ancestors().skip(1) {
        std::fs::File::open(dir)?.sync_all()?;
        if dir == root {
            break;
        }
    }
    Ok(())
}

pub fn bucket_dir(root: &Path, bucket: Bucket) -> PathBuf {
    root.join(format!("{LOCAL_ENV}-{}", bucket.base_name()))
}

#[async_trait]
impl ObjectStore for FolderObjectStore {
    async fn put_object(&self, bucket: Bucket, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let path = self.path(bucket, key)?;
        let meta_path = self.metadata_path(bucket, key)?;
        let root = self.root.clone();
        let write = {
            let path = path.clone();
            move || {
                write_atomically(&root, &path, &body)?;
                // A replaced object keeps no metadata of the one before, as on S3.
                match std::fs::remove_file(meta_path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
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

    /// Only the writer whose object was linked into place writes its metadata, so a second
    /// writer of the key changes nothing. A claim check is read only once its event is
    /// acknowledged, after both writes.
    async fn put_new_object(
        &self,
        bucket: Bucket,
        key: &str,
        body: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let path = self.path(bucket, key)?;
        let meta_path = self.metadata_path(bucket, key)?;
        let meta: BTreeMap<&str, &str> = metadata.iter().copied().collect();
        let meta = serde_json::to_vec(&meta)?;
        let root = self.root.clone();
        let write = {
            let path = path.clone();
            move || {
                create_atomically(&root, &path, &body)?;
                write_atomically(&root, &meta_path, &meta)
            }
        };
        match tokio::task::spawn_blocking(write).await? {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists(key.to_string()).into())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("writing {}", path.display()))),
        }
    }

    async fn object_metadata(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        if !tokio::fs::try_exists(self.path(bucket, key)?).await? {
            return Ok(None);
        }
        let path = self.metadata_path(bucket, key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is not a metadata map", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(BTreeMap::new())),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }
}
