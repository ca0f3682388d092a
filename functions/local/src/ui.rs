//! The catalog web page at `/ui`: one HTML page, its script and its style, compiled into the
//! binary (no network and no build step), over the portal API. Signing in stores the key in an
//! HttpOnly, SameSite=Strict cookie, which [`session_cookie`] turns back into the
//! `Authorization` header the portal reads; a request that carries that header itself (a
//! script, a test) is served the same way.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use busway_http::auth::{Authenticated, KeyAuth, unauthorized};
use busway_http::{ApiError, JsonBody};
use serde_json::json;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const COOKIE: &str = "busway_session";

#[derive(Clone)]
struct Ui {
    keys: KeyAuth,
    /// The page, with the broker's address for the producers' endpoints.
    index: String,
}

/// The page and its session routes; `GET /ui/session` answers who the caller is.
pub fn router(keys: KeyAuth, broker_addr: SocketAddr) -> axum::Router {
    let index = INDEX.replace("{{BROKER_URL}}", &format!("http://{broker_addr}"));
    axum::Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/ui/app.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        // Signing in and out never looks at the key a stale cookie may still hold.
        .route("/ui/session", post(sign_in).delete(sign_out))
        .route(
            "/ui/session",
            get(who).layer(axum::middleware::from_fn_with_state(
                keys.clone(),
                busway_http::auth::key_auth,
            )),
        )
        .with_state(Ui { keys, index })
}

async fn page(State(ui): State<Ui>) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            // Only this page's own script and style; nothing from elsewhere, no inline code.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        ],
        Html(ui.index),
    )
        .into_response()
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Who the session (or the `Authorization` header) is.
async fn who(Authenticated(caller): Authenticated) -> Json<serde_json::Value> {
    Json(json!({
        "key_id": caller.key_id,
        "team": caller.team,
        "role": caller.role,
        "application": caller.application,
    }))
}

/// Checks the key and keeps it in the session cookie: HttpOnly (the page's script never reads
/// it), SameSite=Strict (no other site's page sends it), for this browser session only.
async fn sign_in(
    State(ui): State<Ui>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    // A form of another site can post text/plain but not JSON without the browser asking
    // first: no page elsewhere can sign a visitor in with a key of its choosing.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the key as application/json",
        ));
    }
    let key = body["key"].as_str().unwrap_or_default().trim();
    if ui.keys.key(key).await?.is_none() || !is_cookie_safe(key) {
        return Err(unauthorized("the key is unknown, revoked or expired"));
    }
    let cookie = format!("{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict");
    Ok(session(StatusCode::NO_CONTENT, &cookie))
}

async fn sign_out() -> Response {
    session(
        StatusCode::NO_CONTENT,
        &format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    )
}

fn session(status: StatusCode, cookie: &str) -> Response {
    match HeaderValue::from_str(cookie) {
        Ok(value) => (status, [(header::SET_COOKIE, value)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Keys are `bwk_` and hex (or an admin key of the operator's choosing): only characters a
/// cookie value may hold unquoted.
fn is_cookie_safe(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

/// Gives a request without an `Authorization` header the session cookie's key as one, unless a
/// page of another origin sent it: SameSite does not tell apart two ports of one host, and a
/// `text/plain` POST crosses origins without the browser asking first. Such a change is
/// refused; a read goes on without the session, since one read changes something too (an
/// embedded queue's receive deletes) and an `<img>` or a link sends it.
pub async fn session_cookie(mut request: Request, next: Next) -> Response {
    if !request.headers().contains_key(header::AUTHORIZATION)
        && let Some(key) = cookie(request.headers(), COOKIE)
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}"))
    {
        if !cross_origin(request.headers()) {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        } else if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "a page of another origin may not act with this browser's session",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether a browser sent the request for a page of another origin: `Sec-Fetch-Site` when the
/// browser sends it, else `Origin` against `Host`. A client that sends neither is not a browser
/// acting for a page.
fn cross_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return !matches!(site, "same-origin" | "none");
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (None, _) => false,
        (Some(origin), Some(host)) => {
            origin.split_once("://").map(|(_, authority)| authority) != Some(host)
        }
        (Some(_), None) => true,
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_key_is_read_from_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; busway_session=bwk_abc; x=1"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("bwk_abc"));
        let mut cleared = HeaderMap::new();
        cleared.append(header::COOKIE, HeaderValue::from_static("busway_session="));
        assert_eq!(cookie(&cleared, COOKIE), None);
    }

    #[test]
    fn requests_from_a_page_of_another_origin_are_cross_origin() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            headers
        };
        let other_port = headers(&[
            ("origin", "http://localhost:3000"),
            ("host", "localhost:4000"),
        ]);
        assert!(cross_origin(&other_port));
        let same = headers(&[
            ("origin", "http://localhost:4000"),
            ("host", "localhost:4000"),
        ]);
        assert!(!cross_origin(&same));
        // Sec-Fetch-Site decides when present, whatever Origin says.
        let fetched = headers(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:4000"),
            ("host", "localhost:4000"),
        ]);
        assert!(cross_origin(&fetched));
        assert!(!cross_origin(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        // curl with a cookie: neither header.
        assert!(!cross_origin(&headers(&[("host", "localhost:4000")])));
    }

    #[test]
    fn a_key_that_would_break_the_cookie_header_is_refused() {
        assert!(is_cookie_safe("bwk_0123abcd"));
        for bad in ["", "a;b", "a b", "a,b", "a\"b", "a\\b"] {
            assert!(!is_cookie_safe(bad), "{bad:?}");
        }
    }
}
