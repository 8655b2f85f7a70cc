//! Errors of operator construction: a config that cannot become an operator.

/// A config value that is out of range or inconsistent. `field` is the path inside the
/// operator's section (`window.size`), so the engine can prefix the section's own path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field, relative to the operator's section.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { field: field.into(), message: message.into() }
    }
}
