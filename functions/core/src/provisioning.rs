//! Provisioning of one deploy.json: the steps the state machine runs, host-independent. The
//! build step is the host's: CodeBuild with the CDK generators on AWS, the local broker locally.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{info, instrument, warn};

use crate::deploy::{self, DeployAction, DeployDoc, DeployKind};
use crate::deployment::{self, Deployment, DeploymentStatus};
use crate::ports::{Bucket, DeploymentStore, EventStore, ObjectStore};
use crate::subscription::SubscriptionState;
use crate::{ValidationErrors, now};

/// The build step: make what the document describes exist (or stop existing).
#[async_trait]
pub trait Builder: Send + Sync + 'static {
    async fn build(&self, doc: &DeployDoc) -> anyhow::Result<()>;
}

/// Checks a parsed document against what the portal registered: the event version exists (and is
/// active for a deploy), the subscription is the one on record, the schema is the stored one.
pub async fn check_against_store(
    doc: &DeployDoc,
    store: &dyn EventStore,
) -> anyhow::Result<ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let (event_type, version, application, action) = match doc {
        DeployDoc::Producer(p) => (&p.event_type, p.version, &p.application, p.action),
        DeployDoc::Consumer(c) => (&c.event_type, c.version, &c.application, c.action),
    };
    let Some(event) = store.get_event_type(event_type).await? else {
        errors.push(
            "/event_type",
            format!("event type {event_type} is not registered"),
        );
        return Ok(errors);
    };
    if event.application != *application {
        errors.push(
            "/application",
            format!(
                "event type {event_type} belongs to application {}",
                event.application
            ),
        );
    }
    let Some(stored) = store.get_version(event_type, version).await? else {
        errors.push(
            "/version",
            format!("version {version} of {event_type} is not registered"),
        );
        return Ok(errors);
    };
    let deploying = action == DeployAction::Deploy;
    match doc {
        DeployDoc::Producer(p) => {
            // A destroy is only valid for what the portal deleted: a hand-written one must not
            // take down a version the portal still lists as active.
            if deploying != stored.is_active() {
                let state = if deploying { "deleted" } else { "still active" };
                errors.push(
                    "/version",
                    format!("version {version} of {event_type} is {state}"),
                );
            }
            if p.schema != stored.schema {
                errors.push(
                    "/schema",
                    "differs from the registered schema of this version",
                );
            }
            if p.connection_type != event.connection_type {
                errors.push(
                    "/connection_type",
                    "differs from the registered connection type",
                );
            }
        }
        DeployDoc::Consumer(c) => match store.get_subscription(&c.subscription_id).await? {
            None => errors.push("/subscription_id", "no such subscription"),
            Some(s) => {
                let active = s.state == SubscriptionState::Active;
                if deploying != active {
                    let state = if deploying { "deleted" } else { "still active" };
                    errors.push("/subscription_id", format!("the subscription is {state}"));
                }
                let same = s.event_type == c.event_type
                    && s.version == c.version
                    && s.target_unit == c.target_unit
                    && s.connection_type == c.connection_type
                    && s.connection_string == c.connection_string
                    && s.retry_policy == c.retry_policy;
                if !same {
                    errors.push(
                        "/subscription_id",
                        "the document differs from the subscription on record",
                    );
                }
            }
        },
    }
    Ok(errors)
}

/// Runs deploy.json documents through VALIDATING → BUILDING → SUCCEEDED | FAILED.
pub struct Provisioner {
    pub store: Arc<dyn EventStore>,
    pub deployments: Arc<dyn DeploymentStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub builder: Arc<dyn Builder>,
}

impl Provisioner {
    /// Provisions the object at `bucket`/`key`. Returns `None` when there is nothing to deploy:
    /// not a configuration bucket, the object is gone, or the newest deployment of this key
    /// already ran this very content (a notification repeated, or one cut off by a stop after
    /// the deployment ended).
    #[instrument(skip(self))]
    pub async fn run(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Deployment>> {
        let Some(kind) = bucket.deploy_kind() else {
            return Ok(None);
        };
        let Some(bytes) = self.objects.get_object(bucket, key).await? else {
            return Ok(None);
        };
        let version = deployment::object_version(&bytes);
        if self.already_ran(kind, key, &version).await? {
            return Ok(None);
        }
        let mut deployment = self.deployment_for(kind, bucket, key, &bytes).await?;
        deployment.object_version = Some(version);
        self.step(&mut deployment, DeploymentStatus::Validating)
            .await?;
        let doc = match self.validate(kind, key, &bytes).await? {
            Ok(doc) => doc,
            Err(errors) => {
                warn!(deployment = %deployment.id, %errors, "deploy.json is invalid");
                return self
                    .fail(deployment, format!("invalid deploy.json: {errors}"))
                    .await
                    .map(Some);
            }
        };
        deployment.action = Some(doc.action());
        self.step(&mut deployment, DeploymentStatus::Building)
            .await?;
        match self.builder.build(&doc).await {
            Ok(()) => {
                self.step(&mut deployment, DeploymentStatus::Succeeded)
                    .await?;
                info!(deployment = %deployment.id, "deployment succeeded");
                Ok(Some(deployment))
            }
            Err(e) => self
                .fail(deployment, format!("build failed: {e:#}"))
                .await
                .map(Some),
        }
    }

    async fn validate(
        &self,
        kind: DeployKind,
        key: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Result<DeployDoc, ValidationErrors>> {
        let doc = match deploy::parse(kind, bytes) {
            Ok(doc) => doc,
            Err(errors) => return Ok(Err(errors)),
        };
        let expected_key = doc.key();
        let mut errors = check_against_store(&doc, self.store.as_ref()).await?;
        if expected_key != key {
            errors.push(
                "/",
                format!("a document for {expected_key} cannot live at {key}"),
            );
        }
        Ok(errors.into_result(doc))
    }

    async fn already_ran(
        &self,
        kind: DeployKind,
        key: &str,
        version: &str,
    ) -> anyhow::Result<bool> {
        let Some(parts) = deploy::parse_key(kind, key) else {
            return Ok(false);
        };
        let newest = self
            .deployments
            .list_deployments(Some(&parts.event_type))
            .await?
            .into_iter()
            .find(|d| d.key == key && d.kind == kind);
        Ok(newest
            .is_some_and(|d| d.status.is_final() && d.object_version.as_deref() == Some(version)))
    }

    /// The portal records a PENDING deployment before it writes the document, and a stop may
    /// interrupt one mid-way: an unfinished deployment of this key resumes under its own id. A
    /// document written by hand (or one whose deployment already ended) gets a new record.
    async fn deployment_for(
        &self,
        kind: DeployKind,
        bucket: Bucket,
        key: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Deployment> {
        let claimed = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| {
                v.get("deployment_id")
                    .and_then(|id| id.as_str())
                    .map(str::to_string)
            });
        if let Some(id) = claimed
            && let Some(existing) = self.deployments.get_deployment(&id).await?
            && !existing.status.is_final()
            && existing.key == key
            && existing.kind == kind
        {
            return Ok(existing);
        }
        let mut d = Deployment::pending(
            deployment::new_id(),
            kind,
            bucket.base_name().into(),
            key.into(),
            now(),
        );
        if let Some(parts) = deploy::parse_key(kind, key) {
            d.event_type = Some(parts.event_type);
            d.version = Some(parts.version);
            d.subscription_id = parts.subscription_id;
        }
        self.deployments.put_deployment(&d).await?;
        Ok(d)
    }

    /// Moves forward to `next`; a resumed deployment that had reached it (or passed it) runs the
    /// step again without a move.
    async fn step(&self, d: &mut Deployment, next: DeploymentStatus) -> anyhow::Result<()> {
        if d.status >= next {
            return Ok(());
        }
        d.advance(next, now())?;
        self.deployments.put_deployment(d).await?;
        Ok(())
    }

    async fn fail(&self, mut d: Deployment, error: String) -> anyhow::Result<Deployment> {
        d.fail(error, now())?;
        self.deployments.put_deployment(&d).await?;
        Ok(d)
    }
}
