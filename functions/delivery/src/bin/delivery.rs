//! The delivery Lambda: a subscription's event in, signed and posted to its HTTPS target.

use busway_aws::host::Host;
use busway_delivery::{Delivered, deliver};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    busway_aws::host::init_logging();
    let store = Host::for_lambda()?.store();
    let http = busway_delivery::http_client()?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (store, http) = (store.clone(), http.clone());
        async move {
            match deliver(store.as_ref(), &http, &event.payload).await {
                Ok(Delivered::Accepted) => Ok(json!({"delivered": true})),
                Ok(Delivered::Dropped(why)) => {
                    tracing::error!(%why, "an event was not delivered and will not be retried");
                    Ok(json!({"delivered": false, "reason": why}))
                }
                Err(retry) => Err(lambda_runtime::Error::from(retry.to_string())),
            }
        }
    }))
    .await
}
