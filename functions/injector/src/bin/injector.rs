//! The broker API's Lambda: `POST /{event_type}/{version}` behind API Gateway, whose route model
//! validated the body already; the same router as the local host still checks it against the
//! version's schema, enriches it, takes Source from the registered application and puts it on
//! the bus.

use std::sync::Arc;

use std::time::Duration;

use axum::http::StatusCode;
use busway_aws::host::Host;
use busway_core::ingest::LiveRoutes;
use busway_injector::Broker;
use busway_injector::observe::{PublishObserver, observed};

/// Each publish as CloudWatch metrics (EMF lines in the function's log).
struct Emf;

impl PublishObserver for Emf {
    fn published(&self, event_type: &str, version: &str, status: StatusCode, elapsed: Duration) {
        busway_aws::emf::published(
            (event_type, version),
            status.is_success(),
            elapsed,
            &[("Status", status.as_u16().into())],
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    busway_aws::host::init_logging();
    let host = Host::for_lambda()?;
    let routes = Arc::new(LiveRoutes::default());
    let broker = Broker {
        routes: routes.clone(),
        store: Some(host.store()),
        bus: host.deduplicated_bus()?,
    };
    let router = observed(busway_injector::router(broker), routes, Arc::new(Emf));
    busway_http::lambda::run(router).await
}
