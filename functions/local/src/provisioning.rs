//! Local provisioning: the notification queue, and the runner that takes each deploy.json
//! through `statemachines/provisioning.asl.json`, the same definition AWS runs, executed by
//! `busway-asl` with local implementations of its tasks: the status writes go to the embedded
//! store, the validate task is the provisioner's, and the build step applies the document to the
//! local broker (and with `--synth` also synthesizes the generator's template). A scanner
//! notices deploy.json files edited by hand.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use busway_asl::{Outcome, StateMachine, TaskFailure, TaskRunner};
use busway_core::deploy::{DeployAction, DeployDoc, DeployKind};
use busway_core::deployment::{BuildInfo, BuildPhase, DeploymentStatus, failure_cause};
use busway_core::ingest::LiveRoutes;
use busway_core::ports::{Bucket, ObjectStore, ProvisioningStarter};
use busway_core::provisioning::{
    DescribeBuild, ExecutionReader, Provisioner, RecordError, TaskError,
};
use busway_core::tasks;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::delivery::Router;
use crate::metrics::Metrics;
use crate::objects::bucket_dir;
use crate::store::SqliteStore;

/// Notifications waiting for the runner. A document is durable once written to its bucket
/// folder, so a notification that finds the queue full is dropped: the scanner, which compares
/// every document with what was provisioned, notifies it again when there is room.
pub const PROVISIONING_QUEUE: usize = 1024;

/// The local "S3 notification": a bounded queue of objects to provision.
pub struct LocalStarter {
    tx: mpsc::Sender<(Bucket, String)>,
}

impl LocalStarter {
    pub fn new() -> (Self, mpsc::Receiver<(Bucket, String)>) {
        Self::with_capacity(PROVISIONING_QUEUE)
    }

    pub fn with_capacity(capacity: usize) -> (Self, mpsc::Receiver<(Bucket, String)>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, rx)
    }

    /// The scanner's notification: waits for room instead of dropping it.
    async fn notify(&self, bucket: Bucket, key: &str) -> anyhow::Result<()> {
        self.tx
            .send((bucket, key.to_string()))
            .await
            .map_err(|_| anyhow::anyhow!("the provisioning runner has stopped"))
    }
}

#[async_trait]
impl ProvisioningStarter for LocalStarter {
    async fn start(&self, bucket: Bucket, key: &str) -> anyhow::Result<()> {
        match self.tx.try_send((bucket, key.to_string())) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(
                    key,
                    "the provisioning queue is full: the scanner will notify it again"
                );
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                anyhow::bail!("the provisioning runner has stopped")
            }
        }
    }
}

/// The definition both hosts run.
const DEFINITION: &str = include_str!("../../../statemachines/provisioning.asl.json");

/// What the definition's placeholders name on this machine (the keys are
/// `infra/definition-substitutions.json`'s; a missing one stops the load).
const TABLE: &str = "busway-local-deployments";
const PROVISIONER: &str = "arn:aws:lambda:local:000000000000:function:provisioner";
const PRODUCER_BUILD: &str = "busway-local-producer-build";
const CONSUMER_BUILD: &str = "busway-local-consumer-build";

const UPDATE_ITEM: &str = "arn:aws:states:::dynamodb:updateItem";
const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";
const START_BUILD: &str = "arn:aws:states:::codebuild:startBuild.sync";

fn substitutions() -> BTreeMap<String, String> {
    [
        ("DeploymentsTableName", TABLE),
        ("ProvisionerFunctionArn", PROVISIONER),
        ("ProducerBuildProjectName", PRODUCER_BUILD),
        ("ConsumerBuildProjectName", CONSUMER_BUILD),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Loads the provisioning state machine with this machine's names.
pub fn state_machine() -> anyhow::Result<StateMachine> {
    StateMachine::load(DEFINITION, &substitutions())
        .context("statemachines/provisioning.asl.json cannot run locally")
}

/// The build step on one machine: a producer deploy makes its route live with its validator, a
/// consumer deploy registers its rule; a destroy removes them. Both survive a restart.
pub struct LocalBuilder {
    pub store: SqliteStore,
    pub routes: Arc<LiveRoutes>,
    pub router: Arc<Router>,
}

impl LocalBuilder {
    async fn apply(&self, doc: &DeployDoc) -> anyhow::Result<()> {
        match doc {
            DeployDoc::Producer(p) => match p.action {
                DeployAction::Deploy => {
                    let writers = self.store.writers(&p.event_type).await?;
                    self.routes
                        .insert(
                            p.application.clone(),
                            writers,
                            p.event_type.clone(),
                            p.version,
                            &p.schema,
                        )
                        .map_err(|e| anyhow::anyhow!("the schema does not compile: {e}"))?;
                    self.store
                        .put_route(
                            p.application.as_str(),
                            p.event_type.as_str(),
                            p.version.get(),
                            &p.schema,
                        )
                        .await?;
                }
                DeployAction::Destroy => {
                    self.routes.remove(&p.event_type, p.version);
                    self.store
                        .delete_route(p.event_type.as_str(), p.version.get())
                        .await?;
                }
            },
            DeployDoc::Consumer(c) => match c.action {
                DeployAction::Deploy => self.router.add_rule(c.clone()).await?,
                DeployAction::Destroy => self.router.remove_rule(&c.subscription_id).await?,
            },
        }
        Ok(())
    }
}

/// `--synth`: the build step also runs `cdk synth` of the generators in `cdk_app` for each
/// deployed document and keeps the template under `out/{deployment id}/`.
#[derive(Debug, Clone)]
pub struct Synth {
    pub cdk_app: PathBuf,
    pub out: PathBuf,
    /// A synth still running after this is killed and its deployment fails, so a hung Node
    /// process never holds the provisioning runner.
    pub timeout: Duration,
}

impl Synth {
    /// CodeBuild's shortest build timeout is 5 minutes; a local synth takes seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
}

impl Synth {
    async fn run(&self, doc: &DeployDoc, deployment_id: &str) -> anyhow::Result<PathBuf> {
        let dir = self.out.join(deployment_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let dir = tokio::fs::canonicalize(&dir).await?;
        let doc_path = dir.join("deploy.json");
        tokio::fs::write(&doc_path, doc.to_json()).await?;
        let templates = dir.join("cdk.out");
        let output = tokio::process::Command::new("npx")
            .args(["--no-install", "cdk", "synth", "--no-notices", "-q", "-c"])
            .arg(format!("deployJson={}", doc_path.display()))
            .args(["-c", "platformEnv=local", "-o"])
            .arg(&templates)
            .arg(doc.stack_name())
            .current_dir(&self.cdk_app)
            .env("CDK_DISABLE_VERSION_CHECK", "1")
            .env("CDK_DISABLE_CLI_TELEMETRY", "true")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(self.timeout, output)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cdk synth {} did not finish within {:?} and was killed",
                    doc.stack_name(),
                    self.timeout
                )
            })?
            .with_context(|| format!("running npx cdk synth in {}", self.cdk_app.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<_> = stderr.lines().rev().take(20).collect();
            anyhow::bail!(
                "cdk synth {} failed ({}): {}",
                doc.stack_name(),
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(templates)
    }
}

/// The state machine's tasks on this machine.
pub struct LocalTasks {
    pub provisioner: Provisioner,
    pub builder: LocalBuilder,
    pub synth: Option<Synth>,
}

fn failure(error: &str, cause: impl Into<String>) -> TaskFailure {
    TaskFailure {
        error: error.to_string(),
        cause: cause.into(),
    }
}

fn task_failure(e: TaskError) -> TaskFailure {
    failure(e.error_type, e.cause)
}

fn text<'a>(value: &'a Value, pointer: &str) -> Result<&'a str, TaskFailure> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            failure(
                "States.Runtime",
                format!("the task parameters have no string at {pointer}"),
            )
        })
}

/// The bucket the execution input names (locally, by its base name).
fn bucket(name: &str) -> Result<Bucket, TaskFailure> {
    Bucket::from_base_name(name).ok_or_else(|| {
        failure(
            tasks::DEPLOY_CONFIG_NOT_FOUND,
            format!("no bucket named {name}"),
        )
    })
}

impl LocalTasks {
    /// `dynamodb:updateItem` of a deployment record, read as the definition writes it.
    async fn update_item(&self, p: &Value) -> Result<Value, TaskFailure> {
        let table = text(p, "/TableName")?;
        if table != TABLE {
            return Err(failure(
                "DynamoDB.ResourceNotFoundException",
                format!("no table {table}"),
            ));
        }
        let id = text(p, "/Key/PK/S")?
            .strip_prefix("DEPLOYMENT#")
            .ok_or_else(|| failure("States.Runtime", "the key is not a deployment record's"))?;
        let status = text(p, "/ExpressionAttributeValues/:status/S")?;
        let status = DeploymentStatus::parse(status)
            .ok_or_else(|| failure("States.Runtime", format!("unknown status {status}")))?;
        let failed = match p.pointer("/ExpressionAttributeValues/:error") {
            Some(_) => Some((
                text(p, "/ExpressionAttributeValues/:error/S")?.to_string(),
                cause_of(text(p, "/ExpressionAttributeValues/:cause/S")?),
            )),
            None => None,
        };
        // The definition's ConditionExpression, which DynamoDB evaluates on AWS, is
        // `Provisioner::record`'s own check here; a refused write fails as DynamoDB's does.
        let execution = text(p, "/ExpressionAttributeValues/:execution/S")?;
        self.provisioner
            .record(id, execution, status, failed)
            .await
            .map_err(|e| match e {
                RecordError::Stale(why) => failure(tasks::CONDITION_FAILED, why),
                RecordError::Unavailable(why) => failure(tasks::STORE_UNAVAILABLE, why),
            })?;
        Ok(json!({}))
    }

    /// `lambda:invoke` of the provisioner's task handler.
    async fn invoke(&self, p: &Value) -> Result<Value, TaskFailure> {
        let function = text(p, "/FunctionName")?;
        if function != PROVISIONER {
            return Err(failure(
                "Lambda.ResourceNotFoundException",
                format!("no function {function}"),
            ));
        }
        let task = text(p, "/Payload/task")?;
        if task == tasks::TASK_DESCRIBE_BUILD {
            return self.describe_build(&p["Payload"]).await;
        }
        if task == tasks::TASK_AWAIT_TURN {
            self.provisioner
                .await_turn(
                    text(p, "/Payload/deployment_id")?,
                    bucket(text(p, "/Payload/bucket")?)?,
                    text(p, "/Payload/key")?,
                    &OneAtATime,
                )
                .await
                .map_err(task_failure)?;
            return Ok(json!({ "StatusCode": 200, "Payload": null }));
        }
        if task != tasks::TASK_VALIDATE {
            return Err(failure("Lambda.Unhandled", format!("no task {task}")));
        }
        let config = self
            .provisioner
            .validate(
                text(p, "/Payload/deployment_id")?,
                bucket(text(p, "/Payload/bucket")?)?,
                text(p, "/Payload/key")?,
                text(p, "/Payload/object_version")?,
            )
            .await
            .map_err(task_failure)?;
        Ok(json!({ "StatusCode": 200, "Payload": config }))
    }

    /// The describe_build task: no builder is left to ask once the local build step has ended,
    /// so that step recorded its build on the deployment as it ran, and the answer is that record.
    async fn describe_build(&self, payload: &Value) -> Result<Value, TaskFailure> {
        let request: DescribeBuild = serde_json::from_value(payload.clone())
            .map_err(|e| failure("States.Runtime", format!("describe_build request: {e}")))?;
        let wanted = request.build_id();
        let build = self
            .provisioner
            .deployments
            .get_deployment(&request.deployment_id)
            .await
            .map_err(|e| failure(tasks::STORE_UNAVAILABLE, e.to_string()))?
            .and_then(|d| d.build)
            .filter(|b| wanted.as_ref().is_none_or(|id| *id == b.id));
        Ok(json!({ "StatusCode": 200, "Payload": build }))
    }

    /// `codebuild:startBuild.sync`: what buildspecs/ run on CodeBuild, applied to this machine.
    async fn build(&self, p: &Value) -> Result<Value, TaskFailure> {
        let project = text(p, "/ProjectName")?;
        let kind = match project {
            PRODUCER_BUILD => DeployKind::Producer,
            CONSUMER_BUILD => DeployKind::Consumer,
            _ => {
                return Err(failure(
                    "CodeBuild.ResourceNotFoundException",
                    format!("no project {project}"),
                ));
            }
        };
        let env: BTreeMap<&str, &str> = p["EnvironmentVariablesOverride"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["Name"].as_str()?, v["Value"].as_str()?)))
            .collect();
        let var = |name: &str| {
            env.get(name)
                .copied()
                .ok_or_else(|| failure(tasks::BUILD_FAILED, format!("{name} is not set")))
        };
        if var("BUSWAY_DEPLOY_KIND")? != kind.as_str() {
            return Err(failure(
                tasks::BUILD_FAILED,
                format!(
                    "the {project} build got a {} document",
                    var("BUSWAY_DEPLOY_KIND")?
                ),
            ));
        }
        let deployment_id = var("BUSWAY_DEPLOYMENT_ID")?;
        // As scripts/provision-build.sh: exactly the validated version, and only while the
        // deployment still expects it from this execution.
        let doc = self
            .provisioner
            .load_for_build(
                deployment_id,
                var("BUSWAY_EXECUTION")?,
                bucket(var("BUSWAY_DEPLOY_BUCKET")?)?,
                var("BUSWAY_DEPLOY_KEY")?,
                var("BUSWAY_DEPLOY_VERSION")?,
            )
            .await
            .map_err(|e| match e.error_type {
                // The document version this execution validated was replaced since: the build
                // changes nothing, and says so as validate would have.
                tasks::DEPLOYMENT_STALE | tasks::DEPLOY_CONFIG_NOT_FOUND => task_failure(e),
                _ => failure(tasks::BUILD_FAILED, e.to_string()),
            })?;
        let id = format!("{project}:{deployment_id}");
        let mut phases = Vec::new();
        let built = self.run_phases(&doc, deployment_id, &mut phases).await;
        let build = BuildInfo {
            id: id.clone(),
            status: Some(if built.is_ok() { "SUCCEEDED" } else { "FAILED" }.into()),
            phases,
            logs_url: None,
        };
        // What describe_build answers with; a build whose record cannot be written still ran.
        if let Err(e) = self.provisioner.record_build(deployment_id, build).await {
            warn!(deployment = deployment_id, error = %format!("{e:#}"), "build not recorded");
        }
        built.map_err(|cause| failure(tasks::BUILD_FAILED, cause))?;
        Ok(json!({ "Build": { "Id": id, "BuildStatus": "SUCCEEDED" } }))
    }

    /// The build's phases, each recorded in `phases` as it ends; the error is the failed one's.
    async fn run_phases(
        &self,
        doc: &DeployDoc,
        deployment_id: &str,
        phases: &mut Vec<BuildPhase>,
    ) -> Result<(), String> {
        // Synthesized before it is applied: a document the generator cannot build changes nothing.
        if let Some(synth) = self
            .synth
            .as_ref()
            .filter(|_| doc.action() == DeployAction::Deploy)
        {
            let started = Instant::now();
            let synthesized = synth.run(doc, deployment_id).await;
            phases.push(phase("SYNTH", started, synthesized.as_ref().err()));
            let templates = synthesized.map_err(|e| format!("{e:#}"))?;
            info!(deployment = deployment_id, templates = %templates.display(), "template synthesized");
        }
        let started = Instant::now();
        let applied = self.builder.apply(doc).await;
        phases.push(phase("APPLY", started, applied.as_ref().err()));
        applied.map_err(|e| format!("build failed: {e:#}"))
    }
}

fn phase(name: &str, started: Instant, error: Option<&anyhow::Error>) -> BuildPhase {
    BuildPhase {
        name: name.to_string(),
        status: Some(
            if error.is_none() {
                "SUCCEEDED"
            } else {
                "FAILED"
            }
            .into(),
        ),
        duration_seconds: Some(i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX)),
        message: error.map(|e| format!("{e:#}")),
    }
}

/// The cause inside the Catch result the FAILED write stores whole; the whole text when it
/// names none.
fn cause_of(failure: &str) -> String {
    failure_cause(failure).unwrap_or_else(|| failure.to_string())
}

/// The local runner runs one execution at a time (`run`), and the one asking whether another
/// still runs is that one: an older job that did not end here was cut off by a stop, and holds
/// nothing.
struct OneAtATime;

#[async_trait]
impl ExecutionReader for OneAtATime {
    async fn running(&self, _execution: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
}

#[async_trait]
impl TaskRunner for LocalTasks {
    async fn run(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
        match resource {
            UPDATE_ITEM => self.update_item(&input).await,
            LAMBDA_INVOKE => self.invoke(&input).await,
            START_BUILD => self.build(&input).await,
            other => Err(failure(
                "States.Runtime",
                format!("no local implementation of {other}"),
            )),
        }
    }

    fn now(&self) -> String {
        busway_core::now()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }

    async fn wait(&self, seconds: f64) {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }
}

/// Provisions notified objects one at a time, in order. An object whose content was already
/// provisioned is skipped, so a repeated notification starts nothing twice.
pub async fn run(
    machine: StateMachine,
    tasks: LocalTasks,
    store: SqliteStore,
    objects: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<(Bucket, String)>,
) {
    while let Some((bucket, key)) = rx.recv().await {
        let done = provision_once(
            &machine,
            &tasks,
            &store,
            objects.as_ref(),
            &metrics,
            bucket,
            &key,
        )
        .await;
        if let Err(e) = done {
            error!(%key, error = %format!("{e:#}"), "provisioning failed");
        }
    }
}

async fn provision_once(
    machine: &StateMachine,
    tasks: &LocalTasks,
    store: &SqliteStore,
    objects: &dyn ObjectStore,
    metrics: &Metrics,
    bucket: Bucket,
    key: &str,
) -> anyhow::Result<()> {
    let Some(content) = objects.get_object(bucket, key).await? else {
        return Ok(());
    };
    let name = bucket.base_name();
    // Whether this version was provisioned already is the deployment records' to say (a retried
    // deployment runs the same version again); the mark only tells the scanner what it saw.
    if let Some(execution) = tasks.provisioner.start(bucket, name, key, None).await? {
        let id = format!(
            "arn:aws:states:local:000000000000:execution:busway-provisioning:{}",
            execution.name
        );
        let deployment = execution.input.deployment_id.clone();
        let started = std::time::Instant::now();
        let outcome = machine
            .run(tasks, &id, serde_json::to_value(&execution.input)?)
            .await;
        // The record, not the execution's outcome, says whether the deployment ended: the
        // definition fails the execution after recording FAILED. A record left unfinished
        // (its writes kept failing) is provisioned again by the scanner.
        let record = tasks
            .provisioner
            .deployments
            .get_deployment(&deployment)
            .await?;
        if let Some(d) = &record {
            let status = if d.status.is_final() {
                d.status.as_str()
            } else {
                "UNFINISHED"
            };
            metrics.provisioned(d.kind.as_str(), status, started.elapsed());
        }
        match record {
            Some(d) if d.status.is_final() => {
                info!(deployment, status = d.status.as_str(), "deployment ended");
            }
            _ => {
                let (error, cause) = match outcome {
                    Outcome::Failed { error, cause } => (error, cause),
                    Outcome::Succeeded(_) => ("none".into(), "no status written".into()),
                };
                anyhow::bail!("deployment {deployment} did not end: {error}: {cause}");
            }
        }
    }
    store.mark_processed(name, key, content).await?;
    Ok(())
}

/// Polls the configuration buckets for deploy.json files whose content changed since they were
/// provisioned (edited by hand, written while busway was down, or whose notification found the
/// queue full) and notifies the runner, waiting for room in its queue.
///
/// A file found provisioned is not read again while its modification time and length stay the
/// same: with a thousand subscriptions a scan costs a thousand `stat`s, not a thousand reads and
/// store lookups. An edit changes the time; one within the same clock tick as the write it
/// replaces would have to come before that write was provisioned, and a file not provisioned
/// is read on every scan.
pub async fn scan(root: PathBuf, store: SqliteStore, starter: Arc<LocalStarter>, every: Duration) {
    let mut provisioned: HashMap<(Bucket, String), Stamp> = HashMap::new();
    loop {
        let mut still = HashMap::with_capacity(provisioned.len());
        for bucket in [Bucket::Publisher, Bucket::Subscriber] {
            let dir = bucket_dir(&root, bucket);
            let found = tokio::task::spawn_blocking(move || deploy_files(&dir))
                .await
                .unwrap_or_default();
            for (key, path, stamp) in found {
                let file = (bucket, key);
                if provisioned.get(&file) == Some(&stamp) {
                    still.insert(file, stamp);
                    continue;
                }
                let Ok(content) = tokio::fs::read(&path).await else {
                    continue;
                };
                match store.processed_object(bucket.base_name(), &file.1).await {
                    Ok(seen) if seen.as_deref() == Some(content.as_slice()) => {
                        still.insert(file, stamp);
                    }
                    Ok(_) => {
                        if starter.notify(bucket, &file.1).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!(error = %e, "scanner cannot read the store"),
                }
            }
        }
        provisioned = still;
        tokio::time::sleep(every).await;
    }
}

/// A file's modification time and length.
type Stamp = (Option<std::time::SystemTime>, u64);

/// Every `deploy.json` under `dir`, as (key, path, stamp).
fn deploy_files(dir: &Path) -> Vec<(String, PathBuf, Stamp)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // The entry's type comes with the directory listing: no `stat` per entry.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else if entry.file_name() == "deploy.json" {
                let key = path
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|k| k.to_str())
                    .map(|k| k.replace('\\', "/"));
                if let (Some(key), Ok(meta)) = (key, entry.metadata()) {
                    found.push((key, path, (meta.modified().ok(), meta.len())));
                }
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use busway_core::deploy::DeployKind;
    use busway_core::deployment::{Deployment, StatusChange};
    use busway_core::ports::{DeploymentStore, EventStore};

    use super::*;
    use crate::delivery::DeliveryConfig;
    use crate::eventlog::EventLog;
    use crate::objects::FolderObjectStore;

    /// The local tasks on a data dir of their own, as `busway up` wires them.
    fn local_tasks(dir: &Path) -> (LocalTasks, SqliteStore) {
        let store = SqliteStore::open(&dir.join("busway.db")).expect("a store");
        let (starter, _notifications) = LocalStarter::new();
        let objects: Arc<dyn ObjectStore> = Arc::new(
            FolderObjectStore::new(dir.join("buckets"), Arc::new(starter)).expect("buckets"),
        );
        let claim_checks = busway_core::claim_check::ClaimChecks {
            objects: objects.clone(),
            bucket_name: "local-event-schemas-backup-bucket".into(),
            max_entry_bytes: busway_core::claim_check::DEFAULT_MAX_ENTRY_BYTES,
        };
        let (live, _committed) = mpsc::channel(crate::eventlog::ROUTER_QUEUE);
        let (_bus, reader) =
            EventLog::open(&dir.join("events.db"), claim_checks, live).expect("an event log");
        let router = Router::new(store.clone(), Arc::new(reader), DeliveryConfig::default())
            .expect("a router");
        let shared: Arc<SqliteStore> = Arc::new(store.clone());
        let events: Arc<dyn EventStore> = shared.clone();
        let tasks = LocalTasks {
            provisioner: Provisioner {
                store: events,
                deployments: shared,
                objects,
            },
            builder: LocalBuilder {
                store: store.clone(),
                routes: Arc::new(LiveRoutes::default()),
                router,
            },
            synth: None,
        };
        (tasks, store)
    }

    fn case(name: &str) -> Value {
        let cases: Value = serde_json::from_str(include_str!("../../../statemachines/cases.json"))
            .expect("cases.json is JSON");
        cases["cases"][name].clone()
    }

    fn statuses(value: &Value) -> Vec<DeploymentStatus> {
        value
            .as_array()
            .expect("a status list")
            .iter()
            .map(|s| DeploymentStatus::parse(s.as_str().expect("a status")).expect("a status"))
            .collect()
    }

    /// An execution the record no longer expects (the deployment ended, or names another
    /// execution) writes no status, runs no task and ends in `Stale`, as on moto.
    #[tokio::test]
    async fn an_execution_the_record_no_longer_expects_ends_stale_and_moves_nothing() {
        for name in ["ended-before", "superseded-before", "another-execution"] {
            let expected = case(name);
            let dir = tempfile::tempdir().expect("a temp dir");
            let (tasks, store) = local_tasks(dir.path());
            let execution = format!("{name}-1");
            let mut d = Deployment::pending(
                busway_core::deployment::new_id(),
                DeployKind::Producer,
                Bucket::Publisher.base_name().into(),
                "order_created/1/deploy.json".into(),
                busway_core::now(),
            );
            d.history = statuses(&expected["before"])
                .into_iter()
                .map(|status| StatusChange {
                    status,
                    at: busway_core::now(),
                })
                .collect();
            d.status = d.history.last().expect("a status").status;
            d.object_version = Some("v1".into());
            d.execution = Some(if expected["owner"] == "another" {
                "a-later-attempt".into()
            } else {
                execution.clone()
            });
            store.put_deployment(&d).await.expect("the record");

            let input = json!({"deployment_id": d.id, "bucket": d.bucket, "key": d.key,
                "object_version": "v1", "kind": "producer"});
            let arn = format!(
                "arn:aws:states:local:000000000000:execution:busway-provisioning:{execution}"
            );
            let outcome = state_machine()
                .expect("the definition")
                .run(&tasks, &arn, input)
                .await;
            let Outcome::Failed { error, .. } = outcome else {
                panic!("{name}: the execution did not fail: {outcome:?}");
            };
            assert_eq!(json!(error), expected["execution_error"], "{name}");
            let after = store
                .get_deployment(&d.id)
                .await
                .expect("the store answers")
                .expect("the record");
            let history: Vec<_> = after.history.iter().map(|h| h.status).collect();
            assert_eq!(history, statuses(&expected["history"]), "{name}");
            assert_eq!(json!(after.error), expected["error"], "{name}");
        }
    }

    /// One job at a time per document: a job waits while an older one of its document has not
    /// ended and its execution runs. Here the runner runs one execution at a time, so an older
    /// job that did not end was cut off by a stop and holds nothing; the same store read on AWS
    /// (where Step Functions says the older execution runs) waits.
    #[tokio::test]
    async fn an_older_job_holds_its_document_only_while_its_execution_runs() {
        struct Running;
        #[async_trait]
        impl ExecutionReader for Running {
            async fn running(&self, _execution: &str) -> anyhow::Result<bool> {
                Ok(true)
            }
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let (tasks, store) = local_tasks(dir.path());
        let key = "order_created/1/deploy.json";
        let job = |status: DeploymentStatus, execution: &str| {
            let mut d = Deployment::pending(
                busway_core::deployment::new_id(),
                DeployKind::Producer,
                Bucket::Publisher.base_name().into(),
                key.into(),
                busway_core::now(),
            );
            d.event_type = Some("order_created".parse().expect("a name"));
            d.status = status;
            d.execution = Some(execution.into());
            d
        };
        let older = job(DeploymentStatus::Building, "older-1");
        store.put_deployment(&older).await.expect("written");
        let newer = job(DeploymentStatus::Pending, "newer-1");
        store.put_deployment(&newer).await.expect("written");

        let turn = |reader: &'static dyn ExecutionReader, id: String| {
            let provisioner = &tasks.provisioner;
            async move {
                provisioner
                    .await_turn(&id, Bucket::Publisher, key, reader)
                    .await
            }
        };
        turn(&OneAtATime, newer.id.clone())
            .await
            .expect("cut off by a stop: holds nothing");
        let waiting = turn(&Running, newer.id.clone())
            .await
            .expect_err("an older execution that runs holds the document");
        assert_eq!(waiting.error_type, tasks::TURN_WAITING);
        turn(&Running, older.id.clone())
            .await
            .expect("nothing older holds the older one");
    }

    /// A notification that finds the queue full is not lost: the document is in its folder, and
    /// the scanner notifies it again once the queue has room.
    #[tokio::test]
    async fn a_notification_a_full_queue_dropped_comes_again_from_the_scanner() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = SqliteStore::open(&dir.path().join("busway.db")).expect("a store");
        let (starter, mut rx) = LocalStarter::with_capacity(1);
        let starter = Arc::new(starter);
        let root = dir.path().join("buckets");
        let objects = FolderObjectStore::new(root.clone(), starter.clone()).expect("buckets");
        let keys = [
            "order_created/1/deploy.json",
            "parcel_scanned/1/deploy.json",
        ];
        for key in keys {
            objects
                .put_object(Bucket::Publisher, key, b"{}".to_vec())
                .await
                .expect("written");
        }
        assert_eq!(rx.len(), 1, "the queue holds one notification");
        let scanner = tokio::spawn(scan(root, store, starter, Duration::from_millis(10)));
        let mut notified = BTreeSet::new();
        while notified.len() < keys.len() {
            let (_, key) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a notification in time")
                .expect("the queue is open");
            notified.insert(key);
        }
        scanner.abort();
        assert_eq!(notified, keys.map(String::from).into());
    }

    #[test]
    fn the_local_names_fill_exactly_the_placeholders_infra_fills() {
        let infra: serde_json::Map<String, Value> =
            serde_json::from_str(include_str!("../../../infra/definition-substitutions.json"))
                .expect("infra/definition-substitutions.json is a JSON object");
        let local: BTreeSet<String> = substitutions().into_keys().collect();
        assert_eq!(local, infra.keys().cloned().collect::<BTreeSet<_>>());
        state_machine().expect("the definition loads with the local names");
    }

    #[test]
    fn a_failure_cause_is_read_from_the_catch_result_the_definition_stores() {
        assert_eq!(
            cause_of(r#"{"Error":"Build.Failed","Cause":"cdk deploy exited 1"}"#),
            "cdk deploy exited 1"
        );
        assert_eq!(
            cause_of(r#"{"Error":"States.Timeout"}"#),
            r#"{"Error":"States.Timeout"}"#
        );
    }

    #[test]
    fn a_build_phase_says_how_it_ended_and_why_it_failed() {
        let ok = phase("APPLY", Instant::now(), None);
        assert_eq!(ok.status.as_deref(), Some("SUCCEEDED"));
        assert_eq!(ok.message, None);
        let error = anyhow::anyhow!("no Lambda Invoke endpoint").context("adding the rule");
        let failed = phase("APPLY", Instant::now(), Some(&error));
        assert_eq!(failed.status.as_deref(), Some("FAILED"));
        assert_eq!(
            failed.message.as_deref(),
            Some("adding the rule: no Lambda Invoke endpoint")
        );
        assert_eq!(failed.duration_seconds, Some(0));
    }
}
