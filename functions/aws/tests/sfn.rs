//! The Step Functions starter's answers, with `aws-smithy-mocks`: a repeated start is not an
//! error, throttling is worth a retry. The real wire is covered by the provisioner's moto test.

use aws_sdk_sfn::Client;
use aws_sdk_sfn::config::retry::RetryConfig;
use aws_sdk_sfn::error::ErrorMetadata;
use aws_sdk_sfn::operation::start_execution::{StartExecutionError, StartExecutionOutput};
use aws_sdk_sfn::types::error::ExecutionAlreadyExists;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use busway_aws::sfn::{SfnStarter, StartError, Started};
use busway_core::deploy::DeployKind;
use busway_core::provisioning::{Execution, ExecutionInput};

const MACHINE: &str = "arn:aws:states:eu-west-1:123456789012:stateMachine:dev-busway-provisioning";

fn execution() -> Execution {
    Execution {
        name: "deploy-0123abcd".into(),
        input: ExecutionInput {
            deployment_id: "d-1".into(),
            bucket: "dev-publisher-components-bucket-123456789012".into(),
            key: "order_created/1/deploy.json".into(),
            object_version: "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY".into(),
            kind: DeployKind::Producer,
        },
    }
}

fn starter(rule: &aws_smithy_mocks::Rule) -> SfnStarter {
    let client = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [rule], |c| c
        .retry_config(RetryConfig::disabled()));
    SfnStarter::new(client, MACHINE)
}

#[tokio::test]
async fn the_execution_is_started_by_name_with_its_input_as_json() {
    let rule = mock!(Client::start_execution)
        .match_requests(|req| {
            let input: serde_json::Value =
                serde_json::from_str(req.input().unwrap_or_default()).unwrap_or_default();
            req.state_machine_arn() == Some(MACHINE)
                && req.name() == Some("deploy-0123abcd")
                && input["deployment_id"] == "d-1"
                && input["kind"] == "producer"
                && input["key"] == "order_created/1/deploy.json"
        })
        .then_output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:aws:states:eu-west-1:123456789012:execution:m:deploy-0123abcd")
                .start_date(aws_sdk_sfn::primitives::DateTime::from_secs(0))
                .build()
                .expect("a complete output")
        });

    let started = starter(&rule).start(&execution()).await.expect("started");

    assert_eq!(
        started,
        Started::Running(
            "arn:aws:states:eu-west-1:123456789012:execution:m:deploy-0123abcd".into()
        )
    );
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn an_execution_that_already_exists_means_already_started() {
    let rule = mock!(Client::start_execution).then_error(|| {
        StartExecutionError::ExecutionAlreadyExists(
            ExecutionAlreadyExists::builder()
                .message("Execution Already Exists")
                .build(),
        )
    });

    let started = starter(&rule)
        .start(&execution())
        .await
        .expect("not an error");

    assert_eq!(started, Started::AlreadyStarted);
}

#[tokio::test]
async fn throttling_is_a_retryable_error() {
    let rule = mock!(Client::start_execution).then_error(|| {
        StartExecutionError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate exceeded")
                .build(),
        )
    });

    let e = starter(&rule)
        .start(&execution())
        .await
        .expect_err("throttled");

    assert!(matches!(e, StartError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn a_missing_state_machine_is_not_retryable() {
    let rule = mock!(Client::start_execution).then_error(|| {
        StartExecutionError::StateMachineDoesNotExist(
            aws_sdk_sfn::types::error::StateMachineDoesNotExist::builder()
                .message("State Machine Does Not Exist")
                .build(),
        )
    });

    let e = starter(&rule)
        .start(&execution())
        .await
        .expect_err("no machine");

    assert!(matches!(e, StartError::Unexpected(_)), "{e:?}");
}
