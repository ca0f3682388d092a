//! EventBridge-exact event patterns for busway.
//!
//! - [`Pattern`] parses and validates a pattern with AWS's rules and `Reason:` texts,
//!   and matches one event.
//! - [`RuleSet`] compiles many patterns into one automaton, so that matching an event
//!   costs about the same with ten thousand rules as with a hundred.
//! - [`test_files`] is `busway pattern test`: EventBridge's `TestEventPattern` offline.
//!
//! The language is described in `tests/conformance/semantics.md`; the crate README
//! lists where busway had to choose because AWS's behaviour is not known.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;
mod error;
mod eval;
mod event;
mod hash;
mod index;
mod json;
mod matcher;
mod number;
mod pattern;
mod ruleset;

pub use cli::{TestOutcome, test_files, test_texts};
pub use error::{EventError, PatternError};
pub use pattern::{DEFAULT_MAX_LEN, MAX_COMBINATIONS, Pattern, PatternOptions};
pub use ruleset::{RuleSet, SharedRuleSet};
