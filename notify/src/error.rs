//! Configuration errors: each says where (the field path, as `alertflow validate` prints it)
//! and what is wrong, and a config reports all of its errors at once.

use std::fmt;

use crate::matcher::MatcherError;

/// What is wrong with one configuration field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigProblem {
    /// A matcher string does not parse.
    #[error(transparent)]
    Matcher(#[from] MatcherError),
    /// The root route has no receiver, so an alert no child route takes would go nowhere.
    #[error("the root route must have a receiver")]
    RootWithoutReceiver,
    /// The root route has matchers; it must take every alert.
    #[error("the root route must not have matchers: it takes every alert")]
    RootWithMatchers,
    /// `group_by` mixes `"..."` (all labels) with label names.
    #[error("`...` (group by all labels) must be the only entry of group_by")]
    GroupByAllWithOthers,
    /// A label name is listed twice.
    #[error("label `{0}` is listed twice")]
    DuplicateLabel(String),
    /// A label name is empty.
    #[error("a label name must not be empty")]
    EmptyLabelName,
    /// `group_interval` or `repeat_interval` is zero, which would notify in a busy loop.
    #[error("must not be zero")]
    ZeroInterval,
}

/// One configuration error: the field path and the problem there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ConfigError {
    /// Where the problem is, e.g. `route.routes[1].matchers[0]`.
    pub path: String,
    /// What the problem is.
    pub problem: ConfigProblem,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, problem: impl Into<ConfigProblem>) -> Self {
        ConfigError { path: path.into(), problem: problem.into() }
    }
}

/// Every error of one configuration, in the order of the fields (never empty).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// `Ok(v)` when `errors` is empty.
    pub(crate) fn check<T>(errors: Vec<ConfigError>, v: T) -> Result<T, ConfigErrors> {
        if errors.is_empty() { Ok(v) } else { Err(ConfigErrors(errors)) }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
