//! The `[serve]` section: where the running engine answers SQL (HTTP, PostgreSQL wire
//! protocol), who may ask, and the limits queries run under.
//!
//! ```toml
//! [serve]
//! http = "127.0.0.1:8080"
//! pg = "127.0.0.1:5433"
//! query_timeout = "30s"
//! query_memory = "512MiB"
//!
//! [[serve.tokens]]
//! token = "s3cret-acme"
//! tenant = "acme"          # or "*": every tenant (an operator)
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alertflow_model::size::ByteSize;
use alertflow_model::time::DurationMs;
use alertflow_queries::{Access, QueryLimits};
use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

/// `[serve]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// `HOST:PORT` of the HTTP interface (`POST /sql`, `GET /tables`, `/metrics`, `/health`).
    #[serde(default)]
    pub http: Option<String>,
    /// `HOST:PORT` of the PostgreSQL wire protocol.
    #[serde(default)]
    pub pg: Option<String>,
    /// Wall time one query may take.
    #[serde(default = "default_timeout")]
    pub query_timeout: DurationMs,
    /// Memory one query's operators may hold (sorts, joins, aggregations).
    #[serde(default = "default_memory")]
    pub query_memory: ByteSize,
    /// How often the live tables are snapshotted at most (each snapshot costs time in the
    /// rows a table holds, on every worker).
    #[serde(default = "default_refresh")]
    pub live_refresh: DurationMs,
    /// Callers and what they may see. None: every caller sees everything, and only loopback
    /// addresses may be served.
    #[serde(default)]
    pub tokens: Vec<TokenSection>,
}

/// One `[[serve.tokens]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// The secret: HTTP `Authorization: Bearer <token>`, or the PostgreSQL password.
    pub token: String,
    /// The tenant whose rows the caller sees, or `"*"` for all.
    pub tenant: String,
}

fn default_timeout() -> DurationMs {
    DurationMs::from_secs(30)
}

fn default_refresh() -> DurationMs {
    DurationMs(100)
}

fn default_memory() -> ByteSize {
    ByteSize(512 << 20)
}

/// `[serve]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ServePlan {
    /// The HTTP address.
    pub http: Option<SocketAddr>,
    /// The PostgreSQL address.
    pub pg: Option<SocketAddr>,
    /// Tokens and the access each grants.
    pub tokens: Vec<(String, Access)>,
    /// Per-query limits.
    pub limits: QueryLimits,
    /// Live tables are snapshotted at most this often.
    pub live_refresh: Duration,
}

impl ServePlan {
    /// What serves a pipeline without `[serve]` whose HTTP sources listen on their own
    /// addresses: those listeners only (no SQL, no tokens: loopback addresses only).
    pub fn push_only() -> ServePlan {
        ServePlan { http: None, pg: None, tokens: Vec::new(), limits: QueryLimits::default(), live_refresh: Duration::from_millis(100) }
    }
}

impl ServeSection {
    /// Checks the section; problems name their field under `serve`.
    pub fn plan(&self, p: &mut Vec<ConfigProblem>) -> Option<ServePlan> {
        let before = p.len();
        let addr = |field: &str, v: &Option<String>, p: &mut Vec<ConfigProblem>| -> Option<SocketAddr> {
            let v = v.as_ref()?;
            match v.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.push(problem(field, format!("`{v}` is not an address: write HOST:PORT with an IP, e.g. \"127.0.0.1:8080\"")));
                    None
                }
            }
        };
        let http = addr("serve.http", &self.http, p);
        let pg = addr("serve.pg", &self.pg, p);
        if self.http.is_none() && self.pg.is_none() {
            p.push(problem("serve", "serves nothing: set http = \"127.0.0.1:8080\" and/or pg = \"127.0.0.1:5433\""));
        }
        if let (Some(h), Some(g)) = (http, pg)
            && h == g
            && h.port() != 0
        {
            p.push(problem("serve.pg", format!("the same address as serve.http ({h})")));
        }
        if self.tokens.is_empty() {
            // Without tokens anyone who can connect sees every tenant: only this machine may.
            for (field, a) in [("serve.http", http), ("serve.pg", pg)] {
                if let Some(a) = a.filter(|a| !a.ip().is_loopback()) {
                    p.push(problem(
                        field,
                        format!("{a} is not a loopback address, and no [[serve.tokens]] are set: anyone could read every tenant; add tokens or bind 127.0.0.1"),
                    ));
                }
            }
        }
        let mut seen = HashSet::new();
        let mut tokens = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("serve.tokens[{i}]");
            if t.token.len() < 8 {
                p.push(problem(&format!("{at}.token"), "too short: use at least 8 characters"));
            } else if !seen.insert(t.token.as_str()) {
                p.push(problem(&format!("{at}.token"), "the same token as an earlier entry"));
            }
            let access = match t.tenant.trim() {
                "" => {
                    p.push(problem(&format!("{at}.tenant"), "must name a tenant, or be \"*\" for all"));
                    continue;
                }
                "*" => Access::All,
                name => Access::Tenant(Arc::from(name)),
            };
            tokens.push((t.token.clone(), access));
        }
        if self.query_timeout.millis() == 0 {
            p.push(problem("serve.query_timeout", "must be greater than 0"));
        }
        if self.query_memory.0 < 1 << 20 {
            p.push(problem("serve.query_memory", "must be at least 1MiB"));
        }
        (p.len() == before).then(|| ServePlan {
            http,
            pg,
            tokens,
            limits: QueryLimits { timeout: Duration::from_millis(self.query_timeout.millis()), memory: self.query_memory.0 as usize },
            live_refresh: Duration::from_millis(self.live_refresh.millis()),
        })
    }
}

fn problem(field: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem { field: field.to_string(), message: message.into() }
}

/// The live tables a pipeline serves, besides its Parquet tables: `active_alerts`,
/// `open_incidents`, `active_storms` with the alert chain, `<aggregate>_latest` per aggregate.
pub fn live_table_names(aggregates: &[&str], alerts: bool) -> Vec<String> {
    let mut v: Vec<String> = aggregates.iter().map(|a| format!("{a}_latest")).collect();
    if alerts {
        v.extend([ACTIVE_ALERTS, OPEN_INCIDENTS, ACTIVE_STORMS].map(String::from));
    }
    v
}

/// The live table of alerts that are firing now.
pub const ACTIVE_ALERTS: &str = "active_alerts";
/// The live table of incidents still open.
pub const OPEN_INCIDENTS: &str = "open_incidents";
/// The live table of storms still open.
pub const ACTIVE_STORMS: &str = "active_storms";
