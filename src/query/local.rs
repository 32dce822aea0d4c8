//! Searches answered from one block's filtered rows, with no whole-trace read.
//!
//! When a query gives the same answer on a trace's filtered rows as on the whole trace (`eval::run_local`), and a
//! trace is stored in one block only (no other block's bloom filter, nor memory, may hold it), the block's rows
//! that pass the candidate predicate are all the search needs: the evaluator runs on them, and the trace-level
//! values come from the columns every row repeats (start, end, root service and name) and from the block's trace
//! index (spans and errors per service). Traces with fragments elsewhere go back to the whole-trace path. On the
//! benchmark set this turns an all-results search from "scan, then read every matching trace whole" into one
//! scan (see `DESIGN.md`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::logical_expr::{Expr, col};
use datafusion::prelude::SessionContext;
use query_lang::Pipeline;

use super::QueryError;
use super::eval::{Evaluator, NO_ROOT_SERVICE, ReadNeeds, TraceData};
use super::gate::{Gate, gated_mask};
use super::prune::{Slots, candidate_filter};
use super::search::cached_mask;
use super::search::{Names, TraceHit, by_name, hit_order, spanset_hits};
use super::table::{BlockTable, ROW_NUMBER};
use crate::block::schema::{self, col as c};
use crate::block::{SpanParts, SpanRows, TraceIndex};
use crate::ingest::Ingester;
use crate::model::{Tenant, TraceId};
use crate::storage::{BlockEntry, BlockStore};

/// What a scan of one source found.
pub(crate) enum Found {
    /// A trace that may match, with an upper bound of its start: evaluated whole later.
    Candidate(TraceId, u64),
    /// A trace stored whole in the scanned block, evaluated on its rows there (the spans it read): the hit when it
    /// matched the query and the time range.
    Settled(TraceId, Option<TraceHit>, u64),
}

/// What every block scan of one local search shares.
pub(crate) struct LocalSearch {
    pub eval: Arc<Evaluator>,
    pub needs: ReadNeeds,
    pub pipeline: Pipeline,
    pub spss: usize,
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// Whether a trace whose rows here do not match must still be checked for fragments elsewhere: true when
    /// fragments could match together where none does alone (`&&`, aggregates), false for filters only.
    pub check_all: bool,
    /// Whether block scans may take their rows from the column cache (`SearchEngine::fits_cache`).
    pub cached: bool,
    /// Trace IDs in the memory snapshot the search started from.
    pub memory_ids: Arc<ahash::AHashSet<TraceId>>,
    /// Rules out traces by the pipeline's aggregate filter before they are scanned (`gate.rs`).
    pub gate: Option<Arc<Gate>>,
    pub ingester: Arc<Ingester>,
    pub blocks: Arc<BlockStore>,
}

impl LocalSearch {
    /// Whether some other place than the scanned block may hold rows of trace `id`: another block (`shared`,
    /// from `BlockStore::shared_traces`), the memory the search started from, or memory now.
    fn elsewhere(&self, tenant: &Tenant, shared: bool, id: &TraceId) -> bool {
        shared || self.memory_ids.contains(id) || self.ingester.holds_trace(tenant, id)
    }
}

/// The columns a local scan of `b` reads: row numbers, the spans' output fields, the trace-level columns, and
/// what the query's fields need.
fn columns(needs: &ReadNeeds, b: &BlockEntry) -> Vec<String> {
    let mut out: Vec<String> = [
        ROW_NUMBER,
        c::SPAN_ID,
        c::NAME,
        c::START,
        c::DURATION,
        c::TRACE_START,
        c::TRACE_END,
        c::ROOT_SERVICE,
        c::ROOT_NAME,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for name in needs.view_columns() {
        if name != c::TRACE_ID && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    add_parts(needs, b, &mut out);
    out
}

/// Adds the optional span parts (attribute lists, slots, events, links) `needs` reads from block `b`.
pub(crate) fn add_parts(needs: &ReadNeeds, b: &BlockEntry, out: &mut Vec<String>) {
    let parts = needs.parts_for(&b.meta);
    for f in schema::schema().fields() {
        if SpanParts::optional(f.name()) && parts.keeps(f.name()) && !out.contains(f.name()) {
            out.push(f.name().clone());
        }
    }
}

/// Scans block `b` for the query and settles the traces stored only there (see the module doc). `None` when the
/// block's index has no per-service counts (then the caller takes the candidate path).
pub(crate) async fn scan_block(
    ctx: &SessionContext,
    tenant: &Tenant,
    b: &Arc<BlockEntry>,
    index: Arc<TraceIndex>,
    local: Arc<LocalSearch>,
    known: Option<BooleanBuffer>,
) -> Result<Vec<Found>, QueryError> {
    let slots = Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
    let filter = candidate_filter(&local.pipeline, &slots);
    let names = columns(&local.needs, b);
    let mask = Mask { gate: local.gate.as_deref(), known };
    let partitions =
        filtered_rows(ctx, tenant, b, filter, &names, &local.blocks, local.cached, index.num_rows(), mask).await?;
    let (tenant, b) = (tenant.clone(), b.clone());
    tokio::spawn(async move { settle(&tenant, &b, &index, &local, partitions) }).await?
}

/// How a cached scan finds its rows: the block's candidate rows when the search already has them (the index
/// walk's), else computed and narrowed by the aggregate gate.
#[derive(Default)]
pub(crate) struct Mask<'a> {
    pub gate: Option<&'a Gate>,
    pub known: Option<BooleanBuffer>,
}

/// The rows of block `b` that pass `filter` (every row without one), with the columns `names` and their row
/// numbers: from the cached decoded columns when `cached` allows it and every column is a plain one, otherwise
/// from a Parquet scan with the filter pushed down. Partitions cover disjoint stretches of the file, in no
/// particular order; rows within one come in file order.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn filtered_rows(
    ctx: &SessionContext,
    tenant: &Tenant,
    b: &BlockEntry,
    filter: Option<Expr>,
    names: &[String],
    blocks: &Arc<BlockStore>,
    cached: bool,
    num_rows: usize,
    mask: Mask<'_>,
) -> Result<Vec<Vec<RecordBatch>>, QueryError> {
    let known = mask.known.clone();
    if cached && let Some(batch) = cached_scan(ctx, tenant, b, filter.as_ref(), names, blocks, num_rows, mask).await? {
        return Ok(vec![vec![batch]]);
    }
    // Some column is not a plain one (an attribute list): the Parquet scan reads it. A block where no row can
    // pass (its bitmap from the cached columns and attribute-list leaves, which skip row groups by their value
    // filters) is not scanned at all: a rare attribute value sits in a few blocks.
    if cached && let Some(f) = &filter {
        let rows = match known {
            Some(k) => Some(k),
            None => cached_mask(ctx, blocks, tenant, b, f).await?,
        };
        if rows.is_some_and(|r| r.count_set_bits() == 0) {
            return Ok(Vec::new());
        }
    }
    if let Some(f) = &filter
        && super::search::ruled_out_by_blooms(blocks, tenant, b, f).await?
    {
        return Ok(Vec::new());
    }
    let table = BlockTable::new(tenant, b, blocks.object_store()).with_row_numbers();
    let mut df = ctx.read_table(Arc::new(table))?;
    if let Some(filter) = filter {
        df = df.filter(filter)?;
    }
    let df = df.select(names.iter().map(|n| col(n.as_str())).collect::<Vec<_>>())?;
    Ok(tokio::spawn(df.collect_partitioned()).await??)
}

/// Evaluates a span-local pipeline (`eval::span_local`) on one batch of rows in file order, a run of one
/// trace's rows at a time, and hands each run with spansets to `visit`. Returns the number of rows.
pub(crate) fn each_run(
    batch: &RecordBatch,
    dedicated: &[crate::block::DedicatedColumn],
    eval: &Evaluator,
    visit: &mut dyn FnMut(&TraceData, &[super::eval::SpanSet]),
) -> Result<u64, QueryError> {
    let n = batch.num_rows();
    if n == 0 {
        return Ok(0);
    }
    let rows = [SpanRows::partial(batch, dedicated)?];
    let view = &rows[0];
    let mut i = 0;
    while i < n {
        let raw = view.trace_id(i);
        let mut j = i + 1;
        while j < n && view.trace_id(j) == raw {
            j += 1;
        }
        if let Some(id) = TraceId::from_bytes(raw) {
            let t = TraceData::local(id, &rows, (i..j).map(|r| (0u32, r as u32)).collect());
            let sets = eval.evaluate(&t);
            if !sets.is_empty() {
                visit(&t, &sets);
            }
        }
        i = j;
    }
    Ok(n as u64)
}

/// The scan's rows taken from the block's cached decoded columns (`BlockStore::columns`), with their row
/// numbers, when the filter and every column are plain ones; `None` otherwise (the Parquet scan answers).
#[allow(clippy::too_many_arguments)]
async fn cached_scan(
    ctx: &SessionContext,
    tenant: &Tenant,
    b: &BlockEntry,
    filter: Option<&Expr>,
    names: &[String],
    blocks: &BlockStore,
    num_rows: usize,
    mask: Mask<'_>,
) -> Result<Option<RecordBatch>, QueryError> {
    let rows = match (filter, mask.known) {
        (Some(_), Some(known)) => Some(UInt32Array::from_iter_values(known.set_indices().map(|r| r as u32))),
        (Some(f), None) => match gated_mask(ctx, blocks, tenant, b, f, mask.gate).await? {
            Some(m) => Some(UInt32Array::from_iter_values(m.set_indices().map(|r| r as u32))),
            None => return Ok(None),
        },
        (None, _) => None,
    };
    let plain: Vec<&str> = names.iter().map(String::as_str).filter(|n| *n != ROW_NUMBER).collect();
    // Strings stay dictionary-encoded: the readers of these rows (`SpanRows::partial`, `TraceLevel`) take both.
    let Some(taken) = blocks.take_cached(tenant, b, &plain, rows.as_ref(), true).await? else { return Ok(None) };
    let mut fields = vec![Arc::new(Field::new(ROW_NUMBER, DataType::Int64, false))];
    fields.extend(taken.schema().fields().iter().cloned());
    let numbers = match &rows {
        Some(rows) => Int64Array::from_iter_values(rows.values().iter().map(|&r| i64::from(r))),
        None => Int64Array::from_iter_values(0..num_rows as i64),
    };
    let mut columns: Vec<ArrayRef> = vec![Arc::new(numbers)];
    columns.extend(taken.columns().iter().cloned());
    Ok(Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?))
}

/// Groups the scanned rows by trace (through the row numbers and the index) and evaluates each trace.
fn settle(
    tenant: &Tenant,
    b: &Arc<BlockEntry>,
    index: &TraceIndex,
    local: &LocalSearch,
    mut partitions: Vec<Vec<RecordBatch>>,
) -> Result<Vec<Found>, QueryError> {
    // Partitions cover disjoint stretches of the file; in order of their first row, rows come in file order.
    let first_row = |p: &Vec<RecordBatch>| {
        p.iter()
            .find(|x| x.num_rows() > 0)
            .and_then(|x| x.column_by_name(ROW_NUMBER))
            .and_then(|r| r.as_primitive_opt::<Int64Type>().map(|r| r.value(0)))
            .unwrap_or(i64::MAX)
    };
    partitions.sort_by_key(first_row);
    let batches: Vec<RecordBatch> = partitions.into_iter().flatten().filter(|x| x.num_rows() > 0).collect();
    let views =
        batches.iter().map(|x| SpanRows::partial(x, &b.meta.dedicated_columns)).collect::<Result<Vec<_>, _>>()?;
    // (trace position, batch, row) of every scanned row.
    let mut rows: Vec<(u32, u32, u32)> = Vec::new();
    for (bi, batch) in batches.iter().enumerate() {
        let numbers = batch
            .column_by_name(ROW_NUMBER)
            .and_then(|r| r.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| QueryError::Internal("local scan: no row numbers".into()))?;
        let mut last: Option<usize> = None;
        for (r, n) in numbers.iter().enumerate() {
            let Some(n) = n.map(|n| n as usize) else { continue };
            let known = last.filter(|&t| index.rows(t).contains(&n));
            let Some(t) = known.or_else(|| index.trace_of_row(n)) else { continue };
            last = Some(t);
            rows.push((t as u32, bi as u32, r as u32));
        }
    }
    if !rows.is_sorted_by_key(|r| r.0) {
        rows.sort_by_key(|r| r.0);
    }
    let levels = batches.iter().map(TraceLevel::new).collect::<Result<Vec<_>, _>>()?;
    // The block list is read now, not at the search's start: a block flushed or compacted meanwhile must count
    // as "elsewhere".
    let shared = local.blocks.shared_traces(tenant, b, index);
    let mut out = Vec::new();
    let mut names = Names::default();
    for run in rows.chunk_by(|a, b| a.0 == b.0) {
        let pos = run[0].0 as usize;
        let id = index.id(pos);
        let refs: Vec<(u32, u32)> = run.iter().map(|&(_, bi, r)| (bi, r)).collect();
        let (bi, r) = (refs[0].0 as usize, refs[0].1 as usize);
        let t = TraceData::local(id, &views, refs);
        let sets = local.eval.evaluate(&t);
        if sets.is_empty() && !local.check_all {
            continue;
        }
        if local.elsewhere(tenant, shared.value(pos), &id) {
            out.push(Found::Candidate(id, index.start(pos)));
            continue;
        }
        let level = &levels[bi];
        let (start, end) = level.span(r);
        let in_range = !(local.start.is_some_and(|s| end < s) || local.end.is_some_and(|e| start > e));
        let hit = (!sets.is_empty() && in_range).then(|| {
            let (root_service, root_name) = level.root(r);
            TraceHit {
                trace_id: id,
                root_service_name: names.get(root_service),
                root_trace_name: root_name.map(|n| names.get(n)),
                start_unix_nano: start,
                duration_nanos: end.saturating_sub(start),
                spansets: spanset_hits(&t, &local.eval, sets, local.spss, &mut names),
                service_stats: by_name(index.service_stats(pos).map(|(s, n, e)| (names.get(s), (n, e))).collect()),
            }
        });
        out.push(Found::Settled(id, hit, t.len() as u64));
    }
    // Hits newest first, as the answer orders them: the search then merges each block's sorted run instead of
    // sorting all hits on one core (a tenth of an all-traces search).
    // (Hits first; the rest keep no particular order.)
    out.sort_unstable_by(|a, b| match (a, b) {
        (Found::Settled(_, Some(a), _), Found::Settled(_, Some(b), _)) => hit_order(a, b),
        (Found::Settled(_, Some(_), _), _) => std::cmp::Ordering::Less,
        (_, Found::Settled(_, Some(_), _)) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    });
    Ok(out)
}

/// The trace-level columns of a scanned batch (every row repeats its trace's values in the block).
struct TraceLevel {
    start: arrow::array::Int64Array,
    end: arrow::array::Int64Array,
    root_service: crate::block::Text,
    root_name: crate::block::Text,
}

impl TraceLevel {
    fn new(batch: &RecordBatch) -> Result<Self, QueryError> {
        fn column<T: Clone + 'static>(batch: &RecordBatch, name: &str) -> Result<T, QueryError> {
            crate::block::column(batch, name).map_err(|e| QueryError::Internal(format!("local scan: {e}")))
        }
        fn text(batch: &RecordBatch, name: &str) -> Result<crate::block::Text, QueryError> {
            crate::block::Text::column(batch, name).map_err(|e| QueryError::Internal(format!("local scan: {e}")))
        }
        Ok(TraceLevel {
            start: column(batch, c::TRACE_START)?,
            end: column(batch, c::TRACE_END)?,
            root_service: text(batch, c::ROOT_SERVICE)?,
            root_name: text(batch, c::ROOT_NAME)?,
        })
    }

    /// The trace's start and end in Unix nanoseconds (a null or negative stored value reads as 0).
    fn span(&self, r: usize) -> (u64, u64) {
        let nanos = |a: &arrow::array::Int64Array| if a.is_null(r) { 0 } else { a.value(r).max(0) as u64 };
        (nanos(&self.start), nanos(&self.end))
    }

    /// The root span's service and name, as the whole-trace evaluator reports them: no root span at all reads
    /// as [`NO_ROOT_SERVICE`] with no name; a root without a service name as an empty service.
    fn root(&self, r: usize) -> (&str, Option<&str>) {
        if self.root_name.is_null(r) {
            return (NO_ROOT_SERVICE, None);
        }
        let service = if self.root_service.is_null(r) { "" } else { self.root_service.value(r) };
        (service, Some(self.root_name.value(r)))
    }
}
