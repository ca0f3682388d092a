//! Who may do what, over HTTP on the local host: every portal and broker route called with no
//! key, a key of another team, a reader (a consumer key of another team), a producer of another
//! application, the owning team's owner and a platform admin, each answer's status asserted.

use busway_tests::{Broker, Reply, seed_event, v1_envelope, v2_data_schema};
use serde_json::{Value, json};

/// The callers of every row, in this order.
const CALLERS: [&str; 6] = [
    "no key",
    "wrong team",
    "reader",
    "other producer",
    "owner",
    "admin",
];

struct Keys {
    keys: [Option<String>; 6],
}

impl Keys {
    async fn make(busway: &Broker) -> Keys {
        Keys {
            keys: [
                None,
                Some(busway.create_key("billing", "owner", None).await),
                Some(busway.create_key("billing", "consumer", None).await),
                Some(
                    busway
                        .create_key("logistics", "producer", Some("depot"))
                        .await,
                ),
                Some(busway.create_key("logistics", "owner", None).await),
                Some(busway.admin_key.clone()),
            ],
        }
    }

    fn owner(&self) -> &str {
        self.keys[4].as_deref().expect("an owner key")
    }
}

/// One request of a row, made afresh for each caller (`{caller}` in the path or body names the
/// caller's column, so that creations do not collide).
#[derive(Clone, Copy)]
enum Api {
    Portal,
    Broker,
}

async fn call(
    busway: &Broker,
    api: Api,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> Reply {
    let url = match api {
        Api::Portal => busway.portal_url(path),
        Api::Broker => busway.broker_url(path),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = busway.http.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    busway.send_as(request, key).await
}

/// Calls the row's route as each caller (skipping `None` expectations) and asserts the statuses;
/// a 401 carries `WWW-Authenticate`'s error body, a 403 names what was missing.
#[allow(clippy::too_many_arguments)]
async fn row(
    busway: &Broker,
    keys: &Keys,
    api: Api,
    method: &str,
    path: &str,
    body: Option<Value>,
    expected: [Option<u16>; 6],
) {
    for (i, want) in expected.iter().enumerate() {
        let Some(want) = *want else { continue };
        let caller = CALLERS[i].replace(' ', "_");
        let path = path.replace("{caller}", &caller);
        let body = body
            .as_ref()
            .map(|b| serde_json::from_str(&b.to_string().replace("{caller}", &caller)))
            .transpose()
            .expect("the body stays JSON");
        let reply = call(
            busway,
            api,
            method,
            &path,
            body.as_ref(),
            keys.keys[i].as_deref(),
        )
        .await;
        assert_eq!(
            reply.status, want,
            "{method} {path} as {}: {}",
            CALLERS[i], reply.body
        );
        match want {
            401 => {
                reply.expect_error(401, "unauthorized");
            }
            403 => {
                reply.expect_error(403, "forbidden");
            }
            _ => {}
        }
    }
}

const S: fn(u16) -> Option<u16> = Some;

fn all(status: u16) -> [Option<u16>; 6] {
    [
        S(401),
        S(status),
        S(status),
        S(status),
        S(status),
        S(status),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_its_key_allows() {
    let busway = Broker::start().await;
    let keys = Keys::make(&busway).await;
    let owner = Some(keys.owner());
    let (p, b) = (Api::Portal, Api::Broker);

    // The owning team's event type (application demo) and subscription.
    let created = call(&busway, p, "POST", "/events", Some(&seed_event()), owner).await;
    busway
        .deployed(
            created.expect(201)["deployment_id"]
                .as_str()
                .expect("an id"),
        )
        .await;
    let mut restricted = seed_event();
    restricted["event_type"] = json!("restricted_parcel");
    restricted["readers"] = json!(["logistics"]);
    restricted["writers"] = json!(["depot"]);
    let created = call(&busway, p, "POST", "/events", Some(&restricted), owner).await;
    busway
        .deployed(
            created.expect(201)["deployment_id"]
                .as_str()
                .expect("an id"),
        )
        .await;
    let subscription = |unit: &str| {
        json!({"event_type": "scanned_parcel", "version": "1", "target_unit": unit,
               "connection_type": "HTTPS", "connection_string": format!("https://consumer.example.com/{unit}")})
    };
    let mine = call(
        &busway,
        p,
        "POST",
        "/subscriptions",
        Some(&subscription("mine")),
        owner,
    )
    .await;
    let mine = mine.expect(201)["id"].as_str().expect("an id").to_string();
    let spare = call(
        &busway,
        p,
        "POST",
        "/subscriptions",
        Some(&subscription("spare")),
        owner,
    )
    .await;
    let spare = spare.expect(201)["id"].as_str().expect("an id").to_string();
    let deployment = busway.deployments_of("scanned_parcel").await[0]["id"]
        .as_str()
        .expect("a deployment id")
        .to_string();

    // Event types: everyone with a key reads them; owner and admin keys register them; only the
    // owning team's owners and platform admins change them.
    row(&busway, &keys, p, "GET", "/events", None, all(200)).await;
    row(
        &busway,
        &keys,
        p,
        "GET",
        "/events/scanned_parcel",
        None,
        all(200),
    )
    .await;
    row(
        &busway,
        &keys,
        p,
        "GET",
        "/events/scanned_parcel/versions/1",
        None,
        all(200),
    )
    .await;
    let mut new_event = seed_event();
    new_event["event_type"] = json!("parcel_of_{caller}");
    row(
        &busway,
        &keys,
        p,
        "POST",
        "/events",
        Some(new_event),
        [S(401), S(201), S(403), S(403), S(201), S(201)],
    )
    .await;
    // Each caller's version differs: a repeat of the latest one would be answered with it.
    let version = json!({"data": v2_data_schema(), "description": "added by {caller}"});
    row(
        &busway,
        &keys,
        p,
        "PUT",
        "/events/scanned_parcel",
        Some(version),
        [S(401), S(403), S(403), S(403), S(201), S(201)],
    )
    .await;
    // The owner added version 2, the admin version 3.
    row(
        &busway,
        &keys,
        p,
        "DELETE",
        "/events/scanned_parcel/versions/2",
        None,
        [S(401), S(403), S(403), S(403), S(202), None],
    )
    .await;
    row(
        &busway,
        &keys,
        p,
        "DELETE",
        "/events/scanned_parcel/versions/3",
        None,
        [None, None, None, None, None, S(202)],
    )
    .await;

    // Subscriptions: any team among the readers subscribes (not with a producer key).
    let body = json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "unit_of_{caller}",
        "connection_type": "HTTPS", "connection_string": "https://consumer.example.com/{caller}"});
    row(
        &busway,
        &keys,
        p,
        "POST",
        "/subscriptions",
        Some(body),
        [S(401), S(201), S(201), S(403), S(201), S(201)],
    )
    .await;
    let body = json!({"event_type": "restricted_parcel", "version": "1", "target_unit": "unit_of_{caller}",
        "connection_type": "HTTPS", "connection_string": "https://consumer.example.com/r/{caller}"});
    row(
        &busway,
        &keys,
        p,
        "POST",
        "/subscriptions",
        Some(body),
        [S(401), S(403), S(403), S(403), S(201), S(201)],
    )
    .await;
    row(&busway, &keys, p, "GET", "/subscriptions", None, all(200)).await;
    row(
        &busway,
        &keys,
        p,
        "GET",
        &format!("/subscriptions/{mine}"),
        None,
        all(200),
    )
    .await;
    let only_the_team = [S(401), S(403), S(403), S(403), S(200), S(200)];
    row(
        &busway,
        &keys,
        p,
        "GET",
        &format!("/subscriptions/{mine}/dead-letters"),
        None,
        only_the_team,
    )
    .await;
    row(
        &busway,
        &keys,
        p,
        "POST",
        &format!("/subscriptions/{mine}/dead-letters/redrive"),
        None,
        [S(401), S(403), S(403), S(403), S(202), S(202)],
    )
    .await;
    // Pausing and resuming are the team's: the owner's call pauses, the admin's finds it paused.
    for action in ["pause", "resume"] {
        row(
            &busway,
            &keys,
            p,
            "POST",
            &format!("/subscriptions/{mine}/{action}"),
            None,
            [S(401), S(403), S(403), S(403), S(200), S(409)],
        )
        .await;
    }
    // A replay is the team's too; the right is checked before the start time (here in the future).
    row(
        &busway,
        &keys,
        p,
        "POST",
        &format!("/subscriptions/{mine}/replay"),
        Some(json!({"start_time": "2999-01-01T00:00:00Z"})),
        [S(401), S(403), S(403), S(403), S(400), S(400)],
    )
    .await;

    // Deployments: everyone reads them; retrying one is its owners' (a SUCCEEDED one is 409).
    row(&busway, &keys, p, "GET", "/deployments", None, all(200)).await;
    row(
        &busway,
        &keys,
        p,
        "GET",
        &format!("/deployments/{deployment}"),
        None,
        all(200),
    )
    .await;
    row(
        &busway,
        &keys,
        p,
        "POST",
        &format!("/deployments/{deployment}/retry"),
        None,
        [S(401), S(403), S(403), S(403), S(409), S(409)],
    )
    .await;

    // The audit: owners read their team's (the default filter), platform admins every team's.
    row(
        &busway,
        &keys,
        p,
        "GET",
        "/audit",
        None,
        [S(401), S(200), S(403), S(403), S(200), S(200)],
    )
    .await;
    row(
        &busway,
        &keys,
        p,
        "GET",
        "/audit?team=logistics&event_type=scanned_parcel",
        None,
        [S(401), S(403), S(403), S(403), S(200), S(200)],
    )
    .await;

    // Keys: platform admins only.
    let admin_only = |ok| [S(401), S(403), S(403), S(403), S(403), S(ok)];
    row(&busway, &keys, p, "GET", "/keys", None, admin_only(200)).await;
    let new_key = json!({"team": "billing", "role": "consumer"});
    row(
        &busway,
        &keys,
        p,
        "POST",
        "/keys",
        Some(new_key),
        admin_only(201),
    )
    .await;
    let spare_key = busway.create_key("billing", "consumer", None).await;
    let listed = busway.get("/keys").await;
    let spare_id = listed.expect(200)["keys"]
        .as_array()
        .expect("keys")
        .last()
        .and_then(|k| k["id"].as_str())
        .expect("the newest key's id")
        .to_string();
    row(
        &busway,
        &keys,
        p,
        "POST",
        &format!("/keys/{spare_id}/rotate"),
        None,
        admin_only(201),
    )
    .await;
    row(
        &busway,
        &keys,
        p,
        "POST",
        &format!("/keys/{spare_id}/revoke"),
        None,
        admin_only(200),
    )
    .await;
    // Never used before, so no lookup of it is cached: refused at once.
    let revoked = call(&busway, p, "GET", "/events", None, Some(&spare_key)).await;
    revoked.expect_error(401, "unauthorized");

    // Publishing: producer keys of the application or a writer, and no other key (a platform
    // admin makes a producer key to publish).
    let event = v1_envelope("u2");
    row(
        &busway,
        &keys,
        b,
        "POST",
        "/scanned_parcel/1",
        Some(event.clone()),
        [S(401), S(403), S(403), S(403), S(403), S(403)],
    )
    .await;
    row(
        &busway,
        &keys,
        b,
        "POST",
        "/restricted_parcel/1",
        Some(event.clone()),
        [S(401), S(403), S(403), S(200), S(403), S(403)],
    )
    .await;
    let demo = busway
        .create_key("logistics", "producer", Some("demo"))
        .await;
    let published = call(
        &busway,
        b,
        "POST",
        "/scanned_parcel/1",
        Some(&event),
        Some(&demo),
    )
    .await;
    published.expect(200);

    // Deleting a subscription is its team's; the owner deletes one, the admin the other.
    row(
        &busway,
        &keys,
        p,
        "DELETE",
        &format!("/subscriptions/{mine}"),
        None,
        [S(401), S(403), S(403), S(403), S(202), None],
    )
    .await;
    row(
        &busway,
        &keys,
        p,
        "DELETE",
        &format!("/subscriptions/{spare}"),
        None,
        [None, None, None, None, None, S(202)],
    )
    .await;

    // An unknown key is a 401 with the challenge, on both APIs.
    for (api, path) in [(p, "/events"), (b, "/scanned_parcel/1")] {
        let url = match api {
            Api::Portal => busway.portal_url(path),
            Api::Broker => busway.broker_url(path),
        };
        let response = busway
            .http
            .get(url)
            .bearer_auth("bwk_unknown")
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"busway\"")
        );
    }
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_teams_see_a_subscription_without_where_it_delivers() {
    let busway = Broker::start().await;
    let keys = Keys::make(&busway).await;
    let owner = Some(keys.owner());
    let reader = keys.keys[2].as_deref();
    let created = call(
        &busway,
        Api::Portal,
        "POST",
        "/events",
        Some(&seed_event()),
        owner,
    )
    .await;
    busway
        .deployed(
            created.expect(201)["deployment_id"]
                .as_str()
                .expect("an id"),
        )
        .await;
    let body = json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
        "connection_type": "HTTPS", "connection_string": "https://consumer.example.com/secret-path"});
    let made = call(
        &busway,
        Api::Portal,
        "POST",
        "/subscriptions",
        Some(&body),
        owner,
    )
    .await;
    let id = made.expect(201)["id"].as_str().expect("an id").to_string();

    let path = format!("/subscriptions/{id}");
    let mine = call(&busway, Api::Portal, "GET", &path, None, owner).await;
    assert_eq!(
        mine.expect(200)["connection_string"],
        body["connection_string"]
    );
    assert_eq!(mine.body["team"], "logistics");
    let theirs = call(&busway, Api::Portal, "GET", &path, None, reader).await;
    assert!(
        theirs.expect(200).get("connection_string").is_none(),
        "{}",
        theirs.body
    );
    assert!(
        theirs.body["delivery"].get("delivered").is_none(),
        "{}",
        theirs.body
    );
    let listed = call(&busway, Api::Portal, "GET", "/subscriptions", None, reader).await;
    let listed = listed.expect(200)["subscriptions"]
        .as_array()
        .expect("a list")
        .clone();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("connection_string").is_none(),
        "{}",
        listed[0]
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_key_above_its_rate_limit_is_answered_429_with_retry_after() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let made = busway
        .post(
            "/keys",
            &json!({"team": "platform", "role": "producer", "application": "demo",
                    "rate_limit": {"per_second": 1, "burst": 3}}),
        )
        .await;
    let key = made.expect(201)["key"].as_str().expect("a key").to_string();
    assert_eq!(
        made.body["rate_limit"],
        json!({"per_second": 1, "burst": 3})
    );
    let event = v1_envelope("u2");
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let reply = call(
            &busway,
            Api::Broker,
            "POST",
            "/scanned_parcel/1",
            Some(&event),
            Some(&key),
        )
        .await;
        statuses.push(reply.status);
        if reply.status == 429 {
            reply.expect_error(429, "rate_limited");
        }
    }
    // The burst passes; then the bucket refills one token a second, far slower than these
    // requests come.
    assert_eq!(statuses[..3], [200, 200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");
    // Another key is held to its own bucket only.
    let other = busway.producer_key("scanned_parcel").await;
    let reply = call(
        &busway,
        Api::Broker,
        "POST",
        "/scanned_parcel/1",
        Some(&event),
        Some(&other),
    )
    .await;
    reply.expect(200);
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_targets_need_a_portal_on_loopback_or_allow_loopback_targets() {
    let subscription = json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
        "connection_type": "HTTPS", "connection_string": "http://127.0.0.1:9/events"});
    for allow in [false, true] {
        let busway = Broker::start_with(|config| {
            config.portal_addr = "0.0.0.0:0".parse().expect("an address");
            config.allow_loopback_targets = allow;
        })
        .await;
        busway.create_deployed_event(&seed_event()).await;
        let reply = busway.post("/subscriptions", &subscription).await;
        if allow {
            reply.expect(201);
        } else {
            let fields = reply.expect_error(400, "validation_failed");
            assert_eq!(fields, ["connection_string"]);
        }
        busway.stop().await;
    }
}
