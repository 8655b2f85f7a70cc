//! The catalog a running engine (or `alertflow sql`) serves: every Parquet table of the output
//! folder and every live table, in one DataFusion session per query, with tenant isolation
//! beneath the query and per-query limits.
//!
//! Table providers are built once ([`Catalog::open`]); a query gets a fresh, cheap
//! `SessionContext` over them ([`Catalog::context`]) with its own memory pool, so one query
//! over its memory limit fails alone. A caller bound to a tenant gets the same tables each
//! wrapped in [`TenantScoped`]: the filter sits beneath whatever SQL it writes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alertflow_connectors::live::LiveTables;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::TableProvider;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::catalog::{QueryError, register_dir};
use crate::live::LiveTableProvider;
use crate::tenant::TenantScoped;

/// Who is asking: the rows a caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Access {
    /// Every tenant's rows (an operator, or any caller when no tokens are configured).
    All,
    /// Only the rows of this tenant, in every table.
    Tenant(Arc<str>),
}

impl Access {
    /// The tenant a caller is bound to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Access::All => None,
            Access::Tenant(t) => Some(t),
        }
    }
}

/// Limits every query runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Wall time a query may take, planning and reading its answer included.
    pub timeout: Duration,
    /// Memory a query's operators (sorts, joins, aggregations) may hold.
    pub memory: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { timeout: Duration::from_secs(30), memory: 512 << 20 }
    }
}

/// Where a table's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Parquet files of the output folder (the history).
    History,
    /// The running engine's current state.
    Live,
}

/// A table of the catalog.
#[derive(Debug, Clone)]
pub struct TableDesc {
    /// Its SQL name.
    pub name: String,
    /// History or live.
    pub kind: TableKind,
    /// Its columns (partition columns of a history table included).
    pub schema: SchemaRef,
}

/// Every table, ready to be queried. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tables: Vec<(TableDesc, Arc<dyn TableProvider>)>,
    limits: QueryLimits,
}

impl Catalog {
    /// The tables of `dir` (if given) and the live tables. Live table names take precedence
    /// over a folder of the same name (the engine never writes one).
    pub async fn open(dir: Option<&Path>, live: &LiveTables, limits: QueryLimits) -> Result<Catalog, QueryError> {
        let mut tables: Vec<(TableDesc, Arc<dyn TableProvider>)> = Vec::new();
        for t in live.iter() {
            let provider: Arc<dyn TableProvider> = Arc::new(LiveTableProvider::new(t.clone()));
            tables.push((TableDesc { name: t.name().to_string(), kind: TableKind::Live, schema: t.schema() }, provider));
        }
        if let Some(dir) = dir {
            let scratch = crate::catalog::new_context();
            for info in register_dir(&scratch, dir).await? {
                if live.get(&info.name).is_some() {
                    continue;
                }
                let provider = scratch.table_provider(info.name.as_str()).await?;
                tables.push((TableDesc { name: info.name, kind: TableKind::History, schema: provider.schema() }, provider));
            }
        }
        tables.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(Catalog { inner: Arc::new(Inner { tables, limits }) })
    }

    /// The tables, by name.
    pub fn tables(&self) -> impl Iterator<Item = &TableDesc> {
        self.inner.tables.iter().map(|(d, _)| d)
    }

    /// The limits queries run under.
    pub fn limits(&self) -> QueryLimits {
        self.inner.limits
    }

    /// A session for one query (or one client connection) of a caller with `access`: every
    /// table, filtered to the caller's tenant beneath the query, and a memory pool of the
    /// configured limit.
    pub fn context(&self, access: &Access) -> Result<SessionContext, QueryError> {
        let cfg = SessionConfig::new().with_information_schema(true).with_default_catalog_and_schema("alertflow", "public");
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(self.inner.limits.memory, 1.0).build_arc()?;
        let state = SessionStateBuilder::new().with_config(cfg).with_runtime_env(runtime).with_default_features().build();
        let ctx = SessionContext::new_with_state(state);
        for (desc, provider) in &self.inner.tables {
            let provider = match access {
                Access::All => provider.clone(),
                Access::Tenant(t) => Arc::new(TenantScoped::new(provider.clone(), t.clone())) as Arc<dyn TableProvider>,
            };
            ctx.register_table(desc.name.as_str(), provider)?;
        }
        Ok(ctx)
    }

    /// Runs one read-only query for a caller with `access`, under the limits: its schema and
    /// rows. DDL (which could read any file), DML and `SET` are refused.
    pub async fn query(&self, access: &Access, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let limits = self.inner.limits;
        let ctx = self.context(access)?;
        let run = async {
            let df = ctx.sql_with_options(sql, read_only()).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok::<_, QueryError>((schema, batches))
        };
        match tokio::time::timeout(limits.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(QueryError::TimedOut(limits.timeout)),
        }
    }
}

/// What clients may run: queries only.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}
