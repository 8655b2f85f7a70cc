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
pub mod notify_api;
mod pg;
pub mod push;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alertflow_queries::{Catalog, Metrics};
use tokio::sync::watch;

pub use config::{Health, ServeConfig, ServeError, Token};
pub use notify_api::{ApiReply, NotifyApi, NotifyHandle};
pub use push::{Push, PushHandle, PushListener, PushReply, PushRoutes};

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
    push: Vec<SocketAddr>,
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
        let bind = |field: &str, addr: SocketAddr| -> Result<(std::net::TcpListener, SocketAddr), ServeError> {
            let err = |source| ServeError::Bind { field: field.to_string(), addr, source };
            let l = std::net::TcpListener::bind(addr).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            let local = l.local_addr().map_err(err)?;
            Ok((l, local))
        };
        let http = cfg.http.map(|a| bind("[serve] http", a)).transpose()?;
        let pg = cfg.pg.map(|a| bind("[serve] pg", a)).transpose()?;
        let push_listeners = cfg.push_listeners.iter().map(|l| bind(&l.field, l.addr).map(|b| (b, l))).collect::<Result<Vec<_>, _>>()?;
        let http_addr = http.as_ref().map(|(_, a)| *a);
        let pg_addr = pg.as_ref().map(|(_, a)| *a);

        let tokens = auth::Tokens::new(cfg.tokens.clone());
        let (stop, _) = watch::channel(false);
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        let mut tasks = 0;
        // Tokio listeners need the runtime's reactor.
        let _enter = rt.enter();
        let http_stats = (http.is_some() || !push_listeners.is_empty()).then(|| stats::QueryStats::register(&metrics, "http"));
        let state = || {
            Arc::new(http::HttpState {
                catalog: catalog.clone(),
                tokens: tokens.clone(),
                stats: http_stats.clone().expect("registered when some HTTP listener is"),
                metrics: metrics.clone(),
                health: health.clone(),
                push: cfg.push.clone(),
                notify: cfg.notify.clone(),
            })
        };
        let mut spawn_http = |l: std::net::TcpListener, addr: SocketAddr, field: &str, app: axum::Router| -> Result<(), ServeError> {
            let listener =
                tokio::net::TcpListener::from_std(l).map_err(|source| ServeError::Bind { field: field.to_string(), addr, source })?;
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
            Ok(())
        };
        if let Some((l, addr)) = http {
            let routes = cfg.push.as_ref().map(|p| push::on_http(p, &cfg.push_listeners)).unwrap_or_default();
            spawn_http(l, addr, "[serve] http", http::router(state(), routes))?;
        }
        let mut push_addrs = Vec::new();
        for ((l, addr), p) in push_listeners {
            spawn_http(l, addr, &p.field, http::push_router(state(), p.routes))?;
            push_addrs.push(addr);
        }
        if let Some((l, addr)) = pg {
            let listener =
                tokio::net::TcpListener::from_std(l).map_err(|source| ServeError::Bind { field: "[serve] pg".into(), addr, source })?;
            let shared = Arc::new(pg::PgShared::new(catalog, tokens, stats::QueryStats::register(&metrics, "pg")));
            let stop_rx = stop.subscribe();
            let done = stopped_tx.clone();
            rt.spawn(async move {
                serve_pg(listener, shared, stop_rx).await;
                let _ = done.send(());
            });
            tasks += 1;
        }
        Ok(Server { http: http_addr, pg: pg_addr, push: push_addrs, stop, stopped, tasks })
    }

    /// Where the push listeners listen, in the order of [`ServeConfig::push_listeners`].
    pub fn push_addrs(&self) -> &[SocketAddr] {
        &self.push
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
