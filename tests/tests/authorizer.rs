//! The Lambda REQUEST authorizer, its built binary run through the Lambda runtime harness with
//! its keys on moto's DynamoDB: a valid key is an Allow policy for the whole stage carrying the
//! caller, and no key, an unknown, a revoked or an expired one is "Unauthorized" (API Gateway's
//! 401). Needs the bins built (`cargo build --workspace --all-features --bins`, as `make unit`).

use std::path::{Path, PathBuf};

use busway_aws::dynamo::DynamoStore;
use busway_core::auth::{self, KeyStore, NewKey, Role};
use busway_tests::lambda::Function;
use busway_tests::moto::{self, REGION};
use serde_json::{Value, json};

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/{profile}/deps/")
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the Lambda bins first (`cargo build --workspace --all-features --bins`)",
        binary.display()
    );
    binary
}

/// A REQUEST authorizer event of the portal's `GET /events`, as API Gateway sends it.
fn event(authorization: Option<&str>) -> String {
    let mut headers = json!({"Host": "abc123.execute-api.eu-west-1.amazonaws.com"});
    if let Some(value) = authorization {
        headers["Authorization"] = json!(value);
    }
    json!({
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:eu-west-1:123456789012:abc123/live/GET/events",
        "resource": "/{proxy+}", "path": "/events", "httpMethod": "GET",
        "headers": headers, "queryStringParameters": {}, "pathParameters": {"proxy": "events"},
        "stageVariables": {},
        "requestContext": {"accountId": "123456789012", "apiId": "abc123", "stage": "live"}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizer_allows_valid_keys_with_their_caller_and_refuses_the_others() {
    let endpoint = moto::endpoint().await;
    let sdk = moto::sdk(endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("authorizer-{}", uuid::Uuid::new_v4().simple());
    DynamoStore::create_table(&dynamodb, &table)
        .await
        .expect("the table is created");
    let store = DynamoStore::new(dynamodb, table.clone());
    let new = |role, application: Option<&str>| {
        NewKey::new(
            "logistics".parse().expect("a team"),
            role,
            application.map(|a| a.parse().expect("an application")),
        )
        .expect("a valid key")
    };
    let (producer, producer_key) = auth::create_key(&store, new(Role::Producer, Some("demo")))
        .await
        .expect("a producer key");
    let (revoked, revoked_key) = auth::create_key(&store, new(Role::Owner, None))
        .await
        .expect("an owner key");
    auth::revoke_key(&store, &revoked.id)
        .await
        .expect("revoked");
    let (mut expired, expired_key) = auth::create_key(&store, new(Role::Consumer, None))
        .await
        .expect("a consumer key");
    expired.expires_at = Some(busway_core::now() - std::time::Duration::from_secs(1));
    store.update_key(&expired).await.expect("expired");

    let env: Vec<(String, String)> = [
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("BUSWAY_TABLE_NAME", &table),
        ("BUSWAY_SCHEMA_BACKUP_BUCKET", "unused"),
        ("BUSWAY_PUBLISHER_BUCKET", "unused"),
        ("BUSWAY_SUBSCRIBER_BUCKET", "unused"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let function = Function::start("authorizer", &binary("authorizer"), &env).await;

    let allowed = function
        .invoke(&event(Some(&format!("Bearer {producer_key}"))))
        .await;
    assert!(allowed.ok, "{}", allowed.body);
    let policy: Value = serde_json::from_str(&allowed.body).expect("a policy");
    assert_eq!(policy["principalId"], producer.id);
    // The broker API's usage plans identify the key by the value of its API Gateway key
    // (apiKeySource AUTHORIZER): the key id's letters and digits after `busway`.
    assert_eq!(
        policy["usageIdentifierKey"],
        format!("busway{}", producer.id.replace('_', ""))
    );
    let statement = &policy["policyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(
        statement["Resource"],
        "arn:aws:execute-api:eu-west-1:123456789012:abc123/live/*"
    );
    assert_eq!(
        policy["context"],
        json!({"key_id": producer.id, "team": "logistics", "role": "producer", "application": "demo"})
    );

    for refused in [
        None,
        Some("Bearer bwk_unknown".to_string()),
        Some(format!("Bearer {revoked_key}")),
        Some(format!("Bearer {expired_key}")),
        Some(format!("Basic {producer_key}")),
    ] {
        let answer = function.invoke(&event(refused.as_deref())).await;
        assert!(!answer.ok, "{refused:?} was allowed: {}", answer.body);
        let error: Value = serde_json::from_str(&answer.body).expect("an error document");
        assert_eq!(
            error["errorMessage"],
            busway_authorizer::UNAUTHORIZED,
            "{refused:?}"
        );
    }
}
