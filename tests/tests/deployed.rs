//! The six Lambda functions exactly as infra deploys them. `cdk synth` of infra/ gives the
//! templates; the table, buckets, bus and state machine are made on moto server from the
//! templates' names, key schemas and definitions; each function's `bootstrap` (the bins of this
//! workspace, built with `--all-features`) runs under a Lambda Runtime API with only the
//! variables its template gives it (plus the runtime's own, and the emulator's endpoint); and the
//! seed's flow is driven with the events API Gateway, S3, Step Functions and SQS send, API Gateway
//! events carrying each API's stage from the template and the caller the key authorizer found
//! (API Gateway's part emulated as the templates attach the authorizer: its identity source, its
//! cache, its 401 gateway response, and the API key that the routes of the generated producer
//! stack require, taken from the authorizer's answer and looked up in moto's API Gateway keys and
//! usage plans as the portal makes them), who may do what through that path, and events above the
//! bus entry limit through both injectors (claim-checked). Every AWS call a function makes goes
//! through a gate that records it and judges it against that function's role in the template.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
    VersioningConfiguration,
};
use busway_aws::dynamo::DynamoStore;
use busway_aws::usage_plans::{GatewayKeys, UsagePlans};
use busway_core::auth::{self, KeyStore, NewKey, Role};
use busway_tests::cfn::{self, Templates};
use busway_tests::gate::{self, Record};
use busway_tests::iam::Policy;
use busway_tests::lambda::{Answer, Function, api_gateway_event};
use busway_tests::moto::{self, Moto, REGION};
use busway_tests::{seed_event, v1_envelope};
use serde_json::{Value, json};

/// The functions infra deploys (busway_core::tasks::FUNCTIONS): binary name = logical name.
const FUNCTIONS: [&str; 6] = [
    "portal",
    "injector",
    "injector-sqs",
    "provisioner",
    "authorizer",
    "delivery",
];
const ENV: &str = "dev";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bins this workspace built beside this test (`cargo build --workspace --all-features
/// --bins --tests`, which `make unit` runs before the tests): target/{profile}/{name}.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/{profile}/deps/");
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the Lambda bins first (`cargo build --workspace --all-features --bins --tests`, as `make unit` does)",
        binary.display()
    );
    binary
}

/// A deployed function: its process, its stack and its API Gateway stage (HTTP functions).
struct Deployed {
    function: Function,
    stack: String,
    stage: Option<String>,
}

impl Deployed {
    async fn invoke(&self, event: &Value) -> Answer {
        self.function.invoke(&event.to_string()).await
    }
}

/// What API Gateway does in front of an API's function, as the templates attach the key
/// authorizer: a request without the identity source (`Authorization`) is answered by the API's
/// UNAUTHORIZED gateway response without a call; otherwise the authorizer is invoked with a
/// REQUEST event (or its answer for that header value is taken from that authorizer's cache, for
/// the template's TTL: each API's authorizer caches its own answers), "Unauthorized" is that same
/// 401, and an Allow policy covering the route sends the proxy
/// event on with the policy's context as `requestContext.authorizer`.
struct Gateway<'a> {
    authorizer: &'a Deployed,
    ttl: Duration,
    /// By API (its stack) and `Authorization` header.
    cache: Mutex<HashMap<(String, String), (Instant, Value)>>,
    /// Authorizer invocations, across both APIs, and the requests that carried a key.
    lookups: AtomicUsize,
    keyed: AtomicUsize,
    /// Per stack: the UNAUTHORIZED gateway response's status, body and `WWW-Authenticate`.
    unauthorized: HashMap<String, (u64, Value, String)>,
    /// The stacks whose API takes its API key from the authorizer (`apiKeySource: AUTHORIZER`).
    key_from_authorizer: HashSet<String>,
    /// The routes (stack, method, resource) that require an API key, from the templates of the
    /// stacks that add them (the generated producer stacks).
    key_required: Mutex<HashSet<(String, String, String)>>,
    /// Where API Gateway keeps its API keys and usage plans (moto).
    api_keys: aws_sdk_apigateway::Client,
}

/// An answer through the gateway: status, JSON body and the `WWW-Authenticate` header.
struct Reply {
    status: u64,
    body: Value,
    challenge: Option<String>,
}

impl<'a> Gateway<'a> {
    /// The authorizers of both APIs, read from the templates: the same function, identity source
    /// and TTL on each; and each API's 401.
    fn of(
        t: &Templates,
        authorizer: &'a Deployed,
        api_keys: aws_sdk_apigateway::Client,
    ) -> Gateway<'a> {
        let authorizers: Vec<_> = t.of_kind("AWS::ApiGateway::Authorizer").collect();
        assert_eq!(authorizers.len(), 2, "one authorizer on each API");
        let mut ttls = Vec::new();
        for a in &authorizers {
            assert_eq!(a.properties["Type"], "REQUEST");
            assert_eq!(
                a.properties["IdentitySource"],
                "method.request.header.Authorization"
            );
            let uri = t.string(*a, "AuthorizerUri");
            assert!(
                uri.ends_with(&format!(":function:{ENV}-busway-authorizer/invocations")),
                "{uri}"
            );
            ttls.push(
                a.properties["AuthorizerResultTtlInSeconds"]
                    .as_u64()
                    .expect("a TTL"),
            );
        }
        assert!(ttls.windows(2).all(|w| w[0] == w[1]), "{ttls:?}");
        let unauthorized = t
            .of_kind("AWS::ApiGateway::GatewayResponse")
            .filter(|r| r.properties["ResponseType"] == "UNAUTHORIZED")
            .map(|r| {
                let p = r.properties;
                let status = p["StatusCode"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("a status");
                let body = p["ResponseTemplates"]["application/json"]
                    .as_str()
                    .and_then(|b| serde_json::from_str(b).ok())
                    .expect("a JSON body");
                // A header mapping is a quoted literal: 'Bearer realm="busway"'.
                let challenge = p["ResponseParameters"]["gatewayresponse.header.WWW-Authenticate"]
                    .as_str()
                    .map(|v| v.trim_matches('\'').to_string())
                    .expect("a WWW-Authenticate header");
                (r.stack.to_string(), (status, body, challenge))
            })
            .collect::<HashMap<_, _>>();
        let key_from_authorizer = t
            .of_kind("AWS::ApiGateway::RestApi")
            .filter(|api| api.properties["ApiKeySourceType"] == "AUTHORIZER")
            .map(|api| api.stack.to_string())
            .collect();
        Gateway {
            authorizer,
            ttl: Duration::from_secs(ttls[0]),
            cache: Mutex::default(),
            lookups: AtomicUsize::new(0),
            keyed: AtomicUsize::new(0),
            unauthorized,
            key_from_authorizer,
            key_required: Mutex::default(),
            api_keys,
        }
    }

    /// The routes of a generated producer stack that require an API key, on `api`'s stack:
    /// its methods with `ApiKeyRequired`, at `/{event_type}/{version}`.
    fn add_routes(&self, api: &Deployed, producer: &Templates, event_type: &str) -> usize {
        let mut routes = self.key_required.lock().expect("lock");
        let before = routes.len();
        for method in producer.of_kind("AWS::ApiGateway::Method") {
            if method.properties["ApiKeyRequired"] != true {
                continue;
            }
            let resource = method.properties["ResourceId"]["Ref"]
                .as_str()
                .expect("the route's resource");
            let version = producer.string(producer.get(method.stack, resource), "PathPart");
            routes.insert((
                api.stack.clone(),
                producer.string(method, "HttpMethod"),
                format!("/{event_type}/{version}"),
            ));
        }
        routes.len() - before
    }

    /// Whether API Gateway finds the API key `value` (the authorizer's `usageIdentifierKey`)
    /// enabled and in a usage plan of `stage`.
    async fn api_key_in_a_plan(&self, value: &str, stage: &str) -> bool {
        let keys = self
            .api_keys
            .get_api_keys()
            .include_values(true)
            .send()
            .await
            .expect("the API keys");
        let Some(id) = keys
            .items()
            .iter()
            .find(|k| k.value() == Some(value) && k.enabled())
            .and_then(|k| k.id())
        else {
            return false;
        };
        let plans = self
            .api_keys
            .get_usage_plans()
            .key_id(id)
            .send()
            .await
            .expect("the key's usage plans");
        plans
            .items()
            .iter()
            .any(|p| p.api_stages().iter().any(|s| s.stage() == Some(stage)))
    }

    fn refused(&self, api: &Deployed) -> Reply {
        let (status, body, challenge) = self
            .unauthorized
            .get(&api.stack)
            .unwrap_or_else(|| panic!("{} has no UNAUTHORIZED gateway response", api.stack))
            .clone();
        Reply {
            status,
            body,
            challenge: Some(challenge),
        }
    }

    /// `method path` on `api`'s route `resource`, with `key` as `Authorization: Bearer`.
    async fn call(
        &self,
        api: &Deployed,
        key: Option<&str>,
        method: &str,
        resource: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let stage = api.stage.as_deref().expect("an HTTP function");
        let Some(key) = key else {
            return self.refused(api);
        };
        let header = format!("Bearer {key}");
        self.keyed.fetch_add(1, Ordering::Relaxed);
        let cache_key = (api.stack.clone(), header.clone());
        let method_arn = format!(
            "arn:aws:execute-api:{REGION}:{}:a1b2c3d4e5/{stage}/{method}{path}",
            cfn::ACCOUNT
        );
        let cached = self
            .cache
            .lock()
            .expect("lock")
            .get(&cache_key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, policy)| policy.clone());
        let policy = match cached {
            Some(policy) => policy,
            None => {
                self.lookups.fetch_add(1, Ordering::Relaxed);
                let request = json!({
                    "type": "REQUEST", "methodArn": method_arn, "resource": resource,
                    "path": path, "httpMethod": method,
                    "headers": {"Authorization": header}, "queryStringParameters": {},
                    "pathParameters": {}, "stageVariables": {},
                    "requestContext": {"accountId": cfn::ACCOUNT, "apiId": "a1b2c3d4e5", "stage": stage},
                });
                let answer = self.authorizer.invoke(&request).await;
                if !answer.ok {
                    let error: Value = serde_json::from_str(&answer.body).expect("an error");
                    assert_eq!(
                        error["errorMessage"],
                        busway_authorizer::UNAUTHORIZED,
                        "the authorizer failed: {}",
                        answer.body
                    );
                    return self.refused(api);
                }
                let policy: Value = serde_json::from_str(&answer.body).expect("a policy");
                self.cache
                    .lock()
                    .expect("lock")
                    .insert(cache_key, (Instant::now(), policy.clone()));
                policy
            }
        };
        // A route that requires an API key takes it from the authorizer's answer on an API whose
        // key source is the authorizer; without one in a usage plan of the stage, API Gateway
        // answers its INVALID_API_KEY response (no template changes it: 403, its own body).
        let route = (api.stack.clone(), method.to_string(), resource.to_string());
        if self.key_required.lock().expect("lock").contains(&route) {
            assert!(
                self.key_from_authorizer.contains(&api.stack),
                "{} requires an API key but does not take it from the authorizer",
                api.stack
            );
            let value = policy["usageIdentifierKey"].as_str().unwrap_or_default();
            if !self.api_key_in_a_plan(value, stage).await {
                return Reply {
                    status: 403,
                    body: json!({"message": "Forbidden"}),
                    challenge: None,
                };
            }
        }
        // The cached policy must allow this route too: it names the whole stage.
        let statement = &policy["policyDocument"]["Statement"][0];
        assert_eq!(statement["Effect"], "Allow", "{policy}");
        let allowed = statement["Resource"].as_str().expect("a resource");
        assert!(
            allowed
                .strip_suffix('*')
                .is_some_and(|prefix| method_arn.starts_with(prefix)),
            "{allowed} does not cover {method_arn}"
        );
        let mut event: Value =
            serde_json::from_str(&api_gateway_event(stage, method, resource, path, &[], body))
                .expect("JSON");
        let mut context = policy["context"].clone();
        context["principalId"] = policy["principalId"].clone();
        event["requestContext"]["authorizer"] = context;
        event["headers"]["Authorization"] = json!(header);
        event["multiValueHeaders"]["Authorization"] = json!([header]);
        let answer = api.invoke(&event).await;
        assert!(answer.ok, "{} failed: {}", api.function.name, answer.body);
        let response: Value = serde_json::from_str(&answer.body).expect("a proxy response");
        let status = response["statusCode"].as_u64().expect("a status");
        let body = response["body"]
            .as_str()
            .map_or(Value::Null, |b| serde_json::from_str(b).unwrap_or(json!(b)));
        Reply {
            status,
            body,
            challenge: None,
        }
    }
}

/// Makes on moto what the templates declare: tables with their keys and indexes, named buckets
/// with their versioning, buses, and state machines with their definitions substituted.
async fn provision(t: &Templates, sdk: &aws_config::SdkConfig) {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    for table in t.of_kind("AWS::DynamoDB::Table") {
        let p = t.resolve(table.stack, table.properties);
        let keys = |schema: &Value| -> Vec<KeySchemaElement> {
            schema
                .as_array()
                .expect("a key schema")
                .iter()
                .map(|k| {
                    KeySchemaElement::builder()
                        .attribute_name(k["AttributeName"].as_str().expect("a name"))
                        .key_type(KeyType::from(k["KeyType"].as_str().expect("a key type")))
                        .build()
                        .expect("a key")
                })
                .collect()
        };
        let mut create = dynamodb
            .create_table()
            .table_name(p["TableName"].as_str().expect("a named table"))
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(keys(&p["KeySchema"])));
        for a in p["AttributeDefinitions"].as_array().expect("attributes") {
            create = create.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(a["AttributeName"].as_str().expect("a name"))
                    .attribute_type(ScalarAttributeType::from(
                        a["AttributeType"].as_str().expect("a type"),
                    ))
                    .build()
                    .expect("an attribute"),
            );
        }
        for index in p["GlobalSecondaryIndexes"].as_array().into_iter().flatten() {
            create = create.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index["IndexName"].as_str().expect("an index name"))
                    .set_key_schema(Some(keys(&index["KeySchema"])))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(
                                index["Projection"]["ProjectionType"]
                                    .as_str()
                                    .expect("a projection"),
                            ))
                            .build(),
                    )
                    .build()
                    .expect("an index"),
            );
        }
        create.send().await.expect("the table is created");
    }
    let s3 = moto::s3(sdk);
    for bucket in t.of_kind("AWS::S3::Bucket") {
        if bucket.properties.get("BucketName").is_none() {
            continue; // access-log buckets: named by CloudFormation, used by no function
        }
        let name = t.string(bucket, "BucketName");
        s3.create_bucket()
            .bucket(&name)
            .create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(REGION))
                    .build(),
            )
            .send()
            .await
            .expect("the bucket is created");
        if t.property(bucket, "VersioningConfiguration")["Status"] == "Enabled" {
            s3.put_bucket_versioning()
                .bucket(&name)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .expect("versioning is on");
        }
    }
    let events = aws_sdk_eventbridge::Client::new(sdk);
    for bus in t.of_kind("AWS::Events::EventBus") {
        events
            .create_event_bus()
            .name(t.string(bus, "Name"))
            .send()
            .await
            .expect("the bus is created");
    }
    // The usage plans of the APIs, on a REST API of the template's name and its stage: the
    // portal makes each key's API Gateway key in one of them (busway_aws::usage_plans).
    let apigateway = aws_sdk_apigateway::Client::new(sdk);
    for plan in t.of_kind("AWS::ApiGateway::UsagePlan") {
        let of_stack = |kind: &str, name: &str| {
            let resources: Vec<_> = t.of_kind(kind).filter(|r| r.stack == plan.stack).collect();
            assert_eq!(resources.len(), 1, "one {kind} in {}", plan.stack);
            t.string(resources[0], name)
        };
        let api = apigateway
            .create_rest_api()
            .name(of_stack("AWS::ApiGateway::RestApi", "Name"))
            .send()
            .await
            .expect("the REST API");
        let throttle = t.property(plan, "Throttle");
        apigateway
            .create_usage_plan()
            .name(t.string(plan, "UsagePlanName"))
            .throttle(
                aws_sdk_apigateway::types::ThrottleSettings::builder()
                    .rate_limit(throttle["RateLimit"].as_f64().expect("a rate"))
                    .burst_limit(
                        throttle["BurstLimit"]
                            .as_i64()
                            .and_then(|b| i32::try_from(b).ok())
                            .expect("a burst"),
                    )
                    .build(),
            )
            .api_stages(
                aws_sdk_apigateway::types::ApiStage::builder()
                    .api_id(api.id().expect("an id"))
                    .stage(of_stack("AWS::ApiGateway::Stage", "StageName"))
                    .build(),
            )
            .send()
            .await
            .expect("the usage plan");
    }
    let sfn = aws_sdk_sfn::Client::new(sdk);
    for machine in t.of_kind("AWS::StepFunctions::StateMachine") {
        let mut definition = t.string(machine, "DefinitionString");
        let substitutions = t.property(machine, "DefinitionSubstitutions");
        for (key, value) in substitutions.as_object().into_iter().flatten() {
            definition =
                definition.replace(&format!("${{{key}}}"), value.as_str().expect("a string"));
        }
        assert!(
            !definition.contains("${"),
            "a substitution is missing: {definition}"
        );
        sfn.create_state_machine()
            .name(t.string(machine, "StateMachineName"))
            .definition(definition)
            .role_arn(t.string(machine, "RoleArn"))
            .send()
            .await
            .expect("the state machine is created");
    }
}

/// Starts every busway function of the templates with its template environment, behind a gate
/// judging its calls by its role.
async fn start_functions(
    t: &Templates,
    account: &Arc<gate::Account>,
) -> BTreeMap<String, Deployed> {
    let mut deployed = BTreeMap::new();
    for f in t.of_kind("AWS::Lambda::Function") {
        let Some(name) = f.properties["FunctionName"]
            .as_str()
            .and_then(|n| n.strip_prefix(&format!("{ENV}-busway-")))
        else {
            continue; // aws-cdk-lib's own functions (bucket notifications)
        };
        let role = f.properties["Role"]["Fn::GetAtt"][0]
            .as_str()
            .expect("the function's role is a resource of its stack");
        let policy = Policy::of_role(t, t.get(f.stack, role));
        let endpoint = account.gate(name, policy).await;
        let mut env: Vec<(String, String)> = t.property(f, "Environment")["Variables"]
            .as_object()
            .expect("the function's variables")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().expect("a string variable").to_string(),
                )
            })
            .collect();
        // What the Lambda service gives every function: region and the role's credentials; the
        // endpoint stands in for AWS's.
        for (k, v) in [
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "ASIATESTTESTTESTTEST"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_SESSION_TOKEN", "test"),
            ("AWS_ENDPOINT_URL", &endpoint),
        ] {
            env.push((k.to_string(), v.to_string()));
        }
        let stages: Vec<String> = t
            .of_kind("AWS::ApiGateway::Stage")
            .filter(|s| s.stack == f.stack)
            .map(|s| t.string(s, "StageName"))
            .collect();
        assert!(
            stages.len() <= 1,
            "{}: one API per stack: {stages:?}",
            f.stack
        );
        let function = Function::start(name, &binary(name), &env).await;
        deployed.insert(
            name.to_string(),
            Deployed {
                function,
                stack: f.stack.to_string(),
                stage: stages.into_iter().next(),
            },
        );
    }
    let mut names: Vec<&str> = deployed.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = FUNCTIONS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "infra deploys exactly busway's functions");
    deployed
}

/// An S3 notification of one object, as S3 sends it to a Lambda destination.
fn s3_notification(bucket: &str, key: &str, version_id: Option<&str>) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
        "eventTime": "2026-11-30T09:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:dev-busway-portal"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {
            "s3SchemaVersion": "1.0", "configurationId": "provisioner",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {"key": key, "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e", "versionId": version_id, "sequencer": "0055AED6DCD90281E5"}
        }
    }]})
}

fn sqs_batch(queue_arn: &str, bodies: &[String]) -> Value {
    json!({"Records": bodies.iter().enumerate().map(|(i, body)| json!({
        "messageId": format!("m{i}"), "receiptHandle": format!("r{i}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795739400000",
                       "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1795739400001"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn, "awsRegion": REGION})).collect::<Vec<_>>()})
}

async fn version_id(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    s3.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{bucket}/{key} exists: {e}"))
        .version_id()
        .expect("a versioned bucket")
        .to_string()
}

/// Waits until no execution of `state_machine` runs. moto's engine runs each started execution
/// up to the build (which it cannot run), writing the job's status on the way: a task sent by
/// hand meanwhile would race those writes, where on AWS it runs after them.
async fn executions_stopped(sfn: &aws_sdk_sfn::Client, state_machine: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = sfn
            .list_executions()
            .state_machine_arn(state_machine)
            .send()
            .await
            .expect("the executions");
        let running: Vec<_> = listed
            .executions()
            .iter()
            .filter(|e| e.status() == &aws_sdk_sfn::types::ExecutionStatus::Running)
            .map(|e| e.name())
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {running:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn variable(t: &Templates, function: &str, name: &str) -> String {
    let f = t
        .of_kind("AWS::Lambda::Function")
        .find(|f| f.properties["FunctionName"] == format!("{ENV}-busway-{function}"))
        .expect("the function");
    t.property(f, "Environment")["Variables"][name]
        .as_str()
        .unwrap_or_else(|| panic!("{function} has no {name}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_as_infra_deploys_them_serve_the_seed_flow_within_their_roles() {
    let moto = Moto::start().await;
    let sdk = moto::sdk(&moto.endpoint).await;
    let scratch = tempfile::tempdir().expect("a temp dir");
    // The templates do not depend on the binaries' content: placeholders stand in for the zips.
    let assets = scratch.path().join("assets");
    for name in FUNCTIONS {
        std::fs::create_dir_all(assets.join(name)).expect("a folder");
        std::fs::write(assets.join(name).join("bootstrap"), name).expect("a placeholder");
    }
    let out = scratch.path().join("cdk.out");
    cfn::synth(
        &repo().join("infra"),
        &out,
        &[
            ("platformEnv", ENV),
            ("lambdaAssets", assets.to_str().expect("a UTF-8 path")),
            // moto serves the Classic bus only; the Custom Event Bus's adapter is verified by
            // mocks (functions/aws/tests/custom_bus_mocks.rs) and its stacks by synthesis.
            ("busKind", "classic"),
        ],
    );
    let t = Templates::load(&out, REGION);
    provision(&t, &sdk).await;
    let account = gate::Account::new(&moto.endpoint, REGION);
    let fns = start_functions(&t, &account).await;
    let (portal, injector, injector_sqs, provisioner) = (
        &fns["portal"],
        &fns["injector"],
        &fns["injector-sqs"],
        &fns["provisioner"],
    );
    let gateway = Gateway::of(
        &t,
        &fns["authorizer"],
        aws_sdk_apigateway::Client::new(&sdk),
    );
    let keys = Keys::make(
        &sdk,
        &variable(&t, "portal", "BUSWAY_TABLE_NAME"),
        &variable(&t, "portal", "BUSWAY_BROKER_USAGE_PLAN"),
    )
    .await;
    let owner = Some(keys.owner());
    let s3 = moto::s3(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let publisher = variable(&t, "provisioner", "BUSWAY_PUBLISHER_BUCKET");
    let subscriber = variable(&t, "provisioner", "BUSWAY_SUBSCRIBER_BUCKET");

    // The seed's event type and a subscription of target unit u2 through an SQS queue.
    let created = gateway
        .call(
            portal,
            owner,
            "POST",
            "/{proxy+}",
            "/events",
            Some(&seed_event()),
        )
        .await;
    assert_eq!(created.status, 201, "POST /events: {}", created.body);
    let created = created.body;
    let read = gateway
        .call(
            portal,
            owner,
            "GET",
            "/{proxy+}",
            "/events/scanned_parcel",
            None,
        )
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["versions"][0]["version"], 1, "{}", read.body);
    assert_eq!(read.body["team"], "logistics", "{}", read.body);
    let queue = sqs
        .create_queue()
        .queue_name("u2-consumer")
        .send()
        .await
        .expect("a queue");
    let queue_url = queue.queue_url().expect("a URL").to_string();
    let queue_arn = format!("arn:aws:sqs:{REGION}:{}:u2-consumer", cfn::ACCOUNT);
    // The team's own targets: a platform admin registers the account its queue is in.
    let registered = gateway
        .call(
            portal,
            keys.keys[5].as_deref(),
            "PUT",
            "/{proxy+}",
            "/teams/logistics/targets",
            Some(&json!({"accounts": [cfn::ACCOUNT]})),
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let subscription = json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
                              "connection_type": "SQS", "connection_string": queue_arn});
    let subscribed = gateway
        .call(
            portal,
            owner,
            "POST",
            "/{proxy+}",
            "/subscriptions",
            Some(&subscription),
        )
        .await;
    assert_eq!(
        subscribed.status, 201,
        "POST /subscriptions: {}",
        subscribed.body
    );
    let subscribed = subscribed.body;
    let sub_id = subscribed["id"].as_str().expect("a subscription id");
    let listed = gateway
        .call(
            portal,
            owner,
            "GET",
            "/{proxy+}",
            &format!("/subscriptions/{sub_id}"),
            None,
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);

    // S3 notifies the provisioner of both deploy.json files: one execution each, named for the
    // object; the state machine's validate task then accepts each document.
    let producer_key = "scanned_parcel/1/deploy.json".to_string();
    let consumer_key = format!("scanned_parcel/1/u2/{sub_id}/deploy.json");
    let state_machine = variable(&t, "provisioner", "BUSWAY_STATE_MACHINE_ARN");
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    for (bucket, key, deployment, kind) in [
        (
            &publisher,
            &producer_key,
            &created["deployment_id"],
            "producer",
        ),
        (
            &subscriber,
            &consumer_key,
            &subscribed["deployment_id"],
            "consumer",
        ),
    ] {
        let version = version_id(&s3, bucket, key).await;
        let started = provisioner
            .invoke(&s3_notification(bucket, key, Some(&version)))
            .await;
        assert!(
            started.ok,
            "the notification of {key} starts provisioning: {}",
            started.body
        );
        // As the state machine sends it, once the execution's own steps are written: the exact
        // object version the notification named.
        executions_stopped(&sfn, &state_machine).await;
        let validate = json!({"task": "validate", "deployment_id": deployment, "bucket": bucket,
                              "key": key, "object_version": version});
        let valid = provisioner.invoke(&validate).await;
        assert!(valid.ok, "validate {key}: {}", valid.body);
        let valid: Value = serde_json::from_str(&valid.body).expect("JSON");
        assert_eq!(valid["kind"], kind, "{valid}");
    }
    let executions = sfn
        .list_executions()
        .state_machine_arn(&state_machine)
        .send()
        .await
        .expect("the executions");
    assert_eq!(executions.executions().len(), 2, "{executions:?}");

    // A notification of a document deleted before it was read is skipped, not retried: the
    // provisioner may list its buckets, so S3 says 404, not 403.
    let gone = provisioner
        .invoke(&s3_notification(
            &publisher,
            "gone_event/1/deploy.json",
            None,
        ))
        .await;
    assert!(gone.ok, "a deleted deploy.json is skipped: {}", gone.body);
    // A document the role may not read is an error Lambda retries, never taken for a missing one.
    let forbidden = provisioner
        .invoke(&s3_notification(
            &publisher,
            "scanned_parcel/1/schema.json",
            None,
        ))
        .await;
    assert!(!forbidden.ok, "a forbidden read is not a missing document");
    assert!(
        forbidden.body.contains("Provisioning.NotStarted"),
        "{}",
        forbidden.body
    );

    // The consumer stack's rule, from the deploy.json the provisioner validated.
    let consumer_doc: Value = serde_json::from_slice(
        &s3.get_object()
            .bucket(&subscriber)
            .key(&consumer_key)
            .send()
            .await
            .expect("the consumer deploy.json")
            .body
            .collect()
            .await
            .expect("its body")
            .into_bytes(),
    )
    .expect("JSON");
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let bus = variable(&t, "injector", "BUSWAY_BUS_NAME");
    events
        .put_rule()
        .name("u2-consumer")
        .event_bus_name(&bus)
        .event_pattern(consumer_doc["event_pattern"].to_string())
        .send()
        .await
        .expect("the rule");
    events
        .put_targets()
        .rule("u2-consumer")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .expect("a target"),
        )
        .send()
        .await
        .expect("the target");

    // The route the producer stack of that deploy.json adds to the broker API, as cdk-app/
    // generates it: it requires an API key.
    let producer_doc = s3
        .get_object()
        .bucket(&publisher)
        .key(&producer_key)
        .send()
        .await
        .expect("the producer deploy.json")
        .body
        .collect()
        .await
        .expect("its body")
        .into_bytes();
    let producer_json = scratch.path().join("producer-deploy.json");
    std::fs::write(&producer_json, &producer_doc).expect("written");
    let producer_out = scratch.path().join("producer.out");
    cfn::synth(
        &repo().join("cdk-app"),
        &producer_out,
        &[
            ("deployJson", producer_json.to_str().expect("a UTF-8 path")),
            ("platformEnv", ENV),
        ],
    );
    let routes = gateway.add_routes(
        injector,
        &Templates::load(&producer_out, REGION),
        "scanned_parcel",
    );
    assert_eq!(routes, 1, "POST /scanned_parcel/1 requires an API key");

    // Producers publish through the broker API's stage: a valid event is on the bus, an invalid
    // one is refused naming its paths.
    let (producer, gw) = (Some(keys.producer.as_str()), &gateway);
    let publish = move |body: Value| async move {
        gw.call(
            injector,
            producer,
            "POST",
            "/scanned_parcel/1",
            "/scanned_parcel/1",
            Some(&body),
        )
        .await
    };
    let accepted = publish(v1_envelope("u2")).await;
    assert_eq!(
        accepted.status, 200,
        "POST /scanned_parcel/1 through stage {:?}: {}",
        injector.stage, accepted.body
    );
    let accepted = accepted.body;
    let event_id = accepted["event_id"]
        .as_str()
        .expect("an event id")
        .to_string();
    let invalid = json!({"metadata": {"event_attributes": {"source": "s", "target": "u2"}},
                         "data": {"dest_postal_code": 1234}});
    let refused = publish(invalid.clone()).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let refused = refused.body;
    assert!(
        refused["error"]["details"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{refused}"
    );

    // The SQS producer path: the valid message goes on the bus, only the invalid one is named.
    let producer_queue = format!(
        "arn:aws:sqs:{REGION}:{}:busway-scanned-parcel-v1",
        cfn::ACCOUNT
    );
    let batch = sqs_batch(
        &producer_queue,
        &[v1_envelope("u2").to_string(), invalid.to_string()],
    );
    let answer = injector_sqs.invoke(&batch).await;
    assert!(answer.ok, "{}", answer.body);
    let answer: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(
        answer["batchItemFailures"],
        json!([{"itemIdentifier": "m1"}])
    );

    // Events above the bus entry limit through either injector: their data is written to the
    // schema backup bucket under the injectors' roles, and the bus carries the link.
    let mut large = v1_envelope("u2");
    large["data"]["note"] = json!("x".repeat(1_500_000));
    let accepted = publish(large).await;
    assert_eq!(accepted.status, 200, "a 1.5 MB event: {}", accepted.body);
    // As large as SQS carries (1 MiB): the broker's fields take it above the entry limit.
    let mut queued = v1_envelope("u2");
    queued["data"]["note"] = json!("");
    let room = 1024 * 1024 - queued.to_string().len();
    queued["data"]["note"] = json!("q".repeat(room));
    let answer = injector_sqs
        .invoke(&sqs_batch(&producer_queue, &[queued.to_string()]))
        .await;
    assert!(answer.ok, "{}", answer.body);
    let answer: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(answer["batchItemFailures"], json!([]));

    // The subscriber's queue receives the accepted events, in EventBridge's shape.
    let mut received = Vec::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in out.messages() {
            received
                .push(serde_json::from_str::<Value>(m.body().unwrap_or_default()).expect("JSON"));
        }
        if received.len() >= 4 {
            break;
        }
    }
    assert_eq!(received.len(), 4, "{received:?}");
    let claim_checked = received
        .iter()
        .filter(|e| e["detail"]["metadata"]["claim_check"] == true)
        .count();
    assert_eq!(claim_checked, 2, "the two large events carry links");
    assert!(
        received
            .iter()
            .all(|e| e["detail-type"] == "scanned_parcel.1" && e["source"] == "busway.demo")
    );
    assert!(
        received
            .iter()
            .any(|e| e["detail"]["metadata"]["event_id"] == event_id)
    );

    // The delivery function, as a rule or subscriber invokes it, reads the subscription under
    // its role (SUBSCRIPTION# items only) and posts nothing for one that is not HTTPS.
    let delivered = fns["delivery"]
        .invoke(&json!({"subscription_id": sub_id, "event": received[0]}))
        .await;
    assert!(delivered.ok, "{}", delivered.body);
    let delivered: Value = serde_json::from_str(&delivered.body).expect("JSON");
    assert_eq!(delivered["delivered"], false, "{delivered}");
    assert_eq!(
        delivered["reason"],
        format!("subscription {sub_id} is not an HTTPS subscription")
    );

    access_through_the_authorizer(&gateway, portal, injector, &keys).await;
    // A producer key stored without its API Gateway key (made before they were, and not synced)
    // passes the authorizer, and API Gateway refuses it for want of an API key.
    let unplanned = gateway
        .call(
            injector,
            Some(&keys.unplanned),
            "POST",
            "/scanned_parcel/1",
            "/scanned_parcel/1",
            Some(&v1_envelope("u2")),
        )
        .await;
    assert_eq!(unplanned.status, 403, "{}", unplanned.body);
    assert_eq!(unplanned.body, json!({"message": "Forbidden"}));

    // A platform admin makes a producer key with a limit through the portal: its API Gateway
    // key is in the plan of that limit, made on the broker's stage; revoking it deletes the key.
    let admin = keys.keys[5].as_deref();
    let limited = json!({"team": "logistics", "role": "producer", "application": "demo",
                         "rate_limit": {"per_second": 3, "burst": 6}});
    let made = gateway
        .call(portal, admin, "POST", "/{proxy+}", "/keys", Some(&limited))
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.body["id"].as_str().expect("a key id").to_string();
    let plan = format!(
        "{}-rate-3-6",
        variable(&t, "portal", "BUSWAY_BROKER_USAGE_PLAN")
    );
    let broker_stage = injector.stage.as_deref().expect("the broker stage");
    let in_plan = |value: String| {
        let gateway = &gateway;
        async move { gateway.api_key_in_a_plan(&value, broker_stage).await }
    };
    assert!(
        in_plan(auth::usage_identifier(&id)).await,
        "{id} is in {plan}"
    );
    let plans = gateway
        .api_keys
        .get_usage_plans()
        .send()
        .await
        .expect("the plans");
    let throttle = plans
        .items()
        .iter()
        .find(|p| p.name() == Some(plan.as_str()))
        .and_then(|p| p.throttle())
        .unwrap_or_else(|| panic!("{plan} with a throttle"));
    assert_eq!((throttle.rate_limit(), throttle.burst_limit()), (3.0, 6));
    let revoked = gateway
        .call(
            portal,
            admin,
            "POST",
            "/{proxy+}",
            &format!("/keys/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(
        !in_plan(auth::usage_identifier(&id)).await,
        "{id} is deleted"
    );
    // Each API's cache, keyed by the header: a key was looked up once per API whatever the
    // route (the policy names the whole stage); the other requests were served from the cache.
    let cached = gateway.cache.lock().expect("lock").len();
    let lookups = gateway.lookups.load(Ordering::Relaxed);
    assert_eq!(lookups, cached, "one authorizer call per key and API");
    assert!(
        lookups < gateway.keyed.load(Ordering::Relaxed) / 2,
        "{lookups} lookups for {} requests",
        gateway.keyed.load(Ordering::Relaxed)
    );

    // Every call each function made was allowed by its role, but the one read that must not be.
    let records = account.records();
    let denied: Vec<&Record> = records.iter().filter(|r| !r.allowed).collect();
    assert_eq!(
        denied
            .iter()
            .map(|r| (
                r.function.as_str(),
                r.call.action.as_str(),
                r.call.resource.as_str()
            ))
            .collect::<Vec<_>>(),
        [(
            "provisioner",
            "s3:GetObject",
            format!("arn:aws:s3:::{publisher}/scanned_parcel/1/schema.json").as_str()
        )],
        "calls outside the functions' roles"
    );
    for (function, action) in [
        ("portal", "dynamodb:PutItem"),
        ("portal", "s3:PutObject"),
        ("portal", "schemas:CreateSchema"),
        ("provisioner", "states:StartExecution"),
        ("provisioner", "s3:GetObject"),
        ("injector", "events:PutEvents"),
        ("injector", "s3:PutObject"),
        ("injector-sqs", "events:PutEvents"),
        ("injector-sqs", "s3:PutObject"),
        ("authorizer", "dynamodb:GetItem"),
        ("delivery", "dynamodb:GetItem"),
        // POST /keys: the new key's API Gateway key and its place in a usage plan; revocation
        // deletes them.
        ("portal", "apigateway:POST"),
        ("portal", "apigateway:DELETE"),
    ] {
        assert!(
            records
                .iter()
                .any(|r| r.function == function && r.call.action == action),
            "{function} made no {action}: {records:#?}"
        );
    }
}

/// The callers of the access table (tests/tests/access.rs), in its order, with their keys in the
/// platform table: no key, another team's owner, a reader (another team's consumer), a producer
/// of another application, the owning team's owner, a platform admin; and the producer of the
/// event type's application, which publishes the seed's events.
struct Keys {
    keys: [Option<String>; 6],
    producer: String,
    /// A producer key of the event type's application stored on the table alone.
    unplanned: String,
}

const CALLERS: [&str; 6] = [
    "no key",
    "wrong team",
    "reader",
    "other producer",
    "owner",
    "admin",
];

impl Keys {
    /// Stored as `busway-aws keys create` stores them: the record under the secret's SHA-256,
    /// with its API Gateway key in the broker stage's default usage plan (`plan`).
    async fn make(sdk: &aws_config::SdkConfig, table: &str, plan: &str) -> Keys {
        let table: Arc<dyn KeyStore> = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            table.to_string(),
        ));
        let store = GatewayKeys::new(
            table.clone(),
            UsagePlans::new(aws_sdk_apigateway::Client::new(sdk), plan),
        );
        let unplanned = NewKey::new(
            "logistics".parse().expect("a team"),
            Role::Producer,
            Some("demo".parse().expect("an application")),
        )
        .expect("a valid key");
        let unplanned = auth::create_key(table.as_ref(), unplanned)
            .await
            .expect("the key is stored")
            .1;
        let key = |team: &str, role, application: Option<&str>| {
            let new = NewKey::new(
                team.parse().expect("a team"),
                role,
                application.map(|a| a.parse().expect("an application")),
            )
            .expect("a valid key");
            let store = &store;
            async move {
                auth::create_key(store, new)
                    .await
                    .expect("the key is stored")
                    .1
            }
        };
        Keys {
            keys: [
                None,
                Some(key("billing", Role::Owner, None).await),
                Some(key("billing", Role::Consumer, None).await),
                Some(key("logistics", Role::Producer, Some("depot")).await),
                Some(key("logistics", Role::Owner, None).await),
                Some(key(auth::PLATFORM_TEAM, Role::PlatformAdmin, None).await),
            ],
            producer: key("logistics", Role::Producer, Some("demo")).await,
            unplanned,
        }
    }

    fn owner(&self) -> &str {
        self.keys[4].as_deref().expect("an owner key")
    }
}

/// The rows of the access table whose answers are the same on AWS, through the authorizer and
/// the API Gateway events: each caller's status, a 401 with the challenge and the error body, a
/// 403 naming what was missing.
async fn access_through_the_authorizer(
    gateway: &Gateway<'_>,
    portal: &Deployed,
    injector: &Deployed,
    keys: &Keys,
) {
    let row = |api: &'static str,
               method: &'static str,
               path: String,
               body: Option<Value>,
               expected: [Option<u64>; 6]| async move {
        let (function, resource) = match api {
            "portal" => (portal, "/{proxy+}".to_string()),
            _ => (injector, path.clone()),
        };
        for (i, want) in expected.iter().enumerate() {
            let Some(want) = *want else { continue };
            let caller = CALLERS[i].replace(' ', "_");
            let path = path.replace("{caller}", &caller);
            let body = body.as_ref().map(|b| {
                serde_json::from_str::<Value>(&b.to_string().replace("{caller}", &caller))
                    .expect("JSON")
            });
            let reply = gateway
                .call(
                    function,
                    keys.keys[i].as_deref(),
                    method,
                    &resource,
                    &path,
                    body.as_ref(),
                )
                .await;
            assert_eq!(
                reply.status, want,
                "{method} {path} as {}: {}",
                CALLERS[i], reply.body
            );
            match want {
                401 => {
                    assert_eq!(
                        reply.body["error"]["code"], "unauthorized",
                        "{}",
                        reply.body
                    );
                    assert_eq!(
                        reply.challenge.as_deref(),
                        Some("Bearer realm=\"busway\""),
                        "{method} {path}"
                    );
                }
                403 => {
                    assert_eq!(reply.body["error"]["code"], "forbidden", "{}", reply.body);
                    assert!(
                        reply.body["error"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.is_empty()),
                        "{}",
                        reply.body
                    );
                }
                _ => {}
            }
        }
    };
    const S: fn(u64) -> Option<u64> = Some;
    let all = |status| {
        [
            S(401),
            S(status),
            S(status),
            S(status),
            S(status),
            S(status),
        ]
    };
    let p = |path: &str| path.to_string();

    row("portal", "GET", p("/events"), None, all(200)).await;
    row("portal", "GET", p("/events/scanned_parcel"), None, all(200)).await;
    let mut new_event = seed_event();
    new_event["event_type"] = json!("parcel_of_{caller}");
    row(
        "portal",
        "POST",
        p("/events"),
        Some(new_event),
        [S(401), S(201), S(403), S(403), S(201), S(201)],
    )
    .await;
    let version =
        json!({"data": busway_tests::v2_data_schema(), "description": "added by {caller}"});
    row(
        "portal",
        "PUT",
        p("/events/scanned_parcel"),
        Some(version),
        [S(401), S(403), S(403), S(403), S(201), S(201)],
    )
    .await;
    let subscription = json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "unit_of_{caller}",
        "connection_type": "HTTPS", "connection_string": "https://consumer.example.com/{caller}"});
    row(
        "portal",
        "POST",
        p("/subscriptions"),
        Some(subscription),
        [S(401), S(201), S(201), S(403), S(201), S(201)],
    )
    .await;
    row("portal", "GET", p("/subscriptions"), None, all(200)).await;
    let admin_only = |ok| [S(401), S(403), S(403), S(403), S(403), S(ok)];
    row("portal", "GET", p("/keys"), None, admin_only(200)).await;
    row(
        "portal",
        "POST",
        p("/keys"),
        Some(json!({"team": "billing", "role": "consumer"})),
        admin_only(201),
    )
    .await;
    // The audit on the table: owners read their team's entries, platform admins all of them.
    row(
        "portal",
        "GET",
        p("/audit"),
        None,
        [S(401), S(200), S(403), S(403), S(200), S(200)],
    )
    .await;
    let audit = gateway
        .call(
            portal,
            keys.keys[4].as_deref(),
            "GET",
            "/{proxy+}",
            "/audit",
            None,
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.body["entries"].as_array().expect("entries");
    let created = entries
        .iter()
        .find(|e| e["action"] == "event_type.create" && e["resource"] == "scanned_parcel")
        .unwrap_or_else(|| panic!("the seed's event type is in the audit: {entries:?}"));
    assert_eq!(created["team"], "logistics");
    assert_eq!(created["role"], "owner");
    assert!(
        entries.iter().all(|e| e["team"] == "logistics"),
        "an owner reads its team's entries only: {entries:?}"
    );

    // Publishing: producer keys of the event type's application (or a writer) only.
    row(
        "broker",
        "POST",
        p("/scanned_parcel/1"),
        Some(v1_envelope("nobody")),
        [S(401), S(403), S(403), S(403), S(403), S(403)],
    )
    .await;
}
