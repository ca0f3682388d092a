//! The provisioner Lambda (`--bin provisioner`): S3 notifications of deploy.json files and the
//! provisioning state machine's tasks, on the AWS adapters.

use std::sync::Arc;

use busway_aws::codebuild::CodeBuildReader;
use busway_aws::host::Host;
use busway_aws::sfn::SfnStarter;
use busway_core::provisioning::Provisioner;
use busway_provisioner::{Config, Handler, Request};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    busway_aws::host::init_logging();
    let host = Host::for_lambda()?;
    let config = Config::from_env()?;
    let sdk = host.sdk();
    let store = host.store();
    let handler = Handler {
        provisioner: Provisioner {
            store: store.clone(),
            deployments: store,
            objects: host.objects(),
        },
        starter: SfnStarter::new(aws_sdk_sfn::Client::new(sdk), config.state_machine_arn),
        builds: Arc::new(CodeBuildReader::new(aws_sdk_codebuild::Client::new(sdk))),
        buckets: host.config.buckets.clone(),
    };
    let handler = &handler;
    // Boxed: the SDK calls nest deeply enough to overflow rustc's layout query otherwise.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Request>| {
        Box::pin(handler.handle(event.payload))
    }))
    .await
}
