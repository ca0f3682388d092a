//! Writes the upgrade fixtures of the code in this tree (tests/fixtures/upgrades/README.md): the
//! seed's demo flow, run once on the local host and once on the AWS adapters on moto, leaves a
//! data dir and the table's items and buckets' objects, kept with the answers the portal gave
//! about them. Ignored by `cargo test`; a release that changes a stored format runs it once:
//!
//! ```sh
//! BUSWAY_FIXTURE=002-name cargo test -p busway-tests --test release_fixtures -- --ignored
//! ```

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::Duration;

use busway_core::deploy::DeployKind;
use busway_core::deployment::{BuildInfo, BuildPhase, DeploymentStatus};
use busway_core::ports::{Bucket, DeploymentStore};
use busway_core::provisioning::Provisioner;
use busway_tests::consumer::{Consumer, Failure, http_subscription};
use busway_tests::{
    Broker, seed_event, seed_subscription, v1_envelope, v2_data_schema, v2_envelope,
};
use serde_json::{Value, json};
use support::emulated::Account;
use support::fixtures::{self, HTTPS_CONSUMER, call};

const QUEUE: &str = "fixture_orders";
const WAIT: Duration = Duration::from_secs(15);

fn second_version() -> Value {
    json!({"description": "parcels by id and weight in grams", "data": v2_data_schema()})
}

fn sqs_subscription() -> Value {
    json!({
        "event_type": "scanned_parcel", "version": "2", "target_unit": "u3",
        "connection_type": "SQS",
        "connection_string": format!("arn:aws:sqs:eu-west-1:123456789012:{QUEUE}")
    })
}

fn https_subscription(url: &str) -> Value {
    let mut body = http_subscription(1, "u2", url);
    body["retry_policy"] = json!({"maximum_retry_attempts": 3, "maximum_event_age_seconds": 600});
    body
}

fn id(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_string()
}

/// The portal reads the checks compare: event types, versions, every subscription and
/// deployment.
fn portal_reads(subscriptions: &[&str]) -> Vec<String> {
    let mut paths: Vec<String> = [
        "/events",
        "/events/scanned_parcel",
        "/events/scanned_parcel/versions/1",
        "/events/scanned_parcel/versions/2",
        "/subscriptions",
        "/deployments",
        "/deployments?event_type=scanned_parcel",
    ]
    .map(String::from)
    .into();
    paths.extend(subscriptions.iter().map(|s| format!("/subscriptions/{s}")));
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a new fixture into the repository; set BUSWAY_FIXTURE"]
async fn writes_the_local_data_dir_of_this_release() {
    let out = fixtures::new_release_dir("local");
    let consumer = Consumer::start_on(HTTPS_CONSUMER).await;
    let broker = Broker::start().await;
    broker.create_deployed_event(&seed_event()).await;
    broker
        .add_deployed_version("scanned_parcel", &second_version())
        .await;
    let https = id(
        &broker
            .subscribe_deployed(&https_subscription(&consumer.url("/hooks/parcels")))
            .await,
        "id",
    );
    let sqs = id(&broker.subscribe_deployed(&sqs_subscription()).await, "id");
    let deleted = id(&broker.subscribe_deployed(&seed_subscription()).await, "id");
    let gone = broker.delete(&format!("/subscriptions/{deleted}")).await;
    broker
        .deployed(&id(gone.expect(202), "deployment_id"))
        .await;

    // A 400 is not retried: the first event goes straight to the dead letters.
    consumer.fail(Failure::Status(400), 1);
    let dead = id(
        broker
            .publish("scanned_parcel", "1", &v1_envelope("u2"))
            .await
            .expect(200),
        "event_id",
    );
    let delivered = id(
        broker
            .publish("scanned_parcel", "1", &v1_envelope("u2"))
            .await
            .expect(200),
        "event_id",
    );
    consumer
        .wait_until("the second event is delivered", WAIT, |requests| {
            requests.iter().any(|r| r.succeeded)
        })
        .await;
    let mut queued = Vec::new();
    for _ in 0..2 {
        let answer = broker
            .publish("scanned_parcel", "2", &v2_envelope("u3"))
            .await;
        queued.push(id(answer.expect(200), "event_id"));
    }
    let started = std::time::Instant::now();
    while broker
        .get(&format!("/subscriptions/{sqs}"))
        .await
        .expect(200)["delivery"]["delivered"]
        != 2
    {
        assert!(
            started.elapsed() < WAIT,
            "the queue did not get both events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letters = broker
        .get(&format!("/subscriptions/{https}/dead-letters"))
        .await;
    assert_eq!(
        letters.expect(200)["dead_letters"][0]["event"]["detail"]["metadata"]["event_id"],
        dead.as_str()
    );

    let mut answers = Vec::new();
    let mut paths = portal_reads(&[&https, &sqs, &deleted]);
    paths.push(format!("/subscriptions/{https}/dead-letters"));
    for path in paths {
        let reply = broker.get(&path).await;
        answers.push(json!({"path": path, "status": reply.status, "body": reply.body}));
    }
    fixtures::write_json(
        &out.join("manifest.json"),
        &json!({
            "https_consumer": HTTPS_CONSUMER,
            "subscriptions": {"https": https, "sqs": sqs, "deleted": deleted},
            "dead_letter_event_ids": [dead],
            "delivered_event_ids": [delivered],
            "queue": {"name": QUEUE, "event_ids": queued},
            "answers": answers,
        }),
    );
    let broker = broker.restart_with(|dir| keep_data_dir(dir, &out)).await;
    broker.stop().await;
}

/// A consistent copy of each SQLite file (`VACUUM INTO`, so no WAL is left beside it) and the
/// bucket folders.
fn keep_data_dir(dir: &Path, out: &Path) {
    for file in ["busway.db", "events.db"] {
        let conn = rusqlite::Connection::open(dir.join(file)).expect("the file opens");
        let target = out.join(file);
        conn.execute("VACUUM INTO ?1", [target.to_str().expect("a UTF-8 path")])
            .expect("the copy is written");
        let version = |c: &rusqlite::Connection| -> i64 {
            c.query_row("PRAGMA user_version", [], |r| r.get(0))
                .expect("a user_version")
        };
        let copy = rusqlite::Connection::open(&target).expect("the copy opens");
        assert_eq!(
            version(&conn),
            version(&copy),
            "the copy keeps the file's version"
        );
    }
    fixtures::copy_dir(&dir.join("buckets"), &out.join("buckets"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a new fixture into the repository; set BUSWAY_FIXTURE"]
async fn writes_the_aws_table_and_buckets_of_this_release() {
    let out = fixtures::new_release_dir("aws");
    let account = Account::new().await;
    let registry_dir = tempfile::tempdir().expect("a temp dir");
    let (host, portal) = fixtures::lambda_portal(&account, registry_dir.path());
    let store = host.store();

    let (status, _) = call(&portal, "POST", "/events", Some(&seed_event())).await;
    assert_eq!(status, 201);
    let (status, _) = call(
        &portal,
        "PUT",
        "/events/scanned_parcel",
        Some(&second_version()),
    )
    .await;
    assert_eq!(status, 201);
    let mut ids = Vec::new();
    for body in [
        https_subscription("https://consumer.example.com/hooks/parcels"),
        sqs_subscription(),
        seed_subscription(),
    ] {
        let (status, created) = call(&portal, "POST", "/subscriptions", Some(&body)).await;
        assert_eq!(status, 201, "{created}");
        ids.push(id(&created, "id"));
    }
    let (status, _) = call(
        &portal,
        "DELETE",
        &format!("/subscriptions/{}", ids[2]),
        None,
    )
    .await;
    assert_eq!(status, 202);

    // What the state machine and the provisioner's tasks write as each deployment runs; the
    // last one (the destroy of the deleted subscription) fails its build.
    let provisioner = Provisioner {
        store: store.clone(),
        deployments: store.clone(),
        objects: host.objects(),
    };
    let mut deployments = store.list_deployments(None).await.expect("deployments");
    deployments.reverse();
    let last = deployments.len() - 1;
    for (i, d) in deployments.iter().enumerate() {
        let bucket = match d.kind {
            DeployKind::Producer => Bucket::Publisher,
            DeployKind::Consumer => Bucket::Subscriber,
        };
        let execution = provisioner
            .start(bucket, &d.bucket, &d.key, None)
            .await
            .expect("the notification")
            .expect("an execution");
        if execution.input.deployment_id != d.id {
            // Its document was replaced before it started (the deleted subscription's deploy):
            // the newer job runs in its own turn, and this one is superseded.
            let superseded = store
                .get_deployment(&d.id)
                .await
                .expect("read")
                .expect("kept");
            assert_eq!(superseded.status, DeploymentStatus::Superseded);
            continue;
        }
        let run = execution.name.as_str();
        provisioner
            .record(&d.id, run, DeploymentStatus::Validating, None)
            .await
            .expect("VALIDATING");
        provisioner
            .validate(&d.id, bucket, &d.key, &execution.input.object_version)
            .await
            .expect("the document is valid");
        provisioner
            .record(&d.id, run, DeploymentStatus::Building, None)
            .await
            .expect("BUILDING");
        let failed = i == last;
        let build = BuildInfo {
            id: format!("busway-{}:{}", d.kind.as_str(), d.id),
            status: Some(if failed { "FAILED" } else { "SUCCEEDED" }.into()),
            phases: vec![BuildPhase {
                name: "BUILD".into(),
                status: Some(if failed { "FAILED" } else { "SUCCEEDED" }.into()),
                duration_seconds: Some(41),
                message: failed.then(|| "cdk deploy exited with 1".into()),
            }],
            logs_url: Some("https://console.aws.amazon.com/cloudwatch/home".into()),
        };
        provisioner
            .record_build(&d.id, build)
            .await
            .expect("the build");
        let failure = failed.then(|| {
            (
                "Build.Failed".to_string(),
                "cdk deploy exited with 1".to_string(),
            )
        });
        provisioner
            .record(&d.id, run, DeploymentStatus::Succeeded, failure)
            .await
            .expect("the end");
    }

    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = account
            .dynamodb
            .scan()
            .table_name(&account.table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("a scan");
        items.extend(page.items().iter().map(fixtures::item_to_json));
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    let key = |item: &Value| format!("{}|{}", item["PK"]["S"], item["SK"]["S"]);
    items.sort_by_key(key);
    fixtures::write_json(&out.join("table.json"), &Value::Array(items));

    let mut objects = serde_json::Map::new();
    for bucket in Bucket::ALL {
        let listed = account
            .s3
            .list_objects_v2()
            .bucket(account.buckets.name(bucket))
            .send()
            .await
            .expect("a listing");
        let mut kept = serde_json::Map::new();
        for object in listed.contents() {
            let key = object.key().expect("a key");
            let bytes = account.object(bucket, key).await.expect("the object");
            kept.insert(
                key.to_string(),
                Value::String(String::from_utf8(bytes).expect("busway writes text objects")),
            );
        }
        objects.insert(bucket.base_name().to_string(), Value::Object(kept));
    }
    fixtures::write_json(&out.join("objects.json"), &Value::Object(objects));

    let mut answers = Vec::new();
    for path in portal_reads(&ids.iter().map(String::as_str).collect::<Vec<_>>()) {
        let (status, body) = call(&portal, "GET", &path, None).await;
        answers.push(json!({"path": path, "status": status, "body": body}));
    }
    fixtures::write_json(
        &out.join("manifest.json"),
        &json!({
            "subscriptions": {"https": ids[0], "sqs": ids[1], "deleted": ids[2]},
            "answers": answers,
        }),
    );
}
