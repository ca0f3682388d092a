//! What `busway pattern test --pattern FILE --event FILE` prints and returns.

use std::fmt;
use std::path::Path;

use crate::{Pattern, PatternError};

/// The answer to one `TestEventPattern`-style check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Match,
    NoMatch,
    /// The pattern is invalid; `Display` prints AWS's message.
    InvalidPattern(PatternError),
    /// The event is not one `TestEventPattern` accepts.
    InvalidEvent(String),
    /// A file could not be read.
    Unreadable(String),
}

impl TestOutcome {
    /// grep's convention: 0 for a match, 1 for no match, 2 for anything else.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            TestOutcome::Match => 0,
            TestOutcome::NoMatch => 1,
            TestOutcome::InvalidPattern(_)
            | TestOutcome::InvalidEvent(_)
            | TestOutcome::Unreadable(_) => 2,
        }
    }
}

impl fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestOutcome::Match => f.write_str("match"),
            TestOutcome::NoMatch => f.write_str("no match"),
            TestOutcome::InvalidPattern(error) => write!(f, "{error}"),
            TestOutcome::InvalidEvent(message) | TestOutcome::Unreadable(message) => {
                f.write_str(message)
            }
        }
    }
}

/// Tests the event in `event` against the pattern in `pattern`, both read as UTF-8.
/// The pattern is checked first, as `TestEventPattern` does.
#[must_use]
pub fn test_files(pattern: &Path, event: &Path) -> TestOutcome {
    let pattern_text = match read(pattern) {
        Ok(text) => text,
        Err(outcome) => return outcome,
    };
    let event_text = match read(event) {
        Ok(text) => text,
        Err(outcome) => return outcome,
    };
    test_texts(&pattern_text, &event_text)
}

/// [`test_files`] on texts already in memory.
#[must_use]
pub fn test_texts(pattern: &str, event: &str) -> TestOutcome {
    let pattern = match Pattern::parse(pattern) {
        Ok(pattern) => pattern,
        Err(error) => return TestOutcome::InvalidPattern(error),
    };
    match pattern.matches_text(event) {
        Ok(true) => TestOutcome::Match,
        Ok(false) => TestOutcome::NoMatch,
        Err(error) => TestOutcome::InvalidEvent(format!("{error} ({})", error.detail())),
    }
}

fn read(path: &Path) -> Result<String, TestOutcome> {
    std::fs::read_to_string(path).map_err(|error| {
        TestOutcome::Unreadable(format!("cannot read {}: {error}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"id":"1","account":"1","source":"s","time":"t","region":"r","detail-type":"d","detail":{"x":1}}"#;

    #[test]
    fn outcomes_print_and_exit_like_grep() {
        let matched = test_texts(r#"{"source":["s"]}"#, EVENT);
        assert_eq!(
            (matched.to_string(), matched.exit_code()),
            ("match".to_owned(), 0)
        );
        let missed = test_texts(r#"{"source":["x"]}"#, EVENT);
        assert_eq!(
            (missed.to_string(), missed.exit_code()),
            ("no match".to_owned(), 1)
        );
        let invalid = test_texts(r#"{"source":[]}"#, EVENT);
        assert_eq!(
            (invalid.to_string(), invalid.exit_code()),
            (
                "Event pattern is not valid. Reason: Empty arrays are not allowed".to_owned(),
                2
            )
        );
    }

    #[test]
    fn events_test_event_pattern_refuses_exit_with_two() {
        for event in [
            "plain string",
            r#"["plain string"]"#,
            r#"{"testEvent":"value"}"#,
        ] {
            let outcome = test_texts(r#"{"source":["s"]}"#, event);
            assert!(matches!(outcome, TestOutcome::InvalidEvent(_)), "{event}");
            assert!(
                outcome
                    .to_string()
                    .starts_with("Parameter Event is not valid.")
            );
            assert_eq!(outcome.exit_code(), 2);
        }
    }

    #[test]
    fn missing_files_are_unreadable() {
        let outcome = test_files(
            Path::new("/nonexistent/p.json"),
            Path::new("/nonexistent/e.json"),
        );
        assert!(matches!(outcome, TestOutcome::Unreadable(_)));
        assert_eq!(outcome.exit_code(), 2);
    }
}
