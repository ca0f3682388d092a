//! The SQS producers' Lambda: batches from producer queues (event source mappings with
//! `ReportBatchItemFailures`), answered with the messages to deliver again.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use busway_aws::host::Host;
use busway_core::ingest::LiveRoutes;
use busway_core::ports::{Bus, EventStore};
use busway_injector::sqs::{Message, handle_batch};
use lambda_runtime::{LambdaEvent, service_fn};

struct Injector {
    routes: LiveRoutes,
    store: Arc<dyn EventStore>,
    bus: Arc<dyn Bus>,
}

impl Injector {
    async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let messages = event
            .records
            .into_iter()
            .map(|r| Message {
                message_id: r.message_id.unwrap_or_default(),
                source_arn: r.event_source_arn.unwrap_or_default(),
                body: r.body.unwrap_or_default(),
            })
            .collect();
        let failed = handle_batch(
            &self.routes,
            Some(self.store.as_ref()),
            self.bus.as_ref(),
            messages,
        )
        .await;
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        response
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    busway_aws::host::init_logging();
    let host = Host::from_env().await?;
    let injector = Arc::new(Injector {
        routes: LiveRoutes::default(),
        store: host.store(),
        bus: host.bus()?,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let injector = injector.clone();
        async move { Ok::<_, lambda_runtime::Error>(injector.handle(event.payload).await) }
    }))
    .await
}
