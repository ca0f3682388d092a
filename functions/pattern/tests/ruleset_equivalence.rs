//! A compiled `RuleSet` answers exactly what evaluating each pattern alone answers.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::thread;

use busway_pattern::{Pattern, RuleSet, SharedRuleSet};
use proptest::prelude::*;
use serde_json::{Value, json};

const STRINGS: &[&str] = &[
    "",
    "a",
    "ab",
    "abc",
    "Ab",
    "ABC",
    "x.png",
    "X.PNG",
    "10.0.0.1",
    "10.1.2.3",
    "2001:db8::1",
    "dir/init/file",
    "ß",
    "İ",
];
const NUMBERS: &[&str] = &["0", "1", "1.5", "5", "10", "-3", "300", "300.0", "3e2"];
const WILDCARDS: &[&str] = &[
    "a*",
    "*b*",
    "*",
    "a*c",
    "*.png",
    "dir/*/file",
    "*/init/*",
    "",
];
const CIDRS: &[&str] = &["10.0.0.0/8", "10.0.0.0/31", "2001:db8::/32", "0.0.0.0/0"];

fn string() -> impl Strategy<Value = String> {
    prop::sample::select(STRINGS).prop_map(str::to_owned)
}

fn number() -> impl Strategy<Value = Value> {
    prop::sample::select(NUMBERS).prop_map(|n| serde_json::from_str(n).unwrap())
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => string().prop_map(Value::String),
        3 => number(),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

fn numeric() -> impl Strategy<Value = Value> {
    let op = prop::sample::select(&["=", "<", "<=", ">", ">="][..]);
    let low = prop::sample::select(&[">", ">="][..]);
    let high = prop::sample::select(&["<", "<="][..]);
    prop_oneof![
        (op, number()).prop_map(|(op, n)| json!([op, n])),
        (low, number(), high, number()).prop_map(|(l, a, h, b)| json!([l, a, h, b])),
    ]
}

fn anything_but() -> impl Strategy<Value = Value> {
    prop_oneof![
        string().prop_map(Value::String),
        number(),
        prop::collection::vec(string(), 1..3).prop_map(|v| json!(v)),
        prop::collection::vec(number(), 1..3).prop_map(|v| json!(v)),
        string()
            .prop_filter("non-empty", |s| !s.is_empty())
            .prop_map(|s| json!({"prefix": s})),
        prop::collection::vec(string().prop_filter("non-empty", |s| !s.is_empty()), 1..3)
            .prop_map(|s| json!({"suffix": s})),
        string().prop_map(|s| json!({"equals-ignore-case": s})),
        prop::sample::select(WILDCARDS).prop_map(|w| json!({"wildcard": w})),
    ]
}

fn matcher() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => string().prop_map(|s| json!({"prefix": s})),
        1 => string().prop_map(|s| json!({"suffix": s})),
        1 => string().prop_map(|s| json!({"prefix": {"equals-ignore-case": s}})),
        1 => string().prop_map(|s| json!({"suffix": {"equals-ignore-case": s}})),
        1 => string().prop_map(|s| json!({"equals-ignore-case": s})),
        1 => prop::sample::select(WILDCARDS).prop_map(|w| json!({"wildcard": w})),
        2 => numeric().prop_map(|n| json!({"numeric": n})),
        1 => any::<bool>().prop_map(|b| json!({"exists": b})),
        1 => prop::sample::select(CIDRS).prop_map(|c| json!({"cidr": c})),
        2 => anything_but().prop_map(|a| json!({"anything-but": a})),
    ]
}

/// The first five are where events put plain values; `e.` nests an empty key.
const PATHS: &[&str] = &["a", "b", "c.d", "c.e", "e.", "arr.x", "arr.y", "deep.arr.x"];

/// Puts `leaf` at `path` in `object`, nesting or dot-joining the keys.
fn place(object: &mut serde_json::Map<String, Value>, path: &str, leaf: Value, joined: bool) {
    match path.split_once('.') {
        Some((head, rest)) if !joined => {
            let inner = object.entry(head.to_owned()).or_insert_with(|| json!({}));
            if let Value::Object(map) = inner {
                place(map, rest, leaf, joined);
            }
        }
        _ => {
            object.insert(path.to_owned(), leaf);
        }
    }
}

fn fields() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    prop::collection::vec(
        (
            prop::sample::select(PATHS),
            prop::collection::vec(matcher(), 1..4),
            any::<bool>(),
        ),
        1..4,
    )
    .prop_map(|fields| {
        let mut object = serde_json::Map::new();
        for (path, matchers, joined) in fields {
            place(&mut object, path, Value::Array(matchers), joined);
        }
        object
    })
}

fn pattern() -> impl Strategy<Value = String> {
    (
        fields(),
        prop::option::of(prop::collection::vec(fields(), 2..4)),
    )
        .prop_map(|(mut object, or)| {
            if let Some(branches) = or {
                object.insert(
                    "$or".to_owned(),
                    Value::Array(branches.into_iter().map(Value::Object).collect()),
                );
            }
            Value::Object(object).to_string()
        })
}

fn leaf_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
    ]
}

fn element() -> impl Strategy<Value = Value> {
    (
        prop::option::of(leaf_value()),
        prop::option::of(leaf_value()),
    )
        .prop_map(|(x, y)| {
            let mut map = serde_json::Map::new();
            if let Some(x) = x {
                map.insert("x".to_owned(), x);
            }
            if let Some(y) = y {
                map.insert("y".to_owned(), y);
            }
            Value::Object(map)
        })
}

fn event() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            (
                prop::sample::select(&PATHS[..5]),
                leaf_value(),
                any::<bool>(),
            ),
            0..5,
        ),
        prop::option::of(prop::collection::vec(element(), 0..4)),
        prop::option::of(prop::collection::vec(element(), 0..3)),
    )
        .prop_map(|(fields, arr, deep)| {
            let mut object = serde_json::Map::new();
            for (path, value, joined) in fields {
                place(&mut object, path, value, joined);
            }
            if let Some(arr) = arr {
                object.insert("arr".to_owned(), Value::Array(arr));
            }
            if let Some(deep) = deep {
                object.insert(
                    "deep".to_owned(),
                    Value::Array(vec![json!({"arr": deep}), json!({"arr": [{"x": "a"}]})]),
                );
            }
            Value::Object(object)
        })
}

fn expected(patterns: &[(usize, Pattern)], event: &Value) -> Vec<usize> {
    let mut keys: Vec<usize> = patterns
        .iter()
        .filter(|(_, p)| p.matches(event))
        .map(|(k, _)| *k)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Matches both the value and its text (with the envelope `TestEventPattern` wants),
/// which take different flattening paths, and insists they agree.
fn actual(rules: &RuleSet<usize>, event: &Value) -> Vec<usize> {
    let mut keys = rules.matching(event);
    keys.sort_unstable();
    let mut with_envelope = event.clone();
    if let Value::Object(map) = &mut with_envelope {
        for field in ["id", "account", "source", "time", "region", "detail-type"] {
            map.insert(field.to_owned(), json!("x"));
        }
    }
    let mut from_text = rules
        .matching_text(&with_envelope.to_string())
        .expect("an event with its envelope is accepted");
    from_text.sort_unstable();
    assert_eq!(keys, from_text, "value and text disagree on {event}");
    keys
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_rule_set_answers_what_each_pattern_answers_alone(
        texts in prop::collection::vec(pattern(), 1..24),
        events in prop::collection::vec(event(), 1..12),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        // Several patterns share a key, as a subscription may hold more than one.
        let mut patterns: Vec<(usize, Pattern)> = texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| Pattern::parse(text).ok().map(|p| (i % 10, p)))
            .collect();
        let mut rules = RuleSet::new();
        for (key, pattern) in &patterns {
            rules.insert(*key, pattern);
        }
        for event in &events {
            prop_assert_eq!(actual(&rules, event), expected(&patterns, event), "event {}", event);
        }
        for index in removed {
            let key = index.index(10);
            let had = patterns.iter().any(|(k, _)| *k == key);
            prop_assert_eq!(rules.remove(&key), had);
            patterns.retain(|(k, _)| *k != key);
        }
        for event in &events {
            prop_assert_eq!(actual(&rules, event), expected(&patterns, event), "after removal, event {}", event);
        }
    }

    #[test]
    fn a_rule_set_emptied_of_its_rules_matches_nothing(
        texts in prop::collection::vec(pattern(), 1..12),
        events in prop::collection::vec(event(), 1..6),
    ) {
        let mut rules = RuleSet::new();
        for (i, text) in texts.iter().enumerate() {
            if let Ok(pattern) = Pattern::parse(text) {
                rules.insert(i, &pattern);
            }
        }
        for i in 0..texts.len() {
            rules.remove(&i);
        }
        prop_assert!(rules.is_empty());
        for event in &events {
            prop_assert!(rules.matching(event).is_empty());
        }
    }
}

#[test]
fn readers_keep_matching_while_a_writer_changes_rules() {
    let shared = Arc::new(SharedRuleSet::new());
    let always = Pattern::parse(r#"{"source":["busway.app"]}"#).unwrap();
    shared.update(|rules| rules.insert(0usize, &always));
    let event = json!({"source": "busway.app", "detail-type": "t1"});
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let shared = Arc::clone(&shared);
            let event = event.clone();
            thread::spawn(move || {
                for _ in 0..2_000 {
                    let snapshot = shared.snapshot();
                    let matched = snapshot.matching(&event);
                    // Key 0 is never removed; any other key present must match too,
                    // because every pattern added matches this event.
                    assert!(matched.contains(&0));
                    assert_eq!(matched.len(), snapshot.len());
                }
            })
        })
        .collect();
    for i in 1..200usize {
        let pattern = Pattern::parse(&format!(
            r#"{{"source":["busway.app"],"detail-type":[{{"anything-but":"n{i}"}}]}}"#
        ))
        .unwrap();
        shared.update(|rules| rules.insert(i, &pattern));
        if i % 3 == 0 {
            shared.update(|rules| rules.remove(&(i - 1)));
        }
    }
    for reader in readers {
        reader.join().expect("reader threads do not panic");
    }
    assert_eq!(shared.snapshot().len(), 200 - 66);
}
