//! What the domain needs from the world. Each port has an AWS adapter and an embedded adapter;
//! both pass the same contract tests.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::deployment::Deployment;
use crate::envelope::BusEvent;
use crate::event::{EventType, EventVersion};
use crate::page::{Page, PageRequest};
use crate::subscription::{Subscription, SubscriptionFilter};
use crate::{EventTypeName, Version};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The write lost a race or would break an invariant; the message says which.
    #[error("{0}")]
    Conflict(String),
    /// The store did not answer in time: throttled, timed out or failing on its side. Transient:
    /// the same call may succeed when retried later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A page position that this store did not give.
    #[error("{0}")]
    BadPosition(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Event types, versions and subscriptions. Every method that writes several records writes all
/// of them or none, and records the deployment it starts in the same transaction.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Returns `AlreadyExists` when an event type of that name exists.
    async fn create_event_type(
        &self,
        event: &EventType,
        first: &EventVersion,
        deployment: &Deployment,
    ) -> Result<(), StoreError>;

    /// Adds `version`, which must be `expected_latest + 1`. Returns `Conflict` when another
    /// writer added a version first (optimistic locking), `NotFound` for an unknown event type.
    async fn add_version(
        &self,
        version: &EventVersion,
        expected_latest: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError>;

    /// Marks an active version deleted. Returns `NotFound` when it is not active and `Conflict`
    /// while active subscriptions to it exist.
    async fn delete_version(
        &self,
        event_type: &EventTypeName,
        version: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError>;

    async fn get_event_type(&self, name: &EventTypeName) -> Result<Option<EventType>, StoreError>;
    async fn list_event_types(&self) -> Result<Vec<EventType>, StoreError>;
    /// A page of event types by name; `BadPosition` for a position it did not give.
    async fn page_event_types(&self, page: &PageRequest) -> Result<Page<EventType>, StoreError>;
    /// Every version, deleted ones included, in ascending order.
    async fn list_versions(&self, name: &EventTypeName) -> Result<Vec<EventVersion>, StoreError>;
    async fn get_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<Option<EventVersion>, StoreError>;

    /// Returns `NotFound` unless the subscribed version is active, and `AlreadyExists` when an
    /// active subscription has the same target (`Subscription::same_target`).
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        deployment: &Deployment,
    ) -> Result<(), StoreError>;

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError>;
    /// Active subscriptions that pass `filter`, oldest first.
    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
    ) -> Result<Vec<Subscription>, StoreError>;
    /// A page of active subscriptions that pass `filter`, in the order of the store's index;
    /// `BadPosition` for a position it did not give.
    async fn page_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, StoreError>;

    /// Records `from` as an active subscription's `replay_from`, with the job that makes its
    /// new subscriber; `NotFound` when it is not active.
    async fn replay_subscription(
        &self,
        id: &str,
        from: crate::Timestamp,
        deployment: &Deployment,
    ) -> Result<(), StoreError>;

    /// Marks an active subscription deleted; `NotFound` when it is not active.
    async fn delete_subscription(
        &self,
        id: &str,
        deployment: &Deployment,
    ) -> Result<(), StoreError>;
}

/// Deployment status records.
/// The reads of `EventStore` a broker makes: the event types and versions it routes, with their
/// schemas. Every event store is one. A broker holds its store as this narrower port so that an
/// injector binary links only these four reads of the store's adapter, not every write of the
/// portal's that a `dyn EventStore` would bring along.
#[async_trait]
pub trait EventCatalog: Send + Sync + 'static {
    async fn get_event_type(&self, name: &EventTypeName) -> Result<Option<EventType>, StoreError>;
    async fn list_event_types(&self) -> Result<Vec<EventType>, StoreError>;
    async fn list_versions(&self, name: &EventTypeName) -> Result<Vec<EventVersion>, StoreError>;
    async fn get_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<Option<EventVersion>, StoreError>;
}

#[async_trait]
impl<S: EventStore + ?Sized> EventCatalog for S {
    async fn get_event_type(&self, name: &EventTypeName) -> Result<Option<EventType>, StoreError> {
        EventStore::get_event_type(self, name).await
    }
    async fn list_event_types(&self) -> Result<Vec<EventType>, StoreError> {
        EventStore::list_event_types(self).await
    }
    async fn list_versions(&self, name: &EventTypeName) -> Result<Vec<EventVersion>, StoreError> {
        EventStore::list_versions(self, name).await
    }
    async fn get_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<Option<EventVersion>, StoreError> {
        EventStore::get_version(self, name, version).await
    }
}

#[async_trait]
pub trait DeploymentStore: Send + Sync + 'static {
    /// Inserts or replaces the record with this id.
    async fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError>;
    /// Replaces the record only while the stored one is still `read` (the same status, execution
    /// and number of transitions): `Conflict` when another writer moved it since it was read, and
    /// nothing is written. Two starters of one document never overwrite each other's claim.
    async fn replace_deployment(
        &self,
        deployment: &Deployment,
        read: &Deployment,
    ) -> Result<(), StoreError>;
    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError>;
    /// Newest first; all of them when `event_type` is `None`.
    async fn list_deployments(
        &self,
        event_type: Option<&EventTypeName>,
    ) -> Result<Vec<Deployment>, StoreError>;
    /// A page of `list_deployments`; `BadPosition` for a position it did not give.
    async fn page_deployments(
        &self,
        event_type: Option<&EventTypeName>,
        page: &PageRequest,
    ) -> Result<Page<Deployment>, StoreError>;
}

/// The schema registry (EventBridge Schema Registry on AWS), keeping every version.
#[async_trait]
pub trait SchemaRegistry: Send + Sync + 'static {
    /// Idempotent: putting the same version again replaces its content.
    async fn put_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
        schema: &Value,
    ) -> anyhow::Result<()>;
    async fn get_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
    ) -> anyhow::Result<Option<Value>>;
    async fn list_schema_versions(
        &self,
        event_type: &EventTypeName,
    ) -> anyhow::Result<Vec<Version>>;
}

/// The seed's three buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    SchemaBackup,
    Publisher,
    Subscriber,
}

impl Bucket {
    pub const ALL: [Bucket; 3] = [Bucket::SchemaBackup, Bucket::Publisher, Bucket::Subscriber];

    /// The seed's bucket name without the `{environment}-` prefix.
    pub fn base_name(self) -> &'static str {
        match self {
            Self::SchemaBackup => "event-schemas-backup-bucket",
            Self::Publisher => "publisher-components-bucket",
            Self::Subscriber => "subscriber-components-bucket",
        }
    }

    pub fn from_base_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.base_name() == name)
    }

    pub fn deploy_kind(self) -> Option<crate::deploy::DeployKind> {
        match self {
            Self::SchemaBackup => None,
            Self::Publisher => Some(crate::deploy::DeployKind::Producer),
            Self::Subscriber => Some(crate::deploy::DeployKind::Consumer),
        }
    }
}

/// Key of a version's schema in the backup bucket.
pub fn schema_backup_key(event_type: &EventTypeName, version: Version) -> String {
    format!("{event_type}/{version}/schema.json")
}

/// The object keys every object store accepts. S3 itself takes `..` and empty segments, but such
/// a key would be another path on a disk: the embedded store's folders, or anyone's copy of a
/// bucket.
pub fn check_object_key(key: &str) -> anyhow::Result<()> {
    let safe = !key.is_empty()
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    if !safe {
        anyhow::bail!("unsafe object key {key:?}");
    }
    Ok(())
}

/// Object storage (S3 on AWS). Writing to the publisher or subscriber bucket starts a deployment,
/// as the S3 notification does. Both calls refuse a key `check_object_key` refuses.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    async fn put_object(&self, bucket: Bucket, key: &str, body: Vec<u8>) -> anyhow::Result<()>;
    async fn get_object(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Vec<u8>>>;

    /// One version of an object: the current one when `version` is `None`, else exactly that
    /// version, or `None` when the store no longer has it. A store that keeps no versions (the
    /// embedded one) names a version by the SHA-256 of its content, so it has only the current.
    async fn get_object_version(
        &self,
        bucket: Bucket,
        key: &str,
        version: Option<&str>,
    ) -> anyhow::Result<Option<ObjectVersion>> {
        let Some(body) = self.get_object(bucket, key).await? else {
            return Ok(None);
        };
        let current = crate::deployment::object_version(&body);
        Ok(version
            .is_none_or(|v| v == current)
            .then_some(ObjectVersion {
                body,
                version: current,
            }))
    }

    /// Writes an object that must not exist yet, with `metadata` as its user metadata (S3's
    /// `x-amz-meta-*`); claim checks are written so. Never replaces an object: when `key` holds
    /// one, the error is a `StoreError::AlreadyExists`. Starts no deployment.
    async fn put_new_object(
        &self,
        bucket: Bucket,
        key: &str,
        body: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<()>;

    /// The user metadata of an object written by `put_new_object` (empty for one written by
    /// `put_object`); `None` when there is no object.
    async fn object_metadata(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>>;
}

/// An object's content with the name of its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub body: Vec<u8>,
    pub version: String,
}

/// Why one entry did not reach the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EntryFailure {
    pub code: String,
    pub message: String,
}

/// How the bus took an event it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Put on the bus: it is delivered.
    Stored,
    /// An event with the same `event_id` and detail type was accepted within the deduplication
    /// window: this one is not put on the bus again.
    Duplicate,
}

/// The shortest deduplication window any bus keeps: EventBridge's own `DeduplicationId` window.
/// Each host states its own, at least this: the event log's retention locally, the injector's
/// `BUSWAY_DEDUP_WINDOW` on AWS.
pub const MIN_DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The event bus (an EventBridge custom bus on AWS, the durable event log locally).
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Puts events in order; the answer has one result per event. An `Err` means none is known
    /// to be stored.
    ///
    /// Deduplication: an event whose `event_id` and detail type repeat those of an event this
    /// bus accepted within its deduplication window (at least [`MIN_DEDUP_WINDOW`]) is answered
    /// `Accepted::Duplicate` and not put on the bus again, in the same call or a later one.
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>>;
}

/// Starts the provisioning of a deploy.json that landed in a configuration bucket (the S3
/// notification → StartExecution on AWS, the local runner on one machine). Starting the same
/// object version twice starts one deployment.
#[async_trait]
pub trait ProvisioningStarter: Send + Sync + 'static {
    async fn start(&self, bucket: Bucket, key: &str) -> anyhow::Result<()>;
}

/// What happened to a subscription's deliveries.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_delivered_at: Option<String>,
    /// How far behind the log the subscription is, measured when asked (never stored); absent
    /// where the host does not deliver itself (on AWS, EventBridge does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,
    /// Events waiting for another attempt (the cursor is past them, so `lag` does not count
    /// them), measured when asked; absent where the host does not deliver itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_retries: Option<u64>,
}

/// A subscription's backlog: the events of its version after its cursor (read, matched or
/// skipped, and settled move the cursor), and the age of the oldest one.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lag {
    pub events: u64,
    pub seconds: f64,
}

/// An event that exhausted its subscription's retry policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    /// The event as the target would have received it.
    pub event: Value,
    pub error: String,
    pub attempts: u32,
    pub failed_at: String,
}

/// Delivery to subscribers: counts, the dead-letter store and its redrive.
#[async_trait]
pub trait Deliveries: Send + Sync + 'static {
    async fn stats(&self, subscription_id: &str) -> anyhow::Result<DeliveryStats>;
    /// A page of the subscription's dead letters, oldest first; `BadPosition` for a position it
    /// did not give.
    async fn dead_letters(
        &self,
        subscription_id: &str,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError>;
    /// Sends the dead letters again under the subscription's retry policy, counted afresh;
    /// returns how many were taken. Concurrent redrives take each letter once; one that fails
    /// again comes back with the attempts of its new round. `Conflict` while the subscription
    /// has nothing on the bus to send them to.
    async fn redrive(&self, subscription_id: &str) -> Result<usize, ControlError>;
}

/// Whether a subscription's deliveries run (`GET /subscriptions/{id}` shows it as
/// `delivery_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    Running,
    Paused,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The subscription is already in the asked state.
    #[error("{0}")]
    Conflict(String),
    /// A replay start outside what the bus keeps.
    #[error("{0}")]
    BadStart(String),
    /// This bus cannot do it.
    #[error("{0}")]
    NotAvailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        Self::Unexpected(e.into())
    }
}

/// Pause, resume and replay of one subscription's deliveries: its cursor in the local log, or
/// its Custom Event Bus subscriber's state on AWS.
#[async_trait]
pub trait SubscriberControl: Send + Sync + 'static {
    /// `None` while the bus has nothing of the subscription yet (its deployment is not live).
    async fn state(&self, subscription_id: &str) -> Result<Option<RunState>, ControlError>;
    /// Stops delivery; what arrives meanwhile waits, and is delivered after `resume`.
    async fn pause(&self, subscription_id: &str) -> Result<(), ControlError>;
    async fn resume(&self, subscription_id: &str) -> Result<(), ControlError>;
    /// Delivers the subscription's matching events published since `start` again, to it alone;
    /// `BadStart` when the bus no longer keeps events that old.
    async fn replay(
        &self,
        subscription_id: &str,
        start: time::OffsetDateTime,
    ) -> Result<Replay, ControlError>;
}

/// How a replay the bus accepted goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Under way: the subscription's cursor moved back (the local log).
    Started,
    /// Only a new subscriber starts at a point in time (the Custom Event Bus): the portal
    /// records the start and its consumer stack is deployed again to make it.
    NewSubscriber,
}
