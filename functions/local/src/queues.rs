//! The embedded SQS stand-in's HTTP face: SQS-target subscriptions deliver into named queues
//! that a developer reads here (or with `busway queue receive`). A queue is read by the keys of
//! the team whose deployed SQS rules deliver into it (not its producer keys) and by platform
//! admins, as on AWS only the team's role reads its queue.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use busway_core::Team;
use busway_core::auth::{Caller, Role};
use busway_core::ports::{EventStore, StoreError};
use busway_http::ApiError;
use busway_http::auth::Authenticated;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::SqliteStore;
use crate::target::rules_into_queue;

const MAX_MESSAGES: usize = 100;
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

#[derive(serde::Serialize)]
struct Messages {
    messages: Vec<crate::store::QueueMessage>,
}

/// The queues' routes on the portal's server, each with its entry in the portal's document.
pub fn api(store: SqliteStore) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .routes(routes!(acknowledge))
        .with_state(store)
}

/// 403 unless `caller` is a platform admin or a non-producer key of a team that reads queue
/// `name` (`team_reads`).
async fn may_read(store: &SqliteStore, caller: &Caller, name: &str) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    let teams_queue = caller.role != Role::Producer
        && team_reads(store, &caller.team, name)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    if teams_queue {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{} of team {} may not read queue {name}: the keys of the teams whose subscriptions deliver into it do",
            caller.role.a_key(),
            caller.team
        )))
    }
}

/// Whether the deployed SQS rules into queue `name` (the last part of their ARN, as delivery
/// names it) are all of `team`, and there is one. A subscription whose deployment failed
/// delivers nothing, so it gives no access.
async fn team_reads(store: &SqliteStore, team: &Team, name: &str) -> Result<bool, StoreError> {
    let rules = rules_into_queue(store, name).await?;
    // Rules of other ARNs or teams share a queue only if deployed before the local host refused
    // them: whose messages it holds is unknown, so only an admin reads it.
    if rules
        .windows(2)
        .any(|w| w[0].connection_string != w[1].connection_string)
    {
        return Ok(false);
    }
    for rule in &rules {
        let subscription = store.get_subscription(&rule.subscription_id).await?;
        if subscription.is_none_or(|s| s.team.as_ref() != Some(team)) {
            return Ok(false);
        }
    }
    Ok(!rules.is_empty())
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::validation(
        "query is invalid",
        vec![busway_core::FieldError::new(field, message)],
    )
}

/// `?max=N` (1..=100, default 10); `?ack=auto` (default) deletes on receive, `?ack=explicit`
/// hides the messages for `visibility_timeout` seconds (default 30) until deleted by receipt.
#[utoipa::path(
    get,
    path = "/queues/{name}/messages",
    tag = "local queues",
    params(
        ("name" = String, Path, description = "the SQS target's queue name"),
        ("max" = Option<u32>, Query, minimum = 1, maximum = 100, description = "messages at most (default 10)"),
        ("ack" = Option<String>, Query, pattern = "^(auto|explicit)$", description = "`auto` (default) deletes on receive; `explicit` hides them until deleted by receipt"),
        ("visibility_timeout" = Option<u64>, Query, minimum = 0, maximum = 43200, description = "seconds an `explicit` receive hides them (default 30)"),
    ),
    responses((status = 200, description = "`{\"messages\": [...]}`", body = Object))
)]
async fn receive(
    State(store): State<SqliteStore>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Messages>, ApiError> {
    may_read(&store, &caller, &name).await?;
    for key in params.keys() {
        if !["max", "ack", "visibility_timeout"].contains(&key.as_str()) {
            return Err(bad(
                key,
                "unknown query parameter; allowed: max, ack, visibility_timeout",
            ));
        }
    }
    let max = match params.get("max") {
        None => 10,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_MESSAGES).contains(n))
            .ok_or_else(|| bad("max", "must be an integer from 1 to 100"))?,
    };
    let delete = match params.get("ack").map(String::as_str) {
        None | Some("auto") => true,
        Some("explicit") => false,
        Some(_) => return Err(bad("ack", "must be auto or explicit")),
    };
    let visibility = match params.get("visibility_timeout") {
        None => DEFAULT_VISIBILITY,
        Some(raw) => Duration::from_secs(
            raw.parse::<u64>()
                .ok()
                .filter(|s| *s <= 43_200)
                .ok_or_else(|| bad("visibility_timeout", "must be seconds from 0 to 43200"))?,
        ),
    };
    let messages = store
        .receive_messages(&name, max, delete, visibility)
        .await
        .map_err(ApiError::internal)?;
    // Serialized as a struct, not through a `Value`, so raw bodies keep their field order.
    Ok(Json(Messages { messages }))
}

#[utoipa::path(
    delete,
    path = "/queues/{name}/messages/{receipt}",
    tag = "local queues",
    params(
        ("name" = String, Path, description = "the queue's name"),
        ("receipt" = String, Path, description = "the receipt of an `explicit` receive"),
    ),
    responses((status = 204, description = "the message is deleted"))
)]
async fn acknowledge(
    State(store): State<SqliteStore>,
    Authenticated(caller): Authenticated,
    Path((name, receipt)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    may_read(&store, &caller, &name).await?;
    if store
        .delete_message(&name, &receipt)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no message with receipt {receipt} in queue {name}"
        )))
    }
}
