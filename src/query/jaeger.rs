//! What Jaeger's query API asks for beyond search and trace by ID: a service's operations with their span kinds,
//! and the calls between services over a window. Both are DataFusion plans over the same `spans` table as SQL, so
//! they see blocks and data in memory alike.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int8Type, Int64Type};
use datafusion::logical_expr::{col, lit};

use super::QueryError;
use super::search::SearchEngine;
use super::sql::{SQL_TABLE, collect};
use crate::block::schema::col as c;
use crate::model::Tenant;

/// Calls from one service to another (Jaeger's `DependencyLink`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub parent: String,
    pub child: String,
    pub calls: u64,
}

/// One span name of a service, with its OTLP span kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    pub name: String,
    pub kind: i8,
}

fn strings(a: &dyn Array) -> Result<arrow::array::StringArray, QueryError> {
    let a = arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(a.as_string::<i32>().clone())
}

impl SearchEngine {
    /// The distinct (span name, kind) pairs of `service`'s spans, sorted.
    pub async fn operations(
        &self,
        tenant: &Tenant,
        service: &str,
        max_bytes: usize,
    ) -> Result<Vec<Operation>, QueryError> {
        let ctx = self.sql_context(tenant, None, None)?;
        let df = ctx
            .table(SQL_TABLE)
            .await?
            .filter(col(c::SERVICE_NAME).eq(lit(service)))?
            .select(vec![col(c::NAME), col(c::KIND)])?
            .distinct()?;
        let out = collect(df, max_bytes).await?;
        let mut ops = Vec::new();
        for b in &out.batches {
            let names = strings(b.column(0))?;
            let kinds = arrow::compute::cast(b.column(1), &DataType::Int8)?;
            let kinds = kinds.as_primitive::<Int8Type>();
            for i in 0..b.num_rows() {
                if names.is_valid(i) {
                    ops.push(Operation { name: names.value(i).to_string(), kind: kinds.value(i) });
                }
            }
        }
        ops.sort();
        Ok(ops)
    }

    /// Calls between distinct services whose callee span started in `[start, end)` (Unix nanoseconds): each
    /// span whose parent, stored in the same trace, belongs to another service counts one call parent -> child.
    pub async fn dependencies(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<Dependency>, QueryError> {
        let ctx = self.sql_context(tenant, Some(start), Some(end))?;
        // Only numbers are formatted into the statement. Times are i64 in the table; a range past i64 is clamped.
        let (start, end) = (start.min(i64::MAX as u64), end.min(i64::MAX as u64));
        // Each side distinct: a span stored twice (a retried export, memory and a block) counts once.
        let statement = format!(
            "SELECT p.{svc} AS parent, c.{svc} AS child, count(*) AS calls \
             FROM (SELECT DISTINCT {tid}, {sid}, {parent}, {svc} FROM {t} WHERE {st} >= {start} AND {st} < {end}) c \
             JOIN (SELECT DISTINCT {tid}, {sid}, {svc} FROM {t}) p ON c.{tid} = p.{tid} AND c.{parent} = p.{sid} \
             WHERE c.{svc} <> p.{svc} \
             GROUP BY 1, 2 ORDER BY 1, 2",
            t = SQL_TABLE,
            svc = c::SERVICE_NAME,
            tid = c::TRACE_ID,
            sid = c::SPAN_ID,
            parent = c::PARENT_SPAN_ID,
            st = c::START,
        );
        let df = ctx.sql(&statement).await?;
        let out = collect(df, max_bytes).await?;
        let mut deps = Vec::new();
        for b in &out.batches {
            let (parents, children) = (strings(b.column(0))?, strings(b.column(1))?);
            let calls = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                if parents.is_valid(i) && children.is_valid(i) {
                    deps.push(Dependency {
                        parent: parents.value(i).to_string(),
                        child: children.value(i).to_string(),
                        calls: calls.value(i).max(0) as u64,
                    });
                }
            }
        }
        Ok(deps)
    }
}
