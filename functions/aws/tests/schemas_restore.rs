//! Restoring the Schema Registry on the AWS adapters: versions read from DynamoDB and backups
//! from S3 over the real wire (moto server), put into the registry through the real schemas
//! client, answered by a mock that keeps versions as the registry does (moto has no schemas
//! service). Also the `busway-aws` binary's usage and configuration errors.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use aws_sdk_schemas::Client;
use aws_sdk_schemas::config::http::HttpResponse;
use aws_sdk_schemas::operation::create_schema::CreateSchemaOutput;
use aws_sdk_schemas::operation::describe_schema::DescribeSchemaOutput;
use aws_sdk_schemas::operation::update_schema::UpdateSchemaOutput;
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use busway_aws::schemas::EventBridgeSchemaRegistry;
use busway_aws::{BucketNames, DynamoStore, S3ObjectStore};
use busway_core::deploy::{DeployKind, producer_key};
use busway_core::deployment::{Deployment, new_id};
use busway_core::event::{EventType, EventVersion, ProducerConnection, VersionState};
use busway_core::ports::{Bucket, EventStore, ObjectStore, schema_backup_key};
use busway_core::registry::{SchemaRef, restore};
use busway_core::{EventTypeName, Version};
use busway_tests::moto::{self, Moto};
use serde_json::{Value, json};

/// The registry's versions of each schema, as content strings; version `n` at index `n - 1`.
type Versions = Arc<Mutex<HashMap<String, Vec<String>>>>;

fn error<O, E>(status: u16, code: &str) -> MockResponse<O, E> {
    let mut response = HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(json!({"Code": code, "Message": "mocked"}).to_string()),
    );
    response
        .headers_mut()
        .insert("x-amzn-errortype", code.to_string());
    MockResponse::Http(response)
}

/// A schemas client whose registry keeps versions in `versions`: CreateSchema makes version 1,
/// UpdateSchema the next one, DescribeSchema reads one or the latest.
fn registry(versions: &Versions) -> EventBridgeSchemaRegistry {
    let state = versions.clone();
    let describe = mock!(Client::describe_schema).then_compute_response(move |req| {
        let state = state.lock().expect("registry lock");
        let found = state
            .get(req.schema_name().unwrap_or_default())
            .and_then(|v| match req.schema_version() {
                Some(n) => {
                    let n: usize = n.parse().ok()?;
                    Some((n, v.get(n.checked_sub(1)?)?))
                }
                None => v.last().map(|c| (v.len(), c)),
            });
        match found {
            Some((n, content)) => MockResponse::Output(
                DescribeSchemaOutput::builder()
                    .schema_version(n.to_string())
                    .content(content)
                    .build(),
            ),
            None => error(404, "NotFoundException"),
        }
    });
    let state = versions.clone();
    let create = mock!(Client::create_schema).then_compute_response(move |req| {
        let mut state = state.lock().expect("registry lock");
        let name = req.schema_name().unwrap_or_default().to_string();
        if state.contains_key(&name) {
            return error(409, "ConflictException");
        }
        state.insert(name, vec![req.content().unwrap_or_default().to_string()]);
        MockResponse::Output(CreateSchemaOutput::builder().schema_version("1").build())
    });
    let state = versions.clone();
    let update = mock!(Client::update_schema).then_compute_response(move |req| {
        let mut state = state.lock().expect("registry lock");
        match state.get_mut(req.schema_name().unwrap_or_default()) {
            Some(versions) => {
                versions.push(req.content().unwrap_or_default().to_string());
                MockResponse::Output(
                    UpdateSchemaOutput::builder()
                        .schema_version(versions.len().to_string())
                        .build(),
                )
            }
            None => error(404, "NotFoundException"),
        }
    });
    let client = mock_client!(
        aws_sdk_schemas,
        RuleMode::MatchAny,
        &[&describe, &create, &update]
    );
    EventBridgeSchemaRegistry::new(client, "test.busway.schemas")
}

fn schema(event_type: &str, version: u32) -> Value {
    json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
           "title": format!("{event_type} v{version}")})
}

fn deployment(event_type: &EventTypeName, version: Version) -> Deployment {
    Deployment::pending(
        new_id(),
        DeployKind::Producer,
        Bucket::Publisher.base_name().into(),
        producer_key(event_type, version),
        busway_core::now(),
    )
}

/// Registers `versions` versions of `name` in the store, with a backup of each listed in
/// `backed_up`.
async fn register(
    store: &DynamoStore,
    objects: &S3ObjectStore,
    name: &str,
    versions: u32,
    backed_up: &[u32],
) {
    let event_type: EventTypeName = name.parse().expect("event type");
    for n in 1..=versions {
        let version = Version::new(n).expect("version");
        let record = EventVersion {
            event_type: event_type.clone(),
            version,
            description: format!("{name} v{n}"),
            schema: schema(name, n),
            state: VersionState::Active,
            created_at: busway_core::now(),
        };
        let deployment = deployment(&event_type, version);
        if n == 1 {
            let event = EventType {
                event_type: event_type.clone(),
                application: "parcels".parse().expect("application"),
                description: name.into(),
                connection_type: ProducerConnection::Https,
                latest_version: version,
                created_at: busway_core::now(),
                team: None,
                writers: Vec::new(),
                readers: None,
            };
            store
                .create_event_type(&event, &record, &deployment)
                .await
                .expect("event type created");
        } else {
            let previous = Version::new(n - 1).expect("version");
            store
                .add_version(&record, previous, &deployment)
                .await
                .expect("version added");
        }
        if backed_up.contains(&n) {
            objects
                .put_object(
                    Bucket::SchemaBackup,
                    &schema_backup_key(&event_type, version),
                    serde_json::to_vec_pretty(&record.schema).expect("JSON"),
                )
                .await
                .expect("backup stored");
        }
    }
}

fn names(refs: &[SchemaRef]) -> Vec<String> {
    refs.iter()
        .map(|r| format!("{}/{}", r.event_type, r.version))
        .collect()
}

#[tokio::test]
async fn the_registry_is_rebuilt_in_version_order_from_the_backups_of_the_stored_versions() {
    let moto = Moto::start().await;
    let sdk = moto::sdk(&moto.endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    DynamoStore::create_table(&dynamodb, "events")
        .await
        .expect("table");
    let s3 = moto::s3(&sdk);
    s3.create_bucket()
        .bucket("backup")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    moto::REGION,
                ))
                .build(),
        )
        .send()
        .await
        .expect("bucket");
    let store = DynamoStore::new(dynamodb, "events");
    let objects = S3ObjectStore::new(
        s3,
        BucketNames {
            schema_backup: "backup".into(),
            publisher: "publisher".into(),
            subscriber: "subscriber".into(),
        },
    );
    register(&store, &objects, "scanned_parcel", 3, &[1, 2, 3]).await;
    // Version 1's backup is lost: version 2 cannot go into the registry before it.
    register(&store, &objects, "delivered_parcel", 2, &[2]).await;

    let versions = Versions::default();
    let registry = registry(&versions);
    let report = restore(&objects, &store, &registry)
        .await
        .expect("restore runs");
    let mut restored = names(&report.restored);
    restored.sort();
    assert_eq!(
        restored,
        vec!["scanned_parcel/1", "scanned_parcel/2", "scanned_parcel/3"]
    );
    assert_eq!(names(&report.missing_backups), vec!["delivered_parcel/1"]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(
        report.failed[0].schema.event_type.as_str(),
        "delivered_parcel"
    );
    assert!(
        report.failed[0].reason.contains("up to version 0"),
        "{}",
        report.failed[0].reason
    );
    assert!(!report.is_complete());

    let registered: Vec<Value> = versions.lock().expect("registry lock")["scanned_parcel"]
        .iter()
        .map(|c| serde_json::from_str(c).expect("JSON"))
        .collect();
    assert_eq!(
        registered,
        (1..=3)
            .map(|n| schema("scanned_parcel", n))
            .collect::<Vec<_>>()
    );
    assert!(
        !versions
            .lock()
            .expect("registry lock")
            .contains_key("delivered_parcel")
    );

    let again = restore(&objects, &store, &registry)
        .await
        .expect("restore runs");
    assert!(again.restored.is_empty(), "{again:?}");
    assert_eq!(again.unchanged.len(), 3);
    assert_eq!(
        versions.lock().expect("registry lock")["scanned_parcel"].len(),
        3
    );
}

fn busway_aws(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_busway-aws"))
        .args(args)
        .env_clear()
        .output()
        .expect("busway-aws runs")
}

#[test]
fn the_binary_names_its_usage_and_a_missing_setting() {
    let usage = busway_aws(&["registry"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("busway-aws registry restore"));

    let unconfigured = busway_aws(&["registry", "restore"]);
    assert_eq!(unconfigured.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unconfigured.stderr).contains("BUSWAY_TABLE_NAME is not set"),
        "{}",
        String::from_utf8_lossy(&unconfigured.stderr)
    );
}
