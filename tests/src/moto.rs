//! One moto server (the AWS API emulator) per test binary, for the AWS adapters' tests over the
//! real wire. It starts on first use; each test gives its tables and buckets unique names, so
//! the tests of a binary share it. It stops when the test process ends, however that ends.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// The region the project's emulated resources live in (AWS-EMULATION.md).
pub const REGION: &str = "eu-west-1";

const START_TIMEOUT: Duration = Duration::from_secs(20);

struct Moto {
    endpoint: String,
    /// A shell that holds moto's PID and the read end of a pipe whose write end only this
    /// process holds: when this process exits, the pipe closes and the shell kills moto. A
    /// static is never dropped, so a `Drop` impl could not do it.
    _keeper: Child,
}

/// The endpoint of this test binary's moto server, `http://127.0.0.1:{port}`.
pub async fn endpoint() -> &'static str {
    static MOTO: OnceCell<Moto> = OnceCell::const_new();
    &MOTO.get_or_init(start).await.endpoint
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

async fn start() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
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
    let deadline = Instant::now() + START_TIMEOUT;
    while reqwest::get(format!("{endpoint}/moto-api/")).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "moto server did not answer on {endpoint} within {START_TIMEOUT:?}: is it installed (scripts/setup.sh)?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto {
        endpoint,
        _keeper: keeper,
    }
}
