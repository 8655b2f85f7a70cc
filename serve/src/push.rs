//! Push ingest on the HTTP port: the routes a Prometheus server talks to when alertflow is its
//! Alertmanager and its remote-write receiver. This module owns the HTTP side (routes, who is
//! pushing and for which tenant, status codes); what a body becomes is the engine's, behind
//! [`Push`].
//!
//! - `POST /api/v2/alerts`: the Alertmanager v2 API, a JSON array of alerts. 200 when every
//!   alert was taken; 400 with the reasons when some were not (the others are taken, as
//!   Alertmanager does).
//! - `GET /api/v2/status`: enough of Alertmanager's status for tools that probe it.
//! - `POST /api/v1/write`: Prometheus remote_write 1.0 (snappy-compressed protobuf). 204 when
//!   every sample was taken; 400 when the body is unreadable or some series were unusable
//!   (Prometheus does not retry a 400, and the usable ones are already taken); 415 for a
//!   remote-write 2.0 body.
//! - Back-pressure and shutdown: 503 with `Retry-After` (Prometheus retries a 5xx), never an
//!   unbounded queue.
//!
//! **Tenant**: the `X-Scope-OrgID` header (as Cortex, Mimir and Loki read it), else
//! `default`. With tokens configured a push needs `Authorization: Bearer <token>`; a tenant's
//! token pushes only into its own tenant (a different `X-Scope-OrgID` is refused with 403).

use std::sync::Arc;

use alertflow_queries::Access;
use async_trait::async_trait;
use axum::Router;
pub use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::http::HttpState;

/// The largest push body read (a remote-write request is snappy-compressed; Prometheus sends
/// a few hundred KiB at most).
pub const MAX_PUSH_BODY: usize = 32 << 20;

/// The tenant of a push that names none (alertflow's default tenant).
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant name taken from `X-Scope-OrgID`.
pub const MAX_TENANT_BYTES: usize = 150;

/// What became of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushReply {
    /// Everything was taken into the dataflow.
    Taken,
    /// The body, or some of what it held, was unusable: the message says what and where.
    /// Whatever was usable has been taken.
    Rejected(String),
    /// Not taken now (the queue is full, or the pipeline is stopping): try again later.
    Busy {
        /// Why.
        message: String,
        /// Seconds to wait before retrying.
        retry_after: u32,
    },
}

/// The receiving end of push ingest: the engine's HTTP sources.
#[async_trait]
pub trait Push: Send + Sync + 'static {
    /// Whether a source takes pushed alerts (`POST /api/v2/alerts`).
    fn takes_alerts(&self) -> bool;
    /// Whether a source takes remote-written samples (`POST /api/v1/write`).
    fn takes_samples(&self) -> bool;
    /// An Alertmanager v2 `POST /api/v2/alerts` body for `tenant`. Returns once what was
    /// usable has entered the dataflow (or was refused).
    async fn alerts(&self, tenant: Arc<str>, body: Bytes) -> PushReply;
    /// A remote_write 1.0 body (snappy-compressed protobuf) for `tenant`.
    async fn write(&self, tenant: Arc<str>, body: Bytes) -> PushReply;
}

/// A [`Push`] receiver in a [`crate::ServeConfig`].
#[derive(Clone)]
pub struct PushHandle(pub Arc<dyn Push>);

impl std::fmt::Debug for PushHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHandle").field("alerts", &self.0.takes_alerts()).field("samples", &self.0.takes_samples()).finish()
    }
}

/// Which push routes a listener serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushRoutes {
    /// `POST /api/v2/alerts` and `GET /api/v2/status`.
    pub alerts: bool,
    /// `POST /api/v1/write`.
    pub samples: bool,
}

/// A listener of its own for push sources (`[[source]] listen`): it serves their routes (and
/// `/health`), and the HTTP port no longer does.
#[derive(Debug, Clone)]
pub struct PushListener {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// What it takes.
    pub routes: PushRoutes,
    /// The field naming the address, for errors (``[[source]] `rw` listen``).
    pub field: String,
}

/// The push routes the HTTP port serves: those of sources with no listener of their own.
pub(crate) fn on_http(push: &PushHandle, listeners: &[PushListener]) -> PushRoutes {
    PushRoutes {
        alerts: push.0.takes_alerts() && !listeners.iter().any(|l| l.routes.alerts),
        samples: push.0.takes_samples() && !listeners.iter().any(|l| l.routes.samples),
    }
}

/// The push routes `which`, added to a router.
pub(crate) fn routes(router: Router<Arc<HttpState>>, which: PushRoutes) -> Router<Arc<HttpState>> {
    let mut r = router;
    if which.alerts {
        r = r.route("/api/v2/alerts", post(alerts)).route("/api/v2/status", get(status));
    }
    if which.samples {
        r = r.route("/api/v1/write", post(write));
    }
    r.layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
}

async fn alerts(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (Some(push), tenant) = (s.push.as_ref(), tenant(&s, &headers)) else { return not_served() };
    let tenant = match tenant {
        Ok(t) => t,
        Err(r) => return *r,
    };
    reply(push.0.alerts(tenant, body).await, StatusCode::OK)
}

async fn write(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (Some(push), tenant) = (s.push.as_ref(), tenant(&s, &headers)) else { return not_served() };
    let tenant = match tenant {
        Ok(t) => t,
        Err(r) => return *r,
    };
    // Remote write 1.0 is snappy block format; 2.0 says so in its content type.
    if let Some(enc) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok())
        && !enc.eq_ignore_ascii_case("snappy")
    {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Content-Encoding `{enc}` is not supported: remote_write bodies are snappy-compressed"),
        );
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
        && ct.contains("io.prometheus.write.v2")
    {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "remote_write 2.0 is not supported: send remote_write 1.0 (protobuf_message: prometheus.WriteRequest)".into(),
        );
    }
    reply(push.0.write(tenant, body).await, StatusCode::NO_CONTENT)
}

/// Enough of Alertmanager's `GET /api/v2/status` for tools that check they talk to one.
async fn status(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if let Err(r) = tenant(&s, &headers) {
        return *r;
    }
    let h = (s.health)();
    let body = serde_json::json!({
        "cluster": { "status": "disabled", "peers": [] },
        "versionInfo": { "version": env!("CARGO_PKG_VERSION"), "branch": "alertflow", "revision": "", "buildUser": "", "buildDate": "", "goVersion": "" },
        "config": { "original": "" },
        "uptime": format!("{}s", h.uptime_secs),
    });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The tenant a push is for: see the module documentation.
fn tenant(s: &HttpState, headers: &HeaderMap) -> Result<Arc<str>, Box<Response>> {
    let access = s.tokens.check_bearer(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())).ok_or_else(|| {
        Box::new(text(
            StatusCode::UNAUTHORIZED,
            "a push needs `Authorization: Bearer <token>` with a configured [[serve.tokens]] token".into(),
        ))
    })?;
    let asked = match headers.get("x-scope-orgid") {
        None => None,
        Some(v) => {
            let t = v.to_str().ok().map(str::trim).filter(|t| valid_tenant(t));
            Some(t.ok_or_else(|| {
                Box::new(text(
                    StatusCode::BAD_REQUEST,
                    format!("X-Scope-OrgID must be 1 to {MAX_TENANT_BYTES} visible ASCII characters without `|`"),
                ))
            })?)
        }
    };
    match (access, asked) {
        (Access::All, Some(t)) => Ok(Arc::from(t)),
        (Access::All, None) => Ok(Arc::from(DEFAULT_TENANT)),
        (Access::Tenant(own), None) => Ok(own),
        (Access::Tenant(own), Some(t)) if *own == *t => Ok(own),
        (Access::Tenant(own), Some(t)) => {
            Err(Box::new(text(StatusCode::FORBIDDEN, format!("this token pushes for tenant `{own}` only, not for X-Scope-OrgID `{t}`"))))
        }
    }
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TENANT_BYTES && t.bytes().all(|b| b.is_ascii_graphic() && b != b'|')
}

fn reply(r: PushReply, ok: StatusCode) -> Response {
    match r {
        PushReply::Taken => ok.into_response(),
        PushReply::Rejected(m) => text(StatusCode::BAD_REQUEST, m),
        PushReply::Busy { message, retry_after } => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, message);
            r.headers_mut().insert(header::RETRY_AFTER, retry_after.into());
            r
        }
    }
}

fn not_served() -> Response {
    text(StatusCode::NOT_FOUND, "no HTTP source takes this push".into())
}

fn text(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message + "\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_from_the_header_are_checked() {
        assert!(valid_tenant("acme"));
        assert!(valid_tenant("team-1_a.b"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("a|b"), "Cortex's multi-tenant separator");
        assert!(!valid_tenant("a b"));
        assert!(!valid_tenant(&"x".repeat(MAX_TENANT_BYTES + 1)));
    }
}
