//! Serving an API's router from a Lambda function behind API Gateway (REST, proxy integration).

use busway_core::auth::Caller;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use tower::ServiceBuilder;

/// Runs `router` as the function's handler, routing on the path the API's routes are written
/// for whatever the stage is called. `lambda_http` puts the stage in front of the path unless the
/// function runs with `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`; a route that depends on a variable
/// someone must remember to set answers 404 to everything the day it is missing, so the stage
/// is taken off here, with or without that variable.
pub async fn run(router: axum::Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(
        ServiceBuilder::new()
            .map_request(without_stage)
            .map_request(with_caller)
            .service(router.layer(axum::middleware::from_fn(crate::request_id::layer))),
    )
    .await
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
