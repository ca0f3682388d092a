//! Errors, worded as EventBridge words them.

/// A pattern that EventBridge would reject (`InvalidEventPatternException`).
///
/// `Display` gives AWS's full first line, `Event pattern is not valid. Reason: <reason>`;
/// [`PatternError::reason`] gives the reason alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Event pattern is not valid. Reason: {reason}")]
pub struct PatternError {
    reason: String,
}

impl PatternError {
    pub(crate) fn new(reason: impl Into<String>) -> PatternError {
        PatternError {
            reason: reason.into(),
        }
    }

    /// The text after `Reason: `, e.g. `Empty arrays are not allowed`.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// An event that `TestEventPattern` would reject (`ValidationException`).
///
/// `Display` gives AWS's message, `Parameter Event is not valid.`; [`EventError::detail`]
/// says what was wrong, for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Parameter Event is not valid.")]
pub struct EventError {
    detail: String,
}

impl EventError {
    pub(crate) fn new(detail: impl Into<String>) -> EventError {
        EventError {
            detail: detail.into(),
        }
    }

    /// Why the event was refused: not JSON, not an object, or a missing envelope field.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }
}
