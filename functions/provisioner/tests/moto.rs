//! The provisioner over the real wire on moto server (started here, with its real Step Functions
//! engine): deploy.json objects in S3, deployment records in DynamoDB through `busway-aws`'s
//! adapters, executions started on a state machine, builds read from CodeBuild.

mod support;

use std::sync::Arc;

use aws_sdk_codebuild::types::{
    ArtifactsType, ComputeType, EnvironmentType, ProjectArtifacts, ProjectEnvironment,
    ProjectSource, SourceType,
};
use busway_aws::codebuild::CodeBuildReader;
use busway_aws::sfn::SfnStarter;
use busway_aws::{DynamoStore, S3ObjectStore};
use busway_core::deploy::{DeployAction, DeployKind};
use busway_core::deployment::{Deployment, DeploymentStatus};
use busway_core::ports::{Bucket, DeploymentStore};
use busway_core::provisioning::Provisioner;
use busway_provisioner::{Handler, Request};
use busway_tests::moto::{self, Moto};
use serde_json::{Value, json};
use support::{buckets, s3_notification, s3_notification_of};

const TABLE: &str = "busway-provisioner-test";
const KEY: &str = "order_created/1/deploy.json";
const ROLE: &str = "arn:aws:iam::123456789012:role/busway-test";

struct Platform {
    handler: Handler,
    s3: aws_sdk_s3::Client,
    sfn: aws_sdk_sfn::Client,
    codebuild: aws_sdk_codebuild::Client,
    store: Arc<DynamoStore>,
    state_machine_arn: String,
    _moto: Moto,
}

async fn platform() -> Platform {
    platform_running(
        r#"{"StartAt": "Started", "States": {"Started": {"Type": "Pass", "End": true}}}"#,
    )
    .await
}

/// A platform whose state machine is `definition`.
async fn platform_running(definition: &str) -> Platform {
    let moto = Moto::start().await;
    let sdk = moto::sdk(&moto.endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    DynamoStore::create_table(&ddb, TABLE)
        .await
        .expect("table created");
    let s3 = moto::s3(&sdk);
    for bucket in [buckets().publisher, buckets().subscriber] {
        s3.create_bucket()
            .bucket(bucket)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                    .build(),
            )
            .send()
            .await
            .expect("bucket created");
    }
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    // What the machine does is statemachines/test_moto.py's concern; here only starts count.
    let state_machine_arn = sfn
        .create_state_machine()
        .name("busway-provisioning")
        .definition(definition)
        .role_arn(ROLE)
        .send()
        .await
        .expect("state machine created")
        .state_machine_arn()
        .to_string();
    let store = Arc::new(DynamoStore::new(ddb, TABLE));
    let codebuild = aws_sdk_codebuild::Client::new(&sdk);
    let handler = Handler {
        provisioner: Provisioner {
            store: store.clone(),
            deployments: store.clone(),
            objects: Arc::new(S3ObjectStore::new(s3.clone(), buckets())),
        },
        starter: SfnStarter::new(sfn.clone(), &state_machine_arn),
        builds: Arc::new(CodeBuildReader::new(codebuild.clone())),
        buckets: buckets(),
    };
    Platform {
        handler,
        s3,
        sfn,
        codebuild,
        store,
        state_machine_arn,
        _moto: moto,
    }
}

impl Platform {
    /// Writes the object at `KEY`; returns its version id (`None` in a bucket without
    /// versioning, where a version is named by its content).
    async fn write(&self, body: Value) -> Option<String> {
        self.write_raw(body.to_string().into_bytes()).await
    }

    async fn write_raw(&self, body: Vec<u8>) -> Option<String> {
        self.s3
            .put_object()
            .bucket(buckets().publisher)
            .key(KEY)
            .body(body.into())
            .send()
            .await
            .expect("object written")
            .version_id()
            .map(str::to_string)
    }

    async fn executions(&self) -> Vec<Value> {
        let listed = self
            .sfn
            .list_executions()
            .state_machine_arn(&self.state_machine_arn)
            .send()
            .await
            .expect("executions listed");
        let mut inputs = Vec::new();
        for execution in listed.executions() {
            let described = self
                .sfn
                .describe_execution()
                .execution_arn(execution.execution_arn())
                .send()
                .await
                .expect("described");
            inputs.push(
                serde_json::from_str(described.input().unwrap_or_default()).expect("JSON input"),
            );
        }
        inputs
    }

    async fn versioned(&self) {
        for bucket in [buckets().publisher, buckets().subscriber] {
            self.s3
                .put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .expect("versioning on");
        }
    }

    /// What the portal does for one change of the version at `KEY`: commits its PENDING job,
    /// then writes the document that names it. Returns the job and the document's version id.
    async fn change(&self, action: DeployAction) -> (Deployment, String) {
        let mut job = Deployment::pending(
            busway_core::deployment::new_id(),
            DeployKind::Producer,
            Bucket::Publisher.base_name().into(),
            KEY.into(),
            busway_core::now(),
        );
        job.action = Some(action);
        job.event_type = Some("order_created".parse().expect("a name"));
        job.version = Some(busway_core::Version::FIRST);
        self.store.put_deployment(&job).await.expect("the job");
        let version = self
            .write(json!({"deployment_id": job.id, "action": action}))
            .await
            .expect("a version id");
        (job, version)
    }

    /// What the portal does for one change of subscription `id` (a UUID, as the portal makes):
    /// commits its PENDING job, then writes the document at the subscription's own key. Returns the job and the version id.
    async fn subscription_change(&self, id: &str, action: DeployAction) -> (Deployment, String) {
        let key = subscription_key(id);
        let mut job = Deployment::pending(
            busway_core::deployment::new_id(),
            DeployKind::Consumer,
            Bucket::Subscriber.base_name().into(),
            key.clone(),
            busway_core::now(),
        );
        job.action = Some(action);
        job.event_type = Some("order_created".parse().expect("a name"));
        job.version = Some(busway_core::Version::FIRST);
        job.subscription_id = Some(id.into());
        self.store.put_deployment(&job).await.expect("the job");
        let version = self
            .s3
            .put_object()
            .bucket(buckets().subscriber)
            .key(&key)
            .body(
                json!({"deployment_id": job.id, "action": action})
                    .to_string()
                    .into_bytes()
                    .into(),
            )
            .send()
            .await
            .expect("object written")
            .version_id()
            .map(str::to_string)
            .expect("a version id");
        (job, version)
    }

    async fn notify(&self) {
        self.handler
            .handle(s3_notification(&buckets().publisher, KEY))
            .await
            .expect("the notification is handled");
    }

    async fn task(&self, payload: Value) -> Result<Value, lambda_runtime::Diagnostic> {
        let request: Request = serde_json::from_value(payload).expect("a task request");
        self.handler.handle(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_handler_starts_one_execution_per_object_version_however_often_it_is_notified() {
    let p = platform().await;

    // Written by hand, so no deployment claims it: the handler records one.
    p.write(json!({"written": "by hand", "v": 1})).await;
    for _ in 0..3 {
        p.notify().await;
    }
    p.write(json!({"written": "by hand", "v": 2})).await;
    p.notify().await;

    let executions = p
        .sfn
        .list_executions()
        .state_machine_arn(&p.state_machine_arn)
        .send()
        .await
        .expect("executions listed");
    let executions = executions.executions();
    assert_eq!(executions.len(), 2, "{executions:?}");
    assert_ne!(executions[0].name(), executions[1].name());
    let deployments = p
        .store
        .list_deployments(Some(&"order_created".parse().expect("a name")))
        .await
        .expect("deployments listed");
    assert_eq!(deployments.len(), 2, "one deployment per object version");
    for execution in executions {
        let described = p
            .sfn
            .describe_execution()
            .execution_arn(execution.execution_arn())
            .send()
            .await
            .expect("described");
        let input: Value =
            serde_json::from_str(described.input().unwrap_or_default()).expect("JSON input");
        assert_eq!(input["key"], KEY);
        assert_eq!(input["bucket"], buckets().publisher);
        assert!(
            deployments
                .iter()
                .any(|d| input["deployment_id"] == d.id.as_str()),
            "{input} starts a recorded deployment"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_failures_read_from_s3_keep_their_error_type() {
    let p = platform().await;
    let body = json!({"written": "by hand"});
    p.write(body.clone()).await;
    let version = busway_core::deployment::object_version(body.to_string().as_bytes());
    let validate = |key: &str| json!({"task": "validate", "deployment_id": "d-1", "bucket": buckets().publisher, "key": key, "object_version": version, "kind": "producer"});

    let invalid = p.task(validate(KEY)).await.expect_err("not a deploy.json");
    assert_eq!(invalid.error_type, "DeployConfig.Invalid");

    let missing = p
        .task(validate("order_created/2/deploy.json"))
        .await
        .expect_err("no such object");
    assert_eq!(missing.error_type, "DeployConfig.NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_versioned_bucket_the_notified_version_is_the_one_validated_and_a_late_one_starts_nothing()
 {
    let p = platform().await;
    p.s3.put_bucket_versioning()
        .bucket(buckets().publisher)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning on");
    let first = p
        .write(json!({"written": "by hand", "v": 1}))
        .await
        .expect("a version id");
    p.handler
        .handle(s3_notification_of(&buckets().publisher, KEY, Some(&first)))
        .await
        .expect("started");
    let inputs = p.executions().await;
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0]["object_version"], first.as_str());

    // Edited while the first execution runs: its validate still reads the version it names.
    let second = p.write_raw(b"oops".to_vec()).await.expect("a version id");
    let validate = |version: &str| json!({"task": "validate", "deployment_id": inputs[0]["deployment_id"], "bucket": buckets().publisher, "key": KEY, "object_version": version, "kind": "producer"});
    let of_first = p
        .task(validate(&first))
        .await
        .expect_err("not a deploy.json");
    assert!(
        !of_first.error_message.contains("not valid JSON"),
        "the first version is JSON: {}",
        of_first.error_message
    );
    let of_second = p.task(validate(&second)).await.expect_err("not JSON");
    assert!(
        of_second.error_message.contains("not valid JSON"),
        "{}",
        of_second.error_message
    );

    // The first version's notification again, now late: nothing starts. The second's starts
    // its own deployment on its own version.
    p.handler
        .handle(s3_notification_of(&buckets().publisher, KEY, Some(&first)))
        .await
        .expect("ignored");
    assert_eq!(p.executions().await.len(), 1);
    p.handler
        .handle(s3_notification_of(&buckets().publisher, KEY, Some(&second)))
        .await
        .expect("started");
    let inputs = p.executions().await;
    assert_eq!(inputs.len(), 2);
    let newest = inputs
        .iter()
        .find(|i| i["object_version"] == second.as_str())
        .expect("an execution of the second version");
    let oldest = inputs
        .iter()
        .find(|i| i["object_version"] == first.as_str())
        .expect("the execution of the first version");
    assert_ne!(newest["deployment_id"], oldest["deployment_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_build_records_what_codebuild_answers() {
    let p = platform().await;
    p.write(json!({"written": "by hand"})).await;
    p.notify().await;
    let deployment = p
        .store
        .list_deployments(None)
        .await
        .expect("listed")
        .pop()
        .expect("the notification recorded a deployment");
    p.codebuild
        .create_project()
        .name("busway-producer-build")
        .source(
            ProjectSource::builder()
                .r#type(SourceType::S3)
                .location("busway-repository/source.zip")
                .build()
                .expect("a source"),
        )
        .artifacts(
            ProjectArtifacts::builder()
                .r#type(ArtifactsType::NoArtifacts)
                .build()
                .expect("no artifacts"),
        )
        .environment(
            ProjectEnvironment::builder()
                .r#type(EnvironmentType::LinuxContainer)
                .image("aws/codebuild/standard:7.0")
                .compute_type(ComputeType::BuildGeneral1Small)
                .build()
                .expect("an environment"),
        )
        .service_role(ROLE)
        .send()
        .await
        .expect("project created");
    let build_id = p
        .codebuild
        .start_build()
        .project_name("busway-producer-build")
        .send()
        .await
        .expect("build started")
        .build_value
        .and_then(|b| b.id)
        .expect("a build id");

    p.task(json!({"task": "describe_build", "deployment_id": deployment.id, "build_id": build_id}))
        .await
        .expect("described");

    let recorded = p
        .store
        .get_deployment(&deployment.id)
        .await
        .expect("read")
        .expect("exists");
    let build = recorded.build.expect("the build is recorded");
    assert_eq!(build.id, build_id);
    assert_eq!(build.status.as_deref(), Some("SUCCEEDED"));
    assert_eq!(
        build.phases.first().map(|p| p.name.as_str()),
        Some("SUBMITTED")
    );
    assert!(
        build
            .logs_url
            .as_deref()
            .is_some_and(|u| u.contains("logEvent")),
        "{:?}",
        build.logs_url
    );
}

/// A version deployed then deleted at once (a subscribe then its unsubscribe is the same on the
/// subscriber bucket): whichever notification comes first, only the destroy starts, on its own
/// document version, and the deploy is SUPERSEDED without ever running.
async fn a_deploy_then_its_destroy_at_once_starts_only_the_destroy(destroy_notified_first: bool) {
    let p = platform().await;
    p.versioned().await;
    let (deploy, first) = p.change(DeployAction::Deploy).await;
    let (destroy, second) = p.change(DeployAction::Destroy).await;
    let mut order = [first.clone(), second.clone()];
    if destroy_notified_first {
        order.reverse();
    }
    for version in order.iter().chain(order.iter()) {
        p.handler
            .handle(s3_notification_of(&buckets().publisher, KEY, Some(version)))
            .await
            .expect("handled");
    }

    let inputs = p.executions().await;
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert_eq!(inputs[0]["deployment_id"], destroy.id.as_str());
    assert_eq!(inputs[0]["object_version"], second.as_str());
    let read = |id: String| {
        let store = p.store.clone();
        async move {
            store
                .get_deployment(&id)
                .await
                .expect("read")
                .expect("the job")
        }
    };
    let deploy = read(deploy.id).await;
    assert_eq!(deploy.status, DeploymentStatus::Superseded, "{deploy:?}");
    assert_eq!(deploy.execution, None, "never started");
    let destroy = read(destroy.id).await;
    assert_eq!(destroy.status, DeploymentStatus::Pending);
    assert_eq!(destroy.object_version.as_deref(), Some(second.as_str()));
    assert!(destroy.execution.is_some(), "{destroy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_then_its_destroy_at_once_starts_only_the_destroy_when_notified_in_order() {
    a_deploy_then_its_destroy_at_once_starts_only_the_destroy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_then_its_destroy_at_once_starts_only_the_destroy_when_notified_out_of_order() {
    a_deploy_then_its_destroy_at_once_starts_only_the_destroy(true).await;
}

fn subscription_key(id: &str) -> String {
    format!("order_created/1/u2/{id}/deploy.json")
}

/// Create, delete and create again of a subscription to one target (the second create is a new
/// subscription, with a document of its own): whatever the order of the notifications, and each
/// twice, the first document starts only its destroy (its deploy SUPERSEDED, never run) and the
/// second its deploy, so exactly one subscriber stack is left.
async fn create_delete_create_starts_one_destroy_and_exactly_one_deploy(reversed: bool) {
    let p = platform().await;
    p.versioned().await;
    let (first, second) = (
        busway_core::deployment::new_id(),
        busway_core::deployment::new_id(),
    );
    let (deploy, v1) = p.subscription_change(&first, DeployAction::Deploy).await;
    let (destroy, v2) = p.subscription_change(&first, DeployAction::Destroy).await;
    let (again, v3) = p.subscription_change(&second, DeployAction::Deploy).await;
    let mut notifications = [
        (subscription_key(&first), v1),
        (subscription_key(&first), v2),
        (subscription_key(&second), v3),
    ];
    if reversed {
        notifications.reverse();
    }
    for (key, version) in notifications.iter().chain(notifications.iter()) {
        p.handler
            .handle(s3_notification_of(
                &buckets().subscriber,
                key,
                Some(version),
            ))
            .await
            .expect("handled");
    }

    let inputs = p.executions().await;
    let mut started: Vec<&str> = inputs
        .iter()
        .filter_map(|i| i["deployment_id"].as_str())
        .collect();
    started.sort_unstable();
    let mut expected = [destroy.id.as_str(), again.id.as_str()];
    expected.sort_unstable();
    assert_eq!(started, expected, "{inputs:?}");
    let deploy = p
        .store
        .get_deployment(&deploy.id)
        .await
        .expect("read")
        .expect("the job");
    assert_eq!(deploy.status, DeploymentStatus::Superseded, "{deploy:?}");
    assert_eq!(deploy.execution, None, "never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_delete_create_starts_one_destroy_and_exactly_one_deploy_in_order() {
    create_delete_create_starts_one_destroy_and_exactly_one_deploy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_delete_create_starts_one_destroy_and_exactly_one_deploy_out_of_order() {
    create_delete_create_starts_one_destroy_and_exactly_one_deploy(true).await;
}

/// A hand edit reverted: the reverted document is provisioned again as a job of its own, under an
/// execution name never used before, whether the bucket names versions by id (versioned) or by
/// content (the same content as the first job's).
async fn a_reverted_hand_edit_is_provisioned_again(versioned: bool) {
    let p = platform().await;
    if versioned {
        p.versioned().await;
    }
    let ended = |status: DeploymentStatus| {
        let store = p.store.clone();
        async move {
            let mut jobs = store
                .list_deployments(Some(&"order_created".parse().expect("a name")))
                .await
                .expect("listed");
            let mut job = jobs.remove(0);
            for step in [DeploymentStatus::Validating, DeploymentStatus::Building] {
                job.advance(step, busway_core::now()).expect("a step");
            }
            match status {
                DeploymentStatus::Succeeded => job.advance(status, busway_core::now()),
                _ => job.fail("Build.Failed", "cdk deploy exited 1", busway_core::now()),
            }
            .expect("ended");
            store.put_deployment(&job).await.expect("recorded");
            job
        }
    };
    let original = json!({"written": "by hand", "v": 1});
    p.write(original.clone()).await;
    p.notify().await;
    let first = ended(DeploymentStatus::Succeeded).await;
    p.write(json!({"written": "by hand", "v": 2})).await;
    p.notify().await;
    ended(DeploymentStatus::Failed).await;
    p.write(original).await;
    p.notify().await;
    // A notification of the reverted document repeated: nothing more starts.
    p.notify().await;

    let inputs = p.executions().await;
    assert_eq!(inputs.len(), 3, "{inputs:?}");
    let reverted = p
        .store
        .list_deployments(Some(&"order_created".parse().expect("a name")))
        .await
        .expect("listed")
        .remove(0);
    assert_ne!(reverted.id, first.id, "a job of its own");
    assert_eq!(reverted.status, DeploymentStatus::Pending);
    assert_ne!(
        reverted.execution, first.execution,
        "a name never used before"
    );
    if !versioned {
        assert_eq!(
            reverted.object_version, first.object_version,
            "the same content names the same version"
        );
    }
    assert!(
        inputs
            .iter()
            .any(|i| i["deployment_id"] == reverted.id.as_str()),
        "{inputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverted_hand_edit_is_provisioned_again_in_a_versioned_bucket() {
    a_reverted_hand_edit_is_provisioned_again(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverted_hand_edit_is_provisioned_again_when_versions_are_named_by_content() {
    a_reverted_hand_edit_is_provisioned_again(false).await;
}

/// A versioned platform whose executions hold RUNNING, as one whose build runs does, and the
/// first job of its document, started and recorded BUILDING (as read before and after).
async fn a_job_building() -> (Platform, Deployment, Deployment) {
    // Executions hold RUNNING, as one whose build runs does.
    let p = platform_running(
        r#"{"StartAt": "Building", "States": {"Building": {"Type": "Wait", "Seconds": 600, "End": true}}}"#,
    )
    .await;
    p.versioned().await;
    let (first, v1) = p.change(DeployAction::Deploy).await;
    p.handler
        .handle(s3_notification_of(&buckets().publisher, KEY, Some(&v1)))
        .await
        .expect("handled");
    let mut building = p
        .store
        .get_deployment(&first.id)
        .await
        .expect("read")
        .expect("the first job");
    for status in [DeploymentStatus::Validating, DeploymentStatus::Building] {
        building
            .advance(status, busway_core::now())
            .expect("moves on");
    }
    p.store.put_deployment(&building).await.expect("written");
    (p, first, building)
}

/// One job at a time per document: a later version of a document notified while the earlier
/// version's job builds starts its execution, whose turn (the state machine's first step) waits
/// while the earlier job has not ended and its execution runs; it comes once that job ended, or
/// once its execution stopped without ending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_version_of_a_document_waits_its_turn_while_the_earlier_job_runs() {
    let (p, first, building) = a_job_building().await;

    let (second, v2) = p.change(DeployAction::Destroy).await;
    p.handler
        .handle(s3_notification_of(&buckets().publisher, KEY, Some(&v2)))
        .await
        .expect("handled");
    let inputs = p.executions().await;
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    let turn = |id: &str| {
        json!({"task": "await_turn", "deployment_id": id,
            "bucket": buckets().publisher, "key": KEY})
    };
    let waiting = p
        .task(turn(&second.id))
        .await
        .expect_err("the second waits");
    assert_eq!(waiting.error_type, "Turn.Waiting", "{waiting:?}");
    assert!(waiting.error_message.contains(&first.id), "{waiting:?}");
    // Nothing older holds the first.
    p.task(turn(&first.id)).await.expect("the first's turn");

    // The first job ended (its execution winds down): the second's turn.
    let mut ended = building.clone();
    ended
        .advance(DeploymentStatus::Succeeded, busway_core::now())
        .expect("moves on");
    p.store.put_deployment(&ended).await.expect("written");
    p.task(turn(&second.id)).await.expect("the second's turn");

    // A job whose execution was stopped by hand never ends; it holds nothing once stopped.
    p.store.put_deployment(&building).await.expect("written");
    p.task(turn(&second.id))
        .await
        .expect_err("the second waits again");
    let execution = building.execution.clone().expect("named by its starter");
    let arn = p
        .state_machine_arn
        .replacen(":stateMachine:", ":execution:", 1)
        + ":"
        + &execution;
    p.sfn
        .stop_execution()
        .execution_arn(arn)
        .send()
        .await
        .expect("stopped");
    p.task(turn(&second.id)).await.expect("the second's turn");
}

/// An operator re-uploads a document while its job builds (the same content, naming the same
/// job): the new version gets a job of its own, which waits its turn behind the running one,
/// and the running job keeps its version and its execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_reuploaded_while_its_job_builds_gets_a_job_of_its_own() {
    let (p, first, building) = a_job_building().await;

    let v2 = p
        .write(json!({"deployment_id": first.id, "action": DeployAction::Deploy}))
        .await
        .expect("a version id");
    p.handler
        .handle(s3_notification_of(&buckets().publisher, KEY, Some(&v2)))
        .await
        .expect("handled");

    let running = p
        .store
        .get_deployment(&first.id)
        .await
        .expect("read")
        .expect("the first job");
    assert_eq!(running, building, "the running job is not taken over");
    let inputs = p.executions().await;
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    let reuploaded = inputs
        .iter()
        .find(|i| i["object_version"] == v2.as_str())
        .expect("an execution of the new version");
    let id = reuploaded["deployment_id"]
        .as_str()
        .expect("a deployment id");
    assert_ne!(id, first.id, "a job of its own");
    let job = p
        .store
        .get_deployment(id)
        .await
        .expect("read")
        .expect("the new job");
    assert_eq!(job.status, DeploymentStatus::Pending);
    assert_eq!(job.object_version.as_deref(), Some(v2.as_str()));
    let waiting = p
        .task(json!({"task": "await_turn", "deployment_id": id,
            "bucket": buckets().publisher, "key": KEY}))
        .await
        .expect_err("the new job waits");
    assert_eq!(waiting.error_type, "Turn.Waiting", "{waiting:?}");
    assert!(waiting.error_message.contains(&first.id), "{waiting:?}");
}
