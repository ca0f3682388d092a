//! Local provisioning: the notification queue, the runner that takes each deploy.json through
//! the provisioning steps, the build step that applies it to the local broker, and the scanner
//! that notices deploy.json files edited by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busway_core::deploy::{DeployAction, DeployDoc};
use busway_core::ingest::LiveRoutes;
use busway_core::ports::{Bucket, ObjectStore, ProvisioningStarter};
use busway_core::provisioning::{Builder, Provisioner};
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::delivery::Router;
use crate::objects::bucket_dir;
use crate::store::SqliteStore;

/// The local "S3 notification": a queue of objects to provision.
pub struct LocalStarter {
    tx: mpsc::UnboundedSender<(Bucket, String)>,
}

impl LocalStarter {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<(Bucket, String)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

#[async_trait]
impl ProvisioningStarter for LocalStarter {
    async fn start(&self, bucket: Bucket, key: &str) -> anyhow::Result<()> {
        self.tx
            .send((bucket, key.to_string()))
            .map_err(|_| anyhow::anyhow!("the provisioning runner has stopped"))
    }
}

/// The build step on one machine: a producer deploy makes its route live with its validator, a
/// consumer deploy registers its rule; a destroy removes them. Both survive a restart.
pub struct LocalBuilder {
    pub store: SqliteStore,
    pub routes: Arc<LiveRoutes>,
    pub router: Arc<Router>,
}

#[async_trait]
impl Builder for LocalBuilder {
    async fn build(&self, doc: &DeployDoc) -> anyhow::Result<()> {
        match doc {
            DeployDoc::Producer(p) => match p.action {
                DeployAction::Deploy => {
                    self.routes
                        .insert(
                            p.application.clone(),
                            p.event_type.clone(),
                            p.version,
                            &p.schema,
                        )
                        .map_err(|e| anyhow::anyhow!("the schema does not compile: {e}"))?;
                    self.store
                        .put_route(
                            p.application.as_str(),
                            p.event_type.as_str(),
                            p.version.get(),
                            &p.schema,
                        )
                        .await?;
                }
                DeployAction::Destroy => {
                    self.routes.remove(&p.event_type, p.version);
                    self.store
                        .delete_route(p.event_type.as_str(), p.version.get())
                        .await?;
                }
            },
            DeployDoc::Consumer(c) => match c.action {
                DeployAction::Deploy => self.router.add_rule(c.clone()).await?,
                DeployAction::Destroy => self.router.remove_rule(&c.subscription_id).await?,
            },
        }
        Ok(())
    }
}

/// Provisions notified objects one at a time, in order. An object whose content was already
/// provisioned is skipped, so a repeated notification starts nothing twice.
pub async fn run(
    provisioner: Provisioner,
    store: SqliteStore,
    objects: Arc<dyn ObjectStore>,
    mut rx: mpsc::UnboundedReceiver<(Bucket, String)>,
) {
    while let Some((bucket, key)) = rx.recv().await {
        if let Err(e) = provision_once(&provisioner, &store, objects.as_ref(), bucket, &key).await {
            error!(%key, error = %format!("{e:#}"), "provisioning failed");
        }
    }
}

async fn provision_once(
    provisioner: &Provisioner,
    store: &SqliteStore,
    objects: &dyn ObjectStore,
    bucket: Bucket,
    key: &str,
) -> anyhow::Result<()> {
    let Some(content) = objects.get_object(bucket, key).await? else {
        return Ok(());
    };
    let name = bucket.base_name();
    if store.processed_object(name, key).await?.as_deref() == Some(content.as_slice()) {
        return Ok(());
    }
    provisioner.run(bucket, key).await?;
    store.mark_processed(name, key, content).await?;
    Ok(())
}

/// Polls the configuration buckets for deploy.json files whose content changed since they were
/// provisioned (edited by hand, or written while busway was down) and notifies the runner.
pub async fn scan(root: PathBuf, store: SqliteStore, starter: Arc<LocalStarter>, every: Duration) {
    loop {
        for bucket in [Bucket::Publisher, Bucket::Subscriber] {
            let dir = bucket_dir(&root, bucket);
            let found = tokio::task::spawn_blocking(move || deploy_files(&dir))
                .await
                .unwrap_or_default();
            for (key, content) in found {
                match store.processed_object(bucket.base_name(), &key).await {
                    Ok(seen) if seen.as_deref() == Some(content.as_slice()) => {}
                    Ok(_) => {
                        if starter.start(bucket, &key).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!(error = %e, "scanner cannot read the store"),
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Every `deploy.json` under `dir`, as (key, content).
fn deploy_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n == "deploy.json") {
                let key = path
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|k| k.to_str())
                    .map(|k| k.replace('\\', "/"));
                if let (Some(key), Ok(content)) = (key, std::fs::read(&path)) {
                    found.push((key, content));
                }
            }
        }
    }
    found.sort();
    found
}
