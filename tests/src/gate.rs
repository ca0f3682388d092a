//! The AWS endpoint a function under test talks to: every request is read as IAM reads it
//! (`iam::Request::calls`), recorded, and judged against the function's role. An allowed request
//! goes on to moto server, or to the stand-in Schema Registry below (moto has none); a denied one
//! gets AWS's AccessDenied answer, as it would on AWS. A GET of a missing S3 object by a role that
//! may not list the bucket is answered 403, not 404, as S3 does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::iam::{Call, Policy, Request};

/// One call a function made, and whether its role allowed it.
#[derive(Debug, Clone)]
pub struct Record {
    pub function: String,
    pub call: Call,
    pub allowed: bool,
}

/// What every function's gate shares: the emulator, the stand-in registry and the log.
pub struct Account {
    pub moto: String,
    pub region: String,
    pub log: Mutex<Vec<Record>>,
    registry: Mutex<BTreeMap<(String, String), Vec<String>>>,
    client: reqwest::Client,
}

impl Account {
    pub fn new(moto: &str, region: &str) -> Arc<Account> {
        Arc::new(Account {
            moto: moto.to_string(),
            region: region.to_string(),
            log: Mutex::default(),
            registry: Mutex::default(),
            client: reqwest::Client::new(),
        })
    }

    pub fn records(&self) -> Vec<Record> {
        self.log.lock().expect("lock").clone()
    }

    /// A gate for `function`, judged by `policy`; returns its endpoint URL.
    pub async fn gate(self: &Arc<Self>, function: &str, policy: Policy) -> String {
        let state = Arc::new(Gate {
            account: self.clone(),
            function: function.to_string(),
            policy,
        });
        let app = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}

struct Gate {
    account: Arc<Account>,
    function: String,
    policy: Policy,
}

async fn handle(State(gate): State<Arc<Gate>>, request: HttpRequest) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("the request body");
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let wire = Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        authorization: header("authorization").unwrap_or_default(),
        target: header("x-amz-target"),
        body: &body,
    };
    let service = wire.service().unwrap_or_default().to_string();
    let calls = wire.calls(&gate.account.region);
    let mut denied = None;
    {
        let mut log = gate.account.log.lock().expect("lock");
        for call in calls {
            let allowed = gate.policy.allows(&call);
            if !allowed {
                denied.get_or_insert_with(|| call.clone());
            }
            log.push(Record {
                function: gate.function.clone(),
                call,
                allowed,
            });
        }
    }
    if let Some(call) = denied {
        return access_denied(&service, &gate.function, &call);
    }
    if service == "schemas" {
        return gate.account.schemas(&parts.method, &wire, &body);
    }
    let answer = gate
        .account
        .forward(&parts.method, &parts.uri, &parts.headers, body)
        .await;
    // S3 answers 403 for a missing key when the caller may not list the bucket: it must not
    // learn which keys exist.
    if service == "s3" && answer.status() == StatusCode::NOT_FOUND {
        let bucket = parts
            .uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let list = Call {
            action: "s3:ListBucket".into(),
            resource: format!("arn:aws:s3:::{bucket}"),
            ..Call::default()
        };
        if !gate.policy.allows(&list) {
            return access_denied("s3", &gate.function, &list);
        }
    }
    answer
}

fn access_denied(service: &str, function: &str, call: &Call) -> Response {
    let message = format!(
        "User: {function} is not authorized to perform: {} on resource: {}",
        call.action, call.resource
    );
    match service {
        "s3" => (
            StatusCode::FORBIDDEN,
            [("content-type", "application/xml")],
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"),
        )
            .into_response(),
        "schemas" => error("ForbiddenException", StatusCode::FORBIDDEN, &message),
        _ => error("AccessDeniedException", StatusCode::BAD_REQUEST, &message),
    }
}

/// An error of the JSON protocols, typed as the SDKs read it.
fn error(code: &str, status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amzn-errortype", code),
        ],
        json!({"__type": code, "message": message, "Message": message}).to_string(),
    )
        .into_response()
}

impl Account {
    async fn forward(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let url = format!(
            "{}{}",
            self.moto,
            uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut request = self.client.request(method.clone(), url).body(body);
        for (name, value) in headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        let answer = request.send().await.expect("moto answers");
        let mut response = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if name != "content-length" && name != "transfer-encoding" {
                response = response.header(name, value);
            }
        }
        let bytes = answer.bytes().await.expect("moto's body");
        response.body(Body::from(bytes)).expect("a response")
    }

    /// The Schema Registry calls busway makes (`busway_aws::schemas`), on versions kept here.
    fn schemas(&self, method: &Method, wire: &Request<'_>, body: &[u8]) -> Response {
        let parts: Vec<&str> = wire.path.trim_start_matches('/').split('/').collect();
        let key = (parts[3].to_string(), parts[6].to_string());
        let mut registry = self.registry.lock().expect("lock");
        let content = || {
            serde_json::from_slice::<Value>(body).expect("a JSON body")["Content"]
                .as_str()
                .expect("Content")
                .to_string()
        };
        let summary = |versions: &Vec<String>, version: usize| {
            json!({
                "SchemaName": key.1, "SchemaVersion": version.to_string(), "Type": "JSONSchemaDraft4",
                "SchemaArn": format!("arn:aws:schemas:{}:123456789012:schema/{}/{}", self.region, key.0, key.1),
                "Content": versions[version - 1],
            })
        };
        let ok = |status: StatusCode, v: Value| {
            let mut r = (status, v.to_string()).into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        };
        let not_found = || error("NotFoundException", StatusCode::NOT_FOUND, "no such schema");
        match (method.as_str(), parts.len()) {
            ("POST", 7) => {
                if registry.contains_key(&key) {
                    return error("ConflictException", StatusCode::CONFLICT, "schema exists");
                }
                let versions = registry.entry(key.clone()).or_default();
                versions.push(content());
                ok(StatusCode::CREATED, summary(versions, 1))
            }
            ("PUT", 7) => match registry.get_mut(&key) {
                Some(versions) => {
                    versions.push(content());
                    ok(StatusCode::OK, summary(versions, versions.len()))
                }
                None => not_found(),
            },
            ("GET", 7) => {
                let Some(versions) = registry.get(&key) else {
                    return not_found();
                };
                let asked = wire
                    .query
                    .split('&')
                    .find_map(|p| p.strip_prefix("schemaVersion="))
                    .map(|v| v.parse::<usize>().expect("a version number"));
                match asked.unwrap_or(versions.len()) {
                    v if (1..=versions.len()).contains(&v) => {
                        ok(StatusCode::OK, summary(versions, v))
                    }
                    _ => not_found(),
                }
            }
            ("GET", 8) => match registry.get(&key) {
                Some(versions) => {
                    let all: Vec<Value> =
                        (1..=versions.len()).map(|v| summary(versions, v)).collect();
                    ok(StatusCode::OK, json!({"SchemaVersions": all}))
                }
                None => not_found(),
            },
            _ => panic!("a Schema Registry call {method} {}", wire.path),
        }
    }
}
