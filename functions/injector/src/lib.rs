//! The broker API: `POST /{event_type}/{version}` with the seed's envelope. The body is validated
//! against the version's schema, enriched and put on the bus; the answer is its `event_id`. And
//! the SQS producers' batches (`sqs`), which no API validated.

pub mod sqs;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use busway_core::ingest::{self, IngestError, LiveRoutes};
use busway_core::ports::{Bus, EventStore};
use busway_http::{ApiError, MAX_BODY_BYTES};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Broker {
    pub routes: Arc<LiveRoutes>,
    /// Where a route missing from `routes` is learned (`LiveRoutes::resolve`): none locally.
    pub store: Option<Arc<dyn EventStore>>,
    pub bus: Arc<dyn Bus>,
}

pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/{event_type}/{version}", post(publish))
        .fallback(busway_http::not_found_fallback)
        .method_not_allowed_fallback(busway_http::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(broker)
}

async fn publish(
    State(broker): State<Broker>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((event_type, version)) = path.map_err(|e| ApiError::not_found(e.body_text()))?;
    let body = body.map_err(busway_http::body_error)?;
    match ingest::publish(
        &broker.routes,
        broker.store.as_deref(),
        broker.bus.as_ref(),
        &event_type,
        &version,
        &body,
    )
    .await
    {
        Ok(event_id) => Ok(Json(json!({"event_id": event_id}))),
        Err(IngestError::RouteNotFound(route)) => Err(ApiError::not_found(format!(
            "no deployed event version at {route}"
        ))),
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
        Err(IngestError::Rejected(why)) => Err(ApiError::internal(why)),
        Err(IngestError::Unexpected(e)) => Err(ApiError::internal(format!("{e:#}"))),
    }
}
