//! The CodeBuild adapter with `aws-smithy-mocks`: moto's CodeBuild is a stub whose builds never
//! fail and carry no log link, so the failure paths are exercised here.

use aws_sdk_codebuild::Client;
use aws_sdk_codebuild::config::retry::RetryConfig;
use aws_sdk_codebuild::error::ErrorMetadata;
use aws_sdk_codebuild::operation::batch_get_builds::{BatchGetBuildsError, BatchGetBuildsOutput};
use aws_sdk_codebuild::types::{
    Build, BuildPhase, BuildPhaseType, LogsLocation, PhaseContext, StatusType,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use busway_aws::codebuild::CodeBuildReader;
use busway_core::deployment::{BuildInfo, BuildPhase as Phase};
use busway_core::provisioning::BuildReader;

const ID: &str = "dev-busway-consumer-build:0b4c8a7e-1f0e-4c2a-9d47-5c0b8b0d6d11";
const DEEP_LINK: &str = "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logEvent:group=/aws/codebuild/dev-busway-consumer-build;stream=0b4c8a7e";

fn phase(kind: BuildPhaseType, status: StatusType, seconds: i64, message: &str) -> BuildPhase {
    BuildPhase::builder()
        .phase_type(kind)
        .phase_status(status)
        .duration_in_seconds(seconds)
        .contexts(
            PhaseContext::builder()
                .status_code(if message.is_empty() {
                    ""
                } else {
                    "COMMAND_EXECUTION_ERROR"
                })
                .message(message)
                .build(),
        )
        .build()
}

fn failed_build() -> Build {
    Build::builder()
        .id(ID)
        .build_status(StatusType::Failed)
        .phases(phase(
            BuildPhaseType::Install,
            StatusType::Succeeded,
            12,
            "",
        ))
        .phases(phase(
            BuildPhaseType::Build,
            StatusType::Failed,
            95,
            "Error while executing command: make provision-consumer. Reason: exit status 2",
        ))
        .phases(
            BuildPhase::builder()
                .phase_type(BuildPhaseType::Completed)
                .build(),
        )
        .logs(LogsLocation::builder().deep_link(DEEP_LINK).build())
        .build()
}

#[tokio::test]
async fn a_failed_build_is_described_with_its_phases_and_log_link() {
    let rule = mock!(Client::batch_get_builds)
        .match_requests(|req| req.ids() == [ID.to_string()])
        .then_output(|| {
            BatchGetBuildsOutput::builder()
                .builds(failed_build())
                .build()
        });
    let reader = CodeBuildReader::new(mock_client!(aws_sdk_codebuild, [&rule]));

    let info = reader.build(ID).await.expect("an answer");

    assert_eq!(
        info,
        Some(BuildInfo {
            id: ID.into(),
            status: Some("FAILED".into()),
            phases: vec![
                Phase {
                    name: "INSTALL".into(),
                    status: Some("SUCCEEDED".into()),
                    duration_seconds: Some(12),
                    message: None,
                },
                Phase {
                    name: "BUILD".into(),
                    status: Some("FAILED".into()),
                    duration_seconds: Some(95),
                    message: Some(
                        "Error while executing command: make provision-consumer. Reason: exit status 2"
                            .into()
                    ),
                },
                Phase {
                    name: "COMPLETED".into(),
                    status: None,
                    duration_seconds: None,
                    message: None,
                },
            ],
            logs_url: Some(DEEP_LINK.into()),
        })
    );
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn a_build_codebuild_does_not_know_is_none() {
    let rule = mock!(Client::batch_get_builds)
        .then_output(|| BatchGetBuildsOutput::builder().builds_not_found(ID).build());
    let reader = CodeBuildReader::new(mock_client!(aws_sdk_codebuild, [&rule]));

    assert_eq!(reader.build(ID).await.expect("an answer"), None);
}

#[tokio::test]
async fn throttling_is_an_error_that_says_codebuild_is_unavailable() {
    let rule = mock!(Client::batch_get_builds).then_error(|| {
        BatchGetBuildsError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate exceeded")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_codebuild, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    let reader = CodeBuildReader::new(client);

    let e = reader.build(ID).await.expect_err("throttled");

    assert!(format!("{e:#}").contains("unavailable"), "{e:#}");
    assert!(format!("{e:#}").contains(ID), "{e:#}");
}
