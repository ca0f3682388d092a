//! The provisioner's handlers called directly, as the Lambda runtime calls them: ports are the
//! embedded SQLite store and objects in memory, the SDK clients are `aws-smithy-mocks` clients.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_codebuild::operation::batch_get_builds::{BatchGetBuildsError, BatchGetBuildsOutput};
use aws_sdk_codebuild::types::{Build, BuildPhase, BuildPhaseType, LogsLocation, StatusType};
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionError;
use aws_sdk_sfn::operation::start_execution::{StartExecutionError, StartExecutionOutput};
use aws_sdk_sfn::types::error::{ExecutionDoesNotExist, StateMachineDoesNotExist};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use busway_aws::codebuild::CodeBuildReader;
use busway_aws::sfn::{SfnProvisioning, SfnStarter};
use busway_core::deploy::DeployKind;
use busway_core::deployment::{Deployment, DeploymentStatus};
use busway_core::portal::{CreateEvent, Portal};
use busway_core::ports::{Bucket, DeploymentStore, ObjectStore};
use busway_core::provisioning::{ExecutionReader, Provisioner, RecordError};
use busway_local::store::SqliteStore;
use busway_provisioner::{Handler, NOT_STARTED, Request};
use busway_tests::memory::MemoryObjects;
use serde_json::{Value, json};
use support::{buckets, s3_notification, s3_notification_of};

const MACHINE: &str = "arn:aws:states:eu-west-1:123456789012:stateMachine:dev-busway-provisioning";

struct Setup {
    handler: Handler,
    portal: Portal,
    objects: Arc<MemoryObjects>,
    store: SqliteStore,
    /// (name, input) of every StartExecution call.
    starts: Arc<Mutex<Vec<(String, Value)>>>,
    _dir: tempfile::TempDir,
}

fn setup(codebuild: &[&Rule]) -> Setup {
    setup_starting(codebuild, true)
}

/// With `starting` false, Step Functions refuses every StartExecution (the state machine is
/// gone) and knows no execution.
fn setup_starting(codebuild: &[&Rule], starting: bool) -> Setup {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SqliteStore::open(&dir.path().join("busway.db")).expect("a store");
    let objects = Arc::new(MemoryObjects::default());
    let starts = Arc::new(Mutex::new(Vec::new()));
    let recorded = starts.clone();
    let start = mock!(aws_sdk_sfn::Client::start_execution).then_compute_output(move |req| {
        let name = req.name().unwrap_or_default().to_string();
        let input = serde_json::from_str(req.input().unwrap_or("null")).unwrap_or_default();
        recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.clone(), input));
        StartExecutionOutput::builder()
            .execution_arn(format!("{MACHINE}:{name}").replace("stateMachine", "execution"))
            .start_date(aws_sdk_sfn::primitives::DateTime::from_secs(0))
            .build()
            .expect("a complete output")
    });
    let refused = mock!(aws_sdk_sfn::Client::start_execution).then_error(|| {
        StartExecutionError::StateMachineDoesNotExist(
            StateMachineDoesNotExist::builder()
                .message("State Machine Does Not Exist")
                .build(),
        )
    });
    let unknown = mock!(aws_sdk_sfn::Client::describe_execution).then_error(|| {
        DescribeExecutionError::ExecutionDoesNotExist(
            ExecutionDoesNotExist::builder()
                .message("Execution Does Not Exist")
                .build(),
        )
    });
    let sfn = if starting {
        mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&start])
    } else {
        mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&refused, &unknown])
    };
    let codebuild = mock_client!(aws_sdk_codebuild, RuleMode::MatchAny, codebuild, |c| c
        .retry_config(aws_sdk_codebuild::config::retry::RetryConfig::disabled()));
    let handler = Handler {
        provisioner: Provisioner {
            store: Arc::new(store.clone()),
            deployments: Arc::new(store.clone()),
            objects: objects.clone(),
        },
        starter: SfnStarter::new(sfn.clone(), MACHINE),
        builds: Arc::new(CodeBuildReader::new(codebuild)),
        buckets: buckets(),
    };
    let portal = Portal {
        store: Arc::new(store.clone()),
        deployments: Arc::new(store.clone()),
        registry: Arc::new(store.clone()),
        objects: objects.clone(),
        deliveries: None,
        control: None,
        provisioning: Arc::new(SfnProvisioning {
            provisioner: Provisioner {
                store: Arc::new(store.clone()),
                deployments: Arc::new(store.clone()),
                objects: objects.clone(),
            },
            starter: SfnStarter::new(sfn.clone(), MACHINE),
            buckets: buckets(),
        }),
        keys: Arc::new(store.clone()),
        bus_kind: None,
        idempotency: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        targets: Arc::new(store.clone()),
        secrets: Arc::new(store.clone()),
        allow_loopback_targets: false,
    };
    Setup {
        handler,
        portal,
        objects,
        store,
        starts,
        _dir: dir,
    }
}

impl Setup {
    fn starts(&self) -> Vec<(String, Value)> {
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers the seed's event type through the portal, which records its PENDING
    /// deployment and writes its deploy.json; returns that deployment.
    async fn registered_event(&self) -> Deployment {
        let request = CreateEvent::from_json(&json!({
            "application": "demo",
            "event_type": "scanned_parcel",
            "description": "Scanned parcel on the workshop",
            "connection_type": "HTTPS",
            "data": {
                "type": "object",
                "properties": {"dest_postal_code": {"type": "string"}},
                "required": ["dest_postal_code"]
            }
        }))
        .expect("a valid request");
        self.portal
            .create_event(request)
            .await
            .expect("registered")
            .1
    }

    async fn deployment(&self, id: &str) -> Deployment {
        self.store
            .get_deployment(id)
            .await
            .expect("the store answers")
            .expect("the deployment exists")
    }

    /// The version of the object at `key` now (the in-memory store names it by its content).
    async fn version(&self, key: &str) -> String {
        let bytes = self
            .objects
            .get_object(Bucket::Publisher, key)
            .await
            .expect("readable")
            .expect("written");
        busway_core::deployment::object_version(&bytes)
    }

    async fn task(&self, payload: Value) -> Result<Value, lambda_runtime::Diagnostic> {
        let request: Request = serde_json::from_value(payload).expect("a task request");
        self.handler.handle(request).await
    }
}

#[tokio::test]
async fn a_repeated_notification_starts_its_object_version_once_and_a_new_version_again() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;
    let publisher = buckets().publisher;

    for _ in 0..3 {
        s.handler
            .handle(s3_notification(&publisher, &deployment.key))
            .await
            .expect("started");
    }
    let starts = s.starts();
    assert_eq!(starts.len(), 3, "each notification asks Step Functions");
    assert!(
        starts.iter().all(|start| *start == starts[0]),
        "one object version is one execution name and one input: {starts:?}"
    );
    let (_, input) = &starts[0];
    assert_eq!(
        *input,
        json!({
            "deployment_id": deployment.id,
            "bucket": publisher,
            "key": "scanned_parcel/1/deploy.json",
            "object_version": s.version(&deployment.key).await,
            "kind": "producer"
        })
    );
    let first = s.version(&deployment.key).await;

    // A new version of the object, written by hand (so it claims no deployment): a new
    // deployment and a new execution.
    let mut doc: Value = serde_json::from_slice(
        &s.objects
            .get_object(Bucket::Publisher, &deployment.key)
            .await
            .expect("readable")
            .expect("written by the portal"),
    )
    .expect("JSON");
    doc.as_object_mut()
        .expect("an object")
        .remove("deployment_id");
    s.objects
        .put_object(
            Bucket::Publisher,
            &deployment.key,
            doc.to_string().into_bytes(),
        )
        .await
        .expect("written");
    for _ in 0..2 {
        s.handler
            .handle(s3_notification(&publisher, &deployment.key))
            .await
            .expect("started");
    }
    let starts = s.starts();
    assert_eq!(starts.len(), 5);
    assert_eq!(starts[3], starts[4], "repeated, it is still one execution");
    assert_ne!(starts[3].0, starts[0].0, "a new object version, a new name");
    assert_ne!(starts[3].1["deployment_id"], json!(deployment.id));
    assert_eq!(
        s.store.list_deployments(None).await.expect("listed").len(),
        2
    );

    // A late notification of the first version, after the second was written, starts nothing:
    // the second has its own.
    s.handler
        .handle(s3_notification_of(
            &publisher,
            &deployment.key,
            Some(&first),
        ))
        .await
        .expect("ignored");
    assert_eq!(s.starts().len(), 5);
}

#[tokio::test]
async fn a_retried_deployment_starts_a_new_execution_on_the_same_version_and_the_old_one_is_stale()
{
    let s = setup(&[]);
    let deployment = s.registered_event().await;
    let publisher = buckets().publisher;
    s.handler
        .handle(s3_notification(&publisher, &deployment.key))
        .await
        .expect("started");
    let (first, input) = s.starts()[0].clone();
    let mut d = s.deployment(&deployment.id).await;
    assert_eq!(d.execution.as_deref(), Some(first.as_str()));
    d.fail("Build.Failed", "cdk deploy exited 1", busway_core::now())
        .expect("to FAILED");
    s.store.put_deployment(&d).await.expect("recorded");

    let retried = s
        .portal
        .retry_deployment(&deployment.id)
        .await
        .expect("a FAILED deployment is retried");
    assert_eq!(retried.attempt, 2);
    let starts = s.starts();
    assert_eq!(
        starts.len(),
        2,
        "the retry started one execution: {starts:?}"
    );
    let (second, again) = &starts[1];
    assert_ne!(*second, first, "a closed execution name is never reused");
    assert_eq!(*again, input, "the same deployment and document version");
    assert_eq!(
        s.deployment(&deployment.id).await.execution.as_deref(),
        Some(second.as_str())
    );

    // The first execution's late status write is refused; the second's moves the record.
    let stale = s
        .handler
        .provisioner
        .record(&deployment.id, &first, DeploymentStatus::Validating, None)
        .await
        .expect_err("the first execution no longer runs the deployment");
    assert!(matches!(stale, RecordError::Stale(_)), "{stale:?}");
    s.handler
        .provisioner
        .record(&deployment.id, second, DeploymentStatus::Validating, None)
        .await
        .expect("the second execution runs it");
    assert_eq!(
        s.deployment(&deployment.id).await.status,
        DeploymentStatus::Validating
    );
}

/// StartExecution refused after the starter named the execution on the job: the job ends
/// FAILED with the reason instead of staying PENDING under an execution that never ran, so the
/// notification's retry starts nothing more and the portal's retry is accepted.
#[tokio::test]
async fn a_job_whose_execution_did_not_start_ends_failed_and_can_be_retried() {
    let s = setup_starting(&[], false);
    let deployment = s.registered_event().await;

    let e = s
        .handler
        .handle(s3_notification(&buckets().publisher, &deployment.key))
        .await
        .expect_err("Step Functions refused");
    assert_eq!(e.error_type, NOT_STARTED);
    let failed = s.deployment(&deployment.id).await;
    assert_eq!(failed.status, DeploymentStatus::Failed, "{failed:?}");
    assert_eq!(failed.error.as_deref(), Some(NOT_STARTED));
    assert!(
        failed
            .cause
            .as_deref()
            .is_some_and(|c| c.contains("State Machine Does Not Exist")),
        "{failed:?}"
    );
    // Lambda's retry of the notification finds the job ended.
    s.handler
        .handle(s3_notification(&buckets().publisher, &deployment.key))
        .await
        .expect("nothing to start");

    let retried = s
        .portal
        .retry_deployment(&deployment.id)
        .await
        .expect("a job that never started is retried");
    assert_eq!(retried.attempt, 2);
    assert_eq!(
        (retried.status, retried.error.as_deref()),
        (DeploymentStatus::Failed, Some(NOT_STARTED)),
        "still refused, the retry says so: {retried:?}"
    );
}

/// A status only moves forward: a step repeated or already passed by the job's execution moves
/// nothing (on AWS the definition's condition refuses a passed one: statemachines/cases.json's
/// `passed-before`).
#[tokio::test]
async fn a_status_the_job_already_passed_moves_nothing() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;
    s.handler
        .handle(s3_notification(&buckets().publisher, &deployment.key))
        .await
        .expect("started");
    let (execution, _) = s.starts()[0].clone();
    for status in [DeploymentStatus::Validating, DeploymentStatus::Building] {
        s.handler
            .provisioner
            .record(&deployment.id, &execution, status, None)
            .await
            .expect("moves forward");
    }
    s.handler
        .provisioner
        .record(&deployment.id, &execution, DeploymentStatus::Building, None)
        .await
        .expect("a step repeated moves nothing");
    // As the local runner's resumed execution writes it: never backwards.
    s.handler
        .provisioner
        .record(
            &deployment.id,
            &execution,
            DeploymentStatus::Validating,
            None,
        )
        .await
        .expect("a step passed moves nothing");
    let d = s.deployment(&deployment.id).await;
    let history: Vec<_> = d.history.iter().map(|h| h.status).collect();
    assert_eq!(
        history,
        [
            DeploymentStatus::Pending,
            DeploymentStatus::Validating,
            DeploymentStatus::Building
        ]
    );
}

/// One job at a time per document however many deployments its event type had since: an older
/// job that still runs holds a later one even when more than a page of newer deployments (of
/// other documents of the event type) lie between them.
#[tokio::test]
async fn a_job_waits_for_an_older_one_that_runs_however_many_deployments_came_between() {
    struct Running;
    #[async_trait::async_trait]
    impl ExecutionReader for Running {
        async fn running(&self, _execution: &str) -> anyhow::Result<bool> {
            Ok(true)
        }
    }
    let s = setup(&[]);
    let job = |key: &str| {
        let mut d = Deployment::pending(
            busway_core::deployment::new_id(),
            DeployKind::Producer,
            Bucket::Publisher.base_name().into(),
            key.into(),
            busway_core::now(),
        );
        d.event_type = Some("scanned_parcel".parse().expect("a name"));
        d
    };
    let key = "scanned_parcel/1/deploy.json";
    let mut older = job(key);
    older.object_version = Some("v1".into());
    older.execution = Some("deploy-older".into());
    s.store.put_deployment(&older).await.expect("the older job");
    let mut later = job(key);
    later.object_version = Some("v2".into());
    later.execution = Some("deploy-later".into());
    s.store.put_deployment(&later).await.expect("the later job");
    for _ in 0..=busway_core::page::MAX_LIMIT {
        let other = job("scanned_parcel/2/deploy.json");
        s.store.put_deployment(&other).await.expect("a newer job");
    }

    let waiting = s
        .handler
        .provisioner
        .await_turn(&later.id, Bucket::Publisher, key, &Running)
        .await
        .expect_err("the older job runs");
    assert_eq!(waiting.error_type, busway_core::tasks::TURN_WAITING);
    assert!(waiting.cause.contains(&older.id), "{waiting:?}");
    s.handler
        .provisioner
        .await_turn(&older.id, Bucket::Publisher, key, &Running)
        .await
        .expect("nothing older holds the older job");
    let gone = s
        .handler
        .provisioner
        .await_turn("no-such-job", Bucket::Publisher, key, &Running)
        .await
        .expect_err("a job with no record is stale");
    assert_eq!(gone.error_type, busway_core::tasks::DEPLOYMENT_STALE);
}

#[tokio::test]
async fn objects_of_other_buckets_start_nothing() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;

    s.handler
        .handle(s3_notification("someone-elses-bucket", &deployment.key))
        .await
        .expect("ignored");
    s.handler
        .handle(s3_notification(
            &buckets().schema_backup,
            "scanned_parcel/1/schema.json",
        ))
        .await
        .expect("ignored");

    assert!(s.starts().is_empty());
}

/// A notification reads the newest page of the event type's deployments to find its document's
/// jobs. Behind a backlog of a hundred newer jobs of other documents (a burst of subscriptions),
/// a repeated notification still finds the job its document names, instead of provisioning the
/// document again under a new job.
#[tokio::test]
async fn a_repeated_notification_behind_a_page_of_newer_jobs_starts_the_same_job() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;
    let publisher = buckets().publisher;
    let notify = || {
        s.handler
            .handle(s3_notification(&publisher, &deployment.key))
    };
    notify().await.expect("started");
    for _ in 0..busway_core::provisioning::NOTIFICATION_WINDOW {
        let mut other = Deployment::pending(
            busway_core::deployment::new_id(),
            DeployKind::Consumer,
            buckets().subscriber,
            format!(
                "scanned_parcel/1/u2/{}/deploy.json",
                busway_core::deployment::new_id()
            ),
            busway_core::now(),
        );
        other.event_type = deployment.event_type.clone();
        other.version = deployment.version;
        s.store.put_deployment(&other).await.expect("stored");
    }
    notify().await.expect("started");
    let starts = s.starts();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0], starts[1], "one job, one execution: {starts:?}");
    assert_eq!(starts[1].1["deployment_id"], json!(deployment.id));
    let jobs = s
        .store
        .list_deployments(deployment.event_type.as_ref())
        .await
        .expect("listed");
    let of_document = jobs.iter().filter(|d| d.key == deployment.key).count();
    assert_eq!(of_document, 1, "no second job of the document");
}

#[tokio::test]
async fn a_notification_that_cannot_be_read_is_a_lambda_error_so_lambda_retries_it() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;
    s.objects.fail.store(true, Ordering::SeqCst);

    let e = s
        .handler
        .handle(s3_notification(&buckets().publisher, &deployment.key))
        .await
        .expect_err("S3 is down");

    assert_eq!(e.error_type, NOT_STARTED);
    assert!(
        e.error_message.contains(&deployment.key),
        "{}",
        e.error_message
    );
    assert!(s.starts().is_empty());
}

#[tokio::test]
async fn validate_answers_the_config_the_state_machine_reads_and_records_the_action() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;

    let config = s
        .task(json!({
            "task": "validate",
            "deployment_id": deployment.id,
            "bucket": buckets().publisher,
            "key": deployment.key,
            "object_version": s.version(&deployment.key).await,
            "kind": "producer"
        }))
        .await
        .expect("valid");

    assert_eq!(config["kind"], "producer");
    assert_eq!(config["action"], "deploy");
    assert!(
        config["stack_name"].as_str().is_some_and(|n| !n.is_empty()),
        "{config}"
    );
    let recorded = s.deployment(&deployment.id).await;
    assert_eq!(
        serde_json::to_value(recorded.action).expect("serializes"),
        "deploy"
    );
}

#[tokio::test]
async fn validate_failures_are_lambda_errors_whose_type_the_state_machine_catches() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;
    let publisher = buckets().publisher;
    let written = s.version(&deployment.key).await;
    let validate = |bucket: &str, key: &str, version: &str| json!({"task": "validate", "deployment_id": deployment.id, "bucket": bucket, "key": key, "object_version": version, "kind": "producer"});

    let missing = s
        .task(validate(
            &publisher,
            "scanned_parcel/2/deploy.json",
            &written,
        ))
        .await
        .expect_err("no such object");
    assert_eq!(missing.error_type, "DeployConfig.NotFound");

    let elsewhere = s
        .task(validate("someone-elses-bucket", &deployment.key, &written))
        .await
        .expect_err("not a platform bucket");
    assert_eq!(elsewhere.error_type, "DeployConfig.NotFound");

    s.objects
        .put_object(
            Bucket::Publisher,
            &deployment.key,
            b"{\"target_unit\": 7}".to_vec(),
        )
        .await
        .expect("written");
    // The version the execution names is gone (a store that keeps none but the current).
    let replaced = s
        .task(validate(&publisher, &deployment.key, &written))
        .await
        .expect_err("the validated version was replaced");
    assert_eq!(replaced.error_type, "DeployConfig.NotFound");
    assert!(
        replaced.error_message.contains("changed since"),
        "{}",
        replaced.error_message
    );
    let broken = s.version(&deployment.key).await;
    let invalid = s
        .task(validate(&publisher, &deployment.key, &broken))
        .await
        .expect_err("broken by hand");
    assert_eq!(invalid.error_type, "DeployConfig.Invalid");
    assert!(
        invalid.error_message.contains("invalid deploy.json"),
        "{}",
        invalid.error_message
    );

    s.objects.fail.store(true, Ordering::SeqCst);
    let unavailable = s
        .task(validate(&publisher, &deployment.key, &broken))
        .await
        .expect_err("S3 is down");
    assert_eq!(unavailable.error_type, "Store.Unavailable");
}

const BUILD_ID: &str = "dev-busway-producer-build:7d0b1b8e-5b7c-4f55-9d1e-2f1a1c4b9e20";

fn failed_build() -> Build {
    Build::builder()
        .id(BUILD_ID)
        .build_status(StatusType::Failed)
        .phases(
            BuildPhase::builder()
                .phase_type(BuildPhaseType::Build)
                .phase_status(StatusType::Failed)
                .duration_in_seconds(41)
                .contexts(
                    aws_sdk_codebuild::types::PhaseContext::builder()
                        .status_code("COMMAND_EXECUTION_ERROR")
                        .message("Error while executing command: make provision-producer. Reason: exit status 2")
                        .build(),
                )
                .build(),
        )
        .logs(LogsLocation::builder().deep_link("https://console.aws.amazon.com/cloudwatch/home#logEvent:group=/aws/codebuild/x").build())
        .build()
}

#[tokio::test]
async fn a_failed_build_named_in_the_catch_cause_is_recorded_on_the_deployment() {
    let described = mock!(aws_sdk_codebuild::Client::batch_get_builds)
        .match_requests(|req| req.ids() == [BUILD_ID.to_string()])
        .then_output(|| {
            BatchGetBuildsOutput::builder()
                .builds(failed_build())
                .build()
        });
    let s = setup(&[&described]);
    let deployment = s.registered_event().await;
    // What a failed codebuild:startBuild.sync task's Catch keeps: the build, as JSON.
    let cause = json!({"Build": {"Id": BUILD_ID, "BuildStatus": "FAILED"}}).to_string();

    let answer = s
        .task(json!({
            "task": "describe_build",
            "deployment_id": deployment.id,
            "failure": {"Error": "States.TaskFailed", "Cause": cause}
        }))
        .await
        .expect("described");

    let build = s.deployment(&deployment.id).await.build.expect("recorded");
    assert_eq!(answer, serde_json::to_value(&build).expect("serializes"));
    assert_eq!(build.id, BUILD_ID);
    assert_eq!(build.status.as_deref(), Some("FAILED"));
    assert_eq!(build.phases.len(), 1);
    assert_eq!(build.phases[0].name, "BUILD");
    assert!(
        build.phases[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exit status 2")),
        "{build:?}"
    );
    assert!(build.logs_url.is_some());
}

#[tokio::test]
async fn a_build_that_cannot_be_described_now_is_an_error_the_state_machine_retries() {
    let throttled = mock!(aws_sdk_codebuild::Client::batch_get_builds).then_error(|| {
        BatchGetBuildsError::generic(
            aws_sdk_codebuild::error::ErrorMetadata::builder()
                .code("ThrottlingException")
                .build(),
        )
    });
    let s = setup(&[&throttled]);
    let deployment = s.registered_event().await;

    let e = s
        .task(
            json!({"task": "describe_build", "deployment_id": deployment.id, "build_id": BUILD_ID}),
        )
        .await
        .expect_err("throttled");

    assert_eq!(e.error_type, "BuildInfo.Unavailable");
    assert_eq!(s.deployment(&deployment.id).await.build, None);
}

#[tokio::test]
async fn a_failure_that_names_no_build_records_nothing() {
    let s = setup(&[]);
    let deployment = s.registered_event().await;

    let answer = s
        .task(json!({
            "task": "describe_build",
            "deployment_id": deployment.id,
            "failure": {"Error": "CodeBuild.AccountLimitExceededException", "Cause": "limit"}
        }))
        .await
        .expect("nothing to describe");

    assert_eq!(answer, Value::Null);
    assert_eq!(s.deployment(&deployment.id).await.build, None);
}
