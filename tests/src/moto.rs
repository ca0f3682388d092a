//! moto server (the AWS API emulator) for the tests of every crate: one shared server per test
//! binary (`endpoint`), or a server of a test's own (`Moto::start`, stopped when dropped), each
//! with its Step Functions engine switched on (moto only records executions otherwise), and the SDK configuration that
//! reaches it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use tokio::sync::OnceCell;

/// The region the project's emulated resources live in.
pub const REGION: &str = "eu-west-1";

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A moto server of one test, stopped when dropped.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub async fn start() -> Moto {
        let port = free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs: scripts/setup.sh installs it into .venv");
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        ready(&moto.endpoint).await;
        moto
    }
}

/// The shared server of this test binary: started on first use, stopped when the test process
/// ends, however that ends. Tests on it give their resources unique names.
pub async fn endpoint() -> &'static str {
    static SHARED: OnceCell<Shared> = OnceCell::const_new();
    &SHARED.get_or_init(start_shared).await.endpoint
}

struct Shared {
    endpoint: String,
    /// A shell that holds moto's PID and the read end of a pipe whose write end only this
    /// process holds: when this process exits, the pipe closes and the shell kills moto. A
    /// static is never dropped, so a `Drop` impl could not do it.
    _keeper: Child,
}

async fn start_shared() -> Shared {
    let port = free_port();
    let keeper = Command::new("sh")
        .args([
            "-c",
            r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & moto=$!; read -r _; kill "$moto""#,
        ])
        .arg(moto_server())
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let endpoint = format!("http://127.0.0.1:{port}");
    ready(&endpoint).await;
    Shared {
        endpoint,
        _keeper: keeper,
    }
}

/// The SDK configuration that reaches moto at `endpoint`: its region and moto's static
/// credentials. S3 clients also need path-style addressing (`s3`).
pub async fn sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await
}

/// An S3 client on moto, which serves every bucket on one host.
pub fn s3(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

/// moto from the project's venv (`make test` runs scripts/setup.sh, which installs it), else
/// from PATH.
fn moto_server() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("moto_server")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits for the server to answer, then switches its Step Functions engine on (it is a stub
/// otherwise), with Lambda invocations that run no code (no Docker here).
async fn ready(endpoint: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    while reqwest::get(format!("{endpoint}/moto-api/")).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "moto server did not answer on {endpoint} within {START_TIMEOUT:?}: is it installed (scripts/setup.sh)?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let configured = reqwest::Client::new()
        .post(format!("{endpoint}/moto-api/config"))
        .json(&serde_json::json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}))
        .send()
        .await
        .expect("moto's config API answers");
    assert!(
        configured.status().is_success(),
        "moto refused its configuration"
    );
}
