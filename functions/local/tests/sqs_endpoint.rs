//! SQS subscriptions against a real SQS-API server over the wire: moto server, started here.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use busway_local::{Config, Running};
use serde_json::{Value, json};

/// moto from the project's venv (installed by `make test`), else from PATH.
fn moto_server() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("moto_server")
    }
}

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that sends the platform-admin key busway made at its first start.
fn admin_client(busway: &Running) -> reqwest::Client {
    client_with(
        busway
            .new_admin_key
            .as_deref()
            .expect("a new data dir gets a platform-admin key"),
    )
}

fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

async fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address")
        .port();
    let child = Command::new(moto_server())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server runs: `make test` installs it into .venv (scripts/setup.sh)");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/moto-api/", moto.endpoint))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "moto server did not answer within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    moto
}

fn sqs(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("eu-west-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> (u16, Value) {
    let response = http
        .request(method, url)
        .json(&body)
        .send()
        .await
        .expect("busway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deployed(http: &reqwest::Client, portal: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d: Value = http
            .get(format!("{portal}/deployments/{id}"))
            .send()
            .await
            .expect("portal")
            .json()
            .await
            .expect("json");
        match d["status"].as_str() {
            Some("SUCCEEDED") => return,
            Some("FAILED") => panic!("deployment failed: {d}"),
            _ => assert!(
                Instant::now() < deadline,
                "deployment {id} did not finish: {d}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_subscriptions_send_matching_events_to_an_sqs_api_server() {
    let moto = start_moto().await;
    let client = sqs(&moto.endpoint);
    let queue_url = client
        .create_queue()
        .queue_name("parcels")
        .send()
        .await
        .expect("queue created")
        .queue_url
        .expect("a queue URL");

    let data = tempfile::tempdir().expect("tempdir");
    let any = "127.0.0.1:0".parse().expect("address");
    let mut config = Config::new(data.path().to_path_buf(), any, any);
    config.delivery.sqs_endpoint = Some(moto.endpoint.clone());
    let busway = Running::start(config).await.expect("busway starts");
    let (portal, broker) = (
        format!("http://{}", busway.portal_addr),
        format!("http://{}", busway.broker_addr),
    );
    let http = admin_client(&busway);

    let event_type = json!({"application": "demo", "event_type": "scanned_parcel", "description": "d", "connection_type": "HTTPS",
        "data": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}});
    let (status, created) = call(
        &http,
        reqwest::Method::POST,
        format!("{portal}/events"),
        event_type,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    deployed(
        &http,
        &portal,
        created["deployment_id"].as_str().expect("id"),
    )
    .await;
    let subscription = json!({"event_type": "scanned_parcel", "version": 1, "target_unit": "u2", "connection_type": "SQS",
        "connection_string": "arn:aws:sqs:eu-west-1:123456789012:parcels"});
    let (status, sub) = call(
        &http,
        reqwest::Method::POST,
        format!("{portal}/subscriptions"),
        subscription,
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    deployed(&http, &portal, sub["deployment_id"].as_str().expect("id")).await;
    // Only producer keys publish.
    let (status, made) = call(
        &http,
        reqwest::Method::POST,
        format!("{portal}/keys"),
        json!({"team": "platform", "role": "producer", "application": "demo"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let producer = client_with(made["key"].as_str().expect("a key"));

    let mut expected = Vec::new();
    for (n, target) in [(1, "u2"), (2, "u3"), (3, "u2")] {
        let body = json!({"metadata": {"event_attributes": {"source": "s", "target": target}}, "data": {"n": n}});
        let (status, answer) = call(
            &producer,
            reqwest::Method::POST,
            format!("{broker}/scanned_parcel/1"),
            body,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        if target == "u2" {
            expected.push(answer["event_id"].as_str().expect("event id").to_string());
        }
    }

    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while received.len() < expected.len() && Instant::now() < deadline {
        let out = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in out.messages() {
            let event: Value =
                serde_json::from_str(message.body().expect("a body")).expect("the body is JSON");
            assert_eq!(event["detail-type"], "scanned_parcel.1");
            assert_eq!(event["source"], "busway.demo");
            assert_eq!(
                event["detail"]["metadata"]["event_attributes"]["target"],
                "u2"
            );
            received.push(
                event["detail"]["metadata"]["event_id"]
                    .as_str()
                    .expect("event id")
                    .to_string(),
            );
        }
    }
    received.sort();
    expected.sort();
    assert_eq!(received, expected, "the queue got exactly the u2 events");
    // Counters are flushed with the cursors, a moment after the messages are sent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats: Value = http
            .get(format!(
                "{portal}/subscriptions/{}",
                sub["id"].as_str().expect("id")
            ))
            .send()
            .await
            .expect("portal")
            .json()
            .await
            .expect("json");
        if stats["delivery"]["delivered"] == 2 || std::time::Instant::now() > deadline {
            assert_eq!(stats["delivery"]["delivered"], 2, "{stats}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    busway.stop().await;
}
