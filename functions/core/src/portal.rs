//! The self-service portal's use cases: register event types and versions, subscribe, delete,
//! and read back what exists and how its deployments went.

use std::ops::RangeInclusive;
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;
use tracing::instrument;

use crate::deploy::{self, DeployAction, DeployDoc, DeployKind, ProducerDeploy};
use crate::deployment::{
    self, Deployment, DeploymentStatus, Provisioning, STEPS_LEASE, StatusChange,
};
use crate::event::{
    EventType, EventVersion, ProducerConnection, VersionState, detail_type, source_of,
};
use crate::format::DEPLOY_FORMAT;
use crate::page::{Page, PageRequest};
use crate::ports::{
    Bucket, ControlError, DeadLetter, Deliveries, DeliveryStats, DeploymentStore, EventStore,
    ObjectStore, ProvisioningStarter, Replay, RunState, SchemaRegistry, StoreError,
    SubscriberControl, schema_backup_key,
};
use crate::schema;
use crate::subscription::{
    ConsumerConnection, DeliverySettings, RetryPolicy, Subscription, SubscriptionFilter,
    SubscriptionState,
};
use crate::{Application, EventTypeName, TargetUnit, Team, ValidationErrors, Version};

pub const MAX_DESCRIPTION: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("invalid request: {0}")]
    Invalid(ValidationErrors),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    /// The caller's key does not allow this; the message names what was missing.
    #[error("{0}")]
    Forbidden(String),
    /// A store was throttled or did not answer: the same request may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// This host has no such feature.
    #[error("{0}")]
    NotAvailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for PortalError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(what) => Self::AlreadyExists(what),
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(why) => Self::Conflict(why),
            StoreError::Unavailable(why) => Self::Unavailable(why),
            StoreError::BadPosition(why) => {
                let mut errors = ValidationErrors::default();
                errors.push("next_token", why);
                Self::Invalid(errors)
            }
            StoreError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

impl From<ControlError> for PortalError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Conflict(why) => Self::Conflict(why),
            ControlError::BadStart(why) => {
                let mut errors = ValidationErrors::default();
                errors.push("start_time", why);
                Self::Invalid(errors)
            }
            ControlError::NotAvailable(why) => Self::NotAvailable(why),
            ControlError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

impl From<ValidationErrors> for PortalError {
    fn from(e: ValidationErrors) -> Self {
        Self::Invalid(e)
    }
}

/// `POST /events`, validated: every failing field is reported at once.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateEvent {
    pub application: Application,
    pub event_type: EventTypeName,
    pub description: String,
    pub connection_type: ProducerConnection,
    pub data: Value,
    /// The caller's team, which will own the event type.
    pub team: Option<Team>,
    pub writers: Vec<Application>,
    pub readers: Option<Vec<Team>>,
}

/// `PUT /events/{event_type}`: a new version from a new data schema.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    pub data: Value,
    pub description: Option<String>,
}

/// `POST /subscriptions`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub event_type: EventTypeName,
    pub version: Version,
    pub target_unit: TargetUnit,
    pub connection_type: ConsumerConnection,
    pub connection_string: String,
    pub retry_policy: RetryPolicy,
    pub delivery: DeliverySettings,
    /// The caller's team, which will own the subscription.
    pub team: Option<Team>,
}

/// Reads the request object field by field so that each problem is named, not just the first.
struct Fields<'a> {
    body: Option<&'a serde_json::Map<String, Value>>,
    errors: ValidationErrors,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Value, allowed: &[&str]) -> Self {
        let mut errors = ValidationErrors::default();
        let body = body.as_object();
        match body {
            None => errors.push("/", "body must be a JSON object"),
            Some(map) => {
                for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
                    errors.push(key.as_str(), "unknown field");
                }
            }
        }
        Self { body, errors }
    }

    fn raw(&mut self, field: &str, required: bool) -> Option<&'a Value> {
        let value = self.body?.get(field).filter(|v| !v.is_null());
        if value.is_none() && required {
            self.errors.push(field, "is required");
        }
        value
    }

    fn string(&mut self, field: &str, required: bool) -> Option<&'a str> {
        let value = self.raw(field, required)?;
        let s = value.as_str();
        if s.is_none() {
            self.errors.push(field, "must be a string");
        }
        s
    }

    fn parsed<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let s = self.string(field, true)?;
        self.errors.check(field, parse(s))
    }

    fn description(&mut self, required: bool) -> Option<String> {
        let s = self.string("description", required)?;
        if s.chars().count() > MAX_DESCRIPTION {
            self.errors.push(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            );
            return None;
        }
        Some(s.to_string())
    }

    /// Optional; EventBridge's defaults when absent. Each bad part is named.
    fn retry_policy(&mut self) -> RetryPolicy {
        let default = RetryPolicy::default();
        let Some(value) = self.raw("retry_policy", false) else {
            return default;
        };
        let Some(obj) = value.as_object() else {
            self.errors.push("retry_policy", "must be an object");
            return default;
        };
        let mut number = |name, range| bounded(&mut self.errors, obj, "retry_policy", name, range);
        let attempts = number("maximum_retry_attempts", RetryPolicy::ATTEMPTS)
            .unwrap_or(default.maximum_retry_attempts);
        let age = number("maximum_event_age_seconds", RetryPolicy::AGE_SECONDS)
            .unwrap_or(default.maximum_event_age_seconds);
        for key in obj.keys().filter(|k| {
            !["maximum_retry_attempts", "maximum_event_age_seconds"].contains(&k.as_str())
        }) {
            self.errors
                .push(format!("retry_policy/{key}"), "unknown field");
        }
        // Each field in its range was checked above, and named when it was not.
        RetryPolicy::new(attempts, age).unwrap_or(default)
    }

    /// Optional; the defaults when absent. Each bad part is named.
    fn delivery(&mut self) -> DeliverySettings {
        let default = DeliverySettings::default();
        let Some(value) = self.raw("delivery", false) else {
            return default;
        };
        let Some(obj) = value.as_object() else {
            self.errors.push("delivery", "must be an object");
            return default;
        };
        let mut number = |name, range| bounded(&mut self.errors, obj, "delivery", name, range);
        let max_in_flight = number("max_in_flight", DeliverySettings::MAX_IN_FLIGHT)
            .unwrap_or(default.max_in_flight);
        let rate = number("invocation_rate_limit_per_second", DeliverySettings::RATE);
        for key in obj.keys().filter(|k| {
            !["max_in_flight", "invocation_rate_limit_per_second"].contains(&k.as_str())
        }) {
            self.errors.push(format!("delivery/{key}"), "unknown field");
        }
        DeliverySettings::new(max_in_flight, rate).unwrap_or(default)
    }

    /// An optional array of names, each checked.
    fn names<T: std::str::FromStr<Err = E>, E: std::fmt::Display>(
        &mut self,
        field: &str,
    ) -> Option<Vec<T>> {
        let value = self.raw(field, false)?;
        let Some(items) = value.as_array() else {
            self.errors.push(field, "must be an array of names");
            return None;
        };
        let mut names = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}/{i}");
            match item.as_str() {
                Some(s) => names.extend(self.errors.check(&at, s.parse::<T>())),
                None => self.errors.push(at, "must be a string"),
            }
        }
        Some(names)
    }

    fn data_schema(&mut self) -> Option<Value> {
        let data = self.raw("data", true)?;
        match schema::check_data_schema("data", data) {
            Ok(()) => Some(data.clone()),
            Err(e) => {
                self.errors.0.extend(e.0);
                None
            }
        }
    }
}

/// `obj[name]` when it is an integer in `range`; `None` when absent (or null), or when it is
/// not, which is named at `{parent}/{name}` in `errors`.
fn bounded(
    errors: &mut ValidationErrors,
    obj: &serde_json::Map<String, Value>,
    parent: &str,
    name: &str,
    range: RangeInclusive<u32>,
) -> Option<u32> {
    let value = obj.get(name).filter(|v| !v.is_null())?;
    match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
        Some(n) if range.contains(&n) => Some(n),
        found => {
            let why = match found {
                Some(_) => format!("must be from {} to {}", range.start(), range.end()),
                None => "must be a non-negative integer".into(),
            };
            errors.push(format!("{parent}/{name}"), why);
            None
        }
    }
}

impl CreateEvent {
    pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
        let mut f = Fields::new(
            body,
            &[
                "application",
                "event_type",
                "description",
                "connection_type",
                "data",
                "writers",
                "readers",
            ],
        );
        let application = f.parsed("application", str::parse::<Application>);
        let writers = f.names::<Application, _>("writers").unwrap_or_default();
        let readers = f.names::<Team, _>("readers");
        let event_type = f.parsed("event_type", str::parse::<EventTypeName>);
        let description = f.description(true);
        let connection_type = f.parsed("connection_type", ProducerConnection::parse);
        let data = f.data_schema();
        match (application, event_type, description, connection_type, data) {
            (
                Some(application),
                Some(event_type),
                Some(description),
                Some(connection_type),
                Some(data),
            ) if f.errors.is_empty() => Ok(Self {
                application,
                event_type,
                description,
                connection_type,
                data,
                team: None,
                writers,
                readers,
            }),
            _ => Err(f.errors),
        }
    }
}

impl NewVersion {
    pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
        let mut f = Fields::new(body, &["data", "description"]);
        let description = f.description(false);
        let data = f.data_schema();
        match data {
            Some(data) if f.errors.is_empty() => Ok(Self { data, description }),
            _ => Err(f.errors),
        }
    }
}

impl Subscribe {
    pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
        let mut f = Fields::new(
            body,
            &[
                "event_type",
                "version",
                "target_unit",
                "connection_type",
                "connection_string",
                "retry_policy",
                "delivery",
            ],
        );
        let event_type = f.parsed("event_type", str::parse::<EventTypeName>);
        let version = f.raw("version", true).and_then(|v| {
            let parsed = Version::from_json(v);
            f.errors.check("version", parsed)
        });
        let target_unit = f.parsed("target_unit", str::parse::<TargetUnit>);
        let connection_type = f.parsed("connection_type", ConsumerConnection::parse);
        let connection_string = f.string("connection_string", true);
        let retry_policy = f.retry_policy();
        let delivery = f.delivery();
        if let (Some(kind), Some(s)) = (connection_type, connection_string)
            && let Err(e) = kind.check_connection_string(s)
        {
            f.errors.push("connection_string", e);
        }
        match (
            event_type,
            version,
            target_unit,
            connection_type,
            connection_string,
        ) {
            (
                Some(event_type),
                Some(version),
                Some(target_unit),
                Some(connection_type),
                Some(cs),
            ) if f.errors.is_empty() => Ok(Self {
                event_type,
                version,
                target_unit,
                connection_type,
                connection_string: cs.to_string(),
                retry_policy,
                delivery,
                team: None,
            }),
            _ => Err(f.errors),
        }
    }
}

/// An event type with its versions, as the portal shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventTypeView {
    #[serde(flatten)]
    pub event: EventType,
    pub versions: Vec<VersionSummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionSummary {
    pub version: Version,
    pub description: String,
    pub state: VersionState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: crate::Timestamp,
    /// Whether its route is live, from the jobs of its deploy.json.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<Provisioning>,
}

/// A version with its schema, and whether its route is live.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionView {
    #[serde(flatten)]
    pub version: EventVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<Provisioning>,
}

/// A subscription, and whether its rule is live.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionView {
    #[serde(flatten)]
    pub subscription: Subscription,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<Provisioning>,
}

pub struct Portal {
    pub store: Arc<dyn EventStore>,
    pub deployments: Arc<dyn DeploymentStore>,
    pub registry: Arc<dyn SchemaRegistry>,
    pub objects: Arc<dyn ObjectStore>,
    /// Delivery counts and dead letters, where this host keeps them: the local host does; on AWS
    /// they are EventBridge's (CloudWatch metrics and each rule's dead-letter queue).
    pub deliveries: Option<Arc<dyn Deliveries>>,
    /// Pause, resume and replay of subscriptions, where the bus offers them.
    pub control: Option<Arc<dyn SubscriberControl>>,
    /// Starts provisioning a document again, for a retried deployment whose document is written.
    pub provisioning: Arc<dyn ProvisioningStarter>,
    pub keys: Arc<dyn crate::auth::KeyStore>,
    /// Every change made through the portal (`GET /audit`).
    pub audit: Arc<dyn crate::audit::AuditLog>,
    /// Where each team's LAMBDA and SQS targets may be.
    pub targets: Arc<dyn crate::targets::TeamTargetStore>,
    /// The secrets HTTPS deliveries are signed with.
    pub secrets: Arc<dyn crate::webhook::SigningSecrets>,
    /// The bus consumer stacks are built for, written into each consumer deploy.json (AWS);
    /// `None` where the host's own build takes the document as it is (the local host).
    pub bus_kind: Option<deploy::BusKind>,
    /// The answers kept for `Idempotency-Key`s of the create routes.
    pub idempotency: Arc<dyn crate::idempotency::IdempotencyStore>,
    /// Whether `http://` (loopback) targets are accepted: only where the portal itself listens
    /// on loopback, or when asked, so a shared portal cannot be pointed at ports of its machine.
    pub allow_loopback_targets: bool,
}

fn replay_start(body: &Value) -> Result<time::OffsetDateTime, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let start = match body.get("start_time").and_then(Value::as_str) {
        None => {
            errors.push("start_time", "required: an RFC 3339 time");
            None
        }
        Some(raw) => errors.check(
            "start_time",
            time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("not an RFC 3339 time: {e}")),
        ),
    };
    if let Some(obj) = body.as_object() {
        for key in obj.keys().filter(|k| *k != "start_time") {
            errors.push(key.as_str(), "unknown field");
        }
    } else {
        errors.push("body", "a JSON object is expected");
    }
    if let Some(start) = start
        && start > crate::now()
    {
        errors.push("start_time", "is in the future");
    }
    errors.into_result(start.unwrap_or(time::OffsetDateTime::UNIX_EPOCH))
}

/// How often a step of a job after the domain commit (registry, schema backup, deploy.json) is
/// tried, and the pause before the second try, doubled after each.
const STEP_ATTEMPTS: u32 = 3;
const STEP_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

impl Portal {
    #[instrument(skip_all, fields(event_type = %req.event_type))]
    pub async fn create_event(
        &self,
        req: CreateEvent,
    ) -> Result<(EventTypeView, Deployment), PortalError> {
        if let Some(made) = self.made_by(&req).await? {
            return Ok(made);
        }
        let now = crate::now();
        let event = EventType {
            event_type: req.event_type.clone(),
            application: req.application.clone(),
            description: req.description.clone(),
            connection_type: req.connection_type,
            latest_version: Version::FIRST,
            created_at: now,
            team: req.team.clone(),
            writers: req.writers.clone(),
            readers: req.readers.clone(),
        };
        let version = self.version_record(
            &req.event_type,
            Version::FIRST,
            req.description.clone(),
            &req.data,
        );
        let deployment =
            self.producer_deployment(&req.event_type, Version::FIRST, DeployAction::Deploy);
        match self
            .store
            .create_event_type(&event, &version, &deployment)
            .await
        {
            // The same request, sent again before the first answered, won the race.
            Err(StoreError::AlreadyExists(what)) => {
                return self
                    .made_by(&req)
                    .await?
                    .ok_or(PortalError::AlreadyExists(what));
            }
            done => done?,
        }
        self.publish_version(&event, &version, &deployment).await?;
        Ok((self.view(event).await?, deployment))
    }

    /// A create retried after a timeout is answered with what it made: the event type this very
    /// request registered (its application, description, connection type and first schema),
    /// with the deployment of its first version. `AlreadyExists` when the name is taken
    /// otherwise.
    async fn made_by(
        &self,
        req: &CreateEvent,
    ) -> Result<Option<(EventTypeView, Deployment)>, PortalError> {
        let Some(existing) = self.store.get_event_type(&req.event_type).await? else {
            return Ok(None);
        };
        let first = self
            .store
            .get_version(&req.event_type, Version::FIRST)
            .await?;
        let same = existing.application == req.application
            && existing.team == req.team
            && existing.writers == req.writers
            && existing.readers == req.readers
            && existing.description == req.description
            && existing.connection_type == req.connection_type
            && first.is_some_and(|v| {
                v.schema == schema::envelope(&req.event_type, Version::FIRST, &req.data)
            });
        if !same {
            return Err(PortalError::AlreadyExists(format!(
                "event type {}",
                req.event_type
            )));
        }
        let key = deploy::producer_key(&req.event_type, Version::FIRST);
        let deployment = self.first_deployment(&req.event_type, &key).await?;
        Ok(Some((self.view(existing).await?, deployment)))
    }

    #[instrument(skip_all, fields(event_type = %event_type))]
    pub async fn add_version(
        &self,
        event_type: &EventTypeName,
        req: NewVersion,
    ) -> Result<(EventVersion, Deployment), PortalError> {
        let event = self.event_type(event_type).await?;
        let description = req.description.unwrap_or_else(|| event.description.clone());
        if let Some(made) = self
            .version_made_by(&event, &req.data, &description)
            .await?
        {
            return Ok(made);
        }
        let next = event.latest_version.next();
        let version = self.version_record(event_type, next, description.clone(), &req.data);
        let deployment = self.producer_deployment(event_type, next, DeployAction::Deploy);
        match self
            .store
            .add_version(&version, event.latest_version, &deployment)
            .await
        {
            // The same request, sent again before the first answered, added the version.
            Err(StoreError::Conflict(why)) => {
                let event = self.event_type(event_type).await?;
                return self
                    .version_made_by(&event, &req.data, &description)
                    .await?
                    .ok_or(PortalError::Conflict(why));
            }
            done => done?,
        }
        self.publish_version(&event, &version, &deployment).await?;
        Ok((version, deployment))
    }

    /// A new version retried after a timeout is answered with what it made: the latest version,
    /// when it is active and has this very schema and description (a version identical to the
    /// one before it would change nothing), with its deployment.
    async fn version_made_by(
        &self,
        event: &EventType,
        data: &Value,
        description: &str,
    ) -> Result<Option<(EventVersion, Deployment)>, PortalError> {
        let Some(latest) = self
            .store
            .get_version(&event.event_type, event.latest_version)
            .await?
        else {
            return Ok(None);
        };
        let same = latest.is_active()
            && latest.description == description
            && latest.schema == schema::envelope(&event.event_type, latest.version, data);
        if !same {
            return Ok(None);
        }
        let key = deploy::producer_key(&event.event_type, latest.version);
        let deployment = self.first_deployment(&event.event_type, &key).await?;
        Ok(Some((latest, deployment)))
    }

    #[instrument(skip_all, fields(event_type = %event_type, version = %version))]
    pub async fn delete_version(
        &self,
        event_type: &EventTypeName,
        version: Version,
    ) -> Result<Deployment, PortalError> {
        let event = self.event_type(event_type).await?;
        let record = self.active_version(event_type, version).await?;
        let deployment = self.producer_deployment(event_type, version, DeployAction::Destroy);
        self.store
            .delete_version(event_type, version, &deployment)
            .await?;
        self.write_producer_deploy(&event, &record, &deployment, DeployAction::Destroy)
            .await?;
        Ok(deployment)
    }

    #[instrument(skip_all, fields(event_type = %req.event_type, version = %req.version))]
    pub async fn subscribe(
        &self,
        req: Subscribe,
    ) -> Result<(Subscription, Deployment), PortalError> {
        if req.connection_type == ConsumerConnection::Https
            && req.connection_string.starts_with("http://")
            && !self.allow_loopback_targets
        {
            let mut errors = ValidationErrors::default();
            errors.push(
                "connection_string",
                "http:// (loopback) targets are accepted only by a portal that listens on loopback \
                 or runs with --allow-loopback-targets; use https",
            );
            return Err(PortalError::Invalid(errors));
        }
        let event = self.event_type(&req.event_type).await?;
        self.active_version(&req.event_type, req.version).await?;
        if let Some(made) = self.subscription_made_by(&req).await? {
            return Ok(made);
        }
        let subscription = Subscription {
            id: uuid::Uuid::new_v4().to_string(),
            event_type: req.event_type.clone(),
            version: req.version,
            target_unit: req.target_unit.clone(),
            connection_type: req.connection_type,
            connection_string: req.connection_string.clone(),
            retry_policy: req.retry_policy,
            delivery: req.delivery,
            state: SubscriptionState::Active,
            created_at: crate::now(),
            team: req.team.clone(),
            replay_from: None,
        };
        let deployment = self.consumer_deployment(&subscription, DeployAction::Deploy);
        match self
            .store
            .create_subscription(&subscription, &deployment)
            .await
        {
            // The same request, sent again before the first answered, won the race.
            Err(StoreError::AlreadyExists(what)) => {
                return self
                    .subscription_made_by(&req)
                    .await?
                    .ok_or(PortalError::AlreadyExists(what));
            }
            done => done?,
        }
        self.write_consumer_deploy(&event, &subscription, &deployment, DeployAction::Deploy)
            .await?;
        Ok((subscription, deployment))
    }

    #[instrument(skip(self))]
    pub async fn unsubscribe(&self, id: &str) -> Result<Deployment, PortalError> {
        let subscription = self.subscription(id).await?;
        let event = self.event_type(&subscription.event_type).await?;
        let deployment = self.consumer_deployment(&subscription, DeployAction::Destroy);
        self.store.delete_subscription(id, &deployment).await?;
        self.write_consumer_deploy(&event, &subscription, &deployment, DeployAction::Destroy)
            .await?;
        Ok(deployment)
    }

    pub async fn list_event_types(
        &self,
        page: &PageRequest,
    ) -> Result<Page<EventTypeView>, PortalError> {
        let found = self.store.page_event_types(page).await?;
        let mut items = Vec::with_capacity(found.items.len());
        for event in found.items {
            items.push(self.view(event).await?);
        }
        Ok(Page {
            items,
            next: found.next,
        })
    }

    pub async fn get_event_type(&self, name: &EventTypeName) -> Result<EventTypeView, PortalError> {
        let event = self.event_type(name).await?;
        self.view(event).await
    }

    pub async fn get_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<EventVersion, PortalError> {
        self.store
            .get_version(name, version)
            .await?
            .ok_or_else(|| PortalError::NotFound(format!("version {version} of event type {name}")))
    }

    /// `GET /events/{event_type}/versions/{version}`: the version, and whether its route is live.
    pub async fn version_view(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<VersionView, PortalError> {
        let version = self.get_version(name, version).await?;
        let jobs = self.deployments.list_deployments(Some(name)).await?;
        let provisioning = provisioning_of(&jobs, &deploy::producer_key(name, version.version));
        Ok(VersionView {
            version,
            provisioning,
        })
    }

    /// A page of subscriptions, each with whether its rule is live (one read of the jobs per
    /// event type on the page).
    pub async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        page: &PageRequest,
    ) -> Result<Page<SubscriptionView>, PortalError> {
        let found = self.store.page_subscriptions(filter, page).await?;
        let mut jobs: std::collections::HashMap<EventTypeName, Vec<Deployment>> =
            std::collections::HashMap::new();
        let mut items = Vec::with_capacity(found.items.len());
        for subscription in found.items {
            if !jobs.contains_key(&subscription.event_type) {
                let of_type = self
                    .deployments
                    .list_deployments(Some(&subscription.event_type))
                    .await?;
                jobs.insert(subscription.event_type.clone(), of_type);
            }
            let provisioning = provisioning_of(
                &jobs[&subscription.event_type],
                &deploy::consumer_key(&subscription),
            );
            items.push(SubscriptionView {
                subscription,
                provisioning,
            });
        }
        Ok(Page {
            items,
            next: found.next,
        })
    }

    /// `GET /subscriptions/{id}`: an active subscription, and whether its rule is live.
    pub async fn subscription_view(&self, id: &str) -> Result<SubscriptionView, PortalError> {
        let subscription = self.subscription(id).await?;
        let jobs = self
            .deployments
            .list_deployments(Some(&subscription.event_type))
            .await?;
        let provisioning = provisioning_of(&jobs, &deploy::consumer_key(&subscription));
        Ok(SubscriptionView {
            subscription,
            provisioning,
        })
    }

    pub async fn subscription(&self, id: &str) -> Result<Subscription, PortalError> {
        self.store
            .get_subscription(id)
            .await?
            .filter(|s| s.state == SubscriptionState::Active)
            .ok_or_else(|| PortalError::NotFound(format!("subscription {id}")))
    }

    /// The delivery counts and last error of a subscription read with `subscription`; `None` on
    /// a host that keeps none.
    pub async fn delivery_stats(
        &self,
        subscription: &Subscription,
    ) -> Result<Option<DeliveryStats>, PortalError> {
        match &self.deliveries {
            Some(d) => Ok(Some(d.stats(&subscription.id).await?)),
            None => Ok(None),
        }
    }

    pub async fn dead_letters(
        &self,
        id: &str,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, PortalError> {
        self.existing_subscription(id).await?;
        Ok(self.deliveries(id)?.dead_letters(id, page).await?)
    }

    pub async fn redrive(&self, id: &str) -> Result<usize, PortalError> {
        self.subscription(id).await?;
        Ok(self.deliveries(id)?.redrive(id).await?)
    }

    /// Whether the subscription's deliveries run; `None` on a bus that cannot pause them, or
    /// before its deployment made anything on the bus.
    pub async fn run_state(
        &self,
        subscription: &Subscription,
    ) -> Result<Option<RunState>, PortalError> {
        match &self.control {
            Some(c) => Ok(c.state(&subscription.id).await?),
            None => Ok(None),
        }
    }

    /// `POST /subscriptions/{id}/pause`; `Conflict` when it is paused already.
    pub async fn pause_subscription(&self, id: &str) -> Result<RunState, PortalError> {
        self.subscription(id).await?;
        self.control()?.pause(id).await?;
        Ok(RunState::Paused)
    }

    /// `POST /subscriptions/{id}/resume`; `Conflict` when it is running.
    pub async fn resume_subscription(&self, id: &str) -> Result<RunState, PortalError> {
        self.subscription(id).await?;
        self.control()?.resume(id).await?;
        Ok(RunState::Running)
    }

    /// `POST /subscriptions/{id}/replay` with `{"start_time": "<RFC 3339>"}`: not in the future,
    /// and within what the bus keeps (the adapter says). Where a replay needs a new subscriber,
    /// the start is recorded on the subscription with the job that deploys its consumer stack
    /// again, which is returned.
    pub async fn replay_subscription(
        &self,
        id: &str,
        body: &Value,
    ) -> Result<(time::OffsetDateTime, Option<Deployment>), PortalError> {
        let start = replay_start(body)?;
        let mut subscription = self.subscription(id).await?;
        match self.control()?.replay(id, start).await? {
            Replay::Started => Ok((start, None)),
            Replay::NewSubscriber => {
                // The subscriber's name carries whole seconds.
                let start = start.replace_nanosecond(0).unwrap_or(start);
                let event = self.event_type(&subscription.event_type).await?;
                let deployment = self.consumer_deployment(&subscription, DeployAction::Deploy);
                self.store
                    .replay_subscription(id, start, &deployment)
                    .await?;
                subscription.replay_from = Some(start);
                self.write_consumer_deploy(
                    &event,
                    &subscription,
                    &deployment,
                    DeployAction::Deploy,
                )
                .await?;
                Ok((start, Some(deployment)))
            }
        }
    }

    fn control(&self) -> Result<&dyn SubscriberControl, PortalError> {
        self.control.as_deref().ok_or_else(|| {
            PortalError::NotAvailable(
                "this bus cannot pause or replay a subscription: the Custom Event Bus - Classic has no per-rule cursor".into(),
            )
        })
    }

    fn deliveries(&self, id: &str) -> Result<&dyn Deliveries, PortalError> {
        self.deliveries.as_deref().ok_or_else(|| {
            PortalError::NotAvailable(format!(
                "this host keeps no dead letters: on AWS they are in the dead-letter queue of rule busway-{id}"
            ))
        })
    }

    /// The secret an HTTPS subscription's deliveries are signed with, made if it has none yet
    /// (so a subscribe retried after a timeout, or after this step failed, gets it); `None` for
    /// the other connection types.
    pub async fn issue_secret(&self, s: &Subscription) -> Result<Option<String>, PortalError> {
        if s.connection_type != ConsumerConnection::Https {
            return Ok(None);
        }
        for _ in 0..SECRET_WRITES {
            let secrets = self.secrets.signing_secrets(&s.id).await?;
            if let Some(current) = secrets.iter().find(|x| x.is_valid_at(crate::now())) {
                return Ok(Some(current.secret.clone()));
            }
            let secret = crate::webhook::SigningSecret::generate()?;
            match self
                .secrets
                .put_signing_secrets(&s.id, &secrets, std::slice::from_ref(&secret))
                .await
            {
                // Another request made one first (a retried subscribe): that one is read next.
                Err(StoreError::Conflict(_)) => continue,
                written => written?,
            }
            return Ok(Some(secret.secret));
        }
        Err(secrets_changing(&s.id))
    }

    /// A new secret for an HTTPS subscription; the previous one signs beside it for
    /// `webhook::ROTATION_OVERLAP`.
    #[instrument(skip(self))]
    pub async fn rotate_secret(&self, id: &str) -> Result<String, PortalError> {
        let s = self.subscription(id).await?;
        if s.connection_type != ConsumerConnection::Https {
            return Err(PortalError::Conflict(format!(
                "subscription {id} is not HTTPS: only HTTPS deliveries are signed"
            )));
        }
        for _ in 0..SECRET_WRITES {
            let read = self.secrets.signing_secrets(id).await?;
            let secrets = crate::webhook::rotated(read.clone(), crate::webhook::ROTATION_OVERLAP)?;
            match self.secrets.put_signing_secrets(id, &read, &secrets).await {
                // A rotation at the same moment: rotating after it keeps its secret signing
                // through the overlap, as the caller who got it expects.
                Err(StoreError::Conflict(_)) => continue,
                written => written?,
            }
            return Ok(secrets[0].secret.clone());
        }
        Err(secrets_changing(id))
    }

    /// Deleted subscriptions keep their dead letters readable.
    pub async fn existing_subscription(&self, id: &str) -> Result<Subscription, PortalError> {
        self.store
            .get_subscription(id)
            .await?
            .ok_or_else(|| PortalError::NotFound(format!("subscription {id}")))
    }

    /// `POST /deployments/{id}/retry`: runs a FAILED deployment again on the same document
    /// version, as its next attempt. A deployment whose document was never written (a step
    /// after the domain commit failed) runs those steps again; one whose document was written is
    /// provisioned again while that version is still the document's current one. A job whose
    /// steps were cut off (`Deployment::steps_cut_off`) runs them again in the same attempt.
    /// `Conflict` for a deployment that is neither, not the newest of its document, or whose
    /// document has changed since (the change has its own deployment).
    #[instrument(skip(self))]
    pub async fn retry_deployment(&self, id: &str) -> Result<Deployment, PortalError> {
        let mut d = self.deployment(id).await?;
        let (bucket, event_type) = match (Bucket::from_base_name(&d.bucket), &d.event_type) {
            (Some(bucket), Some(event_type)) => (bucket, event_type.clone()),
            _ => {
                return Err(PortalError::Conflict(format!(
                    "deployment {id} names no document of this platform"
                )));
            }
        };
        let newest = self.first_deployment(&event_type, &d.key).await?;
        if newest.id != d.id {
            return Err(PortalError::Conflict(format!(
                "deployment {} of {} is newer than {id}",
                newest.id, d.key
            )));
        }
        if let Some(version) = &d.object_version {
            let current = self
                .objects
                .get_object_version(bucket, &d.key, None)
                .await?;
            if current.is_none_or(|c| c.version != *version) {
                return Err(PortalError::Conflict(format!(
                    "{} changed since version {version} failed; the change is deployed on its own",
                    d.key
                )));
            }
        }
        let written = d.object_version.is_some();
        let read = d.clone();
        let now = crate::now();
        if d.steps_cut_off(now) {
            // The same attempt: nothing of it ran. The history shows the retry, and its write,
            // conditional on the record as read, lets one of two retries run the steps.
            d.history.push(StatusChange {
                status: DeploymentStatus::Pending,
                at: now,
            });
        } else if d.status == DeploymentStatus::Pending {
            return Err(PortalError::Conflict(format!(
                "deployment {id} is PENDING: it can be retried once FAILED, or once its steps \
                 have waited {} minutes for a starter",
                STEPS_LEASE.whole_minutes()
            )));
        } else {
            d.retry(now)
                .map_err(|e| PortalError::Conflict(e.to_string()))?;
        }
        // Two retries at once run one attempt: the later write finds the record moved.
        self.deployments.replace_deployment(&d, &read).await?;
        if written {
            let started = self.provisioning.start(bucket, &d.key).await;
            self.step_done(&d, started.context("starting provisioning"))
                .await?;
        } else {
            self.resume(&d).await?;
        }
        self.deployment(id).await
    }

    /// The steps of a job whose document was never written, from the records the domain
    /// committed with it.
    async fn resume(&self, d: &Deployment) -> Result<(), PortalError> {
        let (Some(event_type), Some(version), Some(action)) = (&d.event_type, d.version, d.action)
        else {
            return Err(PortalError::Conflict(format!(
                "deployment {} names no event version",
                d.id
            )));
        };
        let event = self.event_type(event_type).await?;
        match &d.subscription_id {
            None => {
                let record = self.get_version(event_type, version).await?;
                match action {
                    DeployAction::Deploy => self.publish_version(&event, &record, d).await,
                    DeployAction::Destroy => {
                        self.write_producer_deploy(&event, &record, d, action).await
                    }
                }
            }
            Some(id) => {
                let s = self.existing_subscription(id).await?;
                self.write_consumer_deploy(&event, &s, d, action).await
            }
        }
    }

    /// The newest deployment of the document at `key` (the one its creation made, until a later
    /// change made another).
    async fn first_deployment(
        &self,
        event_type: &EventTypeName,
        key: &str,
    ) -> Result<Deployment, PortalError> {
        self.deployments
            .list_deployments(Some(event_type))
            .await?
            .into_iter()
            .find(|d| d.key == key)
            .ok_or_else(|| PortalError::NotFound(format!("a deployment of {key}")))
    }

    /// A subscribe retried after a timeout is answered with what it made: the active
    /// subscription of this very body, with its deployment.
    async fn subscription_made_by(
        &self,
        req: &Subscribe,
    ) -> Result<Option<(Subscription, Deployment)>, PortalError> {
        let Some(existing) = self.same_subscription(req).await? else {
            return Ok(None);
        };
        let deployment = self
            .first_deployment(&req.event_type, &deploy::consumer_key(&existing))
            .await?;
        Ok(Some((existing, deployment)))
    }

    /// An active subscription that a request with this body made.
    async fn same_subscription(
        &self,
        req: &Subscribe,
    ) -> Result<Option<Subscription>, PortalError> {
        let filter = SubscriptionFilter {
            event_type: Some(req.event_type.clone()),
            version: Some(req.version),
            target_unit: Some(req.target_unit.clone()),
        };
        Ok(self
            .store
            .list_subscriptions(&filter)
            .await?
            .into_iter()
            .find(|s| {
                s.state == SubscriptionState::Active
                    && s.team == req.team
                    && s.connection_type == req.connection_type
                    && s.connection_string == req.connection_string
                    && s.retry_policy == req.retry_policy
            }))
    }

    pub async fn deployment(&self, id: &str) -> Result<Deployment, PortalError> {
        self.deployments
            .get_deployment(id)
            .await?
            .ok_or_else(|| PortalError::NotFound(format!("deployment {id}")))
    }

    pub async fn list_deployments(
        &self,
        event_type: Option<&EventTypeName>,
        page: &PageRequest,
    ) -> Result<Page<Deployment>, PortalError> {
        Ok(self.deployments.page_deployments(event_type, page).await?)
    }

    async fn event_type(&self, name: &EventTypeName) -> Result<EventType, PortalError> {
        self.store
            .get_event_type(name)
            .await?
            .ok_or_else(|| PortalError::NotFound(format!("event type {name}")))
    }

    async fn active_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<EventVersion, PortalError> {
        self.store
            .get_version(name, version)
            .await?
            .filter(EventVersion::is_active)
            .ok_or_else(|| PortalError::NotFound(format!("version {version} of event type {name}")))
    }

    async fn view(&self, event: EventType) -> Result<EventTypeView, PortalError> {
        let jobs = self
            .deployments
            .list_deployments(Some(&event.event_type))
            .await?;
        let versions = self
            .store
            .list_versions(&event.event_type)
            .await?
            .into_iter()
            .map(|v| VersionSummary {
                provisioning: provisioning_of(
                    &jobs,
                    &deploy::producer_key(&event.event_type, v.version),
                ),
                version: v.version,
                description: v.description,
                state: v.state,
                created_at: v.created_at,
            })
            .collect();
        Ok(EventTypeView { event, versions })
    }

    fn version_record(
        &self,
        event_type: &EventTypeName,
        version: Version,
        description: String,
        data: &Value,
    ) -> EventVersion {
        EventVersion {
            event_type: event_type.clone(),
            version,
            description,
            schema: schema::envelope(event_type, version, data),
            state: VersionState::Active,
            created_at: crate::now(),
        }
    }

    /// After the store committed the version (so a request that lost a race writes nothing):
    /// registry, schema backup, then the deploy.json that starts provisioning.
    async fn publish_version(
        &self,
        event: &EventType,
        version: &EventVersion,
        deployment: &Deployment,
    ) -> Result<(), PortalError> {
        let schema = with_retries(|| async {
            self.registry
                .put_schema(&version.event_type, version.version, &version.schema)
                .await?;
            let body = serde_json::to_vec_pretty(&version.schema)?;
            self.objects
                .put_object(
                    Bucket::SchemaBackup,
                    &schema_backup_key(&version.event_type, version.version),
                    body,
                )
                .await
        })
        .await;
        if !self
            .step_done(deployment, schema.context("publishing the schema"))
            .await?
        {
            return Ok(());
        }
        self.write_producer_deploy(event, version, deployment, DeployAction::Deploy)
            .await
    }

    fn producer_deployment(
        &self,
        event_type: &EventTypeName,
        version: Version,
        action: DeployAction,
    ) -> Deployment {
        let mut d = Deployment::pending(
            deployment::new_id(),
            DeployKind::Producer,
            Bucket::Publisher.base_name().into(),
            deploy::producer_key(event_type, version),
            crate::now(),
        );
        d.action = Some(action);
        d.event_type = Some(event_type.clone());
        d.version = Some(version);
        d
    }

    fn consumer_deployment(&self, s: &Subscription, action: DeployAction) -> Deployment {
        let mut d = Deployment::pending(
            deployment::new_id(),
            DeployKind::Consumer,
            Bucket::Subscriber.base_name().into(),
            deploy::consumer_key(s),
            crate::now(),
        );
        d.action = Some(action);
        d.event_type = Some(s.event_type.clone());
        d.version = Some(s.version);
        d.subscription_id = Some(s.id.clone());
        d
    }

    async fn write_producer_deploy(
        &self,
        event: &EventType,
        version: &EventVersion,
        deployment: &Deployment,
        action: DeployAction,
    ) -> Result<(), PortalError> {
        let doc = DeployDoc::Producer(ProducerDeploy {
            format_version: DEPLOY_FORMAT,
            kind: DeployKind::Producer,
            action,
            deployment_id: deployment.id.clone(),
            application: event.application.clone(),
            event_type: version.event_type.clone(),
            version: version.version,
            description: version.description.clone(),
            connection_type: event.connection_type,
            source: source_of(&event.application),
            detail_type: detail_type(&version.event_type, version.version),
            stack_name: deploy::producer_stack_name(&version.event_type, version.version),
            schema: version.schema.clone(),
        });
        self.write_deploy(Bucket::Publisher, deployment, doc).await
    }

    async fn write_consumer_deploy(
        &self,
        event: &EventType,
        s: &Subscription,
        deployment: &Deployment,
        action: DeployAction,
    ) -> Result<(), PortalError> {
        let doc = DeployDoc::Consumer(deploy::consumer_deploy(
            action,
            &deployment.id,
            &event.application,
            s,
            self.bus_kind,
        ));
        self.write_deploy(Bucket::Subscriber, deployment, doc).await
    }

    /// The deploy.json write starts provisioning.
    async fn write_deploy(
        &self,
        bucket: Bucket,
        deployment: &Deployment,
        doc: DeployDoc,
    ) -> Result<(), PortalError> {
        let body = doc.to_json();
        let written = with_retries(|| {
            self.objects
                .put_object(bucket, &deployment.key, body.clone())
        })
        .await;
        self.step_done(deployment, written.context("writing deploy.json"))
            .await
            .map(drop)
    }

    /// Whether a step of the job after the domain commit succeeded. One that still failed after
    /// its retries ends the job: the deployment is FAILED with the reason, so its record never
    /// claims that work is under way, and `retry_deployment` runs the steps again. The domain
    /// change stands and the request that made it succeeds; only a deployment that cannot be
    /// marked FAILED is an error. The write is conditional on the job as the portal left it: a
    /// deploy.json write that reported a failure but landed (a timeout after S3 stored it) has
    /// been taken up by its starter, whose execution owns the record from then on.
    async fn step_done(
        &self,
        deployment: &Deployment,
        result: anyhow::Result<()>,
    ) -> Result<bool, PortalError> {
        let Err(e) = result else { return Ok(true) };
        let cause = format!("{e:#}");
        tracing::error!(deployment = %deployment.id, %cause, "a provisioning step failed");
        let mut failed = deployment.clone();
        if failed
            .fail(crate::tasks::STORE_UNAVAILABLE, cause, crate::now())
            .is_ok()
        {
            match self
                .deployments
                .replace_deployment(&failed, deployment)
                .await
            {
                Err(StoreError::Conflict(why)) => {
                    tracing::info!(deployment = %deployment.id, %why, "the job was taken up; its execution records how it ends");
                }
                done => done?,
            }
        }
        Ok(false)
    }
}

/// What the jobs of the document at `key` made of it; `jobs` are an event type's, newest first.
fn provisioning_of(jobs: &[Deployment], key: &str) -> Option<Provisioning> {
    let of_key: Vec<&Deployment> = jobs.iter().filter(|d| d.key == key).collect();
    Provisioning::of(&of_key)
}

/// Runs an idempotent step until it succeeds or has failed `STEP_ATTEMPTS` times.
async fn with_retries<F, Fut>(mut step: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut pause = STEP_BACKOFF;
    let mut attempt = 1;
    loop {
        match step().await {
            Err(e) if attempt < STEP_ATTEMPTS => {
                tracing::warn!(attempt, error = %format!("{e:#}"), "a provisioning step failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Writes of a subscription's signing secrets tried before giving up on writers racing it.
const SECRET_WRITES: usize = 5;

fn secrets_changing(id: &str) -> PortalError {
    PortalError::Conflict(format!(
        "the signing secrets of subscription {id} kept changing while this request wrote them; retry"
    ))
}
