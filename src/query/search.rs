//! TraceQL search: candidates from DataFusion scans, exact per-trace evaluation, newest first.
//!
//! Plan (see `DESIGN.md`): sources are the data in memory and the tenant's blocks, taken newest first (block end
//! time). Each source is scanned by a DataFusion plan: the query's candidate predicate (`prune`) pushed into the
//! Parquet scan, then `GROUP BY trace_id` with the earliest start of the trace's rows in that source (an upper
//! bound of the trace's real start). Candidates are evaluated newest bound first: all fragments of the trace are
//! fetched from every source that may hold it (blooms) and the evaluator decides exactly. The walk stops once
//! `limit` matches are known whose start is later than anything an unread source could hold.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, make_array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::Int64Type;
use arrow::datatypes::{Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::DFSchema;
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, col};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use query_lang::Pipeline;

use super::QueryError;
use super::eval::{Evaluator, NO_ROOT_SERVICE, ReadNeeds, SpanSet, TraceData, run_local, span_local};
use super::gate::{Gate, gated_mask};
use super::local::{self, Found, LocalSearch};
use super::prune::{Slots, candidate_filter, list_values_tested, required_list_values};
use super::table::{BlockTable, ROW_NUMBER};
use crate::block::schema::{self, col as c};
use crate::block::{SpanParts, SpanRows, traces_to_batches};
use crate::ingest::Ingester;
use crate::model::{SpanRecord, Tenant, TraceId};
use crate::storage::{BlockEntry, BlockStore};

/// Sources scanned in the first round (memory and the two newest blocks: one per core here), doubling each round
/// up to the maximum: a `limit=20` search usually ends after the first, a search for everything soon scans
/// several blocks at once.
const FIRST_ROUND: usize = 3;
const MAX_ROUND: usize = 8;
/// Fewest traces fetched and evaluated together.
const MIN_EVAL_BATCH: usize = 16;
/// Above this `limit`, a search evaluates after scanning everything, in trace-ID order, `BULK_CHUNK` at a time.
const BULK_LIMIT: usize = 1000;
const BULK_CHUNK: usize = 4096;
/// Largest `limit` served by walking trace indexes newest first before any scan.
const WALK_LIMIT: usize = 200;
/// Most blocks the index walk opens before candidate scans take over.
const WALK_MAX_BLOCKS: usize = 64;
/// Most traces the index walk evaluates before candidate scans take over.
const WALK_MAX: usize = 1024;
/// The walk goes on only while its match rate promises the `limit` newest within this many traces: fetching
/// ~128 scattered traces costs about what scanning the candidate columns of every block does (measured on the
/// benchmark's 8 blocks: 0.3 ms per trace against ~35 ms of scans).
const WALK_WORTH: usize = 128;
/// Concurrent block reads when fetching candidate traces.
/// Decoded bytes per span of the columns a search caches (measured: ~70 MB for the 800k spans of the benchmark
/// set, with the view, trace-level and filter columns), rounded up for dedicated slots.
const CACHED_BYTES_PER_SPAN: u64 = 128;
/// Traces the index walk may pass over for having no row that passes the predicate before it hands over to the
/// scans (the matches are rare: scanning the cached columns finds them at once).
const WALK_PASS_MAX: usize = 8192;
const FETCH_CONCURRENCY: usize = 8;

/// A search, as the API hands it over.
pub struct SearchRequest {
    pub pipeline: Pipeline,
    pub limit: usize,
    pub spans_per_spanset: usize,
    /// Unix nanoseconds; a trace is returned when it overlaps the range.
    pub start: Option<u64>,
    pub end: Option<u64>,
}

/// What a tag listing reads from each matching trace besides what the query itself reads.
#[derive(Clone, Copy)]
pub(crate) enum Reads<'a> {
    /// Everything (tag names of every scope).
    All,
    /// These fields (the values of one tag; the grouping and value fields of a metrics query).
    Fields(&'a [query_lang::Field]),
}

/// One span of a returned spanset.
#[derive(Clone)]
pub struct SpanHit {
    /// Stored span IDs are 8 bytes (the block column is fixed-size).
    pub span_id: [u8; 8],
    pub name: Arc<str>,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone)]
pub struct SpansetHit {
    pub spans: Vec<SpanHit>,
    pub matched: u32,
    pub attributes: Vec<KeyValue>,
}

/// A matching trace with its trace-level values (computed over all of its spans).
#[derive(Clone)]
pub struct TraceHit {
    pub trace_id: TraceId,
    pub root_service_name: Arc<str>,
    pub root_trace_name: Option<Arc<str>>,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    pub spansets: Vec<SpansetHit>,
    /// Service name -> (span count, error count), by name (a vector: a map's node costs ~10x more per trace).
    pub service_stats: Vec<(Arc<str>, (u32, u32))>,
}

/// Shares the equal strings of the hits one scan builds (names, services): a 100k-trace answer otherwise
/// allocates a dozen strings per trace, and frees them later on another thread (measured: a fifth of the
/// server's CPU for that answer went to allocating and freeing).
#[derive(Default)]
pub(crate) struct Names<'a>(ahash::AHashMap<&'a str, Arc<str>>);

impl<'a> Names<'a> {
    pub(crate) fn get(&mut self, s: &'a str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(s, a.clone());
        a
    }
}

#[derive(Default, Clone, Debug)]
pub struct SearchStats {
    pub inspected_traces: u64,
    pub inspected_spans: u64,
    pub inspected_bytes: u64,
    pub total_blocks: u32,
    pub total_block_bytes: u64,
    pub completed_jobs: u32,
    pub total_jobs: u32,
}

pub struct SearchResult {
    pub traces: Vec<TraceHit>,
    pub stats: SearchStats,
}

/// The state a search's walk shares with its candidate scans.
struct Walk<'a> {
    seen: &'a mut ahash::AHashSet<TraceId>,
    pending: &'a mut BinaryHeap<(u64, Reverse<TraceId>)>,
    hits: &'a mut Vec<TraceHit>,
    stats: &'a mut SearchStats,
    /// Traces already streamed to the client.
    reported: &'a mut HashSet<TraceId>,
    /// Blocks already counted against the scan budget.
    counted: &'a mut HashSet<String>,
    /// Rows passing the candidate predicate per opened block, when it is answered from cached columns.
    masks: Option<&'a mut Masks>,
    /// Whether fetches may take rows from the column cache (see `SearchEngine::fits_cache`).
    cache: bool,
    /// Rules out traces by the pipeline's aggregate filter (`gate.rs`).
    gate: Option<&'a Arc<Gate>>,
}

/// Where a search reads from.
pub(crate) enum Source {
    Memory(Vec<RecordBatch>),
    Block(Arc<BlockEntry>),
}

impl Source {
    /// The block's ID, or `None` for memory.
    pub(crate) fn block(&self) -> Option<&Arc<BlockEntry>> {
        match self {
            Source::Memory(_) => None,
            Source::Block(b) => Some(b),
        }
    }

    /// Latest span start any trace fragment of this source can have.
    fn max_start(&self) -> u64 {
        match self {
            Source::Memory(_) => u64::MAX,
            Source::Block(b) => b.meta.end_time_unix_nano,
        }
    }
}

/// Per-block tag answers: (block ID, what was asked) -> names or rendered values.
pub(crate) type TagCache = parking_lot::Mutex<HashMap<(String, String), Arc<Vec<String>>>>;

/// Sees each matching trace whole, with the spansets the query yields for it, as the search evaluates it.
pub(crate) type Visit<'a> = &'a mut VisitFn<'a>;

/// The callback behind [`Visit`], for a visitor that lives for `'v`.
pub(crate) type VisitFn<'v> = dyn FnMut(&TraceData<'_>, &[SpanSet]) + Send + 'v;

/// Receives the traces a search is already sure of, with the counters so far.
pub type Progress<'a> = &'a mut (dyn FnMut(Vec<TraceHit>, &SearchStats) + Send);

/// A progress callback reborrowed for a part of the search (`'a`) from one that lives for `'b`.
type ProgressFn<'a, 'b> = &'a mut (dyn FnMut(Vec<TraceHit>, &SearchStats) + Send + 'b);

/// A DataFusion table over one source, with its dedicated slots.
pub(crate) type SourceTable = (Arc<dyn TableProvider>, Slots);

/// Runs searches for one server: the DataFusion runtime (object store registration, footer cache) is shared.
pub struct SearchEngine {
    runtime: Arc<RuntimeEnv>,
    ingester: Arc<Ingester>,
    pub(crate) blocks: Arc<BlockStore>,
    /// Tag names and values per block (blocks never change, so entries never go stale), bounded.
    pub(crate) tag_cache: TagCache,
    /// Most block bytes one search may scan.
    pub(crate) max_scan_bytes: u64,
}

impl SearchEngine {
    pub fn new(
        ingester: Arc<Ingester>,
        blocks: Arc<BlockStore>,
        limits: &crate::config::QueryLimits,
    ) -> Result<Self, QueryError> {
        // A bounded memory pool: a grouping or sort that needs more fails the query, not the server.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()?;
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse(super::table::STORE_URL)?;
        runtime.register_object_store(url.as_ref(), blocks.object_store());
        Ok(SearchEngine {
            runtime,
            ingester,
            blocks,
            tag_cache: TagCache::default(),
            max_scan_bytes: limits.max_scan_bytes,
        })
    }

    pub(crate) fn context(&self) -> SessionContext {
        // Blocks are scanned concurrently by the search itself; within one block, a scan is split by row group
        // over the cores, so a large (compacted) block is not read on one core.
        let cores = cores();
        let config = SessionConfig::new().with_target_partitions(cores).with_batch_size(8192);
        SessionContext::new_with_config_rt(config, self.runtime.clone())
    }

    /// The sources a query over `[start, end]` reads: memory first (it may hold anything, and it is read before
    /// the block list so a head that moves into a block meanwhile is seen at least once), then blocks overlapping
    /// the range, newest end time first.
    pub(crate) fn sources(
        &self,
        tenant: &Tenant,
        start: Option<u64>,
        end: Option<u64>,
    ) -> Result<Vec<Source>, QueryError> {
        let mut sources = vec![Source::Memory(self.ingester.search_batches(tenant)?)];
        let all_blocks = self.blocks.blocks(tenant);
        let mut in_range: Vec<Arc<BlockEntry>> = all_blocks
            .iter()
            .filter(|b| {
                end.is_none_or(|e| b.meta.start_time_unix_nano <= e)
                    && start.is_none_or(|s| b.meta.end_time_unix_nano >= s)
            })
            .cloned()
            .collect();
        in_range.sort_by(|a, b| {
            b.meta
                .end_time_unix_nano
                .cmp(&a.meta.end_time_unix_nano)
                .then_with(|| a.meta.block_id.cmp(&b.meta.block_id))
        });
        sources.extend(in_range.into_iter().map(Source::Block));
        Ok(sources)
    }

    pub async fn search(&self, tenant: &Tenant, req: &SearchRequest) -> Result<SearchResult, QueryError> {
        self.search_with(tenant, req, None, None).await
    }

    /// A search that reports progress: after each round of sources, `progress` gets the traces that are now
    /// certain to be in the answer (newer than anything unread; each reported once) and the counters so far.
    pub async fn search_streaming(
        &self,
        tenant: &Tenant,
        req: &SearchRequest,
        progress: Progress<'_>,
    ) -> Result<SearchResult, QueryError> {
        self.search_with(tenant, req, None, Some(progress)).await
    }

    /// Runs a search; when `keep` is given, it sees every matching trace in the range whole, one at a time, and
    /// nothing is collected (tag values narrowed by a query and metrics queries need them, not the hits).
    pub(crate) async fn search_with(
        &self,
        tenant: &Tenant,
        req: &SearchRequest,
        keep: Option<(Visit<'_>, Reads<'_>)>,
        mut progress: Option<Progress<'_>>,
    ) -> Result<SearchResult, QueryError> {
        let needs = match keep.as_ref().map(|k| k.1) {
            None => Some(ReadNeeds::new(&req.pipeline)),
            Some(Reads::All) => None,
            Some(Reads::Fields(fs)) => Some(fs.iter().fold(ReadNeeds::new(&req.pipeline), ReadNeeds::with_field)),
        };
        let needs = needs.as_ref();
        let mut keep = keep.map(|k| k.0);
        let mut reported: HashSet<TraceId> = HashSet::new();
        let eval = Arc::new(Evaluator::new(req.pipeline.clone()));
        let limit = if keep.is_some() { usize::MAX } else { req.limit.max(1) };
        let mut stats = SearchStats::default();
        let sources = self.sources(tenant, req.start, req.end)?;
        let fits = self.fits_cache(&sources);
        // Traces stored in one block are answered from that block's scan when the query allows it.
        // For small limits only when candidates may be many more than matches (aggregates, `&&`): a local scan
        // decodes the output columns of every candidate row, which costs more than reading the few traces a
        // limit-20 answer needs when candidates are matches (measured on the benchmark set: a limit-20 search for
        // a status code 50 -> 85 ms; all results for 1.4k traces 105 -> 91 ms, for 50k traces 0.94 -> 0.59 s; a
        // pipeline matching nothing, limit 20, 735 -> 221 ms).
        let filters_only = span_local(&req.pipeline, &[]);
        let memory_ids = Arc::new(memory_trace_ids(&sources[0]));
        // When the candidate predicate names only plain columns, each block answers it from its cached decoded
        // columns (a fraction of a millisecond once warm): the walk then skips traces with no passing row, and
        // scans are cheap enough to take many blocks per round.
        let cached =
            fits && sources[1..].iter().filter_map(Source::block).all(|b| block_filter(&req.pipeline, b).is_some());
        let gate = match cached {
            true => Gate::new(&req.pipeline, memory_ids.clone(), self.ingester.clone()).map(Arc::new),
            false => None,
        };
        let local = (keep.is_none() && run_local(&req.pipeline) && (limit > BULK_LIMIT || !filters_only)).then(|| {
            Arc::new(LocalSearch {
                eval: eval.clone(),
                needs: ReadNeeds::new(&req.pipeline),
                pipeline: req.pipeline.clone(),
                spss: req.spans_per_spanset,
                start: req.start,
                end: req.end,
                check_all: !filters_only,
                cached: fits,
                memory_ids: memory_ids.clone(),
                gate: gate.clone(),
                ingester: self.ingester.clone(),
                blocks: self.blocks.clone(),
            })
        });
        stats.total_blocks = (sources.len() - 1) as u32;
        stats.total_block_bytes =
            sources.iter().map(|s| if let Source::Block(b) = s { b.meta.data_size } else { 0 }).sum();
        stats.total_jobs = sources.len() as u32;

        let ctx = self.context();
        let mut pending: BinaryHeap<(u64, Reverse<TraceId>)> = BinaryHeap::new();
        let mut seen: ahash::AHashSet<TraceId> = ahash::AHashSet::new();
        let mut hits: Vec<TraceHit> = Vec::new();
        // Blocks counted against the scan budget (the walk and the scans may both read one).
        let mut counted: HashSet<String> = HashSet::new();
        let mut next = 0usize;
        let mut masks: Option<Masks> = cached.then(Masks::default);
        if limit <= WALK_LIMIT && sources.len() > 1 {
            let mut walk = Walk {
                seen: &mut seen,
                pending: &mut pending,
                hits: &mut hits,
                stats: &mut stats,
                reported: &mut reported,
                counted: &mut counted,
                masks: masks.as_mut(),
                cache: fits,
                gate: gate.as_ref(),
            };
            let (k, p) = (keep.as_deref_mut(), progress.as_deref_mut());
            if self.index_walk(&ctx, tenant, &eval, req, needs, &sources, limit, &mut walk, k, p).await? {
                stats.completed_jobs = stats.total_jobs;
                return Ok(SearchResult { traces: hits, stats });
            }
            // Memory was scanned by the walk; the candidate scans go on with the blocks.
            next = 1;
        }
        // A bulk search reads every source anyway: one round, so no source waits for a slower one of its round.
        let mut round_size = if limit > BULK_LIMIT {
            sources.len()
        } else if cached {
            MAX_ROUND
        } else {
            FIRST_ROUND
        };
        let mut evaluated = 0usize;
        loop {
            let watermark = sources[next..].iter().map(Source::max_start).max();
            let mut bulk = limit > BULK_LIMIT;
            if !bulk {
                // Evaluate candidates that could still enter the top `limit`, newest bound first, a few at a time:
                // the first batch usually settles the answer.
                loop {
                    // A limited search whose candidates keep failing turns bulk once everything is scanned: more
                    // ranked batches would each read the blocks again.
                    // Likewise once the rate of matches so far says ranked batches would read more than a bulk
                    // chunk before `limit` matches turn up (a query matching nothing reads everything anyway).
                    let missing = limit.saturating_sub(hits.len());
                    let projected = missing.saturating_mul(evaluated) / hits.len().max(1);
                    if watermark.is_none() && (evaluated >= BULK_CHUNK || projected > BULK_CHUNK) {
                        bulk = true;
                        break;
                    }
                    let kth = (hits.len() >= limit).then(|| hits[limit - 1].start_unix_nano);
                    // Batches grow with what was already evaluated, so a query whose candidates rarely match
                    // does not pay a full read of the blocks for every few traces.
                    let size = limit.saturating_sub(hits.len()).max(MIN_EVAL_BATCH).max(evaluated).min(BULK_CHUNK);
                    let mut batch: Vec<TraceId> = Vec::new();
                    while let Some(&(ub, Reverse(id))) = pending.peek() {
                        let ready = watermark.is_none_or(|w| ub >= w) && kth.is_none_or(|k| ub >= k);
                        if !ready || batch.len() >= size {
                            break;
                        }
                        pending.pop();
                        batch.push(id);
                    }
                    if batch.is_empty() {
                        break;
                    }
                    evaluated += batch.len();
                    self.evaluate(tenant, &eval, req, needs, batch, &mut hits, &mut stats, keep.as_deref_mut(), fits)
                        .await?;
                    sort_hits(&mut hits);
                    hits.truncate(limit);
                }
            }
            // Bulk: evaluating early cannot stop the walk, so wait until every source is scanned, then take the
            // candidates that can still place in trace-ID order, a chunk at a time: each chunk reads one stretch
            // of every block (rows are sorted by trace ID), so blocks are read once.
            if bulk && watermark.is_none() && !pending.is_empty() {
                let kth = (hits.len() >= limit).then(|| hits[limit - 1].start_unix_nano);
                let mut ids: Vec<TraceId> =
                    pending.drain().filter(|(ub, _)| kth.is_none_or(|k| *ub >= k)).map(|(_, Reverse(id))| id).collect();
                ids.sort_unstable();
                // The next chunk is read while this one is evaluated.
                let chunks: Vec<Vec<TraceId>> = ids.chunks(BULK_CHUNK).map(<[TraceId]>::to_vec).collect();
                let mut chunks = chunks.into_iter();
                let mut next_read = chunks.next().map(|c| self.fetch(tenant, needs, c, fits)).transpose()?;
                while let Some(read) = next_read.take() {
                    let fetched = read.await??;
                    next_read = chunks.next().map(|c| self.fetch(tenant, needs, c, fits)).transpose()?;
                    judge(&fetched, &eval, req, &mut hits, &mut stats, keep.as_deref_mut());
                    sort_hits(&mut hits);
                    hits.truncate(limit);
                }
            }
            if let Some(p) = progress.as_deref_mut().filter(|_| stats.completed_jobs > 0) {
                // Nothing unread can be newer than the watermark, so hits above it keep their place.
                let sure: Vec<TraceHit> = hits
                    .iter()
                    .filter(|h| watermark.is_none_or(|w| h.start_unix_nano > w) && !reported.contains(&h.trace_id))
                    .cloned()
                    .collect();
                reported.extend(sure.iter().map(|h| h.trace_id));
                p(sure, &stats);
            }
            let kth = (hits.len() >= limit).then(|| hits[limit - 1].start_unix_nano);
            match watermark {
                None => break,
                Some(w) if kth.is_some_and(|k| w < k) => break,
                Some(_) => {}
            }
            let round: Vec<&Source> = sources[next..].iter().take(round_size).collect();
            round_size = (round_size * 2).min(MAX_ROUND);
            next += round.len();
            for b in round.iter().filter_map(|s| s.block()) {
                self.count_scan(&mut counted, &mut stats, b)?;
            }
            let scanned = std::time::Instant::now();
            let scans: Vec<_> = round
                .into_iter()
                .map(|s| self.scan(&ctx, tenant, &req.pipeline, s, local.as_ref(), masks.as_ref(), gate.as_deref()))
                .collect();
            // Local scans hold a block's decoded output rows until settled: one per core bounds memory (they are
            // CPU-bound, so more at once would not finish sooner).
            let at_once = if local.is_some() { cores() } else { MAX_ROUND };
            let results: Vec<_> = futures::stream::iter(scans).buffer_unordered(at_once).collect().await;
            tracing::debug!(sources = results.len(), ms = scanned.elapsed().as_secs_f64() * 1e3, "candidate scan");
            let settled = hits.len();
            let found_here: usize = results.iter().map(|r| r.as_ref().map_or(0, Vec::len)).sum();
            hits.reserve(found_here.min(limit));
            for found in results {
                for f in found? {
                    match f {
                        Found::Candidate(id, ub) => {
                            if seen.insert(id) {
                                pending.push((ub, Reverse(id)));
                            }
                        }
                        Found::Settled(id, hit, spans) => {
                            if seen.insert(id) {
                                stats.inspected_traces += 1;
                                stats.inspected_spans += spans;
                                hits.extend(hit);
                            }
                        }
                    }
                }
                stats.completed_jobs += 1;
            }
            if hits.len() > settled {
                sort_hits(&mut hits);
                hits.truncate(limit);
            }
        }
        // Sources left unread could not change the answer: they count as done, as Tempo counts skipped shards.
        stats.completed_jobs = stats.total_jobs;
        Ok(SearchResult { traces: hits, stats })
    }

    /// Phase 0 of a limited search: walks the blocks' trace indexes newest trace first (blocks opened in order
    /// of their end time, as the walk reaches them) and evaluates those traces directly, without any scan. When
    /// matches are frequent the `limit` newest are known after a few dozen traces; when they are rare (none in
    /// the first step, or a rate that would need more than `WALK_WORTH` traces) the walk stops and candidate
    /// scans take over, skipping what the walk evaluated. Returns whether the answer is complete.
    ///
    /// Why it is exact: a trace's start is at most the start of its rows in any block, so once the `limit`-th
    /// match starts later than every trace position not yet walked (and every memory candidate not yet
    /// evaluated), nothing left can enter the answer.
    #[allow(clippy::too_many_arguments)]
    async fn index_walk<'v, 'p>(
        &self,
        ctx: &SessionContext,
        tenant: &Tenant,
        eval: &Evaluator,
        req: &SearchRequest,
        needs: Option<&ReadNeeds>,
        sources: &[Source],
        limit: usize,
        w: &mut Walk<'_>,
        mut keep: Option<&mut VisitFn<'v>>,
        mut progress: Option<ProgressFn<'_, 'p>>,
    ) -> Result<bool, QueryError> {
        // Memory has no index: its candidates come from a scan, as in the main walk.
        for (id, ub) in self.candidates(ctx, tenant, &req.pipeline, &sources[0], None).await? {
            if w.seen.insert(id) {
                w.pending.push((ub, Reverse(id)));
            }
        }
        w.stats.completed_jobs += 1;
        let blocks: Vec<&Arc<BlockEntry>> = sources[1..].iter().filter_map(Source::block).collect();
        let mut indexes: Vec<Option<Arc<crate::block::TraceIndex>>> = vec![None; blocks.len()];
        let mut block_masks: Vec<Option<BooleanBuffer>> = vec![None; blocks.len()];
        let mut passed_over = 0usize;
        // (bound, block, position in the block's newest-first order); a block not opened yet stands for all of its
        // traces with its end time.
        const UNOPENED: usize = usize::MAX;
        let mut heap: BinaryHeap<(u64, Reverse<usize>, usize)> =
            blocks.iter().enumerate().map(|(i, b)| (b.meta.end_time_unix_nano, Reverse(i), UNOPENED)).collect();
        let mut walked = 0usize;
        let mut opened = 0usize;
        let mut step = limit.max(MIN_EVAL_BATCH);
        loop {
            let mut batch: Vec<TraceId> = Vec::new();
            while batch.len() < step {
                let Some((_, Reverse(b), pos)) = heap.pop() else { break };
                if pos == UNOPENED {
                    // Blocks overlapping this one in time are opened with it, each as its own task: the walk
                    // reaches them next anyway (on data whose blocks all cover the same minutes, every block),
                    // and a block's masks cost up to a few milliseconds of CPU.
                    // A few at a time (enough to keep every core busy): with many blocks of the same minutes, a
                    // frequent match settles before most of them are opened.
                    let mut group = vec![b];
                    while let Some(&(end, Reverse(o), UNOPENED)) = heap.peek() {
                        if end < blocks[b].meta.start_time_unix_nano || group.len() >= 2 * cores() {
                            break;
                        }
                        heap.pop();
                        group.push(o);
                    }
                    // Old traces spanning many blocks would make the walk open block after block: past a few,
                    // scanning is the better plan.
                    opened += group.len();
                    if opened > WALK_MAX_BLOCKS {
                        tracing::debug!(walked, "index walk reached its block limit; candidate scans take over");
                        return Ok(false);
                    }
                    for &g in &group {
                        self.count_scan(w.counted, w.stats, blocks[g])?;
                    }
                    let masked = w.masks.is_some();
                    let tasks: Vec<_> = group
                        .iter()
                        .map(|&g| {
                            let (ctx, store, tenant) = (ctx.clone(), self.blocks.clone(), tenant.clone());
                            let (block, pipeline, gate) = (blocks[g].clone(), req.pipeline.clone(), w.gate.cloned());
                            tokio::spawn(async move {
                                open_block(&ctx, &store, &tenant, &block, &pipeline, masked, gate.as_deref()).await
                            })
                        })
                        .collect();
                    for (&g, task) in group.iter().zip(tasks) {
                        let o = task.await??;
                        if let (Some(masks), Some(mask)) = (w.masks.as_deref_mut(), &o.mask) {
                            masks.insert(blocks[g].meta.block_id.clone(), mask.clone());
                        }
                        block_masks[g] = o.mask;
                        if let Some(t) = o.ix.newest(0) {
                            heap.push((o.ix.start(t), Reverse(g), 0));
                        }
                        indexes[g] = Some(o.ix);
                    }
                    continue;
                }
                let Some(ix) = &indexes[b] else { continue };
                let Some(t) = ix.newest(pos) else { continue };
                if let Some(n) = ix.newest(pos + 1) {
                    heap.push((ix.start(n), Reverse(b), pos + 1));
                }
                // No row of the trace here passes the predicate (or the gate ruled the trace out): if it matches,
                // another fragment does, and the walk or the scans meet it there.
                if let Some(mask) = &block_masks[b] {
                    let rows = ix.rows(t);
                    if mask.slice(rows.start, rows.len()).count_set_bits() == 0 {
                        passed_over += 1;
                        if passed_over > WALK_PASS_MAX {
                            break;
                        }
                        continue;
                    }
                }
                if w.seen.insert(ix.id(t)) {
                    batch.push(ix.id(t));
                }
            }
            let rest = heap.peek().map(|e| e.0);
            // Memory candidates at least as new as anything left in the blocks go along.
            while let Some(&(ub, Reverse(id))) = w.pending.peek() {
                if rest.is_some_and(|r| ub < r) {
                    break;
                }
                w.pending.pop();
                batch.push(id);
            }
            if !batch.is_empty() {
                walked += batch.len();
                self.evaluate(tenant, eval, req, needs, batch, w.hits, w.stats, keep.as_deref_mut(), w.cache).await?;
                sort_hits(w.hits);
                w.hits.truncate(limit);
            }
            let watermark = rest.max(w.pending.peek().map(|e| e.0));
            if let Some(p) = progress.as_deref_mut() {
                // Matches newer than anything not evaluated keep their place: stream them now.
                let sure: Vec<TraceHit> = w
                    .hits
                    .iter()
                    .filter(|h| watermark.is_none_or(|wm| h.start_unix_nano > wm) && !w.reported.contains(&h.trace_id))
                    .cloned()
                    .collect();
                if !sure.is_empty() {
                    w.reported.extend(sure.iter().map(|h| h.trace_id));
                    p(sure, w.stats);
                }
            }
            let kth = (w.hits.len() >= limit).then(|| w.hits[limit - 1].start_unix_nano);
            match (watermark, kth) {
                (None, _) => return Ok(true),
                (Some(wm), Some(k)) if wm < k => return Ok(true),
                _ => {}
            }
            // Too few matches to finish within the budget at this rate: scanning finds the rest cheaper.
            let found = w.hits.len();
            if walked >= WALK_MAX
                || passed_over > WALK_PASS_MAX
                || found == 0
                || (found < limit && walked * limit > WALK_WORTH * found)
            {
                tracing::debug!(walked, found, "index walk hands over to candidate scans");
                return Ok(false);
            }
            step = (step * 2).min(WALK_MAX - walked);
        }
    }

    /// Counts a block against the search's scan budget (once per search), failing the search past it.
    fn count_scan(
        &self,
        counted: &mut HashSet<String>,
        stats: &mut SearchStats,
        b: &BlockEntry,
    ) -> Result<(), QueryError> {
        if counted.insert(b.meta.block_id.clone()) {
            stats.inspected_bytes += b.meta.data_size;
        }
        if stats.inspected_bytes > self.max_scan_bytes {
            return Err(QueryError::Limit(format!(
                "the search would scan more than {} bytes of blocks (max_query_scan_bytes); narrow the time range \
                 or the query",
                self.max_scan_bytes
            )));
        }
        Ok(())
    }

    /// Phase 1 over one source: candidates, or for a local search over a block, traces settled from its rows
    /// (`local.rs`; blocks whose index lacks per-service counts take the candidate path).
    #[allow(clippy::too_many_arguments)]
    async fn scan(
        &self,
        ctx: &SessionContext,
        tenant: &Tenant,
        pipeline: &Pipeline,
        source: &Source,
        local: Option<&Arc<LocalSearch>>,
        masks: Option<&Masks>,
        gate: Option<&Gate>,
    ) -> Result<Vec<Found>, QueryError> {
        if let (Source::Block(b), Some(local)) = (source, local) {
            let index = self.blocks.trace_index(tenant, b).await?;
            if index.has_service_stats() {
                let known = masks.and_then(|m| m.get(&b.meta.block_id)).cloned();
                return local::scan_block(ctx, tenant, b, index, local.clone(), known).await;
            }
        }
        let found = match source {
            Source::Block(b) => self.block_candidates(ctx, tenant, pipeline, b, masks, gate).await?,
            _ => self.candidates(ctx, tenant, pipeline, source, masks).await?,
        };
        Ok(found.into_iter().map(|(id, ub)| Found::Candidate(id, ub)).collect())
    }

    /// A DataFusion table over one source, with the source's dedicated slots; `None` when it holds nothing.
    pub(crate) fn table(&self, tenant: &Tenant, source: &Source) -> Result<Option<SourceTable>, QueryError> {
        Ok(match source {
            Source::Memory(batches) if batches.is_empty() => None,
            Source::Memory(batches) => {
                Some((Arc::new(MemTable::try_new(schema::schema(), vec![batches.clone()])?), Slots::default()))
            }
            Source::Block(b) => Some((
                Arc::new(BlockTable::new(tenant, b, self.blocks.object_store())),
                Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list),
            )),
        })
    }

    /// Phase 1 over one source: candidate trace IDs with the earliest start of their rows there. The scan runs
    /// as its own task, so the sources of a round are decoded on every core.
    pub(crate) async fn candidates(
        &self,
        ctx: &SessionContext,
        tenant: &Tenant,
        pipeline: &Pipeline,
        source: &Source,
        masks: Option<&Masks>,
    ) -> Result<Vec<(TraceId, u64)>, QueryError> {
        if let Source::Block(b) = source {
            return self.block_candidates(ctx, tenant, pipeline, b, masks, None).await;
        }
        let Some((table, slots)) = self.table(tenant, source)? else { return Ok(Vec::new()) };
        let mut df = ctx.read_table(table)?;
        if let Some(filter) = candidate_filter(pipeline, &slots) {
            df = df.filter(filter)?;
        }
        let df = df.aggregate(vec![col(c::TRACE_ID)], vec![min(col(c::TRACE_START)).alias("ub")])?;
        let batches = tokio::spawn(df.collect()).await??;
        let mut out = Vec::new();
        for batch in batches {
            let ids = batch.column(0).as_fixed_size_binary();
            let ubs = batch.column(1).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                if let Ok(id) = <[u8; 16]>::try_from(ids.value(i)) {
                    out.push((TraceId(id), if ubs.is_null(i) { u64::MAX } else { ubs.value(i) as u64 }));
                }
            }
        }
        Ok(out)
    }

    /// Phase 1 over a block, through its trace index: the scan yields the numbers of the rows that pass the
    /// candidate predicate, which the index maps to traces (with their start in the block), so the 16-byte trace
    /// ID column is never decoded and nothing is grouped; a query without a predicate takes the index as it is.
    async fn block_candidates(
        &self,
        ctx: &SessionContext,
        tenant: &Tenant,
        pipeline: &Pipeline,
        b: &Arc<BlockEntry>,
        masks: Option<&Masks>,
        gate: Option<&Gate>,
    ) -> Result<Vec<(TraceId, u64)>, QueryError> {
        let index = self.blocks.trace_index(tenant, b).await?;
        let slots = Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
        let Some(filter) = candidate_filter(pipeline, &slots) else { return Ok(index.traces().collect()) };
        let mut matched = vec![false; index.len()];
        let mut mark = |rows: &mut dyn Iterator<Item = usize>| {
            let mut last: Option<usize> = None;
            for row in rows {
                let known = last.filter(|&t| index.rows(t).contains(&row));
                let Some(t) = known.or_else(|| index.trace_of_row(row)) else { continue };
                matched[t] = true;
                last = Some(t);
            }
        };
        let passed = match masks.map(|m| m.get(&b.meta.block_id)) {
            Some(Some(m)) => Some(m.clone()),
            Some(None) => gated_mask(ctx, &self.blocks, tenant, b, &filter, gate).await?,
            None => None,
        };
        if let Some(passed) = passed {
            mark(&mut passed.set_indices());
        } else if ruled_out_by_blooms(&self.blocks, tenant, b, &filter).await? {
            return Ok(Vec::new());
        } else {
            let table = BlockTable::new(tenant, b, self.blocks.object_store()).with_row_numbers();
            let df = ctx.read_table(Arc::new(table))?.filter(filter)?.select(vec![col(ROW_NUMBER)])?;
            let batches = tokio::spawn(df.collect()).await??;
            for batch in &batches {
                mark(&mut batch.column(0).as_primitive::<Int64Type>().iter().flatten().map(|r| r as usize));
            }
        }
        Ok(matched.iter().enumerate().filter(|(_, m)| **m).map(|(t, _)| (index.id(t), index.start(t))).collect())
    }

    /// Whether the column cache can hold what a search over `sources` reads from its blocks (estimated from their
    /// span counts). When it cannot, every block pushes another out and is read whole again on every search: on
    /// 80 blocks of 100k spans, all results for a service took 5.6 s thrashing the cache and 2.4 s through the
    /// Parquet scans and reads (which decode only the pages they need), a structural limit-20 search 3.9 s and
    /// 0.63 s.
    pub(crate) fn fits_cache(&self, sources: &[Source]) -> bool {
        let spans: u64 = sources.iter().filter_map(Source::block).map(|b| b.meta.span_count).sum();
        spans.saturating_mul(CACHED_BYTES_PER_SPAN) <= self.blocks.column_cache_bytes()
    }

    /// Phase 2: fetches every fragment of the traces, evaluates the query on each whole trace, keeps matches.
    #[allow(clippy::too_many_arguments)]
    async fn evaluate<'v>(
        &self,
        tenant: &Tenant,
        eval: &Evaluator,
        req: &SearchRequest,
        needs: Option<&ReadNeeds>,
        ids: Vec<TraceId>,
        hits: &mut Vec<TraceHit>,
        stats: &mut SearchStats,
        keep: Option<&mut VisitFn<'v>>,
        cache: bool,
    ) -> Result<(), QueryError> {
        let fetched = self.fetch(tenant, needs, ids, cache)?.await??;
        judge(&fetched, eval, req, hits, stats, keep);
        Ok(())
    }

    /// Starts reading every fragment of the traces `ids`: memory now, blocks in a task of their own (so the
    /// caller can evaluate the previous batch meanwhile). Reads what `needs` names, or every part without it.
    fn fetch(
        &self,
        tenant: &Tenant,
        needs: Option<&ReadNeeds>,
        mut ids: Vec<TraceId>,
        cache: bool,
    ) -> Result<tokio::task::JoinHandle<Result<Fetched, QueryError>>, QueryError> {
        ids.sort_unstable();
        let started = std::time::Instant::now();
        // Fragments still in memory, as rows of the block schema (the block writer's row builder), so they are
        // read exactly like block rows.
        let memory: Vec<(TraceId, Vec<SpanRecord>)> =
            ids.iter().map(|id| (*id, self.ingester.find_trace(tenant, id))).filter(|(_, r)| !r.is_empty()).collect();
        let mut views: Vec<SpanRows> = Vec::new();
        if !memory.is_empty() {
            for batch in traces_to_batches(memory.iter().map(|(id, r)| (id, r.as_slice())), usize::MAX)? {
                views.push(SpanRows::new(&batch, &[])?);
            }
        }
        drop(memory);
        // The block list is read after memory, not taken from the start of the search: a head flushed meanwhile
        // has left memory only once its block is listed, so every fragment is found in one place or the other.
        let blocks = self.blocks.blocks(tenant);
        let mut jobs: Vec<(Arc<BlockEntry>, Vec<TraceId>, SpanParts)> = blocks
            .iter()
            .filter_map(|b| {
                let wanted: Vec<TraceId> = ids.iter().copied().filter(|id| b.may_contain(id)).collect();
                let parts = needs.map_or(SpanParts::ALL, |n| n.parts_for(&b.meta));
                (!wanted.is_empty()).then(|| (b.clone(), wanted, parts))
            })
            .collect();
        // Fewer blocks than cores (a compacted block): split each block's traces so every core decodes some.
        let cores = cores();
        if jobs.len() < cores {
            jobs = jobs
                .into_iter()
                .flat_map(|(b, wanted, parts)| {
                    let per = wanted.len().div_ceil(cores).max(1);
                    wanted.chunks(per).map(|c| (b.clone(), c.to_vec(), parts)).collect::<Vec<_>>()
                })
                .collect();
        }
        let store = self.blocks.clone();
        let tenant = tenant.clone();
        Ok(tokio::spawn(async move {
            let mut reads = futures::stream::iter(jobs)
                .map(|(b, wanted, parts)| {
                    let store = store.clone();
                    let tenant = tenant.clone();
                    // Each block is decoded in its own task, on any core.
                    let read = tokio::spawn(async move {
                        let batches = store.read_trace_rows(&tenant, &b, &wanted, parts, true, cache).await?;
                        batches
                            .iter()
                            .filter(|x| x.num_rows() > 0)
                            .map(|x| SpanRows::new(x, &b.meta.dedicated_columns))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(QueryError::from)
                    });
                    async move { read.await? }
                })
                .buffer_unordered(FETCH_CONCURRENCY);
            while let Some(part) = reads.next().await {
                views.extend(part?);
            }
            drop(reads);
            // Rows of each trace, as (batch, row); block rows come in runs of one trace.
            let mut refs: ahash::AHashMap<TraceId, Vec<(u32, u32)>> = ahash::AHashMap::with_capacity(ids.len());
            for (b, v) in views.iter().enumerate() {
                let mut last: Option<(&[u8], TraceId)> = None;
                for r in 0..v.len() {
                    let raw = v.trace_id(r);
                    let id = match last {
                        Some((prev, id)) if prev == raw => id,
                        _ => match TraceId::from_bytes(raw) {
                            Some(id) => id,
                            None => continue,
                        },
                    };
                    last = Some((raw, id));
                    refs.entry(id).or_default().push((b as u32, r as u32));
                }
            }
            tracing::debug!(traces = ids.len(), ms = started.elapsed().as_secs_f64() * 1e3, "whole-trace fetch");
            Ok(Fetched { ids, views, refs })
        }))
    }
}

/// The rows of a batch of candidate traces, every fragment found.
struct Fetched {
    ids: Vec<TraceId>,
    views: Vec<SpanRows>,
    refs: ahash::AHashMap<TraceId, Vec<(u32, u32)>>,
}

/// Evaluates the query on each fetched trace, whole, and keeps the matches.
fn judge(
    f: &Fetched,
    eval: &Evaluator,
    req: &SearchRequest,
    hits: &mut Vec<TraceHit>,
    stats: &mut SearchStats,
    mut keep: Option<&mut VisitFn<'_>>,
) {
    let mut names = Names::default();
    for &id in &f.ids {
        let Some(rows) = f.refs.get(&id) else { continue };
        let t = TraceData::new(id, &f.views, rows);
        stats.inspected_traces += 1;
        stats.inspected_spans += t.len() as u64;
        if req.start.is_some_and(|s| t.end < s) || req.end.is_some_and(|e| t.start > e) {
            continue;
        }
        let sets = eval.evaluate(&t);
        if sets.is_empty() {
            continue;
        }
        match keep.as_deref_mut() {
            Some(k) => k(&t, &sets),
            None => hits.push(trace_hit(&t, eval, sets, req.spans_per_spanset, &mut names)),
        }
    }
}

/// Which rows of a block pass `filter`, evaluated by DataFusion on the block's cached decoded columns
/// (`BlockStore::columns`) when the filter names only plain columns; `None` when it names an attribute list
/// or a column the block lacks (the Parquet scan then answers).
pub(crate) async fn cached_mask(
    ctx: &SessionContext,
    blocks: &BlockStore,
    tenant: &Tenant,
    b: &BlockEntry,
    filter: &Expr,
) -> Result<Option<BooleanBuffer>, QueryError> {
    if !maskable(filter) {
        return Ok(None);
    }
    let text = mask_key(filter);
    if let Some(rows) = blocks.mask(b, &text) {
        return Ok(Some(rows));
    }
    let mut names: Vec<&str> = filter.column_refs().into_iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let (lists, plain): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| ATTR_LISTS.contains(n));
    let mut batch = if plain.is_empty() {
        None
    } else {
        let Some(batch) = blocks.columns(tenant, b, &plain).await? else { return Ok(None) };
        Some(batch)
    };
    // Attribute lists (a generic attribute's test) are read with only the leaves the test looks at.
    for list in lists {
        let values = list_values_tested(filter, list);
        let Some(array) = blocks.attr_leaves(tenant, b, list, values.as_deref()).await? else { return Ok(None) };
        let (mut fields, mut columns) = match batch.take() {
            Some(bt) => (bt.schema().fields().iter().cloned().collect::<Vec<_>>(), bt.columns().to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        fields.push(Arc::new(Field::new(list, array.data_type().clone(), true)));
        columns.push(array);
        batch = Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?);
    }
    let Some(mut batch) = batch else { return Ok(None) };
    // A condition on one dictionary column (service, span name, a string slot) depends on the value alone:
    // it is evaluated once per distinct value, and rows take their value's answer (a regex over every row's
    // name cost ~4 ms per block).
    let mut keys: Option<ArrayRef> = None;
    if let [column] = batch.columns()
        && let Some(dict) = column.as_any_dictionary_opt()
    {
        let field = batch.schema().field(0).as_ref().clone().with_data_type(dict.values().data_type().clone());
        let values = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![dict.values().clone()])?;
        keys = Some(make_array(dict.keys().to_data()));
        batch = values;
    }
    let schema = Arc::new(DFSchema::try_from(batch.schema().as_ref().clone())?);
    // `create_physical_expr` coerces but does not simplify, and some functions (`coalesce`) exist only
    // until simplified.
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_schema(schema.clone()).build());
    let filter = simplifier.simplify(simplifier.coerce(filter.clone(), &schema)?)?;
    let predicate = ctx.create_physical_expr(filter, &schema)?;
    // Off the async workers, so that blocks are evaluated on every core.
    let passed = tokio::task::spawn_blocking(move || -> Result<ArrayRef, QueryError> {
        let passed = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
        Ok(match keys {
            Some(keys) => arrow::compute::take(&passed, &keys, None)?,
            None => passed,
        })
    })
    .await??;
    let rows = match passed.as_boolean_opt() {
        // Null (unknown) is not a pass.
        Some(p) => match p.nulls() {
            Some(valid) => p.values() & valid.inner(),
            None => p.values().clone(),
        },
        None => return Err(QueryError::Internal(format!("candidate predicate gave {} values", passed.data_type()))),
    };
    blocks.keep_mask(b, text, rows.clone());
    Ok(Some(rows))
}

/// A predicate's key in the block bitmap cache: its `Debug` form, which spells every literal out (the `Display`
/// form shortens binary literals to their first 10 bytes, and 64-bit trace IDs padded to 16 share 8 of them).
fn mask_key(filter: &Expr) -> String {
    format!("{filter:?}")
}

/// The attribute list columns a candidate predicate may test (through `attr_may_match`).
const ATTR_LISTS: [&str; 2] = [c::SPAN_ATTRS, c::RESOURCE_ATTRS];

/// Whether `filter` names only plain (not nested) columns of the block schema, or the attribute lists, so that it
/// can be evaluated on whole decoded columns (`cached_mask`).
pub(crate) fn maskable(filter: &Expr) -> bool {
    let refs = filter.column_refs();
    let block = schema::schema();
    !refs.is_empty()
        && refs.iter().all(|c| {
            ATTR_LISTS.contains(&c.name.as_str())
                || block.field_with_name(&c.name).is_ok_and(|f| !f.data_type().is_nested())
        })
}

/// What the index walk needs of a block it opens: the trace index, and with cached columns (`masked`) the rows
/// passing the candidate predicate less the traces the gate rules out.
struct Opened {
    ix: Arc<crate::block::TraceIndex>,
    mask: Option<BooleanBuffer>,
}

async fn open_block(
    ctx: &SessionContext,
    store: &Arc<BlockStore>,
    tenant: &Tenant,
    b: &BlockEntry,
    pipeline: &Pipeline,
    masked: bool,
    gate: Option<&Gate>,
) -> Result<Opened, QueryError> {
    let ix = store.trace_index(tenant, b).await?;
    let mut out = Opened { ix, mask: None };
    if masked && let Some(filter) = block_filter(pipeline, b) {
        out.mask = gated_mask(ctx, store, tenant, b, &filter, gate).await?;
    }
    Ok(out)
}

/// The block's candidate predicate when it can be answered from cached columns.
fn block_filter(pipeline: &Pipeline, b: &BlockEntry) -> Option<Expr> {
    let slots = Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
    candidate_filter(pipeline, &slots).filter(maskable)
}

/// Per block ID, the rows that pass the candidate predicate (see `cached_mask`).
type Masks = ahash::AHashMap<String, BooleanBuffer>;

/// The trace IDs of the memory snapshot a search reads (a source other than memory holds none).
fn memory_trace_ids(source: &Source) -> ahash::AHashSet<TraceId> {
    let Source::Memory(batches) = source else { return ahash::AHashSet::new() };
    let mut out = ahash::AHashSet::new();
    for batch in batches {
        let Some(ids) = batch.column_by_name(c::TRACE_ID).and_then(|x| x.as_fixed_size_binary_opt()) else { continue };
        out.extend((0..ids.len()).filter_map(|i| TraceId::from_bytes(ids.value(i))));
    }
    out
}

/// Whether the row groups' attribute-value filters alone show that no row of block `b` passes `filter` (see
/// `prune::required_list_values`): a search for a value the block does not hold then skips it unread, also when
/// the searched range is too large for the column cache (whose bitmaps answer this otherwise).
pub(crate) async fn ruled_out_by_blooms(
    blocks: &BlockStore,
    tenant: &Tenant,
    b: &BlockEntry,
    filter: &Expr,
) -> Result<bool, QueryError> {
    for (list, tests) in required_list_values(filter) {
        if blocks.lacks_values(tenant, b, &list, &tests).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Cores to spread one block's work over (asked once: the lookup reads cgroup files on Linux).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The spansets of a matching trace as returned: the first `spss` spans of each, with the matched count.
pub(crate) fn spanset_hits<'a>(
    t: &TraceData<'a>,
    eval: &Evaluator,
    sets: Vec<SpanSet>,
    spss: usize,
    names: &mut Names<'a>,
) -> Vec<SpansetHit> {
    sets.into_iter()
        .map(|s| SpansetHit {
            matched: s.spans.len() as u32,
            spans: s
                .spans
                .iter()
                .take(spss)
                .map(|&i| SpanHit {
                    span_id: t.span_id(i).try_into().unwrap_or_default(),
                    name: names.get(t.name(i)),
                    start_unix_nano: t.start_of(i),
                    duration_nanos: t.end_of(i).saturating_sub(t.start_of(i)),
                    attributes: eval.shown_attributes(t, i),
                })
                .collect(),
            attributes: s.by.into_iter().map(|(k, v)| crate::model::kv(k, Some(v))).collect(),
        })
        .collect()
}

/// Service stats in name order.
pub(crate) fn by_name(mut stats: Vec<(Arc<str>, (u32, u32))>) -> Vec<(Arc<str>, (u32, u32))> {
    stats.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    stats
}

/// Newest first, ties by trace ID. A stable sort: it merges runs already in order (each block's hits).
fn sort_hits(hits: &mut [TraceHit]) {
    hits.sort_by(hit_order);
}

/// The answer's order: newest first, ties by trace ID.
pub(crate) fn hit_order(a: &TraceHit, b: &TraceHit) -> std::cmp::Ordering {
    b.start_unix_nano.cmp(&a.start_unix_nano).then_with(|| a.trace_id.cmp(&b.trace_id))
}

fn trace_hit<'a>(
    t: &TraceData<'a>,
    eval: &Evaluator,
    sets: Vec<SpanSet>,
    spss: usize,
    names: &mut Names<'a>,
) -> TraceHit {
    let spansets = spanset_hits(t, eval, sets, spss, names);
    // Few services per trace: count in a small vector, then sort once.
    let mut stats: Vec<(&str, (u32, u32))> = Vec::new();
    for i in 0..t.len() {
        let Some(svc) = t.service(i) else { continue };
        let at = match stats.iter().position(|(s, _)| *s == svc) {
            Some(at) => at,
            None => {
                stats.push((svc, (0, 0)));
                stats.len() - 1
            }
        };
        stats[at].1.0 += 1;
        if t.status_code(i) == 2 {
            stats[at].1.1 += 1;
        }
    }
    TraceHit {
        trace_id: t.id,
        root_service_name: names.get(t.root_service().unwrap_or(NO_ROOT_SERVICE)),
        root_trace_name: t.root_name().map(|n| names.get(n)),
        start_unix_nano: t.start,
        duration_nanos: t.duration(),
        spansets,
        service_stats: by_name(stats.into_iter().map(|(s, n)| (names.get(s), n)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::lit;

    #[test]
    fn mask_keys_tell_long_binary_literals_apart() {
        let id = |last: u8| {
            let mut b = vec![0u8; 16];
            b[15] = last;
            col(c::TRACE_ID).eq(lit(ScalarValue::FixedSizeBinary(16, Some(b))))
        };
        assert_ne!(mask_key(&id(1)), mask_key(&id(2)));
        assert_eq!(mask_key(&id(1)), mask_key(&id(1)));
    }
}
