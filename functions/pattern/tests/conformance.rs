//! Every case of `tests/conformance/event-patterns.jsonl` gets AWS's answer (the corpus and its
//! provenance: `tests/conformance/README.md`).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use busway_pattern::{Pattern, RuleSet, TestOutcome, test_texts};
use serde_json::Value;

fn corpus_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/conformance/{file}"))
}

fn read_cases(file: &str) -> Vec<Value> {
    let path = corpus_path(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "the conformance corpus {} must exist: {error}",
            path.display()
        )
    });
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("each corpus line is JSON"))
        .collect()
}

fn field<'a>(case: &'a Value, name: &str) -> &'a str {
    case[name]
        .as_str()
        .unwrap_or_else(|| panic!("case {} has no string {name}", case["id"]))
}

#[test]
fn every_corpus_case_gets_the_answer_aws_gave() {
    let cases = read_cases("event-patterns.jsonl");
    assert_eq!(cases.len(), 179, "the corpus has 179 cases");
    let mut failures = Vec::new();
    for case in &cases {
        let id = field(case, "id");
        let expected = field(case, "expected");
        let outcome = test_texts(field(case, "pattern_text"), field(case, "event_text"));
        let ok = match (expected, &outcome) {
            ("match", TestOutcome::Match) | ("no_match", TestOutcome::NoMatch) => true,
            ("invalid_pattern", TestOutcome::InvalidPattern(error)) => {
                error.to_string() == field(case, "error_message")
            }
            _ => false,
        };
        if !ok {
            let wanted = case["error_message"].as_str().unwrap_or(expected);
            failures.push(format!(
                "{id}: AWS said {wanted:?}, busway said {:?}",
                outcome.to_string()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from AWS:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_rule_set_of_every_valid_corpus_pattern_agrees_with_aws() {
    let cases = read_cases("event-patterns.jsonl");
    let mut rules = RuleSet::new();
    let mut valid = Vec::new();
    for case in &cases {
        if let Ok(pattern) = Pattern::parse(field(case, "pattern_text")) {
            rules.insert(field(case, "id").to_owned(), &pattern);
            valid.push(case);
        }
    }
    assert_eq!(valid.len(), 137);
    for case in valid {
        let id = field(case, "id");
        let matched = rules
            .matching_text(field(case, "event_text"))
            .unwrap_or_else(|error| panic!("{id}: event refused: {error}"));
        let expected = field(case, "expected") == "match";
        assert_eq!(matched.iter().any(|m| m == id), expected, "{id}");
    }
}

#[test]
fn events_aws_refused_are_refused() {
    let cases = read_cases("invalid-events.jsonl");
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let outcome = test_texts(field(case, "pattern_text"), field(case, "event_text"));
        assert!(
            matches!(&outcome, TestOutcome::InvalidEvent(message) if message.starts_with(field(case, "error_message"))),
            "{}: {outcome}",
            field(case, "id")
        );
    }
}
