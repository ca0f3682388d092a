//! A Lambda function's execution environment on this machine: an emulation of the Lambda Runtime
//! API (the protocol `lambda_runtime` speaks: `GET /2018-06-01/runtime/invocation/next`,
//! `POST .../response`, `.../error`, `init/error`) and the function's `bootstrap` started against
//! it as a process, with the variables the Lambda service sets and nothing from the caller's
//! shell.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use tokio::sync::Notify;

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// An invocation's answer: when it came, whether it succeeded, and its body (the response, or
/// the error document with `errorType` and `errorMessage`).
#[derive(Debug, Clone)]
pub struct Answer {
    pub at: Instant,
    pub ok: bool,
    pub body: String,
}

/// The Runtime API of one function instance: the invocations waiting for it and its answers.
#[derive(Default)]
pub struct Runtime {
    pending: Mutex<VecDeque<(String, String)>>,
    answers: Mutex<HashMap<String, Answer>>,
    queued: Notify,
    answered: Notify,
}

async fn next(State(rt): State<Arc<Runtime>>) -> (HeaderMap, String) {
    loop {
        let waiting = rt.queued.notified();
        if let Some((id, body)) = rt.pending.lock().expect("lock").pop_front() {
            let mut headers = HeaderMap::new();
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                + TIMEOUT;
            let header = |v: String| HeaderValue::from_str(&v).expect("a header value");
            headers.insert("lambda-runtime-aws-request-id", header(id));
            headers.insert(
                "lambda-runtime-deadline-ms",
                header(deadline.as_millis().to_string()),
            );
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                header("arn:aws:lambda:eu-west-1:123456789012:function:busway".into()),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                header("Root=1-00000000-000000000000000000000000".into()),
            );
            return (headers, body);
        }
        waiting.await;
    }
}

fn answer(rt: &Runtime, id: String, ok: bool, body: Bytes) -> StatusCode {
    let body = String::from_utf8_lossy(&body).to_string();
    let at = Instant::now();
    rt.answers
        .lock()
        .expect("lock")
        .insert(id, Answer { at, ok, body });
    rt.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn response(
    State(rt): State<Arc<Runtime>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(&rt, id, true, body)
}

async fn error(
    State(rt): State<Arc<Runtime>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(&rt, id, false, body)
}

async fn init_error(State(rt): State<Arc<Runtime>>, body: Bytes) -> StatusCode {
    answer(&rt, "init".into(), false, body)
}

impl Runtime {
    /// Serves a Runtime API on a port of its own; returns it with its `host:port`.
    pub async fn serve() -> (Arc<Runtime>, String) {
        let rt = Arc::new(Runtime::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(rt.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (rt, addr)
    }

    /// Queues an invocation and waits for its answer. A function that failed to start (an
    /// `init/error`, e.g. a variable it needs is missing) fails the caller with its message.
    pub async fn invoke(&self, id: &str, event: &str) -> Answer {
        self.pending
            .lock()
            .expect("lock")
            .push_back((id.to_string(), event.to_string()));
        self.queued.notify_waiters();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let answered = self.answered.notified();
            let found = {
                let answers = self.answers.lock().expect("lock");
                if let Some(init) = answers.get("init") {
                    panic!("the function failed to start: {}", init.body);
                }
                answers.get(id).cloned()
            };
            if let Some(a) = found {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no answer to {id} within {TIMEOUT:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), answered).await;
        }
    }
}

/// Where Debian's `libc6-arm64-cross` puts the arm64 C library, for qemu-user to load.
const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// The command that runs `binary` here: the binary itself, or an arm64 build (what infra deploys,
/// `scripts/build-lambdas.sh --arm64`) through qemu-user's emulation on another machine. Under
/// emulation the process measured is qemu's, so its times and memory compare only with another
/// emulated build's.
fn command(binary: &Path) -> Command {
    if std::env::consts::ARCH == "aarch64" || !is_aarch64_elf(binary) {
        return Command::new(binary);
    }
    let qemu = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("qemu-aarch64"))
                .find(|qemu| qemu.is_file())
        })
        .filter(|_| Path::new(AARCH64_SYSROOT).join("lib").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "{} is an arm64 build: running it here needs qemu-aarch64 and {AARCH64_SYSROOT} \
                 (Debian's qemu-user and libc6-arm64-cross, which scripts/setup.sh installs)",
                binary.display()
            )
        });
    let mut command = Command::new(qemu);
    command.arg("-L").arg(AARCH64_SYSROOT).arg(binary);
    command
}

/// Whether `binary` is an ELF executable for arm64: `e_machine` (bytes 18 and 19 of the ELF
/// header, little-endian on arm64) is 183, `EM_AARCH64`.
fn is_aarch64_elf(binary: &Path) -> bool {
    let mut header = [0; 20];
    std::fs::File::open(binary)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
        .is_ok_and(|()| header.starts_with(b"\x7fELF") && header[18..20] == [183, 0])
}

/// A function's `bootstrap` running against its own Runtime API; killed when dropped.
pub struct Function {
    pub name: String,
    pub runtime: Arc<Runtime>,
    child: Mutex<Child>,
    invocations: std::sync::atomic::AtomicUsize,
}

impl Drop for Function {
    fn drop(&mut self) {
        let child = self.child.get_mut().expect("lock");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Function {
    /// Starts `binary` as the function `name` with exactly `env` (the function's configured
    /// variables, its credentials, region and endpoint) plus the Lambda service's own variables.
    pub async fn start(name: &str, binary: &Path, env: &[(String, String)]) -> Function {
        let (runtime, addr) = Runtime::serve().await;
        let child = command(binary)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", &addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("_HANDLER", "bootstrap")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", binary.display()));
        Function {
            name: name.to_string(),
            runtime,
            child: Mutex::new(child),
            invocations: Default::default(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().expect("lock").id()
    }

    /// Invokes the function; a process that ends instead of answering (a variable it needs is
    /// missing, a panic) fails the caller with its exit status.
    pub async fn invoke(&self, event: &str) -> Answer {
        let n = self
            .invocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n}", self.name);
        let answer = self.runtime.invoke(&id, event);
        tokio::pin!(answer);
        loop {
            tokio::select! {
                a = &mut answer => return a,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    let exited = self.child.lock().expect("lock").try_wait();
                    if let Ok(Some(status)) = exited {
                        panic!("{} exited ({status}) instead of answering: its log is above", self.name);
                    }
                }
            }
        }
    }
}

/// An API Gateway REST proxy event as API Gateway sends it to a function behind `stage`: `path`
/// without the stage, `requestContext.path` with it, `resource` the API's resource
/// (`/{proxy+}` for the portal, `/{event_type}/{version}` for a producer route). Built on a
/// captured event (the portal's fixture) so every field a real one has is there.
pub fn api_gateway_event(
    stage: &str,
    method: &str,
    resource: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> String {
    use serde_json::{Map, Value, json};
    let mut event: Value = serde_json::from_str(include_str!(
        "../../functions/portal/tests/fixtures/apigw_rest_get_event.json"
    ))
    .expect("the fixture is JSON");
    event["httpMethod"] = json!(method);
    event["path"] = json!(path);
    event["resource"] = json!(resource);
    event["pathParameters"] = match resource {
        "/{proxy+}" => json!({"proxy": path.trim_start_matches('/')}),
        _ => Value::Null,
    };
    event["requestContext"]["stage"] = json!(stage);
    event["requestContext"]["httpMethod"] = json!(method);
    event["requestContext"]["resourcePath"] = json!(resource);
    event["requestContext"]["path"] = json!(format!("/{stage}{path}"));
    if !query.is_empty() {
        let single: Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let multi: Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.to_string(), json!([v])))
            .collect();
        event["queryStringParameters"] = Value::Object(single);
        event["multiValueQueryStringParameters"] = Value::Object(multi);
    }
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
        event["headers"]["Content-Type"] = json!("application/json");
        event["multiValueHeaders"]["Content-Type"] = json!(["application/json"]);
    }
    event.to_string()
}

/// `event` (an API Gateway event) as the key authorizer would hand it on for `caller`: its
/// context in `requestContext.authorizer` (the fixture's is a platform admin's).
pub fn authorized_as(event: &str, caller: &busway_core::auth::Caller) -> String {
    let mut event: serde_json::Value = serde_json::from_str(event).expect("an event");
    let mut context: serde_json::Map<String, serde_json::Value> = caller
        .to_context()
        .into_iter()
        .map(|(name, value)| (name.to_string(), serde_json::Value::String(value)))
        .collect();
    context.insert("principalId".into(), caller.key_id.clone().into());
    event["requestContext"]["authorizer"] = serde_json::Value::Object(context);
    event.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_arm64_elf_header_is_taken_for_an_arm64_build() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut header = [0_u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[18] = 183;
        let arm64 = dir.path().join("arm64");
        std::fs::write(&arm64, header).expect("a file");
        assert!(is_aarch64_elf(&arm64));

        header[18] = 62; // EM_X86_64
        let x86_64 = dir.path().join("x86_64");
        std::fs::write(&x86_64, header).expect("a file");
        assert!(!is_aarch64_elf(&x86_64));
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").expect("a file");
        assert!(!is_aarch64_elf(&script));
        assert!(!is_aarch64_elf(&dir.path().join("missing")));
    }
}
