//! Provisioning of one deploy.json, host-independent: what starts an execution of
//! `statemachines/provisioning.asl.json` (the S3 notification handler) and the tasks that
//! execution calls (validate the document, record the deployment status). The state machine
//! orders the steps on both hosts; the build step is the host's: CodeBuild with the CDK
//! generators on AWS, the local broker locally.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::deploy::{self, DeployAction, DeployDoc, DeployKind};
use crate::deployment::{self, BuildInfo, Deployment, DeploymentStatus};
use crate::page::{MAX_LIMIT, PageRequest};
use crate::ports::{Bucket, DeploymentStore, EventStore, ObjectStore, StoreError};
use crate::subscription::SubscriptionState;
use crate::tasks::{
    BUILD_INFO_UNAVAILABLE, DEPLOY_CONFIG_INVALID, DEPLOY_CONFIG_NOT_FOUND, DEPLOYMENT_STALE,
    STORE_UNAVAILABLE, TURN_WAITING,
};
use crate::{ValidationErrors, now};

/// How many of an event type's newest deployments a notification reads to find those of its
/// document: one page of the deployment store (one DynamoDB query page).
pub const NOTIFICATION_WINDOW: usize = MAX_LIMIT;

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
                // Named one by one: a hand edit of the target is refused at the field edited.
                for (field, same) in [
                    ("event_type", s.event_type == c.event_type),
                    ("version", s.version == c.version),
                    ("target_unit", s.target_unit == c.target_unit),
                    ("connection_type", s.connection_type == c.connection_type),
                    (
                        "connection_string",
                        s.connection_string == c.connection_string,
                    ),
                    ("retry_policy", s.retry_policy == c.retry_policy),
                    ("delivery", s.delivery == c.delivery),
                ] {
                    if !same {
                        errors.push(
                            format!("/{field}"),
                            format!(
                                "differs from subscription {} on record: a subscription's target and policy are fixed (delete it and subscribe again to change them)",
                                s.id
                            ),
                        );
                    }
                }
            }
        },
    }
    Ok(errors)
}

/// The error a job ends with when its execution never started (StartExecution failed).
pub const NOT_STARTED: &str = "Provisioning.NotStarted";

/// The state machine's input: one deploy.json object version to provision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionInput {
    pub deployment_id: String,
    /// The bucket's name as its host knows it.
    pub bucket: String,
    pub key: String,
    /// The document version validate and build read, and nothing else (`ObjectVersion::version`).
    pub object_version: String,
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
/// bucket, key and version and the deployment are hashed. A repeated notification of a version
/// names the same execution; a closed name is never reused: a reverted document (the same
/// content locally) is a new deployment, and a retry a new attempt.
pub fn execution_name(
    bucket: &str,
    key: &str,
    object_version: &str,
    deployment_id: &str,
    attempt: u32,
) -> String {
    let digest = deployment::object_version(
        format!("{bucket}\n{key}\n{object_version}\n{deployment_id}").as_bytes(),
    );
    format!("deploy-{}-{attempt}", &digest[..64])
}

/// The validate task's answer; the state machine's `ResultSelector` reads these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidConfig {
    pub kind: DeployKind,
    pub action: DeployAction,
    pub stack_name: String,
}

/// The describe_build task's request: the build a succeeded build step returned (`build_id`),
/// or the failed build step's Catch result (`failure`, `{"Error", "Cause"}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DescribeBuild {
    pub deployment_id: String,
    #[serde(default)]
    pub build_id: Option<String>,
    #[serde(default)]
    pub failure: Option<serde_json::Value>,
}

impl DescribeBuild {
    /// The build to describe. A failed `codebuild:startBuild.sync` task's cause is the build as
    /// JSON (`{"Build": {"Id": ...}}`); any other cause (a build that never started, the local
    /// build step's words, a cause dropped on the way) names none.
    pub fn build_id(&self) -> Option<String> {
        if let Some(id) = &self.build_id {
            return Some(id.clone());
        }
        let cause = self.failure.as_ref()?.get("Cause")?.as_str()?;
        let build: serde_json::Value = serde_json::from_str(cause).ok()?;
        build
            .pointer("/Build/Id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    }
}

/// What the builder knows of its builds (CodeBuild's `BatchGetBuilds` on AWS).
#[async_trait]
pub trait BuildReader: Send + Sync + 'static {
    /// `None` when no build has this id; an error when the builder did not answer, which is
    /// transient.
    async fn build(&self, id: &str) -> anyhow::Result<Option<BuildInfo>>;
}

/// Whether an execution of the provisioning state machine still runs (Step Functions'
/// `DescribeExecution` on AWS).
#[async_trait]
pub trait ExecutionReader: Send + Sync + 'static {
    /// `false` for one that ended or was never started; an error when the engine did not answer,
    /// which is transient.
    async fn running(&self, execution: &str) -> anyhow::Result<bool>;
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
    /// (named `bucket_name` on this host) in the version the notification names (`None`: the
    /// current one) and returns the execution to start. `None` when there is nothing to deploy:
    /// not a configuration bucket, the object is gone, the notified version is no longer the
    /// current one (a late notification: the later write has its own), or the newest deployment
    /// of this key already ran this very version (a notification repeated, or one cut off by a
    /// stop after the deployment ended). A notification repeated while that version is still
    /// being provisioned returns the same execution again.
    #[instrument(skip(self))]
    pub async fn start(
        &self,
        bucket: Bucket,
        bucket_name: &str,
        key: &str,
        notified: Option<&str>,
    ) -> anyhow::Result<Option<Execution>> {
        let Some(kind) = bucket.deploy_kind() else {
            return Ok(None);
        };
        let Some(current) = self.objects.get_object_version(bucket, key, None).await? else {
            return Ok(None);
        };
        if notified.is_some_and(|v| v != current.version) {
            info!(
                key,
                "a later version of the document was written: it has its own notification"
            );
            return Ok(None);
        }
        let version = current.version;
        let of_key = self.deployments_of(kind, key).await?;
        let newest = match of_key.first() {
            Some(d) => Some(d.clone()),
            // The document's jobs are older than the event type's newest (a backlog of other
            // documents of it): the job the document names is its newest, if any of it is.
            None => self.claimed_job(kind, key, &current.body).await?,
        }
        .filter(|d| d.object_version.as_deref() == Some(version.as_str()));
        let (mut deployment, stored) = match newest {
            Some(d) if d.status.is_final() => return Ok(None),
            // This very version is being provisioned (the notification came again while its
            // execution runs): the same record makes the same execution input, which Step
            // Functions takes as the execution already started.
            Some(d) => (d, true),
            None => {
                self.deployment_for(kind, bucket, key, &current.body)
                    .await?
            }
        };
        if deployment.execution.is_none() && awaited(&of_key, &deployment) {
            // A later change of this document is committed and its own document is on its way
            // (with its own notification): this job would only be undone by it.
            let mut superseded = deployment.clone();
            superseded.advance(DeploymentStatus::Superseded, now())?;
            if self.moved(&superseded, &deployment).await? {
                info!(deployment = %superseded.id, "superseded by a later change before it started");
            }
            return Ok(None);
        }
        let name = execution_name(
            bucket_name,
            key,
            &version,
            &deployment.id,
            deployment.attempt,
        );
        let read = deployment.clone();
        deployment.object_version = Some(version.clone());
        deployment.execution = Some(name.clone());
        if !stored {
            self.deployments.put_deployment(&deployment).await?;
        } else if !self.moved(&deployment, &read).await? {
            // Another starter took this job up (it starts the execution) or superseded it.
            info!(deployment = %deployment.id, "moved by another starter since it was read");
            return Ok(None);
        }
        self.supersede_older(&of_key, &deployment).await?;
        Ok(Some(Execution {
            name,
            input: ExecutionInput {
                deployment_id: deployment.id,
                bucket: bucket_name.to_string(),
                key: key.to_string(),
                object_version: version,
                kind,
            },
        }))
    }

    /// What a starter does when `execution`, which `start` recorded on its job, did not start
    /// and does not run: the job ends FAILED with `cause`, so that a retry can run it again,
    /// instead of staying PENDING under an execution that never ran. Written only while the job
    /// is still PENDING under this execution: one that did start and moved it keeps it. `true`
    /// when it was written.
    pub async fn not_started(&self, execution: &Execution, cause: &str) -> anyhow::Result<bool> {
        let id = &execution.input.deployment_id;
        let Some(read) = self.deployments.get_deployment(id).await? else {
            return Ok(false);
        };
        if read.status != DeploymentStatus::Pending
            || read.execution.as_deref() != Some(execution.name.as_str())
        {
            return Ok(false);
        }
        let mut failed = read.clone();
        failed.fail(NOT_STARTED, cause, now())?;
        self.moved(&failed, &read).await
    }

    /// The validate task: the document at `bucket`/`key`, in exactly `object_version`, is
    /// well-formed, lives at its own key and matches what the portal registered. Records the
    /// document's action on the deployment.
    #[instrument(skip(self))]
    pub async fn validate(
        &self,
        deployment_id: &str,
        bucket: Bucket,
        key: &str,
        object_version: &str,
    ) -> Result<ValidConfig, TaskError> {
        let doc = self.load(bucket, key, object_version).await?;
        let action = doc.action();
        self.amend(deployment_id, |d| d.action = Some(action))
            .await
            .map_err(TaskError::unavailable)?;
        Ok(ValidConfig {
            kind: doc.kind(),
            action,
            stack_name: doc.stack_name().to_string(),
        })
    }

    /// The await_turn task, the execution's first step: one job at a time per document. The job
    /// waits (`Turn.Waiting`, which the state machine retries) while an older job of the same
    /// document has not ended and its execution still runs, so a later change of a document is
    /// built after the earlier one, never beside it. An older job whose execution stopped
    /// without ending it (stopped by hand, timed out) does not hold the document. Every page of
    /// the event type's deployments older than this job is read: however many newer ones were
    /// recorded since, an older job is never missed. A job not listed yet (the index lags its
    /// write) waits; one with no record at all is stale.
    #[instrument(skip(self, executions))]
    pub async fn await_turn(
        &self,
        deployment_id: &str,
        bucket: Bucket,
        key: &str,
        executions: &dyn ExecutionReader,
    ) -> Result<(), TaskError> {
        let Some(kind) = bucket.deploy_kind() else {
            return Ok(());
        };
        let Some(parts) = deploy::parse_key(kind, key) else {
            return Ok(());
        };
        let mut found = false;
        let mut page = PageRequest {
            limit: MAX_LIMIT,
            after: None,
        };
        loop {
            let listed = self
                .deployments
                .page_deployments(Some(&parts.event_type), &page)
                .await
                .map_err(TaskError::unavailable)?;
            for older in listed
                .items
                .iter()
                .filter(|d| d.key == key && d.kind == kind)
            {
                if !found {
                    found = older.id == deployment_id;
                    continue;
                }
                let Some(execution) = older.execution.as_deref() else {
                    continue;
                };
                if older.status.is_final() {
                    continue;
                }
                let running = executions
                    .running(execution)
                    .await
                    .map_err(|e| TaskError::unavailable(format!("{e:#}")))?;
                if running {
                    return Err(TaskError::new(
                        TURN_WAITING,
                        format!(
                            "deployment {} of {key} ({}) runs before {deployment_id}",
                            older.id,
                            older.status.as_str()
                        ),
                    ));
                }
            }
            match listed.next {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        if found {
            return Ok(());
        }
        let recorded = self
            .deployments
            .get_deployment(deployment_id)
            .await
            .map_err(TaskError::unavailable)?;
        match recorded {
            None => Err(TaskError::new(
                DEPLOYMENT_STALE,
                format!("no deployment {deployment_id}"),
            )),
            Some(d) if d.event_type.as_ref() == Some(&parts.event_type) => Err(TaskError::new(
                TURN_WAITING,
                format!("deployment {deployment_id} is not listed among those of {key} yet"),
            )),
            // A record naming no event type is in no listing: no job is ordered before it.
            Some(_) => Ok(()),
        }
    }

    /// The describe_build task: records the build that ran the deployment's document on the
    /// deployment. Nothing is recorded when the request names no build or the builder knows none.
    #[instrument(skip(self, builds))]
    pub async fn describe_build(
        &self,
        request: &DescribeBuild,
        builds: &dyn BuildReader,
    ) -> Result<Option<BuildInfo>, TaskError> {
        let Some(id) = request.build_id() else {
            return Ok(None);
        };
        let Some(info) = builds
            .build(&id)
            .await
            .map_err(|e| TaskError::new(BUILD_INFO_UNAVAILABLE, format!("{e:#}")))?
        else {
            return Ok(None);
        };
        self.record_build(&request.deployment_id, info.clone())
            .await
            .map_err(TaskError::unavailable)?;
        Ok(Some(info))
    }

    /// Keeps `build` on the deployment, replacing what an earlier attempt recorded.
    pub async fn record_build(&self, deployment_id: &str, build: BuildInfo) -> anyhow::Result<()> {
        if !self.amend(deployment_id, |d| d.build = Some(build)).await? {
            anyhow::bail!("no deployment {deployment_id}");
        }
        Ok(())
    }

    /// Changes a field of the deployment that no status write touches, written back only while
    /// the record is as read: a whole-record write must never put back a status another writer
    /// moved since. An error when it moved (the task is retried and reads it again); `false`
    /// when there is no such deployment.
    async fn amend(
        &self,
        deployment_id: &str,
        change: impl FnOnce(&mut Deployment),
    ) -> anyhow::Result<bool> {
        let Some(read) = self.deployments.get_deployment(deployment_id).await? else {
            return Ok(false);
        };
        let mut d = read.clone();
        change(&mut d);
        if !self.moved(&d, &read).await? {
            anyhow::bail!("deployment {deployment_id} moved while it was written");
        }
        Ok(true)
    }

    /// The build's check before it changes anything: the deployment still expects this version
    /// of its document from this execution and is building, then the document, read and checked
    /// again in exactly that version.
    pub async fn load_for_build(
        &self,
        deployment_id: &str,
        execution: &str,
        bucket: Bucket,
        key: &str,
        object_version: &str,
    ) -> Result<DeployDoc, TaskError> {
        let d = self
            .deployments
            .get_deployment(deployment_id)
            .await
            .map_err(TaskError::unavailable)?
            .ok_or_else(|| {
                TaskError::new(DEPLOYMENT_STALE, format!("no deployment {deployment_id}"))
            })?;
        let expected = d.object_version.as_deref() == Some(object_version)
            && d.execution.as_deref().is_none_or(|e| e == execution)
            && d.status == DeploymentStatus::Building;
        if !expected {
            return Err(TaskError::new(
                DEPLOYMENT_STALE,
                format!(
                    "deployment {deployment_id} ({:?}, version {:?}, execution {:?}) no longer expects version {object_version} from {execution}",
                    d.status, d.object_version, d.execution
                ),
            ));
        }
        self.load(bucket, key, object_version).await
    }

    /// Reads and checks the document at `bucket`/`key` in exactly `object_version`.
    pub async fn load(
        &self,
        bucket: Bucket,
        key: &str,
        object_version: &str,
    ) -> Result<DeployDoc, TaskError> {
        let Some(kind) = bucket.deploy_kind() else {
            return Err(TaskError::new(
                DEPLOY_CONFIG_INVALID,
                format!("{} holds no deploy.json documents", bucket.base_name()),
            ));
        };
        let bytes = self
            .objects
            .get_object_version(bucket, key, Some(object_version))
            .await
            .map_err(TaskError::unavailable)?
            .ok_or_else(|| {
                TaskError::new(
                    DEPLOY_CONFIG_NOT_FOUND,
                    format!("no version {object_version} of {key}: it was changed since"),
                )
            })?
            .body;
        let doc = deploy::parse_fields(kind, &bytes).map_err(|e| invalid(&e))?;
        // The records first: a hand-edited field is named before the names derived from it.
        let mut errors = check_against_store(&doc, self.store.as_ref())
            .await
            .map_err(TaskError::unavailable)?;
        errors.0.extend(deploy::derived_errors(&doc).0);
        let expected_key = doc.key();
        if expected_key != key {
            errors.push(
                "/",
                format!("a document for {expected_key} cannot live at {key}"),
            );
        }
        errors.into_result(doc).map_err(|e| invalid(&e))
    }

    /// The record-status task (on AWS the state machine's own DynamoDB writes, under the same
    /// condition): moves the deployment to `status`, or to FAILED with `failure` (error type,
    /// cause), only while `execution` runs it and it has not ended; otherwise
    /// `RecordError::Stale`, and nothing moves. A status only moves forward: a step repeated or
    /// already passed moves nothing (on AWS, where an execution never runs a step twice, the
    /// definition's condition refuses a passed one).
    pub async fn record(
        &self,
        deployment_id: &str,
        execution: &str,
        status: DeploymentStatus,
        failure: Option<(String, String)>,
    ) -> Result<(), RecordError> {
        let mut d = self
            .deployments
            .get_deployment(deployment_id)
            .await
            .map_err(|e| RecordError::Unavailable(e.to_string()))?
            .ok_or_else(|| RecordError::Stale(format!("no deployment {deployment_id}")))?;
        if d.status.is_final() || d.execution.as_deref().is_some_and(|e| e != execution) {
            return Err(RecordError::Stale(format!(
                "deployment {deployment_id} is {} under execution {:?}, not {execution}'s to move",
                d.status.as_str(),
                d.execution
            )));
        }
        match failure {
            Some((error, cause)) => {
                warn!(deployment = %d.id, %error, %cause, "deployment failed");
                d.fail(error, cause, now())
                    .map_err(|e| RecordError::Stale(e.to_string()))?;
            }
            // A step repeated or already passed by this execution: the local runner resumes a
            // job a stop cut off by running its execution again from the start.
            None if d.status >= status => return Ok(()),
            None => d
                .advance(status, now())
                .map_err(|e| RecordError::Stale(e.to_string()))?,
        }
        self.deployments
            .put_deployment(&d)
            .await
            .map_err(|e| RecordError::Unavailable(e.to_string()))
    }

    /// The deployments of the document at `key` among the newest [`NOTIFICATION_WINDOW`] of its
    /// event type, newest first: one page, so a notification reads a bounded amount however many
    /// deployments the event type had. An older one is long ended or was superseded, or is the
    /// job its document names (`claimed_job`), read by its id.
    async fn deployments_of(&self, kind: DeployKind, key: &str) -> anyhow::Result<Vec<Deployment>> {
        let Some(parts) = deploy::parse_key(kind, key) else {
            return Ok(Vec::new());
        };
        let page = PageRequest {
            limit: NOTIFICATION_WINDOW,
            after: None,
        };
        Ok(self
            .deployments
            .page_deployments(Some(&parts.event_type), &page)
            .await?
            .items
            .into_iter()
            .filter(|d| d.key == key && d.kind == kind)
            .collect())
    }

    /// One job at a time per document: a version written before `running`'s, whose job no
    /// starter took up yet (its notification comes late, or its document was overwritten before
    /// it was read), never runs: it is SUPERSEDED. A subscribe followed at once by its
    /// unsubscribe runs the destroy only.
    async fn supersede_older(
        &self,
        of_key: &[Deployment],
        running: &Deployment,
    ) -> anyhow::Result<()> {
        // A record made for a hand-written document is newer than every listed one.
        let after = of_key
            .iter()
            .position(|d| d.id == running.id)
            .map_or(0, |i| i + 1);
        let older = of_key[after..].iter().filter(|d| {
            d.status == DeploymentStatus::Pending
                && d.object_version.is_none()
                && d.execution.is_none()
        });
        for d in older {
            let mut superseded = d.clone();
            superseded.advance(DeploymentStatus::Superseded, now())?;
            // A starter that took it up since it was read keeps it: its execution runs.
            if self.moved(&superseded, d).await? {
                info!(deployment = %d.id, by = %running.id, "superseded before it started");
            }
        }
        Ok(())
    }

    /// Writes `to` only while the record is still `from` as read; `false` when another writer
    /// (a starter of the same document, a retry) moved it first, and nothing was written.
    async fn moved(&self, to: &Deployment, from: &Deployment) -> anyhow::Result<bool> {
        match self.deployments.replace_deployment(to, from).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The job that the document `bytes` at `key` names (`deployment_id`, written by the
    /// portal with its domain change), when it is a job of that document.
    async fn claimed_job(
        &self,
        kind: DeployKind,
        key: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Option<Deployment>> {
        let claimed = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| {
                v.get("deployment_id")
                    .and_then(|id| id.as_str())
                    .map(str::to_string)
            });
        let Some(id) = claimed else {
            return Ok(None);
        };
        Ok(self
            .deployments
            .get_deployment(&id)
            .await?
            .filter(|d| d.key == key && d.kind == kind))
    }

    /// The portal records a PENDING deployment before it writes the document, and a stop may
    /// interrupt one mid-way: a deployment of this key that no starter took up yet resumes under
    /// its own id. A document written by hand, or written again under the id of a deployment
    /// that already has its version and execution (a re-upload while it builds, one that
    /// ended), gets a new record, not stored yet (`false`): a job works on the one version it
    /// was started on, and the new one waits its turn behind it.
    async fn deployment_for(
        &self,
        kind: DeployKind,
        bucket: Bucket,
        key: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(Deployment, bool)> {
        if let Some(existing) = self.claimed_job(kind, key, bytes).await?
            && existing.status == DeploymentStatus::Pending
            && existing.object_version.is_none()
            && existing.execution.is_none()
        {
            return Ok((existing, true));
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
        Ok((d, false))
    }
}

/// Why a status write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The deployment ended, or another execution runs it now: this one's write is refused, as
    /// DynamoDB refuses the state machine's conditional write.
    #[error("stale: {0}")]
    Stale(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Whether a job of the document newer than `chosen` waits for its document: committed with its
/// domain change (PENDING), never read by a starter. `of_key` is newest first.
fn awaited(of_key: &[Deployment], chosen: &Deployment) -> bool {
    of_key
        .iter()
        .take_while(|d| d.id != chosen.id)
        .any(|d| d.status == DeploymentStatus::Pending && d.object_version.is_none())
        && of_key.iter().any(|d| d.id == chosen.id)
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
    fn execution_names_fit_step_functions_and_differ_per_object_version_deployment_and_attempt() {
        let a = execution_name(
            "local-publisher-components-bucket",
            "order_created/1/deploy.json",
            "a1",
            "d",
            1,
        );
        let b = execution_name(
            "local-publisher-components-bucket",
            "order_created/1/deploy.json",
            "b2",
            "d",
            1,
        );
        assert_eq!(
            a,
            execution_name(
                "local-publisher-components-bucket",
                "order_created/1/deploy.json",
                "a1",
                "d",
                1
            )
        );
        assert_ne!(a, b);
        let retried = execution_name(
            "local-publisher-components-bucket",
            "order_created/1/deploy.json",
            "a1",
            "d",
            2,
        );
        assert_ne!(a, retried);
        assert!(retried.len() <= 80);
        let reverted = execution_name(
            "local-publisher-components-bucket",
            "order_created/1/deploy.json",
            "a1",
            "e",
            1,
        );
        assert_ne!(a, reverted);
        assert!(a.len() <= 80);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    fn describe(request: serde_json::Value) -> DescribeBuild {
        serde_json::from_value(request).expect("a describe_build request")
    }

    #[test]
    fn the_build_to_describe_is_the_returned_one_or_the_one_in_a_failed_builds_cause() {
        let succeeded = describe(serde_json::json!({"deployment_id": "d", "build_id": "p:1"}));
        assert_eq!(succeeded.build_id().as_deref(), Some("p:1"));

        // A failed startBuild.sync task's cause is the build, as JSON.
        let cause = serde_json::json!({"Build": {"Id": "p:2", "BuildStatus": "FAILED"}});
        let failed = describe(serde_json::json!({
            "deployment_id": "d",
            "failure": {"Error": "States.TaskFailed", "Cause": cause.to_string()}
        }));
        assert_eq!(failed.build_id().as_deref(), Some("p:2"));

        for failure in [
            serde_json::json!({"Error": "Build.Failed", "Cause": "cdk synth failed"}),
            serde_json::json!({"Error": "CodeBuild.AccountLimitExceededException", "Cause": "{\"Message\": \"limit\"}"}),
            serde_json::json!({"Error": "Build.Failed", "Cause": null}),
            serde_json::json!({"Error": "States.Timeout"}),
        ] {
            let request = describe(serde_json::json!({"deployment_id": "d", "failure": failure}));
            assert_eq!(request.build_id(), None, "{failure}");
        }
    }
}
