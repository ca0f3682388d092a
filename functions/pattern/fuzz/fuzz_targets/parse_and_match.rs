//! Pattern text, a NUL byte, then event text. Parsing and matching must never panic
//! or hang, and a one-pattern `RuleSet` must answer what the `Pattern` answers.
#![no_main]

use busway_pattern::{Pattern, PatternOptions, RuleSet};
use libfuzzer_sys::fuzz_target;

const ENVELOPE: &str = r#"{"id":"1","account":"1","source":"s","time":"t","region":"r","detail-type":"d","detail":{}}"#;

fuzz_target!(|data: &[u8]| {
    let (pattern, event) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, ENVELOPE.as_bytes()),
    };
    let (Ok(pattern), Ok(event)) = (std::str::from_utf8(pattern), std::str::from_utf8(event))
    else {
        return;
    };
    // A larger limit than AWS's lets the fuzzer reach deep and wide patterns.
    let Ok(pattern) = Pattern::parse_with(pattern, &PatternOptions { max_len: 16_384 }) else {
        return;
    };
    let mut rules = RuleSet::new();
    rules.insert(7u8, &pattern);

    let by_text = pattern.matches_text(event);
    let set_by_text = rules.matching_text(event);
    match (&by_text, &set_by_text) {
        (Ok(one), Ok(set)) => assert_eq!(*one, set == &[7u8], "text: pattern and rule set differ"),
        (Err(_), Err(_)) => {}
        _ => panic!("text: pattern and rule set disagree on whether the event is valid"),
    }

    if let Ok(value) = serde_json::from_str::<serde_json::Value>(event) {
        let one = pattern.matches(&value);
        let set = rules.matching(&value);
        assert_eq!(one, set == [7u8], "value: pattern and rule set differ");
    }

    assert!(rules.remove(&7));
    assert!(rules.is_empty());
});
