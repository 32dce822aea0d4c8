//! What Jaeger's query API asks for beyond search and trace by ID: a service's operations with their span kinds,
//! and the calls between services over a window. Both are DataFusion plans over the same `spans` table as SQL, so
//! they see blocks and data in memory alike.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int8Type, Int64Type};
use datafusion::logical_expr::{col, lit};

use std::collections::{BTreeSet, HashSet};

use arrow::array::RecordBatch;

use super::QueryError;
use super::search::{SearchEngine, Source};
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

/// Adds the (name, kind) pairs of `batch`'s rows (columns: service, name, kind) whose service is `service`. The
/// service test and the pairs work on dictionary keys, so a block costs a pass over its keys.
fn operations_of(batch: &RecordBatch, service: &str, out: &mut BTreeSet<Operation>) -> Result<(), QueryError> {
    let wanted = arrow::array::StringArray::new_scalar(service);
    let services = batch.column(0);
    // `normalized_keys` needs a dictionary with values.
    if batch.num_rows() == 0 || services.as_any_dictionary_opt().is_some_and(|d| d.values().is_empty()) {
        return Ok(());
    }
    let mask = match services.as_any_dictionary_opt() {
        Some(dict) => {
            let values = arrow::compute::cast(dict.values(), &DataType::Utf8)?;
            let hits = arrow::compute::kernels::cmp::eq(&values, &wanted)?;
            let keys = dict.normalized_keys();
            arrow::array::BooleanArray::from_iter(
                (0..services.len()).map(|i| Some(services.is_valid(i) && hits.value(keys[i]))),
            )
        }
        None => arrow::compute::kernels::cmp::eq(&arrow::compute::cast(services, &DataType::Utf8)?, &wanted)?,
    };
    let rows = arrow::compute::filter_record_batch(batch, &mask)?;
    if rows.num_rows() == 0 {
        return Ok(());
    }
    let kinds = arrow::compute::cast(rows.column(2), &DataType::Int8)?;
    let kinds = kinds.as_primitive::<Int8Type>();
    let names = rows.column(1);
    let mut pairs: HashSet<(usize, i8)> = HashSet::new();
    match names.as_any_dictionary_opt() {
        Some(dict) if dict.values().is_empty() => {}
        Some(dict) => {
            let values = strings(dict.values())?;
            let keys = dict.normalized_keys();
            for (i, &key) in keys.iter().enumerate() {
                if names.is_valid(i) {
                    pairs.insert((key, kinds.value(i)));
                }
            }
            out.extend(pairs.into_iter().map(|(k, kind)| Operation { name: values.value(k).to_string(), kind }));
        }
        None => {
            let values = strings(names)?;
            for i in 0..rows.num_rows() {
                if values.is_valid(i) && pairs.insert((i, kinds.value(i))) {
                    out.insert(Operation { name: values.value(i).to_string(), kind: kinds.value(i) });
                }
            }
        }
    }
    Ok(())
}

fn strings(a: &dyn Array) -> Result<arrow::array::StringArray, QueryError> {
    let a = arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(a.as_string::<i32>().clone())
}

impl SearchEngine {
    /// The distinct (span name, kind) pairs of `service`'s spans, sorted. From the decoded-column cache when the
    /// blocks fit it (service, name and kind are columns searches keep), else by a DataFusion scan.
    pub async fn operations(
        &self,
        tenant: &Tenant,
        service: &str,
        max_bytes: usize,
    ) -> Result<Vec<Operation>, QueryError> {
        let sources = self.sources(tenant, None, None)?;
        if self.fits_cache(&sources) && sources.iter().filter_map(Source::block).all(|b| !b.meta.service_name_in_list) {
            let mut found: BTreeSet<Operation> = BTreeSet::new();
            let names = [c::SERVICE_NAME, c::NAME, c::KIND];
            for source in &sources {
                match source {
                    Source::Memory(batches) => {
                        for batch in batches {
                            let schema = batch.schema();
                            let Ok(idx) = names.iter().map(|n| schema.index_of(n)).collect::<Result<Vec<_>, _>>()
                            else {
                                continue;
                            };
                            let batch = batch.project(&idx)?;
                            operations_of(&batch, service, &mut found)?;
                        }
                    }
                    Source::Block(b) => match self.blocks.columns(tenant, b, &names).await? {
                        Some(batch) => operations_of(&batch, service, &mut found)?,
                        None => return self.operations_by_scan(tenant, service, max_bytes).await,
                    },
                }
            }
            return Ok(found.into_iter().collect());
        }
        self.operations_by_scan(tenant, service, max_bytes).await
    }

    async fn operations_by_scan(
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
