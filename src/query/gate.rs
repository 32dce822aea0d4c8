//! The trace gate: rules out traces stored whole in one block before any of them is read.
//!
//! Two rules, each deciding a trace from the block's cached columns alone:
//! - **Required filters.** When the query cannot match without several `{ }` filters (both sides of `&&` and of
//!   the structural operators: `prune::required_filters`), a trace needs a row passing each of them. The index
//!   walk applied this per trace position; in the gate it also narrows the scans of an "all results" search,
//!   which otherwise fetched every trace passing either side whole (`{ checkout } >> { payment && error }`:
//!   ~46k candidates for 1.4k matches).
//! - **Aggregates.** For `{ F } | agg(duration) op x` (or `count() op n`), when `F` has an exact row predicate in
//!   the block (`prune::exact_filter`: intrinsics, `service.name`, slots that hold every value of their key),
//!   the aggregate over each trace's rows passing it is computed at once from the exact mask, the duration
//!   column and the trace index's row ranges.
//!
//! Traces failing a rule lose their rows from the block's candidate mask, so neither the index walk nor the scans
//! read or evaluate them. Traces other blocks or memory may hold are left alone: fragments elsewhere can supply
//! the missing rows or change the aggregate. The gate only removes traces that cannot match; the ones it keeps
//! are evaluated exactly as before.

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
use super::prune::{Slots, exact_filter, required_filters};
use super::search::{cached_mask, maskable};
use crate::block::TraceIndex;
use crate::block::schema::col as c;
use crate::ingest::Ingester;
use crate::model::{Tenant, TraceId};
use crate::storage::{BlockEntry, BlockStore};

/// The rules that apply to a pipeline, with what deciding a trace needs.
pub(crate) struct Gate {
    aggregate: Option<AggregateRule>,
    /// The pipeline, whose required filters are built per block (slots differ); `None` when it has one at most.
    required: Option<Pipeline>,
    /// Trace IDs in the memory snapshot the search started from.
    memory_ids: Arc<ahash::AHashSet<TraceId>>,
    ingester: Arc<Ingester>,
}

/// `{ F } | agg(duration) op <duration>` or `{ F } | count() op <number>`.
struct AggregateRule {
    filter: FieldExpr,
    op: AggregateOp,
    cmp: CmpOp,
    rhs: f64,
}

impl AggregateRule {
    fn new(p: &Pipeline) -> Option<Self> {
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
        Some(AggregateRule { filter, op: agg.op, cmp: s.op, rhs })
    }
}

impl Gate {
    /// The gate for `p`, when one of its rules applies.
    pub fn new(p: &Pipeline, memory_ids: Arc<ahash::AHashSet<TraceId>>, ingester: Arc<Ingester>) -> Option<Gate> {
        let aggregate = AggregateRule::new(p);
        // Slots only decide how a filter is tested, not whether it is required: the default ones count them.
        let required = (required_filters(p, &Slots::default()).len() > 1).then(|| p.clone());
        (aggregate.is_some() || required.is_some()).then_some(Gate { aggregate, required, memory_ids, ingester })
    }

    /// `mask` (block `b`'s candidate rows) without the rows of traces stored only in `b` that cannot match.
    /// Unchanged where a rule cannot be decided from cached columns.
    pub async fn refine(
        &self,
        ctx: &SessionContext,
        blocks: &BlockStore,
        tenant: &Tenant,
        b: &BlockEntry,
        filter: &Expr,
        mask: BooleanBuffer,
    ) -> Result<BooleanBuffer, QueryError> {
        let index = blocks.trace_index(tenant, b).await?;
        if index.num_rows() != mask.len() {
            return Ok(mask);
        }
        let mut possible = vec![true; index.len()];
        let mut decided = false;
        if let Some(rule) = &self.aggregate
            && let Some(pass) = rule.traces(ctx, blocks, tenant, b, filter, &mask, &index).await?
        {
            possible.iter_mut().zip(pass).for_each(|(p, ok)| *p &= ok);
            decided = true;
        }
        if let Some(p) = &self.required {
            let slots = Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
            let filters: Vec<Expr> = required_filters(p, &slots).into_iter().filter(maskable).collect();
            if filters.len() > 1 {
                for f in &filters {
                    // A filter whose rows are unknown rules nothing out.
                    let Some(rows) = cached_mask(ctx, blocks, tenant, b, f).await? else { continue };
                    if rows.len() != mask.len() {
                        continue;
                    }
                    possible.iter_mut().zip(traces_with_rows(&rows, &index)).for_each(|(p, has)| *p &= has);
                    decided = true;
                }
            }
        }
        if !decided {
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
        for t in 0..index.len() {
            keep.append_n(index.rows(t).len(), elsewhere[t] || possible[t]);
        }
        Ok(&mask & &keep.finish())
    }
}

/// Per trace position, whether `rows` holds one of the trace's rows (rows are in trace order).
fn traces_with_rows(rows: &BooleanBuffer, index: &TraceIndex) -> Vec<bool> {
    let mut out = vec![false; index.len()];
    let mut t = 0usize;
    for r in rows.set_indices() {
        while t < index.len() && r >= index.rows(t).end {
            t += 1;
        }
        if let Some(o) = out.get_mut(t) {
            *o = true;
        }
    }
    out
}

impl AggregateRule {
    /// Per trace position, whether the aggregate over the trace's rows passing `F` passes; `None` when `F` has
    /// no exact predicate in this block or the columns are not cached.
    #[allow(clippy::too_many_arguments)]
    async fn traces(
        &self,
        ctx: &SessionContext,
        blocks: &BlockStore,
        tenant: &Tenant,
        b: &BlockEntry,
        filter: &Expr,
        mask: &BooleanBuffer,
        index: &TraceIndex,
    ) -> Result<Option<Vec<bool>>, QueryError> {
        let slots = Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
        let Some(exact) = exact_filter(&self.filter, &slots) else { return Ok(None) };
        // Usually the candidate predicate is this very expression: its mask is the selection.
        let selected = match exact == *filter {
            true => mask.clone(),
            false => match cached_mask(ctx, blocks, tenant, b, &exact).await? {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        let durations = match self.op {
            AggregateOp::Count => None,
            _ => match blocks.columns(tenant, b, &[c::DURATION]).await? {
                Some(batch) => Some(batch.column(0).clone()),
                None => return Ok(None),
            },
        };
        let durations = match &durations {
            Some(a) => match a.as_primitive_opt::<Int64Type>() {
                Some(d) if d.null_count() == 0 => Some(d),
                _ => return Ok(None),
            },
            None => None,
        };
        if selected.len() != index.num_rows() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(index.len());
        let mut acc = Acc::default();
        let mut t = 0usize;
        // One pass over the selected rows; rows are in trace order, so each trace's are consecutive.
        for r in selected.set_indices() {
            while t < index.len() && r >= index.rows(t).end {
                out.push(self.passes(&acc));
                acc = Acc::default();
                t += 1;
            }
            acc.add(durations.map_or(0.0, |d| d.value(r) as f64));
        }
        while t < index.len() {
            out.push(self.passes(&acc));
            acc = Acc::default();
            t += 1;
        }
        Ok(Some(out))
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
