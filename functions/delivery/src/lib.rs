//! The delivery function of HTTPS subscriptions on AWS: one shared function that every HTTPS
//! subscription's rule (Classic bus) or subscriber (Custom Event Bus) targets, with the
//! subscription named in its input (`{"subscription_id": "...", "event": <the event>}`, the
//! rule's input transformer or the subscriber's input). It signs the event as the local host
//! does (Standard Webhooks, `busway_core::webhook`, with the subscription's secrets from the
//! table), applies the same SSRF guard (`busway_core::ssrf`) and posts it; a retryable answer
//! (408, 429, 5xx, a timeout, no connection, a host that did not resolve) fails the invocation,
//! so the retries and the dead-letter queue apply. What will never succeed (another 4xx, a
//! refused target, a deleted subscription) ends the invocation without a retry, logged.

use std::time::Duration;

use async_trait::async_trait;
use busway_core::ports::{EventStore, StoreError};
use busway_core::ssrf::{PublicResolver, Refused};
use busway_core::subscription::{ConsumerConnection, Subscription, SubscriptionState};
use busway_core::webhook::{self, SigningSecret, SigningSecrets};
use serde_json::Value;

/// How long a target has to answer, as on the local host.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one delivery that needs no retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The target answered 2xx.
    Accepted,
    /// It will never be accepted: logged, not retried.
    Dropped(String),
}

/// A delivery to retry: the invocation fails with it.
#[derive(Debug, thiserror::Error)]
pub enum Retry {
    #[error("the target did not take the event: {0}")]
    Target(String),
    #[error("the subscription could not be read: {0}")]
    Store(#[from] StoreError),
    #[error("the input is not a delivery: {0}")]
    Input(String),
}

/// The subscription and its secrets: the table on AWS.
#[async_trait]
pub trait Subscriptions: Send + Sync {
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError>;
    async fn secrets(&self, id: &str) -> Result<Vec<SigningSecret>, StoreError>;
}

#[async_trait]
impl<T: EventStore + SigningSecrets> Subscriptions for T {
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        self.get_subscription(id).await
    }

    async fn secrets(&self, id: &str) -> Result<Vec<SigningSecret>, StoreError> {
        self.signing_secrets(id).await
    }
}

/// Delivers one input.
pub async fn deliver(
    store: &dyn Subscriptions,
    http: &reqwest::Client,
    input: &Value,
) -> Result<Delivered, Retry> {
    let id = input
        .get("subscription_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Retry::Input("no subscription_id".into()))?;
    let event = input
        .get("event")
        .filter(|e| e.is_object())
        .ok_or_else(|| Retry::Input("no event".into()))?;
    let Some(subscription) = store
        .subscription(id)
        .await?
        .filter(|s| s.state == SubscriptionState::Active)
    else {
        return Ok(Delivered::Dropped(format!("subscription {id} is deleted")));
    };
    if subscription.connection_type != ConsumerConnection::Https {
        return Ok(Delivered::Dropped(format!(
            "subscription {id} is not an HTTPS subscription"
        )));
    }
    let Ok(url) = reqwest::Url::parse(&subscription.connection_string) else {
        return Ok(Delivered::Dropped(format!("subscription {id} has no URL")));
    };
    if let Err(refused) = busway_core::ssrf::check(&url) {
        return refused_outcome(refused);
    }
    // The event's id is the delivery's, the same on every retry.
    let message_id = event
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or(id)
        .to_string();
    let body = serde_json::to_vec(event).map_err(|e| Retry::Input(e.to_string()))?;
    let now = busway_core::now();
    let secrets = store.secrets(id).await?;
    let signature = webhook::signature_header(&secrets, now, &message_id, &body)
        .map_err(|e| Retry::Input(format!("a signing secret of {id}: {e}")))?;
    let mut request = http
        .post(url)
        .timeout(TIMEOUT)
        .header("content-type", "application/json")
        .header(webhook::ID_HEADER, &message_id)
        .header(webhook::TIMESTAMP_HEADER, now.unix_timestamp().to_string());
    if !signature.is_empty() {
        request = request.header(webhook::SIGNATURE_HEADER, signature);
    }
    let status = match request.body(body).send().await {
        Ok(response) => response.status(),
        Err(e) => {
            return match busway_core::ssrf::refusal(&e) {
                Some(refused) => refused_outcome(refused.clone()),
                None => Err(Retry::Target(busway_core::ssrf::describe(e))),
            };
        }
    };
    if status.is_success() {
        Ok(Delivered::Accepted)
    } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Err(Retry::Target(format!("the target answered {status}")))
    } else {
        Ok(Delivered::Dropped(format!("the target answered {status}")))
    }
}

/// A target the SSRF guard refused: dropped, or retried when its host did not resolve.
fn refused_outcome(refused: Refused) -> Result<Delivered, Retry> {
    match refused {
        Refused::Never(why) => Ok(Delivered::Dropped(why)),
        Refused::NotNow(why) => Err(Retry::Target(why)),
    }
}

/// The delivery client: no redirects, and host names resolved only to public addresses
/// (`ssrf::PublicResolver`).
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(PublicResolver))
        .build()
}
