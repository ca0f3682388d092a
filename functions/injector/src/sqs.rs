//! SQS producers: every message of a producer queue is one envelope for the queue's event version
//! (`busway_core::deploy::producer_queue_name`). No API Gateway model validated it, so each one is
//! validated against its version's schema here; the valid ones go on the bus together (the bus
//! adapter sends PutEvents batches of 10) and the answer names only the messages SQS must deliver
//! again. A message that can never pass (bad JSON, wrong schema) is named too: after the queue's
//! `maxReceiveCount` it lands in the dead-letter queue, so nothing is lost.

use busway_core::deploy::parse_producer_queue_name;
use busway_core::ingest::{self, LiveRoutes};
use busway_core::ports::EventCatalog;
use tracing::warn;

use crate::Broker;

/// One SQS message, as the Lambda event carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_id: String,
    /// The queue's ARN (`eventSourceARN`).
    pub source_arn: String,
    pub body: String,
}

/// Publishes a batch through the broker's routes and bus; returns the ids of the messages that
/// were not put on the bus.
pub async fn handle_batch(broker: &Broker, messages: Vec<Message>) -> Vec<String> {
    let (routes, store) = (broker.routes.as_ref(), broker.store.as_deref());
    let mut failed = Vec::new();
    let mut ready = Vec::new();
    for m in messages {
        match prepare(routes, store, &m).await {
            Ok(event) => ready.push((m.message_id, event)),
            Err(why) => {
                warn!(message_id = %m.message_id, queue = %m.source_arn, %why, "message not published");
                failed.push(m.message_id);
            }
        }
    }
    if ready.is_empty() {
        return failed;
    }
    let (ids, events): (Vec<_>, Vec<_>) = ready.into_iter().unzip();
    match broker.bus.put_events(events).await {
        Ok(results) => {
            for (i, id) in ids.into_iter().enumerate() {
                match results.get(i) {
                    // A duplicate was put on the bus before: SQS may forget the message.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        warn!(message_id = %id, error = %e, "the bus refused the event");
                        failed.push(id);
                    }
                    None => {
                        warn!(message_id = %id, "the bus answered no result for the event");
                        failed.push(id);
                    }
                }
            }
        }
        Err(e) => {
            warn!(error = %format!("{e:#}"), "the bus refused the batch");
            failed.extend(ids);
        }
    }
    failed
}

async fn prepare(
    routes: &LiveRoutes,
    store: Option<&dyn EventCatalog>,
    m: &Message,
) -> Result<busway_core::envelope::BusEvent, String> {
    let queue = m.source_arn.rsplit(':').next().unwrap_or_default();
    let (event_type, version) = parse_producer_queue_name(queue)
        .ok_or_else(|| format!("{queue} is not a busway producer queue"))?;
    let route = routes
        .resolve(store, &event_type, version)
        .await
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| format!("{event_type} v{version} is not an active event version"))?;
    let mut event = ingest::prepare(&route, &route.application, m.body.as_bytes())
        .map_err(|e| e.to_string())?;
    // No HTTP request published it: the SQS message's id names it in the logs instead.
    busway_core::envelope::set_request_id(&mut event.detail, &m.message_id);
    Ok(event)
}
