//! `busway keys`: keys made, listed and rotated on the data dir while `busway up` serves it.

use std::path::Path;
use std::process::Command;

use busway_local::{Config, Running};
use serde_json::{Value, json};

fn busway(args: &[&str], data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_busway"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("busway runs");
    assert!(
        output.status.success(),
        "busway {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

async fn status(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let request = match body {
        Some(body) => http.post(url).json(body),
        None => http.get(url),
    };
    let response = request
        .bearer_auth(key)
        .send()
        .await
        .expect("busway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_on_the_data_dir_of_a_running_busway_works_at_once_and_is_listed_without_its_secret()
 {
    let data = tempfile::tempdir().expect("a temp data dir");
    let any = "127.0.0.1:0".parse().expect("an address");
    let running = Running::start(Config::new(data.path().to_path_buf(), any, any))
        .await
        .expect("busway starts");
    let portal = format!("http://{}", running.portal_addr);
    let http = reqwest::Client::new();

    let made = busway(
        &["keys", "create", "--team", "logistics", "--role", "owner"],
        data.path(),
    );
    let key = made
        .lines()
        .last()
        .expect("the key, alone on the last line");
    assert!(key.starts_with("bwk_") && key.len() == 68, "{made}");
    let event = json!({"application": "demo", "event_type": "scanned_parcel",
        "description": "d", "connection_type": "HTTPS",
        "data": {"type": "object", "properties": {"n": {"type": "integer"}}}});
    let (created, body) = status(&http, &format!("{portal}/events"), key, Some(&event)).await;
    assert_eq!(created, 201, "{body}");
    assert_eq!(body["team"], "logistics");

    let listed = busway(&["keys", "list"], data.path());
    assert!(!listed.contains(key), "a listed key never shows its secret");
    let keys: Value = serde_json::from_str(&listed).expect("a JSON list");
    let id = keys
        .as_array()
        .and_then(|k| k.iter().find(|k| k["team"] == "logistics"))
        .and_then(|k| k["id"].as_str())
        .expect("the new key is listed")
        .to_string();

    // Rotation: both the old key (for 24 hours) and its successor work.
    let rotated = busway(&["keys", "rotate", &id], data.path());
    let successor = rotated.lines().last().expect("the successor");
    assert_ne!(successor, key);
    for key in [key, successor] {
        let (answer, body) = status(&http, &format!("{portal}/events"), key, None).await;
        assert_eq!(answer, 200, "{body}");
    }
    // A producer key needs its application.
    let refused = Command::new(env!("CARGO_BIN_EXE_busway"))
        .args([
            "keys",
            "create",
            "--team",
            "logistics",
            "--role",
            "producer",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .expect("busway runs");
    assert!(!refused.status.success());
    running.stop().await;
}

#[test]
fn a_data_dir_of_an_older_release_is_refused_not_upgraded() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("busway.db");
    let older = busway_local::migrations::STORE.latest() - 1;
    rusqlite::Connection::open(&db)
        .and_then(|c| c.pragma_update(None, "user_version", older))
        .expect("an older store");
    let output = Command::new(env!("CARGO_BIN_EXE_busway"))
        .args(["keys", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("busway runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("older busway"), "{stderr}");
    let version: u32 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("a version");
    assert_eq!(version, older, "the store was left as it was");
    assert!(!dir.path().join("backups").exists());
}
