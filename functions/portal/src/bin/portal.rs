//! The portal Lambda: the portal router under API Gateway (REST proxy), on the AWS adapters.

use std::sync::Arc;

use busway_aws::host::Host;
use busway_aws::sfn::{STATE_MACHINE_ARN, SfnProvisioning};
use busway_core::portal::Portal;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    busway_aws::host::init_logging();
    let host = Host::for_lambda()?;
    let state_machine_arn =
        std::env::var(STATE_MACHINE_ARN).map_err(|_| format!("{STATE_MACHINE_ARN} is not set"))?;
    let store = host.store();
    let portal = Portal {
        store: store.clone(),
        deployments: store.clone(),
        registry: host.registry()?,
        objects: host.objects(),
        // EventBridge keeps deliveries: CloudWatch metrics and each rule's dead-letter queue.
        deliveries: None,
        // Pause and resume on the Custom Event Bus's subscribers; none on Classic (501).
        control: host.subscriber_control()?,
        // A retried deployment's document is provisioned again as its S3 notification would be.
        provisioning: Arc::new(SfnProvisioning::for_host(&host, state_machine_arn)),
        // Each key with its API Gateway key and usage plan on the broker stage.
        keys: host.keys()?,
        bus_kind: Some(host.bus_kind()?),
        idempotency: store.clone(),
        audit: store.clone(),
        targets: store.clone(),
        secrets: store,
        // A Lambda function reaches no consumer on its own loopback.
        allow_loopback_targets: false,
    };
    busway_http::lambda::run(busway_portal::router(Arc::new(portal))).await
}
