//! The SQS producers' Lambda: batches from producer queues (event source mappings with
//! `ReportBatchItemFailures`), answered with the messages to deliver again.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use busway_aws::host::Host;
use busway_core::ingest::LiveRoutes;
use busway_injector::Broker;
use busway_injector::sqs::{Message, handle_batch};
use lambda_runtime::{LambdaEvent, service_fn};

async fn handle(broker: &Broker, event: SqsEvent) -> SqsBatchResponse {
    let messages = event
        .records
        .into_iter()
        .map(|r| Message {
            message_id: r.message_id.unwrap_or_default(),
            source_arn: r.event_source_arn.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
        })
        .collect();
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = handle_batch(broker, messages)
        .await
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    busway_aws::host::init_logging();
    let host = Host::for_lambda()?;
    let broker = Arc::new(Broker {
        routes: Arc::new(LiveRoutes::default()),
        store: Some(host.store()),
        bus: host.deduplicated_bus()?,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let broker = broker.clone();
        async move { Ok::<_, lambda_runtime::Error>(handle(&broker, event.payload).await) }
    }))
    .await
}
