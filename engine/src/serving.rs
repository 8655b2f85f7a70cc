//! `[serve]` inside `alertflow run`: the catalog (Parquet history and live tables), the
//! HTTP and PostgreSQL servers on a small tokio runtime of their own, the engine's telemetry
//! in the metrics registry, and serving on after bounded sources end, until a signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use alertflow_connectors::file::SourceStats;
use alertflow_connectors::parquet::SinkStats;
use alertflow_connectors::push::{PushIngest, PushOutcome};
use alertflow_operators::OperatorStats;
use alertflow_queries::{Catalog, Metrics};
use alertflow_serve::{Health, Push, PushHandle, PushListener, PushReply, PushRoutes, ServeConfig, Server, Token};

use crate::live::Live;
use crate::run::RunError;
use crate::serve_config::ServePlan;

/// The counters of a run the metrics read (shared with the workers).
pub(crate) struct Telemetry<'a> {
    /// Source names, in stream order (file sources, then Kafka sources).
    pub source_names: Vec<String>,
    pub sources: &'a Arc<Vec<Arc<SourceStats>>>,
    /// Table names, in sink order.
    pub table_names: Vec<String>,
    pub sinks: &'a Arc<Vec<Arc<SinkStats>>>,
    /// Stateful operators: (kind, name, counters).
    pub operators: Vec<(&'static str, String, Arc<OperatorStats>)>,
    pub watermarks: &'a Arc<Vec<AtomicU64>>,
    /// The run's checkpoints, when it takes any.
    pub checkpoints: Option<Arc<alertflow_checkpoint::Checkpoints>>,
}

/// Running servers.
pub(crate) struct Serving {
    runtime: tokio::runtime::Runtime,
    server: Server,
    running: Arc<AtomicBool>,
    /// What the servers answer from.
    pub catalog: Catalog,
}

impl Serving {
    /// Builds the catalog over the output folder (its schema files written) and the live
    /// tables, registers the telemetry, and binds every listener: an address in use fails
    /// here, before any worker starts.
    pub fn start(
        plan: &ServePlan,
        output: &std::path::Path,
        live: &Live,
        t: Telemetry<'_>,
        ingest: Option<Arc<PushIngest>>,
        notify: Option<alertflow_serve::NotifyHandle>,
    ) -> Result<Serving, RunError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("alertflow-serve")
            .enable_all()
            .build()
            .map_err(|e| RunError::Serve(format!("cannot start the serving runtime: {e}")))?;
        let catalog = runtime
            .block_on(Catalog::open(Some(output), &live.tables, plan.limits))
            .map_err(|e| RunError::Serve(format!("cannot open the catalog over {}: {e}", output.display())))?;
        let metrics = Arc::new(Metrics::new());
        register(&metrics, live, &t);
        let running = Arc::new(AtomicBool::new(true));
        let started = Instant::now();
        let health = {
            let running = running.clone();
            let watermarks = t.watermarks.clone();
            Arc::new(move || {
                let w = watermarks.iter().map(|a| a.load(Ordering::Relaxed)).min().unwrap_or(0);
                Health {
                    running: running.load(Ordering::Relaxed),
                    frontier_ms: (w != u64::MAX).then_some(w as i64),
                    uptime_secs: started.elapsed().as_secs(),
                }
            })
        };
        let push_listeners = ingest.as_deref().map(push_listeners).unwrap_or_default();
        let cfg = ServeConfig {
            http: plan.http,
            pg: plan.pg,
            tokens: plan.tokens.iter().map(|(token, access)| Token { token: token.clone(), access: access.clone() }).collect(),
            push: ingest.map(|i| PushHandle(Arc::new(Ingest(i)))),
            push_listeners,
            notify,
        };
        let server = Server::start(&cfg, catalog.clone(), metrics, health, runtime.handle()).map_err(|e| RunError::Serve(e.to_string()))?;
        for (l, a) in cfg.push_listeners.iter().zip(server.push_addrs()) {
            let mut routes = Vec::new();
            if l.routes.alerts {
                routes.push("POST /api/v2/alerts");
            }
            if l.routes.samples {
                routes.push("POST /api/v1/write");
            }
            tracing::info!("receiving pushes at http://{a} ({})", routes.join(", "));
        }
        if let Some(a) = server.http_addr() {
            tracing::info!("serving SQL over HTTP at http://{a} (POST /sql, GET /tables, /metrics, /health)");
        }
        if let Some(a) = server.pg_addr() {
            tracing::info!("serving the PostgreSQL protocol at {a} (psql \"host={} port={} dbname=alertflow\")", a.ip(), a.port());
        }
        if plan.tokens.is_empty() && (plan.http.is_some() || plan.pg.is_some()) {
            tracing::warn!("no [[serve.tokens]]: any caller on this machine sees every tenant (serving binds only loopback addresses)");
        } else if plan.tokens.is_empty() && !cfg.push_listeners.is_empty() {
            tracing::warn!(
                "no [[serve.tokens]]: any caller on this machine may push for any tenant (pushes are taken on loopback addresses only)"
            );
        }
        Ok(Serving { runtime, server, running, catalog })
    }

    /// Sets `flag` at the first SIGINT or SIGTERM (the run then ends normally, or at the next
    /// checkpoint when it takes them); a second signal exits the process at once.
    pub fn on_signal(&self, flag: Arc<AtomicBool>, checkpoints: bool) {
        self.runtime.spawn(async move {
            signal().await;
            flag.store(true, Ordering::Release);
            if checkpoints {
                eprintln!("stopping at the next checkpoint (a second Ctrl-C or SIGTERM exits at once; the next run resumes from the last checkpoint)");
            } else {
                eprintln!("stopping: finishing what was received (a second Ctrl-C or SIGTERM exits at once)");
            }
            signal().await;
            if checkpoints {
                eprintln!("stopped at once: the next run resumes from the last checkpoint and replays the pushes acknowledged since");
            } else {
                eprintln!("stopped at once: pushes acknowledged but not yet written are lost");
            }
            std::process::exit(130);
        });
    }

    /// The bound HTTP and PostgreSQL addresses (a configured port 0 resolved).
    pub fn addresses(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        (self.server.http_addr(), self.server.pg_addr())
    }

    /// The pipeline has finished: keep serving its final state until SIGINT or SIGTERM (or
    /// `cancel`), then stop the servers.
    pub fn serve_until_stopped(self, cancel: Option<&Arc<AtomicBool>>) {
        self.running.store(false, Ordering::Relaxed);
        tracing::info!("the pipeline has finished; still serving its tables until Ctrl-C or SIGTERM");
        let cancel = cancel.cloned();
        self.runtime.block_on(async move {
            let poll_cancel = async {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if cancel.as_ref().is_some_and(|c| c.load(Ordering::Acquire)) {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = signal() => {}
                _ = poll_cancel => {}
            }
        });
        self.stop();
    }

    /// Stops the servers now (the run failed).
    pub fn stop(self) {
        self.server.shutdown();
        self.runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    }
}

/// The listeners of HTTP sources with a `listen` address of their own (sources on one address
/// share its listener).
fn push_listeners(ingest: &PushIngest) -> Vec<PushListener> {
    let mut out: Vec<PushListener> = Vec::new();
    let sources = [(ingest.alerts.as_ref().map(|q| &q.source), true), (ingest.metrics.as_ref().map(|q| &q.source), false)];
    for (src, alerts) in sources {
        let Some((src, addr)) = src.and_then(|s| s.listen.map(|a| (s, a))) else { continue };
        let i = match out.iter().position(|l| l.addr == addr) {
            Some(i) => i,
            None => {
                out.push(PushListener { addr, routes: PushRoutes::default(), field: format!("[[source]] `{}` listen", src.name) });
                out.len() - 1
            }
        };
        if alerts {
            out[i].routes.alerts = true;
        } else {
            out[i].routes.samples = true;
        }
    }
    out
}

/// The HTTP sources behind the serving port's push routes.
struct Ingest(Arc<PushIngest>);

#[async_trait::async_trait]
impl Push for Ingest {
    fn takes_alerts(&self) -> bool {
        self.0.alerts.is_some()
    }
    fn takes_samples(&self) -> bool {
        self.0.metrics.is_some()
    }
    async fn alerts(&self, tenant: Arc<str>, body: alertflow_serve::push::Bytes) -> PushReply {
        reply(self.0.alerts(tenant, body).await)
    }
    async fn write(&self, tenant: Arc<str>, body: alertflow_serve::push::Bytes) -> PushReply {
        reply(self.0.write(tenant, body).await)
    }
}

fn reply(o: PushOutcome) -> PushReply {
    match o {
        PushOutcome::Taken => PushReply::Taken,
        PushOutcome::Rejected(m) => PushReply::Rejected(m),
        // Full: retry soon. Stopping: a restarted engine takes it (Prometheus retries 5xx).
        PushOutcome::Refused { message, busy } => PushReply::Busy { message, retry_after: if busy { 1 } else { 5 } },
    }
}

/// Sets `flag` on the first SIGINT or SIGTERM and exits at once on the second, from a thread
/// of its own (a run without `[serve]` has no runtime to listen on).
pub(crate) fn on_signal_thread(flag: Arc<AtomicBool>, checkpoints: bool) {
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            signal().await;
            flag.store(true, Ordering::Release);
            if checkpoints {
                eprintln!(
                    "stopping at the next checkpoint (a second Ctrl-C or SIGTERM exits at once; the next run resumes from the last checkpoint)"
                );
            } else {
                eprintln!("stopping: finishing what was received (a second Ctrl-C or SIGTERM exits at once)");
            }
            signal().await;
            if checkpoints {
                eprintln!("stopped at once: the next run resumes from the last checkpoint");
            } else {
                eprintln!("stopped at once");
            }
            std::process::exit(130);
        });
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot listen for signals: {e}");
    }
}

/// SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The engine's families: per source, per table (Parquet sink and live table), dedup, and
/// the watermark. Values are read from the workers' counters when `/metrics` is rendered.
fn register(m: &Metrics, live: &Live, t: &Telemetry<'_>) {
    type Get = fn(&SourceStats) -> &AtomicU64;
    let source_families: [(&str, &str, Get); 4] = [
        ("alertflow_source_records_total", "Records read (good, bad and late).", |s| &s.records),
        ("alertflow_source_bytes_total", "Bytes read.", |s| &s.bytes),
        ("alertflow_source_dead_letters_total", "Records that could not be decoded.", |s| &s.dead_letters),
        ("alertflow_source_late_total", "Records older than their partition's watermark.", |s| &s.late),
    ];
    for (name, help, get) in source_families {
        for (i, source) in t.source_names.iter().enumerate() {
            let stats = t.sources[i].clone();
            m.counter_fn(name, help, &[("source", source)], move || get(&stats).load(Ordering::Relaxed) as f64);
        }
    }
    type SinkGet = fn(&SinkStats) -> &AtomicU64;
    let sink_families: [(&str, &str, SinkGet); 3] = [
        ("alertflow_table_rows_total", "Rows written to the table's Parquet files.", |s| &s.rows),
        ("alertflow_table_files_total", "Parquet files written.", |s| &s.files),
        ("alertflow_table_bytes_total", "Parquet bytes written.", |s| &s.bytes),
    ];
    for (name, help, get) in sink_families {
        for (i, table) in t.table_names.iter().enumerate() {
            let stats = t.sinks[i].clone();
            m.counter_fn(name, help, &[("table", table)], move || get(&stats).load(Ordering::Relaxed) as f64);
        }
    }
    for (table, stats) in &live.stats {
        let s = stats.clone();
        m.counter_fn("alertflow_live_rows_in_total", "Rows received by a live table.", &[("table", table)], move || {
            s.rows_in.load(Ordering::Relaxed) as f64
        });
    }
    for (table, stats) in &live.stats {
        let s = stats.clone();
        m.gauge_fn("alertflow_live_keys", "Rows (keys) a live table holds: its state size.", &[("table", table)], move || {
            s.keys.load(Ordering::Relaxed) as f64
        });
    }
    for (table, stats) in &live.stats {
        let s = stats.clone();
        m.counter_fn("alertflow_live_snapshots_total", "Snapshots built (all workers).", &[("table", table)], move || {
            s.snapshots.load(Ordering::Relaxed) as f64
        });
    }
    for t in live.tables.iter() {
        let t = t.clone();
        let name = t.name().to_string();
        m.gauge_fn(
            "alertflow_live_snapshot_watermark_seconds",
            "Event time up to which the readable snapshot is complete.",
            &[("table", &name)],
            move || seconds(t.read().frontier),
        );
    }
    type OpGet = fn(&OperatorStats) -> f64;
    let operator_families: [(&str, &str, bool, OpGet); 8] = [
        ("alertflow_operator_records_in_total", "Records an operator received.", true, |s| s.records_in.load(Ordering::Relaxed) as f64),
        ("alertflow_operator_records_out_total", "Rows an operator emitted.", true, |s| s.records_out.load(Ordering::Relaxed) as f64),
        (
            "alertflow_operator_late_total",
            "Late records an operator received (revisions of windows; not scored by detectors).",
            true,
            |s| s.late.load(Ordering::Relaxed) as f64,
        ),
        (
            "alertflow_operator_dropped_total",
            "Records an operator received but did not use (late points of detectors, dedup over max_open_per_tenant).",
            true,
            |s| s.dropped.load(Ordering::Relaxed) as f64,
        ),
        (
            "alertflow_operator_state_expired_total",
            "Keys an operator forgot after their state TTL (event time) passed with no record.",
            true,
            |s| s.expired.load(Ordering::Relaxed) as f64,
        ),
        (
            "alertflow_operator_state_evicted_total",
            "Keys an operator evicted at its state cap (state.on_full = \"evict_oldest\").",
            true,
            |s| s.evicted.load(Ordering::Relaxed) as f64,
        ),
        (
            "alertflow_operator_state_rejected_total",
            "Records of new keys an operator rejected at its state cap (state.on_full = \"reject_new\").",
            true,
            |s| s.rejected.load(Ordering::Relaxed) as f64,
        ),
        (
            "alertflow_operator_state_entries",
            "Entries an operator holds in state (window groups, fingerprints, storm groups, episodes and incidents, series models).",
            false,
            |s| s.state() as f64,
        ),
    ];
    for (name, help, counter, get) in operator_families {
        for (kind, op, stats) in &t.operators {
            let stats = stats.clone();
            let labels = [("operator", *kind), ("name", op.as_str())];
            if counter {
                m.counter_fn(name, help, &labels, move || get(&stats));
            } else {
                m.gauge_fn(name, help, &labels, move || get(&stats));
            }
        }
    }
    if let Some(c) = &t.checkpoints {
        let c1 = c.clone();
        m.counter_fn("alertflow_checkpoints_total", "Checkpoints committed by this run.", &[], move || {
            c1.stats.committed.load(Ordering::Relaxed) as f64
        });
        let c2 = c.clone();
        m.gauge_fn(
            "alertflow_checkpoint_time_seconds",
            "Event time of the latest committed checkpoint (or the one resumed from).",
            &[],
            move || seconds(c2.stats.latest.load(Ordering::Relaxed)),
        );
        let c3 = c.clone();
        m.gauge_fn(
            "alertflow_checkpoint_duration_seconds",
            "Wall time from decision to commit of the latest checkpoint.",
            &[],
            move || c3.stats.latest_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        let c4 = c.clone();
        m.gauge_fn("alertflow_checkpoint_bytes", "Size of the latest checkpoint's state (compressed).", &[], move || {
            c4.stats.latest_bytes.load(Ordering::Relaxed) as f64
        });
    }
    let w = t.watermarks.clone();
    let least = move || w.iter().map(|a| a.load(Ordering::Relaxed)).min().unwrap_or(0);
    let l2 = least.clone();
    m.gauge_fn("alertflow_watermark_seconds", "Event time every source has passed (least over workers; +Inf once done).", &[], move || {
        seconds(least())
    });
    m.gauge_fn(
        "alertflow_watermark_lag_seconds",
        "Wall clock minus the watermark: how far event time is behind now (0 once done).",
        &[],
        move || {
            let w = l2();
            if w == u64::MAX {
                return 0.0;
            }
            let now = alertflow_model::time::wall_now() as f64;
            ((now - w as f64) / 1000.0).max(0.0)
        },
    );
}

fn seconds(ms: u64) -> f64 {
    if ms == u64::MAX { f64::INFINITY } else { ms as f64 / 1000.0 }
}
