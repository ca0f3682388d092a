//! Deployment records: every deploy.json gets one, moving PENDING → VALIDATING → BUILDING →
//! SUCCEEDED | FAILED, with the time of each step and the error that ended it; a job a later one
//! of the same document replaced before it started is SUPERSEDED.

use serde::{Deserialize, Serialize};

use crate::deploy::{DeployAction, DeployKind};
use crate::{EventTypeName, Timestamp, Version};

/// Ordered as the pipeline runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Pending,
    Validating,
    Building,
    Succeeded,
    Failed,
    /// A later version of the same document was written before this job started: that one
    /// runs instead, and this one never will.
    Superseded,
}

impl DeploymentStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Superseded)
    }

    /// The only moves the pipeline makes: forward one step, to FAILED from any unfinished step,
    /// or to SUPERSEDED from PENDING.
    pub fn can_move_to(self, next: DeploymentStatus) -> bool {
        use DeploymentStatus::*;
        matches!(
            (self, next),
            (Pending, Validating)
                | (Validating, Building)
                | (Building, Succeeded)
                | (Pending, Superseded)
        ) || (!self.is_final() && next == Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Validating => "VALIDATING",
            Self::Building => "BUILDING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Superseded => "SUPERSEDED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Validating,
            Self::Building,
            Self::Succeeded,
            Self::Failed,
            Self::Superseded,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: DeploymentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub kind: DeployKind,
    /// `None` until the document was read: a hand-broken file has no readable action.
    pub action: Option<DeployAction>,
    /// Where the deploy.json lives: bucket name and key.
    pub bucket: String,
    pub key: String,
    pub event_type: Option<EventTypeName>,
    pub version: Option<Version>,
    pub subscription_id: Option<String>,
    /// The version of the document this deployment runs, once it was read (the S3 `VersionId`
    /// on AWS, the SHA-256 of the content locally): validate and build work on exactly this one,
    /// and a repeated notification of it starts nothing new.
    #[serde(default)]
    pub object_version: Option<String>,
    /// The execution that runs the current attempt: the state machine's status writes are
    /// conditional on it, so an execution that is no longer the deployment's moves nothing.
    /// `None` in records of format 1 and before an execution started.
    #[serde(default)]
    pub execution: Option<String>,
    /// 1, then one more per `POST /deployments/{id}/retry`; format 1 records are their first.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub status: DeploymentStatus,
    pub history: Vec<StatusChange>,
    /// The error name that ended a FAILED deployment (`busway_core::tasks`, or a `States.*` name).
    pub error: Option<String>,
    /// What went wrong, in words.
    #[serde(default)]
    pub cause: Option<String>,
    /// The build that ran the document, once the pipeline described it: a failed deployment
    /// says which phase failed and where its logs are.
    #[serde(default)]
    pub build: Option<BuildInfo>,
}

/// One build of a deploy.json (a CodeBuild build on AWS, the local build step on one machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub id: String,
    /// The build's own status (`SUCCEEDED`, `FAILED`, `FAULT`, `TIMED_OUT`, `STOPPED`, ...).
    pub status: Option<String>,
    pub phases: Vec<BuildPhase>,
    /// Where the build's log can be read (the CloudWatch Logs console on AWS).
    pub logs_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildPhase {
    pub name: String,
    pub status: Option<String>,
    pub duration_seconds: Option<i64>,
    /// What the builder said about the phase; for a failed one, why it failed.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deployment cannot move from {from:?} to {to:?}")]
pub struct InvalidTransition {
    pub from: DeploymentStatus,
    pub to: DeploymentStatus,
}

impl Deployment {
    pub fn pending(
        id: String,
        kind: DeployKind,
        bucket: String,
        key: String,
        at: Timestamp,
    ) -> Self {
        Self {
            id,
            kind,
            action: None,
            bucket,
            key,
            event_type: None,
            version: None,
            subscription_id: None,
            object_version: None,
            execution: None,
            attempt: first_attempt(),
            status: DeploymentStatus::Pending,
            history: vec![StatusChange {
                status: DeploymentStatus::Pending,
                at,
            }],
            error: None,
            cause: None,
            build: None,
        }
    }

    pub fn advance(
        &mut self,
        next: DeploymentStatus,
        at: Timestamp,
    ) -> Result<(), InvalidTransition> {
        if !self.status.can_move_to(next) {
            return Err(InvalidTransition {
                from: self.status,
                to: next,
            });
        }
        self.status = next;
        self.history.push(StatusChange { status: next, at });
        Ok(())
    }

    pub fn fail(
        &mut self,
        error: impl Into<String>,
        cause: impl Into<String>,
        at: Timestamp,
    ) -> Result<(), InvalidTransition> {
        self.advance(DeploymentStatus::Failed, at)?;
        self.error = Some(error.into());
        self.cause = Some(cause.into());
        Ok(())
    }
}

fn first_attempt() -> u32 {
    1
}

/// Only a FAILED deployment is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deployment is {0:?}: only a FAILED deployment can be retried")]
pub struct NotRetryable(pub DeploymentStatus);

/// How long the portal's steps after a domain commit (registry, backup, deploy.json) may take
/// before a retry takes them for cut off: far longer than a portal request with its step
/// retries, so only a request whose host died (or a lost notification) leaves one that old.
pub const STEPS_LEASE: time::Duration = time::Duration::minutes(5);

impl Deployment {
    /// A job the portal committed whose steps never reached a starter: PENDING, with no
    /// document version and no execution, unchanged for [`STEPS_LEASE`]. Its request was cut
    /// off after the commit (the host stopped, the function timed out) or its document's
    /// notification was lost; a retry runs its steps again.
    pub fn steps_cut_off(&self, now: Timestamp) -> bool {
        self.status == DeploymentStatus::Pending
            && self.object_version.is_none()
            && self.execution.is_none()
            && self
                .history
                .last()
                .is_some_and(|h| now - h.at >= STEPS_LEASE)
    }

    /// Starts the next attempt of a FAILED deployment on the same document version: PENDING
    /// again, its earlier statuses kept in the history, the last attempt's failure and build
    /// cleared. The next execution is named after the attempt.
    pub fn retry(&mut self, at: Timestamp) -> Result<(), NotRetryable> {
        if self.status != DeploymentStatus::Failed {
            return Err(NotRetryable(self.status));
        }
        self.attempt += 1;
        self.status = DeploymentStatus::Pending;
        self.history.push(StatusChange {
            status: DeploymentStatus::Pending,
            at,
        });
        self.execution = None;
        self.error = None;
        self.cause = None;
        self.build = None;
        Ok(())
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The words of a failure the state machine recorded as `{"Error": ..., "Cause": ...}`
/// (statemachines/README.md), whose `Cause` may be absent or null; text that is not such JSON is
/// the cause itself.
pub fn failure_cause(failure: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(failure) {
        Ok(serde_json::Value::Object(fields)) => match fields.get("Cause") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(cause)) => Some(cause.clone()),
            Some(other) => Some(other.to_string()),
        },
        _ => Some(failure.to_string()),
    }
}

/// The version of a configuration object: the SHA-256 of its content, in hex.
pub fn object_version(content: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(content))
}

/// What provisioning made of an event version or a subscription, read from the jobs of its
/// document: a record the store calls ACTIVE is not live until a job deployed it, and stays live
/// when a later job (a hand edit) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provisioning {
    pub status: ProvisioningStatus,
    /// The newest job of the document (not one a later job replaced before it started).
    pub deployment_id: String,
    /// Whether the route or rule exists: the newest job that succeeded deployed it.
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProvisioningStatus {
    /// The newest job has not ended.
    Provisioning,
    /// The newest job deployed it.
    Live,
    /// The newest job destroyed it.
    Removed,
    /// The newest job failed (`live` says whether an earlier deploy still stands).
    Failed,
}

impl Provisioning {
    /// From the jobs of one document, newest first; `None` when it has none.
    pub fn of(jobs: &[&Deployment]) -> Option<Self> {
        let newest = jobs
            .iter()
            .find(|d| d.status != DeploymentStatus::Superseded)?;
        let live = jobs
            .iter()
            .find(|d| d.status == DeploymentStatus::Succeeded)
            .is_some_and(|d| d.action == Some(DeployAction::Deploy));
        let status = match newest.status {
            DeploymentStatus::Succeeded if live => ProvisioningStatus::Live,
            DeploymentStatus::Succeeded => ProvisioningStatus::Removed,
            DeploymentStatus::Failed => ProvisioningStatus::Failed,
            _ => ProvisioningStatus::Provisioning,
        };
        Some(Self {
            status,
            deployment_id: newest.id.clone(),
            live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::DeploymentStatus::*;
    use super::*;

    #[test]
    fn causes_are_read_from_the_failure_json_the_state_machine_writes() {
        let failure = r#"{"Error":"DeployConfig.Invalid","Cause":"key does not match"}"#;
        assert_eq!(
            failure_cause(failure).as_deref(),
            Some("key does not match")
        );
        assert_eq!(
            failure_cause(r#"{"Error":"Build.Failed","Cause":null}"#),
            None
        );
        assert_eq!(failure_cause(r#"{"Error":"Build.Failed"}"#), None);
        assert_eq!(failure_cause("plain words").as_deref(), Some("plain words"));
    }

    #[test]
    fn provisioning_is_read_from_the_newest_job_and_the_newest_that_succeeded() {
        let job = |id: &str, action: DeployAction, status: DeploymentStatus| {
            let mut d = Deployment::pending(
                id.into(),
                DeployKind::Producer,
                "publisher-components-bucket".into(),
                "order_created/1/deploy.json".into(),
                crate::now(),
            );
            d.action = Some(action);
            d.status = status;
            d
        };
        let of = |jobs: &[Deployment]| {
            let jobs: Vec<&Deployment> = jobs.iter().collect();
            Provisioning::of(&jobs).map(|p| (p.status, p.deployment_id, p.live))
        };
        use DeployAction::{Deploy, Destroy};
        use ProvisioningStatus as P;
        assert_eq!(of(&[]), None);
        assert_eq!(
            of(&[job("a", Deploy, Building)]),
            Some((P::Provisioning, "a".into(), false))
        );
        assert_eq!(
            of(&[job("a", Deploy, Failed)]),
            Some((P::Failed, "a".into(), false))
        );
        // A hand edit that failed leaves the earlier deploy standing.
        assert_eq!(
            of(&[job("b", Deploy, Failed), job("a", Deploy, Succeeded)]),
            Some((P::Failed, "b".into(), true))
        );
        assert_eq!(
            of(&[job("b", Destroy, Succeeded), job("a", Deploy, Succeeded)]),
            Some((P::Removed, "b".into(), false))
        );
        // A job replaced before it started is not the newest: the one that replaced it is.
        assert_eq!(
            of(&[
                job("c", Deploy, Superseded),
                job("b", Deploy, Succeeded),
                job("a", Deploy, Failed)
            ]),
            Some((P::Live, "b".into(), true))
        );
        // A destroy under way: the rule still stands.
        assert_eq!(
            of(&[job("b", Destroy, Validating), job("a", Deploy, Succeeded)]),
            Some((P::Provisioning, "b".into(), true))
        );
    }

    #[test]
    fn deployments_only_move_forward_or_fail() {
        let mut d = Deployment::pending(
            new_id(),
            DeployKind::Producer,
            "b".into(),
            "k".into(),
            crate::now(),
        );
        assert!(d.advance(Building, crate::now()).is_err());
        d.advance(Validating, crate::now())
            .expect("pending → validating");
        d.advance(Building, crate::now())
            .expect("validating → building");
        d.fail("Build.Failed", "cdk deploy failed", crate::now())
            .expect("building → failed");
        assert_eq!(d.error.as_deref(), Some("Build.Failed"));
        assert_eq!(d.cause.as_deref(), Some("cdk deploy failed"));
        assert!(d.advance(Succeeded, crate::now()).is_err());
        assert!(d.fail("Build.Failed", "again", crate::now()).is_err());
        let statuses: Vec<_> = d.history.iter().map(|h| h.status).collect();
        assert_eq!(statuses, [Pending, Validating, Building, Failed]);
    }

    #[test]
    fn only_a_failed_deployment_is_retried_and_its_history_is_kept() {
        let mut d = Deployment::pending(
            new_id(),
            DeployKind::Consumer,
            "b".into(),
            "k".into(),
            crate::now(),
        );
        assert_eq!(d.retry(crate::now()), Err(NotRetryable(Pending)));
        d.advance(Validating, crate::now())
            .expect("pending → validating");
        d.execution = Some("deploy-x".into());
        d.fail("Build.Failed", "no endpoint", crate::now())
            .expect("validating → failed");
        d.retry(crate::now())
            .expect("a failed deployment is retried");
        assert_eq!((d.status, d.attempt), (Pending, 2));
        assert_eq!((d.error, d.cause, d.execution), (None, None, None));
        let statuses: Vec<_> = d.history.iter().map(|h| h.status).collect();
        assert_eq!(statuses, [Pending, Validating, Failed, Pending]);
    }

    #[test]
    fn a_record_of_the_first_format_is_the_first_attempt_of_no_known_execution() {
        let d = Deployment::pending(
            new_id(),
            DeployKind::Producer,
            "b".into(),
            "k".into(),
            crate::now(),
        );
        let mut old = serde_json::to_value(&d).expect("serializes");
        let fields = old.as_object_mut().expect("an object");
        fields.remove("attempt");
        fields.remove("execution");
        let read: Deployment = serde_json::from_value(old).expect("deserializes");
        assert_eq!((read.attempt, read.execution), (1, None));
    }

    #[test]
    fn a_record_written_before_builds_were_described_still_reads() {
        let mut d = Deployment::pending(
            new_id(),
            DeployKind::Consumer,
            "b".into(),
            "k".into(),
            crate::now(),
        );
        let mut old = serde_json::to_value(&d).expect("serializes");
        old.as_object_mut().expect("an object").remove("build");
        let read: Deployment = serde_json::from_value(old).expect("deserializes");
        assert_eq!(read.build, None);

        d.build = Some(BuildInfo {
            id: "p:1".into(),
            status: Some("FAILED".into()),
            phases: vec![BuildPhase {
                name: "BUILD".into(),
                status: Some("FAILED".into()),
                duration_seconds: Some(3),
                message: Some("exit status 2".into()),
            }],
            logs_url: None,
        });
        let back: Deployment =
            serde_json::from_value(serde_json::to_value(&d).expect("serializes"))
                .expect("deserializes");
        assert_eq!(back, d);
    }
}
