//! Control records: what people tell the notifier while it runs (`POST /silences`,
//! `POST /incidents/{id}/ack`, …). They enter the dataflow as input at an event time (the
//! data's watermark when they arrived), so a replay applies them at the same point.

use alertflow_model::time::Millis;
use serde::{Deserialize, Serialize};

use crate::matcher::Matchers;
use crate::silence::{Silence, SilenceError};

/// A silence in plain fields (matchers as their text): what checkpoints and the cluster's
/// exchange encode (bincode cannot read [`Matchers`]' flexible form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceSpec {
    /// Its id.
    pub id: String,
    /// Each matcher as text (`name="value"`).
    pub matchers: Vec<String>,
    /// Start of muting (event time, inclusive).
    pub starts_at: Millis,
    /// End of muting (event time, exclusive).
    pub ends_at: Millis,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl SilenceSpec {
    /// The plain form of a silence.
    pub fn of(s: &Silence) -> SilenceSpec {
        SilenceSpec {
            id: s.id.clone(),
            matchers: s.matchers.iter().map(|m| m.to_string()).collect(),
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
        }
    }

    /// The silence, validated.
    pub fn to_silence(&self) -> Result<Silence, SilenceError> {
        let mut matchers = Vec::new();
        for m in &self.matchers {
            let parsed: Matchers = m.parse().map_err(|_| SilenceError::NoMatchers(self.id.clone()))?;
            matchers.extend(parsed.0);
        }
        let s = Silence {
            id: self.id.clone(),
            matchers: Matchers(matchers),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
        };
        s.validate()?;
        Ok(s)
    }
}

/// One control record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A new silence.
    AddSilence(SilenceSpec),
    /// Ends a silence at the record's time.
    ExpireSilence(String),
    /// Someone took incident `incident` (16 hex digits): it escalates no further.
    Ack {
        /// The incident.
        incident: String,
        /// Who.
        by: String,
    },
    /// Someone resolved incident `incident` by hand: its firing alerts are reported resolved
    /// now, and their current episodes stay resolved whatever the sources still send.
    Resolve {
        /// The incident.
        incident: String,
        /// Who.
        by: String,
    },
}
