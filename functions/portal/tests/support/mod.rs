//! In-memory fakes of the portal's ports, keeping each port's documented error contract, so the
//! router can be driven without SQLite, folders or AWS.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use busway_core::audit::{AuditEntry, AuditFilter, AuditLog};
use busway_core::auth::{ApiKey, Caller, KeyStore, Role};
use busway_core::deployment::Deployment;
use busway_core::event::{EventType, EventVersion, VersionState};
use busway_core::idempotency::{self, IdempotencyStore};
use busway_core::page::{Page, PageRequest};
use busway_core::portal::Portal;
use busway_core::ports::{
    Bucket, ControlError, DeadLetter, Deliveries, DeliveryStats, DeploymentStore, EventStore,
    ObjectStore, ProvisioningStarter, SchemaRegistry, StoreError,
};
use busway_core::subscription::{Subscription, SubscriptionFilter, SubscriptionState};
use busway_core::targets::{TeamTargetStore, TeamTargets};
use busway_core::webhook::{SigningSecret, SigningSecrets};
use busway_core::{EventTypeName, Team, Version};
use serde_json::Value;
use tower::ServiceExt;

#[derive(Default)]
struct State {
    event_types: BTreeMap<EventTypeName, EventType>,
    versions: BTreeMap<(EventTypeName, Version), EventVersion>,
    subscriptions: Vec<Subscription>,
    /// In the order they were first put.
    deployments: Vec<Deployment>,
    schemas: BTreeMap<(EventTypeName, Version), Value>,
    objects: HashMap<(Bucket, String), Vec<u8>>,
    /// What provisioning was asked to start again, in order.
    started: Vec<(Bucket, String)>,
    /// API keys by hash.
    keys: Vec<(String, ApiKey)>,
    signing_secrets: HashMap<String, Vec<SigningSecret>>,
    idempotency: HashMap<String, idempotency::Record>,
    /// Oldest first.
    audit: Vec<AuditEntry>,
    targets: HashMap<Team, TeamTargets>,
}

/// Every port in one place: one lock makes each multi-record write all-or-nothing, as the
/// `EventStore` contract asks.
#[derive(Default)]
pub struct Memory {
    state: Mutex<State>,
}

impl Memory {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its data is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An object as the portal wrote it, for assertions.
    pub fn object(&self, bucket: Bucket, key: &str) -> Option<Vec<u8>> {
        self.state()
            .objects
            .get(&(bucket, key.to_string()))
            .cloned()
    }

    /// Takes an object away, as though its write never happened.
    pub fn forget_object(&self, bucket: Bucket, key: &str) {
        self.state().objects.remove(&(bucket, key.to_string()));
    }

    /// The documents provisioning was asked to start again (retried deployments).
    pub fn started(&self) -> Vec<(Bucket, String)> {
        self.state().started.clone()
    }

    pub fn object_keys(&self) -> Vec<(Bucket, String)> {
        let mut keys: Vec<_> = self.state().objects.keys().cloned().collect();
        keys.sort_by(|a, b| (a.0.base_name(), &a.1).cmp(&(b.0.base_name(), &b.1)));
        keys
    }

    fn record(state: &mut State, deployment: &Deployment) {
        match state.deployments.iter_mut().find(|d| d.id == deployment.id) {
            Some(existing) => *existing = deployment.clone(),
            None => state.deployments.push(deployment.clone()),
        }
    }
}

/// A portal whose ports are one fresh `Memory`.
pub fn portal() -> (Arc<Portal>, Arc<Memory>) {
    let memory = Arc::new(Memory::default());
    let portal = Portal {
        store: memory.clone(),
        deployments: memory.clone(),
        registry: memory.clone(),
        objects: memory.clone(),
        deliveries: Some(memory.clone()),
        control: None,
        provisioning: memory.clone(),
        keys: memory.clone(),
        bus_kind: None,
        idempotency: memory.clone(),
        audit: memory.clone(),
        targets: memory.clone(),
        secrets: memory.clone(),
        allow_loopback_targets: false,
    };
    (Arc::new(portal), memory)
}

#[async_trait]
impl EventStore for Memory {
    async fn create_event_type(
        &self,
        event: &EventType,
        first: &EventVersion,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.event_types.contains_key(&event.event_type) {
            return Err(StoreError::AlreadyExists(format!(
                "event type {}",
                event.event_type
            )));
        }
        state
            .event_types
            .insert(event.event_type.clone(), event.clone());
        state
            .versions
            .insert((first.event_type.clone(), first.version), first.clone());
        Self::record(&mut state, deployment);
        Ok(())
    }

    async fn add_version(
        &self,
        version: &EventVersion,
        expected_latest: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let event = state
            .event_types
            .get_mut(&version.event_type)
            .ok_or_else(|| StoreError::NotFound(format!("event type {}", version.event_type)))?;
        if event.latest_version != expected_latest || version.version != expected_latest.next() {
            return Err(StoreError::Conflict(format!(
                "version {} of {} was added by another request",
                version.version, version.event_type
            )));
        }
        event.latest_version = version.version;
        state.versions.insert(
            (version.event_type.clone(), version.version),
            version.clone(),
        );
        Self::record(&mut state, deployment);
        Ok(())
    }

    async fn delete_version(
        &self,
        event_type: &EventTypeName,
        version: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let subscribed = state.subscriptions.iter().any(|s| {
            s.state == SubscriptionState::Active
                && s.event_type == *event_type
                && s.version == version
        });
        let record = state
            .versions
            .get_mut(&(event_type.clone(), version))
            .filter(|v| v.is_active())
            .ok_or_else(|| StoreError::NotFound(format!("version {version} of {event_type}")))?;
        if subscribed {
            return Err(StoreError::Conflict(format!(
                "version {version} of {event_type} has active subscriptions"
            )));
        }
        record.state = VersionState::Deleted;
        Self::record(&mut state, deployment);
        Ok(())
    }

    async fn get_event_type(&self, name: &EventTypeName) -> Result<Option<EventType>, StoreError> {
        Ok(self.state().event_types.get(name).cloned())
    }

    async fn list_event_types(&self) -> Result<Vec<EventType>, StoreError> {
        Ok(self.state().event_types.values().cloned().collect())
    }

    async fn page_event_types(&self, page: &PageRequest) -> Result<Page<EventType>, StoreError> {
        let all = self.list_event_types().await?;
        Ok(page_in_memory(all, page))
    }

    async fn list_versions(&self, name: &EventTypeName) -> Result<Vec<EventVersion>, StoreError> {
        Ok(self
            .state()
            .versions
            .values()
            .filter(|v| v.event_type == *name)
            .cloned()
            .collect())
    }

    async fn get_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<Option<EventVersion>, StoreError> {
        Ok(self.state().versions.get(&(name.clone(), version)).cloned())
    }

    async fn create_subscription(
        &self,
        subscription: &Subscription,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let active = state
            .versions
            .get(&(subscription.event_type.clone(), subscription.version))
            .is_some_and(EventVersion::is_active);
        if !active {
            return Err(StoreError::NotFound(format!(
                "version {} of {}",
                subscription.version, subscription.event_type
            )));
        }
        if state
            .subscriptions
            .iter()
            .any(|s| s.state == SubscriptionState::Active && s.same_target(subscription))
        {
            return Err(StoreError::AlreadyExists(
                "a subscription to the same target".into(),
            ));
        }
        state.subscriptions.push(subscription.clone());
        Self::record(&mut state, deployment);
        Ok(())
    }

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self
            .state()
            .subscriptions
            .iter()
            .find(|s| s.id == id)
            .cloned())
    }

    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
    ) -> Result<Vec<Subscription>, StoreError> {
        Ok(self
            .state()
            .subscriptions
            .iter()
            .filter(|s| s.state == SubscriptionState::Active && filter.accepts(s))
            .cloned()
            .collect())
    }

    async fn page_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, StoreError> {
        let all = self.list_subscriptions(filter).await?;
        Ok(page_in_memory(all, page))
    }

    async fn replay_subscription(
        &self,
        id: &str,
        from: busway_core::Timestamp,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let subscription = state
            .subscriptions
            .iter_mut()
            .find(|s| s.id == id && s.state == SubscriptionState::Active)
            .ok_or_else(|| StoreError::NotFound(format!("subscription {id}")))?;
        subscription.replay_from = Some(from);
        Self::record(&mut state, deployment);
        Ok(())
    }

    async fn delete_subscription(
        &self,
        id: &str,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let subscription = state
            .subscriptions
            .iter_mut()
            .find(|s| s.id == id && s.state == SubscriptionState::Active)
            .ok_or_else(|| StoreError::NotFound(format!("subscription {id}")))?;
        subscription.state = SubscriptionState::Deleted;
        Self::record(&mut state, deployment);
        Ok(())
    }
}

#[async_trait]
impl DeploymentStore for Memory {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        Self::record(&mut self.state(), deployment);
        Ok(())
    }

    async fn replace_deployment(
        &self,
        deployment: &Deployment,
        read: &Deployment,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let unchanged = state.deployments.iter().any(|d| {
            d.id == read.id
                && d.status == read.status
                && d.execution == read.execution
                && d.history.len() == read.history.len()
        });
        if !unchanged {
            return Err(StoreError::Conflict(format!(
                "deployment {} changed since it was read",
                deployment.id
            )));
        }
        Self::record(&mut state, deployment);
        Ok(())
    }

    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        Ok(self
            .state()
            .deployments
            .iter()
            .find(|d| d.id == id)
            .cloned())
    }

    async fn list_deployments(
        &self,
        event_type: Option<&EventTypeName>,
    ) -> Result<Vec<Deployment>, StoreError> {
        Ok(self
            .state()
            .deployments
            .iter()
            .rev()
            .filter(|d| event_type.is_none_or(|e| d.event_type.as_ref() == Some(e)))
            .cloned()
            .collect())
    }

    async fn page_deployments(
        &self,
        event_type: Option<&EventTypeName>,
        page: &PageRequest,
    ) -> Result<Page<Deployment>, StoreError> {
        let all = self.list_deployments(event_type).await?;
        Ok(page_in_memory(all, page))
    }
}

/// A page of `all` by index: the position is the index of the next item.
fn page_in_memory<T>(all: Vec<T>, page: &PageRequest) -> Page<T> {
    let from: usize = page
        .after
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let to = from.saturating_add(page.limit).min(all.len());
    let next = (to < all.len()).then(|| to.to_string());
    Page {
        items: all
            .into_iter()
            .skip(from)
            .take(to.saturating_sub(from))
            .collect(),
        next,
    }
}

#[async_trait]
impl SchemaRegistry for Memory {
    async fn put_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
        schema: &Value,
    ) -> anyhow::Result<()> {
        self.state()
            .schemas
            .insert((event_type.clone(), version), schema.clone());
        Ok(())
    }

    async fn get_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
    ) -> anyhow::Result<Option<Value>> {
        Ok(self
            .state()
            .schemas
            .get(&(event_type.clone(), version))
            .cloned())
    }

    async fn list_schema_versions(
        &self,
        event_type: &EventTypeName,
    ) -> anyhow::Result<Vec<Version>> {
        Ok(self
            .state()
            .schemas
            .keys()
            .filter(|(name, _)| name == event_type)
            .map(|(_, version)| *version)
            .collect())
    }
}

#[async_trait]
impl ObjectStore for Memory {
    async fn put_object(&self, bucket: Bucket, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        self.state().objects.insert((bucket, key.to_string()), body);
        Ok(())
    }

    async fn get_object(&self, bucket: Bucket, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.object(bucket, key))
    }

    // Only the bus writes claim checks; the portal never does.
    async fn put_new_object(
        &self,
        _bucket: Bucket,
        key: &str,
        _body: Vec<u8>,
        _metadata: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        anyhow::bail!("the portal wrote a claim check at {key}")
    }

    async fn object_metadata(
        &self,
        _bucket: Bucket,
        key: &str,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        anyhow::bail!("the portal read a claim check's metadata at {key}")
    }
}

#[async_trait]
impl ProvisioningStarter for Memory {
    async fn start(&self, bucket: Bucket, key: &str) -> anyhow::Result<()> {
        self.state().started.push((bucket, key.to_string()));
        Ok(())
    }
}

/// Nothing is routed in these tests: no deliveries, no dead letters.
#[async_trait]
impl Deliveries for Memory {
    async fn stats(&self, _subscription_id: &str) -> anyhow::Result<DeliveryStats> {
        Ok(DeliveryStats::default())
    }

    async fn dead_letters(
        &self,
        _subscription_id: &str,
        _page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StoreError> {
        Ok(Page {
            items: Vec::new(),
            next: None,
        })
    }

    async fn redrive(&self, _subscription_id: &str) -> Result<usize, ControlError> {
        Ok(0)
    }
}

/// One request through the portal router, as a client sees it: the status and the JSON body
/// (null when there is none).
/// The caller of `call`: a platform admin, whom every route lets through.
pub fn admin() -> Caller {
    Caller {
        key_id: "key_admin".into(),
        team: "platform".parse().expect("a team"),
        role: Role::PlatformAdmin,
        application: None,
    }
}

pub async fn call(
    portal: &Arc<Portal>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a valid request");
    request.extensions_mut().insert(admin());
    let response = busway_portal::router(portal.clone())
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[async_trait]
impl TeamTargetStore for Memory {
    async fn team_targets(&self, team: &Team) -> Result<Option<TeamTargets>, StoreError> {
        Ok(self.state().targets.get(team).cloned())
    }

    async fn put_team_targets(&self, targets: &TeamTargets) -> Result<(), StoreError> {
        self.state()
            .targets
            .insert(targets.team.clone(), targets.clone());
        Ok(())
    }
}

#[async_trait]
impl AuditLog for Memory {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.state().audit.push(entry.clone());
        Ok(())
    }

    /// Positions are indexes from the newest entry.
    async fn page_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let skip = page
            .after
            .as_deref()
            .map(|a| a.parse::<usize>())
            .transpose()
            .map_err(|_| StoreError::BadPosition("not a position of this list".into()))?
            .unwrap_or(0);
        let state = self.state();
        let newest_first: Vec<&AuditEntry> = state.audit.iter().rev().collect();
        let mut items = Vec::new();
        let mut at = skip;
        while let Some(entry) = newest_first.get(at) {
            at += 1;
            if filter.accepts(entry) {
                items.push((*entry).clone());
                if items.len() == page.limit {
                    break;
                }
            }
        }
        let next = (at < newest_first.len()).then(|| at.to_string());
        Ok(Page { items, next })
    }
}

#[async_trait]
impl KeyStore for Memory {
    async fn put_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.keys.iter().any(|(h, k)| h == hash || k.id == key.id) {
            return Err(StoreError::AlreadyExists(format!("key {}", key.id)));
        }
        state.keys.push((hash.to_string(), key.clone()));
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let state = self.state();
        Ok(state
            .keys
            .iter()
            .find(|(h, _)| h == hash)
            .map(|(_, k)| k.clone()))
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let state = self.state();
        Ok(state
            .keys
            .iter()
            .find(|(_, k)| k.id == id)
            .map(|(_, k)| k.clone()))
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        Ok(self.state().keys.iter().map(|(_, k)| k.clone()).collect())
    }

    async fn update_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let mut state = self.state();
        let stored = state
            .keys
            .iter_mut()
            .find(|(_, k)| k.id == key.id)
            .ok_or_else(|| StoreError::NotFound(format!("key {}", key.id)))?;
        stored.1 = key.clone();
        Ok(())
    }
}

#[async_trait]
impl SigningSecrets for Memory {
    async fn signing_secrets(&self, id: &str) -> Result<Vec<SigningSecret>, StoreError> {
        Ok(self
            .state()
            .signing_secrets
            .get(id)
            .cloned()
            .unwrap_or_default())
    }

    async fn put_signing_secrets(
        &self,
        id: &str,
        read: &[SigningSecret],
        secrets: &[SigningSecret],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.signing_secrets.get(id).map_or(&[][..], Vec::as_slice) != read {
            return Err(StoreError::Conflict(format!("the secrets of {id} changed")));
        }
        state
            .signing_secrets
            .insert(id.to_string(), secrets.to_vec());
        Ok(())
    }
}

#[async_trait]
impl IdempotencyStore for Memory {
    async fn claim(
        &self,
        claim: &idempotency::Record,
        now: i64,
    ) -> Result<Option<idempotency::Record>, StoreError> {
        let mut state = self.state();
        match state.idempotency.get(&claim.key) {
            Some(found) if found.expires_at >= now => Ok(Some(found.clone())),
            _ => {
                state.idempotency.insert(claim.key.clone(), claim.clone());
                Ok(None)
            }
        }
    }

    async fn complete(&self, done: &idempotency::Record) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(found) = state.idempotency.get_mut(&done.key)
            && found.token == done.token
        {
            *found = done.clone();
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.idempotency.get(key).is_some_and(|r| r.token == token) {
            state.idempotency.remove(key);
        }
        Ok(())
    }
}
