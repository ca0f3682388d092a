//! Every table and bucket an earlier release left on AWS (tests/fixtures/upgrades/*/aws), loaded
//! into moto and served by this release's adapters and the routers its Lambda functions serve:
//! every portal answer of then is still given, provisioning still reads the kept deploy.json
//! documents, the old routes take events and an old subscription's rule (made from its kept
//! document) gets them, and new records are written in the current format beside the old ones.
//! An item of a newer format is refused by name.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use busway_core::deploy::{self, DeployDoc, DeployKind};
use busway_core::format::{FORMAT_FIELD, RECORD_FORMAT};
use busway_core::ingest::LiveRoutes;
use busway_core::ports::{Bucket, EventStore};
use busway_core::provisioning::Provisioner;
use busway_injector::Broker;
use busway_tests::{seed_data_schema, v1_envelope, v2_envelope};
use serde_json::{Value, json};
use support::emulated::Account;
use support::fixtures::{self, call};

/// A new account holding the fixture's items and objects.
async fn load(fixture: &Path) -> Account {
    let account = Account::new().await;
    for item in fixtures::read_json(&fixture.join("table.json"))
        .as_array()
        .expect("a list of items")
    {
        account
            .dynamodb
            .put_item()
            .table_name(&account.table)
            .set_item(Some(fixtures::item_from_json(item)))
            .send()
            .await
            .expect("the item is put");
    }
    let objects = fixtures::read_json(&fixture.join("objects.json"));
    for bucket in Bucket::ALL {
        for (key, text) in objects[bucket.base_name()].as_object().expect("a bucket") {
            account
                .s3
                .put_object()
                .bucket(account.buckets.name(bucket))
                .key(key)
                .body(
                    text.as_str()
                        .expect("a text object")
                        .as_bytes()
                        .to_vec()
                        .into(),
                )
                .send()
                .await
                .expect("the object is put");
        }
    }
    account
}

async fn raw_item(account: &Account, pk: &str, sk: &str) -> Option<Value> {
    let out = account
        .dynamodb
        .get_item()
        .table_name(&account.table)
        .key("PK", AttributeValue::S(pk.into()))
        .key("SK", AttributeValue::S(sk.into()))
        .send()
        .await
        .expect("GetItem");
    out.item().map(fixtures::item_to_json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_table_and_bucket_is_served_by_this_release() {
    for fixture in fixtures::releases("aws") {
        check(&fixture).await;
    }
}

async fn check(fixture: &Path) {
    let manifest = fixtures::read_json(&fixture.join("manifest.json"));
    let account = load(fixture).await;
    let registry_dir = tempfile::tempdir().expect("a temp dir");
    let (host, portal) = fixtures::lambda_portal(&account, registry_dir.path());
    let store = host.store();

    for answer in manifest["answers"].as_array().expect("answers") {
        let path = answer["path"].as_str().expect("a path");
        let (status, body) = call(&portal, "GET", path, None).await;
        assert_eq!(u64::from(status), answer["status"], "GET {path}: {body}");
        fixtures::assert_keeps(&format!("GET {path}"), &answer["body"], &body);
    }

    // Audit entries kept with `before`/`after` as maps (this release writes JSON text) read as
    // they were: every one, each change an object or null.
    let table = fixtures::read_json(&fixture.join("table.json"));
    let kept = table.as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|i| {
                i["PK"]["S"]
                    .as_str()
                    .is_some_and(|pk| pk.starts_with("AUDIT#ET#"))
            })
            .count()
    });
    let (status, body) = call(&portal, "GET", "/audit?limit=100", None).await;
    assert_eq!(status, 200, "GET /audit: {body}");
    let entries = body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), kept, "{body}");
    for entry in entries {
        for change in ["before", "after"] {
            assert!(
                entry[change].is_object() || entry[change].is_null(),
                "{change} of {entry}"
            );
        }
    }

    // The validate task reads every kept document as the state machine would run it again.
    let provisioner = Provisioner {
        store: store.clone(),
        deployments: store.clone(),
        objects: host.objects(),
    };
    let objects = fixtures::read_json(&fixture.join("objects.json"));
    let mut rule = None;
    for (bucket, kind) in [
        (Bucket::Publisher, DeployKind::Producer),
        (Bucket::Subscriber, DeployKind::Consumer),
    ] {
        for key in objects[bucket.base_name()]
            .as_object()
            .expect("a bucket")
            .keys()
        {
            let version = provisioner
                .objects
                .get_object_version(bucket, key, None)
                .await
                .expect("the kept object reads")
                .expect("the kept object")
                .version;
            let doc = provisioner
                .load(bucket, key, &version)
                .await
                .unwrap_or_else(|e| panic!("the kept {key} no longer validates: {e:?}"));
            assert_eq!(doc.kind(), kind);
            if let DeployDoc::Consumer(c) = doc
                && c.subscription_id == manifest["subscriptions"]["sqs"]
            {
                rule = Some((c.rule_name, c.event_pattern));
            }
        }
    }
    let (rule_name, pattern) = rule.expect("the SQS subscription's document is kept");
    let queue = account
        .rule_to_queue(&rule_name, &pattern.to_string())
        .await;

    // A fresh injector learns the old routes from the table, as a new Lambda container does.
    let broker = busway_injector::router(Broker {
        routes: Arc::new(LiveRoutes::default()),
        store: Some(store.clone()),
        bus: host.bus().expect("the bus is configured"),
    });
    let (status, answer) =
        fixtures::publish(&broker, "/scanned_parcel/1", &v1_envelope("u2")).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) =
        fixtures::publish(&broker, "/scanned_parcel/2", &v2_envelope("u3")).await;
    assert_eq!(status, 200, "{answer}");
    let received: Vec<Value> = account
        .drain(&queue, 10)
        .await
        .iter()
        .map(|e| e["detail"]["metadata"]["event_id"].clone())
        .collect();
    assert_eq!(
        received,
        [answer["event_id"].clone()],
        "the old rule gets the v2 event for u3"
    );

    // A new version: written in the current format, beside the kept records.
    let kept_v1 = raw_item(&account, "EVENT#scanned_parcel", "VERSION#0000000001").await;
    let (status, added) = call(
        &portal,
        "PUT",
        "/events/scanned_parcel",
        Some(&json!({"description": "after the upgrade", "data": seed_data_schema()})),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let version = added["version"].as_u64().expect("a version");
    let written = raw_item(
        &account,
        "EVENT#scanned_parcel",
        &format!("VERSION#{version:010}"),
    )
    .await
    .expect("the new version's item");
    assert_eq!(
        written[FORMAT_FIELD],
        json!({"N": RECORD_FORMAT.to_string()})
    );
    let deployment = raw_item(
        &account,
        &format!(
            "DEPLOYMENT#{}",
            added["deployment_id"].as_str().expect("an id")
        ),
        "DEPLOYMENT",
    )
    .await
    .expect("the new deployment's item");
    assert_eq!(
        deployment[FORMAT_FIELD],
        json!({"N": RECORD_FORMAT.to_string()})
    );
    assert_eq!(
        raw_item(&account, "EVENT#scanned_parcel", "VERSION#0000000001").await,
        kept_v1,
        "an old record is not rewritten by adding a version"
    );
    let document = account
        .object(
            Bucket::Publisher,
            &format!("scanned_parcel/{version}/deploy.json"),
        )
        .await
        .expect("the new producer document");
    let DeployDoc::Producer(doc) =
        deploy::parse(DeployKind::Producer, &document).expect("a valid document")
    else {
        panic!("a producer document");
    };
    assert_eq!(doc.format_version, busway_core::format::DEPLOY_FORMAT);
    let (_, event) = call(&portal, "GET", "/events/scanned_parcel", None).await;
    let versions = event["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_of_a_newer_format_is_refused_by_name() {
    let fixture = fixtures::releases("aws").pop().expect("a fixture");
    let account = load(&fixture).await;
    let newer = RECORD_FORMAT + 1;
    account
        .dynamodb
        .update_item()
        .table_name(&account.table)
        .key("PK", AttributeValue::S("EVENT#scanned_parcel".into()))
        .key("SK", AttributeValue::S("EVENT".into()))
        .update_expression("SET format_version = :newer")
        .expression_attribute_values(":newer", AttributeValue::N(newer.to_string()))
        .send()
        .await
        .expect("the item is stamped");
    let registry_dir = tempfile::tempdir().expect("a temp dir");
    let (host, portal) = fixtures::lambda_portal(&account, registry_dir.path());

    let name = "scanned_parcel".parse().expect("a name");
    let error = host
        .store()
        .get_event_type(&name)
        .await
        .expect_err("a record of a newer format");
    let message = format!("{error:#}");
    assert!(
        message.contains("EVENT#scanned_parcel")
            && message.contains(&format!("format_version {newer}"))
            && message.contains(&format!("up to {RECORD_FORMAT}")),
        "{message}"
    );
    let (status, body) = call(&portal, "GET", "/events/scanned_parcel", None).await;
    assert_eq!(
        status, 500,
        "never read as if it were an older record: {body}"
    );
    let (status, _) = call(&portal, "GET", "/events/scanned_parcel/versions/1", None).await;
    assert_eq!(
        status, 200,
        "the records of the current format are still read"
    );
}
