//! The caller of a request. Each host puts a `Caller` in the request's extensions (the local host
//! from `Authorization: Bearer`, the Lambda host from the API Gateway authorizer's context);
//! handlers take it with [`Authenticated`], which answers 401 when there is none. Locally the
//! broker's layer also holds each key to its rate limit (a token bucket per key).

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

/// How long a looked-up key is believed (API Gateway caches an authorizer's answer likewise, for
/// 5 minutes): a revoked key stops working within this, and a busy producer costs one store read
/// per period.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Above this many cached keys the cache starts afresh, so unknown keys cannot grow it.
const KEY_CACHE_MAX: usize = 10_000;

/// Keys looked up, by the digest of their secret, with when (`None`: no such key).
type KeyCache = HashMap<[u8; 32], (Instant, Option<ApiKey>)>;

/// A key's token bucket: tokens left, and when they were counted.
type Buckets = HashMap<String, (f64, Instant)>;

/// Turns `Authorization: Bearer <key>` into the request's `Caller` (the local host's layer).
#[derive(Clone)]
pub struct KeyAuth {
    keys: Arc<dyn KeyStore>,
    cache: Arc<Mutex<KeyCache>>,
    /// Per key id, where keys' rate limits apply (the broker API).
    buckets: Option<Arc<Mutex<Buckets>>>,
}

impl KeyAuth {
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Self {
            keys,
            cache: Arc::default(),
            buckets: None,
        }
    }

    /// The same keys, each held to its rate limit.
    pub fn rate_limited(&self) -> Self {
        Self {
            buckets: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// Takes a token of the key's bucket; else how long until one is there.
    fn take(&self, key: &ApiKey) -> Result<(), Duration> {
        let (Some(buckets), Some(limit)) = (&self.buckets, key.rate_limit) else {
            return Ok(());
        };
        let Ok(mut buckets) = buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let (rate, burst) = (f64::from(limit.per_second), f64::from(limit.burst));
        let (tokens, at) = buckets.entry(key.id.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }

    /// The valid key of `secret`, if any. Cached by the digest of the secret, so no secret stays
    /// in memory; validity is checked at each use, so a rotated key ends on time.
    pub async fn key(&self, secret: &str) -> Result<Option<ApiKey>, ApiError> {
        let digest = auth::key_digest(secret);
        let cached = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(&digest)
                .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
                .map(|(_, key)| key.clone())
        });
        let key = match cached {
            Some(key) => key,
            None => {
                let key = self
                    .keys
                    .key_by_hash(&auth::digest_hex(&digest))
                    .await
                    .map_err(|e| ApiError::internal(format!("looking up a key: {e}")))?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= KEY_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(digest, (Instant::now(), key.clone()));
                }
                key
            }
        };
        Ok(key.filter(|k| k.is_valid_at(busway_core::now())))
    }
}

/// The middleware of [`KeyAuth`]: an unknown, revoked or expired key is a 401 at once; a request
/// without a key goes on without a `Caller`, and a handler that needs one answers 401.
pub async fn key_auth(State(auth): State<KeyAuth>, mut request: Request, next: Next) -> Response {
    if let Some(secret) = bearer_token(request.headers()) {
        match auth.key(secret).await {
            Ok(Some(key)) => {
                if let Err(wait) = auth.take(&key) {
                    return ApiError {
                        retry_after: Some(wait.as_secs().max(1)),
                        ..ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "rate_limited",
                            format!(
                                "key {} is above its rate limit; retry after the time in Retry-After",
                                key.id
                            ),
                        )
                    }
                    .into_response();
                }
                request.extensions_mut().insert(key.caller());
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
