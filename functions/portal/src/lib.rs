//! The portal REST API. `router()` is served by the Lambda bin under API Gateway and by the local
//! host under axum: one code path.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use busway_core::audit::{AuditEntry, AuditFilter};
use busway_core::auth::{self, Caller, NewKey, Role};
use busway_core::deployment::Deployment;
use busway_core::page::{self, Page, PageRequest};
use busway_core::portal::{
    CreateEvent, EventTypeView, NewVersion, Portal, PortalError, Subscribe, SubscriptionView,
};
use busway_core::ports::RunState;
use busway_core::subscription::Subscription;
use busway_core::subscription::SubscriptionFilter;
use busway_core::targets::TeamTargets;
use busway_core::{Application, EventTypeName, FieldError, Team, Version};
use busway_http::auth::Authenticated;
use busway_http::{ApiError, JsonBody, MAX_BODY_BYTES};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod idempotency;

/// The portal's API for the Lambda host: its routes, `GET /openapi.json` and the JSON fallbacks.
pub fn router(portal: Arc<Portal>) -> Router {
    busway_http::with_fallbacks(busway_http::openapi::documented(api(portal)))
}

#[derive(OpenApi)]
#[openapi(info(
    title = "busway portal",
    description = "Register event types and versions, subscribe to them, follow their deployments and manage API keys."
))]
struct PortalDocument;

/// The portal's routes, each declared with its entry in the OpenAPI document.
pub fn api(portal: Arc<Portal>) -> OpenApiRouter {
    // The create routes answer a retried `Idempotency-Key` from what its first request got.
    let once = axum::middleware::from_fn_with_state(portal.clone(), idempotency::layer);
    OpenApiRouter::with_openapi(PortalDocument::openapi())
        .routes(routes!(list_events, create_event))
        .routes(routes!(get_event, add_version))
        .routes(routes!(get_version, delete_version))
        .routes(routes!(list_subscriptions, subscribe))
        .routes(routes!(get_subscription, unsubscribe))
        .routes(routes!(dead_letters))
        .routes(routes!(rotate_secret))
        .routes(routes!(redrive))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(replay))
        .routes(routes!(list_deployments))
        .routes(routes!(get_deployment))
        .routes(routes!(retry_deployment))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(rotate_key))
        .routes(routes!(asyncapi))
        .routes(routes!(list_audit))
        .routes(routes!(get_team_targets, put_team_targets))
        .route_layer(once)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(portal)
}

type Portal_ = State<Arc<Portal>>;

/// The broker API's base URL, where the host knows it: the AsyncAPI documents name it as their
/// server (the local host adds it as an extension of the portal's routes).
#[derive(Clone)]
pub struct BrokerUrl(pub url::Url);

struct Error(ApiError);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<PortalError> for Error {
    fn from(e: PortalError) -> Self {
        Self(match e {
            PortalError::Invalid(errors) => ApiError::validation("request is invalid", errors.0),
            PortalError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            PortalError::AlreadyExists(what) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{what} already exists"),
            ),
            PortalError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, "conflict", why),
            PortalError::Forbidden(why) => ApiError::forbidden(why),
            PortalError::Unavailable(why) => {
                tracing::warn!(%why, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a store is busy or unreachable; retry the request",
                )
            }
            PortalError::NotAvailable(why) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_available", why)
            }
            PortalError::Unexpected(e) => ApiError::internal(format!("{e:#}")),
        })
    }
}

impl From<busway_core::ValidationErrors> for Error {
    fn from(e: busway_core::ValidationErrors) -> Self {
        Self(ApiError::validation("request is invalid", e.0))
    }
}

type Result<T> = std::result::Result<T, Error>;

/// A created or deleted resource together with the deployment that builds or removes it.
fn with_deployment(resource: impl Serialize, deployment: &Deployment) -> Value {
    let mut value = serde_json::to_value(resource).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("deployment_id".into(), Value::String(deployment.id.clone()));
    }
    value
}

fn path<T>(p: std::result::Result<Path<T>, PathRejection>) -> Result<T> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::not_found(format!("no such route: {}", e.body_text())).into())
}

fn event_type(raw: &str) -> Result<EventTypeName> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("event type {raw:?} not found")).into())
}

fn version(event_type: &EventTypeName, raw: &str) -> Result<Version> {
    raw.parse().map_err(|_| {
        ApiError::not_found(format!(
            "version {raw:?} of event type {event_type} not found"
        ))
        .into()
    })
}

/// Query parameters: unknown names and invalid values are named, not ignored.
fn query(
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>> {
    let Query(params) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let unknown: Vec<FieldError> = params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.as_str(),
                format!("unknown query parameter; allowed: {}", allowed.join(", ")),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::validation("query is invalid", unknown).into());
    }
    Ok(params)
}

fn parse_param<T: std::str::FromStr<Err = E>, E: std::fmt::Display>(
    params: &HashMap<String, String>,
    name: &str,
    errors: &mut busway_core::ValidationErrors,
) -> Option<T> {
    let raw = params.get(name)?;
    errors.check(name, raw.parse::<T>())
}

#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "a retry with the same key and body gets the first answer again (24 h); the same key with another request is answered 422")),
    request_body = CreateEvent,
    responses(
        (status = 201, description = "the event type with its first version and the `deployment_id` that builds its route", body = Object),
        (status = 422, description = "this `Idempotency-Key` came with another request (method, path or body)"),
    ),
)]
async fn create_event(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>)> {
    caller.require(
        matches!(caller.role, Role::Owner | Role::PlatformAdmin),
        || "register event types (owner or platform-admin keys do)".into(),
    )?;
    let mut req = CreateEvent::from_json(&body)?;
    req.team = Some(caller.team.clone());
    let (event, deployment) = portal.create_event(req).await?;
    let entry = AuditEntry::new(
        &caller,
        "event_type.create",
        event.event.event_type.as_str(),
    )
    .of_team(event.event.team.as_ref())
    .of_event_type(&event.event.event_type)
    .change(Value::Null, &event.event);
    audit(&portal, entry).await;
    Ok((
        StatusCode::CREATED,
        Json(with_deployment(event, &deployment)),
    ))
}

#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "items per page (default 50)"),
        ("next_token" = Option<String>, Query, pattern = "^([0-7][0-9a-f])+$", description = "the `next_token` of the previous page"),
    ),
    responses(
        (status = 200, description = "a page of event types: `{\"event_types\": [...], \"next_token\"}`", body = Object),
    ),
)]
async fn list_events(
    State(portal): Portal_,
    Authenticated(_): Authenticated,
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>> {
    let params = query(q, &["limit", "next_token"])?;
    let mut errors = busway_core::ValidationErrors::default();
    let page = page_of(&params, &mut errors);
    errors.into_result(())?;
    Ok(Json(paged(
        "event_types",
        portal.list_event_types(&page).await?,
    )))
}

/// `limit` and `next_token` of a list's query.
fn page_of(
    params: &HashMap<String, String>,
    errors: &mut busway_core::ValidationErrors,
) -> PageRequest {
    PageRequest::from_query(
        params.get("limit").map(String::as_str),
        params.get("next_token").map(String::as_str),
        errors,
    )
}

/// `{"<name>": [...], "next_token": "..."}`, the token only when more may follow.
fn paged<T: serde::Serialize>(name: &str, page: Page<T>) -> Value {
    let mut answer = json!({ name: page.items });
    if let Some(next) = page.next {
        answer["next_token"] = json!(page::encode(&next));
    }
    answer
}

#[utoipa::path(
    get,
    path = "/events/{event_type}",
    tag = "events",
    params(("event_type" = String, Path, description = "the event type's name")),
    responses((status = 200, description = "the event type with its versions", body = Object)),
)]
async fn get_event(
    State(portal): Portal_,
    Authenticated(_): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let name = event_type(&path(p)?)?;
    Ok(Json(json!(portal.get_event_type(&name).await?)))
}

#[utoipa::path(
    put,
    path = "/events/{event_type}",
    tag = "events",
    params(
        ("event_type" = String, Path, description = "the event type's name"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "a retry with the same key and body gets the first answer again (24 h); the same key with another request is answered 422"),
    ),
    request_body = NewVersion,
    responses(
        (status = 201, description = "the new version and the `deployment_id` that builds its route", body = Object),
        (status = 422, description = "this `Idempotency-Key` came with another request (method, path or body)"),
    ),
)]
async fn add_version(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>)> {
    let name = event_type(&path(p)?)?;
    let before = manage_event(&portal, &caller, &name).await?;
    let req = NewVersion::from_json(&body)?;
    let (version, deployment) = portal.add_version(&name, req).await?;
    let entry = AuditEntry::new(
        &caller,
        "version.create",
        format!("{name}/{}", version.version),
    )
    .of_team(before.event.team.as_ref())
    .of_event_type(&name)
    .change(&before.event, &version);
    audit(&portal, entry).await;
    Ok((
        StatusCode::CREATED,
        Json(with_deployment(version, &deployment)),
    ))
}

#[utoipa::path(
    get,
    path = "/events/{event_type}/versions/{version}",
    tag = "events",
    params(
        ("event_type" = String, Path, description = "the event type's name"),
        ("version" = String, Path, description = "the version number, from 1"),
    ),
    responses(
        (status = 200, description = "the version with its enveloped schema", body = Object),
    ),
)]
async fn get_version(
    State(portal): Portal_,
    Authenticated(_): Authenticated,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>> {
    let (name, raw_version) = path(p)?;
    let name = event_type(&name)?;
    let v = version(&name, &raw_version)?;
    Ok(Json(json!(portal.version_view(&name, v).await?)))
}

#[utoipa::path(
    delete,
    path = "/events/{event_type}/versions/{version}",
    tag = "events",
    params(
        ("event_type" = String, Path, description = "the event type's name"),
        ("version" = String, Path, description = "the version number, from 1"),
    ),
    responses(
        (status = 202, description = "the `deployment_id` that removes the route", body = Object),
    ),
)]
async fn delete_version(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let (name, raw_version) = path(p)?;
    let name = event_type(&name)?;
    let event = manage_event(&portal, &caller, &name).await?;
    let v = version(&name, &raw_version)?;
    let before = portal.get_version(&name, v).await?;
    let deployment = portal.delete_version(&name, v).await?;
    let entry = AuditEntry::new(&caller, "version.delete", format!("{name}/{v}"))
        .of_team(event.event.team.as_ref())
        .of_event_type(&name)
        .change(&before, Value::Null);
    audit(&portal, entry).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"deployment_id": deployment.id})),
    ))
}

#[utoipa::path(
    post,
    path = "/subscriptions",
    tag = "subscriptions",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "a retry with the same key and body gets the first answer again (24 h); the same key with another request is answered 422")),
    request_body = Subscribe,
    responses(
        (status = 201, description = "the subscription, the `deployment_id` that builds it and, for HTTPS targets, the signing `secret` (shown only here)", body = Object),
        (status = 422, description = "this `Idempotency-Key` came with another request (method, path or body)"),
    ),
)]
async fn subscribe(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>)> {
    caller.require(caller.role != Role::Producer, || {
        "subscribe (owner, consumer or platform-admin keys do)".into()
    })?;
    let mut req = Subscribe::from_json(&body)?;
    let event = portal.get_event_type(&req.event_type).await?;
    caller.require(
        caller.is_admin() || event.event.is_reader(&caller.team),
        || {
            format!(
                "subscribe to {}: the team is not among its readers",
                req.event_type
            )
        },
    )?;
    if !caller.is_admin() {
        own_target(&portal, &caller, &req).await?;
    }
    req.team = Some(caller.team.clone());
    let (subscription, deployment) = portal.subscribe(req).await?;
    let secret = portal.issue_secret(&subscription).await?;
    audit(
        &portal,
        subscription_entry(&caller, "subscription.create", &subscription)
            .change(Value::Null, &subscription),
    )
    .await;
    let mut answer = with_deployment(subscription, &deployment);
    if let Some(secret) = secret {
        // Shown here only: deliveries are signed with it (Standard Webhooks).
        answer["secret"] = Value::String(secret);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "subscriptions",
    params(
        ("event_type" = Option<String>, Query, pattern = "^[a-z][a-z0-9_]{1,62}$"),
        ("version" = Option<u32>, Query, minimum = 1),
        ("target_unit" = Option<String>, Query, pattern = "^[a-z][a-z0-9_]{1,62}$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "items per page (default 50)"),
        ("next_token" = Option<String>, Query, pattern = "^([0-7][0-9a-f])+$", description = "the `next_token` of the previous page"),
    ),
    responses(
        (status = 200, description = "a page of subscriptions: `{\"subscriptions\": [...], \"next_token\"}`", body = Object),
    ),
)]
async fn list_subscriptions(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>> {
    let params = query(
        q,
        &[
            "event_type",
            "version",
            "target_unit",
            "limit",
            "next_token",
        ],
    )?;
    let mut errors = busway_core::ValidationErrors::default();
    let filter = SubscriptionFilter {
        event_type: parse_param(&params, "event_type", &mut errors),
        version: parse_param(&params, "version", &mut errors),
        target_unit: parse_param(&params, "target_unit", &mut errors),
    };
    let page = page_of(&params, &mut errors);
    let filter = errors.into_result(filter)?;
    let found = portal.list_subscriptions(&filter, &page).await?;
    let items = found.items.iter().map(|s| subscription_json(&caller, s));
    Ok(Json(paged(
        "subscriptions",
        Page {
            items: items.collect(),
            next: found.next,
        },
    )))
}

#[utoipa::path(
    get,
    path = "/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = String, Path, description = "the resource's id")),
    responses(
        (status = 200, description = "the subscription; for its own team also its delivery state and counts", body = Object),
    ),
)]
async fn get_subscription(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let id = path(p)?;
    let view = portal.subscription_view(&id).await?;
    let mut value = subscription_json(&caller, &view);
    if !caller.belongs_to(view.subscription.team.as_ref()) {
        return Ok(Json(value));
    }
    let stats = portal.delivery_stats(&view.subscription).await?;
    if let Some(state) = portal.run_state(&view.subscription).await?
        && let Some(fields) = value.as_object_mut()
    {
        fields.insert("delivery_state".into(), json!(state));
    }
    // `delivery` holds the subscription's delivery settings and, where this host counts them,
    // what its deliveries did.
    if let (Some(delivery), Some(stats)) = (
        value.get_mut("delivery").and_then(Value::as_object_mut),
        stats,
    ) && let Value::Object(counts) = json!(stats)
    {
        delivery.extend(counts);
    }
    Ok(Json(value))
}

#[utoipa::path(
    get,
    path = "/subscriptions/{id}/dead-letters",
    tag = "subscriptions",
    params(
        ("id" = String, Path, description = "the resource's id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "items per page (default 50)"),
        ("next_token" = Option<String>, Query, pattern = "^([0-7][0-9a-f])+$", description = "the `next_token` of the previous page"),
    ),
    responses(
        (status = 200, description = "a page of dead letters: `{\"dead_letters\": [...], \"next_token\"}`", body = Object),
    ),
)]
async fn dead_letters(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>> {
    let id = path(p)?;
    act_for_subscription(&portal, &caller, &id, "read the dead letters of").await?;
    let params = query(q, &["limit", "next_token"])?;
    let mut errors = busway_core::ValidationErrors::default();
    let page = page_of(&params, &mut errors);
    errors.into_result(())?;
    Ok(Json(paged(
        "dead_letters",
        portal.dead_letters(&id, &page).await?,
    )))
}

#[utoipa::path(
    post,
    path = "/subscriptions/{id}/dead-letters/redrive",
    tag = "subscriptions",
    params(("id" = String, Path, description = "the resource's id")),
    responses(
        (status = 202, description = "how many dead letters are delivered again: `{\"redriving\": n}`", body = Object),
    ),
)]
async fn redrive(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = path(p)?;
    let subscription = act_for_subscription(&portal, &caller, &id, "redrive").await?;
    let count = portal.redrive(&id).await?;
    let entry = subscription_entry(&caller, "subscription.redrive", &subscription)
        .change(Value::Null, json!({"redriving": count}));
    audit(&portal, entry).await;
    Ok((StatusCode::ACCEPTED, Json(json!({"redriving": count}))))
}

#[utoipa::path(
    post,
    path = "/subscriptions/{id}/pause",
    tag = "subscriptions",
    params(("id" = String, Path, description = "the resource's id")),
    responses((status = 200, description = "`{\"id\", \"delivery_state\"}`", body = Object)),
)]
async fn pause(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    switch_delivery(&portal, &caller, p, RunState::Running).await
}

#[utoipa::path(
    post,
    path = "/subscriptions/{id}/resume",
    tag = "subscriptions",
    params(("id" = String, Path, description = "the resource's id")),
    responses((status = 200, description = "`{\"id\", \"delivery_state\"}`", body = Object)),
)]
async fn resume(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    switch_delivery(&portal, &caller, p, RunState::Paused).await
}

/// Pauses a running subscription's delivery or resumes a paused one (409 from any other state),
/// and records the change.
async fn switch_delivery(
    portal: &Portal,
    caller: &Caller,
    p: std::result::Result<Path<String>, PathRejection>,
    from: RunState,
) -> Result<Json<Value>> {
    let id = path(p)?;
    let pause = from == RunState::Running;
    let action = if pause { "pause" } else { "resume" };
    let subscription = act_for_subscription(portal, caller, &id, action).await?;
    let state = if pause {
        portal.pause_subscription(&id).await?
    } else {
        portal.resume_subscription(&id).await?
    };
    let entry = subscription_entry(caller, &format!("subscription.{action}"), &subscription)
        .change(
            json!({"delivery_state": from}),
            json!({"delivery_state": state}),
        );
    audit(portal, entry).await;
    Ok(Json(json!({"id": id, "delivery_state": state})))
}

#[utoipa::path(
    post,
    path = "/subscriptions/{id}/replay",
    tag = "subscriptions",
    params(("id" = String, Path, description = "the resource's id")),
    request_body(content = Object, description = "`{\"start_time\": \"<RFC 3339, not in the future>\"}`"),
    responses((status = 202, description = "`{\"id\", \"replaying_from\"}`, and `deployment_id` where the replay is a new subscriber its consumer stack makes (Custom Event Bus)", body = Object)),
)]
async fn replay(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>)> {
    let id = path(p)?;
    let subscription = act_for_subscription(&portal, &caller, &id, "replay").await?;
    let (start, deployment) = portal.replay_subscription(&id, &body).await?;
    let from = busway_core::envelope::eventbridge_time(start);
    let entry = subscription_entry(&caller, "subscription.replay", &subscription)
        .change(Value::Null, json!({"replaying_from": from}));
    audit(&portal, entry).await;
    let mut answer = json!({"id": id, "replaying_from": from});
    if let Some(d) = deployment {
        answer["deployment_id"] = json!(d.id);
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

#[utoipa::path(
    post,
    path = "/subscriptions/{id}/secret/rotate",
    tag = "subscriptions",
    params(("id" = String, Path, description = "the resource's id")),
    responses(
        (status = 201, description = "the new signing `secret`; the old one signs too until it expires", body = Object),
    ),
)]
async fn rotate_secret(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = path(p)?;
    let subscription = act_for_subscription(&portal, &caller, &id, "rotate the secret of").await?;
    let secret = portal.rotate_secret(&id).await?;
    // Never the secrets: that it changed is the entry.
    let entry = subscription_entry(&caller, "subscription.secret.rotate", &subscription);
    audit(&portal, entry).await;
    Ok((StatusCode::CREATED, Json(json!({"secret": secret}))))
}

#[utoipa::path(
    delete,
    path = "/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = String, Path, description = "the resource's id")),
    responses(
        (status = 202, description = "the `deployment_id` that removes it", body = Object),
    ),
)]
async fn unsubscribe(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = path(p)?;
    let subscription = act_for_subscription(&portal, &caller, &id, "delete").await?;
    let deployment = portal.unsubscribe(&id).await?;
    let entry = subscription_entry(&caller, "subscription.delete", &subscription)
        .change(&subscription, Value::Null);
    audit(&portal, entry).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"deployment_id": deployment.id})),
    ))
}

#[utoipa::path(
    get,
    path = "/deployments/{id}",
    tag = "deployments",
    params(("id" = String, Path, description = "the resource's id")),
    responses(
        (status = 200, description = "the deployment with its status, steps and error", body = Object),
    ),
)]
async fn get_deployment(
    State(portal): Portal_,
    Authenticated(_): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let id = path(p)?;
    Ok(Json(json!(portal.deployment(&id).await?)))
}

#[utoipa::path(
    post,
    path = "/deployments/{id}/retry",
    tag = "deployments",
    params(("id" = String, Path, description = "the resource's id")),
    responses(
        (status = 202, description = "the deployment, provisioning again", body = Object),
    ),
)]
async fn retry_deployment(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = path(p)?;
    let before = portal.deployment(&id).await?;
    let team = match (&before.subscription_id, &before.event_type) {
        (Some(subscription), _) => {
            act_for_subscription(&portal, &caller, subscription, "retry deployments of")
                .await?
                .team
        }
        (None, Some(name)) => manage_event(&portal, &caller, name).await?.event.team,
        (None, None) => {
            caller.require(caller.is_admin(), || {
                format!("retry deployment {id}, which names no event type")
            })?;
            None
        }
    };
    let deployment = portal.retry_deployment(&id).await?;
    let mut entry =
        AuditEntry::new(&caller, "deployment.retry", id.as_str()).of_team(team.as_ref());
    if let Some(name) = &before.event_type {
        entry = entry.of_event_type(name);
    }
    audit(&portal, entry.change(&before, &deployment)).await;
    Ok((StatusCode::ACCEPTED, Json(json!(deployment))))
}

#[utoipa::path(
    get,
    path = "/deployments",
    tag = "deployments",
    params(
        ("event_type" = Option<String>, Query, pattern = "^[a-z][a-z0-9_]{1,62}$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "items per page (default 50)"),
        ("next_token" = Option<String>, Query, pattern = "^([0-7][0-9a-f])+$", description = "the `next_token` of the previous page"),
    ),
    responses(
        (status = 200, description = "a page of deployments: `{\"deployments\": [...], \"next_token\"}`", body = Object),
    ),
)]
async fn list_deployments(
    State(portal): Portal_,
    Authenticated(_): Authenticated,
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>> {
    let params = query(q, &["event_type", "limit", "next_token"])?;
    let mut errors = busway_core::ValidationErrors::default();
    let event_type: Option<EventTypeName> = parse_param(&params, "event_type", &mut errors);
    let page = page_of(&params, &mut errors);
    errors.into_result(())?;
    Ok(Json(paged(
        "deployments",
        portal.list_deployments(event_type.as_ref(), &page).await?,
    )))
}

/// Owners of the event type's team and platform admins change it and its versions; the event
/// type as it is.
async fn manage_event(
    portal: &Portal,
    caller: &Caller,
    name: &EventTypeName,
) -> Result<EventTypeView> {
    let event = portal.get_event_type(name).await?;
    caller.require(caller.manages(event.event.team.as_ref()), || {
        format!("change event type {name}: its owning team's owner keys do")
    })?;
    Ok(event)
}

/// Records a change made through the portal. The change is made by then: a failed write is
/// logged as an error rather than answered as the change's failure.
async fn audit(portal: &Portal, entry: AuditEntry) {
    if let Err(e) = portal.audit.record(&entry).await {
        tracing::error!(error = %e, action = %entry.action, resource = %entry.resource,
            "a change was made but its audit entry was not recorded");
    }
}

/// The entry of a change to a subscription, which its team owns.
fn subscription_entry(caller: &Caller, action: &str, subscription: &Subscription) -> AuditEntry {
    AuditEntry::new(caller, action, subscription.id.as_str())
        .of_team(subscription.team.as_ref())
        .of_event_type(&subscription.event_type)
}

/// A team's LAMBDA and SQS targets must be in the accounts (and under the name prefixes)
/// registered for it; a team without a registration has none. Platform admins are not held to
/// it. HTTPS targets are held to the SSRF guard instead.
async fn own_target(portal: &Portal, caller: &Caller, req: &Subscribe) -> Result<()> {
    if req
        .connection_type
        .target_in_account(&req.connection_string)
        .is_none()
    {
        return Ok(());
    }
    let registered = portal
        .targets
        .team_targets(&caller.team)
        .await
        .map_err(PortalError::from)?;
    let refused = match registered {
        None => Some(format!(
            "team {} has no registered target accounts (a platform admin registers them: PUT /teams/{}/targets)",
            caller.team, caller.team
        )),
        Some(targets) => targets.refuses(req.connection_type, &req.connection_string),
    };
    match refused {
        Some(why) => Err(ApiError::forbidden(format!(
            "connection_string: a {} target outside the team's own: {why}",
            req.connection_type.as_str()
        ))
        .into()),
        None => Ok(()),
    }
}

fn team(raw: &str) -> Result<Team> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("team {raw:?} not found")).into())
}

/// `GET /teams/{team}/targets`: the team's keys and platform admins read its registration.
#[utoipa::path(
    get,
    path = "/teams/{team}/targets",
    tag = "teams",
    params(("team" = String, Path, pattern = "^[a-z][a-z0-9_]{1,62}$", description = "the team's name")),
    responses(
        (status = 200, description = "the team's registration: `{\"team\", \"accounts\", \"name_prefixes\", \"updated_at\"}`", body = Object),
    ),
)]
async fn get_team_targets(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let team = team(&path(p)?)?;
    caller.require(caller.belongs_to(Some(&team)), || {
        format!("read the target accounts of team {team}")
    })?;
    let targets = portal
        .targets
        .team_targets(&team)
        .await
        .map_err(PortalError::from)?
        .ok_or_else(|| ApiError::not_found(format!("no target accounts of team {team}")))?;
    Ok(Json(json!(targets)))
}

/// `PUT /teams/{team}/targets` `{"accounts": [...], "name_prefixes": [...]}`: platform admins
/// register where a team's LAMBDA and SQS targets may be.
#[utoipa::path(
    put,
    path = "/teams/{team}/targets",
    tag = "teams",
    params(("team" = String, Path, pattern = "^[a-z][a-z0-9_]{1,62}$", description = "the team's name")),
    request_body = TeamTargets,
    responses(
        (status = 200, description = "the team's registration as stored", body = Object),
    ),
)]
async fn put_team_targets(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>> {
    let team = team(&path(p)?)?;
    caller.require(caller.is_admin(), || {
        format!("register the target accounts of team {team} (platform-admin keys do)")
    })?;
    let targets = TeamTargets::from_json(team.clone(), &body)?;
    let before = portal
        .targets
        .team_targets(&team)
        .await
        .map_err(PortalError::from)?;
    portal
        .targets
        .put_team_targets(&targets)
        .await
        .map_err(PortalError::from)?;
    let entry = AuditEntry::new(&caller, "team.targets.put", team.as_str())
        .of_team(Some(&team))
        .change(before, &targets);
    audit(&portal, entry).await;
    Ok(Json(json!(targets)))
}

/// `GET /audit?event_type=&team=`: platform admins read every entry, owners their team's.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(
        ("event_type" = Option<String>, Query, pattern = "^[a-z][a-z0-9_]{1,62}$"),
        ("team" = Option<String>, Query, pattern = "^[a-z][a-z0-9_]{1,62}$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "items per page (default 50)"),
        ("next_token" = Option<String>, Query, pattern = "^([0-7][0-9a-f])+$", description = "the `next_token` of the previous page"),
    ),
    responses(
        (status = 200, description = "a page of audit entries, newest first: `{\"entries\": [...], \"next_token\"}`", body = Object),
    ),
)]
async fn list_audit(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    q: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>> {
    let params = query(q, &["event_type", "team", "limit", "next_token"])?;
    let mut errors = busway_core::ValidationErrors::default();
    let filter = AuditFilter {
        event_type: parse_param(&params, "event_type", &mut errors),
        team: parse_param(&params, "team", &mut errors),
    };
    let page = page_of(&params, &mut errors);
    let mut filter = errors.into_result(filter)?;
    if !caller.is_admin() {
        let own = filter.team.as_ref().is_none_or(|t| *t == caller.team);
        caller.require(caller.role == Role::Owner && own, || {
            "read this audit (owner keys read their team's, platform-admin keys every team's)"
                .into()
        })?;
        filter.team = Some(caller.team.clone());
    }
    let entries = portal
        .audit
        .page_audit(&filter, &page)
        .await
        .map_err(PortalError::from)?;
    Ok(Json(paged("entries", entries)))
}

/// The subscription's team (any key of it but a producer's) and platform admins act for it.
async fn act_for_subscription(
    portal: &Portal,
    caller: &Caller,
    id: &str,
    what: &str,
) -> Result<Subscription> {
    let subscription = portal.existing_subscription(id).await?;
    caller.require(caller.role != Role::Producer, || {
        format!("{what} subscription {id}: producer keys publish, the team's other keys act for its subscriptions")
    })?;
    caller.require(caller.belongs_to(subscription.team.as_ref()), || {
        format!("{what} subscription {id}: it belongs to another team")
    })?;
    Ok(subscription)
}

/// A subscription as `caller` may see it: other teams' without where it delivers.
fn subscription_json(caller: &Caller, view: &SubscriptionView) -> Value {
    let mut value = json!(view);
    if !caller.belongs_to(view.subscription.team.as_ref())
        && let Some(fields) = value.as_object_mut()
    {
        fields.remove("connection_string");
    }
    value
}

fn admin(caller: &Caller) -> Result<()> {
    caller.require(caller.is_admin(), || {
        "manage keys (platform-admin keys do)".into()
    })?;
    Ok(())
}

#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    responses(
        (status = 200, description = "`{\"keys\": [...]}`, without secrets", body = Object),
    ),
)]
async fn list_keys(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>> {
    admin(&caller)?;
    Ok(Json(
        json!({"keys": portal.keys.list_keys().await.map_err(PortalError::from)?}),
    ))
}

/// A key's record with its secret, which no later answer shows.
fn with_secret(key: &auth::ApiKey, secret: String) -> Value {
    let mut value = json!(key);
    value["key"] = Value::String(secret);
    value
}

#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "the key's record with its secret `key`, shown only here", body = Object),
    ),
)]
async fn create_key(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>)> {
    admin(&caller)?;
    let new = NewKey::from_json(&body)?;
    let (key, secret) = auth::create_key(portal.keys.as_ref(), new).await?;
    let entry = AuditEntry::new(&caller, "key.create", key.id.as_str())
        .of_team(Some(&key.team))
        .change(Value::Null, &key);
    audit(&portal, entry).await;
    Ok((StatusCode::CREATED, Json(with_secret(&key, secret))))
}

#[utoipa::path(
    post,
    path = "/keys/{id}/revoke",
    tag = "keys",
    params(("id" = String, Path, description = "the resource's id")),
    responses((status = 200, description = "the revoked key's record", body = Object)),
)]
async fn revoke_key(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    admin(&caller)?;
    let id = path(p)?;
    let before = portal.keys.get_key(&id).await.map_err(PortalError::from)?;
    let key = auth::revoke_key(portal.keys.as_ref(), &id).await?;
    let entry = AuditEntry::new(&caller, "key.revoke", id.as_str())
        .of_team(Some(&key.team))
        .change(before, &key);
    audit(&portal, entry).await;
    Ok(Json(json!(key)))
}

#[utoipa::path(
    post,
    path = "/keys/{id}/rotate",
    tag = "keys",
    params(("id" = String, Path, description = "the resource's id")),
    responses(
        (status = 201, description = "the new key with its secret; the old one works until its overlap ends", body = Object),
    ),
)]
async fn rotate_key(
    State(portal): Portal_,
    Authenticated(caller): Authenticated,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    admin(&caller)?;
    let id = path(p)?;
    let before = portal.keys.get_key(&id).await.map_err(PortalError::from)?;
    let (key, secret) = auth::rotate_key(portal.keys.as_ref(), &id, auth::ROTATION_OVERLAP).await?;
    let entry = AuditEntry::new(&caller, "key.rotate", id.as_str())
        .of_team(Some(&key.team))
        .change(before, &key);
    audit(&portal, entry).await;
    Ok((StatusCode::CREATED, Json(with_secret(&key, secret))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_store_is_a_503_the_client_may_retry() {
        let error = Error::from(PortalError::Unavailable(
            "ProvisionedThroughputExceededException".into(),
        ));
        assert_eq!(
            error.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

/// The AsyncAPI 3.0 document of an application: the event versions it may publish.
#[utoipa::path(
    get,
    path = "/asyncapi/{application}",
    tag = "documents",
    params(("application" = String, Path, pattern = "^[a-z][a-z0-9_]{1,62}$", description = "a producing application")),
    responses((status = 200, description = "the application's AsyncAPI 3.0 document: a channel per active event version it may publish", body = Object))
)]
async fn asyncapi(
    State(portal): Portal_,
    Authenticated(_): Authenticated,
    broker: Option<Extension<BrokerUrl>>,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let raw = path(p)?;
    let not_found = || ApiError::not_found(format!("application {raw:?} publishes no event type"));
    let application: Application = raw.parse().map_err(|_| not_found())?;
    let mut events = Vec::new();
    for event in portal
        .store
        .list_event_types()
        .await
        .map_err(PortalError::from)?
    {
        if event.application == application || event.writers.contains(&application) {
            let versions = portal
                .store
                .list_versions(&event.event_type)
                .await
                .map_err(PortalError::from)?;
            events.push((event, versions));
        }
    }
    if events.is_empty() {
        return Err(not_found().into());
    }
    let broker = broker.map(|Extension(BrokerUrl(url))| url);
    Ok(Json(busway_core::asyncapi::document(
        &application,
        broker.as_ref(),
        &events,
    )))
}
