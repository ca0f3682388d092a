//! The SQS producers' Lambda: batches from producer queues (event source mappings with
//! `ReportBatchItemFailures`), answered with the messages to deliver again.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use busway_aws::host::Host;
use busway_core::deploy::parse_producer_queue_name;
use busway_core::ingest::LiveRoutes;
use busway_injector::Broker;
use busway_injector::observe::UNKNOWN;
use busway_injector::sqs::{Message, handle_batch};
use lambda_runtime::{LambdaEvent, service_fn};

async fn handle(broker: &Broker, event: SqsEvent) -> SqsBatchResponse {
    let messages: Vec<Message> = event
        .records
        .into_iter()
        .map(|r| Message {
            message_id: r.message_id.unwrap_or_default(),
            source_arn: r.event_source_arn.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
        })
        .collect();
    let started = Instant::now();
    let queues: Vec<(String, String)> = messages
        .iter()
        .map(|m| (m.message_id.clone(), m.source_arn.clone()))
        .collect();
    let failed = handle_batch(broker, messages).await;
    // Each message as one publish of its queue's event version, timed by its batch.
    for (id, source_arn) in &queues {
        let queue = source_arn.rsplit(':').next().unwrap_or_default();
        let labels = parse_producer_queue_name(queue)
            .map(|(t, v)| (t.to_string(), v.to_string()))
            .unwrap_or_else(|| (UNKNOWN.into(), UNKNOWN.into()));
        busway_aws::emf::published(
            (&labels.0, &labels.1),
            !failed.contains(id),
            started.elapsed(),
            &[("Queue", queue.into())],
        );
    }
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
