//! The authorizer Lambda: REQUEST authorizer events in, policies with the caller out.

use busway_authorizer::{Denied, authorize};
use busway_aws::host::Host;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    busway_aws::host::init_logging();
    let store = Host::for_lambda()?.store();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let store = store.clone();
        async move {
            match authorize(store.as_ref(), &event.payload).await {
                Ok(policy) => Ok(policy),
                Err(Denied::Store(why)) => {
                    tracing::error!(%why, "a key could not be looked up");
                    Err(lambda_runtime::Error::from(why))
                }
                Err(denied) => Err(lambda_runtime::Error::from(denied.to_string())),
            }
        }
    }))
    .await
}
