//! Provisioning as durable jobs on the local host, over HTTP: a create (an event type, a
//! subscription, a new version) retried after a timeout gets what it made; a step that fails after the domain commit fails the job with its reason and
//! a retry completes it on the same document; one job at a time per document (a subscribe
//! followed at once by its unsubscribe ends with no rule, create-delete-create with one); a
//! reverted hand edit provisions again; a version or subscription shows what its jobs made of it.

use std::path::Path;

use busway_tests::{
    Broker, ids, join_all, seed_event, seed_subscription, statuses, v1_envelope,
    without_provisioning,
};
use serde_json::{Value, json};

const CASES: &str = include_str!("../../statemachines/cases.json");
const PRODUCER_BUCKET: &str = "publisher-components-bucket";
const PRODUCER_KEY: &str = "scanned_parcel/1/deploy.json";
const ROUNDS: usize = 5;

/// The subscriptions the local broker holds a rule for (its build step's output).
fn rules(data_dir: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("busway.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("busway.db opens");
    let mut query = db
        .prepare("SELECT subscription_id FROM rules ORDER BY subscription_id")
        .expect("the rules table");
    query
        .query_map([], |row| row.get(0))
        .expect("rules")
        .collect::<Result<_, _>>()
        .expect("rule ids")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_retried_after_a_timeout_gets_what_it_made_and_another_body_a_conflict() {
    let busway = Broker::start().await;
    let created = busway.create_deployed_event(&seed_event()).await;
    let again = busway.post("/events", &seed_event()).await;
    let again = again.expect(201);
    // The same event type, whose version is live by now.
    assert_eq!(without_provisioning(again), without_provisioning(&created));
    assert_eq!(
        again["versions"][0]["provisioning"]["status"], "LIVE",
        "{again}"
    );

    let subscribed = busway.subscribe_deployed(&seed_subscription()).await;
    let again = busway.post("/subscriptions", &seed_subscription()).await;
    assert_eq!(again.expect(201), &subscribed);

    let mut taken = seed_event();
    taken["data"] = json!({"type": "object", "properties": {"other": {"type": "string"}}});
    busway
        .post("/events", &taken)
        .await
        .expect_error(409, "already_exists");
    assert_eq!(
        busway.deployments_of("scanned_parcel").await.len(),
        2,
        "the repeats started no deployment"
    );

    // A new version sent several times at once, then again: one version, the same answer.
    let v2 = json!({"description": "with the scanner", "data": {"type": "object",
        "properties": {"scanner": {"type": "string"}}, "required": ["scanner"]}});
    let client = &busway;
    let replies = join_all(
        (0..3)
            .map(|_| async { client.put("/events/scanned_parcel", &v2).await })
            .collect(),
    )
    .await;
    let made = replies[0].expect(201).clone();
    assert_eq!(made["version"], 2, "{made}");
    for reply in &replies {
        assert_eq!(reply.expect(201), &made);
    }
    busway
        .deployed(made["deployment_id"].as_str().expect("a deployment id"))
        .await;
    let again = busway.put("/events/scanned_parcel", &v2).await;
    assert_eq!(again.expect(201), &made);
    let versions = busway.get("/events/scanned_parcel").await.expect(200)["versions"].clone();
    assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");
    // Another schema, or the same one under another description, is a new version.
    let mut other = v2.clone();
    other["description"] = json!("the scanner again");
    let v3 = busway.put("/events/scanned_parcel", &other).await;
    assert_eq!(v3.expect(201)["version"], 3);
    assert_eq!(
        busway.deployments_of("scanned_parcel").await.len(),
        4,
        "one deployment per version made"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_failing_after_the_domain_commit_fails_the_job_and_a_retry_completes_it() {
    let busway = Broker::start().await;
    // A file where the event type's folder of the publisher bucket goes: every write of its
    // deploy.json fails, as an unreachable bucket would.
    let blocker = busway
        .object_path(PRODUCER_BUCKET, PRODUCER_KEY)
        .parent()
        .and_then(Path::parent)
        .expect("the event type's folder")
        .to_path_buf();
    std::fs::write(&blocker, b"not a folder").expect("the blocker is written");

    let created = busway
        .post("/events", &seed_event())
        .await
        .expect(201)
        .clone();
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let failed = busway.wait_for_deployment(id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["error"], "Store.Unavailable", "{failed}");
    let cause = failed["cause"].as_str().expect("a cause");
    assert!(cause.contains("writing deploy.json"), "{cause}");
    assert_eq!(statuses(&failed), ["PENDING", "FAILED"]);
    // The version is registered, but nothing claims its route is live: it is not.
    let version = busway
        .get("/events/scanned_parcel/versions/1")
        .await
        .expect(200)
        .clone();
    assert_eq!(version["state"], "ACTIVE");
    assert_eq!(
        version["provisioning"],
        json!({"status": "FAILED", "deployment_id": id, "live": false})
    );
    let event = busway
        .get("/events/scanned_parcel")
        .await
        .expect(200)
        .clone();
    assert_eq!(
        event["versions"][0]["provisioning"],
        version["provisioning"]
    );
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect_error(404, "not_found");

    std::fs::remove_file(&blocker).expect("the blocker is removed");
    let retried = busway
        .post(&format!("/deployments/{id}/retry"), &json!({}))
        .await
        .expect(202)
        .clone();
    assert_eq!(retried["id"], id);
    assert_eq!(retried["attempt"], 2);
    let done = busway.deployed(id).await;
    let cases: Value = serde_json::from_str(CASES).expect("cases.json is JSON");
    assert_eq!(
        json!(statuses(&done)),
        cases["cases"]["retried"]["history"],
        "{done}"
    );
    assert_eq!(done["error"], Value::Null);
    let published = busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await;
    assert!((200..300).contains(&published.status), "{published:?}");
    let version = busway.get("/events/scanned_parcel/versions/1").await;
    assert_eq!(
        version.expect(200)["provisioning"],
        json!({"status": "LIVE", "deployment_id": id, "live": true})
    );
    assert_eq!(
        busway.deployments_of("scanned_parcel").await.len(),
        1,
        "the retry ran the same deployment"
    );

    busway
        .post(&format!("/deployments/{id}/retry"), &json!({}))
        .await
        .expect_error(409, "conflict");
    busway
        .post("/deployments/no-such-deployment/retry", &json!({}))
        .await
        .expect_error(404, "not_found");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_is_retried_on_the_same_document_as_its_next_attempt() {
    // Without a Lambda Invoke endpoint the local build of a LAMBDA subscription fails.
    let busway = Broker::start_with(|c| c.delivery.lambda_endpoint = None).await;
    busway.create_deployed_event(&seed_event()).await;
    let subscribed = busway
        .post("/subscriptions", &seed_subscription())
        .await
        .expect(201)
        .clone();
    let id = subscribed["deployment_id"].as_str().expect("an id");
    let failed = busway.wait_for_deployment(id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let version = failed["object_version"].clone();
    assert!(version.is_string(), "{failed}");
    // The subscription is on record, and says its rule is not live.
    let subscription = subscribed["id"].as_str().expect("a subscription id");
    let shown = busway.get(&format!("/subscriptions/{subscription}")).await;
    let shown = shown.expect(200);
    assert_eq!(shown["state"], "ACTIVE");
    assert_eq!(
        shown["provisioning"],
        json!({"status": "FAILED", "deployment_id": id, "live": false})
    );
    let listed = busway.get("/subscriptions?event_type=scanned_parcel").await;
    assert_eq!(
        listed.expect(200)["subscriptions"][0]["provisioning"],
        shown["provisioning"]
    );

    busway
        .post(&format!("/deployments/{id}/retry"), &json!({}))
        .await
        .expect(202);
    let again = busway.wait_for_deployment(id).await;
    assert_eq!(again["status"], "FAILED", "{again}");
    assert_eq!(again["attempt"], 2);
    assert_eq!(
        again["object_version"], version,
        "the same document version"
    );
    assert_ne!(again["execution"], failed["execution"], "a new execution");
    assert_eq!(
        statuses(&again),
        [
            "PENDING",
            "VALIDATING",
            "BUILDING",
            "FAILED",
            "PENDING",
            "VALIDATING",
            "BUILDING",
            "FAILED"
        ]
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_followed_at_once_by_its_unsubscribe_ends_with_no_rule() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    for round in 0..ROUNDS {
        let mut body = seed_subscription();
        body["target_unit"] = json!(format!("unit_{round}"));
        let subscribed = busway
            .post("/subscriptions", &body)
            .await
            .expect(201)
            .clone();
        let sid = subscribed["id"].as_str().expect("an id");
        let deleted = busway
            .delete(&format!("/subscriptions/{sid}"))
            .await
            .expect(202)
            .clone();
        let destroy = busway
            .deployed(deleted["deployment_id"].as_str().expect("an id"))
            .await;
        let deploy = busway
            .wait_for_deployment(subscribed["deployment_id"].as_str().expect("an id"))
            .await;
        // The deploy ran before the unsubscribe, was superseded before it started, or was
        // running when the unsubscribe came: then it found its subscription gone, or its
        // document version replaced (it never deploys another); never is it left PENDING.
        match deploy["status"].as_str() {
            Some("SUCCEEDED") => {}
            Some("SUPERSEDED") => assert_eq!(statuses(&deploy), ["PENDING", "SUPERSEDED"]),
            Some("FAILED") => assert!(
                ["DeployConfig.Invalid", "DeployConfig.NotFound"]
                    .contains(&deploy["error"].as_str().unwrap_or_default()),
                "{deploy}"
            ),
            _ => panic!("round {round}: {deploy}"),
        }
        assert_eq!(destroy["action"], "destroy");
        assert_eq!(
            rules(busway.data_dir()),
            Vec::<String>::new(),
            "round {round}"
        );
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_delete_create_of_a_subscription_ends_with_exactly_one_rule() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let body = seed_subscription();
    let first = busway
        .post("/subscriptions", &body)
        .await
        .expect(201)
        .clone();
    let first_id = first["id"].as_str().expect("an id");
    let deleted = busway
        .delete(&format!("/subscriptions/{first_id}"))
        .await
        .expect(202)
        .clone();
    let second = busway
        .post("/subscriptions", &body)
        .await
        .expect(201)
        .clone();
    assert_ne!(
        second["id"], first["id"],
        "a deleted subscription is not answered again"
    );
    busway
        .deployed(deleted["deployment_id"].as_str().expect("an id"))
        .await;
    busway
        .deployed(second["deployment_id"].as_str().expect("an id"))
        .await;
    assert_eq!(
        rules(busway.data_dir()),
        [second["id"].as_str().expect("an id")]
    );
    // Many at once: every pair ends with its second subscription's rule only.
    let client = &busway;
    let pairs = join_all(
        (0..ROUNDS)
            .map(|round| async move {
                let mut body = seed_subscription();
                body["target_unit"] = json!(format!("unit_{round}"));
                let first = client
                    .post("/subscriptions", &body)
                    .await
                    .expect(201)
                    .clone();
                let id = first["id"].as_str().expect("an id");
                client
                    .delete(&format!("/subscriptions/{id}"))
                    .await
                    .expect(202);
                client
                    .post("/subscriptions", &body)
                    .await
                    .expect(201)
                    .clone()
            })
            .collect(),
    )
    .await;
    let mut expected = vec![second["id"].as_str().expect("an id").to_string()];
    for made in &pairs {
        busway
            .deployed(made["deployment_id"].as_str().expect("an id"))
            .await;
        expected.push(made["id"].as_str().expect("an id").to_string());
    }
    expected.sort();
    assert_eq!(rules(busway.data_dir()), expected);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_a_hand_edit_provisions_the_reverted_document_again() {
    let busway = Broker::start().await;
    let created = busway.create_deployed_event(&seed_event()).await;
    let original = std::fs::read(busway.object_path(PRODUCER_BUCKET, PRODUCER_KEY))
        .expect("the producer deploy.json");
    let first = busway
        .deployed(created["deployment_id"].as_str().expect("an id"))
        .await;

    let known = ids(&busway.deployments_of("scanned_parcel").await);
    busway.edit_object(
        PRODUCER_BUCKET,
        PRODUCER_KEY,
        b"{\"kind\": \"producer\", oops",
    );
    let broken = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(broken["status"], "FAILED", "{broken}");

    let known = ids(&busway.deployments_of("scanned_parcel").await);
    busway.edit_object(PRODUCER_BUCKET, PRODUCER_KEY, &original);
    let reverted = busway
        .wait_for_new_deployment("scanned_parcel", &known)
        .await;
    assert_eq!(reverted["status"], "SUCCEEDED", "{reverted}");
    assert_eq!(
        reverted["object_version"], first["object_version"],
        "the reverted document is the first one's version"
    );
    assert_ne!(reverted["execution"], first["execution"]);
    let published = busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await;
    assert!((200..300).contains(&published.status), "{published:?}");
    busway.stop().await;
}

/// An edit made while a job builds (here during its `cdk synth`, after the build read the
/// version it validated) is never deployed by that job: the job deploys what it validated, and
/// the edit gets its own job, which fails on the broken document while the route stays live.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_while_a_job_builds_is_not_deployed_by_it_and_gets_its_own_job() {
    use std::os::unix::fs::PermissionsExt;
    const BROKEN: &[u8] = b"{\"kind\": \"producer\", oops";
    // A `cdk` where `npx --no-install cdk` finds it, which edits the document as a person
    // would (write aside, rename) while the build runs it, once.
    let cdk_app = tempfile::tempdir().expect("a temp dir");
    let bin = cdk_app.path().join("node_modules/.bin");
    std::fs::create_dir_all(&bin).expect("the bin folder");
    let busway = Broker::start_with(|c| {
        let doc = busway_tests::object_path_in(&c.data_dir, PRODUCER_BUCKET, PRODUCER_KEY);
        let marker = cdk_app.path().join("edited");
        let script = format!(
            "#!/bin/sh\n[ -e '{marker}' ] && exit 0\ntouch '{marker}'\nprintf '%s' '{broken}' > '{doc}.edit'\nmv '{doc}.edit' '{doc}'\n",
            marker = marker.display(),
            broken = String::from_utf8_lossy(BROKEN),
            doc = doc.display(),
        );
        let cdk = bin.join("cdk");
        std::fs::write(&cdk, script).expect("a script");
        std::fs::set_permissions(&cdk, std::fs::Permissions::from_mode(0o755))
            .expect("executable");
        c.synth = Some(busway_local::provisioning::Synth {
            cdk_app: cdk_app.path().to_path_buf(),
            out: c.data_dir.join("synth"),
            timeout: std::time::Duration::from_secs(60),
        });
    })
    .await;

    let created = busway
        .post("/events", &seed_event())
        .await
        .expect(201)
        .clone();
    let id = created["deployment_id"].as_str().expect("a deployment id");
    let first = busway.deployed(id).await;
    assert_eq!(
        std::fs::read(busway.object_path(PRODUCER_BUCKET, PRODUCER_KEY)).expect("the document"),
        BROKEN,
        "the document was edited while the job built it"
    );
    let edited = busway_core::deployment::object_version(BROKEN);
    assert_ne!(first["object_version"], edited.as_str(), "{first}");

    let own = busway
        .wait_for_new_deployment("scanned_parcel", &[id.to_string()])
        .await;
    assert_eq!(own["object_version"], edited.as_str(), "{own}");
    assert_eq!(own["error"], "DeployConfig.Invalid", "{own}");
    assert_eq!(statuses(&own), ["PENDING", "VALIDATING", "FAILED"]);
    busway
        .publish("scanned_parcel", "1", &v1_envelope("u2"))
        .await
        .expect(200);
    let version = busway.get("/events/scanned_parcel/versions/1").await;
    assert_eq!(
        version.expect(200)["provisioning"],
        json!({"status": "FAILED", "deployment_id": own["id"], "live": true})
    );
    busway.stop().await;
}
