//! The local servers' limits, over HTTP on `busway up`'s servers: a request still running after
//! the request timeout is answered 408, and a request beyond the concurrency limit waits for a
//! turn instead of being served at once. A slow client (a body that stops half-way) holds its
//! request open for as long as it likes.

use std::time::Duration;

use busway_tests::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY_BYTES: usize = 100;
const FIRST_PART: &str = r#"{"a":"#;

/// `host:port` of a server URL.
fn address(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// A POST to `path` with `key` that sends its headers and the start of its body, then waits.
async fn stalled_post(url: &str, path: &str, key: &str) -> TcpStream {
    let addr = address(url);
    let mut stream = TcpStream::connect(&addr).await.expect("connects");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n\r\n{FIRST_PART}"
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    stream
}

/// The status and body of the answer on `stream`, within a minute.
async fn answer(stream: &mut TcpStream) -> (u16, String) {
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&answer).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let n = stream.read(&mut buf).await.expect("reads");
            assert!(n > 0, "the server closed without answering");
            answer.extend_from_slice(&buf[..n]);
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("an answer within a minute");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlasts_the_timeout_is_answered_408_on_both_servers() {
    let busway = Broker::start_with(|c| c.request_timeout = Duration::from_secs(1)).await;
    for (url, path) in [
        (busway.portal_url(""), "/events"),
        (busway.broker_url(""), "/scanned_parcel/1"),
    ] {
        let mut stalled = stalled_post(&url, path, &busway.admin_key).await;
        let (status, body) = answer(&mut stalled).await;
        assert_eq!(status, 408, "{url}{path}");
        assert!(body.contains(r#""code":"request_timeout""#), "{body}");
    }
    // A request that does not stall is served as usual.
    busway.get("/events").await.expect(200);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_the_concurrency_limit_waits_for_a_turn() {
    let busway = Broker::start_with(|c| c.max_concurrent_requests = 1).await;
    let mut stalled = stalled_post(&busway.portal_url(""), "/events", &busway.admin_key).await;
    // The stalled request is being served (its handler waits for the body) and holds the turn.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = tokio::spawn({
        let (http, url) = (busway.http.clone(), busway.portal_url("/events"));
        let key = busway.admin_key.clone();
        async move {
            let answer = http.get(url).bearer_auth(key).send().await;
            answer.expect("answered").status()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !list.is_finished(),
        "a request beyond the limit was served while the only turn was taken"
    );

    let rest = format!("1}}{}", " ".repeat(BODY_BYTES - FIRST_PART.len() - 2));
    stalled.write_all(rest.as_bytes()).await.expect("sent");
    assert_eq!(
        answer(&mut stalled).await.0,
        400,
        "the finished body is no event type"
    );
    let listed = tokio::time::timeout(Duration::from_secs(30), list)
        .await
        .expect("the waiting request is served once the turn is free")
        .expect("the request task ends");
    assert_eq!(listed, 200);
    busway.stop().await;
}
