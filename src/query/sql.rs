//! Read-only SQL over one tenant's spans (`POST /api/sql`), through the same DataFusion tables as search.
//!
//! The context a statement runs in holds one table, `spans`: a view over the tenant's sources only (its blocks
//! and its data in memory), so no statement can name another tenant's data. Dedicated slot columns, whose meaning
//! differs per block, are folded back into `resource_attrs` / `span_attrs` (`merge_slots`), so every row shows all
//! of its attributes; `attr(list, 'key')` reads one. DDL, DML (`INSERT`, `COPY ... TO`) and `SET`-style statements
//! are refused by DataFusion's SQL options, and URL tables (`FROM 'file.parquet'`) are not enabled.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::{MemTable, ViewTable};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col};
use futures::StreamExt;

use super::QueryError;
use super::search::{SearchEngine, Source};
use super::udf::{attr_udf, merge_slots};
use crate::block::schema::{self, col as c};
use crate::model::Tenant;

/// The table SQL statements read.
pub const SQL_TABLE: &str = "spans";

/// What a statement returned.
pub struct SqlOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

fn is_slot(name: &str) -> bool {
    name.starts_with("res_str_") || name.starts_with("span_str_") || name.starts_with("span_int_")
}

/// The columns of `spans`: the block schema without slot columns.
pub fn sql_schema() -> Schema {
    let full = schema::schema();
    Schema::new(full.fields().iter().filter(|f| !is_slot(f.name())).cloned().collect::<Vec<_>>())
}

fn planning(e: DataFusionError) -> QueryError {
    QueryError::Sql(e.strip_backtrace())
}

impl SearchEngine {
    /// Runs one read-only statement over the tenant's spans; the result may hold at most `max_bytes` of Arrow data.
    pub async fn sql(&self, tenant: &Tenant, sql: &str, max_bytes: usize) -> Result<SqlOutput, QueryError> {
        let ctx = self.sql_context(tenant, None, None)?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await.map_err(planning)?;
        collect(df, max_bytes).await
    }

    /// A context holding the table `spans` over the tenant's sources that may hold spans in `[start, end]`
    /// (Unix nanoseconds; `None`: unbounded). The range only chooses sources: rows outside it are not removed.
    pub(crate) fn sql_context(
        &self,
        tenant: &Tenant,
        start: Option<u64>,
        end: Option<u64>,
    ) -> Result<datafusion::prelude::SessionContext, QueryError> {
        let ctx = self.context();
        let sources = self.sources(tenant, start, end)?;
        let mut plans = Vec::new();
        for source in &sources {
            let Some((table, _)) = self.table(tenant, source)? else { continue };
            let mut res_slots: Vec<(String, Expr)> = vec![("service.name".into(), col(c::SERVICE_NAME))];
            let mut span_slots: Vec<(String, Expr)> = Vec::new();
            if let Source::Block(b) = source {
                for d in &b.meta.dedicated_columns {
                    let target = if d.scope == "resource" { &mut res_slots } else { &mut span_slots };
                    target.push((d.name.clone(), col(d.column.as_str())));
                }
            }
            let exprs: Vec<Expr> = sql_schema()
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    c::RESOURCE_ATTRS => {
                        merge_slots(col(c::RESOURCE_ATTRS), res_slots.clone()).alias(c::RESOURCE_ATTRS)
                    }
                    c::SPAN_ATTRS => merge_slots(col(c::SPAN_ATTRS), span_slots.clone()).alias(c::SPAN_ATTRS),
                    name => col(name),
                })
                .collect();
            plans.push(ctx.read_table(table)?.select(exprs)?.into_unoptimized_plan());
        }
        let mut builder = match plans.pop() {
            Some(p) => LogicalPlanBuilder::from(p),
            // Nothing stored yet: an empty table with the same columns.
            None => {
                let empty = MemTable::try_new(Arc::new(sql_schema()), vec![vec![]])?;
                LogicalPlanBuilder::from(ctx.read_table(Arc::new(empty))?.into_unoptimized_plan())
            }
        };
        for p in plans {
            builder = builder.union(p)?;
        }
        ctx.register_table(SQL_TABLE, Arc::new(ViewTable::new(builder.build()?, None)))?;
        ctx.register_udf(attr_udf());
        Ok(ctx)
    }
}

/// Runs a planned statement; its result may hold at most `max_bytes` of Arrow data.
pub(crate) async fn collect(df: datafusion::prelude::DataFrame, max_bytes: usize) -> Result<SqlOutput, QueryError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await.map_err(planning)?;
    let (mut batches, mut bytes) = (Vec::new(), 0usize);
    while let Some(b) = stream.next().await {
        let b = b?;
        bytes += b.get_array_memory_size();
        if bytes > max_bytes {
            return Err(QueryError::Limit(format!(
                "the result is larger than max_response_bytes ({max_bytes}); add a LIMIT or aggregate"
            )));
        }
        batches.push(b);
    }
    Ok(SqlOutput { schema, batches })
}
