//! alertflow's notification routing: the pure-logic core of an Alertmanager-grade notifier,
//! evaluated in **event time** so that the same alerts always give the same notifications,
//! whatever the wall clock reads.
//!
//! The pieces follow Alertmanager's documented semantics, one concept per module:
//! - [`matcher`]: label matchers (`=`, `!=`, `=~`, `!~`) and their text form;
//! - [`route`]: the routing tree, inheritance of receiver, grouping and timings, group keys;
//! - [`inhibit`]: inhibition rules and an incremental index of the firing source alerts;
//! - [`silence`]: silences active over an event-time interval;
//! - [`group`]: an aggregation group's notification timing (group_wait, group_interval,
//!   repeat_interval) and the notifications it sends.
//!
//! Nothing here does I/O or reads a clock: callers pass event times (ms since the epoch).

#![warn(missing_docs)]

pub mod error;
pub mod group;
pub mod inhibit;
pub mod labels;
pub mod matcher;
pub mod route;
pub mod silence;

pub use error::{ConfigError, ConfigErrors, ConfigProblem};
pub use group::{AlertState, Group, Notification, NotifiedAlert, NotifyReason};
pub use inhibit::{InhibitRule, InhibitRuleConfig, Inhibitor};
pub use labels::Labels;
pub use matcher::{MatchOp, Matcher, MatcherError, Matchers};
pub use route::{GroupBy, ResolvedRoute, Route, RouteConfig, Timings, group_key};
pub use silence::{Silence, SilenceError, SilenceState, Silences};
