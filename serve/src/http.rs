//! The HTTP interface (axum, on the shared runtime).
//!
//! - `POST /sql`: the raw body is the query, whatever its content type. The answer's format
//!   is `?format=json|csv|arrow`, else the first of `application/json`, `text/csv`,
//!   `application/vnd.apache.arrow.stream` named by `Accept`, else JSON. JSON is an array of
//!   row objects (timestamps as ISO 8601 text), CSV has a header line, Arrow is an IPC stream.
//!   An error is `{"error": "...", "sqlstate": "....."}` with the status of
//!   [`crate::errors`]: 400 for a query that is malformed, names an unknown table or column,
//!   or would write (DDL, DML, COPY); 503 when it ran past the time limit (the server is fine,
//!   the query was too expensive for it: retrying a cheaper one works); 507 when it needed
//!   more memory than its limit; 500 otherwise. 401 without a valid token.
//! - `GET /tables`: `[{name, kind, columns: [{name, type, nullable}]}]`.
//! - `GET /metrics`: the registry in the Prometheus text format.
//! - `GET /health`: the engine's [`Health`] as JSON. Open to anyone (load balancers and
//!   liveness probes carry no token); it says nothing about the rows.
//!
//! With tokens configured every route but `/health` needs `Authorization: Bearer <token>`.

use std::sync::Arc;
use std::time::Instant;

use alertflow_queries::{Access, Catalog, Metrics, OutputFormat, QueryError, TableKind, render};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::HealthFn;
use crate::auth::Tokens;
use crate::errors;
use crate::stats::QueryStats;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// The media type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// What every request handler shares.
pub(crate) struct HttpState {
    pub(crate) catalog: Catalog,
    pub(crate) tokens: Tokens,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: HealthFn,
    pub(crate) stats: QueryStats,
    pub(crate) push: Option<crate::PushHandle>,
    pub(crate) notify: Option<crate::NotifyHandle>,
}

/// The routes, with the push routes `push` (those no listener of their own serves).
pub(crate) fn router(state: Arc<HttpState>, push: crate::push::PushRoutes) -> Router {
    let routes = crate::push::routes(Router::new(), push);
    let routes = if state.notify.is_some() { crate::notify_api::routes(routes) } else { routes };
    routes
        .route("/sql", post(sql))
        .route("/tables", get(tables))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route: try POST /sql, GET /tables, /metrics or /health", "42000") })
        .with_state(state)
}

/// The routes of a push source's own listener: its push routes and `/health`.
pub(crate) fn push_router(state: Arc<HttpState>, push: crate::push::PushRoutes) -> Router {
    crate::push::routes(Router::new(), push)
        .route("/health", get(health))
        .fallback(|| async {
            let m =
                "no such route: this address takes pushes (POST /api/v2/alerts, GET /api/v2/status, POST /api/v1/write) and GET /health";
            (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{m}\n")).into_response()
        })
        .with_state(state)
}

/// An answer format of `POST /sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => ARROW_STREAM,
        }
    }
}

/// `?format=` wins; then the first media type of `Accept` we can produce; then JSON.
fn negotiate(query: Option<&str>, accept: Option<&str>) -> Result<Format, String> {
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("format=") {
                return match v {
                    "json" => Ok(Format::Json),
                    "csv" => Ok(Format::Csv),
                    "arrow" => Ok(Format::Arrow),
                    other => Err(format!("unknown format `{other}`: expected json, csv or arrow")),
                };
            }
        }
    }
    for media in accept.unwrap_or_default().split(',') {
        let media = media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" => return Ok(Format::Json),
            "text/csv" => return Ok(Format::Csv),
            ARROW_STREAM => return Ok(Format::Arrow),
            _ => {}
        }
    }
    Ok(Format::Json)
}

fn error(status: StatusCode, message: &str, sqlstate: &str) -> Response {
    let body = serde_json::json!({ "error": message, "sqlstate": sqlstate }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "a valid token is required: send `Authorization: Bearer <token>`", "28000");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

fn authorize(state: &HttpState, headers: &HeaderMap) -> Option<Access> {
    state.tokens.check_bearer(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
}

fn json(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn sql(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let Some(access) = authorize(&state, &headers) else { return unauthorized() };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = match negotiate(query.as_deref(), accept) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e, "22023"),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the query (the request body) is not UTF-8", "22021");
    };
    let start = Instant::now();
    // The query runs inside this request's future: a client that hangs up drops it, which
    // stops the query. DataFusion yields between batches, so the multi-thread runtime's
    // other tasks keep running meanwhile.
    let answer = match state.catalog.query(&access, text).await {
        Ok((schema, batches)) => encode(format, &schema, &batches),
        Err(e) => Err(e),
    };
    state.stats.record(answer.is_ok(), start.elapsed());
    match answer {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => {
            let code = errors::sqlstate(&e);
            tracing::debug!(sqlstate = code, "HTTP query failed: {e}");
            let status = StatusCode::from_u16(errors::http_status(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, &errors::message(&e), code)
        }
    }
}

/// The answer in `format`.
fn encode(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let out = |e: datafusion::arrow::error::ArrowError| QueryError::Output(e.to_string());
    match format {
        Format::Json => Ok(render(batches, OutputFormat::Json)?.into_bytes()),
        Format::Csv => {
            // An empty answer still has its header line.
            let empty;
            let batches = if batches.is_empty() {
                empty = [RecordBatch::new_empty(schema.clone())];
                &empty[..]
            } else {
                batches
            };
            Ok(render(batches, OutputFormat::Csv)?.into_bytes())
        }
        Format::Arrow => {
            // The batches' own schema (the plan's may differ in nullability or metadata).
            let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| schema.clone());
            let mut buf = Vec::new();
            let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).map_err(out)?;
            for b in batches {
                w.write(b).map_err(out)?;
            }
            w.finish().map_err(out)?;
            drop(w);
            Ok(buf)
        }
    }
}

#[derive(serde::Serialize)]
struct TableJson<'a> {
    name: &'a str,
    kind: TableKind,
    columns: Vec<ColumnJson>,
}

#[derive(serde::Serialize)]
struct ColumnJson {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    nullable: bool,
}

async fn tables(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if authorize(&state, &headers).is_none() {
        return unauthorized();
    }
    let list: Vec<TableJson> = state
        .catalog
        .tables()
        .map(|t| TableJson {
            name: &t.name,
            kind: t.kind,
            columns: t
                .schema
                .fields()
                .iter()
                .map(|f| ColumnJson { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
                .collect(),
        })
        .collect();
    match serde_json::to_string(&list) {
        Ok(body) => json(body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), errors::INTERNAL),
    }
}

async fn metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if authorize(&state, &headers).is_none() {
        return unauthorized();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, PROMETHEUS_TEXT)], state.metrics.render()).into_response()
}

async fn health(State(state): State<Arc<HttpState>>) -> Response {
    match serde_json::to_string(&(state.health)()) {
        Ok(body) => json(body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), errors::INTERNAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_parameter_wins_then_accept_then_json() {
        assert_eq!(negotiate(Some("format=csv"), Some(ARROW_STREAM)), Ok(Format::Csv));
        assert_eq!(negotiate(Some("x=1&format=arrow"), None), Ok(Format::Arrow));
        assert!(negotiate(Some("format=xml"), None).unwrap_err().contains("xml"));
        assert_eq!(negotiate(None, Some("text/html, text/csv;q=0.9, application/json")), Ok(Format::Csv));
        assert_eq!(negotiate(None, Some("application/vnd.apache.arrow.stream")), Ok(Format::Arrow));
        assert_eq!(negotiate(None, Some("*/*")), Ok(Format::Json));
        assert_eq!(negotiate(None, None), Ok(Format::Json));
    }
}
