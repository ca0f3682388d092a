//! `Idempotency-Key` on the portal's create routes, on the local host over HTTP: a retry with the
//! same key and body gets the first answer again (status and body, marked replayed) even after
//! what it made changed, and after a restart; the same key with another body is a 422; one sent
//! while its first request runs is a 409 or the first answer, never a second resource; a request
//! that failed keeps nothing, so its key may be retried with a corrected body; a key of another
//! role of the same team is not answered from another role's records.

use busway_tests::{Broker, join_all, seed_event, seed_subscription};
use serde_json::{Value, json};

/// What a keyed request got: status, whether it was a replay, body.
struct Keyed {
    status: u16,
    replayed: bool,
    body: Value,
}

async fn keyed(busway: &Broker, method: &str, path: &str, body: &Value, key: &str) -> Keyed {
    keyed_as(busway, &busway.admin_key, method, path, body, key).await
}

/// `keyed`, sent with the API key `as_key`.
async fn keyed_as(
    busway: &Broker,
    as_key: &str,
    method: &str,
    path: &str,
    body: &Value,
    key: &str,
) -> Keyed {
    let method: reqwest::Method = method.parse().expect("a method");
    let response = busway
        .http
        .request(method, busway.portal_url(path))
        .bearer_auth(as_key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("the portal answers");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body = response.json().await.expect("a JSON answer");
    Keyed {
        status,
        replayed,
        body,
    }
}

fn v2() -> Value {
    json!({"description": "with the scanner", "data": {"type": "object",
        "properties": {"scanner": {"type": "string"}}, "required": ["scanner"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_retried_gets_its_first_answer_and_another_body_a_422() {
    let busway = Broker::start().await;

    let created = keyed(&busway, "POST", "/events", &seed_event(), "create-1").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(!created.replayed);
    busway
        .deployed(
            created.body["deployment_id"]
                .as_str()
                .expect("a deployment"),
        )
        .await;
    // The answer as first sent, although the version is live by now.
    let again = keyed(&busway, "POST", "/events", &seed_event(), "create-1").await;
    assert_eq!((again.status, &again.body), (201, &created.body));
    assert!(again.replayed);
    let mut other = seed_event();
    other["description"] = json!("another body");
    let reused = keyed(&busway, "POST", "/events", &other, "create-1").await;
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    // The same body on another route is another request too.
    let elsewhere = keyed(
        &busway,
        "PUT",
        "/events/scanned_parcel",
        &seed_event(),
        "create-1",
    )
    .await;
    assert_eq!(elsewhere.status, 422, "{}", elsewhere.body);

    // A new version: its retry gets version 2 even once a later version exists, which an
    // unkeyed retry (answered from the latest version) could not tell.
    let v2_made = keyed(&busway, "PUT", "/events/scanned_parcel", &v2(), "version-2").await;
    assert_eq!(v2_made.status, 201, "{}", v2_made.body);
    assert_eq!(v2_made.body["version"], 2);
    let mut v3 = v2();
    v3["description"] = json!("the scanner again");
    let v3_made = keyed(&busway, "PUT", "/events/scanned_parcel", &v3, "version-3").await;
    assert_eq!(v3_made.body["version"], 3, "{}", v3_made.body);
    let again = keyed(&busway, "PUT", "/events/scanned_parcel", &v2(), "version-2").await;
    assert_eq!((again.status, &again.body), (201, &v2_made.body));
    let versions = busway.get("/events/scanned_parcel").await.expect(200)["versions"].clone();
    assert_eq!(versions.as_array().map(Vec::len), Some(3), "{versions}");

    // A subscription, with its signing secret in the kept answer.
    let subscribed = keyed(
        &busway,
        "POST",
        "/subscriptions",
        &seed_subscription(),
        "sub-1",
    )
    .await;
    assert_eq!(subscribed.status, 201, "{}", subscribed.body);
    let again = keyed(
        &busway,
        "POST",
        "/subscriptions",
        &seed_subscription(),
        "sub-1",
    )
    .await;
    assert_eq!((again.status, &again.body), (201, &subscribed.body));
    let id = subscribed.body["id"].as_str().expect("an id").to_string();
    busway
        .delete(&format!("/subscriptions/{id}"))
        .await
        .expect(202);
    // After the unsubscribe, the retry is still answered with what it made, and makes nothing.
    let again = keyed(
        &busway,
        "POST",
        "/subscriptions",
        &seed_subscription(),
        "sub-1",
    )
    .await;
    assert_eq!((again.status, &again.body), (201, &subscribed.body));
    let listed = busway.get("/subscriptions?event_type=scanned_parcel").await;
    assert_eq!(listed.expect(200)["subscriptions"], json!([]));

    // Kept across a restart (busway.db).
    let busway = busway.restart().await;
    let again = keyed(&busway, "PUT", "/events/scanned_parcel", &v2(), "version-2").await;
    assert_eq!((again.status, &again.body), (201, &v2_made.body));
    assert!(again.replayed);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_keyed_request_keeps_nothing_and_concurrent_ones_make_one_resource() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;

    // An unknown version: 404, and the key is free again.
    let mut wrong = seed_subscription();
    wrong["version"] = json!("9");
    let failed = keyed(&busway, "POST", "/subscriptions", &wrong, "sub-a").await;
    assert_eq!(failed.status, 404, "{}", failed.body);
    let fixed = keyed(
        &busway,
        "POST",
        "/subscriptions",
        &seed_subscription(),
        "sub-a",
    )
    .await;
    assert_eq!(fixed.status, 201, "{}", fixed.body);
    assert!(!fixed.replayed);

    // A key of the same team that may not subscribe (a producer's) is refused, not answered
    // with the kept subscription and its signing secret.
    let producer = busway
        .create_key("platform", "producer", Some("demo"))
        .await;
    let replayed = keyed_as(
        &busway,
        &producer,
        "POST",
        "/subscriptions",
        &seed_subscription(),
        "sub-a",
    )
    .await;
    assert_eq!(replayed.status, 403, "{}", replayed.body);
    assert!(!replayed.replayed);

    // The same keyed request three times at once: the first answer, or "still running".
    let mut body = seed_subscription();
    body["target_unit"] = json!("u3");
    let client = &busway;
    let replies = join_all(
        (0..3)
            .map(|_| {
                let body = body.clone();
                async move { keyed(client, "POST", "/subscriptions", &body, "sub-b").await }
            })
            .collect(),
    )
    .await;
    let made: Vec<&Keyed> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!made.is_empty(), "no request ran");
    for reply in &replies {
        match reply.status {
            201 => assert_eq!(reply.body, made[0].body),
            409 => assert_eq!(reply.body["error"]["code"], "idempotency_key_in_use"),
            other => panic!("answered {other}: {}", reply.body),
        }
    }
    let listed = busway
        .get("/subscriptions?event_type=scanned_parcel&target_unit=u3")
        .await;
    assert_eq!(
        listed.expect(200)["subscriptions"].as_array().map(Vec::len),
        Some(1)
    );

    // Keys are checked: visible ASCII, at most 255 characters.
    for bad in ["has space", &"k".repeat(256)] {
        let refused = keyed(&busway, "POST", "/subscriptions", &body, bad).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(
            refused.body["error"]["details"][0]["field"],
            "Idempotency-Key"
        );
    }
    busway.stop().await;
}
