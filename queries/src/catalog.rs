//! Registers the tables of an output folder: every sub-folder holding Parquet files (or the
//! schema file the engine writes) becomes a listing table named after the folder, its Hive
//! partition columns typed (`date` → DATE, `hour` → INT, anything else → text), so that
//! filters on them prune files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alertflow_connectors::parquet::read_schema_file;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::{SessionConfig, SessionContext};

/// Errors of building a catalog or running a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The data folder cannot be read.
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    /// DataFusion rejected the query or failed running it (its own words).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// The query ran past its time limit (`[serve] query_timeout`) and was stopped.
    #[error("the query ran longer than the limit of {0:?} ([serve] query_timeout) and was stopped")]
    TimedOut(std::time::Duration),
    /// Writing the answer failed.
    #[error("cannot write the answer: {0}")]
    Output(String),
}

/// A table found in a data folder.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its SQL name (the folder name).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Hive partition columns, outermost first.
    pub partitions: Vec<(String, DataType)>,
}

/// A session configured the way alertflow queries run: `information_schema` on (so `SHOW
/// TABLES` works), identifiers as written.
pub fn new_context() -> SessionContext {
    let cfg = SessionConfig::new().with_information_schema(true).with_default_catalog_and_schema("alertflow", "public");
    SessionContext::new_with_config(cfg)
}

/// A context holding every table under `dir`.
pub async fn context_for_dir(dir: &Path) -> Result<(SessionContext, Vec<TableInfo>), QueryError> {
    let ctx = new_context();
    let tables = register_dir(&ctx, dir).await?;
    Ok((ctx, tables))
}

/// Registers every table folder under `dir` into `ctx`.
pub async fn register_dir(ctx: &SessionContext, dir: &Path) -> Result<Vec<TableInfo>, QueryError> {
    let io = |e| QueryError::Io(dir.display().to_string(), e);
    let abs = std::fs::canonicalize(dir).map_err(io)?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&abs)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut tables = Vec::new();
    for table_dir in entries {
        let name = table_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if name.starts_with(['.', '_']) || name.contains('=') {
            continue;
        }
        let known: Option<SchemaRef> = read_schema_file(&table_dir).map(Arc::new);
        let has_files = has_parquet(&table_dir);
        if known.is_none() && !has_files {
            continue;
        }
        let url = format!("{}/", table_dir.display());
        let options = || ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let schema = match known {
            Some(s) => s,
            None => {
                let table_url = datafusion::datasource::listing::ListingTableUrl::parse(&url)?;
                options().infer_schema(&ctx.state(), &table_url).await?
            }
        };
        // A partition key that is also a column of the files (an export of a partitioned
        // table, say) stays a file column.
        let partitions: Vec<(String, DataType)> =
            partition_columns(&table_dir, &name).into_iter().filter(|(k, _)| schema.field_with_name(k).is_err()).collect();
        ctx.register_listing_table(name.as_str(), &url, options().with_table_partition_cols(partitions.clone()), Some(schema), None)
            .await?;
        tables.push(TableInfo { name, dir: table_dir, partitions });
    }
    Ok(tables)
}

fn has_parquet(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else { return false };
    for e in rd.flatten() {
        let p = e.path();
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with(['.', '_']) {
            continue;
        }
        if p.is_dir() {
            if has_parquet(&p) {
                return true;
            }
        } else if n.ends_with(".parquet") {
            return true;
        }
    }
    false
}

/// The Hive keys along the first partition path of a table folder; for an empty table of the
/// engine's, the layout it writes (`source=` for dead letters, `date=/hour=` for the rest);
/// none for plain files.
fn partition_columns(table_dir: &Path, name: &str) -> Vec<(String, DataType)> {
    let mut keys = Vec::new();
    let mut dir = table_dir.to_path_buf();
    loop {
        let Ok(rd) = std::fs::read_dir(&dir) else { break };
        let mut subs: Vec<PathBuf> = rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()).collect();
        subs.sort();
        let Some(next) = subs.into_iter().find(|p| p.file_name().map(|n| n.to_string_lossy().contains('=')).unwrap_or(false)) else {
            break;
        };
        let n = next.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        keys.push(n.split('=').next().unwrap_or_default().to_string());
        dir = next;
    }
    if keys.is_empty() && !has_parquet(table_dir) {
        // An empty table of the engine's (it has a schema file): its layout.
        keys = if name == alertflow_model::tables::DEAD_LETTERS { vec!["source".into()] } else { vec!["date".into(), "hour".into()] };
    }
    keys.into_iter()
        .map(|k| {
            let t = match k.as_str() {
                "date" => DataType::Date32,
                "hour" => DataType::Int32,
                _ => DataType::Utf8,
            };
            (k, t)
        })
        .collect()
}
