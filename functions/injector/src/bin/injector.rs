//! The broker API's Lambda: `POST /{event_type}/{version}` behind API Gateway, whose route model
//! validated the body already; the same router as the local host still checks it against the
//! version's schema, enriches it, takes Source from the registered application and puts it on
//! the bus.

use std::sync::Arc;

use busway_aws::host::Host;
use busway_core::ingest::LiveRoutes;
use busway_injector::Broker;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    busway_aws::host::init_logging();
    let host = Host::for_lambda()?;
    let broker = Broker {
        routes: Arc::new(LiveRoutes::default()),
        store: Some(host.store()),
        bus: host.deduplicated_bus()?,
    };
    busway_http::lambda::run(busway_injector::router(broker)).await
}
