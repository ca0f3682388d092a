//! Every list of the portal pages: `limit` (default 50, at most 100) and an opaque `next_token`
//! that continues after the page's last item.

use busway_tests::consumer::http_subscription;
use busway_tests::{Broker, seed_event};
use serde_json::{Value, json};

/// Follows `next_token` from the first page of `path` with `limit`; returns each page's items.
async fn pages(busway: &Broker, path: &str, list: &str, limit: usize) -> Vec<Vec<Value>> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{separator}limit={limit}");
    let mut pages = Vec::new();
    loop {
        let answer = busway.get(&url).await.expect(200).clone();
        let items = answer[list].as_array().expect("a list").clone();
        assert!(items.len() <= limit, "{answer}");
        pages.push(items);
        match answer["next_token"].as_str() {
            Some(token) => url = format!("{path}{separator}limit={limit}&next_token={token}"),
            None => return pages,
        }
    }
}

fn ids(pages: &[Vec<Value>], field: &str) -> Vec<String> {
    pages
        .iter()
        .flatten()
        .map(|item| item[field].as_str().expect("an id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_pages_through_each_item_once() {
    let busway = Broker::start().await;
    for name in ["alpha_parcel", "beta_parcel", "scanned_parcel"] {
        let mut event = seed_event();
        event["event_type"] = json!(name);
        busway.create_deployed_event(&event).await;
    }
    for unit in ["u1", "u2", "u3", "u4", "u5"] {
        busway
            .subscribe_deployed(&http_subscription(1, unit, "http://127.0.0.1:9/hook"))
            .await;
    }

    let event_pages = pages(&busway, "/events", "event_types", 2).await;
    assert_eq!(event_pages.len(), 2, "{event_pages:?}");
    assert_eq!(
        ids(&event_pages, "event_type"),
        ["alpha_parcel", "beta_parcel", "scanned_parcel"]
    );

    let all = pages(&busway, "/subscriptions", "subscriptions", 100).await;
    assert_eq!(all.len(), 1);
    let subscription_pages = pages(&busway, "/subscriptions", "subscriptions", 2).await;
    assert_eq!(subscription_pages.len(), 3);
    assert_eq!(ids(&subscription_pages, "id"), ids(&all, "id"));
    assert_eq!(ids(&all, "id").len(), 5);
    let filtered = pages(
        &busway,
        "/subscriptions?event_type=scanned_parcel&target_unit=u4",
        "subscriptions",
        1,
    )
    .await;
    assert_eq!(ids(&filtered, "target_unit"), ["u4"]);

    let all = pages(&busway, "/deployments", "deployments", 100).await;
    let deployment_pages = pages(&busway, "/deployments", "deployments", 3).await;
    assert_eq!(ids(&deployment_pages, "id"), ids(&all, "id"));
    assert_eq!(
        ids(&all, "id").len(),
        8,
        "3 event types and 5 subscriptions"
    );
    let of_one = pages(
        &busway,
        "/deployments?event_type=beta_parcel",
        "deployments",
        1,
    )
    .await;
    assert_eq!(ids(&of_one, "event_type"), ["beta_parcel"]);

    // Without a limit, a page holds up to 50.
    let answer = busway.get("/deployments").await.expect(200).clone();
    assert_eq!(answer["deployments"].as_array().map(Vec::len), Some(8));
    assert!(answer.get("next_token").is_none(), "{answer}");
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_limit_or_token_is_refused_by_name() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    for path in ["/events", "/subscriptions", "/deployments"] {
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=ten", "limit"),
            ("next_token=zz", "next_token"),
        ] {
            let fields = busway
                .get(&format!("{path}?{query}"))
                .await
                .expect_error(400, "validation_failed");
            assert_eq!(fields, [field], "{path}?{query}");
        }
    }
    // A well-formed token that no page gave ("abc" and, for event types, whose positions are
    // names, "AB" as hex).
    for (path, token) in [
        ("/subscriptions", "616263"),
        ("/deployments", "616263"),
        ("/events", "4142"),
    ] {
        let fields = busway
            .get(&format!("{path}?next_token={token}"))
            .await
            .expect_error(400, "validation_failed");
        assert_eq!(fields, ["next_token"], "{path}");
    }
    busway.stop().await;
}
