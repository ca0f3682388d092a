//! The `busway` binary as a script sees it: output and exit codes.

use std::path::Path;
use std::process::Command;

fn busway(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_busway"))
        .args(args)
        .output()
        .expect("busway runs");
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (
        output.status.code().expect("busway exits, not killed"),
        text,
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file is writable");
    path.to_str().expect("temp path is UTF-8").to_string()
}

const EVENT: &str = r#"{"version":"0","id":"1","detail-type":"scanned_parcel.1","source":"busway.demo","account":"000000000000",
"time":"2026-11-26T00:00:00Z","region":"local","resources":[],"detail":{"metadata":{"event_attributes":{"target":"u2"}}}}"#;

#[test]
fn pattern_test_exits_like_grep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let event = write(dir.path(), "event.json", EVENT);
    let matching = write(
        dir.path(),
        "m.json",
        r#"{"detail":{"metadata":{"event_attributes":{"target":["u2"]}}}}"#,
    );
    let other = write(
        dir.path(),
        "o.json",
        r#"{"detail":{"metadata":{"event_attributes":{"target":["u3"]}}}}"#,
    );
    let invalid = write(dir.path(), "i.json", r#"{"source":[]}"#);

    assert_eq!(
        busway(&["pattern", "test", "--pattern", &matching, "--event", &event]),
        (0, "match".into())
    );
    assert_eq!(
        busway(&["pattern", "test", "--pattern", &other, "--event", &event]),
        (1, "no match".into())
    );
    let (code, text) = busway(&["pattern", "test", "--pattern", &invalid, "--event", &event]);
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "Event pattern is not valid. Reason: Empty arrays are not allowed"
    );
    let missing = dir.path().join("missing.json");
    let (code, _) = busway(&[
        "pattern",
        "test",
        "--pattern",
        missing.to_str().expect("utf-8"),
        "--event",
        &event,
    ]);
    assert_eq!(code, 2);
}

#[test]
fn help_explains_each_command() {
    let (code, text) = busway(&["--help"]);
    assert_eq!(code, 0);
    for command in ["up", "pattern", "backup"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from:\n{text}"
        );
    }
    let (_, up) = busway(&["up", "--help"]);
    for flag in [
        "--data-dir",
        "--portal-addr",
        "--broker-addr",
        "./.busway",
        "127.0.0.1:4000",
        "127.0.0.1:4001",
    ] {
        assert!(up.contains(flag), "{flag} missing from:\n{up}");
    }
}

#[test]
fn a_size_that_would_refuse_every_event_is_refused_at_start() {
    for (flag, value) in [("--max-event-bytes", "0"), ("--max-entry-bytes", "10")] {
        let output = Command::new(env!("CARGO_BIN_EXE_busway"))
            .args(["up", flag, value])
            .output()
            .expect("busway runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains("at least"), "{stderr}");
    }
}
