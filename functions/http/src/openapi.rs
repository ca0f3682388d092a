//! OpenAPI 3.1 documents generated from the routers. Each API registers its routes through
//! `utoipa_axum`'s `OpenApiRouter`, so a route and its entry in the document are one declaration;
//! `GET /openapi.json` serves the result. What every operation shares (the bearer key, the JSON
//! error body and the statuses any request may get) is added here once.

use std::sync::Arc;

use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;

/// The name of the bearer-key security scheme in every document.
pub const BEARER: &str = "bearer_key";

/// Statuses any operation may answer besides its own, each with the JSON error body: bad input,
/// no or unknown key, a key without the right, an unknown resource, a request too slow or too
/// large, a key above its rate limit, a failure, a feature this host lacks, a busy store.
const ERRORS: [(&str, &str); 11] = [
    (
        "400",
        "the request is invalid; `details` names each bad field",
    ),
    ("401", "no key, or an unknown, revoked or expired one"),
    ("403", "the key may not do this"),
    ("404", "no such resource"),
    ("408", "the request took longer than the server's timeout"),
    ("409", "the request conflicts with the resource's state"),
    ("413", "the body is above the API's limit"),
    (
        "429",
        "the key is above its rate limit; retry after `Retry-After`",
    ),
    ("500", "an unexpected failure; the server log has its cause"),
    ("501", "this host does not offer the feature"),
    (
        "503",
        "busy, throttled or failing for now (a full disk, a store or bus that did not answer); retry after `Retry-After`",
    ),
];

/// `GET /openapi.json` registered on `api`, whose document it serves; the router's remaining
/// parts (fallbacks, layers) are the caller's.
pub fn documented(api: OpenApiRouter) -> Router {
    let (router, document) = api.routes(routes!(document)).split_for_parts();
    let document = finish(serde_json::to_value(&document).unwrap_or(Value::Null));
    router.layer(Extension(Arc::new(document)))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documents",
    responses((status = 200, description = "this API's OpenAPI 3.1 document", body = Object))
)]
async fn document(
    Authenticated(_): Authenticated,
    Extension(document): Extension<Arc<Value>>,
) -> Json<Value> {
    Json(document.as_ref().clone())
}

/// Adds the shared parts to a generated document: the bearer key required by every operation
/// that does not say otherwise, the `x-request-id` header both ways, the error body's schema (also
/// on each operation's own error statuses), and the error answers of [`ERRORS`].
pub fn finish(mut document: Value) -> Value {
    let components = &mut document["components"];
    if !components.is_object() {
        *components = json!({});
    }
    components["securitySchemes"][BEARER] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "a busway API key: `Authorization: Bearer <key>`",
    });
    components["schemas"]["Error"] = error_schema();
    if let Some(paths) = document["paths"].as_object_mut() {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(Value::as_object_mut)
        {
            operation
                .entry("security")
                .or_insert_with(|| json!([{ BEARER: [] }]));
            let parameters = operation.entry("parameters").or_insert_with(|| json!([]));
            if let Some(parameters) = parameters.as_array_mut()
                && !parameters.iter().any(|p| p["name"] == "x-request-id")
            {
                parameters.push(json!({
                    "name": "x-request-id",
                    "in": "header",
                    "required": false,
                    "description": "the request's id (1 to 128 visible ASCII characters); another value, or none, gets one made",
                    "schema": {"type": "string"},
                }));
            }
            let responses = operation.entry("responses").or_insert_with(|| json!({}));
            for (status, description) in ERRORS {
                if responses.get(status).is_none() {
                    responses[status] = error_response(description);
                }
            }
            for (status, response) in responses
                .as_object_mut()
                .into_iter()
                .flat_map(|r| r.iter_mut())
            {
                // An operation's own error statuses answer with the error body too.
                if status.starts_with(['4', '5']) && response.get("content").is_none() {
                    response["content"] = error_response("")["content"].take();
                }
                response["headers"]["x-request-id"] = json!({
                    "description": "the request's id (`crate::request_id`)",
                    "required": true,
                    "schema": {"type": "string"},
                });
            }
        }
    }
    document
}

/// An error answer: the JSON error body of [`crate::ApiError`].
pub fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// `{"error": {"code", "message", "details": [{"field", "message"}]}}`.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "message"],
                            "properties": {
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    })
}
