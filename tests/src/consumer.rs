//! Stand-in targets a test runs next to the broker: an HTTP consumer and a Lambda Invoke API
//! endpoint, on port 0 (or, for a kept fixture, on the address its subscription names). They
//! record every request as raw bytes and answer as scripted: 200, or a failure for the next n
//! requests or forever.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const POLL_EVERY: Duration = Duration::from_millis(10);

/// How a scripted request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answers with this status.
    Status(u16),
    /// Answers 200 with `X-Amz-Function-Error: Unhandled`, as the Invoke API does when the
    /// function threw.
    FunctionError,
    /// Does not answer for a minute, so the caller's timeout ends the request.
    Hang,
    /// Answers 429 with `Retry-After` in seconds.
    Throttle(u64),
}

/// One request as it arrived, and what it was answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path with its query, as sent.
    pub uri: String,
    /// The headers, by lowercase name.
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
    /// The status answered; `None` while a hanging request is still open.
    pub answered: Option<u16>,
    pub succeeded: bool,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a target received a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `detail.metadata.event_id` of the delivered event.
    pub fn event_id(&self) -> String {
        event_id(&self.json())
    }
}

/// `detail.metadata.event_id` of an EventBridge event.
pub fn event_id(event: &Value) -> String {
    event["detail"]["metadata"]["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a delivered event without detail.metadata.event_id: {event}"))
        .to_string()
}

#[derive(Default)]
struct Script {
    failure: Option<Failure>,
    /// Failures left; `None` is forever.
    remaining: Option<usize>,
}

struct Inner {
    lambda: bool,
    requests: Mutex<Vec<Request>>,
    script: Mutex<Script>,
    /// Events (by `detail.metadata.event_id`) answered 500 whatever the script says.
    poisoned: Mutex<std::collections::HashSet<String>>,
    /// Serves one request at a time, taking this long each, when set.
    serial: Option<(tokio::sync::Mutex<()>, Duration)>,
    /// Requests being served now, and the most at once.
    concurrency: Mutex<(usize, usize)>,
}

/// A stand-in target. Dropping it stops its server.
pub struct Consumer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Consumer {
    /// An HTTP consumer: every POST on any path is an event.
    pub async fn start() -> Consumer {
        Self::serve(false, "127.0.0.1:0").await
    }

    /// An HTTP consumer that serves one request at a time, each taking `per_request`, as a
    /// single-threaded server does; the others wait for their turn.
    pub async fn serial(per_request: Duration) -> Consumer {
        Self::serve_with(false, "127.0.0.1:0", Some(per_request)).await
    }

    /// An HTTP consumer on a fixed address: a kept data dir's subscriptions name their URL.
    pub async fn start_on(addr: &str) -> Consumer {
        Self::serve(false, addr).await
    }

    /// A Lambda Invoke API endpoint: only `POST /2015-03-31/functions/{name}/invocations`
    /// invokes; any other request is answered 404.
    pub async fn lambda() -> Consumer {
        Self::serve(true, "127.0.0.1:0").await
    }

    async fn serve(lambda: bool, addr: &str) -> Consumer {
        Self::serve_with(lambda, addr, None).await
    }

    async fn serve_with(lambda: bool, addr: &str, serial: Option<Duration>) -> Consumer {
        let inner = Arc::new(Inner {
            lambda,
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Script::default()),
            poisoned: Mutex::new(Default::default()),
            serial: serial.map(|d| (tokio::sync::Mutex::new(()), d)),
            concurrency: Mutex::new((0, 0)),
        });
        let app = Router::new().fallback(answer).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("a consumer port on loopback ({addr}): {e}"));
        let addr = listener.local_addr().expect("the consumer's address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the stand-in consumer serves");
        });
        Consumer {
            addr,
            inner,
            server,
        }
    }

    /// Stops serving and frees the address, so the next test can listen on it again.
    pub async fn stop(mut self) {
        self.server.abort();
        let _ = (&mut self.server).await;
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Fails the next `times` requests with `failure`, then answers 200 again.
    pub fn fail(&self, failure: Failure, times: usize) {
        *self.script() = Script {
            failure: Some(failure),
            remaining: Some(times),
        };
    }

    /// Fails every request with `failure` until `recover`.
    pub fn fail_forever(&self, failure: Failure) {
        *self.script() = Script {
            failure: Some(failure),
            remaining: None,
        };
    }

    pub fn recover(&self) {
        *self.script() = Script::default();
    }

    /// Answers 500 to every delivery of the event with this `detail.metadata.event_id`.
    pub fn poison(&self, event_id: &str) {
        self.inner
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(event_id.to_string());
    }

    pub fn cure(&self, event_id: &str) {
        self.inner
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(event_id);
    }

    /// The most requests this target served at once.
    pub fn max_concurrency(&self) -> usize {
        self.inner
            .concurrency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.inner.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests answered with success, in arrival order.
    pub fn delivered(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.succeeded)
            .collect()
    }

    /// The event ids of the successful deliveries, in arrival order (duplicates kept).
    pub fn delivered_ids(&self) -> Vec<String> {
        self.delivered().iter().map(Request::event_id).collect()
    }

    /// Waits until `done` holds for the requests so far; panics with `what` after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let started = Instant::now();
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?}; the target saw {} requests: {:?}",
                requests.len(),
                requests
                    .iter()
                    .map(|r| (r.uri.as_str(), r.answered, String::from_utf8_lossy(&r.body)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits until at least `n` requests were answered with success, and returns them.
    pub async fn wait_for_deliveries(&self, n: usize, timeout: Duration) -> Vec<Request> {
        self.wait_until(&format!("{n} successful deliveries"), timeout, |requests| {
            requests.iter().filter(|r| r.succeeded).count() >= n
        })
        .await
        .into_iter()
        .filter(|r| r.succeeded)
        .collect()
    }

    /// Waits `quiet` and asserts no request arrived beyond the `expected` ones.
    pub async fn assert_no_more_than(&self, expected: usize, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        let requests = self.requests();
        assert!(
            requests.len() <= expected,
            "expected at most {expected} requests, the target saw {}: {:?}",
            requests.len(),
            requests
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect::<Vec<_>>()
        );
    }
}

fn is_invoke_path(path: &str) -> bool {
    path.strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

async fn answer(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    // Counted on arrival: what the sender has in flight, served or waiting for a turn.
    {
        let mut c = inner.concurrency.lock().unwrap_or_else(|p| p.into_inner());
        c.0 += 1;
        c.1 = c.1.max(c.0);
    }
    let _turn = match &inner.serial {
        Some((turn, _)) => Some(turn.lock().await),
        None => None,
    };
    let response = respond(&inner, method, uri, headers, body).await;
    if let Some((_, per_request)) = &inner.serial {
        tokio::time::sleep(*per_request).await;
    }
    inner
        .concurrency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .0 -= 1;
    response
}

async fn respond(
    inner: &Inner,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let poisoned = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|event| {
            event["detail"]["metadata"]["event_id"]
                .as_str()
                .map(str::to_string)
        })
        .is_some_and(|id| {
            inner
                .poisoned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id)
        });
    let failure = if poisoned {
        Some(Failure::Status(500))
    } else {
        let mut script = inner.script.lock().unwrap_or_else(|p| p.into_inner());
        let failure = script.failure;
        match &mut script.remaining {
            Some(0) => {
                *script = Script::default();
                None
            }
            Some(n) => {
                *n -= 1;
                failure
            }
            None => failure,
        }
    };
    let routed = method == Method::POST && (!inner.lambda || is_invoke_path(uri.path()));
    let index = {
        let mut requests = inner.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.push(Request {
            method: method.to_string(),
            uri: uri.to_string(),
            headers,
            body,
            answered: None,
            succeeded: false,
        });
        requests.len() - 1
    };
    let (status, succeeded, response) = match (routed, failure) {
        (false, _) => (404, false, StatusCode::NOT_FOUND.into_response()),
        (true, None) => {
            let body = if inner.lambda { "null" } else { "{}" };
            (200, true, body.into_response())
        }
        (true, Some(Failure::Status(code))) => {
            let status = StatusCode::from_u16(code).expect("a valid scripted status");
            (code, false, status.into_response())
        }
        (true, Some(Failure::FunctionError)) => (
            200,
            false,
            (
                [("x-amz-function-error", "Unhandled")],
                json!({"errorMessage": "stand-in failure", "errorType": "Error"}).to_string(),
            )
                .into_response(),
        ),
        (true, Some(Failure::Throttle(seconds))) => (
            429,
            false,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", seconds.to_string())],
            )
                .into_response(),
        ),
        (true, Some(Failure::Hang)) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (504, false, StatusCode::GATEWAY_TIMEOUT.into_response())
        }
    };
    if let Some(request) = inner
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(index)
    {
        request.answered = Some(status);
        request.succeeded = succeeded;
    }
    response
}

/// `POST /subscriptions` for an HTTPS target on `scanned_parcel`.
pub fn http_subscription(version: u32, target_unit: &str, url: &str) -> Value {
    json!({
        "event_type": "scanned_parcel",
        "version": version.to_string(),
        "target_unit": target_unit,
        "connection_type": "HTTPS",
        "connection_string": url
    })
}
