//! The provisioning state machine's task contract (`statemachines/provisioning.asl.json`): the
//! stable `error_type` strings the provisioner's task handlers return, which are the only custom
//! names the ASL `Retry`/`Catch` lists may use, the task names a `lambda:invoke` payload carries,
//! and the functions a task may invoke. `functions/core/tests/asl_contract.rs` checks the ASL
//! against this file.

/// The deploy.json breaks its JSON Schema or a naming rule, or its key does not match its
/// content. Retrying cannot help; the deployment ends FAILED with the validation details.
pub const DEPLOY_CONFIG_INVALID: &str = "DeployConfig.Invalid";

/// The deploy.json named by the execution input no longer exists (deleted or overwritten by a
/// newer version before the execution read it). Not retried.
pub const DEPLOY_CONFIG_NOT_FOUND: &str = "DeployConfig.NotFound";

/// The object store, event store or schema registry did not answer (throttled, timed out,
/// 5xx). Transient: the state machine retries with backoff.
pub const STORE_UNAVAILABLE: &str = "Store.Unavailable";

/// The build applied the deploy.json and failed (CDK deploy failed, or locally the broker
/// refused the document). Not retried: the build already retries what is transient.
pub const BUILD_FAILED: &str = "Build.Failed";

/// The builder did not answer a question about a build (CodeBuild throttled, timed out, 5xx).
/// Transient: the state machine retries with backoff, then records the deployment without it.
pub const BUILD_INFO_UNAVAILABLE: &str = "BuildInfo.Unavailable";

/// The deployment no longer expects this execution's document version (it ended, or a later
/// attempt runs it): the build changes nothing, and the execution ends in the Fail state
/// `Stale` without writing the record, as its conditional status writes are refused.
pub const DEPLOYMENT_STALE: &str = "Deployment.Stale";

/// An older job of the same document still runs its execution: this one waits its turn (the
/// state machine retries the turn at an interval, and fails the job after about an hour).
pub const TURN_WAITING: &str = "Turn.Waiting";

/// What a refused conditional status write fails with (DynamoDB's error as Step Functions names
/// it; the local status writes answer the same).
pub const CONDITION_FAILED: &str = "DynamoDB.ConditionalCheckFailedException";

/// Every custom `error_type`, the closed set the ASL may name.
pub const ALL: &[&str] = &[
    DEPLOY_CONFIG_INVALID,
    DEPLOY_CONFIG_NOT_FOUND,
    STORE_UNAVAILABLE,
    BUILD_FAILED,
    BUILD_INFO_UNAVAILABLE,
    DEPLOYMENT_STALE,
    TURN_WAITING,
];

/// `task` field of the provisioner's `lambda:invoke` payload: read and validate the deploy.json.
pub const TASK_VALIDATE: &str = "validate";

/// `task` field of the provisioner's `lambda:invoke` payload: record on the deployment the build
/// that ran it (its id, phases and log link), after the build step succeeded or failed.
pub const TASK_DESCRIBE_BUILD: &str = "describe_build";

/// `task` field of the provisioner's `lambda:invoke` payload: whether the job's turn has come
/// (no older job of its document still runs), `Turn.Waiting` otherwise.
pub const TASK_AWAIT_TURN: &str = "await_turn";

/// Every task the provisioner's task handler answers.
pub const TASKS: &[&str] = &[TASK_AWAIT_TURN, TASK_VALIDATE, TASK_DESCRIBE_BUILD];

/// The Lambda functions of the platform (binary name = Lambda logical name = `--bin`).
pub const FUNCTIONS: &[&str] = &[
    "portal",
    "injector",
    "injector-sqs",
    "provisioner",
    "authorizer",
    "delivery",
];

/// The function the state machine invokes for its tasks.
pub const PROVISIONER_FUNCTION: &str = "provisioner";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_distinct_and_namespaced_outside_states() {
        let mut seen = std::collections::HashSet::new();
        for e in ALL {
            assert!(seen.insert(*e), "{e} listed twice");
            assert!(
                !e.starts_with("States."),
                "{e} uses the reserved States. prefix"
            );
            assert!(e.contains('.'), "{e} has no namespace");
        }
    }
}
