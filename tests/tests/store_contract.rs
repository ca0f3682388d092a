//! The storage ports' contracts: the same assertions run against the embedded adapters
//! (SQLite, folders) and the AWS adapters (DynamoDB, S3) on one moto server per run, so both
//! hosts keep, reject and order records alike. The DynamoDB store reads its lists two items a
//! page here, and every list below has more than two items: a store that stopped after the
//! first page would fail.

#[allow(dead_code)]
mod support;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use busway_aws::{BucketNames, DynamoStore, S3ObjectStore};
use busway_core::deploy::DeployKind;
use busway_core::deployment::{Deployment, DeploymentStatus, new_id};
use busway_core::event::{EventType, EventVersion, ProducerConnection, VersionState};
use busway_core::idempotency::{self, IdempotencyStore};
use busway_core::page::PageRequest;
use busway_core::ports::{
    Bucket, DeploymentStore, EventStore, ObjectStore, ProvisioningStarter, StoreError,
    schema_backup_key,
};
use busway_core::subscription::{
    ConsumerConnection, RetryPolicy, Subscription, SubscriptionFilter, SubscriptionState,
};
use busway_core::webhook::{ROTATION_OVERLAP, SigningSecret, SigningSecrets, rotated};
use busway_core::{Application, EventTypeName, TargetUnit, Version, now};
use busway_local::objects::FolderObjectStore;
use busway_local::store::SqliteStore;
use busway_tests::moto;
use serde_json::json;
use support::emulated;

fn name(text: &str) -> EventTypeName {
    EventTypeName::new(text).expect("a valid event type name")
}

fn unit(text: &str) -> TargetUnit {
    TargetUnit::new(text).expect("a valid target unit")
}

fn v(number: u32) -> Version {
    Version::new(number).expect("a valid version")
}

fn event_type(event: &str, description: &str) -> (EventType, EventVersion) {
    let at = now();
    let event = EventType {
        event_type: name(event),
        application: Application::new("demo").expect("a valid application"),
        description: description.to_string(),
        connection_type: ProducerConnection::Https,
        latest_version: Version::FIRST,
        created_at: at,
        team: Some("logistics".parse().expect("a team")),
        writers: vec!["depot".parse().expect("an application")],
        readers: Some(vec!["billing".parse().expect("a team")]),
    };
    let first = version(&event.event_type, 1, description);
    (event, first)
}

fn version(event: &EventTypeName, number: u32, description: &str) -> EventVersion {
    EventVersion {
        event_type: event.clone(),
        version: v(number),
        description: description.to_string(),
        // Nested deeper than DynamoDB's 32 map levels, with numbers that must stay as written.
        schema: (0..40).fold(
            json!({"type": "number", "minimum": 1.5, "maximum": 10}),
            |inner, _| json!({"type": "object", "properties": {"x": inner}}),
        ),
        state: VersionState::Active,
        created_at: now(),
    }
}

fn subscription(event: &EventTypeName, version: u32, target: &str, url: &str) -> Subscription {
    Subscription {
        id: new_id(),
        event_type: event.clone(),
        version: v(version),
        target_unit: unit(target),
        connection_type: ConsumerConnection::Https,
        connection_string: url.to_string(),
        retry_policy: RetryPolicy::new(3, 120).expect("a valid policy"),
        delivery: Default::default(),
        state: SubscriptionState::Active,
        created_at: now(),
        team: Some("logistics".parse().expect("a team")),
        replay_from: None,
    }
}

fn deployment(event: Option<&EventTypeName>) -> Deployment {
    let mut d = Deployment::pending(
        new_id(),
        DeployKind::Producer,
        "local-publisher-components-bucket".into(),
        "parcel/1/deploy.json".into(),
        now(),
    );
    d.event_type = event.cloned();
    d.version = event.map(|_| Version::FIRST);
    d
}

fn ids(subscriptions: &[Subscription]) -> Vec<&str> {
    subscriptions.iter().map(|s| s.id.as_str()).collect()
}

async fn listed<S: EventStore>(
    store: &S,
    event: Option<&str>,
    version: Option<u32>,
    target: Option<&str>,
) -> Vec<Subscription> {
    let filter = SubscriptionFilter {
        event_type: event.map(name),
        version: version.map(v),
        target_unit: target.map(unit),
    };
    store.list_subscriptions(&filter).await.expect("listed")
}

async fn event_store_contract<S: EventStore + DeploymentStore>(store: &S) {
    let parcel = name("parcel");
    let (event, v1) = event_type("parcel", "first");
    let created = deployment(Some(&parcel));
    store
        .create_event_type(&event, &v1, &created)
        .await
        .expect("created");
    assert_eq!(
        store.get_event_type(&parcel).await.expect("read"),
        Some(event.clone())
    );
    assert_eq!(
        store.get_version(&parcel, v(1)).await.expect("read"),
        Some(v1.clone())
    );
    assert_eq!(
        store.get_deployment(&created.id).await.expect("read"),
        Some(created),
        "a write records the deployment it starts"
    );

    let (again, again_v1) = event_type("parcel", "second");
    let refused = deployment(Some(&parcel));
    let duplicate = store.create_event_type(&again, &again_v1, &refused).await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists(_))),
        "{duplicate:?}"
    );
    assert_eq!(
        store.get_event_type(&parcel).await.expect("read"),
        Some(event.clone())
    );
    assert_eq!(
        store.get_deployment(&refused.id).await.expect("read"),
        None,
        "a refused write records nothing"
    );

    let v2 = version(&parcel, 2, "two");
    store
        .add_version(&v2, v(1), &deployment(Some(&parcel)))
        .await
        .expect("version 2");
    let stale = store
        .add_version(
            &version(&parcel, 2, "late"),
            v(1),
            &deployment(Some(&parcel)),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let skipped = store
        .add_version(
            &version(&parcel, 4, "gap"),
            v(2),
            &deployment(Some(&parcel)),
        )
        .await;
    assert!(
        matches!(skipped, Err(StoreError::Conflict(_))),
        "{skipped:?}"
    );
    let v3 = version(&parcel, 3, "three");
    store
        .add_version(&v3, v(2), &deployment(Some(&parcel)))
        .await
        .expect("version 3");
    let ghost = store
        .add_version(&version(&name("ghost"), 2, "x"), v(1), &deployment(None))
        .await;
    assert!(matches!(ghost, Err(StoreError::NotFound(_))), "{ghost:?}");
    assert_eq!(
        store
            .get_event_type(&parcel)
            .await
            .expect("read")
            .map(|e| e.latest_version),
        Some(v(3))
    );
    assert_eq!(
        store.list_versions(&parcel).await.expect("listed"),
        [v1.clone(), v2.clone(), v3.clone()]
    );
    assert_eq!(store.get_version(&parcel, v(4)).await.expect("read"), None);

    for other in ["zebra", "audit"] {
        let (e, first) = event_type(other, other);
        store
            .create_event_type(&e, &first, &deployment(Some(&e.event_type)))
            .await
            .expect("created");
    }
    let names: Vec<String> = store
        .list_event_types()
        .await
        .expect("listed")
        .into_iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(names, ["audit", "parcel", "zebra"], "by name");

    let audit = name("audit");
    let a = subscription(&parcel, 1, "unit_a", "https://a.example.com/hook");
    store
        .create_subscription(&a, &deployment(Some(&parcel)))
        .await
        .expect("subscribed");
    let same_target = Subscription {
        id: new_id(),
        ..a.clone()
    };
    let refused = deployment(Some(&parcel));
    let identical = store.create_subscription(&same_target, &refused).await;
    assert!(
        matches!(&identical, Err(StoreError::AlreadyExists(m)) if m.contains(&a.id)),
        "{identical:?}"
    );
    assert_eq!(
        store.get_subscription(&same_target.id).await.expect("read"),
        None
    );
    assert_eq!(store.get_deployment(&refused.id).await.expect("read"), None);
    let b = subscription(&parcel, 1, "unit_a", "https://b.example.com/hook");
    let c = subscription(&parcel, 2, "unit_b", "https://a.example.com/hook");
    let e = subscription(&audit, 1, "unit_b", "https://a.example.com/hook");
    for s in [&b, &c, &e] {
        store
            .create_subscription(s, &deployment(Some(&s.event_type)))
            .await
            .expect("subscribed");
    }
    for (event, version) in [("parcel", 9), ("ghost", 1)] {
        let missing = store
            .create_subscription(
                &subscription(
                    &name(event),
                    version,
                    "unit_a",
                    "https://a.example.com/hook",
                ),
                &deployment(None),
            )
            .await;
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{missing:?}"
        );
    }
    assert_eq!(
        store.get_subscription(&a.id).await.expect("read"),
        Some(a.clone())
    );
    let all = [&a, &b, &c, &e].map(|s| s.id.as_str());
    assert_eq!(
        ids(&listed(store, None, None, None).await),
        all,
        "oldest first"
    );
    assert_eq!(
        ids(&listed(store, Some("parcel"), None, None).await),
        all[..3]
    );
    assert_eq!(
        ids(&listed(store, Some("parcel"), Some(1), None).await),
        all[..2]
    );
    assert_eq!(
        ids(&listed(store, None, None, Some("unit_b")).await),
        [&c.id, &e.id]
    );
    assert_eq!(
        ids(&listed(store, Some("parcel"), None, Some("unit_b")).await),
        [&c.id]
    );
    assert_eq!(
        ids(&listed(store, None, Some(1), None).await),
        [&a.id, &b.id, &e.id]
    );
    assert!(listed(store, None, None, Some("nobody")).await.is_empty());

    let busy = store
        .delete_version(&parcel, v(1), &deployment(Some(&parcel)))
        .await;
    assert!(
        matches!(&busy, Err(StoreError::Conflict(m)) if m.contains(&a.id) && m.contains(&b.id)),
        "{busy:?}"
    );

    // A replay's start is recorded on the subscription with its job, in whole seconds as
    // written, and changes nothing else of it.
    let from = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("a time");
    let replaying = deployment(Some(&parcel));
    store
        .replay_subscription(&a.id, from, &replaying)
        .await
        .expect("replayed");
    let replayed = store.get_subscription(&a.id).await.expect("read");
    assert_eq!(
        replayed,
        Some(Subscription {
            replay_from: Some(from),
            ..a.clone()
        })
    );
    assert_eq!(
        store.get_deployment(&replaying.id).await.expect("read"),
        Some(replaying)
    );
    let unknown = deployment(Some(&parcel));
    let refused = store
        .replay_subscription("no-such-subscription", from, &unknown)
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    assert_eq!(store.get_deployment(&unknown.id).await.expect("read"), None);

    store
        .delete_subscription(&a.id, &deployment(Some(&parcel)))
        .await
        .expect("unsubscribed");
    assert_eq!(
        store
            .get_subscription(&a.id)
            .await
            .expect("read")
            .map(|s| s.state),
        Some(SubscriptionState::Deleted),
        "deleted subscriptions stay readable"
    );
    for id in [a.id.as_str(), "no-such-subscription"] {
        let gone = store.delete_subscription(id, &deployment(None)).await;
        assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
    }
    assert_eq!(
        ids(&listed(store, Some("parcel"), Some(1), None).await),
        [&b.id]
    );
    store
        .create_subscription(&same_target, &deployment(Some(&parcel)))
        .await
        .expect("a deleted subscription's target is free again");
    assert_eq!(
        ids(&listed(store, Some("parcel"), Some(1), None).await),
        [&b.id, &same_target.id]
    );

    for s in [&b, &same_target] {
        store
            .delete_subscription(&s.id, &deployment(Some(&parcel)))
            .await
            .expect("unsubscribed");
    }
    let deleting = deployment(Some(&parcel));
    store
        .delete_version(&parcel, v(1), &deleting)
        .await
        .expect("no subscriber left");
    assert_eq!(
        store.get_deployment(&deleting.id).await.expect("read"),
        Some(deleting)
    );
    let again = store
        .delete_version(&parcel, v(1), &deployment(Some(&parcel)))
        .await;
    assert!(matches!(again, Err(StoreError::NotFound(_))), "{again:?}");
    let never = store
        .delete_version(&parcel, v(9), &deployment(Some(&parcel)))
        .await;
    assert!(matches!(never, Err(StoreError::NotFound(_))), "{never:?}");
    let late = store
        .create_subscription(
            &subscription(&parcel, 1, "unit_c", "https://c.example.com/hook"),
            &deployment(Some(&parcel)),
        )
        .await;
    assert!(matches!(late, Err(StoreError::NotFound(_))), "{late:?}");
    let states: Vec<VersionState> = store
        .list_versions(&parcel)
        .await
        .expect("listed")
        .into_iter()
        .map(|v| v.state)
        .collect();
    assert_eq!(
        states,
        [
            VersionState::Deleted,
            VersionState::Active,
            VersionState::Active
        ],
        "deleted versions stay, so their numbers are never reused"
    );
}

async fn deployment_store_contract<S: DeploymentStore>(store: &S) {
    let (parcel, audit) = (name("parcel"), name("audit"));
    assert_eq!(
        store
            .get_deployment("no-such-deployment")
            .await
            .expect("read"),
        None
    );
    let mut first = deployment(Some(&parcel));
    let second = deployment(Some(&audit));
    let third = deployment(Some(&parcel));
    // A hand-broken deploy.json names no event type.
    let broken = deployment(None);
    for d in [&first, &second, &third, &broken] {
        store.put_deployment(d).await.expect("stored");
        assert_eq!(
            store.get_deployment(&d.id).await.expect("read"),
            Some(d.clone())
        );
    }

    first
        .advance(DeploymentStatus::Validating, now())
        .expect("pending → validating");
    store.put_deployment(&first).await.expect("replaced");
    first
        .fail(
            "DeployConfig.Invalid",
            "the key does not match the document",
            now(),
        )
        .expect("validating → failed");
    store.put_deployment(&first).await.expect("replaced");
    assert_eq!(
        store.get_deployment(&first.id).await.expect("read"),
        Some(first.clone()),
        "status, history, error and cause come back as written"
    );

    // Two starters read the same PENDING job: the first one's claim is written, the second
    // one's (and a supersede from the same read) is refused and changes nothing.
    let read = store
        .get_deployment(&third.id)
        .await
        .expect("read")
        .expect("stored");
    let mut claimed = read.clone();
    claimed.object_version = Some("v1".into());
    claimed.execution = Some("deploy-a-1".into());
    store
        .replace_deployment(&claimed, &read)
        .await
        .expect("the first claim");
    let mut other = read.clone();
    other.execution = Some("deploy-b-1".into());
    let mut superseded = read.clone();
    superseded
        .advance(DeploymentStatus::Superseded, now())
        .expect("pending → superseded");
    for late in [&other, &superseded] {
        assert!(
            matches!(
                store.replace_deployment(late, &read).await,
                Err(StoreError::Conflict(_))
            ),
            "{:?} over a record moved since it was read",
            late.execution
        );
    }
    assert_eq!(
        store.get_deployment(&third.id).await.expect("read"),
        Some(claimed.clone())
    );
    // The same execution moving on from what it read, and a move of the status alone, are
    // refused too once the record moved on again.
    let mut validating = claimed.clone();
    validating
        .advance(DeploymentStatus::Validating, now())
        .expect("pending → validating");
    store
        .replace_deployment(&validating, &claimed)
        .await
        .expect("moved from what was read");
    assert!(matches!(
        store.replace_deployment(&superseded, &claimed).await,
        Err(StoreError::Conflict(_))
    ));
    let ghost = deployment(Some(&parcel));
    assert!(
        matches!(
            store.replace_deployment(&ghost, &ghost).await,
            Err(StoreError::Conflict(_))
        ),
        "no record to replace"
    );
    assert_eq!(store.get_deployment(&ghost.id).await.expect("read"), None);

    let listed = |event: Option<EventTypeName>| async move {
        store
            .list_deployments(event.as_ref())
            .await
            .expect("listed")
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(None).await,
        [&broken.id, &third.id, &second.id, &first.id].map(String::as_str),
        "newest first; a replaced record keeps its place"
    );
    assert_eq!(
        listed(Some(parcel)).await,
        [&third.id, &first.id].map(String::as_str)
    );
    assert_eq!(listed(Some(audit)).await, [second.id.as_str()]);
    assert!(listed(Some(name("ghost"))).await.is_empty());

    // Pages of any size, followed from position to position, give the list once, in order;
    // the last page says no more follow (a store may give an empty last page).
    for limit in [1, 3, 100] {
        let mut paged = Vec::new();
        let mut page = PageRequest { limit, after: None };
        loop {
            let found = store.page_deployments(None, &page).await.expect("a page");
            assert!(found.items.len() <= limit);
            paged.extend(found.items.into_iter().map(|d| d.id));
            match found.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, listed(None).await, "pages of {limit}");
    }
    let foreign = PageRequest {
        limit: 2,
        after: Some("not a position".into()),
    };
    assert!(matches!(
        store.page_deployments(None, &foreign).await,
        Err(StoreError::BadPosition(_))
    ));
}

async fn object_store_contract(store: &dyn ObjectStore) {
    let key = "parcel/1/deploy.json";
    assert_eq!(
        store
            .get_object(Bucket::Publisher, key)
            .await
            .expect("read"),
        None
    );
    store
        .put_object(Bucket::Publisher, key, b"one".to_vec())
        .await
        .expect("stored");
    assert_eq!(
        store
            .get_object(Bucket::Publisher, key)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        store
            .get_object(Bucket::Subscriber, key)
            .await
            .expect("read"),
        None,
        "buckets are apart"
    );
    store
        .put_object(Bucket::Publisher, key, b"two".to_vec())
        .await
        .expect("replaced");
    assert_eq!(
        store
            .get_object(Bucket::Publisher, key)
            .await
            .expect("read")
            .as_deref(),
        Some(&b"two"[..])
    );
    let backup = schema_backup_key(&name("parcel"), v(1));
    let schema = serde_json::to_vec(&json!({"type": "object"})).expect("json");
    store
        .put_object(Bucket::SchemaBackup, &backup, schema.clone())
        .await
        .expect("stored");
    assert_eq!(
        store
            .get_object(Bucket::SchemaBackup, &backup)
            .await
            .expect("read"),
        Some(schema)
    );
    // A claim check: every byte value, more than EventBridge's 1 MB entry limit, written once
    // with its format version and never replaced.
    let claim_check: Vec<u8> = (0..1100 * 1024).map(|i| (i % 256) as u8).collect();
    let key = "claim-checks/parcel.1/0f/1.json";
    let format = [("busway-format-version", "1")];
    assert_eq!(
        store
            .object_metadata(Bucket::SchemaBackup, key)
            .await
            .expect("read"),
        None
    );
    store
        .put_new_object(Bucket::SchemaBackup, key, claim_check.clone(), &format)
        .await
        .expect("stored");
    let again = store
        .put_new_object(Bucket::SchemaBackup, key, b"other".to_vec(), &[])
        .await
        .expect_err("an object is never replaced");
    assert!(
        matches!(
            again.downcast_ref::<StoreError>(),
            Some(StoreError::AlreadyExists(_))
        ),
        "{again:#}"
    );
    let read = store
        .get_object(Bucket::SchemaBackup, key)
        .await
        .expect("read");
    assert!(read == Some(claim_check), "the bytes read back differ");
    let metadata = store
        .object_metadata(Bucket::SchemaBackup, key)
        .await
        .expect("read")
        .expect("the object has metadata");
    assert_eq!(
        metadata.into_iter().collect::<Vec<_>>(),
        vec![("busway-format-version".to_string(), "1".to_string())]
    );
    assert_eq!(
        store
            .object_metadata(Bucket::Publisher, "parcel/1/deploy.json")
            .await
            .expect("read"),
        Some(Default::default()),
        "an object written by put_object has no metadata"
    );
    for unsafe_key in ["../escape.json", "a//b.json", ""] {
        assert!(
            store
                .put_object(Bucket::Publisher, unsafe_key, b"x".to_vec())
                .await
                .is_err(),
            "{unsafe_key:?}"
        );
        assert!(
            store
                .get_object(Bucket::Publisher, unsafe_key)
                .await
                .is_err()
        );
    }
}

/// How the writers of `race_contract` run.
#[derive(Clone, Copy)]
enum Writers {
    Concurrent,
    /// One after another, each with the state all of them read. moto server answers concurrent
    /// requests without isolating DynamoDB transactions from each other (two conditional
    /// TransactWriteItems can both pass), so a true race there tests moto; DynamoDB serializes
    /// them, which leaves the adapter's conditions to decide, as they do here.
    OneAfterAnother,
}

async fn run<F: Future + Send + 'static>(writers: Writers, jobs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let mut results = Vec::new();
    match writers {
        Writers::Concurrent => {
            let tasks: Vec<_> = jobs.into_iter().map(tokio::spawn).collect();
            for task in tasks {
                results.push(task.await.expect("the writer ran"));
            }
        }
        Writers::OneAfterAnother => {
            for job in jobs {
                results.push(job.await);
            }
        }
    }
    results
}

/// Writers that read the same state race; exactly one wins each race, the others are told why.
async fn race_contract<S: EventStore + DeploymentStore>(store: Arc<S>, writers: Writers) {
    const WRITERS: usize = 4;
    let parcel = name("parcel");
    let mut creates = Vec::new();
    for i in 0..WRITERS {
        let store = store.clone();
        let (event, first) = event_type("parcel", &format!("writer {i}"));
        creates.push(async move {
            store
                .create_event_type(&event, &first, &deployment(Some(&event.event_type)))
                .await
        });
    }
    let mut created_by = Vec::new();
    for (i, result) in run(writers, creates).await.into_iter().enumerate() {
        match result {
            Ok(()) => created_by.push(i),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(other) => panic!("writer {i}: {other:?}"),
        }
    }
    assert_eq!(created_by.len(), 1, "one create wins: {created_by:?}");
    let stored = store
        .get_event_type(&parcel)
        .await
        .expect("read")
        .expect("created");
    assert_eq!(stored.description, format!("writer {}", created_by[0]));

    let mut adds = Vec::new();
    for i in 0..WRITERS {
        let store = store.clone();
        let next = version(&parcel, 2, &format!("writer {i}"));
        adds.push(async move {
            store
                .add_version(&next, Version::FIRST, &deployment(Some(&next.event_type)))
                .await
        });
    }
    let mut added_by = Vec::new();
    for (i, result) in run(writers, adds).await.into_iter().enumerate() {
        match result {
            Ok(()) => added_by.push(i),
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("writer {i}: {other:?}"),
        }
    }
    assert_eq!(added_by.len(), 1, "one writer gets version 2: {added_by:?}");
    let descriptions: Vec<String> = store
        .list_versions(&parcel)
        .await
        .expect("listed")
        .into_iter()
        .map(|v| v.description)
        .collect();
    assert_eq!(
        descriptions,
        [
            format!("writer {}", created_by[0]),
            format!("writer {}", added_by[0])
        ]
    );
}

/// The idempotency store: one claim per key until it expires, answers kept for their request's
/// token only, and an expired record (a claim whose host died, an answer past its retention)
/// taken over as if absent, however late the store deletes it.
async fn idempotency_store_contract(store: &dyn IdempotencyStore) {
    let at = now().unix_timestamp();
    let claim = |key: &str, fingerprint: &str, token: &str| idempotency::Record {
        key: key.to_string(),
        fingerprint: fingerprint.to_string(),
        token: token.to_string(),
        answer: None,
        expires_at: at + 60,
    };
    let first = claim("k1", "request-a", "t1");
    assert_eq!(store.claim(&first, at).await.expect("claimed"), None);
    // While it runs, a second claim finds the first and writes nothing.
    let found = store
        .claim(&claim("k1", "request-b", "t2"), at)
        .await
        .expect("read");
    assert_eq!(found.as_ref(), Some(&first));

    let answer = idempotency::Answer {
        status: 201,
        body: r#"{"id": "s1", "secret": "whsec_x"}"#.to_string(),
    };
    // Only the claim's own token completes it.
    let mut stranger = first.clone();
    stranger.token = "t9".into();
    stranger.answer = Some(answer.clone());
    store.complete(&stranger).await.expect("ignored");
    let found = store
        .claim(&claim("k1", "request-a", "t3"), at)
        .await
        .expect("read");
    assert_eq!(
        found.and_then(|r| r.answer),
        None,
        "a stranger's answer was kept"
    );
    let mut done = first.clone();
    done.answer = Some(answer.clone());
    done.expires_at = at + 24 * 3600;
    store.complete(&done).await.expect("completed");
    let found = store
        .claim(&claim("k1", "request-a", "t4"), at + 3600)
        .await
        .expect("read");
    assert_eq!(found, Some(done.clone()));

    // Past its expiry the record counts as absent: a new claim takes the key.
    let later = claim("k1", "request-c", "t5");
    let mut later = later;
    later.expires_at = at + 24 * 3600 + 60;
    assert_eq!(
        store
            .claim(&later, at + 24 * 3600 + 1)
            .await
            .expect("taken over"),
        None
    );

    // A release deletes only its own claim.
    store
        .claim(&claim("k2", "request-a", "t6"), at)
        .await
        .expect("claimed");
    store.release("k2", "t7").await.expect("ignored");
    assert!(
        store
            .claim(&claim("k2", "request-a", "t8"), at)
            .await
            .expect("read")
            .is_some()
    );
    store.release("k2", "t6").await.expect("released");
    assert_eq!(
        store
            .claim(&claim("k2", "request-a", "t8"), at)
            .await
            .expect("claimed"),
        None
    );
    // An abandoned claim is taken over once its lease ends.
    assert_eq!(
        store
            .claim(&claim("k2", "request-a", "t9"), at + 61)
            .await
            .expect("taken over"),
        None
    );
}

/// A subscription's signing secrets are replaced only over what was read: of two writers that
/// read the same secrets, the second is refused, so no caller holds a secret that is not kept.
async fn signing_secrets_contract(store: &dyn SigningSecrets) {
    let id = new_id();
    assert_eq!(store.signing_secrets(&id).await.expect("read"), []);
    let first = SigningSecret::generate().expect("a secret");
    store
        .put_signing_secrets(&id, &[], std::slice::from_ref(&first))
        .await
        .expect("the first secret");
    let refused = store
        .put_signing_secrets(&id, &[], &[SigningSecret::generate().expect("a secret")])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "another first secret: {refused:?}"
    );
    let read = store.signing_secrets(&id).await.expect("read");
    assert_eq!(read, std::slice::from_ref(&first));
    let (a, b) = (
        rotated(read.clone(), ROTATION_OVERLAP).expect("rotated"),
        rotated(read.clone(), ROTATION_OVERLAP).expect("rotated"),
    );
    store
        .put_signing_secrets(&id, &read, &a)
        .await
        .expect("a rotation");
    let refused = store.put_signing_secrets(&id, &read, &b).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "a rotation over a stale read: {refused:?}"
    );
    assert_eq!(store.signing_secrets(&id).await.expect("read"), a);
}

#[tokio::test]
async fn the_embedded_signing_secrets_keep_the_contract() {
    let (_dir, store) = sqlite();
    signing_secrets_contract(&store).await;
}

#[tokio::test]
async fn the_dynamodb_signing_secrets_keep_the_contract() {
    let (_, _, store) = dynamo().await;
    signing_secrets_contract(&store).await;
}

fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SqliteStore::open(&dir.path().join("busway.db")).expect("opened");
    (dir, store)
}

async fn dynamo_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&moto::sdk(moto::endpoint().await).await)
}

/// A store on a table of its own, reading two items a page.
async fn dynamo() -> (aws_sdk_dynamodb::Client, String, DynamoStore) {
    let client = dynamo_client().await;
    let table = emulated::table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone()).with_page_size(2);
    (client, table, store)
}

/// Three new versioned buckets, as infra makes them.
async fn s3() -> (aws_sdk_s3::Client, BucketNames) {
    let client = moto::s3(&moto::sdk(moto::endpoint().await).await);
    let names = emulated::versioned_buckets(&client).await;
    (client, names)
}

/// The folder store notifies provisioning; S3 does it through its own notification, outside
/// the adapter. The contract is about what is stored, so nothing is started here.
struct NoProvisioning;

#[async_trait]
impl ProvisioningStarter for NoProvisioning {
    async fn start(&self, _bucket: Bucket, _key: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_embedded_event_store_keeps_the_contract() {
    let (_dir, store) = sqlite();
    event_store_contract(&store).await;
}

#[tokio::test]
async fn the_dynamodb_event_store_keeps_the_contract() {
    let (_, _, store) = dynamo().await;
    event_store_contract(&store).await;
}

#[tokio::test]
async fn the_embedded_deployment_store_keeps_the_contract() {
    let (_dir, store) = sqlite();
    deployment_store_contract(&store).await;
}

#[tokio::test]
async fn the_dynamodb_deployment_store_keeps_the_contract() {
    let (_, _, store) = dynamo().await;
    deployment_store_contract(&store).await;
}

#[tokio::test]
async fn the_embedded_idempotency_store_keeps_the_contract() {
    let (_dir, store) = sqlite();
    idempotency_store_contract(&store).await;
}

#[tokio::test]
async fn the_dynamodb_idempotency_store_keeps_the_contract() {
    let (_, _, store) = dynamo().await;
    idempotency_store_contract(&store).await;
}

#[tokio::test]
async fn the_folder_object_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = FolderObjectStore::new(dir.path().to_path_buf(), Arc::new(NoProvisioning))
        .expect("folders made");
    object_store_contract(&store).await;
}

#[tokio::test]
async fn the_s3_object_store_keeps_the_contract() {
    let (client, names) = s3().await;
    object_store_contract(&S3ObjectStore::new(client, names)).await;
}

/// The double the tests of code above the port use keeps the contract too.
#[tokio::test]
async fn the_in_memory_object_store_keeps_the_contract() {
    object_store_contract(&busway_tests::memory::MemoryObjects::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_the_embedded_store_race_safely() {
    let (_dir, store) = sqlite();
    race_contract(Arc::new(store), Writers::Concurrent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_of_the_dynamodb_store_with_the_same_read_state_race_safely() {
    let (_, _, store) = dynamo().await;
    race_contract(Arc::new(store), Writers::OneAfterAnother).await;
}

/// What the provisioning state machine's `RecordValidating` and `RecordFailed` states write
/// (statemachines/provisioning.asl.json), as they write it.
async fn record_step(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    id: &str,
    status: &str,
    at: &str,
    failure: Option<serde_json::Value>,
) {
    let s = |text: &str| AttributeValue::S(text.to_string());
    let entry = AttributeValue::L(vec![AttributeValue::M(
        [("status".to_string(), s(status)), ("at".to_string(), s(at))].into(),
    )]);
    let mut update = client
        .update_item()
        .table_name(table)
        .key("PK", s(&format!("DEPLOYMENT#{id}")))
        .key("SK", s("DEPLOYMENT"))
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#history", "history")
        .expression_attribute_values(":status", s(status))
        .expression_attribute_values(":entry", entry)
        .expression_attribute_values(":empty", AttributeValue::L(vec![]))
        .expression_attribute_values(":now", s(at));
    let mut expression = "SET #status = :status, #history = list_append(if_not_exists(#history, :empty), :entry), updated_at = :now".to_string();
    if let Some(failure) = failure {
        expression += ", #error = :error, #cause = :cause";
        update = update
            .expression_attribute_names("#error", "error")
            .expression_attribute_names("#cause", "cause")
            .expression_attribute_values(":error", s(failure["Error"].as_str().unwrap_or_default()))
            .expression_attribute_values(":cause", s(&failure.to_string()));
    }
    update
        .update_expression(expression)
        .send()
        .await
        .expect("the state machine's write");
}

#[tokio::test]
async fn deployment_records_the_state_machine_extends_read_back_as_deployments() {
    let (client, table, store) = dynamo().await;
    let parcel = name("parcel");
    let mut pending = deployment(Some(&parcel));
    store
        .put_deployment(&pending)
        .await
        .expect("PENDING recorded");
    let at = "2026-11-27T03:00:01.250Z";
    record_step(&client, &table, &pending.id, "VALIDATING", at, None).await;
    let failure =
        json!({"Error": "DeployConfig.Invalid", "Cause": "the key does not match the document"});
    record_step(&client, &table, &pending.id, "FAILED", at, Some(failure)).await;

    let read = store
        .get_deployment(&pending.id)
        .await
        .expect("read")
        .expect("recorded");
    let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .expect("an RFC 3339 time");
    pending
        .advance(DeploymentStatus::Validating, at)
        .expect("pending → validating");
    pending
        .fail(
            "DeployConfig.Invalid",
            "the key does not match the document",
            at,
        )
        .expect("validating → failed");
    assert_eq!(read, pending);
    assert_eq!(
        store.list_deployments(Some(&parcel)).await.expect("listed"),
        [pending.clone()],
        "the state machine's writes leave the record in its lists"
    );

    // moto (and a Catch without a cause) record the failure with a null Cause.
    let quiet = deployment(Some(&parcel));
    store
        .put_deployment(&quiet)
        .await
        .expect("PENDING recorded");
    let failure = json!({"Error": "Build.Failed", "Cause": null});
    record_step(
        &client,
        &table,
        &quiet.id,
        "FAILED",
        "2026-11-27T03:00:02Z",
        Some(failure),
    )
    .await;
    let read = store
        .get_deployment(&quiet.id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(
        (read.status, read.error.as_deref(), read.cause),
        (DeploymentStatus::Failed, Some("Build.Failed"), None)
    );

    // The adapter writes the failure in the same shape the state machine does.
    store.put_deployment(&pending).await.expect("replaced");
    let raw = client
        .get_item()
        .table_name(&table)
        .key(
            "PK",
            AttributeValue::S(format!("DEPLOYMENT#{}", pending.id)),
        )
        .key("SK", AttributeValue::S("DEPLOYMENT".into()))
        .send()
        .await
        .expect("read")
        .item
        .expect("an item");
    let cause: serde_json::Value =
        serde_json::from_str(raw["cause"].as_s().expect("a string")).expect("JSON");
    assert_eq!(
        cause,
        json!({"Error": "DeployConfig.Invalid", "Cause": "the key does not match the document"})
    );
    assert_eq!(raw["status"], AttributeValue::S("FAILED".into()));
    let history = raw["history"].as_l().expect("a list");
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| {
        h.as_m()
            .is_ok_and(|m| m.contains_key("status") && m.contains_key("at"))
    }));
}

#[tokio::test]
async fn every_write_to_a_versioned_bucket_keeps_the_previous_version() {
    let (client, names) = s3().await;
    let store = S3ObjectStore::new(client.clone(), names.clone());
    let key = "parcel/1/deploy.json";
    for body in ["one", "two"] {
        store
            .put_object(Bucket::Publisher, key, body.as_bytes().to_vec())
            .await
            .expect("stored");
    }
    let versions = client
        .list_object_versions()
        .bucket(&names.publisher)
        .prefix(key)
        .send()
        .await
        .expect("listed");
    assert_eq!(versions.versions().len(), 2, "{versions:?}");
}
