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
use datafusion::prelude::SessionContext;
use query_lang::{AggregateOp, CmpOp, Field, FieldExpr, Intrinsic, Literal, Pipeline, ScalarExpr, SpansetExpr, Stage};

use super::QueryError;
use super::eval::cmp_f64;
use super::prune::{Slots, exact_filter};
use super::search::cached_mask;
use crate::block::TraceIndex;
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
        mask: BooleanBuffer,
    ) -> Result<BooleanBuffer, QueryError> {
        let slots = Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
        let Some(exact) = exact_filter(&self.filter, &slots) else { return Ok(mask) };
        let Some(selected) = cached_mask(ctx, blocks, tenant, b, &exact).await? else { return Ok(mask) };
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
        let shared = blocks.shared_traces(tenant, b, &index);
        let mut out = BooleanBufferBuilder::new(mask.len());
        out.append_buffer(&mask);
        for t in 0..index.len() {
            let rows = index.rows(t);
            if self.passes(&selected, durations, rows.clone()) || self.elsewhere(tenant, &index, &shared, t) {
                continue;
            }
            for r in rows {
                out.set_bit(r, false);
            }
        }
        Ok(out.finish())
    }

    /// Whether the aggregate over the selected rows in `rows` passes (no selected row: the filter yields no
    /// spanset, so no match).
    fn passes(
        &self,
        selected: &BooleanBuffer,
        durations: Option<&arrow::array::PrimitiveArray<Int64Type>>,
        rows: std::ops::Range<usize>,
    ) -> bool {
        let (mut n, mut sum, mut min, mut max) = (0u64, 0f64, f64::INFINITY, f64::NEG_INFINITY);
        for r in selected.slice(rows.start, rows.len()).set_indices() {
            n += 1;
            if let Some(d) = durations {
                let v = d.value(rows.start + r) as f64;
                sum += v;
                min = min.min(v);
                max = max.max(v);
            }
        }
        if n == 0 {
            return false;
        }
        let value = match self.op {
            AggregateOp::Count => n as f64,
            AggregateOp::Sum => sum,
            AggregateOp::Avg => sum / n as f64,
            AggregateOp::Min => min,
            AggregateOp::Max => max,
        };
        cmp_f64(self.cmp, value, self.rhs)
    }

    /// Whether some other place may hold rows of trace `t`: another block, the memory the search started from,
    /// or memory now.
    fn elsewhere(&self, tenant: &Tenant, index: &TraceIndex, shared: &BooleanBuffer, t: usize) -> bool {
        if shared.value(t) {
            return true;
        }
        let id = index.id(t);
        self.memory_ids.contains(&id) || self.ingester.holds_trace(tenant, &id)
    }
}

/// Block `b`'s candidate rows from its cached columns (`cached_mask`), less the traces `gate` rules out.
pub(crate) async fn gated_mask(
    ctx: &SessionContext,
    blocks: &BlockStore,
    tenant: &Tenant,
    b: &BlockEntry,
    filter: &datafusion::logical_expr::Expr,
    gate: Option<&Gate>,
) -> Result<Option<BooleanBuffer>, QueryError> {
    let Some(mask) = cached_mask(ctx, blocks, tenant, b, filter).await? else { return Ok(None) };
    match gate {
        Some(g) => Ok(Some(g.refine(ctx, blocks, tenant, b, mask).await?)),
        None => Ok(Some(mask)),
    }
}
