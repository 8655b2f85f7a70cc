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
//!   repeat_interval) and the notifications it sends;
//! - [`payload`], [`template`], [`receiver`]: what a notification says and the request it
//!   becomes for a webhook (Alertmanager's payload, version 4), Slack or PagerDuty;
//! - [`deliver`]: sending, with retries, backoff and a rate limit per receiver;
//! - [`config`] and [`notifier`]: the `[notify]` section, and the state machine that turns the
//!   alert chain's rows (lifecycle and storms) into notifications.
//!
//! Only [`deliver`] does I/O or reads a clock; the rest takes event times (ms since the
//! epoch), so routing and timing are the same on every replay.

#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod deliver;
pub mod error;
pub mod group;
pub mod inhibit;
pub mod labels;
pub mod matcher;
pub mod notifier;
pub mod payload;
pub mod receiver;
pub mod route;
pub mod silence;
pub mod template;

pub use config::{EscalationConfig, NotifyConfig, NotifyPlan, SilenceConfig};
pub use control::{Control, SilenceSpec};
pub use deliver::{Deliverer, Outcome, Status, Transport};
pub use error::{ConfigError, ConfigErrors, ConfigProblem};
pub use group::{AlertState, Group, Notification, NotifiedAlert, NotifyReason};
pub use inhibit::{InhibitRule, InhibitRuleConfig, Inhibitor};
pub use labels::Labels;
pub use matcher::{MatchOp, Matcher, MatcherError, Matchers};
pub use notifier::{Notifier, NotifyInput, NotifyState, TimerChange};
pub use payload::{AlertInfo, Message};
pub use receiver::{Receiver, ReceiverConfig, ReceiverKind};
pub use route::{GroupBy, ResolvedRoute, Route, RouteConfig, Timings, group_key};
pub use silence::{Silence, SilenceError, SilenceState, Silences};
