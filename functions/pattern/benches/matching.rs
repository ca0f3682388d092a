//! busway-pattern against quamina on identical events and patterns.
//!
//! Two rule shapes, each at 1, 100, 1,000 and 10,000 rules:
//! - `subscriptions`: busway's own rules (source + detail-type + target unit);
//! - `mixed`: one operator family per rule (prefix, suffix, numeric range,
//!   anything-but, equals-ignore-case, exists, wildcard, cidr) on several paths.
//!
//! Every iteration matches the same 64 event texts. `busway/text` and `quamina` both
//! start from the text; `busway/value` starts from an already parsed
//! `serde_json::Value`, as the broker has one in hand after validating a publish.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use busway_pattern::{Pattern, RuleSet};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quamina::{Quamina, QuaminaBuilder};
use serde_json::Value;

const RULE_COUNTS: [usize; 4] = [1, 100, 1_000, 10_000];
const EVENTS: usize = 64;

/// A small deterministic generator, so both libraries see the same inputs every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % bound as u64).unwrap()
    }
}

fn subscription_rule(i: usize) -> String {
    format!(
        r#"{{"source":["busway.app"],"detail-type":["orders.event{}.v{}"],"detail":{{"metadata":{{"event_attributes":{{"target":["u{}"]}}}}}}}}"#,
        i / 10,
        1 + i % 2,
        i % 10
    )
}

fn mixed_rule(i: usize) -> String {
    let n = i / 8;
    match i % 8 {
        0 => format!(r#"{{"detail-type":[{{"prefix":"orders.event{n}."}}]}}"#),
        1 => format!(r#"{{"detail":{{"data":{{"file":[{{"suffix":".{n}.png"}}]}}}}}}"#),
        2 => format!(
            r#"{{"source":["busway.app"],"detail":{{"data":{{"amount":[{{"numeric":[">=",{n},"<",{}]}}]}}}}}}"#,
            n + 3
        ),
        3 => format!(
            r#"{{"detail-type":["orders.event{n}.v1"],"detail":{{"data":{{"status":[{{"anything-but":["cancelled","s{n}"]}}]}}}}}}"#
        ),
        4 => format!(
            r#"{{"detail":{{"data":{{"customer":[{{"equals-ignore-case":"CUSTOMER-{n}"}}]}}}}}}"#
        ),
        5 => format!(
            r#"{{"detail-type":["orders.event{n}.v2"],"detail":{{"data":{{"flag{}":[{{"exists":true}}]}}}}}}"#,
            n % 4
        ),
        6 => format!(
            r#"{{"detail":{{"data":{{"path":[{{"wildcard":"/tenant{n}/*/report.csv"}}]}}}}}}"#
        ),
        _ => format!(
            r#"{{"detail":{{"data":{{"ip":[{{"cidr":"10.{}.{}.0/24"}}]}}}}}}"#,
            n / 256 % 256,
            n % 256
        ),
    }
}

fn event(rng: &mut Lcg) -> String {
    let kind = rng.next(1_000);
    let version = 1 + rng.next(2);
    let target = rng.next(10);
    let n = rng.next(1_250);
    format!(
        r#"{{"version":"0","id":"6a7e8feb-b491-4cf7-a9f1-bf3703467718","detail-type":"orders.event{kind}.v{version}","source":"busway.app","account":"123456789012","time":"2026-11-26T12:00:00Z","region":"eu-west-1","resources":[],"detail":{{"metadata":{{"event_id":"01JD5Z6A7B","published_at":"2026-11-26T12:00:00Z","event_attributes":{{"target":"u{target}","tenant":"t{n}"}}}},"data":{{"order_id":"o-{n}","amount":{amount}.5,"status":"s{status}","customer":"Customer-{n}","file":"scan.{n}.png","path":"/tenant{n}/2026/report.csv","ip":"10.{hi}.{lo}.17","flag{flag}":true,"lines":[{{"sku":"a","qty":1}},{{"sku":"b","qty":2}}],"note":"{note}"}}}}}}"#,
        amount = rng.next(1_300),
        status = rng.next(1_300),
        hi = n / 256,
        lo = n % 256,
        flag = rng.next(4),
        note = "x".repeat(rng.next(200)),
    )
}

/// quamina 0.7 panics on some rule sets (at 10,000 subscription rules a per-state
/// `u8` count overflows when it builds its automaton on the first match); that size
/// is then reported without a quamina figure.
fn quamina_for(rules: &[String], texts: &[String]) -> Option<Quamina<usize>> {
    std::panic::catch_unwind(|| {
        let mut q = QuaminaBuilder::<usize>::new()
            .with_arena_byte_budget(1 << 30)
            .build()
            .unwrap();
        for (i, rule) in rules.iter().enumerate() {
            q.add_pattern(i, rule).unwrap();
        }
        for text in texts {
            q.matches_for_event(text.as_bytes()).unwrap();
        }
        q
    })
    .ok()
}

fn busway_for(rules: &[String]) -> RuleSet<usize> {
    let mut set = RuleSet::new();
    for (i, rule) in rules.iter().enumerate() {
        set.insert(i, &Pattern::parse(rule).unwrap());
    }
    set
}

fn compare(c: &mut Criterion, name: &str, rule: fn(usize) -> String) {
    let mut rng = Lcg(42);
    let texts: Vec<String> = (0..EVENTS).map(|_| event(&mut rng)).collect();
    let values: Vec<Value> = texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(EVENTS as u64));
    for count in RULE_COUNTS {
        let rules: Vec<String> = (0..count).map(rule).collect();
        let busway = busway_for(&rules);
        let quamina = quamina_for(&rules, &texts);
        // Both must give the same answer on these events, or the timing is moot.
        for text in &texts {
            let mut ours = busway.matching_text(text).unwrap();
            ours.sort_unstable();
            let mut by_value = busway.matching(&serde_json::from_str(text).unwrap());
            by_value.sort_unstable();
            assert_eq!(
                ours, by_value,
                "{name} with {count} rules: text and value differ"
            );
            if let Some(quamina) = &quamina {
                let mut theirs = quamina.matches_for_event(text.as_bytes()).unwrap();
                theirs.sort_unstable();
                assert_eq!(
                    ours, theirs,
                    "{name} with {count} rules disagrees on {text}"
                );
            }
        }
        group.bench_with_input(
            BenchmarkId::new("busway/text", count),
            &texts,
            |b, texts| {
                b.iter(|| {
                    texts
                        .iter()
                        .map(|t| busway.matching_text(black_box(t)).unwrap().len())
                        .sum::<usize>()
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("busway/value", count),
            &values,
            |b, values| {
                b.iter(|| {
                    values
                        .iter()
                        .map(|v| busway.matching(black_box(v)).len())
                        .sum::<usize>()
                });
            },
        );
        let Some(quamina) = quamina else {
            eprintln!("quamina panicked while adding {count} {name} rules; no figure");
            continue;
        };
        group.bench_with_input(BenchmarkId::new("quamina", count), &texts, |b, texts| {
            b.iter(|| {
                texts
                    .iter()
                    .map(|t| {
                        quamina
                            .matches_for_event(black_box(t.as_bytes()))
                            .unwrap()
                            .len()
                    })
                    .sum::<usize>()
            });
        });
    }
    group.finish();
}

fn subscriptions(c: &mut Criterion) {
    compare(c, "subscriptions", subscription_rule);
}

fn mixed(c: &mut Criterion) {
    compare(c, "mixed", mixed_rule);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = subscriptions, mixed
}
criterion_main!(benches);
