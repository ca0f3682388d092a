//! Target kinds: a Lambda Invoke API endpoint, embedded queues for SQS, and the SSRF guard of
//! HTTPS targets.

use std::time::{Duration, Instant};

use busway_tests::consumer::{Consumer, Failure, event_id, http_subscription};
use busway_tests::{Broker, seed_event, v1_envelope};
use serde_json::{Value, json};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);

fn subscription(target_unit: &str, connection_type: &str, connection_string: &str) -> Value {
    json!({
        "event_type": "scanned_parcel",
        "version": "1",
        "target_unit": target_unit,
        "connection_type": connection_type,
        "connection_string": connection_string
    })
}

async fn publish(busway: &Broker, target: &str) -> String {
    busway
        .publish("scanned_parcel", "1", &v1_envelope(target))
        .await
        .expect(200)["event_id"]
        .as_str()
        .expect("an event_id")
        .to_string()
}

async fn lambda_broker(lambda: &Consumer) -> Broker {
    let endpoint = lambda.url("");
    let busway = Broker::start_with(|config| {
        config.delivery.lambda_endpoint = Some(endpoint);
        config.delivery.retry_base = Duration::from_millis(5);
        config.delivery.retry_cap = Duration::from_millis(40);
    })
    .await;
    busway.create_deployed_event(&seed_event()).await;
    busway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_subscription_invokes_its_function_through_the_invoke_api_with_the_event() {
    let lambda = Consumer::lambda().await;
    let busway = lambda_broker(&lambda).await;
    busway
        .subscribe_deployed(&subscription(
            "u2",
            "LAMBDA",
            "arn:aws:lambda:eu-west-1:123456789012:function:parcel-processor",
        ))
        .await;
    busway
        .subscribe_deployed(&subscription(
            "u3",
            "LAMBDA",
            "arn:aws:lambda:eu-west-1:123456789012:function:parcel-archiver:live",
        ))
        .await;

    let for_u2 = publish(&busway, "u2").await;
    let for_u3 = publish(&busway, "u3").await;
    let invoked = lambda.wait_for_deliveries(2, DELIVERY_TIMEOUT).await;
    lambda.assert_no_more_than(2, QUIET).await;
    let uri_of = |id: &str| {
        invoked
            .iter()
            .find(|r| r.event_id() == id)
            .map(|r| r.uri.clone())
            .unwrap_or_else(|| panic!("{id} was not invoked: {invoked:?}"))
    };
    assert_eq!(
        uri_of(&for_u2),
        "/2015-03-31/functions/parcel-processor/invocations"
    );
    assert_eq!(
        uri_of(&for_u3),
        "/2015-03-31/functions/parcel-archiver/invocations?Qualifier=live"
    );
    for request in &invoked {
        assert_eq!(request.method, "POST");
        let text = String::from_utf8_lossy(&request.body);
        assert!(
            text.starts_with(r#"{"version":"0","id":""#),
            "the payload is the EventBridge event: {text}"
        );
        let event = request.json();
        assert_eq!(event["detail-type"], "scanned_parcel.1");
        assert_eq!(event["source"], "busway.demo");
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_is_retried_until_the_function_succeeds() {
    let lambda = Consumer::lambda().await;
    lambda.fail(Failure::FunctionError, 2);
    let busway = lambda_broker(&lambda).await;
    let id = busway
        .subscribe_deployed(&subscription(
            "u2",
            "LAMBDA",
            "arn:aws:lambda:eu-west-1:123456789012:function:parcel-processor",
        ))
        .await["id"]
        .as_str()
        .expect("a subscription id")
        .to_string();

    let event = publish(&busway, "u2").await;
    let invoked = lambda.wait_for_deliveries(1, DELIVERY_TIMEOUT).await;
    assert_eq!(invoked[0].event_id(), event);
    assert_eq!(
        lambda.requests().len(),
        3,
        "two function errors, then success"
    );
    let started = Instant::now();
    loop {
        let stats = busway
            .get(&format!("/subscriptions/{id}"))
            .await
            .expect(200)["delivery"]
            .clone();
        if stats["delivered"] == 1 {
            assert_eq!(stats["retries"], 2, "{stats}");
            let error = stats["last_error"].as_str().expect("the last error");
            assert!(
                error.contains("function error Unhandled") && error.contains("stand-in failure"),
                "{error}"
            );
            break;
        }
        assert!(started.elapsed() < DELIVERY_TIMEOUT, "not counted: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_subscription_without_an_invoke_endpoint_fails_to_deploy_saying_how_to_configure_one()
 {
    let busway = Broker::start_with(|config| config.delivery.lambda_endpoint = None).await;
    busway.create_deployed_event(&seed_event()).await;
    let created = busway
        .post(
            "/subscriptions",
            &subscription(
                "u2",
                "LAMBDA",
                "arn:aws:lambda:eu-west-1:123456789012:function:parcel-processor",
            ),
        )
        .await
        .expect(201)
        .clone();
    let deployment = busway
        .wait_for_deployment(created["deployment_id"].as_str().expect("a deployment id"))
        .await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    assert_eq!(deployment["error"], "Build.Failed", "{deployment}");
    let error = deployment["cause"].as_str().expect("the cause");
    assert!(
        error.contains("busway up --lambda-endpoint"),
        "the error says how to configure an endpoint: {error}"
    );
    busway.stop().await;
}

async fn receive(busway: &Broker, query: &str) -> Vec<Value> {
    busway
        .get(&format!("/queues/orders/messages{query}"))
        .await
        .expect(200)["messages"]
        .as_array()
        .expect("messages is an array")
        .clone()
}

/// Receives from the embedded queue until `n` messages came, or panics after the timeout.
async fn receive_n(busway: &Broker, query: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    let mut messages = Vec::new();
    while messages.len() < n {
        messages.extend(receive(busway, query).await);
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "{n} queue messages expected, received {messages:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_subscription_delivers_into_an_embedded_queue_read_and_deleted_over_the_portal() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
        .subscribe_deployed(&subscription(
            "u2",
            "SQS",
            "arn:aws:sqs:eu-west-1:123456789012:orders",
        ))
        .await;
    let first = publish(&busway, "u2").await;
    let second = publish(&busway, "u2").await;
    publish(&busway, "u3").await;

    let messages = receive_n(&busway, "?max=10", 2).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let ids: Vec<String> = messages.iter().map(|m| event_id(&m["body"])).collect();
    assert_eq!(ids, [first, second], "oldest first");
    let logged = busway.logged_events();
    for message in &messages {
        let body = &message["body"];
        assert_eq!(body["version"], "0");
        assert_eq!(body["detail-type"], "scanned_parcel.1");
        assert_eq!(body["account"], "000000000000");
        assert_eq!(body["region"], "local");
        assert_eq!(body["resources"], json!([]));
        assert!(
            logged.iter().any(|e| e.detail == body["detail"]),
            "the body's detail is a logged event's: {body}"
        );
        assert_eq!(message["receive_count"], 1);
        assert_eq!(message["receipt_handle"], Value::Null, "{message}");
    }
    assert!(
        receive(&busway, "?max=10").await.is_empty(),
        "received messages are deleted"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicitly_acknowledged_queue_message_comes_back_until_deleted_by_its_receipt() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    busway
        .subscribe_deployed(&subscription(
            "u2",
            "SQS",
            "arn:aws:sqs:eu-west-1:123456789012:orders",
        ))
        .await;
    let event = publish(&busway, "u2").await;

    // A zero visibility timeout makes an unacknowledged message visible again at once.
    let first = receive_n(&busway, "?ack=explicit&visibility_timeout=0", 1).await;
    assert_eq!(event_id(&first[0]["body"]), event);
    assert_eq!(first[0]["receive_count"], 1);
    let again = receive(&busway, "?ack=explicit&visibility_timeout=60").await;
    assert_eq!(
        again.len(),
        1,
        "an unacknowledged message comes back: {again:?}"
    );
    assert_eq!(again[0]["message_id"], first[0]["message_id"]);
    assert_eq!(again[0]["receive_count"], 2);
    assert!(
        receive(&busway, "?ack=explicit").await.is_empty(),
        "a message is hidden during its visibility timeout"
    );

    let stale = first[0]["receipt_handle"].as_str().expect("a receipt");
    let receipt = again[0]["receipt_handle"].as_str().expect("a receipt");
    assert_ne!(stale, receipt);
    busway
        .delete(&format!("/queues/orders/messages/{stale}"))
        .await
        .expect_error(404, "not_found");
    let deleted = busway
        .http
        .delete(busway.portal_url(&format!("/queues/orders/messages/{receipt}")))
        .bearer_auth(&busway.admin_key)
        .send()
        .await
        .expect("the portal answers");
    assert_eq!(deleted.status().as_u16(), 204);
    let gone = busway
        .http
        .delete(busway.portal_url(&format!("/queues/orders/messages/{receipt}")))
        .bearer_auth(&busway.admin_key)
        .send()
        .await
        .expect("the portal answers");
    assert_eq!(gone.status().as_u16(), 404, "a receipt deletes once");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_at_a_private_address_is_dead_lettered_without_being_called() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = Consumer::start().await;
    let loopback_https = consumer.url("/hook").replacen("http://", "https://", 1);
    // This machine's own name resolves (through /etc/hosts) to loopback or a private address:
    // refused by the client's resolver on the address it would connect to.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("a host name");
    let by_name = loopback_https.replacen("127.0.0.1", host.trim(), 1);
    let mut ids = Vec::new();
    for (unit, url) in [
        ("u2", loopback_https.as_str()),
        ("u5", by_name.as_str()),
        ("u3", "https://169.254.169.254/latest/meta-data"),
        ("u4", "https://10.0.0.1/hook"),
    ] {
        let created = busway
            .subscribe_deployed(&http_subscription(1, unit, url))
            .await;
        ids.push((
            url.to_string(),
            created["id"].as_str().expect("an id").to_string(),
        ));
        publish(&busway, unit).await;
    }

    for (url, id) in &ids {
        let started = Instant::now();
        let letters = loop {
            let letters = busway
                .get(&format!("/subscriptions/{id}/dead-letters"))
                .await
                .expect(200)["dead_letters"]
                .as_array()
                .expect("an array")
                .clone();
            if !letters.is_empty() {
                break letters;
            }
            assert!(
                started.elapsed() < DELIVERY_TIMEOUT,
                "{url}: no dead letter; delivery: {}",
                busway.get(&format!("/subscriptions/{id}")).await.body["delivery"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(letters.len(), 1, "{url}: {letters:?}");
        assert_eq!(letters[0]["attempts"], 1, "{url}: not retried: {letters:?}");
        let error = letters[0]["error"].as_str().expect("an error");
        assert!(error.contains("not a public address"), "{url}: {error}");
    }
    consumer.assert_no_more_than(0, Duration::ZERO).await;
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_queue_is_read_by_the_keys_of_its_subscriptions_team() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let consumer = busway.create_key("logistics", "consumer", None).await;
    busway
        .put(
            "/teams/logistics/targets",
            &json!({"accounts": ["123456789012"]}),
        )
        .await
        .expect(200);
    let body = subscription("u2", "SQS", "arn:aws:sqs:eu-west-1:123456789012:orders");
    let request = busway
        .http
        .post(busway.portal_url("/subscriptions"))
        .json(&body);
    let made = busway.send_as(request, Some(&consumer)).await;
    busway
        .deployed(made.expect(201)["deployment_id"].as_str().expect("an id"))
        .await;
    let other_team = busway.create_key("billing", "consumer", None).await;
    let producer = busway
        .create_key("logistics", "producer", Some("demo"))
        .await;
    let b = &busway;
    let read = |key: Option<String>| {
        let request = b.http.get(b.portal_url("/queues/orders/messages"));
        async move { b.send_as(request, key.as_deref()).await }
    };
    read(None).await.expect_error(401, "unauthorized");
    read(Some(other_team)).await.expect_error(403, "forbidden");
    read(Some(producer)).await.expect_error(403, "forbidden");
    read(Some(busway.admin_key.clone())).await.expect(200);

    // A receive deletes, so a page on another port of this host (the same site: the browser
    // sends the catalog's session cookie with an `<img>`) must not receive with the session.
    let sent = publish(&busway, "u2").await;
    let forged = b
        .http
        .get(b.portal_url("/queues/orders/messages"))
        .header("cookie", format!("busway_session={consumer}"))
        .header("sec-fetch-site", "same-site")
        .header("sec-fetch-dest", "image");
    b.send_as(forged, None)
        .await
        .expect_error(401, "unauthorized");
    let started = Instant::now();
    let received = loop {
        let messages = read(Some(consumer.clone())).await.expect(200)["messages"].clone();
        let messages = messages.as_array().cloned().unwrap_or_default();
        if !messages.is_empty() || started.elapsed() > DELIVERY_TIMEOUT {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<String> = received.iter().map(|m| event_id(&m["body"])).collect();
    assert_eq!(ids, [sent], "the forged read deleted nothing");
    busway.stop().await;
}

/// The local host names an embedded queue by the ARN's last part, so two teams' queues of one
/// name in their own accounts would be one queue: the second is refused, and the queue stays
/// the first team's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_teams_queue_of_the_same_name_fails_to_deploy_and_cannot_read_the_first() {
    second_team_into_the_queue(
        "222222222222",
        "arn:aws:sqs:eu-west-1:222222222222:orders",
        "choose another queue name",
    )
    .await;
}

/// Two teams registered for one account may both name its queue, but an embedded queue is read
/// by its team's keys: the second team's subscription into it is refused, else it could read
/// and delete the first team's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_team_subscribing_the_same_queue_fails_to_deploy_and_cannot_read_it() {
    second_team_into_the_queue(
        "111111111111",
        "arn:aws:sqs:eu-west-1:111111111111:orders",
        "belongs to team billing",
    )
    .await;
}

/// Billing's subscription into its queue `orders` deploys; logistics' into `arn` (registered for
/// `account`) fails naming billing's subscription and `why`, and logistics cannot read the queue.
async fn second_team_into_the_queue(account: &str, arn: &'static str, why: &str) {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let b = &busway;
    let subscribe_as = |key: String, unit: &'static str, arn: &'static str| {
        let request = b
            .http
            .post(b.portal_url("/subscriptions"))
            .json(&subscription(unit, "SQS", arn));
        async move {
            let made = b.send_as(request, Some(&key)).await;
            let made = made.expect(201);
            (
                made["id"].as_str().expect("an id").to_string(),
                made["deployment_id"]
                    .as_str()
                    .expect("a deployment id")
                    .to_string(),
            )
        }
    };
    let mut keys = Vec::new();
    for (team, account) in [("billing", "111111111111"), ("logistics", account)] {
        busway
            .put(
                &format!("/teams/{team}/targets"),
                &json!({"accounts": [account]}),
            )
            .await
            .expect(200);
        keys.push(busway.create_key(team, "consumer", None).await);
    }
    let [billing, logistics] = <[String; 2]>::try_from(keys).expect("two keys");
    let (billings, deployment) = subscribe_as(
        billing.clone(),
        "u2",
        "arn:aws:sqs:eu-west-1:111111111111:orders",
    )
    .await;
    busway.deployed(&deployment).await;
    let (_, deployment) = subscribe_as(logistics.clone(), "u3", arn).await;
    let refused = busway.wait_for_deployment(&deployment).await;
    assert_eq!(refused["status"], "FAILED", "{refused}");
    let cause = refused["cause"].as_str().expect("the cause");
    for part in [
        "queue orders",
        billings.as_str(),
        &format!("busway-{billings}"),
        why,
    ] {
        assert!(cause.contains(part), "the cause names {part}: {cause}");
    }

    let sent = publish(&busway, "u2").await;
    publish(&busway, "u3").await;
    let read = |key: &String| {
        let request = b.http.get(b.portal_url("/queues/orders/messages"));
        let key = key.clone();
        async move { b.send_as(request, Some(&key)).await }
    };
    read(&logistics).await.expect_error(403, "forbidden");
    let started = Instant::now();
    let messages = loop {
        let messages = read(&billing).await.expect(200)["messages"].clone();
        if messages.as_array().is_some_and(|m| !m.is_empty())
            || started.elapsed() > DELIVERY_TIMEOUT
        {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<String> = messages
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| event_id(&m["body"]))
        .collect();
    assert_eq!(ids, [sent], "only billing's event is in its queue");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_lambda_and_sqs_targets_must_be_in_its_registered_accounts_and_prefixes() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let owner = busway.create_key("logistics", "owner", None).await;
    let b = &busway;
    let subscribe = |unit: &'static str, kind: &'static str, arn: &'static str| {
        let request = b
            .http
            .post(b.portal_url("/subscriptions"))
            .json(&subscription(unit, kind, arn));
        let owner = owner.clone();
        async move { b.send_as(request, Some(&owner)).await }
    };
    let ours = "arn:aws:lambda:eu-west-1:123456789012:function:logistics-orders";
    // No registration: no LAMBDA or SQS target at all; HTTPS is held to the SSRF guard only.
    let refused = subscribe("u1", "LAMBDA", ours).await;
    refused.expect_error(403, "forbidden");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("PUT /teams/logistics/targets")),
        "{}",
        refused.body
    );
    subscribe("u1", "HTTPS", "https://consumer.example.com/u1")
        .await
        .expect(201);

    // Registering is a platform admin's; the team reads its registration, others do not.
    let registration = json!({"accounts": ["123456789012"], "name_prefixes": ["logistics-"]});
    let request = busway
        .http
        .put(busway.portal_url("/teams/logistics/targets"))
        .json(&registration);
    busway
        .send_as(request, Some(&owner))
        .await
        .expect_error(403, "forbidden");
    let fields = busway
        .put("/teams/logistics/targets", &json!({"accounts": ["12"]}))
        .await
        .expect_error(400, "validation_failed");
    assert_eq!(fields, ["accounts"]);
    let registered = busway.put("/teams/logistics/targets", &registration).await;
    assert_eq!(registered.expect(200)["accounts"], json!(["123456789012"]));
    let read = busway
        .send_as(
            busway
                .http
                .get(busway.portal_url("/teams/logistics/targets")),
            Some(&owner),
        )
        .await;
    assert_eq!(read.expect(200)["name_prefixes"], json!(["logistics-"]));
    let other = busway.create_key("billing", "owner", None).await;
    busway
        .send_as(
            busway
                .http
                .get(busway.portal_url("/teams/logistics/targets")),
            Some(&other),
        )
        .await
        .expect_error(403, "forbidden");

    // In the account and under a prefix: accepted; another account or name: refused.
    subscribe("u2", "LAMBDA", ours).await.expect(201);
    subscribe(
        "u3",
        "SQS",
        "arn:aws:sqs:eu-west-1:123456789012:logistics-inbox",
    )
    .await
    .expect(201);
    for (unit, kind, arn) in [
        (
            "u4",
            "LAMBDA",
            "arn:aws:lambda:eu-west-1:210987654321:function:logistics-orders",
        ),
        (
            "u5",
            "SQS",
            "arn:aws:sqs:eu-west-1:123456789012:billing-inbox",
        ),
    ] {
        subscribe(unit, kind, arn)
            .await
            .expect_error(403, "forbidden");
    }
    // A platform admin is not held to a team's registration.
    busway
        .post(
            "/subscriptions",
            &subscription("u6", "SQS", "arn:aws:sqs:eu-west-1:210987654321:anything"),
        )
        .await
        .expect(201);
    let audit = busway.get("/audit?team=logistics").await;
    assert!(
        audit.expect(200)["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "team.targets.put"
                && e["after"]["accounts"] == json!(["123456789012"])),
        "{}",
        audit.body
    );
    busway.stop().await;
}
