//! What a CodeBuild build did, for the deployment record: its status, each phase with its
//! duration and CodeBuild's message about it, and the deep link to its CloudWatch log. The
//! provisioner's describe_build task reads it with `BatchGetBuilds`.

use async_trait::async_trait;
use aws_sdk_codebuild::Client;
use aws_sdk_codebuild::types::Build;
use busway_core::deployment::{BuildInfo, BuildPhase};
use busway_core::provisioning::BuildReader;
use tracing::instrument;

use crate::error::is_transient;

#[derive(Debug, Clone)]
pub struct CodeBuildReader {
    client: Client,
}

impl CodeBuildReader {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl BuildReader for CodeBuildReader {
    #[instrument(skip(self))]
    async fn build(&self, id: &str) -> anyhow::Result<Option<BuildInfo>> {
        let out = self
            .client
            .batch_get_builds()
            .ids(id)
            .send()
            .await
            .map_err(|e| {
                let why = if is_transient(&e) {
                    "is unavailable (throttled or failing)"
                } else {
                    "failed"
                };
                anyhow::Error::new(e).context(format!("CodeBuild BatchGetBuilds of {id} {why}"))
            })?;
        Ok(out
            .builds()
            .iter()
            .find(|b| b.id() == Some(id))
            .map(build_info))
    }
}

fn build_info(b: &Build) -> BuildInfo {
    BuildInfo {
        id: b.id().unwrap_or_default().to_string(),
        status: b.build_status().map(|s| s.as_str().to_string()),
        phases: b
            .phases()
            .iter()
            .map(|p| {
                let messages: Vec<&str> = p
                    .contexts()
                    .iter()
                    .filter_map(|c| c.message())
                    .filter(|m| !m.is_empty())
                    .collect();
                BuildPhase {
                    name: p
                        .phase_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    status: p.phase_status().map(|s| s.as_str().to_string()),
                    duration_seconds: p.duration_in_seconds(),
                    message: (!messages.is_empty()).then(|| messages.join("; ")),
                }
            })
            .collect(),
        logs_url: b.logs().and_then(|l| l.deep_link()).map(str::to_string),
    }
}
