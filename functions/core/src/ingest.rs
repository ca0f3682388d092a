//! The broker's ingest: validate a producer's envelope against its version's schema, enrich it,
//! put it on the bus.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::envelope::{BusEvent, enrich};
use crate::ports::{Accepted, Bus, EventCatalog, StoreError};
use crate::schema::{self, CompiledSchema};
use crate::{Application, EventTypeName, ValidationErrors, Version};

/// A deployed producer route with its compiled validator, built once per deployment.
pub struct Route {
    pub application: Application,
    /// Other applications whose producers may publish here (`EventType::writers`).
    pub writers: Vec<Application>,
    pub event_type: EventTypeName,
    pub version: Version,
    /// The enveloped schema `validator` was compiled from, for the broker's API documents.
    pub schema: Value,
    pub validator: CompiledSchema,
}

/// The routes that are live. Reads are lock-free in practice (uncontended `RwLock` read); writes
/// happen only when a deployment applies.
#[derive(Default)]
pub struct LiveRoutes {
    /// By event type, then version: a lookup borrows the caller's name instead of copying it.
    routes: RwLock<HashMap<EventTypeName, BTreeMap<Version, Arc<Route>>>>,
}

impl LiveRoutes {
    pub fn get(&self, event_type: &EventTypeName, version: Version) -> Option<Arc<Route>> {
        self.routes
            .read()
            .ok()?
            .get(event_type)?
            .get(&version)
            .cloned()
    }

    /// Compiles `schema` and makes the route live, replacing an older one.
    pub fn insert(
        &self,
        application: Application,
        writers: Vec<Application>,
        event_type: EventTypeName,
        version: Version,
        schema_doc: &Value,
    ) -> Result<(), String> {
        let validator = schema::compile(schema_doc)?;
        let route = Arc::new(Route {
            application,
            writers,
            event_type: event_type.clone(),
            version,
            schema: schema_doc.clone(),
            validator,
        });
        if let Ok(mut routes) = self.routes.write() {
            routes.entry(event_type).or_default().insert(version, route);
        }
        Ok(())
    }

    /// The route of `event_type` version `version`, learned from `store` on a miss when there is
    /// one. Locally a route is live once its deployment applied and there is no store here; on
    /// AWS, API Gateway and the SQS event source mappings only forward deployed routes, so a new
    /// Lambda container learns each route's application and schema from the event store on
    /// first use and keeps it for the container's life.
    pub async fn resolve(
        &self,
        store: Option<&dyn EventCatalog>,
        event_type: &EventTypeName,
        version: Version,
    ) -> anyhow::Result<Option<Arc<Route>>> {
        if let Some(route) = self.get(event_type, version) {
            return Ok(Some(route));
        }
        let Some(store) = store else { return Ok(None) };
        let Some(event) = store.get_event_type(event_type).await? else {
            return Ok(None);
        };
        let Some(stored) = store.get_version(event_type, version).await? else {
            return Ok(None);
        };
        if !stored.is_active() {
            return Ok(None);
        }
        self.insert(
            event.application,
            event.writers,
            event_type.clone(),
            version,
            &stored.schema,
        )
        .map_err(|e| {
            anyhow::anyhow!("the stored schema of {event_type} v{version} does not compile: {e}")
        })?;
        Ok(self.get(event_type, version))
    }

    /// Every live route, ordered by event type and version.
    pub fn all(&self) -> Vec<Arc<Route>> {
        let mut routes: Vec<_> = self
            .routes
            .read()
            .map(|routes| routes.values().flat_map(|v| v.values().cloned()).collect())
            .unwrap_or_default();
        routes.sort_by(|a, b| (&a.event_type, a.version).cmp(&(&b.event_type, b.version)));
        routes
    }

    pub fn remove(&self, event_type: &EventTypeName, version: Version) {
        if let Ok(mut routes) = self.routes.write()
            && let Some(versions) = routes.get_mut(event_type)
        {
            versions.remove(&version);
            if versions.is_empty() {
                routes.remove(event_type);
            }
        }
    }
}

/// The code of a throttled entry in a PutEvents answer, on EventBridge and on the local log.
pub const THROTTLED: &str = "ThrottlingException";

/// What a throttled producer is told to wait before it sends again.
pub const THROTTLED_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no deployed route for {0}")]
    RouteNotFound(String),
    /// The publishing application is not among the event type's writers.
    #[error("{0}")]
    NotWriter(String),
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("event does not match the schema: {0}")]
    Invalid(ValidationErrors),
    /// The event's metadata alone is above the bus entry limit, so not even a claim check fits.
    #[error("{0}")]
    TooLarge(String),
    #[error("the bus refused the event: {0}")]
    Rejected(String),
    /// The bus is throttling (EventBridge's `ThrottlingException`, or the local log's writer
    /// falling behind): the same request may succeed later.
    #[error("the bus is throttling: {0}")]
    Throttled(String),
    /// The store or the bus failed in a way that passes (a timeout, a 5xx, EventBridge's
    /// `InternalFailure`, a claim check that could not be written, a full disk): the same
    /// request may succeed later.
    #[error("the event cannot be taken now: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Per-entry failure codes of a bus that another try may not meet: EventBridge's retryable
/// `InternalFailure` (once the bus's own retries are spent), and a claim check not written.
const TRANSIENT_ENTRY_CODES: [&str; 2] = ["InternalFailure", crate::claim_check::NOT_WRITTEN];

/// A published event: its `event_id`, and whether the bus had accepted it already. Also the
/// broker's answer to the producer, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    pub event_id: String,
    pub duplicate: bool,
}

impl Route {
    pub fn is_writer(&self, application: &Application) -> bool {
        self.application == *application || self.writers.contains(application)
    }
}

/// Validates and publishes one producer request of `publisher`, the application of the
/// producer's key, which becomes the event's `Source`; `None` publishes as the event type's own
/// application (a platform admin). `request_id`, the request's id, becomes the event's
/// `metadata.request_id`. Path segments arrive raw: they are parsed here so that a malformed
/// path is simply an unknown route.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one input of a publish, named at the call"
)]
pub async fn publish(
    routes: &LiveRoutes,
    store: Option<&dyn EventCatalog>,
    bus: &dyn Bus,
    publisher: Option<&Application>,
    request_id: Option<&str>,
    event_type: &str,
    version: &str,
    body: &[u8],
) -> Result<Published, IngestError> {
    let not_found = || IngestError::RouteNotFound(format!("/{event_type}/{version}"));
    let name: EventTypeName = event_type.parse().map_err(|_| not_found())?;
    let version: Version = version.parse().map_err(|_| not_found())?;
    let route = routes
        .resolve(store, &name, version)
        .await
        .map_err(|e| match e.downcast_ref::<StoreError>() {
            Some(StoreError::Unavailable(why)) => IngestError::Unavailable(why.clone()),
            _ => IngestError::Unexpected(e),
        })?
        .ok_or_else(not_found)?;
    let publisher = publisher.unwrap_or(&route.application);
    if !route.is_writer(publisher) {
        return Err(IngestError::NotWriter(format!(
            "application {publisher} is not among the writers of {name}"
        )));
    }
    let mut event = prepare(&route, publisher, body)?;
    if let Some(id) = request_id {
        crate::envelope::set_request_id(&mut event.detail, id);
    }
    let event_id = event.event_id.clone();
    // The bus's own retries are spent, whatever failed: a producer's retry may still succeed.
    let mut results = bus
        .put_events(vec![event])
        .await
        .map_err(|e| IngestError::Unavailable(format!("{e:#}")))?;
    match results.pop() {
        Some(Ok(accepted)) => Ok(Published {
            event_id,
            duplicate: accepted == Accepted::Duplicate,
        }),
        Some(Err(failure)) if failure.code == THROTTLED => {
            Err(IngestError::Throttled(failure.to_string()))
        }
        Some(Err(failure)) if failure.code == crate::claim_check::ENTRY_TOO_LARGE => {
            Err(IngestError::TooLarge(failure.message))
        }
        Some(Err(failure)) if TRANSIENT_ENTRY_CODES.contains(&failure.code.as_str()) => {
            Err(IngestError::Unavailable(failure.to_string()))
        }
        Some(Err(failure)) => Err(IngestError::Rejected(failure.to_string())),
        None => Err(anyhow::anyhow!("the bus answered no result for the event").into()),
    }
}

/// Parses `body`, validates it against the route's schema and enriches it into a bus event of
/// `application`.
pub fn prepare(
    route: &Route,
    application: &Application,
    body: &[u8],
) -> Result<BusEvent, IngestError> {
    let envelope: Value =
        serde_json::from_slice(body).map_err(|e| IngestError::InvalidJson(e.to_string()))?;
    schema::validate(&route.validator, &envelope).map_err(IngestError::Invalid)?;
    Ok(enrich(
        envelope,
        application,
        &route.event_type,
        route.version,
        crate::now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(routes: &LiveRoutes) -> Vec<String> {
        routes
            .all()
            .iter()
            .map(|r| format!("{}.{}", r.event_type, r.version))
            .collect()
    }

    #[test]
    fn routes_are_found_listed_and_removed_per_version() {
        let routes = LiveRoutes::default();
        let app: Application = "demo".parse().expect("an application");
        let parcel: EventTypeName = "scanned_parcel".parse().expect("a name");
        let order: EventTypeName = "order_placed".parse().expect("a name");
        let v2 = Version::FIRST.next();
        for (name, version) in [
            (&parcel, v2),
            (&parcel, Version::FIRST),
            (&order, Version::FIRST),
        ] {
            routes
                .insert(
                    app.clone(),
                    Vec::new(),
                    name.clone(),
                    version,
                    &serde_json::json!({"type": "object"}),
                )
                .expect("the schema compiles");
        }
        assert_eq!(
            live(&routes),
            ["order_placed.1", "scanned_parcel.1", "scanned_parcel.2"]
        );
        assert!(routes.get(&parcel, v2).is_some());

        routes.remove(&parcel, Version::FIRST);
        assert!(routes.get(&parcel, Version::FIRST).is_none());
        assert!(routes.get(&parcel, v2).is_some());
        routes.remove(&parcel, v2);
        routes.remove(&order, v2);
        assert_eq!(live(&routes), ["order_placed.1"]);
        assert!(routes.get(&parcel, v2).is_none());
    }
}
