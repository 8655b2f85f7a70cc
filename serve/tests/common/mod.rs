//! A served catalog for the tests: a Parquet history table and a live table, each with rows of
//! two tenants (`acme`, `globex`), and a server over them on 127.0.0.1:0.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alertflow_connectors::live::{LiveTable, LiveTables};
use alertflow_queries::{Access, Catalog, Metrics, QueryLimits};
use alertflow_serve::{Health, ServeConfig, Server, Token};
use datafusion::arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

/// The token that sees everything.
pub const ROOT: &str = "root-secret";
/// The token of tenant `acme`.
pub const ACME: &str = "acme-secret";
/// The token of tenant `globex`.
pub const GLOBEX: &str = "globex-secret";

/// 2024-01-01T00:00:00Z in ms.
pub const T0: i64 = 1_704_067_200_000;

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("alertflow-serve-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `events` (history): tenant, ts (ms, UTC), value, host, tags (list of text).
pub fn events_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("value", DataType::Int64, false),
        Field::new("host", DataType::Utf8, true),
        Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
    ]))
}

/// acme: values 1, 2, 3 (hosts a1..a3); globex: values 100, 200 (hosts g1, g2).
pub fn events_batch() -> RecordBatch {
    let tenants = ["acme", "acme", "acme", "globex", "globex"];
    let values = [1i64, 2, 3, 100, 200];
    let hosts = ["a1", "a2", "a3", "g1", "g2"];
    let mut tags = ListBuilder::new(StringBuilder::new());
    for (i, _) in tenants.iter().enumerate() {
        tags.values().append_value("x");
        tags.values().append_value(format!("t{i}"));
        tags.append(true);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(tenants.to_vec())),
        Arc::new(TimestampMillisecondArray::from((0..5).map(|i| T0 + i * 1000).collect::<Vec<_>>()).with_timezone("UTC")),
        Arc::new(Int64Array::from(values.to_vec())),
        Arc::new(StringArray::from(hosts.to_vec())),
        Arc::new(tags.finish()),
    ];
    RecordBatch::try_new(events_schema(), cols).unwrap()
}

/// `state` (live): tenant, key, count. acme: k1=10, k2=20; globex: k9=900.
pub fn state_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["acme", "acme", "globex"])),
            Arc::new(StringArray::from(vec!["k1", "k2", "k9"])),
            Arc::new(Int64Array::from(vec![10, 20, 900])),
        ],
    )
    .unwrap()
}

fn write_parquet(dir: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(dir).unwrap();
    let f = std::fs::File::create(dir.join("part-0.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A running server and what it serves.
pub struct Served {
    pub server: Option<Server>,
    pub metrics: Arc<Metrics>,
    pub rt: tokio::runtime::Runtime,
    pub _dir: TempDir,
}

impl Served {
    pub fn url(&self) -> String {
        format!("http://{}", self.server.as_ref().unwrap().http_addr().unwrap())
    }

    pub fn pg_port(&self) -> u16 {
        self.server.as_ref().unwrap().pg_addr().unwrap().port()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// The tokens of the tests: root, acme, globex.
pub fn tokens() -> Vec<Token> {
    vec![
        Token { token: ROOT.into(), access: Access::All },
        Token { token: ACME.into(), access: Access::Tenant(Arc::from("acme")) },
        Token { token: GLOBEX.into(), access: Access::Tenant(Arc::from("globex")) },
    ]
}

/// A server on loopback (HTTP and pg, port 0) over the test catalog.
pub fn serve(limits: QueryLimits, tokens: Vec<Token>) -> Served {
    let dir = TempDir::new("catalog");
    write_parquet(&dir.0.join("events"), &events_batch());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut live = LiveTables::new();
    let state = state_batch();
    live.add(LiveTable::fixed("state", state.schema(), vec![state]));
    let catalog = rt.block_on(Catalog::open(Some(&dir.0), &live, limits)).unwrap();
    let metrics = Arc::new(Metrics::new());
    let cfg =
        ServeConfig { http: Some("127.0.0.1:0".parse().unwrap()), pg: Some("127.0.0.1:0".parse().unwrap()), tokens, ..Default::default() };
    let health = Arc::new(|| Health { running: true, frontier_ms: Some(T0), uptime_secs: 7 });
    let server = Server::start(&cfg, catalog, metrics.clone(), health, rt.handle()).unwrap();
    Served { server: Some(server), metrics, rt, _dir: dir }
}
