//! Compaction: merges each tenant's small blocks of one time window into larger blocks, applies retention, and
//! deletes what both leave behind.
//!
//! A merge streams: every input is read in trace-ID order a batch at a time, fragments of one trace are joined
//! (duplicate spans dropped, tree numbers and trace-level columns recomputed over the whole trace) and written
//! through the block writer's row builder to a Parquet writer that uploads in parts. A trace found in one input
//! only is already whole and numbered: its stored rows are copied (slot columns remapped by key when the output
//! ranks the same keys differently), which halves the merge's CPU (see BENCHMARKS.md). The output's meta names the
//! inputs it replaces, so it takes their place atomically for every reader; the inputs are deleted after a grace
//! period (queries already reading them finish). A per-tenant lease on the bucket keeps two compactors apart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::interleave_record_batch;
use futures::StreamExt;
use parquet::arrow::async_writer::AsyncArrowWriter;
use tokio::sync::watch;

use crate::block::{
    self, BlockError, BlockMeta, BlockOptions, FORMAT, TraceBloom, TraceRowWriter, WalRange, dedicated_for_merge,
    schema, writer_properties,
};
use crate::model::{SpanRecord, Tenant, TraceId};
use crate::storage::{BlockEntry, BlockStore, StorageError, now_unix};
use crate::telemetry::Metrics;

/// Compaction errors; a failed job is logged, counted and tried again on a later pass.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("block: {0}")]
    Block(#[from] BlockError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("lost the tenant's compaction lease to another compactor")]
    LeaseLost,
}

/// What compaction does and when.
#[derive(Debug, Clone)]
pub struct CompactConfig {
    /// Time between passes over all tenants.
    pub interval: Duration,
    /// Blocks are merged with others whose latest span falls in the same window.
    pub window: Duration,
    /// A block this large (bytes) is left alone; merges stop adding inputs before they exceed it.
    pub target_bytes: u64,
    /// Blocks of one window and level merge once there are this many (any two once the window is over), so a
    /// growing block is not rewritten for every small one that arrives.
    pub min_inputs: usize,
    pub max_inputs: usize,
    /// Replaced blocks stay readable this long.
    pub grace: Duration,
    /// Objects of a block without a meta (an upload cut short) older than this are deleted.
    pub orphan_age: Duration,
    /// Blocks whose latest span is older than this are deleted; `None` keeps everything.
    pub retention: Option<Duration>,
    /// Per-tenant retention overriding `retention`.
    pub tenant_retention: HashMap<String, Duration>,
    pub lease_ttl: Duration,
    pub block: BlockOptions,
}

impl Default for CompactConfig {
    fn default() -> Self {
        CompactConfig {
            interval: Duration::from_secs(30),
            window: Duration::from_secs(3600),
            target_bytes: 512 << 20,
            min_inputs: 4,
            max_inputs: 8,
            grace: Duration::from_secs(600),
            orphan_age: Duration::from_secs(3600),
            retention: None,
            tenant_retention: HashMap::new(),
            lease_ttl: Duration::from_secs(120),
            block: BlockOptions::default(),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassStats {
    pub merged_blocks: usize,
    pub written_blocks: usize,
    pub expired_blocks: usize,
    pub deleted_blocks: usize,
}

/// Rows decoded from an input at a time.
const READ_BATCH_ROWS: usize = 8192;

pub struct Compactor {
    blocks: Arc<BlockStore>,
    cfg: CompactConfig,
    /// This compactor's identity in leases.
    owner: String,
    metrics: Arc<Metrics>,
}

impl Compactor {
    /// `owner` names this compactor in leases; it should survive restarts (a compactor killed while holding a
    /// lease takes it back at once instead of waiting for it to expire).
    pub fn new(blocks: Arc<BlockStore>, cfg: CompactConfig, metrics: Arc<Metrics>, owner: String) -> Self {
        Compactor { blocks, cfg, owner, metrics }
    }

    /// Runs passes every `interval` until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let stats = self.pass().await;
            if stats != PassStats::default() {
                tracing::info!(?stats, "compaction pass");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                _ = stop.wait_for(|v| *v) => break,
            }
        }
    }

    /// One pass over every tenant: retention, merges, garbage collection. Errors are logged per tenant.
    pub async fn pass(&self) -> PassStats {
        let mut total = PassStats::default();
        for tenant in self.blocks.tenants() {
            match self.tenant_pass(&tenant).await {
                Ok(s) => {
                    total.merged_blocks += s.merged_blocks;
                    total.written_blocks += s.written_blocks;
                    total.expired_blocks += s.expired_blocks;
                    total.deleted_blocks += s.deleted_blocks;
                }
                Err(e) => {
                    self.metrics.compaction_errors.inc();
                    tracing::error!(tenant = %tenant, error = %e, "compaction failed; retrying next pass");
                }
            }
        }
        total
    }

    async fn tenant_pass(&self, tenant: &Tenant) -> Result<PassStats, CompactError> {
        let ttl = self.cfg.lease_ttl.as_millis() as u64;
        if !self.blocks.acquire_lease(tenant, &self.owner, ttl).await? {
            tracing::debug!(tenant = %tenant, "another compactor holds the lease");
            return Ok(PassStats::default());
        }
        let result = self.tenant_work(tenant).await;
        self.blocks.release_lease(tenant, &self.owner).await;
        result
    }

    async fn tenant_work(&self, tenant: &Tenant) -> Result<PassStats, CompactError> {
        let mut stats = PassStats::default();
        let retention = self.cfg.tenant_retention.get(tenant.as_str()).copied().or(self.cfg.retention);
        if let Some(keep) = retention {
            let horizon = (now_unix().saturating_sub(keep.as_secs()) as u128 * 1_000_000_000) as u64;
            let expired: Vec<String> = self
                .blocks
                .blocks(tenant)
                .iter()
                .filter(|b| b.meta.end_time_unix_nano < horizon)
                .map(|b| b.meta.block_id.clone())
                .collect();
            if !expired.is_empty() {
                self.blocks.expire(tenant, &expired).await?;
                tracing::info!(tenant = %tenant, blocks = expired.len(), "deleted blocks past retention");
                stats.expired_blocks += expired.len();
            }
        }
        for job in plan(&self.blocks.blocks(tenant), &self.cfg) {
            let started = Instant::now();
            let n = job.len();
            let meta = self.merge(tenant, &job).await?;
            self.metrics.compactions.inc();
            self.metrics.compacted_blocks.inc_by(n as u64);
            self.metrics.compacted_spans.inc_by(meta.span_count);
            tracing::info!(
                tenant = %tenant, inputs = n, block = %meta.block_id, spans = meta.span_count,
                traces = meta.trace_count, bytes = meta.data_size, level = meta.compaction_level,
                elapsed_ms = started.elapsed().as_millis() as u64, "compacted blocks"
            );
            stats.merged_blocks += n;
            stats.written_blocks += 1;
        }
        let deleted =
            self.blocks.collect_garbage(tenant, self.cfg.grace.as_secs(), self.cfg.orphan_age.as_secs()).await?;
        self.metrics.blocks_deleted.inc_by((deleted + stats.expired_blocks) as u64);
        stats.deleted_blocks = deleted;
        Ok(stats)
    }

    /// Merges `inputs` into one new block and publishes it in their place.
    async fn merge(&self, tenant: &Tenant, inputs: &[Arc<BlockEntry>]) -> Result<BlockMeta, CompactError> {
        let metas: Vec<&BlockMeta> = inputs.iter().map(|b| &b.meta).collect();
        let block_id = uuid::Uuid::new_v4().to_string();
        let dedicated = dedicated_for_merge(&metas, self.cfg.block.dedicated_min_share);
        let mut rows = TraceRowWriter::new(dedicated, READ_BATCH_ROWS);
        let capacity: u64 = metas.iter().map(|m| m.trace_count).sum();
        let mut bloom = TraceBloom::with_capacity(capacity.max(1) as usize)?;
        let mut writer = AsyncArrowWriter::try_new(
            self.blocks.data_writer(tenant, &block_id),
            schema::schema(),
            Some(writer_properties(&self.cfg.block)?),
        )?;
        let out_schema = schema::schema();
        let out_dedicated = rows.dedicated_columns();
        let mut sources = Vec::with_capacity(inputs.len());
        for b in inputs {
            let stream = self.blocks.stream_block(tenant, b, READ_BATCH_ROWS).await?;
            // Rows of a trace found in this input alone are copied when the input's columns and slot mapping are
            // the output's; otherwise (older schema, other slots) they are decoded and rebuilt.
            let copy = copy_plan(stream.schema(), &out_schema, &b.meta.dedicated_columns, &out_dedicated);
            tracing::debug!(block = %b.meta.block_id, copyable = copy.is_some(), "merge input");
            sources.push(Input {
                stream,
                dedicated: b.meta.dedicated_columns.clone(),
                service_name_in_list: b.meta.service_name_in_list,
                copy,
                batch: None,
                mapped: None,
                seq: 0,
                pos: 0,
                done: false,
            });
        }
        // Copied rows wait here until a batch is full or rebuilt rows come next (output stays in trace-ID order).
        let mut copied = Gather::default();
        let mut trace: Vec<SpanRecord> = Vec::new();
        let (mut copied_traces, mut rebuilt_traces) = (0u64, 0u64);
        loop {
            for s in sources.iter_mut() {
                s.fill().await?;
            }
            let Some(id) = sources.iter().filter_map(Input::current).min() else { break };
            let mut pieces: Vec<(usize, Vec<Piece>)> = Vec::new();
            for (k, s) in sources.iter_mut().enumerate() {
                if s.current() == Some(id) {
                    pieces.push((k, s.take_run(&id).await?));
                }
            }
            bloom.insert(&id);
            if let [(k, run)] = pieces.as_slice()
                && let Some(plan) = &sources[*k].copy
            {
                if let Some(batch) = rows.finish()? {
                    writer.write(&batch).await?;
                }
                let (n, start, end) = run_bounds(run)?;
                rows.add_copied(&id, n, start, end, &plan.spilled, sources[*k].service_name_in_list);
                copied_traces += 1;
                for piece in run {
                    copied.add(*k, piece);
                }
                if copied.rows() >= READ_BATCH_ROWS {
                    writer.write(&copied.take()?).await?;
                    tokio::task::yield_now().await;
                }
                continue;
            }
            if copied.rows() > 0 {
                writer.write(&copied.take()?).await?;
            }
            trace.clear();
            for (k, run) in &pieces {
                for piece in run {
                    let slice = piece.batch.slice(piece.rows.start, piece.rows.len());
                    trace.extend(block::batch_to_spans(&slice, &sources[*k].dedicated)?.into_iter().map(|(_, r)| r));
                }
            }
            rebuilt_traces += 1;
            if let Some(batch) = rows.push(&id, &trace)? {
                writer.write(&batch).await?;
                tokio::task::yield_now().await;
            }
        }
        tracing::debug!(copied_traces, rebuilt_traces, "merged traces");
        self.metrics.compaction_copied_traces.inc_by(copied_traces);
        if copied.rows() > 0 {
            writer.write(&copied.take()?).await?;
        }
        if let Some(batch) = rows.finish()? {
            writer.write(&batch).await?;
        }
        let dedicated_columns = rows.dedicated_columns();
        writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            block::writer::DEDICATED_COLUMNS_KEY.to_string(),
            serde_json::to_string(&dedicated_columns).map_err(BlockError::from)?,
        ));
        let parquet_meta = writer.close().await?;
        let data_size = self.blocks.object_size(tenant, &block_id).await?;
        let bloom_bytes = bytes::Bytes::from(bloom.to_bytes());
        let meta = BlockMeta {
            format: FORMAT.into(),
            schema_version: schema::SCHEMA_VERSION,
            block_id: block_id.clone(),
            tenant: tenant.as_str().to_string(),
            start_time_unix_nano: if rows.spans == 0 { 0 } else { rows.start },
            end_time_unix_nano: rows.end,
            span_count: rows.spans,
            trace_count: rows.traces,
            min_trace_id: rows.min_id.map(|i| i.to_hex()).unwrap_or_default(),
            max_trace_id: rows.max_id.map(|i| i.to_hex()).unwrap_or_default(),
            data_size,
            bloom_size: bloom_bytes.len() as u64,
            row_groups: parquet_meta.num_row_groups() as u64,
            raw_bytes: metas.iter().map(|m| m.raw_bytes).sum(),
            compaction_level: metas.iter().map(|m| m.compaction_level).max().unwrap_or(0) + 1,
            created_at_unix: now_unix(),
            dedicated_columns,
            service_name_in_list: rows.service_name_in_list(),
            wal: merge_wal_ranges(metas.iter().flat_map(|m| m.wal.iter().cloned())),
            replaces: metas.iter().map(|m| m.block_id.clone()).collect(),
        };
        // Publishing is the point of no return: make sure no other compactor took these inputs meanwhile.
        if !self.blocks.acquire_lease(tenant, &self.owner, self.cfg.lease_ttl.as_millis() as u64).await? {
            return Err(CompactError::LeaseLost);
        }
        self.blocks.publish_merged(tenant, meta.clone(), bloom_bytes).await?;
        Ok(meta)
    }
}

/// One input of a merge: its stream and the batch being merged.
struct Input {
    stream: parquet::arrow::async_reader::ParquetRecordBatchStream<crate::storage::ObjectFile>,
    dedicated: Vec<block::DedicatedColumn>,
    service_name_in_list: bool,
    /// How its rows become output rows as they are (slot columns reordered), when they can.
    copy: Option<CopyPlan>,
    /// Shared with the pieces taken from it (an `Arc` clone per trace, not one per column).
    batch: Option<Arc<RecordBatch>>,
    /// `batch` with the output's columns (when `copy` is set).
    mapped: Option<Arc<RecordBatch>>,
    /// Counts the batches read, so a gather can tell them apart.
    seq: u64,
    /// Next row of `batch` to merge.
    pos: usize,
    done: bool,
}

/// Rows of one trace in one batch of an input.
struct Piece {
    seq: u64,
    batch: Arc<RecordBatch>,
    mapped: Option<Arc<RecordBatch>>,
    rows: std::ops::Range<usize>,
}

impl Input {
    /// Reads the next batch when the current one is used up.
    async fn fill(&mut self) -> Result<(), CompactError> {
        while self.batch.as_ref().is_none_or(|b| self.pos >= b.num_rows()) && !self.done {
            match self.stream.next().await {
                Some(batch) => {
                    let batch = batch?;
                    self.mapped = self.copy.as_ref().map(|p| p.apply(&batch)).transpose()?.map(Arc::new);
                    self.batch = Some(Arc::new(batch));
                    self.seq += 1;
                    self.pos = 0;
                }
                None => {
                    self.batch = None;
                    self.mapped = None;
                    self.done = true;
                }
            }
        }
        Ok(())
    }

    /// The trace ID of the next row.
    fn current(&self) -> Option<TraceId> {
        let b = self.batch.as_ref().filter(|b| self.pos < b.num_rows())?;
        let ids = b.column_by_name(schema::col::TRACE_ID)?.as_fixed_size_binary_opt()?;
        TraceId::from_bytes(ids.value(self.pos))
    }

    /// The rows of trace `id` from the current position on, per batch they sit in (a trace may continue in the
    /// next batch).
    async fn take_run(&mut self, id: &TraceId) -> Result<Vec<Piece>, CompactError> {
        let mut out = Vec::new();
        while let Some(b) = self.batch.as_ref() {
            let Some(ids) = b.column_by_name(schema::col::TRACE_ID).and_then(|c| c.as_fixed_size_binary_opt()) else {
                return Err(BlockError::Layout("trace_id column missing or mistyped".into()).into());
            };
            let start = self.pos;
            let mut end = start;
            while end < b.num_rows() && ids.value(end) == id.0 {
                end += 1;
            }
            if end > start {
                out.push(Piece { seq: self.seq, batch: b.clone(), mapped: self.mapped.clone(), rows: start..end });
            }
            self.pos = end;
            if end < b.num_rows() {
                break;
            }
            self.fill().await?;
            if self.current() != Some(*id) {
                break;
            }
        }
        Ok(out)
    }
}

/// Copied rows waiting to be written, gathered from the input batches they sit in by one `interleave` (slicing
/// each trace's rows out separately cost more than the rest of the copy).
#[derive(Default)]
struct Gather {
    batches: Vec<Arc<RecordBatch>>,
    /// (input, batch sequence) of each entry of `batches`.
    keys: Vec<(usize, u64)>,
    rows: Vec<(usize, usize)>,
}

impl Gather {
    fn add(&mut self, input: usize, piece: &Piece) {
        let Some(mapped) = &piece.mapped else { return };
        let at = match self.keys.iter().position(|k| *k == (input, piece.seq)) {
            Some(at) => at,
            None => {
                self.keys.push((input, piece.seq));
                self.batches.push(mapped.clone());
                self.batches.len() - 1
            }
        };
        self.rows.extend(piece.rows.clone().map(|r| (at, r)));
    }

    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn take(&mut self) -> Result<RecordBatch, CompactError> {
        let refs: Vec<&RecordBatch> = self.batches.iter().map(|b| b.as_ref()).collect();
        let out = interleave_record_batch(&refs, &self.rows)?;
        self.batches.clear();
        self.keys.clear();
        self.rows.clear();
        Ok(out)
    }
}

/// Where each output column of a copied row comes from.
enum ColumnSource {
    Input(usize),
    /// A dedicated slot the input did not have: all null.
    Null(arrow::datatypes::DataType),
}

/// How an input's rows are copied into the merged block: same columns, the slot columns mapped by key.
struct CopyPlan {
    schema: arrow::datatypes::SchemaRef,
    columns: Vec<ColumnSource>,
    /// The output's dedicated keys whose values this input keeps in its generic lists (marked `also_in_list`
    /// in the output), with the input's own such keys.
    spilled: Vec<block::DedicatedColumn>,
}

impl CopyPlan {
    fn apply(&self, slice: &RecordBatch) -> Result<RecordBatch, CompactError> {
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                ColumnSource::Input(i) => slice.column(*i).clone(),
                ColumnSource::Null(t) => arrow::array::new_null_array(t, slice.num_rows()),
            })
            .collect();
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Whether an input's rows can be copied: the same columns as the output, and every key it dedicated is a
/// dedicated key of the output of the same scope and type (possibly in another slot). `None` otherwise.
fn copy_plan(
    input: &arrow::datatypes::Schema,
    out: &arrow::datatypes::SchemaRef,
    in_dedicated: &[block::DedicatedColumn],
    out_dedicated: &[block::DedicatedColumn],
) -> Option<CopyPlan> {
    if input.fields() != out.fields() {
        return None;
    }
    let same = |a: &block::DedicatedColumn, b: &block::DedicatedColumn| {
        a.scope == b.scope && a.name == b.name && a.value_type == b.value_type
    };
    if !in_dedicated.iter().all(|d| out_dedicated.iter().any(|o| same(d, o))) {
        return None;
    }
    let mut columns = Vec::with_capacity(out.fields().len());
    for (i, f) in out.fields().iter().enumerate() {
        let slot = out_dedicated.iter().find(|o| o.column == *f.name());
        let source = match slot {
            None if block::slot_bit(f.name()).is_some() => ColumnSource::Null(f.data_type().clone()),
            None => ColumnSource::Input(i),
            Some(o) => match in_dedicated.iter().find(|d| same(d, o)) {
                Some(d) => ColumnSource::Input(input.index_of(&d.column).ok()?),
                None => ColumnSource::Null(f.data_type().clone()),
            },
        };
        columns.push(source);
    }
    let mut spilled: Vec<block::DedicatedColumn> = in_dedicated.iter().filter(|d| d.also_in_list).cloned().collect();
    spilled.extend(out_dedicated.iter().filter(|o| !in_dedicated.iter().any(|d| same(d, o))).map(|o| {
        let mut o = o.clone();
        o.also_in_list = true;
        o
    }));
    Some(CopyPlan { schema: out.clone(), columns, spilled })
}

/// Rows, earliest span start and latest span end of a trace's copied rows.
fn run_bounds(run: &[Piece]) -> Result<(u64, u64, u64), CompactError> {
    let (mut n, mut start, mut end) = (0u64, u64::MAX, 0u64);
    for p in run {
        let col = |name: &str| {
            p.batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                .ok_or_else(|| BlockError::Layout(format!("{name} column missing or mistyped")))
        };
        let (starts, durations) = (col(schema::col::START)?, col(schema::col::DURATION)?);
        for i in p.rows.clone() {
            let s = starts.value(i) as u64;
            start = start.min(s);
            end = end.max(s.wrapping_add(durations.value(i) as u64));
        }
        n += p.rows.len() as u64;
    }
    Ok((n, if n == 0 { 0 } else { start }, end))
}

/// WAL ranges of several blocks, overlapping ones of the same WAL joined.
fn merge_wal_ranges(ranges: impl Iterator<Item = WalRange>) -> Vec<WalRange> {
    let mut v: Vec<WalRange> = ranges.collect();
    v.sort_by(|a, b| a.instance.cmp(&b.instance).then(a.first.cmp(&b.first)));
    let mut out: Vec<WalRange> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if l.instance == r.instance && r.first <= l.last + 1 => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

/// Merge jobs for one tenant. Blocks are grouped by time window (of their latest span) and, while the window is
/// open, by compaction level, so each span is rewritten about once per level: a group merges once it has
/// `min_inputs` blocks; once the window is over, any two of it merge, whatever their level; the smallest go first, up to `max_inputs` and `target_bytes` together. Blocks already at the
/// target size are left alone.
pub fn plan(blocks: &[Arc<BlockEntry>], cfg: &CompactConfig) -> Vec<Vec<Arc<BlockEntry>>> {
    let window = cfg.window.as_nanos().clamp(1, u64::MAX as u128) as u64;
    let now = (now_unix() as u128 * 1_000_000_000).min(u64::MAX as u128) as u64;
    let over = |w: u64| w.saturating_add(1).saturating_mul(window) < now;
    let mut groups: BTreeMap<(u64, u32), Vec<Arc<BlockEntry>>> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.meta.data_size < cfg.target_bytes) {
        let w = b.meta.end_time_unix_nano / window;
        // Levels keep an open window from rewriting its growing block; a closed one is merged whole.
        let level = if over(w) { 0 } else { b.meta.compaction_level };
        groups.entry((w, level)).or_default().push(b.clone());
    }
    let mut jobs = Vec::new();
    for ((w, _), mut group) in groups {
        let needed = if over(w) { 2 } else { cfg.min_inputs.max(2) };
        if group.len() < needed {
            continue;
        }
        group.sort_by(|a, b| a.meta.data_size.cmp(&b.meta.data_size).then(a.meta.block_id.cmp(&b.meta.block_id)));
        let mut job: Vec<Arc<BlockEntry>> = Vec::new();
        let mut bytes = 0u64;
        for b in group {
            if job.len() >= cfg.max_inputs.max(2) || (job.len() >= 2 && bytes + b.meta.data_size > cfg.target_bytes) {
                break;
            }
            bytes += b.meta.data_size;
            job.push(b);
        }
        if job.len() >= 2 {
            jobs.push(job);
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(column: &str, name: &str) -> block::DedicatedColumn {
        block::DedicatedColumn {
            scope: "span".into(),
            name: name.into(),
            value_type: "string".into(),
            column: column.into(),
            also_in_list: false,
        }
    }

    #[test]
    fn copy_plans_map_slots_by_key() {
        let schema = schema::schema();
        let input = [slot("span_str_00", "a"), slot("span_str_01", "b")];
        let out = [slot("span_str_00", "b"), slot("span_str_01", "a"), slot("span_str_02", "c")];
        let plan = copy_plan(&schema, &schema, &input, &out).expect("copyable");
        let at = |c: &str| schema.index_of(c).expect("column");
        let src = |c: &str| match &plan.columns[at(c)] {
            ColumnSource::Input(i) => Some(*i),
            ColumnSource::Null(_) => None,
        };
        assert_eq!(src("span_str_00"), Some(at("span_str_01")));
        assert_eq!(src("span_str_01"), Some(at("span_str_00")));
        assert_eq!(src("span_str_02"), None, "a key the input did not dedicate: nulls");
        assert_eq!(src("span_str_03"), None, "an unused slot: nulls");
        assert_eq!(src(schema::col::NAME), Some(at(schema::col::NAME)));
        // The input kept `c` in its generic lists: the output must say so.
        assert_eq!(plan.spilled.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["c"]);
        // A key the output has no slot for would have to move into the lists: rebuilt instead.
        assert!(copy_plan(&schema, &schema, &[slot("span_str_00", "z")], &out).is_none());
    }

    #[test]
    fn wal_ranges_join_per_instance() {
        let r = |i: &str, f, l| WalRange { instance: i.into(), first: f, last: l };
        let got = merge_wal_ranges([r("a", 5, 7), r("a", 1, 3), r("b", 1, 1), r("a", 4, 4), r("a", 9, 9)].into_iter());
        assert_eq!(got, vec![r("a", 1, 7), r("a", 9, 9), r("b", 1, 1)]);
    }
}
