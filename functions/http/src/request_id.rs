//! Request ids: every request to either API has one, the caller's `x-request-id` when it sent a
//! usable one, else one made here. Handlers read it as a [`RequestId`] extension, the answer
//! carries it back in `x-request-id`, the request's log lines carry it in their span, and the
//! broker writes it into the event's `metadata.request_id`, so one event can be followed from
//! its publish to each delivery attempt.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-given id kept; a longer one is replaced.
pub const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The caller's id when it is 1 to [`MAX_LEN`] visible ASCII characters (no spaces), which any
/// log line or header can hold as it is.
fn given(request: &Request) -> Option<String> {
    let value = request.headers().get(&HEADER)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= MAX_LEN && value.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| value.to_string())
}

/// The middleware: sets the request's id, runs it in a span that names it, and answers it.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let id = given(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn with(value: &[u8]) -> Request {
        Request::builder()
            .header(
                HEADER,
                HeaderValue::from_bytes(value).expect("a header value"),
            )
            .body(Body::empty())
            .expect("a request")
    }

    #[test]
    fn a_usable_caller_id_is_kept_and_others_are_replaced() {
        assert_eq!(given(&with(b"req-42")).as_deref(), Some("req-42"));
        assert_eq!(given(&with(b"two words")), None);
        assert_eq!(given(&with(&[b'a'; MAX_LEN + 1])), None);
        assert_eq!(
            given(&with(&[b'a'; MAX_LEN])).map(|s| s.len()),
            Some(MAX_LEN)
        );
        let none = Request::builder().body(Body::empty()).expect("a request");
        assert_eq!(given(&none), None);
    }
}
