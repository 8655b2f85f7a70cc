//! Detector parameters: the `params` table of a `[[detect]]` section or `--param k=v` on the
//! command line, read by each detector with defaults and checked once, every error naming its key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// One parameter value as written in TOML or on the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text (also what an unparsable command-line value stays).
    Text(String),
}

impl ParamValue {
    /// Reads a command-line value: a boolean or number when it parses as one, else text.
    pub fn parse_cli(s: &str) -> ParamValue {
        if let Ok(b) = s.parse::<bool>() {
            ParamValue::Bool(b)
        } else if let Ok(i) = s.parse::<i64>() {
            ParamValue::Int(i)
        } else if let Ok(f) = s.parse::<f64>() {
            ParamValue::Float(f)
        } else {
            ParamValue::Text(s.to_string())
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match *self {
            ParamValue::Int(i) => Some(i as f64),
            ParamValue::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Text(s) => write!(f, "\"{s}\""),
        }
    }
}

/// Parameters by name.
pub type Params = BTreeMap<String, ParamValue>;

/// Reads parameters with defaults, collecting one error per bad key; [`ParamReader::finish`]
/// reports the keys nobody asked for.
pub struct ParamReader<'a> {
    params: &'a Params,
    seen: BTreeSet<&'static str>,
    /// Errors so far, field paths `params.KEY`.
    pub errors: Vec<ConfigError>,
}

impl<'a> ParamReader<'a> {
    /// A reader over `params`.
    pub fn new(params: &'a Params) -> Self {
        ParamReader { params, seen: BTreeSet::new(), errors: Vec::new() }
    }

    /// An integer in `[min, max]`, `default` when absent.
    pub fn int(&mut self, key: &'static str, default: usize, min: usize, max: usize) -> usize {
        self.seen.insert(key);
        match self.params.get(key) {
            None => default,
            Some(ParamValue::Int(i)) if *i >= min as i64 && *i <= max as i64 => *i as usize,
            Some(v) => {
                self.errors.push(ConfigError::new(format!("params.{key}"), format!("must be an integer from {min} to {max}, not {v}")));
                default
            }
        }
    }

    /// A number in `[min, max]`, `default` when absent.
    pub fn float(&mut self, key: &'static str, default: f64, min: f64, max: f64) -> f64 {
        self.seen.insert(key);
        match self.params.get(key) {
            None => default,
            Some(v) => match v.as_f64() {
                Some(x) if x >= min && x <= max => x,
                _ => {
                    self.errors.push(ConfigError::new(format!("params.{key}"), format!("must be a number from {min} to {max}, not {v}")));
                    default
                }
            },
        }
    }

    /// Errors, including one per key no detector parameter has that name.
    pub fn finish(mut self, detector: &str) -> Result<(), Vec<ConfigError>> {
        for k in self.params.keys() {
            if !self.seen.contains(k.as_str()) {
                let known: Vec<&str> = self.seen.iter().copied().collect();
                self.errors.push(ConfigError::new(
                    format!("params.{k}"),
                    format!("`{detector}` has no parameter `{k}` (it has: {})", known.join(", ")),
                ));
            }
        }
        if self.errors.is_empty() { Ok(()) } else { Err(self.errors) }
    }
}
