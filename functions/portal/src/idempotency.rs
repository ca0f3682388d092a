//! `Idempotency-Key` on the create routes (`busway_core::idempotency`): a layer around their
//! handlers that answers a retry from what the first request got.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use busway_core::FieldError;
use busway_core::auth::Caller;
use busway_core::idempotency::{self, Answer, Decision};
use busway_core::portal::{Portal, PortalError};
use busway_http::{ApiError, MAX_BODY_BYTES};

use crate::Error;

/// The create routes (method, route as declared): the only ones a key makes idempotent.
const CREATES: [(Method, &str); 3] = [
    (Method::POST, "/events"),
    (Method::PUT, "/events/{event_type}"),
    (Method::POST, "/subscriptions"),
];

/// Runs a create request once per key: see the module. Other routes, requests without the header,
/// and callers the handler will refuse (no key), pass through as they are.
pub async fn layer(State(portal): State<Arc<Portal>>, request: Request, next: Next) -> Response {
    let create = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| {
            CREATES
                .iter()
                .any(|(method, route)| request.method() == method && path.as_str() == *route)
        });
    let Some(raw) = request
        .headers()
        .get(idempotency::HEADER)
        .filter(|_| create)
    else {
        return next.run(request).await;
    };
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    let key = match raw
        .to_str()
        .map_err(|e| e.to_string())
        .and_then(|k| idempotency::check_key(k).map(|()| k.to_string()))
    {
        Ok(key) => key,
        Err(why) => {
            return ApiError::validation(
                "request is invalid",
                vec![FieldError::new("Idempotency-Key", why)],
            )
            .into_response();
        }
    };
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body exceeds {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
        }
    };
    let store = portal.idempotency.as_ref();
    let decision = idempotency::begin(
        store,
        idempotency::caller_key(&caller, &key),
        idempotency::fingerprint(parts.method.as_str(), parts.uri.path(), &bytes),
    )
    .await;
    let claim = match decision {
        Err(e) => return Error::from(PortalError::from(e)).into_response(),
        Ok(Decision::Run(claim)) => claim,
        Ok(Decision::Replay(answer)) => return replayed(answer),
        Ok(Decision::InFlight) => {
            let mut response = ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry it shortly",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Ok(Decision::Mismatch) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was sent with another request (method, path or body); use a new key",
            )
            .into_response();
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let Ok(sent) = to_bytes(body, usize::MAX).await else {
        release(&portal, claim).await;
        return ApiError::internal("the answer could not be read").into_response();
    };
    let answer = Answer {
        status: parts.status.as_u16(),
        body: String::from_utf8_lossy(&sent).into_owned(),
    };
    if let Err(e) = idempotency::finish(store, claim, answer).await {
        // The request succeeded; its retry runs it again, which the create routes answer with
        // what it made.
        tracing::warn!(error = %format!("{e:#}"), "the answer of an Idempotency-Key could not be kept");
    }
    Response::from_parts(parts, Body::from(sent))
}

async fn release(portal: &Portal, claim: idempotency::Record) {
    if let Err(e) = portal.idempotency.release(&claim.key, &claim.token).await {
        tracing::warn!(error = %format!("{e:#}"), "an Idempotency-Key claim could not be released");
    }
}

/// The kept answer, as first sent.
fn replayed(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        idempotency::REPLAYED_HEADER,
        HeaderValue::from_static("true"),
    );
    response
}
