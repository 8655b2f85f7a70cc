//! A realistic, seeded alert stream with ground truth: `alertflow gen alerts`.
//!
//! [`scenario`] builds, from a seed alone:
//!
//! - a **service topology**: a layered DAG — edge services (`storefront`, …) depend on APIs
//!   (`api-gateway`, …), APIs on backend services (`checkout`, `payments`, …, which may also
//!   depend on other backends), backends on data stores (`payments-db`, `cart-cache`,
//!   `orders-queue`). Every service has a team and a tier (`edge`, `api`, `backend`, `data`).
//!   All tenants run the same topology, each in two or three clusters.
//! - **incidents**: a fault starts at a random service (most often a data store or a backend)
//!   of one tenant and cluster and cascades **upstream**, to the services that depend on it,
//!   transitively, with a probability per hop and a delay of 10–90 s per hop. Each affected
//!   service fires several alert kinds fitting its kind (a database `ReplicationLag`, its
//!   callers `HighErrorRate`, …) over one or more of its instances. Incidents overlap in time
//!   within a tenant, placed in different parts of the topology where possible.
//! - **storms**: about one incident in eight is a storm: a data store fails and *every*
//!   dependent service fires per pod, `storm_size` distinct alerts in all (by default a random
//!   size between 200 and 1,500).
//! - **noise**: isolated alerts on random services all the time, each its own truth singleton.
//!
//! Alerts are re-sent every 30 s while firing (Alertmanager style). Some flap (fire and resolve
//! several times: each firing interval is one episode), most end with a `resolved` notice, the
//! rest just stop and expire. Two episodes of one fingerprint are always separated either by a
//! `resolved` notice or by more than [`EXPIRY_GAP_MS`] of silence, so the episodes the truth
//! file lists are exactly what a dedup with a `resolve_timeout` of up to 5 minutes sees.
//!
//! Lines are written in arrival order: each notice's event time `ts` is exact, its arrival
//! is `ts` plus a random ingestion delay in `[0, disorder_ms)`, so event time in the file is
//! out of order by less than `disorder_ms`. The same configuration gives the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use alertflow_model::LabelSet;
use alertflow_model::labels::fingerprint_hex;
use alertflow_model::time::format_rfc3339;

use crate::datagen::{SplitMix64, Xoshiro256};

/// The chance that a fault reaches a service that depends on an affected one (storms: 1).
pub const HOP_PROBABILITY: f64 = 0.7;
/// Alert re-send interval of a firing alert.
pub const RESEND_MS: i64 = 30_000;
/// Two episodes of one fingerprint without a `resolved` notice between them are at least this
/// far apart (last notice of one to first of the next): longer than any sensible
/// `resolve_timeout` (the default is 5 minutes).
pub const EXPIRY_GAP_MS: i64 = 7 * 60_000;

/// The encodings of the alert file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertFormat {
    /// `alerts.ndjson`: one flat alert object per line.
    Ndjson,
    /// `alerts.json`: Alertmanager v2 alert objects, an array of one or more per line.
    Alertmanager,
    /// `alerts.csv`: a header line, then one alert per line.
    Csv,
}

impl AlertFormat {
    /// The alert file's name.
    pub fn file_name(self) -> &'static str {
        match self {
            AlertFormat::Ndjson => "alerts.ndjson",
            AlertFormat::Alertmanager => "alerts.json",
            AlertFormat::Csv => "alerts.csv",
        }
    }
    /// The `format` value of the pipeline's source.
    pub fn name(self) -> &'static str {
        match self {
            AlertFormat::Ndjson => "ndjson",
            AlertFormat::Alertmanager => "alertmanager",
            AlertFormat::Csv => "csv",
        }
    }
}

impl std::str::FromStr for AlertFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ndjson" => Ok(AlertFormat::Ndjson),
            "alertmanager" => Ok(AlertFormat::Alertmanager),
            "csv" => Ok(AlertFormat::Csv),
            _ => Err(format!("unknown format `{s}` (expected ndjson, alertmanager or csv)")),
        }
    }
}

/// Configuration of [`scenario`].
#[derive(Clone, Debug, PartialEq)]
pub struct AlertGen {
    /// Seed: the same configuration gives the same bytes.
    pub seed: u64,
    /// Number of tenants (at least 1).
    pub tenants: usize,
    /// Number of services of the topology (at least 8).
    pub services: usize,
    /// Incidents in all, spread over the tenants round-robin.
    pub incidents: usize,
    /// Length of the stream (event time).
    pub duration_ms: i64,
    /// Background noise: isolated alert episodes per hour per tenant.
    pub noise_rate: f64,
    /// Distinct alerts of every storm; `None`: random sizes between 200 and 1,500.
    pub storm_size: Option<usize>,
    /// Largest ingestion delay of a notice (event-time disorder in the file).
    pub disorder_ms: i64,
    /// Start of the stream (default 2026-01-01T00:00:00Z).
    pub start_ms: i64,
}

impl Default for AlertGen {
    fn default() -> Self {
        AlertGen {
            seed: 1,
            tenants: 3,
            services: 60,
            incidents: 40,
            duration_ms: 6 * 3_600_000,
            noise_rate: 20.0,
            storm_size: None,
            disorder_ms: 3_000,
            start_ms: 1_767_225_600_000,
        }
    }
}

impl AlertGen {
    /// Every problem of the configuration.
    pub fn check(&self) -> Result<(), String> {
        let problems = [
            (self.tenants == 0, "--tenants must be at least 1"),
            (self.services < 8, "--services must be at least 8"),
            (self.duration_ms < 30 * 60_000, "--duration must be at least 30m"),
            (!(self.noise_rate >= 0.0 && self.noise_rate.is_finite()), "--noise-rate must be a number ≥ 0"),
            (self.storm_size == Some(0), "--storm-size must be at least 1"),
            (self.storm_size.is_some_and(|s| s > 1_000_000), "--storm-size must be at most 1000000"),
            (self.disorder_ms < 0 || self.disorder_ms > 60_000, "--disorder must be between 0 and 1m"),
        ];
        match problems.iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(msg.to_string()),
            None => Ok(()),
        }
    }
}

/// A service's layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// User-facing frontends.
    Edge,
    /// API layer.
    Api,
    /// Business services.
    Backend,
    /// A database.
    Db,
    /// A cache.
    Cache,
    /// A message queue.
    Queue,
}

impl Tier {
    /// The `tier` column of the topology file.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Edge => "edge",
            Tier::Api => "api",
            Tier::Backend => "backend",
            Tier::Db | Tier::Cache | Tier::Queue => "data",
        }
    }
    /// Whether it is a data store.
    pub fn is_data(self) -> bool {
        matches!(self, Tier::Db | Tier::Cache | Tier::Queue)
    }
}

/// A service of the topology.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its name (the `service` label).
    pub name: String,
    /// The services it calls (indexes into [`Topology::services`]), sorted.
    pub depends_on: Vec<usize>,
    /// The owning team.
    pub team: String,
    /// The layer.
    pub tier: Tier,
    /// Replicas (pods, or nodes of a data store) in normal operation.
    pub replicas: usize,
}

/// The generated service DAG.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Services: edge first, then APIs, backends, data stores. A service only depends on
    /// services after it, so the graph is acyclic.
    pub services: Vec<Service>,
    /// For each service, the services that depend on it, sorted.
    pub dependents: Vec<Vec<usize>>,
}

impl Topology {
    /// Writes `service,depends_on,team,tier`: one row per edge, one row with an empty
    /// `depends_on` for a service without dependencies.
    pub fn write_csv(&self, mut out: impl Write) -> io::Result<()> {
        writeln!(out, "service,depends_on,team,tier")?;
        for s in &self.services {
            if s.depends_on.is_empty() {
                writeln!(out, "{},,{},{}", s.name, s.team, s.tier.name())?;
            }
            for &d in &s.depends_on {
                writeln!(out, "{},{},{},{}", s.name, self.services[d].name, s.team, s.tier.name())?;
            }
        }
        Ok(())
    }
}

/// Sorted `(key, value)` labels.
pub type Labels = Vec<(&'static str, String)>;

/// One distinct alert (label set).
#[derive(Clone, Debug)]
pub struct AlertDef {
    /// Index into [`Scenario::tenants`].
    pub tenant: usize,
    /// The labels, sorted by key (`alertname`, `cluster`, `instance`?, `service`, `severity`, `team`).
    pub labels: Labels,
    /// The `summary` annotation.
    pub summary: String,
    /// The fingerprint ([`LabelSet::fingerprint`] of tenant and labels).
    pub fingerprint: u64,
}

impl AlertDef {
    /// The value of a label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

/// One alert notice of the stream.
#[derive(Clone, Copy, Debug)]
pub struct Notice {
    /// Event time.
    pub ts: i64,
    /// Arrival (file order).
    pub arrive: i64,
    /// Index into [`Scenario::defs`].
    pub def: u32,
    /// Index into [`Scenario::episodes`].
    pub episode: u32,
    /// Firing (or resolved).
    pub firing: bool,
}

/// One truth episode: a row of `truth.csv`.
#[derive(Clone, Debug)]
pub struct TruthEpisode {
    /// Index into [`Scenario::defs`].
    pub def: u32,
    /// Event time of its first notice.
    pub first_ts: i64,
    /// Event time of its last notice (the `resolved` one when it has one).
    pub last_ts: i64,
    /// Index into [`Scenario::incidents`].
    pub incident: u32,
}

/// A truth incident (noise singletons included).
#[derive(Clone, Debug)]
pub struct TruthIncident {
    /// Its id: `inc-0007`, or `noise-00012` for a background-noise singleton.
    pub id: String,
    /// Index into [`Scenario::tenants`].
    pub tenant: usize,
    /// The service where the fault started (the service itself for noise).
    pub root_service: String,
    /// Whether it is a storm.
    pub storm: bool,
    /// Whether it is background noise.
    pub noise: bool,
}

/// A generated stream with its truth.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Tenant names.
    pub tenants: Vec<String>,
    /// The topology (the same for every tenant).
    pub topology: Topology,
    /// Distinct alerts.
    pub defs: Vec<AlertDef>,
    /// Episodes, sorted by tenant, first notice, fingerprint.
    pub episodes: Vec<TruthEpisode>,
    /// Incidents: real ones first (in start order), then noise.
    pub incidents: Vec<TruthIncident>,
    /// Notices in file (arrival) order.
    pub notices: Vec<Notice>,
}

/// What [`write_files`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertGenReport {
    /// Lines of the alert file (the CSV header included).
    pub lines: u64,
    /// Alert notices.
    pub notices: u64,
    /// Truth episodes.
    pub episodes: u64,
    /// Real (non-noise) incidents.
    pub incidents: u64,
    /// Storms among them.
    pub storms: u64,
    /// Noise episodes.
    pub noise: u64,
    /// Distinct fingerprints.
    pub fingerprints: u64,
}

const TENANTS: [&str; 8] = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"];
const CLUSTERS: [&str; 5] = ["prod-eu1", "prod-us1", "prod-ap1", "prod-eu2", "prod-us2"];
const EDGE: [&str; 8] =
    ["storefront", "mobile-bff", "admin-portal", "partner-portal", "checkout-web", "help-center", "marketing-site", "seller-portal"];
const API: [&str; 10] = [
    "api-gateway",
    "graphql-gateway",
    "public-api",
    "orders-api",
    "catalog-api",
    "accounts-api",
    "payments-api",
    "search-api",
    "mobile-api",
    "partner-api",
];
const BACKEND: [&str; 40] = [
    "checkout",
    "payments",
    "orders",
    "inventory",
    "shipping",
    "pricing",
    "search",
    "recommendations",
    "accounts",
    "auth",
    "notifications",
    "billing",
    "cart",
    "reviews",
    "loyalty",
    "fraud-detection",
    "invoicing",
    "catalog",
    "media",
    "analytics",
    "reporting",
    "ledger",
    "tax",
    "promotions",
    "subscriptions",
    "messaging",
    "identity",
    "profile",
    "geo",
    "scheduler",
    "returns",
    "warehouse",
    "fulfillment",
    "refunds",
    "coupons",
    "ratings",
    "sessions",
    "audit",
    "exports",
    "imports",
];

/// An alert kind: name, severity, per instance (or per service), summary text.
type Kind = (&'static str, &'static str, bool, &'static str);

const WORKLOAD_CAUSE: [Kind; 5] = [
    ("PodCrashLooping", "critical", true, "pod is restarting repeatedly"),
    ("HighMemoryUsage", "warning", true, "memory usage above 90% of the limit"),
    ("HighErrorRate", "critical", false, "5xx ratio above 5%"),
    ("HighLatency", "warning", false, "p99 latency above 2s"),
    ("DeploymentReplicasMismatch", "warning", false, "ready replicas below desired"),
];
const WORKLOAD_SYMPTOM: [Kind; 5] = [
    ("HighErrorRate", "critical", false, "5xx ratio above 5%"),
    ("HighLatency", "warning", false, "p99 latency above 2s"),
    ("UpstreamConnectionErrors", "warning", true, "connections to a dependency failing"),
    ("PodNotReady", "warning", true, "readiness probe failing"),
    ("CircuitBreakerOpen", "critical", true, "circuit breaker to a dependency open"),
];
const DB_CAUSE: [Kind; 6] = [
    ("InstanceDown", "critical", true, "database instance unreachable"),
    ("ReplicationLag", "warning", true, "replica more than 30s behind"),
    ("HighConnectionCount", "warning", true, "connections above 90% of max_connections"),
    ("SlowQueries", "warning", false, "p95 query time above 1s"),
    ("DiskFull", "critical", true, "data volume above 95%"),
    ("DeadlocksDetected", "warning", false, "deadlocks in the last 5 minutes"),
];
const CACHE_CAUSE: [Kind; 4] = [
    ("InstanceDown", "critical", true, "cache node unreachable"),
    ("HighEvictionRate", "warning", true, "evictions above 1000/s"),
    ("CacheHitRateLow", "warning", false, "hit rate below 60%"),
    ("HighMemoryUsage", "warning", true, "memory above 95% of maxmemory"),
];
const QUEUE_CAUSE: [Kind; 4] = [
    ("BrokerDown", "critical", true, "broker unreachable"),
    ("ConsumerLagHigh", "warning", false, "consumer lag above 100k messages"),
    ("UnderReplicatedPartitions", "warning", false, "partitions under-replicated"),
    ("DiskFull", "critical", true, "log volume above 95%"),
];
const NOISE: [Kind; 7] = [
    ("HighCpuUsage", "warning", true, "CPU above 90% for 5m"),
    ("CertificateExpiringSoon", "info", false, "TLS certificate expires in 14 days"),
    ("PodRestarted", "info", true, "container restarted"),
    ("CronJobFailed", "warning", false, "scheduled job failed"),
    ("DiskSpaceLow", "warning", true, "disk above 80%"),
    ("HighLatency", "warning", false, "p99 latency above 2s"),
    ("HighErrorRate", "critical", false, "5xx ratio above 5%"),
];

fn cause_kinds(t: Tier) -> &'static [Kind] {
    match t {
        Tier::Edge | Tier::Api | Tier::Backend => &WORKLOAD_CAUSE,
        Tier::Db => &DB_CAUSE,
        Tier::Cache => &CACHE_CAUSE,
        Tier::Queue => &QUEUE_CAUSE,
    }
}

/// The name of instance `k` of a service: a pod name for workloads
/// (`checkout-7c9f6d5b8-x2k4q`), a stateful-set member for data stores (`payments-db-2`).
pub fn instance_name(s: &Service, k: usize) -> String {
    if s.tier.is_data() {
        return format!("{}-{k}", s.name);
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let h = name_hash(s.name.as_bytes(), k as u64);
    let mut name = format!("{}-{:09x}-", s.name, (name_hash(s.name.as_bytes(), u64::MAX) >> 28) & 0xf_ffff_ffff);
    let mut x = h;
    for _ in 0..5 {
        name.push(ALPHA[(x % ALPHA.len() as u64) as usize] as char);
        x /= ALPHA.len() as u64;
    }
    name
}

/// A small stable hash (FNV-1a, then a SplitMix64 finaliser) for instance names.
fn name_hash(b: &[u8], k: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h = (h ^ c as u64).wrapping_mul(0x100_0000_01b3);
    }
    SplitMix64(h ^ k).next_u64()
}

struct Rng(Xoshiro256);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n.max(1) as u64) as usize
    }
    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.0.below((hi - lo + 1).max(1) as u64) as i64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.unit() < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    /// `k` distinct indexes of `0..n`, sorted.
    fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v.truncate(k.min(n));
        v.sort_unstable();
        v
    }
}

/// Names `pool[i]`, then `pool[i]-2`, `-3`, … once the pool is used up.
fn names(pool: &[&str], n: usize, r: &mut Rng) -> Vec<String> {
    let mut p: Vec<&str> = pool.to_vec();
    r.shuffle(&mut p);
    (0..n).map(|i| if i < p.len() { p[i].to_string() } else { format!("{}-{}", p[i % p.len()], i / p.len() + 1) }).collect()
}

/// Builds the layered service DAG of `services` (at least 8) services from `seed`.
pub fn topology(services: usize, seed: u64) -> Topology {
    let mut r = Rng(Xoshiro256::new(&mut SplitMix64(seed)));
    let n = services.max(8);
    let n_data = (n * 35 / 100).max(2);
    let n_backend = (n * 40 / 100).max(2);
    let n_api = (n * 15 / 100).max(1);
    let n_edge = n - n_data - n_backend - n_api;
    let edge = names(&EDGE, n_edge, &mut r);
    let api = names(&API, n_api, &mut r);
    let backend = names(&BACKEND, n_backend, &mut r);
    let mut svcs: Vec<Service> = Vec::with_capacity(n);
    let team_of = |b: &str| format!("team-{}", b.split('-').next().unwrap_or(b));
    for e in &edge {
        svcs.push(Service {
            name: e.clone(),
            depends_on: vec![],
            team: "team-web".into(),
            tier: Tier::Edge,
            replicas: r.range(3, 8) as usize,
        });
    }
    for a in &api {
        svcs.push(Service {
            name: a.clone(),
            depends_on: vec![],
            team: "team-platform".into(),
            tier: Tier::Api,
            replicas: r.range(3, 10) as usize,
        });
    }
    for b in &backend {
        svcs.push(Service { name: b.clone(), depends_on: vec![], team: team_of(b), tier: Tier::Backend, replicas: r.range(2, 8) as usize });
    }
    let (e0, a0, b0, d0) = (0, n_edge, n_edge + n_api, n_edge + n_api + n_backend);
    // Data stores: owned by a backend (round-robin over a shuffled order), named after it.
    let mut owners: Vec<usize> = (0..n_backend).collect();
    r.shuffle(&mut owners);
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n_data {
        let owner = owners[i % n_backend];
        let tier = match r.below(10) {
            0..=4 => Tier::Db,
            5..=7 => Tier::Cache,
            _ => Tier::Queue,
        };
        let suffix = match tier {
            Tier::Db => "db",
            Tier::Cache => "cache",
            _ => "queue",
        };
        let base = format!("{}-{suffix}", backend[owner]);
        let k = used.entry(base.clone()).or_insert(0);
        *k += 1;
        let name = if *k == 1 { base } else { format!("{base}-{k}") };
        let replicas = r.range(2, 5) as usize;
        svcs.push(Service { name, depends_on: vec![], team: team_of(&backend[owner]), tier, replicas });
        svcs[b0 + owner].depends_on.push(d0 + i);
        if r.chance(0.3) {
            let other = r.below(n_backend);
            svcs[b0 + other].depends_on.push(d0 + i);
        }
    }
    // Backends call later backends only (acyclic), and every backend has an API caller.
    for i in 0..n_backend {
        for _ in 0..r.below(3) {
            if i + 1 < n_backend && r.chance(0.5) {
                let j = i + 1 + r.below(n_backend - i - 1);
                svcs[b0 + i].depends_on.push(b0 + j);
            }
        }
        let a = r.below(n_api);
        svcs[a0 + a].depends_on.push(b0 + i);
    }
    for a in 0..n_api {
        for _ in 0..r.range(1, 3) {
            let b = r.below(n_backend);
            svcs[a0 + a].depends_on.push(b0 + b);
        }
        let e = r.below(n_edge.max(1));
        if n_edge > 0 {
            svcs[e0 + e].depends_on.push(a0 + a);
        }
    }
    for e in 0..n_edge {
        for _ in 0..r.range(0, 2) {
            let a = r.below(n_api);
            svcs[e0 + e].depends_on.push(a0 + a);
        }
    }
    for s in &mut svcs {
        s.depends_on.sort_unstable();
        s.depends_on.dedup();
    }
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in svcs.iter().enumerate() {
        for &d in &s.depends_on {
            dependents[d].push(i);
        }
    }
    Topology { services: svcs, dependents }
}

/// The state of the generation: distinct alerts by labels, and per fingerprint the time spans
/// already taken (an episode may not overlap another one of the same alert).
struct Builder<'a> {
    tenants: &'a [String],
    topo: &'a Topology,
    defs: Vec<AlertDef>,
    by_key: BTreeMap<(usize, Labels), u32>,
    busy: BTreeMap<u32, Vec<(i64, i64)>>,
    episodes: Vec<TruthEpisode>,
    notices: Vec<Notice>,
}

/// One planned firing interval: `[from, to]`, ending with a `resolved` notice at `to` or not.
#[derive(Clone, Copy)]
struct Interval {
    from: i64,
    to: i64,
    resolved: bool,
}

impl Builder<'_> {
    fn def(&mut self, tenant: usize, svc: usize, cluster: &str, kind: &Kind, instance: Option<usize>) -> u32 {
        let s = &self.topo.services[svc];
        let mut labels: Labels = vec![
            ("alertname", kind.0.to_string()),
            ("cluster", cluster.to_string()),
            ("service", s.name.clone()),
            ("severity", kind.1.to_string()),
            ("team", s.team.clone()),
        ];
        if let Some(k) = instance {
            labels.push(("instance", instance_name(s, k)));
        }
        labels.sort_unstable_by_key(|(k, _)| *k);
        let key = (tenant, labels);
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        let pairs: Vec<(&str, &str)> = key.1.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let fingerprint = LabelSet::new(&self.tenants[tenant], &pairs).fingerprint();
        let summary = format!("{} {}: {}", s.name, kind.0, kind.3);
        let i = self.defs.len() as u32;
        self.defs.push(AlertDef { tenant, labels: key.1.clone(), summary, fingerprint });
        self.by_key.insert(key, i);
        i
    }

    /// Adds the episodes of `def` (one per interval, in order) to `incident`, unless one of
    /// them would overlap an episode the alert already has: then none is added.
    fn add(&mut self, def: u32, intervals: &[Interval], incident: u32, r: &mut Rng) -> bool {
        let spans: Vec<(i64, i64)> =
            intervals.iter().map(|iv| (iv.from, iv.to + if iv.resolved { 1_000 } else { EXPIRY_GAP_MS })).collect();
        let busy = self.busy.entry(def).or_default();
        if spans.iter().any(|&(a, b)| busy.iter().any(|&(c, d)| a <= d && c <= b)) {
            return false;
        }
        busy.extend_from_slice(&spans);
        for iv in intervals {
            let episode = self.episodes.len() as u32;
            let mut t = iv.from;
            let mut last = t;
            while t < iv.to {
                self.notices.push(Notice { ts: t, arrive: 0, def, episode, firing: true });
                last = t;
                // Senders are periodic, but not to the millisecond.
                t += RESEND_MS + r.range(-400, 400);
            }
            if iv.resolved {
                self.notices.push(Notice { ts: iv.to, arrive: 0, def, episode, firing: false });
                last = iv.to;
            }
            self.episodes.push(TruthEpisode { def, first_ts: iv.from, last_ts: last, incident });
        }
        true
    }
}

/// Plans the firing intervals of one alert active over `[from, to]`: flapping (several
/// short intervals each resolved), resolved at the end, or just stopping (the last firing
/// notice is then the last re-send before `to`).
fn plan(from: i64, to: i64, flap_p: f64, resolve_p: f64, r: &mut Rng) -> Vec<Interval> {
    let to = to.max(from + 40_000);
    let span = to - from;
    if span > 6 * 60_000 && r.chance(flap_p) {
        let n = r.range(2, 4);
        let mut out = Vec::new();
        let mut t = from;
        let piece = span / n;
        for _ in 0..n {
            let gap = r.range(45_000, 150_000).min(piece / 3);
            let end = (t + piece - gap).max(t + 35_000);
            out.push(Interval { from: t, to: end, resolved: true });
            t = end + gap;
        }
        return out;
    }
    if r.chance(resolve_p) { vec![Interval { from, to, resolved: true }] } else { vec![Interval { from, to, resolved: false }] }
}

/// Builds a whole scenario.
pub fn scenario(cfg: &AlertGen) -> Result<Scenario, String> {
    cfg.check()?;
    let mut seeder = SplitMix64(cfg.seed ^ SALT);
    let topo = topology(cfg.services, seeder.next_u64());
    let mut r = Rng(Xoshiro256::new(&mut seeder));
    let mut noise_rng = Rng(Xoshiro256::new(&mut seeder));
    let mut jitter = Rng(Xoshiro256::new(&mut seeder));
    let tenants: Vec<String> =
        (0..cfg.tenants).map(|i| if i < TENANTS.len() { TENANTS[i].to_string() } else { format!("tenant-{i}") }).collect();
    let clusters: Vec<Vec<&str>> = (0..cfg.tenants)
        .map(|_| {
            let k = r.range(2, 3) as usize;
            r.sample(CLUSTERS.len(), k).into_iter().map(|i| CLUSTERS[i]).collect()
        })
        .collect();
    let mut b = Builder {
        tenants: &tenants,
        topo: &topo,
        defs: Vec::new(),
        by_key: BTreeMap::new(),
        busy: BTreeMap::new(),
        episodes: Vec::new(),
        notices: Vec::new(),
    };
    let n_svc = topo.services.len();
    let data: Vec<usize> = (0..n_svc).filter(|&i| topo.services[i].tier.is_data()).collect();
    let backends: Vec<usize> = (0..n_svc).filter(|&i| topo.services[i].tier == Tier::Backend).collect();
    let apis: Vec<usize> = (0..n_svc).filter(|&i| topo.services[i].tier == Tier::Api).collect();
    let edges: Vec<usize> = (0..n_svc).filter(|&i| topo.services[i].tier == Tier::Edge).collect();
    // Storm-capable roots: data stores with dependents.
    let storm_roots: Vec<usize> = data.iter().copied().filter(|&d| !topo.dependents[d].is_empty()).collect();

    let n_storms = cfg.incidents.div_ceil(8);
    let mut order: Vec<usize> = (0..cfg.incidents).collect();
    r.shuffle(&mut order);
    let mut is_storm = vec![false; cfg.incidents];
    for &i in order.iter().take(n_storms) {
        is_storm[i] = true;
    }
    let mut incidents: Vec<TruthIncident> = Vec::new();
    // Per tenant: (start, end, affected services) of the incidents placed so far.
    let mut placed: Vec<Vec<(i64, i64, Vec<usize>)>> = vec![Vec::new(); cfg.tenants];
    let end_of_stream = cfg.start_ms + cfg.duration_ms;
    let mut planned: Vec<(i64, usize, bool)> = (0..cfg.incidents)
        .map(|i| (cfg.start_ms + r.range(60_000, (cfg.duration_ms - 25 * 60_000).max(60_000)), i % cfg.tenants, is_storm[i]))
        .collect();
    planned.sort_by_key(|p| p.0);
    for (start, tenant, storm) in planned {
        let len = if storm { r.range(5 * 60_000, 15 * 60_000) } else { r.range(8 * 60_000, 50 * 60_000) };
        let end = (start + len).min(end_of_stream - 60_000);
        let cluster = *r.pick(&clusters[tenant]);
        // Choose a root; avoid overlapping the affected services of concurrent incidents.
        let mut best: Option<(usize, Vec<(usize, i64)>)> = None;
        for _ in 0..30 {
            let root = if storm && !storm_roots.is_empty() {
                *r.pick(&storm_roots)
            } else {
                match r.below(100) {
                    0..=44 => *r.pick(&data),
                    45..=79 => *r.pick(&backends),
                    80..=94 => *r.pick(&apis),
                    _ => *r.pick(if edges.is_empty() { &apis } else { &edges }),
                }
            };
            let affected = cascade(&topo, root, start, if storm { 1.0 } else { HOP_PROBABILITY }, &mut r);
            let clash = placed[tenant]
                .iter()
                .any(|(s, e, svcs)| *s <= end + 10 * 60_000 && start <= *e + 10 * 60_000 && affected.iter().any(|(a, _)| svcs.contains(a)));
            best = Some((root, affected));
            if !clash {
                break;
            }
        }
        let Some((root, affected)) = best else { continue };
        placed[tenant].push((start, end, affected.iter().map(|a| a.0).collect()));
        let inc = incidents.len() as u32;
        incidents.push(TruthIncident {
            id: format!("inc-{:04}", inc + 1),
            tenant,
            root_service: topo.services[root].name.clone(),
            storm,
            noise: false,
        });
        if storm {
            let size = cfg.storm_size.unwrap_or_else(|| (200.0 * 7.5f64.powf(r.0.unit())) as usize);
            storm_alerts(&mut b, &mut r, tenant, cluster, root, &affected, end, size, inc);
        } else {
            for &(svc, t0) in &affected {
                let s = &topo.services[svc];
                let kinds: &[Kind] = if svc == root { cause_kinds(s.tier) } else { &WORKLOAD_SYMPTOM };
                let n_kinds = if svc == root { r.range(2, 3) } else { r.range(1, 2) } as usize;
                let svc_end = end + r.range(0, 120_000);
                for ki in r.sample(kinds.len(), n_kinds) {
                    let kind = &kinds[ki];
                    let instances: Vec<Option<usize>> = if kind.2 {
                        let k = r.range(1, 3.min(s.replicas as i64)) as usize;
                        r.sample(s.replicas, k).into_iter().map(Some).collect()
                    } else {
                        vec![None]
                    };
                    for inst in instances {
                        let def = b.def(tenant, svc, cluster, kind, inst);
                        let from = t0 + r.range(0, 45_000);
                        let to = svc_end + r.range(-60_000, 60_000);
                        let iv = plan(from, to, 0.15, 0.8, &mut r);
                        b.add(def, &iv, inc, &mut r);
                    }
                }
            }
        }
    }
    // Background noise: isolated episodes, each its own truth incident.
    for (tenant, tenant_clusters) in clusters.iter().enumerate() {
        let n = (cfg.noise_rate * cfg.duration_ms as f64 / 3_600_000.0).round() as usize;
        for _ in 0..n {
            let svc = noise_rng.below(n_svc);
            let kind = noise_rng.pick(&NOISE);
            let s = &topo.services[svc];
            let inst = if kind.2 { Some(noise_rng.below(s.replicas)) } else { None };
            let cluster = *noise_rng.pick(tenant_clusters);
            let from = cfg.start_ms + noise_rng.range(0, cfg.duration_ms - 20 * 60_000);
            let to = from + noise_rng.range(60_000, 15 * 60_000);
            let iv = plan(from, to, 0.0, 0.6, &mut noise_rng);
            let def = b.def(tenant, svc, cluster, kind, inst);
            let inc = incidents.len() as u32;
            if b.add(def, &iv, inc, &mut noise_rng) {
                let n = incidents.iter().filter(|i| i.noise).count();
                incidents.push(TruthIncident {
                    id: format!("noise-{:05}", n + 1),
                    tenant,
                    root_service: s.name.clone(),
                    storm: false,
                    noise: true,
                });
            }
        }
    }
    let Builder { defs, mut episodes, mut notices, .. } = b;
    // Arrival order: event time plus an ingestion delay.
    for n in &mut notices {
        n.arrive = n.ts + if cfg.disorder_ms > 0 { jitter.range(0, cfg.disorder_ms - 1) } else { 0 };
    }
    // Episodes in truth order; renumber the notices' episode indexes.
    let mut idx: Vec<u32> = (0..episodes.len() as u32).collect();
    idx.sort_by_key(|&i| {
        let e = &episodes[i as usize];
        (defs[e.def as usize].tenant, e.first_ts, defs[e.def as usize].fingerprint, i)
    });
    let mut new_of = vec![0u32; episodes.len()];
    for (new, &old) in idx.iter().enumerate() {
        new_of[old as usize] = new as u32;
    }
    episodes = idx.iter().map(|&i| episodes[i as usize].clone()).collect();
    for n in &mut notices {
        n.episode = new_of[n.episode as usize];
    }
    notices.sort_by_key(|n| (n.arrive, n.ts, n.def, n.firing));
    Ok(Scenario { tenants, topology: topo, defs, episodes, incidents, notices })
}

/// Mixed into the seed, so that the streams differ from the metrics generator's.
const SALT: u64 = 0xA1E7_F10A_5EED_0001;

/// The services a fault at `root` (at `start`) reaches, with the time each starts alerting:
/// upstream along the dependents, each hop taken with probability `p` after 10–90 s.
fn cascade(topo: &Topology, root: usize, start: i64, p: f64, r: &mut Rng) -> Vec<(usize, i64)> {
    let mut at: BTreeMap<usize, i64> = BTreeMap::new();
    at.insert(root, start);
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(s) = queue.pop_front() {
        let t = at[&s];
        for &u in &topo.dependents[s] {
            if at.contains_key(&u) || !r.chance(p) {
                continue;
            }
            at.insert(u, t + r.range(10_000, 90_000));
            queue.push_back(u);
        }
    }
    let mut v: Vec<(usize, i64)> = at.into_iter().collect();
    v.sort_by_key(|&(s, t)| (t, s));
    v
}

/// A storm: `size` distinct alerts. The failing data store alerts on every one of its nodes
/// with two kinds; the rest of the budget goes to its dependents, every pod of every one of
/// them alerting (two kinds each, as many pods as it takes), the earliest-hit first.
#[allow(clippy::too_many_arguments)]
fn storm_alerts(
    b: &mut Builder<'_>,
    r: &mut Rng,
    tenant: usize,
    cluster: &str,
    root: usize,
    affected: &[(usize, i64)],
    end: i64,
    size: usize,
    inc: u32,
) {
    let topo = b.topo;
    let per_instance = |svc: usize| -> Vec<&'static Kind> {
        let kinds: &'static [Kind] = if svc == root { cause_kinds(topo.services[svc].tier) } else { &WORKLOAD_SYMPTOM };
        kinds.iter().filter(|k| k.2).take(2).collect()
    };
    // (service, start, kind, pods)
    let mut slots: Vec<(usize, i64, &'static Kind, usize)> = Vec::new();
    let mut left = size;
    let root_t0 = affected.iter().find(|a| a.0 == root).map(|a| a.1).unwrap_or(end);
    for k in per_instance(root) {
        let n = if affected.len() > 1 { topo.services[root].replicas.min(left) } else { 0 };
        left -= n;
        slots.push((root, root_t0, k, n));
    }
    let dependents: Vec<(usize, i64, &'static Kind)> =
        affected.iter().filter(|a| a.0 != root).flat_map(|&(svc, t0)| per_instance(svc).into_iter().map(move |k| (svc, t0, k))).collect();
    if dependents.is_empty() {
        // Nothing depends on it: the data store itself, on as many nodes as it takes.
        let per = left.div_ceil(slots.len().max(1));
        for s in &mut slots {
            s.3 = per.min(left);
            left -= s.3;
        }
    } else {
        let per = left.div_ceil(dependents.len());
        for (svc, t0, k) in dependents {
            let n = per.min(left);
            left -= n;
            slots.push((svc, t0, k, n));
        }
    }
    for (svc, t0, kind, n) in slots {
        for pod in 0..n {
            let def = b.def(tenant, svc, cluster, kind, Some(pod));
            let from = t0 + r.range(0, 30_000);
            let to = end + r.range(0, 120_000);
            let iv = plan(from, to, 0.05, 0.85, r);
            b.add(def, &iv, inc, r);
        }
    }
}

impl Scenario {
    /// The truth incident of an episode.
    pub fn incident_of(&self, e: &TruthEpisode) -> &TruthIncident {
        &self.incidents[e.incident as usize]
    }

    /// Writes `tenant,fingerprint,first_ts,last_ts,incident,root_service`, one row per episode.
    pub fn write_truth(&self, mut out: impl Write) -> io::Result<()> {
        writeln!(out, "tenant,fingerprint,first_ts,last_ts,incident,root_service")?;
        for e in &self.episodes {
            let d = &self.defs[e.def as usize];
            let inc = self.incident_of(e);
            writeln!(
                out,
                "{},{},{},{},{},{}",
                self.tenants[d.tenant],
                fingerprint_hex(d.fingerprint),
                e.first_ts,
                e.last_ts,
                inc.id,
                inc.root_service
            )?;
        }
        Ok(())
    }

    /// Writes the alert file; returns its number of lines.
    pub fn write_alerts(&self, format: AlertFormat, out: impl Write) -> io::Result<u64> {
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        let mut lines = 0u64;
        let mut line = String::with_capacity(512);
        match format {
            AlertFormat::Ndjson => {
                for n in &self.notices {
                    line.clear();
                    self.ndjson(n, &mut line);
                    line.push('\n');
                    out.write_all(line.as_bytes())?;
                    lines += 1;
                }
            }
            AlertFormat::Csv => {
                writeln!(out, "ts,tenant,alertname,severity,status,service,instance,cluster,team,annotation.summary")?;
                lines += 1;
                for n in &self.notices {
                    let d = &self.defs[n.def as usize];
                    line.clear();
                    let _ = write!(line, "{},{}", n.ts, self.tenants[d.tenant]);
                    for key in ["alertname", "severity"] {
                        line.push(',');
                        csv_field(&mut line, d.label(key).unwrap_or(""));
                    }
                    line.push_str(if n.firing { ",firing" } else { ",resolved" });
                    for key in ["service", "instance", "cluster", "team"] {
                        line.push(',');
                        csv_field(&mut line, d.label(key).unwrap_or(""));
                    }
                    line.push(',');
                    csv_field(&mut line, &d.summary);
                    line.push('\n');
                    out.write_all(line.as_bytes())?;
                    lines += 1;
                }
            }
            AlertFormat::Alertmanager => {
                // A webhook-like batch per line: consecutive notices of one tenant arriving
                // within a second, at most eight.
                let mut i = 0;
                let ns = &self.notices;
                while i < ns.len() {
                    let tenant = self.defs[ns[i].def as usize].tenant;
                    let mut j = i + 1;
                    while j < ns.len() && j - i < 8 && self.defs[ns[j].def as usize].tenant == tenant && ns[j].arrive - ns[i].arrive < 1_000
                    {
                        j += 1;
                    }
                    line.clear();
                    line.push('[');
                    for (k, n) in ns[i..j].iter().enumerate() {
                        if k > 0 {
                            line.push(',');
                        }
                        self.alertmanager(n, &mut line);
                    }
                    line.push_str("]\n");
                    out.write_all(line.as_bytes())?;
                    lines += 1;
                    i = j;
                }
            }
        }
        out.flush()?;
        Ok(lines)
    }

    fn ndjson(&self, n: &Notice, line: &mut String) {
        let d = &self.defs[n.def as usize];
        let _ = write!(line, "{{\"ts\":{},\"tenant\":", n.ts);
        json_str(line, &self.tenants[d.tenant]);
        for key in ["alertname", "severity"] {
            let _ = write!(line, ",\"{key}\":");
            json_str(line, d.label(key).unwrap_or(""));
        }
        line.push_str(if n.firing { ",\"status\":\"firing\"" } else { ",\"status\":\"resolved\"" });
        for (k, v) in &d.labels {
            if *k == "alertname" || *k == "severity" {
                continue;
            }
            let _ = write!(line, ",\"{k}\":");
            json_str(line, v);
        }
        line.push_str(",\"annotations\":{\"summary\":");
        json_str(line, &d.summary);
        line.push_str("}}");
    }

    fn alertmanager(&self, n: &Notice, line: &mut String) {
        let d = &self.defs[n.def as usize];
        let e = &self.episodes[n.episode as usize];
        line.push_str("{\"labels\":{");
        for (i, (k, v)) in d.labels.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "\"{k}\":");
            json_str(line, v);
        }
        line.push_str("},\"annotations\":{\"summary\":");
        json_str(line, &d.summary);
        let _ = write!(line, "}},\"startsAt\":\"{}\",\"endsAt\":", format_rfc3339(e.first_ts));
        if n.firing {
            line.push_str("\"0001-01-01T00:00:00Z\"");
        } else {
            let _ = write!(line, "\"{}\"", format_rfc3339(n.ts));
        }
        let cluster = d.label("cluster").unwrap_or("");
        let alertname = d.label("alertname").unwrap_or("");
        let _ = write!(
            line,
            ",\"generatorURL\":\"http://prometheus.{cluster}.example/graph?g0.expr=ALERTS%7Balertname%3D%22{alertname}%22%7D\",\"status\":\"{}\",\"tenant\":",
            if n.firing { "firing" } else { "resolved" }
        );
        json_str(line, &self.tenants[d.tenant]);
        let _ = write!(line, ",\"updatedAt\":\"{}\"}}", format_rfc3339(n.ts));
    }

    /// A summary of the scenario (everything but line counts).
    pub fn report(&self, lines: u64) -> AlertGenReport {
        let mut fps: Vec<u64> = self.episodes.iter().map(|e| self.defs[e.def as usize].fingerprint).collect();
        fps.sort_unstable();
        fps.dedup();
        AlertGenReport {
            lines,
            notices: self.notices.len() as u64,
            episodes: self.episodes.len() as u64,
            incidents: self.incidents.iter().filter(|i| !i.noise).count() as u64,
            storms: self.incidents.iter().filter(|i| i.storm).count() as u64,
            noise: self.incidents.iter().filter(|i| i.noise).count() as u64,
            fingerprints: fps.len() as u64,
        }
    }
}

/// A ready pipeline for the generated data: defaults everywhere but the correlator's topology.
pub fn pipeline_toml(format: AlertFormat) -> String {
    format!(
        r#"# Generated by `alertflow gen alerts`: the alert pipeline over the generated stream.
# Every setting not written here is the default.

[[source]]
name = "alerts"
type = "file"
path = "{file}"
format = "{format}"
records = "alerts"
max_out_of_orderness = "10s"

[dedup]

[suppress]

[correlate]
topology = "topology.csv"
service_label = "service"

[output]
path = "out"
"#,
        file = format.file_name(),
        format = format.name()
    )
}

/// Writes the alert file, `topology.csv`, `truth.csv` and `pipeline.toml` into `dir`.
pub fn write_files(cfg: &AlertGen, format: AlertFormat, dir: &Path) -> io::Result<AlertGenReport> {
    let s = scenario(cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    std::fs::create_dir_all(dir)?;
    let create = |name: &str| std::fs::File::create(dir.join(name)).map(|f| io::BufWriter::with_capacity(1 << 20, f));
    let lines = s.write_alerts(format, create(format.file_name())?)?;
    let mut t = create("topology.csv")?;
    s.topology.write_csv(&mut t)?;
    t.flush()?;
    let mut t = create("truth.csv")?;
    s.write_truth(&mut t)?;
    t.flush()?;
    std::fs::write(dir.join("pipeline.toml"), pipeline_toml(format))?;
    Ok(s.report(lines))
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};

    use alertflow_model::decode::{AlertDecoder, CsvAlertHeader};
    use alertflow_model::{Alert, Status};

    use super::*;

    fn small(seed: u64) -> AlertGen {
        AlertGen {
            seed,
            tenants: 2,
            services: 30,
            incidents: 10,
            duration_ms: 2 * 3_600_000,
            noise_rate: 10.0,
            storm_size: Some(150),
            ..AlertGen::default()
        }
    }

    fn bytes(cfg: &AlertGen, f: AlertFormat) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let s = scenario(cfg).unwrap();
        let (mut a, mut t, mut tr) = (Vec::new(), Vec::new(), Vec::new());
        s.write_alerts(f, &mut a).unwrap();
        s.topology.write_csv(&mut t).unwrap();
        s.write_truth(&mut tr).unwrap();
        (a, t, tr)
    }

    /// Decodes an alert file with the engine's decoder; every line must decode.
    fn decode(f: AlertFormat, bytes: &[u8]) -> Vec<Alert> {
        let mut d = AlertDecoder::new();
        let mut out = Vec::new();
        let mut lines = bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty());
        let header = if f == AlertFormat::Csv { Some(CsvAlertHeader::parse(lines.next().unwrap()).unwrap()) } else { None };
        for (i, line) in lines.enumerate() {
            let r = match f {
                AlertFormat::Ndjson => d.ndjson(line, 0, i as u64).map(|a| out.push(a)),
                AlertFormat::Alertmanager => d.alertmanager(line, 0, i as u64, &mut out),
                AlertFormat::Csv => d.csv(header.as_ref().unwrap(), line, 0, i as u64).map(|a| out.push(a)),
            };
            if let Err(e) = r {
                panic!("line {}: {e}: {}", i + 1, String::from_utf8_lossy(line));
            }
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        for f in [AlertFormat::Ndjson, AlertFormat::Alertmanager, AlertFormat::Csv] {
            let a = bytes(&small(7), f);
            assert_eq!(a, bytes(&small(7), f));
            let b = bytes(&small(8), f);
            assert_ne!(a.0, b.0);
            assert_ne!(a.1, b.1);
            assert_ne!(a.2, b.2);
        }
    }

    #[test]
    fn every_line_decodes_to_the_notice_it_stands_for() {
        let cfg = small(3);
        let s = scenario(&cfg).unwrap();
        for f in [AlertFormat::Ndjson, AlertFormat::Alertmanager, AlertFormat::Csv] {
            let mut buf = Vec::new();
            let lines = s.write_alerts(f, &mut buf).unwrap();
            let alerts = decode(f, &buf);
            assert_eq!(alerts.len(), s.notices.len(), "{f:?}");
            if f != AlertFormat::Alertmanager {
                assert_eq!(lines as usize, s.notices.len() + usize::from(f == AlertFormat::Csv));
            } else {
                assert!((lines as usize) < s.notices.len(), "Alertmanager lines batch several alerts");
            }
            for (a, n) in alerts.iter().zip(&s.notices) {
                let d = &s.defs[n.def as usize];
                assert_eq!(a.fingerprint(), d.fingerprint, "{f:?} {a:?}");
                assert_eq!(a.ts, n.ts);
                assert_eq!(a.status, if n.firing { Status::Firing } else { Status::Resolved }, "{f:?} {a:?}");
                assert_eq!(a.tenant(), s.tenants[d.tenant]);
                assert_eq!(a.annotations.get("summary").map(|v| &**v), Some(d.summary.as_str()));
            }
        }
    }

    #[test]
    fn truth_episodes_are_what_a_gap_rule_finds_in_the_lines() {
        let s = scenario(&small(11)).unwrap();
        let mut buf = Vec::new();
        s.write_alerts(AlertFormat::Ndjson, &mut buf).unwrap();
        let mut by_fp: BTreeMap<(String, u64), Vec<(i64, Status)>> = BTreeMap::new();
        for a in decode(AlertFormat::Ndjson, &buf) {
            by_fp.entry((a.tenant().to_string(), a.fingerprint())).or_default().push((a.ts, a.status));
        }
        // Dedup's rule with a 5-minute resolve_timeout: a resolved notice ends an episode, and
        // so does silence longer than the timeout.
        let mut found = BTreeSet::new();
        for ((tenant, fp), mut v) in by_fp {
            v.sort();
            let mut cur: Option<(i64, i64)> = None;
            for (ts, st) in v {
                if let Some((first, last)) = cur
                    && ts - last > 5 * 60_000
                {
                    found.insert((tenant.clone(), fp, first, last));
                    cur = None;
                }
                let (first, _) = *cur.get_or_insert((ts, ts));
                cur = Some((first, ts));
                if st == Status::Resolved {
                    found.insert((tenant.clone(), fp, first, ts));
                    cur = None;
                }
            }
            if let Some((first, last)) = cur {
                found.insert((tenant, fp, first, last));
            }
        }
        let truth: BTreeSet<(String, u64, i64, i64)> = s
            .episodes
            .iter()
            .map(|e| {
                let d = &s.defs[e.def as usize];
                (s.tenants[d.tenant].clone(), d.fingerprint, e.first_ts, e.last_ts)
            })
            .collect();
        assert_eq!(truth.len(), s.episodes.len());
        assert_eq!(found, truth);
        // The truth file says the same, in its documented columns.
        let mut t = Vec::new();
        s.write_truth(&mut t).unwrap();
        let text = String::from_utf8(t).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("tenant,fingerprint,first_ts,last_ts,incident,root_service"));
        let rows: BTreeSet<(String, u64, i64, i64)> = lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), u64::from_str_radix(f[1], 16).unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap())
            })
            .collect();
        assert_eq!(rows, truth);
    }

    #[test]
    fn topology_is_a_dag_covering_every_alerting_service() {
        let s = scenario(&AlertGen::default()).unwrap();
        let mut t = Vec::new();
        s.topology.write_csv(&mut t).unwrap();
        let text = String::from_utf8(t).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("service,depends_on,team,tier"));
        let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "{l}");
            assert!(!f[2].is_empty() && ["edge", "api", "backend", "data"].contains(&f[3]), "{l}");
            let e = edges.entry(f[0].to_string()).or_default();
            if !f[1].is_empty() {
                e.push(f[1].to_string());
                edges.entry(f[1].to_string()).or_default();
            }
        }
        assert_eq!(edges.len(), 60);
        // Kahn: repeatedly remove services without remaining dependencies.
        let mut left = edges.clone();
        while !left.is_empty() {
            let free: Vec<String> = left.iter().filter(|(_, d)| d.iter().all(|x| !left.contains_key(x))).map(|(k, _)| k.clone()).collect();
            assert!(!free.is_empty(), "a cycle among {:?}", left.keys().collect::<Vec<_>>());
            for f in free {
                left.remove(&f);
            }
        }
        for d in &s.defs {
            assert!(edges.contains_key(d.label("service").unwrap()), "{d:?}");
        }
        // Realistic names, and data stores named after their owners.
        assert!(edges.keys().any(|k| k.ends_with("-db")) && edges.keys().all(|k| !k.starts_with("s1")));
    }

    #[test]
    fn faults_cascade_upstream_and_noise_is_single() {
        let s = scenario(&AlertGen::default()).unwrap();
        let index: HashMap<&str, usize> = s.topology.services.iter().enumerate().map(|(i, v)| (v.name.as_str(), i)).collect();
        let mut services: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
        let mut episodes: BTreeMap<u32, usize> = BTreeMap::new();
        for e in &s.episodes {
            services.entry(e.incident).or_default().insert(index[s.defs[e.def as usize].label("service").unwrap()]);
            *episodes.entry(e.incident).or_default() += 1;
        }
        let mut multi = 0;
        for (i, inc) in s.incidents.iter().enumerate() {
            let svcs = &services[&(i as u32)];
            if inc.noise {
                assert_eq!(episodes[&(i as u32)], 1, "{inc:?}");
                continue;
            }
            let root = index[inc.root_service.as_str()];
            assert!(svcs.contains(&root), "{inc:?}");
            for &sv in svcs {
                // Every other affected service calls an affected one: the fault went upstream.
                assert!(sv == root || s.topology.services[sv].depends_on.iter().any(|d| svcs.contains(d)), "{inc:?}: {sv}");
            }
            multi += usize::from(svcs.len() > 1);
        }
        assert!(multi >= 20, "most incidents span several services: {multi}");
        let roots_data =
            s.incidents.iter().filter(|i| !i.noise && s.topology.services[index[i.root_service.as_str()]].tier.is_data()).count();
        assert!(roots_data >= 10, "{roots_data}");
    }

    #[test]
    fn the_default_scenario_is_big_busy_and_overlapping() {
        let s = scenario(&AlertGen::default()).unwrap();
        let r = s.report(0);
        assert!((50_000..=200_000).contains(&r.notices), "{r:?}");
        assert_eq!((r.incidents, r.storms), (40, 5), "{r:?}");
        assert!(r.noise > 300, "{r:?}");
        // Incidents overlap in time within a tenant.
        let mut span: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
        for e in &s.episodes {
            let v = span.entry(e.incident).or_insert((i64::MAX, i64::MIN));
            *v = (v.0.min(e.first_ts), v.1.max(e.last_ts));
        }
        let real: Vec<(usize, (i64, i64))> =
            s.incidents.iter().enumerate().filter(|(_, i)| !i.noise).map(|(k, i)| (i.tenant, span[&(k as u32)])).collect();
        let overlaps =
            real.iter().enumerate().filter(|(k, (t, (a, b)))| real[..*k].iter().any(|(t2, (c, d))| t == t2 && a <= d && c <= b)).count();
        assert!(overlaps >= 5, "{overlaps}");
        // Some alerts flap (several episodes of one fingerprint in one incident), some expire.
        let mut per: HashMap<(u32, u32), usize> = HashMap::new();
        for e in &s.episodes {
            *per.entry((e.def, e.incident)).or_default() += 1;
        }
        assert!(per.values().filter(|&&n| n >= 2).count() > 20);
        let resolved: HashSet<u32> = s.notices.iter().filter(|n| !n.firing).map(|n| n.episode).collect();
        let expired = s.episodes.len() - resolved.len();
        assert!(expired * 20 > s.episodes.len() && expired * 2 < s.episodes.len(), "{expired} of {}", s.episodes.len());
    }

    #[test]
    fn storms_have_their_size_in_distinct_alerts() {
        let cfg = AlertGen { incidents: 1, tenants: 1, storm_size: Some(2_000), noise_rate: 0.0, ..AlertGen::default() };
        let s = scenario(&cfg).unwrap();
        assert_eq!(s.incidents.len(), 1);
        assert!(s.incidents[0].storm && s.topology.services.iter().any(|v| v.name == s.incidents[0].root_service && v.tier.is_data()));
        let fps: HashSet<u64> = s.episodes.iter().map(|e| s.defs[e.def as usize].fingerprint).collect();
        assert_eq!(fps.len(), 2_000);
        // They open within minutes: the storm threshold (100 within a minute) is crossed.
        let mut firsts: Vec<i64> = s.episodes.iter().map(|e| e.first_ts).collect();
        firsts.sort_unstable();
        assert!(firsts.windows(101).any(|w| w[100] - w[0] <= 60_000));
        // Random sizes by default, each at least 200.
        let s = scenario(&AlertGen::default()).unwrap();
        for (i, inc) in s.incidents.iter().enumerate().filter(|(_, i)| i.storm) {
            let n: HashSet<u64> =
                s.episodes.iter().filter(|e| e.incident == i as u32).map(|e| s.defs[e.def as usize].fingerprint).collect();
            assert!(n.len() >= 190, "{inc:?}: {}", n.len());
        }
    }

    #[test]
    fn disorder_is_real_and_bounded() {
        let cfg = small(5);
        let s = scenario(&cfg).unwrap();
        let mut max_ts = s.notices[0].ts;
        let mut worst = 0;
        for n in &s.notices {
            worst = worst.max(max_ts - n.ts);
            max_ts = max_ts.max(n.ts);
        }
        assert!(worst > 0 && worst < cfg.disorder_ms, "{worst}");
    }

    #[test]
    fn bad_configurations_are_errors() {
        for (cfg, want) in [
            (AlertGen { tenants: 0, ..AlertGen::default() }, "--tenants"),
            (AlertGen { services: 3, ..AlertGen::default() }, "--services"),
            (AlertGen { duration_ms: 60_000, ..AlertGen::default() }, "--duration"),
            (AlertGen { noise_rate: -1.0, ..AlertGen::default() }, "--noise-rate"),
            (AlertGen { storm_size: Some(0), ..AlertGen::default() }, "--storm-size"),
        ] {
            assert!(scenario(&cfg).unwrap_err().contains(want), "{want}");
        }
    }
}
