//! Live tables as DataFusion tables: each scan reads every worker's snapshot at one frontier
//! (see `alertflow_connectors::live`) and serves those immutable batches, one partition per
//! worker.

use std::sync::Arc;

use alertflow_connectors::live::LiveTable;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// A [`LiveTable`] as a DataFusion table.
#[derive(Debug)]
pub struct LiveTableProvider {
    table: Arc<LiveTable>,
}

impl LiveTableProvider {
    /// The provider of `table`.
    pub fn new(table: Arc<LiveTable>) -> Self {
        LiveTableProvider { table }
    }
}

#[async_trait]
impl TableProvider for LiveTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.table.read();
        let mut partitions: Vec<Vec<RecordBatch>> = snapshot.parts.iter().filter(|p| !p.is_empty()).map(|p| p.to_vec()).collect();
        if partitions.is_empty() {
            partitions.push(Vec::new());
        }
        Ok(MemorySourceConfig::try_new_exec(&partitions, self.table.schema(), projection.cloned())?)
    }
}
