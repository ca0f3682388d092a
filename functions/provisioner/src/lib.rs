//! The provisioner Lambda: the S3-notification handler that starts the provisioning state
//! machine for each deploy.json written, and the task handlers the state machine invokes
//! (`busway_core::tasks::TASKS`). The steps themselves are `busway_core::provisioning`'s; this
//! crate maps the Lambda event shapes onto them and their failures onto Lambda errors whose
//! `errorType` the state machine's `Retry`/`Catch` match.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::s3::S3Event;
use busway_aws::BucketNames;
use busway_aws::sfn::{SfnStarter, StartError, Started};
use busway_core::ports::Bucket;
use busway_core::provisioning::{BuildReader, DescribeBuild, Provisioner, TaskError};
use busway_core::tasks;
use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{error, info, instrument, warn};

pub use busway_aws::sfn::STATE_MACHINE_ARN;

/// What the provisioner reads from its environment beyond the AWS host's table and buckets
/// (`busway_aws::Config`), named as `ENV_VARS` of infra/lib/names.ts names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_machine_arn: String,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            state_machine_arn: std::env::var(STATE_MACHINE_ARN)
                .with_context(|| format!("{STATE_MACHINE_ARN} is not set"))?,
        })
    }
}

/// The two event shapes the function receives: the state machine's task payloads (tagged by
/// `task`) and S3 notifications.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Request {
    Task(Task),
    S3(S3Event),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    AwaitTurn {
        deployment_id: String,
        bucket: String,
        key: String,
    },
    Validate {
        deployment_id: String,
        bucket: String,
        key: String,
        object_version: String,
    },
    DescribeBuild(DescribeBuild),
}

/// `errorType` of an S3 notification that could not start every deployment; Lambda retries the
/// asynchronous invocation, and the starts that succeeded are not repeated (execution names).
/// A job whose execution did not start ended FAILED with the same error.
pub use busway_core::provisioning::NOT_STARTED;

pub struct Handler {
    pub provisioner: Provisioner,
    pub starter: SfnStarter,
    pub builds: Arc<dyn BuildReader>,
    pub buckets: BucketNames,
}

impl Handler {
    pub async fn handle(&self, request: Request) -> Result<Value, Diagnostic> {
        match request {
            Request::S3(event) => self.notified(event).await.map(|()| Value::Null),
            Request::Task(task) => self.task(task).await.map_err(diagnostic),
        }
    }

    /// One notification may carry several records: each is started, and a failure of one does
    /// not keep the others from starting.
    #[instrument(skip_all, fields(records = event.records.len()))]
    pub async fn notified(&self, event: S3Event) -> Result<(), Diagnostic> {
        let mut failed = Vec::new();
        for record in event.records {
            let (Some(bucket_name), Some(key)) = (record.s3.bucket.name, record.s3.object.key)
            else {
                warn!("an S3 record without bucket or key");
                continue;
            };
            let key = decode_key(&key);
            let version = record.s3.object.version_id;
            let Some(bucket) = self.bucket(&bucket_name) else {
                warn!(
                    bucket = bucket_name,
                    "not a configuration bucket of this platform"
                );
                continue;
            };
            if let Err(e) = self
                .start(bucket, &bucket_name, &key, version.as_deref())
                .await
            {
                error!(bucket = bucket_name, key, error = %format!("{e:#}"), "provisioning not started");
                failed.push(format!("{bucket_name}/{key}: {e:#}"));
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        Err(Diagnostic {
            error_type: NOT_STARTED.into(),
            error_message: failed.join("; "),
        })
    }

    async fn start(
        &self,
        bucket: Bucket,
        bucket_name: &str,
        key: &str,
        version: Option<&str>,
    ) -> anyhow::Result<()> {
        let Some(execution) = self
            .provisioner
            .start(bucket, bucket_name, key, version)
            .await?
        else {
            info!(bucket = bucket_name, key, "nothing to provision");
            return Ok(());
        };
        match self
            .starter
            .start_recorded(&self.provisioner, &execution)
            .await
        {
            Ok(Started::Running(_) | Started::AlreadyStarted) => Ok(()),
            Err(e @ (StartError::Unavailable(_) | StartError::Unexpected(_))) => Err(e.into()),
        }
    }

    pub async fn task(&self, task: Task) -> Result<Value, TaskError> {
        match task {
            Task::AwaitTurn {
                deployment_id,
                bucket,
                key,
            } => {
                let bucket = self.configuration_bucket(&bucket)?;
                self.provisioner
                    .await_turn(&deployment_id, bucket, &key, &self.starter)
                    .await?;
                Ok(Value::Null)
            }
            Task::Validate {
                deployment_id,
                bucket,
                key,
                object_version,
            } => {
                let bucket = self.configuration_bucket(&bucket)?;
                let config = self
                    .provisioner
                    .validate(&deployment_id, bucket, &key, &object_version)
                    .await?;
                Ok(json!(config))
            }
            Task::DescribeBuild(request) => {
                let build = self
                    .provisioner
                    .describe_build(&request, self.builds.as_ref())
                    .await?;
                Ok(json!(build))
            }
        }
    }

    fn configuration_bucket(&self, name: &str) -> Result<Bucket, TaskError> {
        self.bucket(name).ok_or_else(|| {
            TaskError::new(
                tasks::DEPLOY_CONFIG_NOT_FOUND,
                format!("{name} is not a configuration bucket of this platform"),
            )
        })
    }

    fn bucket(&self, name: &str) -> Option<Bucket> {
        Bucket::ALL
            .into_iter()
            .find(|b| self.buckets.name(*b) == name)
    }
}

/// The Lambda error the state machine sees: `errorType` is the task's stable error type.
pub fn diagnostic(e: TaskError) -> Diagnostic {
    Diagnostic {
        error_type: e.error_type.to_string(),
        error_message: e.cause,
    }
}

/// S3 notifications carry the key URL-encoded, with `+` for a space.
pub fn decode_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = key
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded_as_s3_notifications_encode_them() {
        assert_eq!(
            decode_key("order_created/1/deploy.json"),
            "order_created/1/deploy.json"
        );
        assert_eq!(decode_key("a+b%2Fc%3D%C3%A9"), "a b/c=é");
        assert_eq!(decode_key("100%"), "100%");
    }

    #[test]
    fn every_task_the_state_machine_names_is_a_request_of_this_handler() {
        for task in tasks::TASKS {
            let payload = json!({
                "task": task,
                "deployment_id": "d",
                "bucket": "b",
                "key": "k",
                "object_version": "v",
                "kind": "producer",
                "build_id": "p:1",
            });
            let request: Request = serde_json::from_value(payload).expect("a request");
            assert!(matches!(request, Request::Task(_)), "{task}");
        }
    }

    #[test]
    fn a_task_error_becomes_a_lambda_error_of_its_error_type() {
        let d = diagnostic(TaskError::new(tasks::DEPLOY_CONFIG_INVALID, "bad"));
        assert_eq!(d.error_type, "DeployConfig.Invalid");
        assert_eq!(d.error_message, "bad");
    }
}
