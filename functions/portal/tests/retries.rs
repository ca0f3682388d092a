//! `POST /deployments/{id}/retry` on in-memory ports: a FAILED deployment whose document was
//! written is provisioned again on the same document version, as its next attempt; anything else
//! is a conflict.

// Shared with lambda_fixture.rs, which uses the helpers this file does not.
#[allow(dead_code)]
mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use busway_core::deployment::{DeploymentStatus, STEPS_LEASE, object_version};
use busway_core::portal::Portal;
use busway_core::ports::{Bucket, DeploymentStore, ObjectStore};
use serde_json::{Value, json};
use support::call;

const KEY: &str = "scanned_parcel/1/deploy.json";

/// The statuses of a deployment's history, in order.
fn statuses(deployment: &Value) -> Vec<Value> {
    deployment["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|h| h["status"].clone())
        .collect()
}

/// The seed's event type.
fn event() -> Value {
    json!({"event_type": "scanned_parcel", "application": "parcel_tracking",
        "description": "A parcel was scanned", "connection_type": "HTTPS",
        "data": {"type": "object", "properties": {"id": {"type": "string"}}}})
}

/// The seed's event type, its deployment failed in its build after the pipeline read its
/// document.
async fn failed_build(portal: &Arc<Portal>, memory: &support::Memory) -> String {
    let (status, created) = call(portal, "POST", "/events", Some(event())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let mut d = memory
        .get_deployment(id)
        .await
        .expect("the store answers")
        .expect("the deployment");
    let document = memory
        .object(Bucket::Publisher, KEY)
        .expect("the deploy.json");
    d.object_version = Some(object_version(&document));
    d.execution = Some("deploy-first-1".into());
    for status in [DeploymentStatus::Validating, DeploymentStatus::Building] {
        d.advance(status, busway_core::now()).expect("forward");
    }
    d.fail("Build.Failed", "cdk deploy exited 1", busway_core::now())
        .expect("to FAILED");
    memory.put_deployment(&d).await.expect("recorded");
    id.to_string()
}

#[tokio::test]
async fn a_failed_deployment_is_provisioned_again_on_its_document_as_the_next_attempt() {
    let (portal, memory) = support::portal();
    let id = failed_build(&portal, &memory).await;
    let document = memory.object(Bucket::Publisher, KEY);

    let (status, retried) = call(&portal, "POST", &format!("/deployments/{id}/retry"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["status"], "PENDING");
    assert_eq!(retried["attempt"], 2);
    assert_eq!(retried["error"], Value::Null);
    assert_eq!(
        retried["execution"],
        Value::Null,
        "the next execution is not started yet"
    );
    let history = statuses(&retried);
    assert_eq!(
        history,
        ["PENDING", "VALIDATING", "BUILDING", "FAILED", "PENDING"]
    );
    assert_eq!(memory.started(), [(Bucket::Publisher, KEY.to_string())]);
    assert_eq!(
        memory.object(Bucket::Publisher, KEY),
        document,
        "the document is not written again"
    );

    let (status, body) = call(&portal, "POST", &format!("/deployments/{id}/retry"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a PENDING deployment: {body}");
    assert_eq!(body["error"]["code"], "conflict");
}

/// A job whose portal request was cut off after the domain commit, before its document was
/// written: refused while its steps may still be running, then run again in the same attempt
/// once it has waited `STEPS_LEASE`, which writes its document.
#[tokio::test]
async fn a_job_whose_steps_were_cut_off_runs_them_again_once_it_has_waited() {
    let (portal, memory) = support::portal();
    let (status, created) = call(&portal, "POST", "/events", Some(event())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["deployment_id"].as_str().expect("a deployment id");
    memory.forget_object(Bucket::Publisher, KEY);

    let (status, body) = call(&portal, "POST", &format!("/deployments/{id}/retry"), None).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "its steps may still run: {body}"
    );

    let mut d = memory
        .get_deployment(id)
        .await
        .expect("the store answers")
        .expect("the deployment");
    for change in &mut d.history {
        change.at -= STEPS_LEASE;
    }
    memory.put_deployment(&d).await.expect("recorded");
    let (status, retried) = call(&portal, "POST", &format!("/deployments/{id}/retry"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(
        (&retried["status"], &retried["attempt"]),
        (&json!("PENDING"), &json!(1))
    );
    let history = statuses(&retried);
    assert_eq!(history, ["PENDING", "PENDING"]);
    assert!(
        memory.object(Bucket::Publisher, KEY).is_some(),
        "the document is written"
    );
}

#[tokio::test]
async fn a_failed_deployment_whose_document_changed_since_is_not_retried() {
    let (portal, memory) = support::portal();
    let id = failed_build(&portal, &memory).await;
    memory
        .put_object(Bucket::Publisher, KEY, b"{\"edited\": true}".to_vec())
        .await
        .expect("written");

    let (status, body) = call(&portal, "POST", &format!("/deployments/{id}/retry"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(message.contains("changed since"), "{message}");
    assert!(memory.started().is_empty());
    let d = memory
        .get_deployment(&id)
        .await
        .expect("the store answers")
        .expect("the deployment");
    assert_eq!((d.status, d.attempt), (DeploymentStatus::Failed, 1));
}

/// A bucket whose deploy.json writes land, and the pipeline takes the job up at once, but whose
/// answer is lost (a timeout after S3 stored the object): the portal's step reports a failure.
struct LandsThenTimesOut(Arc<support::Memory>);

#[async_trait::async_trait]
impl ObjectStore for LandsThenTimesOut {
    async fn put_object(&self, bucket: Bucket, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        self.0.put_object(bucket, key, body.clone()).await?;
        if bucket == Bucket::Publisher {
            let id: Value = serde_json::from_slice(&body)?;
            let id = id["deployment_id"].as_str().unwrap_or_default();
            let read = self.0.get_deployment(id).await?.expect("the job");
            let mut taken = read.clone();
            taken.object_version = Some(object_version(&body));
            taken.execution = Some("deploy-taken-1".into());
            taken.advance(DeploymentStatus::Validating, busway_core::now())?;
            self.0.replace_deployment(&taken, &read).await?;
            anyhow::bail!("timed out waiting for S3's answer");
        }
        Ok(())
    }

    async fn get_object(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.0.get_object(bucket, key).await
    }

    async fn put_new_object(
        &self,
        bucket: Bucket,
        key: &str,
        body: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.0.put_new_object(bucket, key, body, metadata).await
    }

    async fn object_metadata(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        self.0.object_metadata(bucket, key).await
    }
}

#[tokio::test]
async fn a_step_that_failed_after_its_write_landed_leaves_the_job_to_its_execution() {
    let (with, memory) = support::portal();
    let portal = Arc::new(Portal {
        objects: Arc::new(LandsThenTimesOut(memory.clone())),
        store: with.store.clone(),
        deployments: with.deployments.clone(),
        registry: with.registry.clone(),
        deliveries: None,
        control: None,
        provisioning: with.provisioning.clone(),
        keys: with.keys.clone(),
        bus_kind: with.bus_kind,
        idempotency: with.idempotency.clone(),
        audit: with.audit.clone(),
        targets: with.targets.clone(),
        secrets: with.secrets.clone(),
        allow_loopback_targets: false,
    });
    let (status, created) = call(&portal, "POST", "/events", Some(event())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let d = memory
        .get_deployment(id)
        .await
        .expect("the store answers")
        .expect("the job");
    // Not FAILED over the execution that runs it.
    assert_eq!(d.status, DeploymentStatus::Validating, "{d:?}");
    assert_eq!(d.execution.as_deref(), Some("deploy-taken-1"));
    assert_eq!(d.error, None);
}
