//! The API Gateway REQUEST authorizer of both APIs: the key of `Authorization: Bearer <key>` is
//! looked up by its SHA-256 in the table, and a known, valid key becomes an Allow policy for the
//! whole API with the caller (`busway_core::auth::Caller::to_context`) as its context, which
//! API Gateway caches per key and hands to the function behind the route. No, an unknown, a
//! revoked or an expired key is "Unauthorized", which API Gateway answers with 401.

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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_covers_every_route_of_the_stage() {
        assert_eq!(
            whole_api("arn:aws:execute-api:eu-west-1:123456789012:abc123/live/POST/events"),
            "arn:aws:execute-api:eu-west-1:123456789012:abc123/live/*"
        );
    }

    #[test]
    fn the_key_is_read_from_an_authorization_header_of_any_case() {
        let event = json!({"headers": {"authorization": "Bearer bwk_1"}});
        assert_eq!(bearer(&event), Some("bwk_1"));
        let event = json!({"headers": {"Authorization": "Basic eA=="}});
        assert_eq!(bearer(&event), None);
    }
}
