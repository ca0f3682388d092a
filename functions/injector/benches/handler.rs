//! The injector's handler CPU per event, without the network: an API Gateway REST proxy event
//! as the Lambda runtime hands it over (JSON text) through `lambda_http` and the broker router
//! (validation, enrichment, the answer), and an SQS batch of 10 through the SQS handler. The
//! bus is a no-op, so what the EventBridge adapter and the SDK spend on the PutEvents call is not
//! in these figures (docs/benchmarks.md gives the process-level CPU with the call).

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use busway_core::envelope::BusEvent;
use busway_core::ingest::LiveRoutes;
use busway_core::ports::{Accepted, Bus, EntryFailure};
use busway_core::{EventTypeName, Version, schema};
use busway_injector::sqs::{Message, handle_batch};
use busway_injector::{Broker, router};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lambda_http::RequestExt;
use serde_json::json;
use tower::ServiceExt;

const EVENT: &str = r#"{"metadata":{"event_attributes":{"source":"scanner-17","target":"u2"}},"data":{"dest_postal_code":"1234AB","dest_house":7,"parcel_weight":1.5}}"#;

struct NullBus;

#[async_trait]
impl Bus for NullBus {
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<Accepted, EntryFailure>>> {
        Ok(events.iter().map(|_| Ok(Accepted::Stored)).collect())
    }
}

fn routes() -> Arc<LiveRoutes> {
    let name: EventTypeName = "scanned_parcel".parse().expect("a name");
    let data = json!({"type": "object", "properties": {"dest_postal_code": {"type": "string"},
        "dest_house": {"type": "integer"}, "parcel_weight": {"type": "number"}},
        "required": ["dest_postal_code", "dest_house", "parcel_weight"]});
    let routes = Arc::new(LiveRoutes::default());
    routes
        .insert(
            "parcel_tracking".parse().expect("an application"),
            Vec::new(),
            name.clone(),
            Version::FIRST,
            &schema::envelope(&name, Version::FIRST, &data),
        )
        .expect("the schema compiles");
    routes
}

/// `POST /scanned_parcel/1` on stage `live`, as API Gateway's REST proxy integration sends it.
fn apigw_event() -> String {
    json!({
        "resource": "/scanned_parcel/1", "path": "/scanned_parcel/1", "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "Host": "abc123.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": ["application/json"], "Host": ["abc123.execute-api.eu-west-1.amazonaws.com"]},
        "queryStringParameters": null, "multiValueQueryStringParameters": null,
        "pathParameters": null, "stageVariables": null,
        "requestContext": {"resourcePath": "/scanned_parcel/1", "httpMethod": "POST", "path": "/live/scanned_parcel/1",
            "stage": "live", "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "accountId": "123456789012",
            "apiId": "abc123", "identity": {"sourceIp": "203.0.113.7"}},
        "body": EVENT, "isBase64Encoded": false
    })
    .to_string()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let broker = Broker {
        routes: routes(),
        store: None,
        bus: Arc::new(NullBus),
    };
    let app = router(broker.clone());
    let event = apigw_event();
    let mut group = c.benchmark_group("injector_cpu");
    group.throughput(Throughput::Elements(1));
    group.bench_function("apigw_event_to_answer", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut request = lambda_http::request::from_str(black_box(&event))
                    .expect("an API Gateway event");
                let path = request.raw_http_path().to_string();
                *request.uri_mut() = path.parse().expect("a path");
                let response = app.clone().oneshot(request).await;
                let response = response.expect("an answer");
                assert_eq!(response.status(), 200);
                axum::body::to_bytes(response.into_body(), 1024)
                    .await
                    .expect("a body")
            })
        })
    });
    let batch: Vec<Message> = (0..10)
        .map(|i| Message {
            message_id: format!("m{i}"),
            source_arn: "arn:aws:sqs:eu-west-1:123456789012:busway-scanned-parcel-v1".into(),
            body: EVENT.into(),
        })
        .collect();
    group.throughput(Throughput::Elements(10));
    group.bench_function("sqs_batch_of_10", |b| {
        b.iter(|| {
            let failed = rt.block_on(handle_batch(&broker, black_box(batch.clone())));
            assert!(failed.is_empty());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
