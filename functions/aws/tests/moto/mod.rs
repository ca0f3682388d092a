//! A moto server (the AWS API emulator) for one test, stopped when dropped, and SDK clients on
//! it with moto's static credentials.
// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "eu-west-1";

/// moto from the project's venv (scripts/setup.sh installs it), else from PATH.
fn moto_server() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("moto_server")
    }
}

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(moto_server())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server runs: scripts/setup.sh installs it into .venv");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

macro_rules! client {
    ($name:ident, $sdk:ident $(, $setting:ident)*) => {
        impl Moto {
            pub fn $name(&self) -> $sdk::Client {
                use $sdk::config::{BehaviorVersion, Credentials, Region};
                $sdk::Client::from_conf(
                    $sdk::Config::builder()
                        .behavior_version(BehaviorVersion::latest())
                        .region(Region::new(REGION))
                        .endpoint_url(&self.endpoint)
                        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
                        $(.$setting(true))*
                        .build(),
                )
            }
        }
    };
}

client!(eventbridge, aws_sdk_eventbridge);
client!(sqs, aws_sdk_sqs);
client!(dynamodb, aws_sdk_dynamodb);
client!(s3, aws_sdk_s3, force_path_style);
