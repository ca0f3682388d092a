//! Starts provisioning executions on Step Functions. The S3-notification handler of the
//! provisioner calls it once `busway_core::provisioning::Provisioner::start` has recorded the
//! deployment; the execution's name is derived from the object version, so starting one twice
//! is harmless.

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_sfn::Client;
use aws_sdk_sfn::error::DisplayErrorContext;
use aws_sdk_sfn::types::ExecutionStatus;
use busway_core::ports::{Bucket, ProvisioningStarter};
use busway_core::provisioning::{Execution, ExecutionReader, Provisioner};
use tracing::{error, info, instrument, warn};

use crate::config::BucketNames;
use crate::error::is_transient;

/// What StartExecution did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// An execution of this name runs (its ARN): started now, or started before with the same
    /// input and still running, which Step Functions answers the same way.
    Running(String),
    /// An execution of this name has ended, or runs with another input: this object version
    /// was started already.
    AlreadyStarted,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Throttled, timed out or a 5xx after the SDK's own retries: worth retrying later.
    #[error("Step Functions did not start the execution, retry later: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The provisioning state machine, by ARN.
#[derive(Debug, Clone)]
pub struct SfnStarter {
    client: Client,
    state_machine_arn: String,
}

impl SfnStarter {
    pub fn new(client: Client, state_machine_arn: impl Into<String>) -> Self {
        Self {
            client,
            state_machine_arn: state_machine_arn.into(),
        }
    }

    #[instrument(skip(self, execution), fields(name = %execution.name, deployment = %execution.input.deployment_id))]
    pub async fn start(&self, execution: &Execution) -> Result<Started, StartError> {
        let input =
            serde_json::to_string(&execution.input).context("serializing the execution input")?;
        let answer = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(&execution.name)
            .input(input)
            .send()
            .await;
        match answer {
            Ok(out) => {
                info!(execution = out.execution_arn(), "provisioning started");
                Ok(Started::Running(out.execution_arn().to_string()))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_execution_already_exists()) =>
            {
                info!("provisioning of this object version was started before");
                Ok(Started::AlreadyStarted)
            }
            Err(e) if is_transient(&e) => {
                Err(StartError::Unavailable(DisplayErrorContext(&e).to_string()))
            }
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("StartExecution of {}", self.state_machine_arn))
                .into()),
        }
    }
}

impl SfnStarter {
    /// Starts `execution`, which `Provisioner::start` recorded on its job. When it did not
    /// start and none of its name runs, the job ends FAILED (`Provisioner::not_started`) so
    /// that it can be retried, and the error is returned.
    pub async fn start_recorded(
        &self,
        provisioner: &Provisioner,
        execution: &Execution,
    ) -> Result<Started, StartError> {
        let e = match self.start(execution).await {
            Err(e) => e,
            started => return started,
        };
        // StartExecution may have started it and lost the answer. When that cannot be told, the
        // job is failed all the same: an execution that did start finds its first status write
        // refused and builds nothing, and the retry runs the job again.
        if self.running(&execution.name).await.unwrap_or(false) {
            return Ok(Started::Running(self.execution_arn(&execution.name)));
        }
        let cause = format!("StartExecution failed: {e:#}");
        match provisioner.not_started(execution, &cause).await {
            Ok(true) => {
                warn!(deployment = %execution.input.deployment_id, %cause, "the job failed: its execution did not start")
            }
            Ok(false) => {
                info!(deployment = %execution.input.deployment_id, "the job moved since its execution was named")
            }
            Err(failed) => {
                error!(deployment = %execution.input.deployment_id, error = %format!("{failed:#}"), "the job that did not start could not be failed")
            }
        }
        Err(e)
    }

    /// The ARN of this state machine's execution `name`, as Step Functions makes it.
    fn execution_arn(&self, name: &str) -> String {
        format!(
            "{}:{name}",
            self.state_machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        )
    }
}

#[async_trait]
impl ExecutionReader for SfnStarter {
    /// `DescribeExecution`: RUNNING is running; an execution that never started (its starter
    /// named it, then failed to start it) is not.
    async fn running(&self, execution: &str) -> anyhow::Result<bool> {
        let answer = self
            .client
            .describe_execution()
            .execution_arn(self.execution_arn(execution))
            .send()
            .await;
        match answer {
            Ok(out) => Ok(*out.status() == ExecutionStatus::Running),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_execution_does_not_exist()) =>
            {
                Ok(false)
            }
            Err(e) => Err(anyhow::Error::new(e).context("DescribeExecution")),
        }
    }
}

/// The provisioning state machine's ARN, as infra/lib/names.ts `ENV_VARS` names it.
pub const STATE_MACHINE_ARN: &str = "BUSWAY_STATE_MACHINE_ARN";

/// What the S3 notification handler does for one object, for callers other than S3: the portal
/// provisions a retried deployment's document again (its current version) this way.
pub struct SfnProvisioning {
    pub provisioner: Provisioner,
    pub starter: SfnStarter,
    pub buckets: BucketNames,
}

impl SfnProvisioning {
    /// On the host's table and buckets, starting executions of `state_machine_arn`.
    pub fn for_host(host: &crate::host::Host, state_machine_arn: impl Into<String>) -> Self {
        let store = host.store();
        Self {
            provisioner: Provisioner {
                store: store.clone(),
                deployments: store,
                objects: host.objects(),
            },
            starter: SfnStarter::new(Client::new(host.sdk()), state_machine_arn),
            buckets: host.config.buckets.clone(),
        }
    }
}

#[async_trait]
impl ProvisioningStarter for SfnProvisioning {
    async fn start(&self, bucket: Bucket, key: &str) -> anyhow::Result<()> {
        let name = self.buckets.name(bucket);
        let Some(execution) = self.provisioner.start(bucket, name, key, None).await? else {
            return Ok(());
        };
        self.starter
            .start_recorded(&self.provisioner, &execution)
            .await?;
        Ok(())
    }
}
