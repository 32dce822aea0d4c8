//! The aggregate gate: traces a pipeline's aggregate filter rules out before any of them is read.
//!
//! For `{ F } | agg(duration) op x` (or `count() op n`), a trace stored whole in one block matches only if the
//! aggregate over its spans that satisfy `F` passes. When `F` has an exact row predicate in the block
//! (`prune::exact_filter`: intrinsics, `service.name`, slots that hold every value of their key), that aggregate
//! is computed for every trace at once from the cached decoded columns: the exact mask, the duration column, and
//! the trace index's row ranges. Traces that fail (or have no span satisfying `F`) lose their rows from the
//! block's candidate mask, so neither the index walk nor the scans read or evaluate them. Traces other blocks or
//! memory may hold are left alone: fragments elsewhere can change the aggregate. The gate only removes traces
//! that cannot match; the ones it keeps are evaluated exactly as before.
//!
//! Why: a pipeline matching nothing evaluated every trace of the service whole (72-123 ms on the benchmark set
//! at any limit); the gate answers it from a pass over a few columns.

use std::sync::Arc;

use arrow::array::BooleanBufferBuilder;
use arrow::array::{Array, AsArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::Int64Type;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use query_lang::{AggregateOp, CmpOp, Field, FieldExpr, Intrinsic, Literal, Pipeline, ScalarExpr, SpansetExpr, Stage};

use super::QueryError;
use super::eval::cmp_f64;
use super::prune::{Slots, exact_filter};
use super::search::cached_mask;
use crate::block::schema::col as c;
use crate::ingest::Ingester;
use crate::model::{Tenant, TraceId};
use crate::storage::{BlockEntry, BlockStore};

/// A pipeline of the gate's shape, with what deciding a trace needs.
pub(crate) struct Gate {
    filter: FieldExpr,
    op: AggregateOp,
    cmp: CmpOp,
    rhs: f64,
    /// Trace IDs in the memory snapshot the search started from.
    memory_ids: Arc<ahash::AHashSet<TraceId>>,
    ingester: Arc<Ingester>,
}

impl Gate {
    /// The gate for `p` when it is `{ F } | agg(duration) op <duration>` or `{ F } | count() op <number>`.
    pub fn new(p: &Pipeline, memory_ids: Arc<ahash::AHashSet<TraceId>>, ingester: Arc<Ingester>) -> Option<Gate> {
        let [Stage::Spanset(SpansetExpr::Filter(f)), Stage::ScalarFilter(s)] = p.stages.as_slice() else {
            return None;
        };
        let filter = f.expr.clone()?;
        let (ScalarExpr::Aggregate(agg), ScalarExpr::Literal(l)) = (&s.lhs, &s.rhs) else { return None };
        let rhs = match (agg.op, &agg.expr, l) {
            (AggregateOp::Count, None, Literal::Int(n)) => *n as f64,
            (AggregateOp::Count, None, Literal::Float(n)) => *n,
            (
                AggregateOp::Avg | AggregateOp::Min | AggregateOp::Max | AggregateOp::Sum,
                Some(FieldExpr::Field(Field::Intrinsic(Intrinsic::Duration))),
                Literal::Duration(d),
            ) => *d as f64,
            _ => return None,
        };
        Some(Gate { filter, op: agg.op, cmp: s.op, rhs, memory_ids, ingester })
    }

    /// `mask` (block `b`'s candidate rows) without the rows of traces stored only in `b` that cannot match.
    /// Unchanged when `F` has no exact predicate in this block or the columns are not cached.
    pub async fn refine(
        &self,
        ctx: &SessionContext,
        blocks: &BlockStore,
        tenant: &Tenant,
        b: &BlockEntry,
        filter: &Expr,
        mask: BooleanBuffer,
    ) -> Result<BooleanBuffer, QueryError> {
        let slots = Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
        let Some(exact) = exact_filter(&self.filter, &slots) else { return Ok(mask) };
        // Usually the candidate predicate is this very expression: its mask is the selection.
        let selected = match exact == *filter {
            true => mask.clone(),
            false => match cached_mask(ctx, blocks, tenant, b, &exact).await? {
                Some(m) => m,
                None => return Ok(mask),
            },
        };
        let durations = match self.op {
            AggregateOp::Count => None,
            _ => match blocks.columns(tenant, b, &[c::DURATION]).await? {
                Some(batch) => Some(batch.column(0).clone()),
                None => return Ok(mask),
            },
        };
        let durations = match &durations {
            Some(a) => match a.as_primitive_opt::<Int64Type>() {
                Some(d) if d.null_count() == 0 => Some(d),
                _ => return Ok(mask),
            },
            None => None,
        };
        let index = blocks.trace_index(tenant, b).await?;
        if index.num_rows() != mask.len() || selected.len() != mask.len() {
            return Ok(mask);
        }
        // Traces some other place may hold keep their rows: another block (bloom filters), the memory the
        // search started from, or memory now (memory is listed once and looked up in the index, not the other
        // way round: it holds far fewer traces than a block).
        let mut elsewhere: Vec<bool> = blocks.shared_traces(tenant, b, &index).iter().collect();
        for id in self.memory_ids.iter().chain(self.ingester.trace_ids(tenant).iter()) {
            if let Some(t) = index.find(id) {
                elsewhere[t] = true;
            }
        }
        // Rows to keep, appended a trace's run at a time.
        let mut keep = BooleanBufferBuilder::new(mask.len());
        let mut acc = Acc::default();
        let mut t = 0usize;
        let mut close = |t: usize, acc: &mut Acc| {
            keep.append_n(index.rows(t).len(), elsewhere[t] || self.passes(acc));
            *acc = Acc::default();
        };
        // One pass over the selected rows; rows are in trace order, so each trace's are consecutive.
        for r in selected.set_indices() {
            while t < index.len() && r >= index.rows(t).end {
                close(t, &mut acc);
                t += 1;
            }
            acc.add(durations.map_or(0.0, |d| d.value(r) as f64));
        }
        while t < index.len() {
            close(t, &mut acc);
            t += 1;
        }
        Ok(&mask & &keep.finish())
    }

    /// Whether the aggregate over a trace's selected rows passes (none selected: the filter yields no spanset,
    /// so no match).
    fn passes(&self, acc: &Acc) -> bool {
        if acc.n == 0 {
            return false;
        }
        let value = match self.op {
            AggregateOp::Count => acc.n as f64,
            AggregateOp::Sum => acc.sum,
            AggregateOp::Avg => acc.sum / acc.n as f64,
            AggregateOp::Min => acc.min,
            AggregateOp::Max => acc.max,
        };
        cmp_f64(self.cmp, value, self.rhs)
    }
}

/// A trace's selected rows so far: count, and sum, min and max of their durations.
struct Acc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Acc {
    fn default() -> Self {
        Acc { n: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Acc {
    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}
/// Block `b`'s candidate rows from its cached columns (`cached_mask`), less the traces `gate` rules out.
pub(crate) async fn gated_mask(
    ctx: &SessionContext,
    blocks: &BlockStore,
    tenant: &Tenant,
    b: &BlockEntry,
    filter: &Expr,
    gate: Option<&Gate>,
) -> Result<Option<BooleanBuffer>, QueryError> {
    let Some(mask) = cached_mask(ctx, blocks, tenant, b, filter).await? else { return Ok(None) };
    match gate {
        Some(g) => Ok(Some(g.refine(ctx, blocks, tenant, b, filter, mask).await?)),
        None => Ok(Some(mask)),
    }
}
