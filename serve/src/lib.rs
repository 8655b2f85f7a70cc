//! Serving a [`Catalog`]: HTTP (SQL in JSON, CSV or Arrow; the tables; Prometheus metrics;
//! health) and the PostgreSQL wire protocol, both on the engine's tokio runtime.
//!
//! [`Server::start`] binds every listener before serving anything, so a bad address fails
//! the start with an error naming it. Every query runs through the catalog's limits (time,
//! memory) and read-only rules, for the caller's [`Access`](alertflow_queries::Access):
//! with tokens configured the token decides (a tenant's token sees only that tenant's rows,
//! whatever its SQL), without tokens everyone sees everything and only loopback addresses
//! are allowed.

mod auth;
pub mod client;
pub mod config;
pub mod errors;
pub mod http;
mod pg;
pub mod push;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alertflow_queries::{Catalog, Metrics};
use tokio::sync::watch;

pub use config::{Health, ServeConfig, ServeError, Token};
pub use push::{Push, PushHandle, PushReply};

/// The engine's health report, read at each `GET /health`.
pub type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;

/// How long `shutdown` lets HTTP requests in flight finish before dropping them.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// A running server. Dropping it without [`Server::shutdown`] leaves it serving until the
/// runtime ends.
#[derive(Debug)]
pub struct Server {
    http: Option<SocketAddr>,
    pg: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    /// One message per listener task when it has stopped accepting (its listener dropped).
    stopped: std::sync::mpsc::Receiver<()>,
    tasks: usize,
}

impl Server {
    /// Binds every listener first (an address in use, or a non-loopback address with no
    /// tokens, fails here with a [`ServeError`] naming the address and its `[serve]` field),
    /// then serves on `rt`. Registers the query metrics into `metrics`.
    pub fn start(
        cfg: &ServeConfig,
        catalog: Catalog,
        metrics: Arc<Metrics>,
        health: HealthFn,
        rt: &tokio::runtime::Handle,
    ) -> Result<Server, ServeError> {
        cfg.validate()?;
        let bind = |field: &'static str, addr: SocketAddr| -> Result<std::net::TcpListener, ServeError> {
            let l = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { field, addr, source })?;
            l.set_nonblocking(true).map_err(|source| ServeError::Bind { field, addr, source })?;
            Ok(l)
        };
        let http_listener = cfg.http.map(|a| bind("http", a)).transpose()?;
        let pg_listener = cfg.pg.map(|a| bind("pg", a)).transpose()?;
        let local = |l: &std::net::TcpListener, field: &'static str, addr: SocketAddr| {
            l.local_addr().map_err(|source| ServeError::Bind { field, addr, source })
        };
        let http_addr = match (&http_listener, cfg.http) {
            (Some(l), Some(a)) => Some(local(l, "http", a)?),
            _ => None,
        };
        let pg_addr = match (&pg_listener, cfg.pg) {
            (Some(l), Some(a)) => Some(local(l, "pg", a)?),
            _ => None,
        };

        let tokens = auth::Tokens::new(cfg.tokens.clone());
        let (stop, _) = watch::channel(false);
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        let mut tasks = 0;
        // Tokio listeners need the runtime's reactor.
        let _enter = rt.enter();
        if let (Some(l), Some(addr)) = (http_listener, http_addr) {
            let listener = tokio::net::TcpListener::from_std(l).map_err(|source| ServeError::Bind { field: "http", addr, source })?;
            let state = Arc::new(http::HttpState {
                catalog: catalog.clone(),
                tokens: tokens.clone(),
                stats: stats::QueryStats::register(&metrics, "http"),
                metrics: metrics.clone(),
                health,
                push: cfg.push.clone(),
            });
            let app = http::router(state);
            let (mut graceful, mut hard) = (stop.subscribe(), stop.subscribe());
            let done = stopped_tx.clone();
            rt.spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = graceful.wait_for(|s| *s).await;
                });
                tokio::select! {
                    r = serve => if let Err(e) = r { tracing::warn!("HTTP server on {addr} stopped: {e}") },
                    // Requests still running after the grace period are dropped.
                    _ = async { let _ = hard.wait_for(|s| *s).await; tokio::time::sleep(HTTP_GRACE).await } => {}
                }
                let _ = done.send(());
            });
            tasks += 1;
        }
        if let (Some(l), Some(addr)) = (pg_listener, pg_addr) {
            let listener = tokio::net::TcpListener::from_std(l).map_err(|source| ServeError::Bind { field: "pg", addr, source })?;
            let shared = Arc::new(pg::PgShared::new(catalog, tokens, stats::QueryStats::register(&metrics, "pg")));
            let stop_rx = stop.subscribe();
            let done = stopped_tx.clone();
            rt.spawn(async move {
                serve_pg(listener, shared, stop_rx).await;
                let _ = done.send(());
            });
            tasks += 1;
        }
        Ok(Server { http: http_addr, pg: pg_addr, stop, stopped, tasks })
    }

    /// Where HTTP listens (the bound port when configured with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Where the PostgreSQL protocol listens.
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg
    }

    /// Stops accepting connections and ends the open ones: PostgreSQL connections at once,
    /// HTTP requests in flight after a short grace period. Called outside the runtime, waits
    /// (a few seconds at most) until the listeners are closed; inside it, only signals (a
    /// blocking wait there could stall the tasks it waits for).
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let until = std::time::Instant::now() + HTTP_GRACE + Duration::from_secs(3);
        for _ in 0..self.tasks {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if self.stopped.recv_timeout(left).is_err() {
                tracing::warn!("the query server did not stop in time");
                return;
            }
        }
    }
}

/// Accepts PostgreSQL connections until told to stop; each connection also ends then.
async fn serve_pg(listener: tokio::net::TcpListener, shared: Arc<pg::PgShared>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let handlers = pg::PgHandlers::new(shared.clone());
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        r = datafusion_postgres::pgwire::tokio::process_socket(socket, None, handlers) => {
                            if let Err(e) = r {
                                tracing::debug!("PostgreSQL connection from {peer} ended: {e}");
                            }
                        }
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors, typically: wait a little rather than spin.
                tracing::warn!("cannot accept a PostgreSQL connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
