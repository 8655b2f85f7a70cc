//! The notification routes, on the HTTP port when the pipeline notifies:
//!
//! - `GET /silences` (also `/api/v2/silences`, so `amtool` and Alertmanager's UI clients
//!   work): the silences, in Alertmanager's v2 form, with their state at the notifier's
//!   current event time.
//! - `POST /silences` (also `/api/v2/silences`): Alertmanager's v2 `postableSilence`
//!   (`matchers` of `{name, value, isRegex, isEqual}`, `startsAt`, `endsAt`, `createdBy`,
//!   `comment`; an `id` replaces that silence); answers `{"silenceID": …}` once the silence has
//!   entered the dataflow.
//! - `DELETE /silences/{id}` (also `/api/v2/silence/{id}`): expires it.
//! - `POST /incidents/{id}/ack` and `POST /incidents/{id}/resolve` (body optional:
//!   `{"by": "…"}`): an acknowledged incident escalates no further; a resolved one has its
//!   firing alerts reported resolved.
//!
//! They change what every tenant is told, so they need an operator token (one bound to no
//! tenant) when tokens are configured.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::http::HttpState;

/// An answer: an HTTP status and a JSON body.
#[derive(Debug, Clone)]
pub struct ApiReply {
    /// The status.
    pub status: u16,
    /// The body.
    pub body: serde_json::Value,
}

impl ApiReply {
    /// 200 with `body`.
    pub fn ok(body: serde_json::Value) -> ApiReply {
        ApiReply { status: 200, body }
    }
    /// An error: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> ApiReply {
        ApiReply { status, body: serde_json::json!({ "error": message.into() }) }
    }
}

/// The receiving end: the engine's notify stage.
#[async_trait]
pub trait NotifyApi: Send + Sync + 'static {
    /// `GET /silences`.
    fn silences(&self) -> ApiReply;
    /// `POST /silences`.
    async fn add_silence(&self, body: Bytes) -> ApiReply;
    /// `DELETE /silences/{id}`.
    async fn expire_silence(&self, id: String) -> ApiReply;
    /// `POST /incidents/{id}/ack` (`resolve` false) or `/resolve`.
    async fn incident(&self, id: String, resolve: bool, body: Bytes) -> ApiReply;
}

/// A [`NotifyApi`] in a [`crate::ServeConfig`].
#[derive(Clone)]
pub struct NotifyHandle(pub Arc<dyn NotifyApi>);

impl std::fmt::Debug for NotifyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotifyHandle")
    }
}

/// The routes, added to a router.
pub(crate) fn routes(router: Router<Arc<HttpState>>) -> Router<Arc<HttpState>> {
    router
        .route("/silences", get(list).post(add))
        .route("/api/v2/silences", get(list).post(add))
        .route("/silences/{id}", delete(expire))
        .route("/api/v2/silence/{id}", delete(expire))
        .route("/incidents/{id}/ack", post(ack))
        .route("/incidents/{id}/resolve", post(resolve))
}

fn answer(r: ApiReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], r.body.to_string()).into_response()
}

/// The handle, if the caller may use it.
fn allowed(s: &HttpState, headers: &HeaderMap) -> Result<Arc<dyn NotifyApi>, ApiReply> {
    let Some(api) = s.notify.as_ref() else {
        return Err(ApiReply::error(404, "this pipeline sends no notifications: add [notify]"));
    };
    match s.tokens.check_bearer(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        None => Err(ApiReply::error(401, "a valid token is required: send `Authorization: Bearer <token>`")),
        Some(a) if a.tenant().is_some() => {
            Err(ApiReply::error(403, "silences and incident actions need an operator token (one bound to no tenant)"))
        }
        Some(_) => Ok(api.0.clone()),
    }
}

async fn list(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    match allowed(&s, &headers) {
        Ok(api) => answer(api.silences()),
        Err(r) => answer(r),
    }
}

async fn add(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    match allowed(&s, &headers) {
        Ok(api) => answer(api.add_silence(body).await),
        Err(r) => answer(r),
    }
}

async fn expire(State(s): State<Arc<HttpState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match allowed(&s, &headers) {
        Ok(api) => answer(api.expire_silence(id).await),
        Err(r) => answer(r),
    }
}

async fn ack(State(s): State<Arc<HttpState>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    match allowed(&s, &headers) {
        Ok(api) => answer(api.incident(id, false, body).await),
        Err(r) => answer(r),
    }
}

async fn resolve(State(s): State<Arc<HttpState>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    match allowed(&s, &headers) {
        Ok(api) => answer(api.incident(id, true, body).await),
        Err(r) => answer(r),
    }
}
