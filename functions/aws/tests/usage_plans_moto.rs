//! A busway key's API Gateway key and usage plan over the real wire, on moto server (started
//! here): a REST API with the broker's stage and its default plan as infra makes them, keys made,
//! rotated and revoked through `GatewayKeys` on the DynamoDB key store, and what API Gateway then
//! holds read back with the SDK.

use std::sync::Arc;

use aws_sdk_apigateway::types::{ApiStage, ThrottleSettings};
use busway_aws::dynamo::DynamoStore;
use busway_aws::usage_plans::{GatewayKeys, UsagePlans};
use busway_core::auth::{self, ApiKey, KeyStore, NewKey, RateLimit, Role};
use busway_tests::moto::{self, Moto};

const DEFAULT_PLAN: &str = "test-event-broker-api-default";

struct Gateway {
    client: aws_sdk_apigateway::Client,
}

/// An API Gateway key as a test reads it: its id, value and enabled flag.
struct GatewayKey {
    id: String,
    value: String,
    enabled: bool,
}

impl Gateway {
    /// The API Gateway key named `name`, with its value.
    async fn key(&self, name: &str) -> Option<GatewayKey> {
        let keys = self
            .client
            .get_api_keys()
            .name_query(name)
            .include_values(true)
            .send()
            .await
            .expect("the API keys");
        keys.items()
            .iter()
            .find(|k| k.name() == Some(name))
            .map(|k| GatewayKey {
                id: k.id().expect("an id").to_string(),
                value: k.value().expect("a value").to_string(),
                enabled: k.enabled(),
            })
    }

    /// The usage plans holding API Gateway key `id`: (name, throttle, stages).
    async fn plans_of(&self, id: &str) -> Vec<(String, Option<ThrottleSettings>, Vec<ApiStage>)> {
        self.client
            .get_usage_plans()
            .key_id(id)
            .send()
            .await
            .expect("the usage plans")
            .items()
            .iter()
            .map(|p| {
                (
                    p.name().expect("a name").to_string(),
                    p.throttle().cloned(),
                    p.api_stages().to_vec(),
                )
            })
            .collect()
    }

    async fn plan_names(&self) -> Vec<String> {
        let plans = self.client.get_usage_plans().send().await.expect("plans");
        let mut names: Vec<String> = plans
            .items()
            .iter()
            .filter_map(|p| p.name().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// The ids of the keys in the plan named `name`.
    async fn keys_in(&self, name: &str) -> Vec<String> {
        let plans = self.client.get_usage_plans().send().await.expect("plans");
        let id = plans
            .items()
            .iter()
            .find(|p| p.name() == Some(name))
            .and_then(|p| p.id())
            .expect("the plan");
        let keys = self
            .client
            .get_usage_plan_keys()
            .usage_plan_id(id)
            .send()
            .await
            .expect("the plan's keys");
        keys.items()
            .iter()
            .filter_map(|k| k.id().map(str::to_string))
            .collect()
    }
}

fn producer(limit: Option<RateLimit>) -> NewKey {
    let key = NewKey::new(
        "logistics".parse().expect("a team"),
        Role::Producer,
        Some("demo".parse().expect("an application")),
    )
    .expect("a producer key");
    match limit {
        Some(limit) => key.with_rate_limit(limit).expect("a producer's limit"),
        None => key,
    }
}

/// The broker API with its stage and default plan, as infra's broker API stack makes them.
async fn broker(client: &aws_sdk_apigateway::Client) -> ApiStage {
    let api = client
        .create_rest_api()
        .name("test-event-broker-api")
        .send()
        .await
        .expect("the broker API");
    let api_id = api.id().expect("an id").to_string();
    let stage = ApiStage::builder().api_id(&api_id).stage("live").build();
    client
        .create_usage_plan()
        .name(DEFAULT_PLAN)
        .throttle(
            ThrottleSettings::builder()
                .rate_limit(10000.0)
                .burst_limit(5000)
                .build(),
        )
        .api_stages(stage.clone())
        .send()
        .await
        .expect("the default plan");
    stage
}

#[tokio::test]
async fn a_key_has_an_api_gateway_key_in_the_plan_of_its_limit_until_it_is_revoked() {
    let moto = Moto::start().await;
    let sdk = moto::sdk(&moto.endpoint).await;
    let client = aws_sdk_apigateway::Client::new(&sdk);
    let stage = broker(&client).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    DynamoStore::create_table(&dynamodb, "keys")
        .await
        .expect("the table");
    let table: Arc<dyn KeyStore> = Arc::new(DynamoStore::new(dynamodb, "keys"));
    let keys = GatewayKeys::new(table.clone(), UsagePlans::new(client.clone(), DEFAULT_PLAN));
    let gateway = Gateway {
        client: client.clone(),
    };

    // A producer key with a limit: its API Gateway key, of the value the authorizer names, in a
    // plan of that throttle on the broker's stage.
    let limit = RateLimit::new(5, 10).expect("a limit");
    let (limited, _) = auth::create_key(&keys, producer(Some(limit)))
        .await
        .expect("a limited key");
    let api_key = gateway.key(&limited.id).await.expect("its API Gateway key");
    assert_eq!(api_key.value, auth::usage_identifier(&limited.id));
    assert!(api_key.enabled);
    let plans = gateway.plans_of(&api_key.id).await;
    assert_eq!(plans.len(), 1, "one plan");
    let (name, throttle, stages) = &plans[0];
    assert_eq!(name, &format!("{DEFAULT_PLAN}-rate-5-10"));
    let throttle = throttle.as_ref().expect("a throttle");
    assert_eq!(
        (throttle.rate_limit(), throttle.burst_limit()),
        (5.0, 10),
        "the key's limit"
    );
    assert_eq!(stages, &vec![stage.clone()], "the broker's stage");

    // A second key of the same limit shares that plan; a key without one is in the default plan.
    let (same, _) = auth::create_key(&keys, producer(Some(limit)))
        .await
        .expect("a key of the same limit");
    let (unlimited, _) = auth::create_key(&keys, producer(None))
        .await
        .expect("an unlimited key");
    let same_key = gateway.key(&same.id).await.expect("its API Gateway key");
    let unlimited_key = gateway
        .key(&unlimited.id)
        .await
        .expect("its API Gateway key");
    let mut in_rate_plan = gateway.keys_in(&format!("{DEFAULT_PLAN}-rate-5-10")).await;
    in_rate_plan.sort();
    let mut expected = vec![api_key.id.clone(), same_key.id.clone()];
    expected.sort();
    assert_eq!(in_rate_plan, expected);
    assert_eq!(gateway.keys_in(DEFAULT_PLAN).await, [unlimited_key.id]);
    assert_eq!(
        gateway.plan_names().await,
        [
            DEFAULT_PLAN.to_string(),
            format!("{DEFAULT_PLAN}-rate-5-10")
        ],
        "a plan per limit, not per key"
    );

    // Rotation makes a new key id with the same limit; the old key keeps its own until it ends.
    let (rotated, _) = auth::rotate_key(&keys, &limited.id, auth::ROTATION_OVERLAP)
        .await
        .expect("rotated");
    let rotated_key = gateway.key(&rotated.id).await.expect("the successor's key");
    assert_eq!(
        gateway.plans_of(&rotated_key.id).await[0].0,
        format!("{DEFAULT_PLAN}-rate-5-10")
    );
    assert!(gateway.key(&limited.id).await.is_some(), "still in overlap");

    // Revocation deletes the API Gateway key, out of its plan first.
    auth::revoke_key(&keys, &same.id).await.expect("revoked");
    assert!(gateway.key(&same.id).await.is_none());
    assert!(
        !gateway
            .keys_in(&format!("{DEFAULT_PLAN}-rate-5-10"))
            .await
            .contains(&same_key.id)
    );
    auth::revoke_key(&keys, &unlimited.id)
        .await
        .expect("revoked");
    assert!(gateway.keys_in(DEFAULT_PLAN).await.is_empty());
    assert!(gateway.key(&unlimited.id).await.is_none());
}

#[tokio::test]
async fn sync_gives_older_keys_their_api_gateway_key_and_deletes_those_of_ended_keys() {
    let moto = Moto::start().await;
    let sdk = moto::sdk(&moto.endpoint).await;
    let client = aws_sdk_apigateway::Client::new(&sdk);
    broker(&client).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    DynamoStore::create_table(&dynamodb, "keys")
        .await
        .expect("the table");
    let table: Arc<dyn KeyStore> = Arc::new(DynamoStore::new(dynamodb, "keys"));
    let plans = UsagePlans::new(client.clone(), DEFAULT_PLAN);
    let gateway = Gateway { client };

    // Keys made on the table alone, as before API Gateway keys were made; one then revoked.
    let (older, _) = auth::create_key(
        table.as_ref(),
        producer(Some(RateLimit::new(2, 2).expect("a limit"))),
    )
    .await
    .expect("a key");
    let (admin, _) = auth::create_key(
        table.as_ref(),
        NewKey::new(
            auth::PLATFORM_TEAM.parse().expect("a team"),
            Role::PlatformAdmin,
            None,
        )
        .expect("an admin key"),
    )
    .await
    .expect("a key");
    let keys = GatewayKeys::new(
        table.clone(),
        UsagePlans::new(gateway.client.clone(), DEFAULT_PLAN),
    );
    let (ended, _) = auth::create_key(&keys, producer(None))
        .await
        .expect("a key");
    let mut revoked: ApiKey = ended.clone();
    revoked.revoked_at = Some(busway_core::now());
    table
        .update_key(&revoked)
        .await
        .expect("revoked on the table only");
    assert!(gateway.key(&older.id).await.is_none());
    assert!(gateway.key(&ended.id).await.is_some());

    let synced = plans
        .sync(&table.list_keys().await.expect("the keys"))
        .await
        .expect("synced");
    let mut made = synced.made.clone();
    made.sort();
    let mut expected = vec![older.id.clone(), admin.id.clone()];
    expected.sort();
    assert_eq!(made, expected);
    assert_eq!(synced.deleted, [ended.id.as_str()]);
    let older_key = gateway.key(&older.id).await.expect("made");
    assert_eq!(
        gateway.plans_of(&older_key.id).await[0].0,
        format!("{DEFAULT_PLAN}-rate-2-2")
    );
    let admin_key = gateway.key(&admin.id).await.expect("made");
    assert_eq!(gateway.plans_of(&admin_key.id).await[0].0, DEFAULT_PLAN);
    assert!(gateway.key(&ended.id).await.is_none());

    // Nothing is left to do.
    let again = plans
        .sync(&table.list_keys().await.expect("the keys"))
        .await
        .expect("synced");
    assert_eq!(again, Default::default());
}

fn busway_aws(endpoint: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_busway-aws"))
        .args(args)
        .env_clear()
        .envs([
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", moto::REGION),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("BUSWAY_TABLE_NAME", "keys"),
            ("BUSWAY_BROKER_USAGE_PLAN", DEFAULT_PLAN),
        ])
        .output()
        .expect("busway-aws runs")
}

#[tokio::test]
async fn busway_aws_keys_create_makes_the_api_gateway_key_of_its_limit_and_keys_sync_reports() {
    let moto = Moto::start().await;
    let sdk = moto::sdk(&moto.endpoint).await;
    let client = aws_sdk_apigateway::Client::new(&sdk);
    broker(&client).await;
    DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(&sdk), "keys")
        .await
        .expect("the table");
    let gateway = Gateway { client };

    let made = busway_aws(
        &moto.endpoint,
        &[
            "keys",
            "create",
            "--team",
            "logistics",
            "--role",
            "producer",
            "--application",
            "demo",
            "--rate-limit",
            "4",
            "--burst",
            "8",
        ],
    );
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let secret = stdout.lines().last().expect("the key on the last line");
    assert!(secret.starts_with(auth::KEY_PREFIX), "{stdout}");
    let record: serde_json::Value =
        serde_json::from_str(&stdout[..stdout.len() - secret.len() - 1]).expect("the record");
    assert_eq!(
        record["rate_limit"],
        serde_json::json!({"per_second": 4, "burst": 8})
    );
    let id = record["id"].as_str().expect("an id");
    let api_key = gateway.key(id).await.expect("its API Gateway key");
    assert_eq!(
        gateway.plans_of(&api_key.id).await[0].0,
        format!("{DEFAULT_PLAN}-rate-4-8")
    );

    // Nothing is missing: sync says so.
    let synced = busway_aws(&moto.endpoint, &["keys", "sync"]);
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    let synced: serde_json::Value = serde_json::from_slice(&synced.stdout).expect("JSON");
    assert_eq!(synced, serde_json::json!({"made": [], "deleted": []}));

    // A burst needs a rate.
    let usage = busway_aws(
        &moto.endpoint,
        &[
            "keys",
            "create",
            "--team",
            "logistics",
            "--role",
            "owner",
            "--burst",
            "3",
        ],
    );
    assert_eq!(usage.status.code(), Some(2));
}
