//! Every data dir an earlier release left (tests/fixtures/upgrades/*/local) opened by this
//! release's busway: migrated with a copy of each file kept, every portal answer of then still
//! given, and the state still working: the old routes take events, the old subscriptions deliver
//! them, the dead letter is redriven, the waiting queue messages are received, deployments go on.
//! A data dir of a newer busway is refused, byte for byte untouched.

#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use busway_local::migrations::{EVENT_LOG, Migrations, NewerFile, STORE};
use busway_local::{Config, Running};
use busway_tests::consumer::Consumer;
use busway_tests::{Broker, seed_data_schema, v1_envelope, v2_envelope};
use serde_json::{Value, json};
use support::fixtures;

const WAIT: Duration = Duration::from_secs(15);
const FILES: [(&str, &Migrations); 2] = [("busway.db", &STORE), ("events.db", &EVENT_LOG)];

fn version(path: &Path) -> u32 {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .unwrap_or_else(|e| panic!("{} has no readable version: {e}", path.display()))
}

/// A copy of the fixture's data dir, without its manifest.
fn data_dir_of(fixture: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp data dir");
    fixtures::copy_dir(fixture, dir.path());
    std::fs::remove_file(dir.path().join("manifest.json")).expect("the manifest was copied");
    dir
}

fn event_id(event: &Value) -> String {
    event["detail"]["metadata"]["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event id in {event}"))
        .to_string()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_data_dir_opens_migrated_and_serves_its_state() {
    for fixture in fixtures::releases("local") {
        check(&fixture).await;
    }
}

async fn check(fixture: &Path) {
    let manifest = fixtures::read_json(&fixture.join("manifest.json"));
    let consumer =
        Consumer::start_on(manifest["https_consumer"].as_str().expect("an address")).await;
    let broker = Broker::start_in(data_dir_of(fixture)).await;

    for (file, migrations) in FILES {
        let kept = version(&fixture.join(file));
        assert_eq!(
            version(&broker.data_dir().join(file)),
            migrations.latest(),
            "{file}"
        );
        if kept < migrations.latest() {
            let stem = file.trim_end_matches(".db");
            let backup = broker.data_dir().join(format!("backups/{stem}-v{kept}.db"));
            assert_eq!(
                version(&backup),
                kept,
                "{} is the file before migrating",
                backup.display()
            );
        }
    }

    for answer in manifest["answers"].as_array().expect("answers") {
        let path = answer["path"].as_str().expect("a path");
        let reply = broker.get(path).await;
        assert_eq!(
            u64::from(reply.status),
            answer["status"],
            "GET {path}: {}",
            reply.body
        );
        fixtures::assert_keeps(&format!("GET {path}"), &answer["body"], &reply.body);
    }

    let subscription = |kind: &str| {
        manifest["subscriptions"][kind]
            .as_str()
            .expect("an id")
            .to_string()
    };
    let (https, sqs) = (subscription("https"), subscription("sqs"));

    let published = broker
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await;
    let fresh = published.expect(200)["event_id"]
        .as_str()
        .expect("an id")
        .to_string();
    consumer
        .wait_until("the old HTTPS subscription delivers", WAIT, |requests| {
            requests
                .iter()
                .any(|r| r.succeeded && r.event_id() == fresh)
        })
        .await;

    let published = broker
        .publish("scanned_parcel", "2", &v2_envelope("u3"))
        .await;
    let fresh = published.expect(200)["event_id"]
        .as_str()
        .expect("an id")
        .to_string();
    let queue = manifest["queue"]["name"].as_str().expect("a queue name");
    let mut expected = strings(&manifest["queue"]["event_ids"]);
    expected.push(fresh);
    let mut received = Vec::new();
    let started = Instant::now();
    while received.len() < expected.len() {
        assert!(
            started.elapsed() < WAIT,
            "the queue gave {received:?} of {expected:?}"
        );
        let reply = broker
            .get(&format!("/queues/{queue}/messages?max=10"))
            .await;
        let messages = reply.expect(200)["messages"]
            .as_array()
            .expect("messages")
            .clone();
        received.extend(messages.iter().map(|m| event_id(&m["body"])));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kept messages in the order the queue holds them, which need not be their publish order
    // (the manifest's), then the new one.
    let kept = expected.len() - 1;
    received[..kept].sort_unstable();
    expected[..kept].sort_unstable();
    assert_eq!(received, expected, "the kept messages, then the new one");

    let dead = strings(&manifest["dead_letter_event_ids"]);
    let redrive = broker
        .post(
            &format!("/subscriptions/{https}/dead-letters/redrive"),
            &json!({}),
        )
        .await;
    assert_eq!(redrive.expect(202)["redriving"], dead.len());
    consumer
        .wait_until("the dead letter is redriven", WAIT, |requests| {
            dead.iter()
                .all(|id| requests.iter().any(|r| r.succeeded && &r.event_id() == id))
        })
        .await;
    let started = Instant::now();
    while broker
        .get(&format!("/subscriptions/{https}/dead-letters"))
        .await
        .expect(200)["dead_letters"]
        != json!([])
    {
        assert!(
            started.elapsed() < WAIT,
            "the redriven dead letter stays listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        broker
            .get(&format!("/subscriptions/{sqs}"))
            .await
            .expect(200)["state"],
        "ACTIVE"
    );

    let before = broker.deployments_of("scanned_parcel").await;
    let added = broker
        .add_deployed_version(
            "scanned_parcel",
            &json!({"description": "after the upgrade", "data": seed_data_schema()}),
        )
        .await;
    let after = broker.deployments_of("scanned_parcel").await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[0]["id"], added["deployment_id"]);
    fixtures::assert_keeps(
        "the deployments after a new one",
        &json!(before),
        &json!(after[1..]),
    );
    broker.stop().await;
    consumer.stop().await;
}

fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("a readable folder") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .expect("inside")
                    .display()
                    .to_string();
                found.insert(name, std::fs::read(&path).expect("a readable file"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_a_newer_busway_is_refused_and_left_as_it_was() {
    let fixture = fixtures::releases("local").pop().expect("a fixture");
    for (file, migrations) in FILES {
        let dir = data_dir_of(&fixture);
        let newer = migrations.latest() + 1;
        rusqlite::Connection::open(dir.path().join(file))
            .and_then(|c| c.pragma_update(None, "user_version", newer))
            .expect("the file is stamped");
        let before = contents(dir.path());

        let any_port = "127.0.0.1:0".parse().expect("an address");
        let refused = Running::start(Config::new(dir.path().to_path_buf(), any_port, any_port))
            .await
            .err()
            .unwrap_or_else(|| panic!("busway started on a {file} of version {newer}"));
        let error = refused
            .downcast_ref::<NewerFile>()
            .unwrap_or_else(|| panic!("not refused as newer: {refused:#}"));
        assert_eq!((error.found, error.supported), (newer, migrations.latest()));
        let message = refused.to_string();
        assert!(
            message.contains(file)
                && message.contains(&format!("version {newer}"))
                && message.contains(&format!("up to {}", migrations.latest())),
            "{message}"
        );
        assert!(
            contents(dir.path()) == before,
            "refusing a newer {file} changed the data dir"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_serve_leaves_an_older_data_dir_as_it_was() {
    let fixture = fixtures::releases("local")
        .into_iter()
        .next()
        .expect("a fixture");
    let dir = data_dir_of(&fixture);
    let before = contents(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let any_port = "127.0.0.1:0".parse().expect("an address");
    let busy = taken.local_addr().expect("its address");
    let refused = Running::start(Config::new(dir.path().to_path_buf(), busy, any_port))
        .await
        .err()
        .expect("the portal's port is taken");
    assert!(
        refused.to_string().contains("binding portal"),
        "{refused:#}"
    );
    let after = contents(dir.path());
    assert!(
        after
            .iter()
            .filter(|(name, _)| name.as_str() != "busway.lock")
            .eq(before.iter()),
        "the data dir changed: {:?}",
        after.keys().collect::<Vec<_>>()
    );
}
