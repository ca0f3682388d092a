//! The API Gateway REQUEST authorizer of both APIs: the key of `Authorization: Bearer <key>` is
//! looked up by its SHA-256 in the table, and a known, valid key becomes an Allow policy for the
//! whole API with the caller (`busway_core::auth::Caller::to_context`) as its context, which
//! API Gateway caches per key and hands to the function behind the route. No, an unknown, a
//! revoked or an expired key is "Unauthorized", which API Gateway answers with 401.
//!
//! The answer also names the key's `usageIdentifierKey` (`auth::usage_identifier`): the broker
//! API takes its API key from the authorizer (`apiKeySource: AUTHORIZER`), so the API Gateway key
//! of that value, made with the busway key (busway_aws::usage_plans), and its usage plan's
//! throttle limit that busway key (infra/README.md: "Rate limits").

use busway_core::auth::{self, KeyStore};
use serde_json::{Map, Value, json};

/// The error whose message API Gateway turns into 401.
pub const UNAUTHORIZED: &str = "Unauthorized";

#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No key, or none this platform knows as valid.
    #[error("Unauthorized")]
    Unauthorized,
    /// The table did not answer.
    #[error("the key could not be looked up: {0}")]
    Store(String),
}

/// The key of a REQUEST authorizer event's `Authorization` header (any case).
fn bearer(event: &Value) -> Option<&str> {
    let headers = event.get("headers")?.as_object()?;
    let value = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))?
        .1
        .as_str()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// `arn:aws:execute-api:{region}:{account}:{api}/{stage}/*`: the policy covers every route of
/// the stage, so the answer API Gateway caches for a key serves all of them.
fn whole_api(method_arn: &str) -> String {
    let mut parts = method_arn.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(api), Some(stage)) => format!("{api}/{stage}/*"),
        _ => method_arn.to_string(),
    }
}

/// The authorizer's answer to one REQUEST event.
pub async fn authorize(keys: &dyn KeyStore, event: &Value) -> Result<Value, Denied> {
    let secret = bearer(event).ok_or(Denied::Unauthorized)?;
    let key = keys
        .key_by_hash(&auth::hash_key(secret))
        .await
        .map_err(|e| Denied::Store(e.to_string()))?
        .filter(|k| k.is_valid_at(busway_core::now()))
        .ok_or(Denied::Unauthorized)?;
    let caller = key.caller();
    let context: Map<String, Value> = caller
        .to_context()
        .into_iter()
        .map(|(name, value)| (name.to_string(), Value::String(value)))
        .collect();
    let method_arn = event
        .get("methodArn")
        .and_then(Value::as_str)
        .unwrap_or("*");
    Ok(json!({
        "principalId": caller.key_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": "Allow",
                "Resource": whole_api(method_arn),
            }],
        },
        "context": context,
        "usageIdentifierKey": auth::usage_identifier(&caller.key_id),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use busway_core::ports::StoreError;

    #[test]
    fn the_policy_covers_every_route_of_the_stage() {
        assert_eq!(
            whole_api("arn:aws:execute-api:eu-west-1:123456789012:abc123/live/POST/events"),
            "arn:aws:execute-api:eu-west-1:123456789012:abc123/live/*"
        );
    }

    /// One valid producer key, found by its hash.
    struct OneKey(auth::ApiKey, String);

    #[async_trait::async_trait]
    impl KeyStore for OneKey {
        async fn put_key(&self, _: &auth::ApiKey, _: &str) -> Result<(), StoreError> {
            unreachable!("the authorizer writes no key")
        }
        async fn key_by_hash(&self, hash: &str) -> Result<Option<auth::ApiKey>, StoreError> {
            Ok((hash == self.1).then(|| self.0.clone()))
        }
        async fn get_key(&self, _: &str) -> Result<Option<auth::ApiKey>, StoreError> {
            unreachable!("the authorizer reads keys by hash")
        }
        async fn list_keys(&self) -> Result<Vec<auth::ApiKey>, StoreError> {
            unreachable!("the authorizer lists no key")
        }
        async fn update_key(&self, _: &auth::ApiKey) -> Result<(), StoreError> {
            unreachable!("the authorizer writes no key")
        }
    }

    #[tokio::test]
    async fn the_answer_names_the_key_as_its_usage_identifier() {
        let key: auth::ApiKey = serde_json::from_value(json!({
            "id": "key_0123456789abcdef", "team": "logistics", "role": "producer",
            "application": "demo", "created_at": "2026-01-01T00:00:00Z",
        }))
        .expect("a key record");
        let store = OneKey(key, auth::hash_key("bwk_secret"));
        let event = json!({
            "headers": {"Authorization": "Bearer bwk_secret"},
            "methodArn": "arn:aws:execute-api:eu-west-1:123456789012:abc123/live/POST/orders/1",
        });
        let answer = authorize(&store, &event).await.expect("allowed");
        assert_eq!(answer["usageIdentifierKey"], "buswaykey0123456789abcdef");
        assert_eq!(answer["principalId"], "key_0123456789abcdef");
        let unknown = json!({"headers": {"Authorization": "Bearer bwk_other"}});
        assert!(matches!(
            authorize(&store, &unknown).await,
            Err(Denied::Unauthorized)
        ));
    }

    #[test]
    fn the_key_is_read_from_an_authorization_header_of_any_case() {
        let event = json!({"headers": {"authorization": "Bearer bwk_1"}});
        assert_eq!(bearer(&event), Some("bwk_1"));
        let event = json!({"headers": {"Authorization": "Basic eA=="}});
        assert_eq!(bearer(&event), None);
    }
}
