//! The portal Lambda: the portal router under API Gateway (REST proxy), on the AWS adapters.

use std::sync::Arc;

use busway_aws::host::Host;
use busway_core::portal::Portal;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    busway_aws::host::init_logging();
    let host = Host::for_lambda()?;
    let store = host.store();
    let portal = Portal {
        store: store.clone(),
        deployments: store,
        registry: host.registry()?,
        objects: host.objects(),
        // EventBridge keeps deliveries: CloudWatch metrics and each rule's dead-letter queue.
        deliveries: None,
    };
    busway_http::lambda::run(busway_portal::router(Arc::new(portal))).await
}
