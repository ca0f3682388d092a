//! Serving an API's router from a Lambda function behind API Gateway (REST, proxy integration).

use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use busway_core::auth::Caller;
use lambda_http::aws_lambda_events::apigw::ApiGatewayProxyResponse;
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Body, LambdaEvent, Request, RequestExt};
use tower::{ServiceBuilder, ServiceExt};

/// Runs `router` as the function's handler, routing on the path the API's routes are written
/// for whatever the stage is called. `lambda_http` puts the stage in front of the path unless the
/// function runs with `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`; a route that depends on a variable
/// someone must remember to set answers 404 to everything the day it is missing, so the stage
/// is taken off here, with or without that variable.
///
/// The event becomes a request as `lambda_http::run` makes it; the answer becomes API Gateway's
/// proxy response here (`api_gateway_response`), not through `lambda_http`'s, which decodes a
/// text body by its declared charset with `encoding_rs` and its tables of every legacy encoding
/// (150 KB of each binary) where busway's routers only ever answer UTF-8.
pub async fn run(router: axum::Router) -> Result<(), lambda_http::Error> {
    let app = ServiceBuilder::new()
        .map_request(without_stage)
        .map_request(with_caller)
        .service(router.layer(axum::middleware::from_fn(crate::request_id::layer)));
    lambda_http::lambda_runtime::run(lambda_http::service_fn(
        move |event: LambdaEvent<LambdaRequest>| {
            let app = app.clone();
            async move {
                let LambdaEvent { payload, context } = event;
                let mut request: Request = payload.into();
                if let Some(trace_id) = context
                    .xray_trace_id
                    .as_deref()
                    .and_then(|id| HeaderValue::from_str(id).ok())
                {
                    request.headers_mut().insert("x-amzn-trace-id", trace_id);
                }
                let left = time_left(context.deadline, std::time::SystemTime::now());
                let response =
                    tokio::time::timeout(left, app.oneshot(request.with_lambda_context(context)))
                        .await
                        .unwrap_or_else(|_| Ok(out_of_time()))?;
                api_gateway_response(response).await
            }
        },
    ))
    .await
}

/// What a request keeps of the function's time to answer: a slow AWS call (its SDK timeouts
/// and retries may outlast a 10 s function) ends in the API's own 503, not in Lambda stopping
/// the function mid-request and API Gateway answering 502.
const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The time until `deadline_ms` (the invocation's deadline, in unix milliseconds) less
/// [`ANSWER_MARGIN`].
fn time_left(deadline_ms: u64, now: std::time::SystemTime) -> std::time::Duration {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::time::Duration::from_millis(deadline_ms)
        .saturating_sub(now)
        .saturating_sub(ANSWER_MARGIN)
}

/// The answer to a request that ran out of the function's time. Whatever it did may have
/// happened: a retry is answered by the broker's `event_id` deduplication or the portal's
/// `Idempotency-Key`.
fn out_of_time() -> axum::response::Response {
    axum::response::IntoResponse::into_response(crate::ApiError::unavailable(
        "the request ran out of time; retry",
        std::time::Duration::from_secs(1),
    ))
}

/// Content types whose body API Gateway gets as text, as `lambda_http` decides; any other (or a
/// `content-encoding`) goes as base64 binary.
const TEXT_PREFIXES: [&str; 5] = [
    "text",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/yaml",
];
const TEXT_SUFFIXES: [&str; 3] = ["+xml", "+yaml", "+json"];

fn is_text(headers: &HeaderMap) -> bool {
    if headers.contains_key(CONTENT_ENCODING) {
        return false;
    }
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let content_type = content_type.to_str().unwrap_or_default();
    let mime_type = content_type.trim().split(';').next().unwrap_or_default();
    TEXT_PREFIXES.iter().any(|p| content_type.starts_with(p))
        || TEXT_SUFFIXES.iter().any(|s| mime_type.ends_with(s))
        || headers
            .get("x-lambda-http-content-encoding")
            .is_some_and(|v| v == "text")
}

/// The REST API proxy response `lambda_http` would send for `response`: the headers as
/// `multiValueHeaders` only (API Gateway merges both fields, which would repeat each header), a
/// text body as the UTF-8 it is, any other base64-encoded.
pub async fn api_gateway_response(
    response: axum::response::Response,
) -> Result<ApiGatewayProxyResponse, lambda_http::Error> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await?;
    let text = is_text(&parts.headers);
    let mut answer = ApiGatewayProxyResponse::default();
    answer.status_code = parts.status.as_u16().into();
    answer.is_base64_encoded = !text;
    answer.body = Some(if text {
        Body::Text(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        Body::Binary(bytes.to_vec())
    });
    answer.multi_value_headers = parts.headers;
    Ok(answer)
}

/// The request with the `Caller` that the API's Lambda authorizer (`functions/authorizer`) put in
/// its context; a request without one gets none, and a handler that needs one answers 401. Both
/// APIs authorize every route but the broker's `/health` with it, so no other identity (a SigV4
/// principal, say) ever stands for a caller.
pub fn with_caller(mut request: Request) -> Request {
    let caller = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => {
            let fields = &context.authorizer.fields;
            Caller::from_context(|name| {
                fields
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
        }
        #[allow(unreachable_patterns)]
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    request
}

/// The request with the path API Gateway sent (`path` of the proxy event, which never holds the
/// stage) instead of the one `lambda_http` may have prefixed with `/{stage}`; the query and the
/// path's encoding are kept.
pub fn without_stage(mut request: Request) -> Request {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.stage.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    };
    let Some(stage) = stage else { return request };
    let prefix = format!("/{stage}/");
    // lambda_http leaves a path that already starts with the stage as it is (`/live/live/x` is
    // never made); only a prefix it added is taken off.
    if request.raw_http_path().starts_with(&prefix) {
        return request;
    }
    let uri = request.uri();
    let Some(path) = uri.path().strip_prefix(&prefix[..prefix.len() - 1]) else {
        return request;
    };
    let stripped = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    if let Ok(uri) = stripped.parse() {
        *request.uri_mut() = uri;
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use busway_core::auth;
    use serde_json::json;

    fn event(stage: &str, path: &str, query: Option<(&str, &str)>) -> Request {
        from(&event_json(stage, path, query))
    }

    fn event_json(stage: &str, path: &str, query: Option<(&str, &str)>) -> serde_json::Value {
        let single = query.map(|(k, v)| json!({ k.to_string(): v }));
        let multi = query.map(|(k, v)| json!({ k.to_string(): [v] }));
        let event = json!({
            "resource": "/{proxy+}",
            "path": path,
            "httpMethod": "POST",
            "headers": {"Host": "abc123.execute-api.eu-west-1.amazonaws.com"},
            "multiValueHeaders": {"Host": ["abc123.execute-api.eu-west-1.amazonaws.com"]},
            "queryStringParameters": single,
            "multiValueQueryStringParameters": multi,
            "pathParameters": {"proxy": path.trim_start_matches('/')},
            "stageVariables": null,
            "requestContext": {
                "accountId": "123456789012", "resourceId": "r1", "stage": stage,
                "requestId": "id", "identity": {}, "resourcePath": "/{proxy+}",
                "httpMethod": "POST", "apiId": "abc123", "path": format!("/{stage}{path}"),
            },
            "body": "{}",
            "isBase64Encoded": false,
        });
        event
    }

    #[test]
    fn a_request_keeps_the_functions_time_less_a_margin_to_answer() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        assert_eq!(
            time_left(1_010_000, now),
            std::time::Duration::from_millis(9_500)
        );
        assert_eq!(time_left(1_000_200, now), std::time::Duration::ZERO);
        assert_eq!(time_left(0, now), std::time::Duration::ZERO);
    }

    #[tokio::test]
    async fn a_request_out_of_time_is_a_503_to_retry() {
        let answer = api_gateway_response(out_of_time())
            .await
            .expect("an answer");
        assert_eq!(answer.status_code, 503);
        assert_eq!(answer.multi_value_headers["retry-after"], "1");
        let Some(Body::Text(body)) = answer.body else {
            panic!("a text body");
        };
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            body["error"]["message"],
            "the request ran out of time; retry"
        );
    }

    #[test]
    fn the_caller_comes_from_the_authorizer_context_and_from_nothing_else() {
        let mut event = event_json("live", "/events", None);
        let plain = with_caller(from(&event));
        assert!(plain.extensions().get::<Caller>().is_none());
        // A SigV4-signed request names its principal; that is no caller of busway's.
        event["requestContext"]["identity"]["userArn"] =
            json!("arn:aws:iam::123456789012:user/ops");
        let signed = with_caller(from(&event));
        assert!(signed.extensions().get::<Caller>().is_none());
        event["requestContext"]["authorizer"] = json!({"principalId": "key_1", "key_id": "key_1",
            "team": "logistics", "role": "producer", "application": "demo"});
        let keyed = with_caller(from(&event));
        let caller = keyed.extensions().get::<Caller>().expect("a caller");
        assert_eq!(caller.role, auth::Role::Producer);
        assert_eq!(caller.team.as_str(), "logistics");
        assert_eq!(
            caller.application.as_ref().map(|a| a.as_str()),
            Some("demo")
        );
    }

    fn from(event: &serde_json::Value) -> Request {
        lambda_http::request::from_str(&event.to_string()).expect("an API Gateway REST event")
    }

    /// What `lambda_http::run` answers API Gateway for `response`, through its own adapter.
    async fn lambda_http_answer(response: axum::response::Response) -> serde_json::Value {
        use tower::Service;
        let response = std::sync::Mutex::new(Some(response));
        let mut adapter = lambda_http::Adapter::from(tower::service_fn(|_: Request| {
            let response = response.lock().expect("a lock").take().expect("one call");
            async move { Ok::<_, std::convert::Infallible>(response) }
        }));
        let event: LambdaRequest =
            serde_json::from_value(event_json("live", "/x", None)).expect("a REST event");
        let answer = adapter
            .call(LambdaEvent::new(event, lambda_http::Context::default()))
            .await
            .expect("an answer");
        serde_json::to_value(answer).expect("JSON")
    }

    #[tokio::test]
    async fn every_answer_reaches_api_gateway_as_lambda_http_would_send_it() {
        use axum::response::IntoResponse;
        let typed = |content_type: &'static str, body: &'static [u8]| {
            let mut response = (axum::http::StatusCode::CREATED, body).into_response();
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        };
        let answers = || {
            let mut gzipped = typed("application/json", b"\x1f\x8b\x08");
            gzipped
                .headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let mut untyped = axum::response::Response::new(axum::body::Body::from("plain"));
            *untyped.status_mut() = axum::http::StatusCode::NO_CONTENT;
            let mut repeated = typed("text/plain", b"");
            repeated
                .headers_mut()
                .append("x-seen", HeaderValue::from_static("a"));
            repeated
                .headers_mut()
                .append("x-seen", HeaderValue::from_static("b"));
            vec![
                axum::Json(serde_json::json!({"event_id": "\u{e9}v\u{e8}nement"})).into_response(),
                typed("application/problem+json; charset=utf-8", b"{\"detail\":1}"),
                typed("text/html; charset=utf-8", "<p>caf\u{e9}</p>".as_bytes()),
                typed("application/octet-stream", &[0, 159, 146, 150]),
                typed("image/png", b"\x89PNG"),
                gzipped,
                untyped,
                repeated,
            ]
        };
        for (ours, theirs) in answers().into_iter().zip(answers()) {
            let ours = serde_json::to_value(api_gateway_response(ours).await.expect("an answer"))
                .expect("JSON");
            assert_eq!(ours, lambda_http_answer(theirs).await);
        }
    }

    #[test]
    fn a_route_is_matched_on_the_path_api_gateway_sent_whatever_the_stage() {
        for stage in ["live", "api", "prod", "v1"] {
            let request = without_stage(event(stage, "/scanned_parcel/1", None));
            assert_eq!(request.uri().path(), "/scanned_parcel/1", "stage {stage}");
        }
    }

    #[test]
    fn the_query_is_kept_and_a_path_that_starts_like_the_stage_is_left_whole() {
        let parsed = event("api", "/events", Some(("event_type", "a b")));
        let query = parsed.uri().query().map(str::to_string);
        assert!(
            query
                .as_deref()
                .is_some_and(|q| q.starts_with("event_type=a")),
            "{query:?}"
        );
        let request = without_stage(parsed);
        assert_eq!(request.uri().path(), "/events");
        assert_eq!(request.uri().query(), query.as_deref());
        // An event type named like the stage: `/live/1` under stage `live` is the route itself.
        let request = without_stage(event("live", "/live/1", None));
        assert_eq!(request.uri().path(), "/live/1");
        let request = without_stage(event("live", "/lively/1", None));
        assert_eq!(request.uri().path(), "/lively/1");
    }
}
