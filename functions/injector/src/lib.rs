//! The broker API: `POST /{event_type}/{version}` with the seed's envelope. The body is validated
//! against the version's schema, enriched and put on the bus; the answer is its `event_id`, and
//! `duplicate: true` when the bus had accepted that `event_id` already (`Bus::put_events`). And
//! the SQS producers' batches (`sqs`), which no API validated.

pub mod observe;
pub mod openapi;
pub mod sqs;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json, Router};
use busway_core::auth::Role;
use busway_core::ingest::{self, IngestError, LiveRoutes, Published};
use busway_core::ports::{Bus, EventCatalog};
use busway_core::{EventTypeName, Version};
use busway_http::ApiError;
use busway_http::auth::Authenticated;
use busway_http::request_id::RequestId;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Clone)]
pub struct Broker {
    pub routes: Arc<LiveRoutes>,
    /// Where a route missing from `routes` is learned (`LiveRoutes::resolve`): none locally.
    pub store: Option<Arc<dyn EventCatalog>>,
    pub bus: Arc<dyn Bus>,
}

/// The largest event body the broker accepts, in bytes, on both hosts. On AWS an event reaches
/// the injector through API Gateway REST (10 MB) and a synchronous Lambda invocation, whose
/// request may hold 6 MB (6,291,456 bytes) of API Gateway event. That event carries the body as
/// a JSON string, whose escaping at most doubles a valid JSON body, beside at most 10 KB of
/// headers: twice this limit plus them stays under 6 MB. Above it the answer is 413 naming it.
pub const MAX_EVENT_BYTES: usize = 3_000_000;

#[derive(Clone)]
struct Api {
    broker: Broker,
    max_event_bytes: usize,
}

/// The broker API, accepting events up to [`MAX_EVENT_BYTES`].
pub fn router(broker: Broker) -> Router {
    router_with_limit(broker, MAX_EVENT_BYTES)
}

#[derive(OpenApi)]
#[openapi(info(
    title = "busway broker",
    description = "Publish events: `POST /{event_type}/{version}` with the seed's envelope. Each deployed event version has its own path here, whose request body is that version's enveloped schema."
))]
struct BrokerDocument;

/// The broker API accepting events up to `max_event_bytes` (`busway up --max-event-bytes`),
/// with `GET /openapi.json`.
pub fn router_with_limit(broker: Broker, max_event_bytes: usize) -> Router {
    let (router, document) = OpenApiRouter::with_openapi(BrokerDocument::openapi())
        .routes(routes!(publish))
        .routes(routes!(document))
        .layer(DefaultBodyLimit::max(max_event_bytes))
        .with_state(Api {
            broker,
            max_event_bytes,
        })
        .split_for_parts();
    let document = serde_json::to_value(&document).unwrap_or(Value::Null);
    busway_http::with_fallbacks(router.layer(Extension(Arc::new(document))))
}

/// This API's OpenAPI 3.1 document, with a path for each deployed event version.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documents",
    responses((status = 200, description = "this API's OpenAPI 3.1 document", body = Object))
)]
async fn document(
    State(Api { broker, .. }): State<Api>,
    Authenticated(_): Authenticated,
    Extension(base): Extension<Arc<Value>>,
) -> Result<Json<Value>, ApiError> {
    let deployed = deployed(&broker).await.map_err(|e| match e {
        busway_core::ports::StoreError::Unavailable(why) => ApiError::unavailable(
            format!("the event store did not answer: {why}"),
            std::time::Duration::from_secs(1),
        ),
        e => ApiError::internal(format!("listing the deployed event versions: {e:#}")),
    })?;
    Ok(Json(openapi::with_routes(base.as_ref().clone(), &deployed)))
}

/// The deployed event versions with their enveloped schemas: the live routes locally; on AWS,
/// where a container learns routes on first use, the event store's active versions.
async fn deployed(
    broker: &Broker,
) -> Result<Vec<(EventTypeName, Version, Value)>, busway_core::ports::StoreError> {
    let Some(store) = &broker.store else {
        return Ok(broker
            .routes
            .all()
            .iter()
            .map(|r| (r.event_type.clone(), r.version, r.schema.clone()))
            .collect());
    };
    let mut deployed = Vec::new();
    for event in store.list_event_types().await? {
        for version in store.list_versions(&event.event_type).await? {
            if version.is_active() {
                deployed.push((version.event_type, version.version, version.schema));
            }
        }
    }
    Ok(deployed)
}

/// Publishes one event. Which versions are deployed, and their envelopes, are the paths of this
/// document named after them.
#[utoipa::path(
    post,
    path = "/{event_type}/{version}",
    tag = "events",
    params(
        ("event_type" = String, Path, description = "a deployed event type"),
        ("version" = String, Path, description = "a deployed version of it"),
    ),
    request_body(content = Object, description = "the envelope: `{\"metadata\": {\"event_attributes\": {\"source\", \"target\"}, \"event_id\"?}, \"data\": {...}}`"),
    responses((status = 200, description = "the event is on the bus", body = Object))
)]
async fn publish(
    State(Api {
        broker,
        max_event_bytes,
    }): State<Api>,
    Authenticated(caller): Authenticated,
    request_id: Option<Extension<RequestId>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    // Producers publish as their key's application, and no other key publishes: a platform
    // admin makes a producer key to publish (Source always names a real writer).
    let publisher = match (caller.role, &caller.application) {
        (Role::Producer, Some(application)) => Some(application),
        _ => {
            return Err(ApiError::forbidden(format!(
                "{} may not publish: producer keys of the event type's writers do",
                caller.role.a_key()
            )));
        }
    };
    let Path((event_type, version)) = path.map_err(|e| ApiError::not_found(e.body_text()))?;
    let body = body.map_err(|e| busway_http::body_error(e, max_event_bytes))?;
    match ingest::publish(
        &broker.routes,
        broker.store.as_deref(),
        broker.bus.as_ref(),
        publisher,
        request_id
            .as_ref()
            .map(|Extension(RequestId(id))| id.as_str()),
        &event_type,
        &version,
        &body,
    )
    .await
    {
        Ok(published) => Ok(Json(published)),
        Err(IngestError::RouteNotFound(route)) => Err(ApiError::not_found(format!(
            "no deployed event version at {route}"
        ))),
        Err(IngestError::NotWriter(why)) => Err(ApiError::forbidden(why)),
        Err(IngestError::InvalidJson(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not valid JSON: {e}"),
        )),
        Err(IngestError::Invalid(errors)) => Err(ApiError::validation(
            "event does not match the schema of this version",
            errors.0,
        )),
        Err(IngestError::Throttled(why)) => {
            tracing::warn!(error = %why, "publishing throttled");
            Err(ApiError::unavailable(
                "the bus is throttling; retry after the time in Retry-After",
                ingest::THROTTLED_RETRY_AFTER,
            ))
        }
        Err(IngestError::TooLarge(why)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            why,
        )),
        Err(IngestError::Unavailable(why)) => {
            tracing::error!(error = %why, "publishing failed for now");
            Err(ApiError::unavailable(
                "the event cannot be taken now; retry after the time in Retry-After",
                ingest::THROTTLED_RETRY_AFTER,
            ))
        }
        Err(IngestError::Rejected(why)) => Err(ApiError::internal(why)),
        Err(IngestError::Unexpected(e)) => Err(ApiError::internal(format!("{e:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use busway_core::auth::{Caller, Role};
    use busway_core::envelope::BusEvent;
    use busway_core::event::{EventType, EventVersion};
    use busway_core::ports::{Accepted, EntryFailure, StoreError};
    use tower::ServiceExt;

    use super::*;

    /// A catalog whose store does not answer, as DynamoDB throttling.
    struct Down;

    #[async_trait]
    impl EventCatalog for Down {
        async fn get_event_type(&self, _: &EventTypeName) -> Result<Option<EventType>, StoreError> {
            Err(StoreError::Unavailable("throttled".into()))
        }
        async fn list_event_types(&self) -> Result<Vec<EventType>, StoreError> {
            Err(StoreError::Unavailable("throttled".into()))
        }
        async fn list_versions(&self, _: &EventTypeName) -> Result<Vec<EventVersion>, StoreError> {
            Err(StoreError::Unavailable("throttled".into()))
        }
        async fn get_version(
            &self,
            _: &EventTypeName,
            _: Version,
        ) -> Result<Option<EventVersion>, StoreError> {
            Err(StoreError::Unavailable("throttled".into()))
        }
    }

    struct NoBus;

    #[async_trait]
    impl Bus for NoBus {
        async fn put_events(
            &self,
            _: Vec<BusEvent>,
        ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
            anyhow::bail!("not called")
        }
    }

    #[tokio::test]
    async fn the_document_is_a_503_while_the_store_does_not_answer() {
        let app = router(Broker {
            routes: Arc::default(),
            store: Some(Arc::new(Down)),
            bus: Arc::new(NoBus),
        });
        let mut request = Request::get("/openapi.json")
            .body(Body::empty())
            .expect("a request");
        request.extensions_mut().insert(Caller {
            key_id: "key_1".into(),
            team: "platform".parse().expect("a team"),
            role: Role::PlatformAdmin,
            application: None,
        });
        let response = app.oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
    }
}
