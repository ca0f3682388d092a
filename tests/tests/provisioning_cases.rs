//! The local host runs `statemachines/provisioning.asl.json` and must end each case as the moto
//! run of the same definition does (`statemachines/cases.json`, also read by
//! `statemachines/test_moto.py`); with `--synth` its build step keeps the generator's template.

use std::path::{Path, PathBuf};
use std::time::Duration;

use busway_local::provisioning::Synth;
use busway_tests::{Broker, ids, seed_event, seed_subscription, statuses};
use serde_json::{Value, json};

const CASES: &str = include_str!("../../statemachines/cases.json");
const PRODUCER_BUCKET: &str = "publisher-components-bucket";
const PRODUCER_KEY: &str = "scanned_parcel/1/deploy.json";
/// `cdk synth` of a generator takes seconds (ts-node), longer on a busy machine.
const SYNTH_TIMEOUT: Duration = Duration::from_secs(120);

fn expected(case: &str) -> (Vec<String>, Value) {
    let cases: Value = serde_json::from_str(CASES).expect("cases.json is JSON");
    let case = &cases["cases"][case];
    let history = case["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|s| s.as_str().expect("a status").to_string())
        .collect();
    (history, case["error"].clone())
}

fn assert_case(case: &str, deployment: &Value) {
    let (sequence, error) = expected(case);
    assert_eq!(statuses(deployment), sequence, "{case}: {deployment}");
    assert_eq!(deployment["error"], error, "{case}: {deployment}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_failing_build_and_invalid_config_end_as_on_moto() {
    // Without a Lambda Invoke endpoint the local build of a LAMBDA subscription fails.
    let busway = Broker::start_with(|c| c.delivery.lambda_endpoint = None).await;

    let created = busway
        .post("/events", &seed_event())
        .await
        .expect(201)
        .clone();
    let deployment = busway
        .wait_for_deployment(created["deployment_id"].as_str().expect("a deployment id"))
        .await;
    assert_case("success", &deployment);

    let subscribed = busway
        .post("/subscriptions", &seed_subscription())
        .await
        .expect(201)
        .clone();
    let deployment = busway
        .wait_for_deployment(
            subscribed["deployment_id"]
                .as_str()
                .expect("a deployment id"),
        )
        .await;
    assert_case("failing-build", &deployment);
    // A subscription whose rule never deployed has nothing to send its letters or replay to.
    let id = subscribed["id"].as_str().expect("a subscription id");
    busway
        .post(
            &format!("/subscriptions/{id}/dead-letters/redrive"),
            &json!({}),
        )
        .await
        .expect_error(409, "conflict");
    busway
        .post(
            &format!("/subscriptions/{id}/replay"),
            &json!({"start_time": busway_core::now()
                .format(&time::format_description::well_known::Rfc3339)
                .expect("a time")}),
        )
        .await
        .expect_error(409, "conflict");

    let known = ids(&busway.deployments_of("scanned_parcel").await);
    let mut doc = busway.read_object(PRODUCER_BUCKET, PRODUCER_KEY);
    doc["target_unit"] = Value::from("not a field of a producer document");
    busway.edit_object(PRODUCER_BUCKET, PRODUCER_KEY, doc.to_string().as_bytes());
    let deployment = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_case("invalid-config", &deployment);
    busway.stop().await;
}

fn cdk_app() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cdk-app");
    assert!(
        dir.join("node_modules/aws-cdk").is_dir(),
        "cdk-app's npm packages are missing: run scripts/setup.sh (make test does)"
    );
    dir
}

/// Every synthesized template's text under `out`.
fn templates(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .expect("the synth output folder")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".template.json"))
        .map(|e| std::fs::read_to_string(e.path()).expect("a template"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synth_each_deployment_keeps_the_generators_template() {
    let cdk_app = cdk_app();
    let mut synth_dir = PathBuf::new();
    let busway = Broker::start_with(|c| {
        synth_dir = c.data_dir.join("synth");
        c.synth = Some(Synth {
            cdk_app,
            out: synth_dir.clone(),
            timeout: Synth::DEFAULT_TIMEOUT,
        });
    })
    .await;

    let created = busway
        .post("/events", &seed_event())
        .await
        .expect(201)
        .clone();
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let deployment = busway.wait_for_deployment_within(id, SYNTH_TIMEOUT).await;
    assert_eq!(deployment["status"], "SUCCEEDED", "{deployment}");
    let producer = templates(&synth_dir.join(id).join("cdk.out"));
    assert!(
        producer.iter().any(|t| t.contains("AWS::ApiGateway::Model")
            && t.contains("AWS::ApiGateway::RequestValidator")),
        "the producer's templates hold its API model and validator"
    );

    let subscribed = busway
        .post("/subscriptions", &seed_subscription())
        .await
        .expect(201)
        .clone();
    let id = subscribed["deployment_id"]
        .as_str()
        .expect("a deployment id");
    let deployment = busway.wait_for_deployment_within(id, SYNTH_TIMEOUT).await;
    assert_eq!(deployment["status"], "SUCCEEDED", "{deployment}");
    let consumer = templates(&synth_dir.join(id).join("cdk.out"));
    assert!(
        consumer
            .iter()
            .any(|t| t.contains("AWS::Events::Rule") && t.contains("my-target-lambda-processor")),
        "the consumer's template holds its rule and Lambda target"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_does_not_synthesize_fails_its_build_and_changes_nothing() {
    let empty = tempfile::tempdir().expect("a temp dir");
    let cdk_app = empty.path().to_path_buf();
    let busway = Broker::start_with(|c| {
        c.synth = Some(Synth {
            cdk_app,
            out: c.data_dir.join("synth"),
            timeout: Synth::DEFAULT_TIMEOUT,
        });
    })
    .await;

    let created = busway
        .post("/events", &seed_event())
        .await
        .expect(201)
        .clone();
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let deployment = busway.wait_for_deployment_within(id, SYNTH_TIMEOUT).await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert_eq!(deployment["error"], "Build.Failed", "{deployment}");
    let cause = deployment["cause"].as_str().expect("a cause");
    assert!(cause.contains("cdk synth"), "{cause}");
    busway
        .publish("scanned_parcel", "1", &busway_tests::v1_envelope("u2"))
        .await
        .expect(404);
    busway.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synth_that_hangs_is_killed_at_its_timeout_and_fails_its_build() {
    use std::os::unix::fs::PermissionsExt;
    // A `cdk` that never ends, where `npx --no-install cdk` finds it.
    let hanging = tempfile::tempdir().expect("a temp dir");
    let bin = hanging.path().join("node_modules/.bin");
    std::fs::create_dir_all(&bin).expect("the bin folder");
    let cdk = bin.join("cdk");
    std::fs::write(&cdk, "#!/bin/sh\nsleep 20\n").expect("a script");
    std::fs::set_permissions(&cdk, std::fs::Permissions::from_mode(0o755)).expect("executable");
    let cdk_app = hanging.path().to_path_buf();
    let busway = Broker::start_with(|c| {
        c.synth = Some(Synth {
            cdk_app,
            out: c.data_dir.join("synth"),
            timeout: std::time::Duration::from_secs(2),
        });
    })
    .await;

    let started = std::time::Instant::now();
    let created = busway
        .post("/events", &seed_event())
        .await
        .expect(201)
        .clone();
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let deployment = busway.wait_for_deployment_within(id, SYNTH_TIMEOUT).await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    let cause = deployment["cause"].as_str().expect("a cause");
    assert!(cause.contains("did not finish within"), "{cause}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    busway.stop().await;
}
