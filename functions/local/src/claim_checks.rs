//! Claim checks on one machine: the portal serves an object at its link's key
//! (`GET /claim-checks/...`), as S3 does to a consumer on AWS, and a sweeper deletes the objects
//! once their retention has passed, as infra's S3 lifecycle rule does, and no event still kept
//! may link to them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use busway_core::EventTypeName;
use busway_core::auth::Role;
use busway_core::claim_check::{self, FORMAT_METADATA_KEY};
use busway_core::ports::{Bucket, EventStore, ObjectStore};
use busway_http::ApiError;
use busway_http::auth::Authenticated;
use tracing::{debug, warn};
use utoipa::openapi::OpenApiBuilder;
use utoipa::openapi::path::PathsBuilder;
use utoipa_axum::router::OpenApiRouter;

use crate::eventlog::LogReader;
use crate::objects::{FolderObjectStore, bucket_dir, metadata_dir};
use crate::store::SqliteStore;

/// The answer's header with the object's format (S3 answers it as `x-amz-meta-{key}`).
const FORMAT_HEADER: &str = "x-amz-meta-busway-format-version";

/// `GET /claim-checks/{rest}`: the object at the link's key `claim-checks/{rest}`, with its
/// format version in a header. Only keys that claim checks have are served from the bucket, to
/// the keys of teams that may subscribe to the event type (its readers and its own team) and to
/// platform admins, as on AWS a consumer's role reads its event version's prefix.
pub fn api(objects: Arc<FolderObjectStore>, store: SqliteStore) -> OpenApiRouter {
    // A key has several segments, so the route is axum's catch-all, which `routes!` cannot
    // register; the document takes the path from `fetch`'s declaration all the same.
    let document = OpenApiBuilder::new()
        .paths(PathsBuilder::new().path_from::<__path_fetch>())
        .build();
    OpenApiRouter::with_openapi(document)
        .route("/claim-checks/{*rest}", get(fetch))
        .with_state((objects, store))
}

#[utoipa::path(
    get,
    path = "/claim-checks/{rest}",
    tag = "local claim checks",
    params(("rest" = String, Path, description = "the rest of the claim check link's key, after `claim-checks/`")),
    responses((status = 200, description = "the event's `data`, as stored", content_type = "application/json", body = Object))
)]
async fn fetch(
    State((objects, store)): State<(Arc<FolderObjectStore>, SqliteStore)>,
    Authenticated(caller): Authenticated,
    UrlPath(rest): UrlPath<String>,
) -> Result<Response, ApiError> {
    let key = format!("{}{rest}", claim_check::PREFIX);
    let missing = || ApiError::not_found(format!("no claim check at {key}"));
    if !claim_check::is_key(&key) {
        return Err(missing());
    }
    // `claim-checks/{event_type}.{version}/...`
    let event_type = rest
        .split('/')
        .next()
        .and_then(|v| v.split_once('.'))
        .and_then(|(name, _)| name.parse::<EventTypeName>().ok())
        .ok_or_else(missing)?;
    if !caller.is_admin() {
        let event = store
            .get_event_type(&event_type)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(missing)?;
        if caller.role == Role::Producer || !event.is_reader(&caller.team) {
            return Err(ApiError::forbidden(format!(
                "{} of team {} may not read the claim checks of {event_type}: its readers' keys do",
                caller.role.a_key(),
                caller.team
            )));
        }
    }
    let metadata = objects
        .object_metadata(Bucket::SchemaBackup, &key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(missing)?;
    let body = objects
        .get_object(Bucket::SchemaBackup, &key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(missing)?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Some(format) = metadata
        .get(FORMAT_METADATA_KEY)
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static(FORMAT_HEADER), format);
    }
    Ok(response)
}

/// Leeway under the oldest event still kept, for the wall clock stepping back between an
/// event's `time` and its object's write.
const CLOCK_LEEWAY: Duration = Duration::from_secs(24 * 3600);

/// Deletes, every `every`, the claim-check objects (and their metadata) written more than
/// `retention` ago that no event still kept may link to.
pub async fn sweep(
    root: PathBuf,
    retention: Duration,
    every: Duration,
    store: SqliteStore,
    log: Arc<LogReader>,
) {
    loop {
        let swept = match keep_after(retention, &store, &log).await {
            Ok(cutoff) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || sweep_once(&root, cutoff)).await
            }
            Err(e) => Ok(Err(std::io::Error::other(format!("{e:#}")))),
        };
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => debug!(deleted = n, "expired claim checks deleted"),
            Ok(Err(e)) => warn!(error = %e, "sweeping claim checks failed"),
            Err(e) => warn!(error = %e, "the claim-check sweeper stopped"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Objects written at this time or before may go: `retention` ago, or before the oldest event
/// that the log, a scheduled retry, a dead letter or a queued message still holds if that is
/// earlier. An object is written after its event's `time` (the broker's receipt), so no kept
/// event links to an object older than the oldest kept event. A redriven dead letter or a
/// paused subscription may need one long after `retention`. The log is read first: an event
/// leaves it only once the store holds its copy.
async fn keep_after(
    retention: Duration,
    store: &SqliteStore,
    log: &Arc<LogReader>,
) -> anyhow::Result<SystemTime> {
    let in_log = {
        let log = log.clone();
        tokio::task::spawn_blocking(move || log.first_time()).await??
    };
    let in_store = store.oldest_kept_event_ms().await?;
    let cutoff = SystemTime::now()
        .checked_sub(retention)
        .unwrap_or(UNIX_EPOCH);
    Ok(match in_log.into_iter().chain(in_store).min() {
        Some(ms) => {
            let oldest = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            cutoff.min(oldest.checked_sub(CLOCK_LEEWAY).unwrap_or(UNIX_EPOCH))
        }
        None => cutoff,
    })
}

/// One pass; returns how many objects it deleted.
fn sweep_once(root: &Path, cutoff: SystemTime) -> std::io::Result<usize> {
    let prefix = claim_check::PREFIX.trim_end_matches('/');
    let objects = bucket_dir(root, Bucket::SchemaBackup).join(prefix);
    let metadata = metadata_dir(root, Bucket::SchemaBackup).join(prefix);
    let mut deleted = 0;
    let mut pending = vec![objects.clone()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut empty = true;
        for entry in entries {
            empty = false;
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if expired(&path, cutoff)? {
                remove(&path)?;
                if let Ok(relative) = path.strip_prefix(&objects) {
                    let _ = std::fs::remove_file(metadata.join(relative));
                }
                deleted += 1;
            }
        }
        // A folder emptied by an earlier pass goes once it has been untouched as long as an
        // object is kept: a writer creates its folder just before writing into it.
        if empty && dir != objects && expired(&dir, cutoff)? {
            let _ = std::fs::remove_dir(&dir);
            if let Ok(relative) = dir.strip_prefix(&objects) {
                let _ = std::fs::remove_dir(metadata.join(relative));
            }
        }
    }
    Ok(deleted)
}

/// Whether `path` was last written at `cutoff` or earlier; a file that went meanwhile (a
/// writer's temporary file) is not.
fn expired(path: &Path, cutoff: SystemTime) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.modified()? <= cutoff),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// Writes a claim-check object last written `age` ago; returns its path.
    fn object(root: &Path, name: &str, age: Duration) -> PathBuf {
        let dir = bucket_dir(root, Bucket::SchemaBackup).join("claim-checks/parcel.1/hash");
        std::fs::create_dir_all(&dir).expect("the folder");
        let path = dir.join(name);
        std::fs::File::create(&path)
            .and_then(|f| f.set_modified(SystemTime::now() - age))
            .expect("the object");
        path
    }

    #[tokio::test]
    async fn objects_past_retention_stay_while_a_kept_event_may_link_to_them() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().join("buckets");
        let store = SqliteStore::open(&dir.path().join("busway.db")).expect("the store");
        let (live, _committed) = tokio::sync::mpsc::channel(1);
        let (starter, _notifications) = crate::provisioning::LocalStarter::new();
        let claim_checks = claim_check::ClaimChecks {
            objects: Arc::new(
                FolderObjectStore::new(root.clone(), Arc::new(starter)).expect("the folders"),
            ),
            bucket_name: "local-event-schemas-backup-bucket".into(),
            max_entry_bytes: claim_check::DEFAULT_MAX_ENTRY_BYTES,
        };
        let (_log, reader) =
            crate::eventlog::EventLog::open(&dir.path().join("events.db"), claim_checks, live)
                .expect("the log");
        let reader = Arc::new(reader);
        let retention = 14 * DAY;
        // Nothing kept: the retention alone counts.
        let cutoff = keep_after(retention, &store, &reader)
            .await
            .expect("a cutoff");
        let age = SystemTime::now().duration_since(cutoff).expect("past");
        assert!(age >= retention && age < retention + DAY, "{age:?}");

        let within = object(&root, "within.json", DAY);
        let past = object(&root, "past.json", 20 * DAY);
        let older = object(&root, "older.json", 40 * DAY);
        // An event received 30 days ago waits in a queue: its object may be any younger.
        let time = busway_core::envelope::eventbridge_time(busway_core::now() - 30 * DAY);
        let body = serde_json::json!({"id": "e", "time": time}).to_string();
        store.send_messages("q", vec![body]).await.expect("queued");
        let cutoff = keep_after(retention, &store, &reader)
            .await
            .expect("a cutoff");
        assert_eq!(sweep_once(&root, cutoff).expect("a pass"), 1);
        assert!(within.exists() && past.exists() && !older.exists());
    }
}
