//! Input: one or two pattern texts and an event text, separated by NUL bytes
//! (`pattern`, `pattern NUL event` or `pattern NUL pattern NUL event`). Parsing and
//! matching must never panic or hang, and a `RuleSet` holding the patterns must answer
//! what each `Pattern` answers alone, for the event as text and as a `Value`.
#![no_main]

use busway_pattern::{Pattern, PatternOptions, RuleSet};
use libfuzzer_sys::fuzz_target;

const ENVELOPE: &str = r#"{"id":"1","account":"1","source":"s","time":"t","region":"r","detail-type":"d","detail":{}}"#;

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.splitn(3, |b| *b == 0).collect();
    let (pattern_parts, event) = match parts.as_slice() {
        [pattern] => (vec![*pattern], ENVELOPE.as_bytes()),
        [pattern, event] => (vec![*pattern], *event),
        [first, second, event] => (vec![*first, *second], *event),
        _ => return,
    };
    let Ok(event) = std::str::from_utf8(event) else {
        return;
    };
    // A larger limit than AWS's lets the fuzzer reach deep and wide patterns.
    let options = PatternOptions { max_len: 16_384 };
    let patterns: Vec<Pattern> = pattern_parts
        .iter()
        .filter_map(|text| std::str::from_utf8(text).ok())
        .filter_map(|text| Pattern::parse_with(text, &options).ok())
        .collect();
    if patterns.is_empty() {
        return;
    }
    let mut rules = RuleSet::new();
    for (key, pattern) in patterns.iter().enumerate() {
        rules.insert(key, pattern);
    }

    let one_by_one: Result<Vec<usize>, _> = patterns
        .iter()
        .enumerate()
        .map(|(key, pattern)| pattern.matches_text(event).map(|hit| (key, hit)))
        .filter(|result| !matches!(result, Ok((_, false))))
        .map(|result| result.map(|(key, _)| key))
        .collect();
    match (one_by_one, rules.matching_text(event)) {
        (Ok(expected), Ok(mut actual)) => {
            actual.sort_unstable();
            assert_eq!(expected, actual, "text: patterns and rule set differ");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("text: patterns and rule set disagree on whether the event is valid"),
    }

    if let Ok(value) = serde_json::from_str::<serde_json::Value>(event) {
        let expected: Vec<usize> = (0..patterns.len())
            .filter(|&key| patterns[key].matches(&value))
            .collect();
        let mut actual = rules.matching(&value);
        actual.sort_unstable();
        assert_eq!(expected, actual, "value: patterns and rule set differ");
    }

    assert!(rules.remove(&0));
    if patterns.len() == 2 {
        let expected = patterns[1].matches_text(event).unwrap_or(false);
        let still = rules
            .matching_text(event)
            .map(|keys| keys == [1])
            .unwrap_or(false);
        assert_eq!(
            expected, still,
            "after removing a rule, the other answers alone"
        );
    }
});
