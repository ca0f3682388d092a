//! Counting publishes: a layer around the broker API that tells each host's metrics what each
//! request came to (the local host's Prometheus metrics, the Lambda's CloudWatch EMF lines).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use busway_core::ingest::LiveRoutes;
use busway_core::{EventTypeName, Version};

/// The label of a publish to a path that is not a deployed event version. Names start with a
/// letter, so it is never one; and a caller cannot make up label values (and series) with
/// paths of its own.
pub const UNKNOWN: &str = "_unknown";

/// What a host does with each publish's outcome.
pub trait PublishObserver: Send + Sync + 'static {
    /// A 2xx `status` is an accepted event (a duplicate too), any other a rejected one.
    fn published(&self, event_type: &str, version: &str, status: StatusCode, elapsed: Duration);
}

/// What [`observe`] reports to: the live routes name a path's event version.
#[derive(Clone)]
pub struct Observing {
    pub routes: Arc<LiveRoutes>,
    pub observer: Arc<dyn PublishObserver>,
}

/// `router` (the broker API) with every publish (a `POST /{event_type}/{version}`) reported to
/// `observer` once answered, with the event version of its path when that version is
/// deployed, else [`UNKNOWN`]. Other requests (`GET /openapi.json`, probes) are no publishes.
pub fn observed(
    router: Router,
    routes: Arc<LiveRoutes>,
    observer: Arc<dyn PublishObserver>,
) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Observing { routes, observer },
        observe,
    ))
}

/// The middleware of [`observed`], for a host that layers it around the whole broker service.
pub async fn observe(
    State(Observing { routes, observer }): State<Observing>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || publish_path(request.uri().path()).is_none() {
        return next.run(request).await;
    }
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let (event_type, version) =
        deployed(&routes, &path).unwrap_or_else(|| (UNKNOWN.to_string(), UNKNOWN.to_string()));
    let status = response.status();
    // Inside the request's span, so the line names its request id; a refusal is for an
    // operator to see, an accepted event only when asked (one line each would cost ingest).
    if status.is_client_error() {
        tracing::info!(
            event_type,
            version,
            status = status.as_u16(),
            "publish refused"
        );
    } else if status.is_success() {
        tracing::debug!(event_type, version, status = status.as_u16(), "published");
    }
    observer.published(&event_type, &version, status, started.elapsed());
    response
}

/// The two parts of a publish's path, `/{event_type}/{version}`.
fn publish_path(path: &str) -> Option<(&str, &str)> {
    let (event_type, version) = path.strip_prefix('/')?.split_once('/')?;
    (!event_type.is_empty() && !version.is_empty() && !version.contains('/'))
        .then_some((event_type, version))
}

fn deployed(routes: &LiveRoutes, path: &str) -> Option<(String, String)> {
    let (event_type, version) = publish_path(path)?;
    let name: EventTypeName = event_type.parse().ok()?;
    let version: Version = version.parse().ok()?;
    routes.get(&name, version)?;
    Some((name.to_string(), version.to_string()))
}
