//! Validation alone: the CPU the broker spends per event before the bus, on the seed's
//! scanned_parcel envelope.

use std::hint::black_box;

use busway_core::envelope::{enrich, json_text};
use busway_core::{EventTypeName, Version, schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

fn scanned_parcel() -> Value {
    json!({
        "type": "object",
        "properties": {
            "dest_postal_code": {"type": "string"},
            "dest_house": {"type": "integer"},
            "parcel_weight": {"type": "number"}
        },
        "required": ["dest_postal_code", "dest_house", "parcel_weight"]
    })
}

const EVENT: &[u8] = br#"{"metadata":{"event_attributes":{"source":"scanner-17","target":"u2"}},"data":{"dest_postal_code":"1234AB","dest_house":7,"parcel_weight":1.5}}"#;

fn bench(c: &mut Criterion) {
    let name: EventTypeName = "scanned_parcel".parse().expect("valid name");
    let app = "demo".parse().expect("valid application");
    let validator = schema::compile(&schema::envelope(&name, Version::FIRST, &scanned_parcel()))
        .expect("schema compiles");
    let mut group = c.benchmark_group("ingest_cpu");
    group.throughput(Throughput::Elements(1));
    group.bench_function("validate", |b| {
        let event: Value = serde_json::from_slice(EVENT).expect("event parses");
        b.iter(|| schema::validate(&validator, black_box(&event)).is_ok())
    });
    group.bench_function("parse_validate_enrich_serialize", |b| {
        b.iter(|| {
            let event: Value = serde_json::from_slice(black_box(EVENT)).expect("event parses");
            schema::validate(&validator, &event).expect("valid");
            let bus = enrich(event, &app, &name, Version::FIRST, busway_core::now());
            json_text(&bus.detail)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
