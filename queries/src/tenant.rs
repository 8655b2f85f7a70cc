//! Tenant isolation beneath the query: a table wrapper that makes every scan return only one
//! tenant's rows.
//!
//! The caller's SQL is never rewritten. Instead the catalog a tenant-bound caller queries holds
//! only wrapped tables, and a wrapped table's scan is the inner table's scan (the tenant
//! predicate offered to it as a pushed-down filter, so Parquet row groups and Hive partitions
//! of other tenants are skipped where statistics allow) under a filter on the `tenant` column
//! that is always applied. Whatever the query does above the scan — joins, unions, subqueries,
//! aggregates — it only ever sees rows of that tenant. A table without a `tenant` column (dead
//! letters: a bad record may have no tenant) is empty for tenant-bound callers.
//!
//! Statistics are not passed through (a row count is a fact about every tenant), and the
//! wrapper offers no inserts or deletes.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, col, lit};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExecBuilder;

/// The column that names a row's tenant.
pub const TENANT_COLUMN: &str = "tenant";

/// A table seen by one tenant.
#[derive(Debug)]
pub struct TenantScoped {
    inner: Arc<dyn TableProvider>,
    tenant: Arc<str>,
    /// Index of the `tenant` column in the inner schema, if it has one.
    tenant_index: Option<usize>,
}

impl TenantScoped {
    /// `inner` as seen by `tenant`.
    pub fn new(inner: Arc<dyn TableProvider>, tenant: Arc<str>) -> Self {
        let tenant_index = inner.schema().index_of(TENANT_COLUMN).ok();
        TenantScoped { inner, tenant, tenant_index }
    }
}

#[async_trait]
impl TableProvider for TenantScoped {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let Some(tenant_index) = self.tenant_index else {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        };
        // Read the tenant column too, filter on it, then drop it again if it was not asked for.
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        let mut read = wanted.clone();
        let position = match read.iter().position(|&i| i == tenant_index) {
            Some(p) => p,
            None => {
                read.push(tenant_index);
                read.len() - 1
            }
        };
        let mut pushed = filters.to_vec();
        pushed.push(col(TENANT_COLUMN).eq(lit(self.tenant.as_ref())));
        // The limit is not passed on: it would apply before the tenant filter.
        let input = self.inner.scan(state, Some(&read), &pushed, None).await?;
        let input_type = input.schema().field(position).data_type().clone();
        let value = match input_type {
            DataType::Utf8 => ScalarValue::Utf8(Some(self.tenant.to_string())),
            DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(self.tenant.to_string())),
            DataType::Utf8View => ScalarValue::Utf8View(Some(self.tenant.to_string())),
            other => {
                return Err(DataFusionError::Internal(format!("the `tenant` column is {other}, not text (a bug)")));
            }
        };
        let predicate =
            Arc::new(BinaryExpr::new(Arc::new(Column::new(TENANT_COLUMN, position)), Operator::Eq, Arc::new(Literal::new(value))));
        let keep = (read.len() != wanted.len()).then(|| (0..wanted.len()).collect());
        Ok(Arc::new(FilterExecBuilder::new(predicate, input).apply_projection(keep)?.build()?))
    }
}
