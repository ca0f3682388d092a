//! `busway demo`: the seed's "Full demo example" against a temporary broker, checking each step.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{Config, Running};

const WAIT: Duration = Duration::from_secs(15);

fn seed_event_type() -> Value {
    json!({
        "application": "demo",
        "event_type": "scanned_parcel",
        "description": "Scanned parcel on the workshop",
        "connection_type": "HTTPS",
        "data": {
            "type": "object",
            "properties": {
                "dest_postal_code": {"type": "string"},
                "dest_house": {"type": "integer"},
                "parcel_weight": {"type": "number"}
            },
            "required": ["dest_postal_code", "dest_house", "parcel_weight"]
        }
    })
}

fn parcel(target: &str) -> Value {
    json!({
        "metadata": {"event_attributes": {"source": "scanner-17", "target": target}},
        "data": {"dest_postal_code": "1234AB", "dest_house": 7, "parcel_weight": 1.5}
    })
}

struct Client {
    http: reqwest::Client,
    portal: String,
    broker: String,
    /// The key of portal calls (the team's owner key once made) and of broker calls.
    portal_key: String,
    producer_key: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let key = if url.starts_with(&self.broker) {
            &self.producer_key
        } else {
            &self.portal_key
        };
        let mut request = self.http.request(method, &url).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Polls the deployment, printing each status as it is reached.
    async fn wait_for_deployment(&self, id: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut shown = 0;
        loop {
            let (_, d) = self
                .call(
                    reqwest::Method::GET,
                    format!("{}/deployments/{id}", self.portal),
                    None,
                )
                .await?;
            let history = d["history"].as_array().cloned().unwrap_or_default();
            for step in &history[shown.min(history.len())..] {
                println!(
                    "   deployment {id}: {} at {}",
                    step["status"].as_str().unwrap_or("?"),
                    step["at"].as_str().unwrap_or("?")
                );
            }
            shown = history.len();
            match d["status"].as_str() {
                Some("SUCCEEDED") => return Ok(()),
                Some("FAILED") => bail!("deployment {id} failed: {}: {}", d["error"], d["cause"]),
                _ if started.elapsed() > WAIT => {
                    bail!("deployment {id} did not finish within {WAIT:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// `POST /keys` with the client's (admin) key; returns the new key.
async fn make_key(client: &Client, body: Value) -> anyhow::Result<String> {
    let (status, made) = client
        .call(
            reqwest::Method::POST,
            format!("{}/keys", client.portal),
            Some(&body),
        )
        .await?;
    ensure!(status == 201, "POST /keys answered {status}: {made}");
    Ok(made["key"].as_str().context("no key")?.to_string())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub async fn run() -> anyhow::Result<()> {
    let data = tempfile::tempdir().context("creating a temporary data dir")?;
    let any = "127.0.0.1:0".parse()?;
    let busway = Running::start(Config::new(data.path().to_path_buf(), any, any)).await?;
    let result = steps(&busway).await;
    busway.stop().await;
    result?;
    println!("\nThe demo worked: every step behaved as the seed describes.");
    Ok(())
}

async fn steps(busway: &Running) -> anyhow::Result<()> {
    let admin_key = busway
        .new_admin_key
        .clone()
        .context("a new data dir gets a platform-admin key")?;
    let mut client = Client {
        http: reqwest::Client::new(),
        portal: format!("http://{}", busway.portal_addr),
        broker: format!("http://{}", busway.broker_addr),
        portal_key: admin_key.clone(),
        producer_key: String::new(),
    };
    println!(
        "busway demo: portal {} · broker {}\n",
        client.portal, client.broker
    );

    println!("0. Keys: the platform-admin key busway made at its first start");
    println!("   {admin_key}");
    println!(
        "   makes, with POST /keys, an owner key of team logistics and a producer key of its application demo:"
    );
    let owner = make_key(&client, json!({"team": "logistics", "role": "owner"})).await?;
    let producer = make_key(
        &client,
        json!({"team": "logistics", "role": "producer", "application": "demo"}),
    )
    .await?;
    println!("   owner    {owner}\n   producer {producer}");
    client.portal_key = owner;
    client.producer_key = producer;
    println!("   every call below carries one of them as Authorization: Bearer <key>\n");

    println!("1. POST /events — create scanned_parcel (the seed's schema)");
    let (status, created) = client
        .call(
            reqwest::Method::POST,
            format!("{}/events", client.portal),
            Some(&seed_event_type()),
        )
        .await?;
    ensure!(
        status == 201,
        "creating the event type answered {status}: {created}"
    );
    let deployment = created["deployment_id"]
        .as_str()
        .context("no deployment_id")?
        .to_string();
    println!("   201, version 1, deployment {deployment}");
    client.wait_for_deployment(&deployment).await?;

    println!("\n2. A small HTTP consumer, subscribed as target unit u2");
    let (tx, mut received) = mpsc::unbounded_channel::<String>();
    let consumer = axum::Router::new().route(
        "/events",
        post(move |event: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let consumer_url = format!("http://{}/events", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, consumer).await });
    let subscription = json!({
        "event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
        "connection_type": "HTTPS", "connection_string": consumer_url
    });
    let (status, sub) = client
        .call(
            reqwest::Method::POST,
            format!("{}/subscriptions", client.portal),
            Some(&subscription),
        )
        .await?;
    ensure!(status == 201, "subscribing answered {status}: {sub}");
    println!(
        "   201, subscription {} → {consumer_url}",
        sub["id"].as_str().unwrap_or("?")
    );
    client
        .wait_for_deployment(sub["deployment_id"].as_str().context("no deployment_id")?)
        .await?;

    let result = publish_and_check(&client, &mut received).await;
    server.abort();
    result
}

async fn publish_and_check(
    client: &Client,
    received: &mut mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<()> {
    let publish = format!("{}/scanned_parcel/1", client.broker);

    println!("\n3. POST /scanned_parcel/1 for target u2 — delivered to the consumer");
    let (status, answer) = client
        .call(reqwest::Method::POST, publish.clone(), Some(&parcel("u2")))
        .await?;
    ensure!(status == 200, "publishing answered {status}: {answer}");
    let event_id = answer["event_id"]
        .as_str()
        .context("no event_id")?
        .to_string();
    println!("   200, event_id {event_id}");
    let delivered = tokio::time::timeout(WAIT, received.recv())
        .await
        .context("the consumer received nothing")?
        .context("the consumer stopped")?;
    let parsed: Value =
        serde_json::from_str(&delivered).context("the consumer received invalid JSON")?;
    ensure!(
        parsed["detail"]["metadata"]["event_id"] == json!(event_id),
        "the consumer received another event: {delivered}"
    );
    println!("   the consumer received, byte for byte:\n     {delivered}");

    println!("\n4. POST /scanned_parcel/1 for target u3 — no subscription, not delivered");
    let (status, answer) = client
        .call(reqwest::Method::POST, publish.clone(), Some(&parcel("u3")))
        .await?;
    ensure!(status == 200, "publishing answered {status}: {answer}");
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), received.recv()).await {
        bail!("an event for u3 reached the u2 consumer: {event}");
    }
    println!(
        "   200, event_id {}; nothing reached the u2 consumer within 1 s",
        answer["event_id"].as_str().unwrap_or("?")
    );

    println!("\n5. POST /scanned_parcel/1 with an invalid body — refused with the reasons");
    let invalid = json!({"metadata": {"event_attributes": {"source": "scanner-17", "target": "u2"}}, "data": {"dest_postal_code": 1234}});
    let (status, answer) = client
        .call(reqwest::Method::POST, publish, Some(&invalid))
        .await?;
    ensure!(
        status == 400,
        "an invalid event answered {status}: {answer}"
    );
    println!("   400:\n{}", indent(&pretty(&answer)));
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("     {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
