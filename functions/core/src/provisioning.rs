//! Provisioning of one deploy.json, host-independent: what starts an execution of
//! `statemachines/provisioning.asl.json` (the S3 notification handler) and the tasks that
//! execution calls (validate the document, record the deployment status). The state machine
//! orders the steps on both hosts; the build step is the host's: CodeBuild with the CDK
//! generators on AWS, the local broker locally.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{instrument, warn};

use crate::deploy::{self, DeployAction, DeployDoc, DeployKind};
use crate::deployment::{self, Deployment, DeploymentStatus};
use crate::ports::{Bucket, DeploymentStore, EventStore, ObjectStore};
use crate::subscription::SubscriptionState;
use crate::tasks::{DEPLOY_CONFIG_INVALID, DEPLOY_CONFIG_NOT_FOUND, STORE_UNAVAILABLE};
use crate::{ValidationErrors, now};

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

/// The state machine's input: one deploy.json object version to provision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionInput {
    pub deployment_id: String,
    /// The bucket's name as its host knows it.
    pub bucket: String,
    pub key: String,
    pub kind: DeployKind,
}

/// An execution to start, named after the object version so that a repeated notification of
/// it starts nothing twice (Step Functions refuses a second execution of one name).
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub name: String,
    pub input: ExecutionInput,
}

/// Step Functions execution names: at most 80 characters of `[A-Za-z0-9_-]`, so the object's
/// bucket, key and version are hashed.
pub fn execution_name(bucket: &str, key: &str, object_version: &str) -> String {
    let digest =
        deployment::object_version(format!("{bucket}\n{key}\n{object_version}").as_bytes());
    format!("deploy-{}", &digest[..64])
}

/// The validate task's answer; the state machine's `ResultSelector` reads these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidConfig {
    pub kind: DeployKind,
    pub action: DeployAction,
    pub stack_name: String,
}

/// A task's failure as the state machine sees it: a stable error type (`crate::tasks`) that its
/// `Retry`/`Catch` match, and the cause in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {cause}")]
pub struct TaskError {
    pub error_type: &'static str,
    pub cause: String,
}

impl TaskError {
    pub fn new(error_type: &'static str, cause: impl Into<String>) -> Self {
        Self {
            error_type,
            cause: cause.into(),
        }
    }

    fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::new(STORE_UNAVAILABLE, e.to_string())
    }
}

/// The provisioning steps that are not the build.
pub struct Provisioner {
    pub store: Arc<dyn EventStore>,
    pub deployments: Arc<dyn DeploymentStore>,
    pub objects: Arc<dyn ObjectStore>,
}

impl Provisioner {
    /// The S3 notification handler: records the deployment of the object at `bucket`/`key`
    /// (named `bucket_name` on this host) and returns the execution to start. `None` when there
    /// is nothing to deploy: not a configuration bucket, the object is gone, or the newest
    /// deployment of this key already ran this very content (a notification repeated, or one
    /// cut off by a stop after the deployment ended).
    #[instrument(skip(self))]
    pub async fn start(
        &self,
        bucket: Bucket,
        bucket_name: &str,
        key: &str,
    ) -> anyhow::Result<Option<Execution>> {
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
        let name = execution_name(bucket_name, key, &version);
        deployment.object_version = Some(version);
        self.deployments.put_deployment(&deployment).await?;
        Ok(Some(Execution {
            name,
            input: ExecutionInput {
                deployment_id: deployment.id,
                bucket: bucket_name.to_string(),
                key: key.to_string(),
                kind,
            },
        }))
    }

    /// The validate task: the document at `bucket`/`key` is well-formed, lives at its own key
    /// and matches what the portal registered. Records the document's action on the deployment.
    #[instrument(skip(self))]
    pub async fn validate(
        &self,
        deployment_id: &str,
        bucket: Bucket,
        key: &str,
    ) -> Result<ValidConfig, TaskError> {
        let doc = self.load(bucket, key).await?;
        let action = doc.action();
        if let Some(mut d) = self
            .deployments
            .get_deployment(deployment_id)
            .await
            .map_err(TaskError::unavailable)?
        {
            d.action = Some(action);
            self.deployments
                .put_deployment(&d)
                .await
                .map_err(TaskError::unavailable)?;
        }
        Ok(ValidConfig {
            kind: doc.kind(),
            action,
            stack_name: doc.stack_name().to_string(),
        })
    }

    /// Reads and checks the document at `bucket`/`key`.
    pub async fn load(&self, bucket: Bucket, key: &str) -> Result<DeployDoc, TaskError> {
        let Some(kind) = bucket.deploy_kind() else {
            return Err(TaskError::new(
                DEPLOY_CONFIG_INVALID,
                format!("{} holds no deploy.json documents", bucket.base_name()),
            ));
        };
        let bytes = self
            .objects
            .get_object(bucket, key)
            .await
            .map_err(TaskError::unavailable)?
            .ok_or_else(|| {
                TaskError::new(DEPLOY_CONFIG_NOT_FOUND, format!("no object at {key}"))
            })?;
        let doc = deploy::parse(kind, &bytes).map_err(|e| invalid(&e))?;
        let mut errors = check_against_store(&doc, self.store.as_ref())
            .await
            .map_err(TaskError::unavailable)?;
        let expected_key = doc.key();
        if expected_key != key {
            errors.push(
                "/",
                format!("a document for {expected_key} cannot live at {key}"),
            );
        }
        errors.into_result(doc).map_err(|e| invalid(&e))
    }

    /// The record-status task (on AWS the state machine's own DynamoDB writes): moves the
    /// deployment to `status`, or to FAILED with `failure` (error type, cause). A resumed
    /// execution repeating a step the deployment already passed moves nothing.
    pub async fn record(
        &self,
        deployment_id: &str,
        status: DeploymentStatus,
        failure: Option<(String, String)>,
    ) -> anyhow::Result<()> {
        let mut d = self
            .deployments
            .get_deployment(deployment_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no deployment {deployment_id}"))?;
        match failure {
            Some(_) if d.status.is_final() => return Ok(()),
            Some((error, cause)) => {
                warn!(deployment = %d.id, %error, %cause, "deployment failed");
                d.fail(error, cause, now())?;
            }
            None if d.status >= status => return Ok(()),
            None => d.advance(status, now())?,
        }
        self.deployments.put_deployment(&d).await?;
        Ok(())
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
        Ok(d)
    }
}

fn invalid(errors: &ValidationErrors) -> TaskError {
    TaskError::new(
        DEPLOY_CONFIG_INVALID,
        format!("invalid deploy.json: {errors}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_fit_step_functions_and_differ_per_object_version() {
        let a = execution_name(
            "local-publisher-components-bucket",
            "order_created/1/deploy.json",
            "a1",
        );
        let b = execution_name(
            "local-publisher-components-bucket",
            "order_created/1/deploy.json",
            "b2",
        );
        assert_eq!(
            a,
            execution_name(
                "local-publisher-components-bucket",
                "order_created/1/deploy.json",
                "a1"
            )
        );
        assert_ne!(a, b);
        assert!(a.len() <= 80);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
