//! The object store on S3: the seed's three buckets under the names configuration gives them,
//! with the deploy.json keys of the README's Contracts as object keys. Provisioning starts from the bucket's own notification,
//! so unlike the embedded store the adapter notifies no one. Versioning is the bucket's setting
//! (infra turns it on): every write is a new object version.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use busway_core::ports::{Bucket, ObjectStore, ObjectVersion, StoreError, check_object_key};
use tracing::{debug, instrument};

use crate::config::BucketNames;
use crate::error::store_error;

pub struct S3ObjectStore {
    client: Client,
    buckets: BucketNames,
}

impl S3ObjectStore {
    pub fn new(client: Client, buckets: BucketNames) -> Self {
        Self { client, buckets }
    }
}

// Failures are `StoreError`s inside the `anyhow::Error`, so a caller can tell a transient one
// (`StoreError::Unavailable`) by downcasting.
#[async_trait]
impl ObjectStore for S3ObjectStore {
    #[instrument(skip(self, body), fields(bytes = body.len()))]
    async fn put_object(&self, bucket: Bucket, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        check_object_key(key)?;
        let name = self.buckets.name(bucket);
        let out = self
            .client
            .put_object()
            .bucket(name)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| store_error(&format!("PutObject s3://{name}/{key}"), e))?;
        debug!(version_id = out.version_id(), "stored");
        Ok(())
    }

    #[instrument(skip(self))]
    async fn get_object(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self
            .get_object_version(bucket, key, None)
            .await?
            .map(|o| o.body))
    }

    /// The object's `VersionId` names the version; an object of a bucket without versioning has
    /// none, and is named by its content as the embedded store names it.
    #[instrument(skip(self))]
    async fn get_object_version(
        &self,
        bucket: Bucket,
        key: &str,
        version: Option<&str>,
    ) -> anyhow::Result<Option<ObjectVersion>> {
        check_object_key(key)?;
        let name = self.buckets.name(bucket);
        let what = || format!("GetObject s3://{name}/{key} (version {version:?})");
        let request = self
            .client
            .get_object()
            .bucket(name)
            .key(key)
            .set_version_id(version.map(str::to_string));
        let out = match request.send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            // No such version id (S3 says 400 for one it cannot parse, 404 for one it does not
            // have): in a bucket without versioning a version is named by its content, so the
            // current object is the one asked for or it is gone.
            Err(e)
                if version.is_some()
                    && e.raw_response()
                        .is_some_and(|r| matches!(r.status().as_u16(), 400 | 404)) =>
            {
                let current = Box::pin(self.get_object_version(bucket, key, None)).await?;
                return Ok(current.filter(|c| version == Some(c.version.as_str())));
            }
            Err(e) => return Err(store_error(&what(), e).into()),
        };
        let version_id = out.version_id().map(str::to_string);
        let body = out.body.collect().await.map_err(|e| {
            // The connection broke mid-body: the same read may work again.
            busway_core::ports::StoreError::Unavailable(format!("{}: {e}", what()))
        })?;
        let body = body.into_bytes().to_vec();
        let version = match version_id.filter(|v| v != "null") {
            Some(v) => v,
            None => busway_core::deployment::object_version(&body),
        };
        Ok(Some(ObjectVersion { body, version }))
    }

    /// PutObject with `If-None-Match: *`: S3 refuses it (412) when the key holds an object.
    #[instrument(skip(self, body, metadata), fields(bytes = body.len()))]
    async fn put_new_object(
        &self,
        bucket: Bucket,
        key: &str,
        body: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        check_object_key(key)?;
        let name = self.buckets.name(bucket);
        let what = || format!("PutObject (new) s3://{name}/{key}");
        let mut put = self
            .client
            .put_object()
            .bucket(name)
            .key(key)
            .if_none_match("*")
            .content_type("application/json")
            .body(ByteStream::from(body));
        for (k, v) in metadata {
            put = put.metadata(*k, *v);
        }
        match put.send().await {
            Ok(out) => {
                debug!(version_id = out.version_id(), "stored");
                Ok(())
            }
            Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                Some(412) => Err(StoreError::AlreadyExists(format!("s3://{name}/{key}")).into()),
                // A concurrent conditional write of the key is in progress: try again later.
                Some(409) => {
                    Err(
                        StoreError::Unavailable(format!("{}: {}", what(), DisplayErrorContext(&e)))
                            .into(),
                    )
                }
                _ => Err(store_error(&what(), e).into()),
            },
        }
    }

    #[instrument(skip(self))]
    async fn object_metadata(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        check_object_key(key)?;
        let name = self.buckets.name(bucket);
        match self.client.head_object().bucket(name).key(key).send().await {
            Ok(out) => Ok(Some(
                out.metadata()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            )),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(e) => Err(store_error(&format!("HeadObject s3://{name}/{key}"), e).into()),
        }
    }
}
