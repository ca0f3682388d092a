//! The caller of a request. Each host puts a `Caller` in the request's extensions (the local host
//! from `Authorization: Bearer`, the Lambda host from the API Gateway authorizer's context);
//! handlers take it with [`Authenticated`], which answers 401 when there is none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use busway_core::auth::{self, ApiKey, Caller, KeyStore};

use crate::ApiError;

/// The caller of the request, or 401 with `WWW-Authenticate`.
pub struct Authenticated(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Self)
            .ok_or_else(|| unauthorized("this API needs a key: send Authorization: Bearer <key>"))
    }
}

/// 401 asking for a Bearer key (RFC 6750).
pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError {
        www_authenticate: Some("Bearer realm=\"busway\""),
        ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// How long a looked-up key is believed, as API Gateway caches an authorizer's answer: a revoked
/// key stops working within this, and a busy producer costs one store read per period.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Above this many cached keys the cache starts afresh, so unknown keys cannot grow it.
const KEY_CACHE_MAX: usize = 10_000;

/// Keys looked up, by the hash of their secret, with when (`None`: no such key).
type KeyCache = HashMap<String, (Instant, Option<ApiKey>)>;

/// Turns `Authorization: Bearer <key>` into the request's `Caller` (the local host's layer).
#[derive(Clone)]
pub struct KeyAuth {
    keys: Arc<dyn KeyStore>,
    cache: Arc<Mutex<KeyCache>>,
}

impl KeyAuth {
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Self {
            keys,
            cache: Arc::default(),
        }
    }

    /// Cached by the key's hash, so no secret stays in memory; validity is checked at each use,
    /// so a rotated key ends on time.
    async fn caller(&self, secret: &str) -> Result<Option<Caller>, ApiError> {
        let hash = auth::hash_key(secret);
        let cached = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(&hash)
                .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
                .map(|(_, key)| key.clone())
        });
        let key = match cached {
            Some(key) => key,
            None => {
                let key = self
                    .keys
                    .key_by_hash(&hash)
                    .await
                    .map_err(|e| ApiError::internal(format!("looking up a key: {e}")))?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= KEY_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(hash, (Instant::now(), key.clone()));
                }
                key
            }
        };
        Ok(key
            .filter(|k| k.is_valid_at(busway_core::now()))
            .map(|k| k.caller()))
    }
}

/// The middleware of [`KeyAuth`]: an unknown, revoked or expired key is a 401 at once; a request
/// without a key goes on without a `Caller`, and a handler that needs one answers 401.
pub async fn key_auth(State(auth): State<KeyAuth>, mut request: Request, next: Next) -> Response {
    if let Some(secret) = bearer_token(request.headers()) {
        match auth.caller(secret).await {
            Ok(Some(caller)) => {
                request.extensions_mut().insert(caller);
            }
            Ok(None) => {
                return unauthorized("the key is unknown, revoked or expired").into_response();
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively_and_others_are_not() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "bearer bwk_1".parse().expect("a header"),
        );
        assert_eq!(bearer_token(&headers), Some("bwk_1"));
        headers.insert(
            header::AUTHORIZATION,
            "Basic dXNlcg==".parse().expect("a header"),
        );
        assert_eq!(bearer_token(&headers), None);
    }
}
