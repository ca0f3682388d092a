//! The audit trail over HTTP on the local host: each change through the portal is an entry
//! naming who (key, team, role), what (action, resource, before and after) and when; `GET
//! /audit` pages through them newest first with the lists' `limit`/`next_token`, filtered by
//! event type and team; platform admins read all, a team's owners their team's, no other key.

use busway_tests::{Broker, seed_event, v2_data_schema};
use serde_json::{Value, json};

async fn audit(busway: &Broker, query: &str, key: Option<&str>) -> busway_tests::Reply {
    let request = busway
        .http
        .get(busway.portal_url(&format!("/audit{query}")));
    busway.send_as(request, key).await
}

async fn post(busway: &Broker, path: &str, body: Value, key: &str) -> busway_tests::Reply {
    let request = busway.http.post(busway.portal_url(path)).json(&body);
    busway.send_as(request, Some(key)).await
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().expect("an action"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_through_the_portal_is_an_entry_its_owners_and_admins_read() {
    let busway = Broker::start().await;
    let owner = busway.create_key("logistics", "owner", None).await;
    let billing = busway.create_key("billing", "owner", None).await;
    let consumer = busway.create_key("logistics", "consumer", None).await;

    let created = post(&busway, "/events", seed_event(), &owner).await;
    busway
        .deployed(
            created.expect(201)["deployment_id"]
                .as_str()
                .expect("an id"),
        )
        .await;
    let version = json!({"data": v2_data_schema(), "description": "with the scanner"});
    let request = busway
        .http
        .put(busway.portal_url("/events/scanned_parcel"))
        .json(&version);
    busway.send_as(request, Some(&owner)).await.expect(201);
    let subscription = json!({"event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
        "connection_type": "HTTPS", "connection_string": "https://consumer.example.com/u2"});
    let mine = post(&busway, "/subscriptions", subscription.clone(), &owner).await;
    let secret = mine.expect(201)["secret"]
        .as_str()
        .expect("a secret")
        .to_string();
    let mine = mine.body["id"].as_str().expect("an id").to_string();
    let rotated = busway
        .send_as(
            busway
                .http
                .post(busway.portal_url(&format!("/subscriptions/{mine}/secret/rotate"))),
            Some(&owner),
        )
        .await;
    let new_secret = rotated.expect(201)["secret"]
        .as_str()
        .expect("a secret")
        .to_string();
    let mut theirs = subscription.clone();
    theirs["target_unit"] = json!("b1");
    post(&busway, "/subscriptions", theirs, &billing)
        .await
        .expect(201);
    let deleted = busway
        .send_as(
            busway
                .http
                .delete(busway.portal_url(&format!("/subscriptions/{mine}"))),
            Some(&owner),
        )
        .await;
    deleted.expect(202);

    // A platform admin reads every entry, newest first: the keys made above, then the changes.
    let all = audit(&busway, "", None).await;
    all.expect_error(401, "unauthorized");
    let all = audit(&busway, "?limit=100", Some(&busway.admin_key)).await;
    let entries = all.expect(200)["entries"]
        .as_array()
        .expect("entries")
        .clone();
    assert_eq!(
        actions(&entries),
        [
            "subscription.delete",
            "subscription.create",
            "subscription.secret.rotate",
            "subscription.create",
            "version.create",
            "event_type.create",
            "key.create",
            "key.create",
            "key.create",
        ]
    );
    let text = all.body.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&new_secret),
        "no secret in the audit"
    );
    assert!(!text.contains("bwk_"), "no key in the audit");

    // Who, what, before and after, when.
    let delete = &entries[0];
    assert_eq!(delete["resource"], mine.as_str());
    assert_eq!(delete["team"], "logistics");
    assert_eq!(delete["caller_team"], "logistics");
    assert_eq!(delete["role"], "owner");
    assert_eq!(delete["event_type"], "scanned_parcel");
    assert_eq!(delete["before"]["id"], mine.as_str());
    assert_eq!(
        delete["before"]["connection_string"],
        "https://consumer.example.com/u2"
    );
    assert_eq!(delete["after"], Value::Null);
    let keys = busway.get("/keys").await;
    let owner_id = keys.expect(200)["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["team"] == "logistics" && k["role"] == "owner")
        .and_then(|k| k["id"].as_str())
        .expect("the owner key's id")
        .to_string();
    assert_eq!(delete["key_id"], owner_id.as_str());
    let at = |e: &Value| {
        time::OffsetDateTime::parse(
            e["at"].as_str().expect("a time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("an RFC 3339 time")
    };
    assert!(at(&entries[0]) >= at(&entries[5]));
    let version = &entries[4];
    assert_eq!(version["resource"], "scanned_parcel/2");
    assert_eq!(version["before"]["latest_version"], 1, "{version}");
    assert_eq!(version["after"]["version"], 2, "{version}");
    assert_eq!(entries[5]["before"], Value::Null);
    assert_eq!(entries[5]["after"]["team"], "logistics");

    // An owner reads its team's entries, filtered further by event type; not another team's.
    let theirs = audit(&busway, "?team=logistics", Some(&owner)).await;
    let theirs = theirs.expect(200)["entries"]
        .as_array()
        .expect("entries")
        .clone();
    assert_eq!(
        actions(&theirs),
        [
            "subscription.delete",
            "subscription.secret.rotate",
            "subscription.create",
            "version.create",
            "event_type.create",
            "key.create",
            "key.create",
        ]
    );
    let defaulted = audit(&busway, "", Some(&owner)).await;
    assert_eq!(defaulted.expect(200)["entries"], json!(theirs));
    let billing_entries = audit(&busway, "?event_type=scanned_parcel", Some(&billing)).await;
    assert_eq!(
        actions(
            billing_entries.expect(200)["entries"]
                .as_array()
                .expect("entries")
        ),
        ["subscription.create"]
    );
    audit(&busway, "?team=billing", Some(&owner))
        .await
        .expect_error(403, "forbidden");
    audit(&busway, "", Some(&consumer))
        .await
        .expect_error(403, "forbidden");
    let fields = audit(&busway, "?team=Not+A+Team", Some(&busway.admin_key))
        .await
        .expect_error(400, "validation_failed");
    assert_eq!(fields, ["team"]);

    // Pages of 2 go through the same entries in the same order.
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = audit(&busway, &query, Some(&busway.admin_key)).await;
        let items = page.expect(200)["entries"]
            .as_array()
            .expect("entries")
            .clone();
        assert!(items.len() <= 2);
        paged.extend(items);
        match page.body["next_token"].as_str() {
            Some(token) => query = format!("?limit=2&next_token={token}"),
            None => break,
        }
    }
    assert_eq!(paged, entries);
    busway.stop().await;
}
