//! What to serve and to whom: the listen addresses, the tokens, the health report, and the
//! errors of starting a server.

use std::net::SocketAddr;

use alertflow_queries::Access;

/// The `[serve]` section, resolved: where to listen and who may ask.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    /// Where HTTP listens (`[serve] http`); none: no HTTP.
    pub http: Option<SocketAddr>,
    /// Where the PostgreSQL wire protocol listens (`[serve] pg`); none: no pgwire.
    pub pg: Option<SocketAddr>,
    /// The accepted tokens (`[serve] tokens`). None: every caller sees everything, which is
    /// only allowed on loopback addresses.
    pub tokens: Vec<Token>,
    /// Push ingest (the engine's `type = "http"` sources), if any: on the HTTP port, but for
    /// the routes that `push_listeners` serve.
    pub push: Option<crate::PushHandle>,
    /// The notify stage's silences and incident actions (the HTTP port serves them).
    pub notify: Option<crate::NotifyHandle>,
    /// Push sources on listeners of their own (`[[source]] listen`).
    pub push_listeners: Vec<crate::push::PushListener>,
}

/// A secret a caller presents (`Authorization: Bearer <token>` over HTTP, the password over
/// pgwire) and the rows it opens.
#[derive(Clone)]
pub struct Token {
    /// The secret itself.
    pub token: String,
    /// What its bearer may read.
    pub access: Access,
}

impl std::fmt::Debug for Token {
    // Never print the secret (configs end up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("token", &"<redacted>").field("access", &self.access).finish()
    }
}

/// The engine's state as `GET /health` reports it (JSON).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Health {
    /// The pipeline is running (not starting, not stopped).
    pub running: bool,
    /// The event-time frontier every live table has been read up to (ms since the epoch), if
    /// the pipeline has one yet.
    pub frontier_ms: Option<i64>,
    /// Seconds since the engine started.
    pub uptime_secs: u64,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound (the address is in use, not local, not permitted).
    #[error("cannot listen on {addr} ({field}): {source}")]
    Bind {
        /// The field naming the address (`[serve] http`, say).
        field: String,
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// A non-loopback address with no tokens would hand every tenant's rows to anyone who can
    /// reach it.
    #[error(
        "{field} = {addr} is reachable from other machines but no [serve] tokens are configured: \
         anyone could read every tenant's rows (or push into any tenant); add tokens or listen on a loopback address (127.0.0.1)"
    )]
    Unauthenticated {
        /// The field naming the address (`[serve] http`, say).
        field: String,
        /// The address.
        addr: SocketAddr,
    },
    /// A token is unusable (empty, or given twice).
    #[error("[serve] tokens: {0}")]
    BadToken(String),
}

impl ServeConfig {
    /// Checks what can be checked before binding anything.
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.tokens.is_empty() {
            for (field, addr) in self.listeners() {
                if !addr.ip().is_loopback() {
                    return Err(ServeError::Unauthenticated { field, addr });
                }
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.is_empty() {
                return Err(ServeError::BadToken(format!("token {} is empty", i + 1)));
            }
            if self.tokens[..i].iter().any(|o| o.token == t.token) {
                return Err(ServeError::BadToken(format!("token {} is given twice (each caller needs its own)", i + 1)));
            }
        }
        Ok(())
    }

    /// The configured listeners with the name of their field.
    pub(crate) fn listeners(&self) -> impl Iterator<Item = (String, SocketAddr)> + '_ {
        let serve = self.http.map(|a| ("[serve] http".to_string(), a)).into_iter().chain(self.pg.map(|a| ("[serve] pg".to_string(), a)));
        serve.chain(self.push_listeners.iter().map(|l| (l.field.clone(), l.addr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_without_tokens_is_fine_elsewhere_is_refused() {
        let local = ServeConfig { http: Some("127.0.0.1:0".parse().unwrap()), pg: Some("[::1]:0".parse().unwrap()), ..Default::default() };
        assert!(local.validate().is_ok());
        let open = ServeConfig { pg: Some("0.0.0.0:5432".parse().unwrap()), ..local.clone() };
        let e = open.validate().unwrap_err().to_string();
        assert!(e.contains("[serve] pg = 0.0.0.0:5432") && e.contains("tokens"), "{e}");
        let with_token = ServeConfig { tokens: vec![Token { token: "s3cret".into(), access: Access::All }], ..open };
        assert!(with_token.validate().is_ok());
    }

    #[test]
    fn a_push_listener_off_loopback_needs_tokens_and_is_named_by_its_source() {
        let listener = |addr: &str| crate::push::PushListener {
            addr: addr.parse().unwrap(),
            routes: crate::push::PushRoutes { alerts: false, samples: true },
            field: "[[source]] `rw` listen".into(),
        };
        let open = ServeConfig { push_listeners: vec![listener("0.0.0.0:9093")], ..Default::default() };
        let e = open.validate().unwrap_err().to_string();
        assert!(e.starts_with("[[source]] `rw` listen = 0.0.0.0:9093 is reachable") && e.contains("push into any tenant"), "{e}");
        assert!(ServeConfig { push_listeners: vec![listener("127.0.0.1:9093")], ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn empty_and_duplicate_tokens_are_refused() {
        let t = |s: &str| Token { token: s.into(), access: Access::All };
        let cfg = ServeConfig { tokens: vec![t("a"), t("")], ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("token 2 is empty"));
        let cfg = ServeConfig { tokens: vec![t("a"), t("a")], ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("twice"));
        assert!(!format!("{:?}", t("hunter2")).contains("hunter2"));
    }
}
