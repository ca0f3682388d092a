//! An emulated AWS account on this binary's moto server (`busway_tests::moto`): the platform's
//! table, three versioned buckets and custom bus under unique names, the AWS adapters on them,
//! and the environment a Lambda function of busway reads to use them.

use busway_aws::eventbridge::EventBridgeBus;
use busway_aws::sfn::{SfnProvisioning, SfnStarter};
use busway_aws::{BucketNames, DynamoStore, S3ObjectStore};
use busway_core::claim_check::{ClaimChecks, DEFAULT_MAX_ENTRY_BYTES};
use busway_core::ports::Bucket;
use busway_core::provisioning::Provisioner;
use busway_tests::moto;

pub struct Account {
    pub endpoint: String,
    pub table: String,
    pub buckets: BucketNames,
    pub bus_name: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A new table with the keys and indexes of the platform's.
pub async fn table(dynamodb: &aws_sdk_dynamodb::Client) -> String {
    let table = unique("busway-table");
    DynamoStore::create_table(dynamodb, &table)
        .await
        .expect("the table is created");
    table
}

/// The seed's three buckets under new names, versioned as infra makes them.
pub async fn versioned_buckets(s3: &aws_sdk_s3::Client) -> BucketNames {
    use aws_sdk_s3::types::{
        BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
        VersioningConfiguration,
    };
    let buckets = BucketNames {
        schema_backup: unique("backup"),
        publisher: unique("publisher"),
        subscriber: unique("subscriber"),
    };
    for bucket in Bucket::ALL {
        let name = buckets.name(bucket);
        s3.create_bucket()
            .bucket(name)
            .create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(moto::REGION))
                    .build(),
            )
            .send()
            .await
            .expect("the bucket is created");
        s3.put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("versioning is on");
    }
    buckets
}

impl Account {
    pub async fn new() -> Account {
        let endpoint = moto::endpoint().await.to_string();
        let sdk = moto::sdk(&endpoint).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let s3 = moto::s3(&sdk);
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let table = table(&dynamodb).await;
        let buckets = versioned_buckets(&s3).await;
        let bus_name = unique("custom.events.bus");
        events
            .create_event_bus()
            .name(&bus_name)
            .send()
            .await
            .expect("the bus is created");
        Account {
            endpoint,
            table,
            buckets,
            bus_name,
            dynamodb,
            s3,
            events,
            sqs,
        }
    }

    pub fn store(&self) -> DynamoStore {
        DynamoStore::new(self.dynamodb.clone(), self.table.clone())
    }

    pub fn objects(&self) -> S3ObjectStore {
        S3ObjectStore::new(self.s3.clone(), self.buckets.clone())
    }

    /// How the portal starts provisioning again on this account (a retried deployment): the
    /// S3 notification handler's steps on its table and buckets, then StartExecution of the
    /// account's provisioning state machine, which only the tests that run one create.
    pub async fn provisioning(&self) -> SfnProvisioning {
        let sdk = moto::sdk(&self.endpoint).await;
        SfnProvisioning {
            provisioner: Provisioner {
                store: std::sync::Arc::new(self.store()),
                deployments: std::sync::Arc::new(self.store()),
                objects: std::sync::Arc::new(self.objects()),
            },
            starter: SfnStarter::new(aws_sdk_sfn::Client::new(&sdk), self.state_machine_arn()),
            buckets: self.buckets.clone(),
        }
    }

    /// The account's provisioning state machine, named after its table.
    pub fn state_machine_arn(&self) -> String {
        format!(
            "arn:aws:states:{}:123456789012:stateMachine:{}-provisioning",
            moto::REGION,
            self.table
        )
    }

    pub fn bus(&self) -> EventBridgeBus {
        let claim_checks = ClaimChecks {
            objects: std::sync::Arc::new(self.objects()),
            bucket_name: self.buckets.schema_backup.clone(),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        };
        EventBridgeBus::new(&self.events, self.bus_name.clone(), claim_checks)
    }

    /// An object's content, straight from S3.
    pub async fn object(&self, bucket: Bucket, key: &str) -> Option<Vec<u8>> {
        let out = self
            .s3
            .get_object()
            .bucket(self.buckets.name(bucket))
            .key(key)
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    }

    /// The rule a consumer stack makes from the consumer deploy.json at `key` (its rule name and
    /// pattern), with a new queue as its target; returns the queue's URL.
    pub async fn consumer_queue(&self, key: &str) -> String {
        let document = self
            .object(Bucket::Subscriber, key)
            .await
            .expect("the consumer deploy.json is in S3");
        let consumer: serde_json::Value = serde_json::from_slice(&document).expect("JSON");
        self.rule_to_queue(
            consumer["rule_name"].as_str().expect("a rule name"),
            &consumer["event_pattern"].to_string(),
        )
        .await
    }

    /// A rule on the bus with `pattern` and a new queue as its target, as a consumer stack
    /// makes it; returns the queue's URL.
    pub async fn rule_to_queue(&self, rule: &str, pattern: &str) -> String {
        let queue = self
            .sqs
            .create_queue()
            .queue_name(unique("consumer"))
            .send()
            .await
            .expect("the queue is created");
        let url = queue.queue_url().expect("a queue URL").to_string();
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the queue's attributes");
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .expect("a queue ARN")
            .clone();
        self.events
            .put_rule()
            .name(rule)
            .event_bus_name(&self.bus_name)
            .event_pattern(pattern)
            .send()
            .await
            .expect("the rule is created");
        self.events
            .put_targets()
            .rule(rule)
            .event_bus_name(&self.bus_name)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(arn)
                    .build()
                    .expect("a target"),
            )
            .send()
            .await
            .expect("the target is set");
        url
    }

    /// Every message on the queue, waiting up to `seconds` for the first ones.
    pub async fn drain(&self, url: &str, seconds: i32) -> Vec<serde_json::Value> {
        let mut bodies = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(if bodies.is_empty() { seconds } else { 1 })
                .send()
                .await
                .expect("receive");
            let messages = out.messages();
            if messages.is_empty() {
                return bodies;
            }
            for m in messages {
                bodies
                    .push(serde_json::from_str(m.body().expect("a body")).expect("a JSON message"));
            }
        }
    }

    /// What a busway Lambda function reads from its environment to use this account.
    pub fn lambda_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", moto::REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("BUSWAY_TABLE_NAME", self.table.clone()),
            (
                "BUSWAY_SCHEMA_BACKUP_BUCKET",
                self.buckets.schema_backup.clone(),
            ),
            ("BUSWAY_PUBLISHER_BUCKET", self.buckets.publisher.clone()),
            ("BUSWAY_SUBSCRIBER_BUCKET", self.buckets.subscriber.clone()),
            ("BUSWAY_BUS_NAME", self.bus_name.clone()),
            ("BUSWAY_SCHEMA_REGISTRY", "busway.schemas".into()),
        ]
    }
}
