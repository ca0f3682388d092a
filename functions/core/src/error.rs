//! Validation errors that name every failing field, so a client can fix a request in one go.

use serde::Serialize;

/// One failing field: `field` is a JSON-pointer-like path into the request (`data/properties/x`)
/// or a field name (`event_type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every field that failed, in the order they were checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", summary(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing failed, so collecting checks ends in one `?`.
    pub fn into_result<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Runs `check` and records its error under `field`, returning the value when it passed.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        check: Result<T, E>,
    ) -> Option<T> {
        check.map_err(|e| self.push(field, e.to_string())).ok()
    }
}
