//! Ingest: makes accepted spans durable (WAL, group commit), keeps them queryable in memory, and cuts them into
//! blocks that are uploaded to object storage.
//!
//! One WAL thread owns the current segment and the live heads. It writes and fsyncs a group of requests, then
//! inserts their spans into the live heads, then acknowledges: so an acknowledged span is always durable and
//! immediately findable, and a cut (segment rotation + freezing the heads) happens between groups, never inside
//! one. Frozen heads stay queryable until their block is registered in the `BlockStore`; only then are the WAL
//! segments they came from deleted.

mod flush;
pub mod wal;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::RwLock;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use crate::block::{BlockError, BlockOptions, WalRange, traces_to_batches};
use crate::model::{Origin, SpanRecord, Tenant, TraceId};
use crate::storage::BlockStore;
use crate::telemetry::Metrics;

/// Ingest errors; all of them mean "not acknowledged, try again".
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("write-ahead log unavailable: {0}")]
    Wal(String),
    #[error("object storage is failing; not accepting data until blocks can be uploaded again")]
    StoreUnavailable,
    #[error("too much data is waiting to be flushed ({0} bytes); retry later")]
    Backlog(usize),
    #[error("server is shutting down")]
    Shutdown,
}

/// Rows per record batch when live data is handed to searches.
const SEARCH_BATCH_ROWS: usize = 8192;

/// How long a request may wait for the flush backlog to drain before it is refused.
const BACKLOG_WAIT: Duration = Duration::from_secs(30);

/// Limits and placement for the ingester.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub wal_dir: PathBuf,
    pub max_block_spans: usize,
    pub max_block_bytes: usize,
    pub max_block_age: Duration,
    /// A trace with no new span for this long is cut into a block; busier ones wait for the next cut.
    pub max_trace_idle: Duration,
    pub block: BlockOptions,
}

/// A tenant's live spans, grouped by trace.
struct Head {
    traces: HashMap<TraceId, Vec<SpanRecord>>,
    /// When each trace's first and latest spans arrived: a cut leaves traces still receiving spans live.
    seen: HashMap<TraceId, (Instant, Instant)>,
    spans: usize,
    bytes: usize,
    created: Instant,
    /// Every span in arrival order, as (trace, index in the trace's list): lets searches convert only the spans
    /// that arrived since the last search.
    order: Vec<(TraceId, u32)>,
    /// Record batches of the first `converted` spans of `order`, kept for searches.
    search: parking_lot::Mutex<LiveBatches>,
}

#[derive(Default)]
struct LiveBatches {
    converted: usize,
    batches: Vec<RecordBatch>,
}

/// Past this many small batches, the live head's batches are merged into one.
const MAX_LIVE_BATCHES: usize = 32;

impl Head {
    fn new() -> Self {
        Head {
            traces: HashMap::new(),
            seen: HashMap::new(),
            spans: 0,
            bytes: 0,
            created: Instant::now(),
            order: Vec::new(),
            search: parking_lot::Mutex::new(LiveBatches::default()),
        }
    }

    /// The head as record batches, converting only what arrived since the last call. Each batch holds a
    /// trace's spans of one arrival window, so trace-level columns are per window (a search takes the minimum
    /// start over them and evaluates whole traces later).
    fn batches(&self) -> Result<Vec<RecordBatch>, BlockError> {
        let mut cache = self.search.lock();
        if cache.converted < self.order.len() {
            // New spans of a trace are a suffix of its list: find where each trace's suffix starts.
            let mut first: HashMap<TraceId, u32> = HashMap::new();
            for (id, idx) in &self.order[cache.converted..] {
                first.entry(*id).or_insert(*idx);
            }
            let slices = first.iter().filter_map(|(id, from)| self.traces.get(id).map(|v| (id, &v[*from as usize..])));
            let fresh = traces_to_batches(slices, SEARCH_BATCH_ROWS)?;
            cache.batches.extend(fresh);
            cache.converted = self.order.len();
            if cache.batches.len() > MAX_LIVE_BATCHES {
                let merged = arrow::compute::concat_batches(&crate::block::schema::schema(), &cache.batches)?;
                cache.batches = vec![merged];
            }
        }
        Ok(cache.batches.clone())
    }
}

/// A head cut from the live set, waiting to become a block. Traces are sorted, as the block wants them.
pub struct FrozenHead {
    pub tenant: Tenant,
    /// The WAL segments holding this head's spans (and none of the tenant's later ones), recorded in its block.
    pub wal: Option<WalRange>,
    pub traces: Vec<(TraceId, Vec<SpanRecord>)>,
    pub spans: usize,
    pub bytes: usize,
    /// The head as record batches for searches, built on first use: a frozen head no longer changes.
    batches: std::sync::OnceLock<Vec<RecordBatch>>,
}

impl FrozenHead {
    fn find(&self, id: &TraceId) -> Option<&Vec<SpanRecord>> {
        self.traces.binary_search_by(|t| t.0.cmp(id)).ok().map(|i| &self.traces[i].1)
    }
}

/// All heads frozen at one WAL rotation. When all are in blocks, segments up to `seq` can go.
pub struct Cut {
    /// Cuts are numbered in order; `/flush` waits for its cut's number, not for a WAL sequence (a failed rotation
    /// leaves the WAL sequence where an earlier cut already was).
    pub id: u64,
    /// WAL segments through this one hold only data of this and earlier cuts (the segment before the current
    /// one when the rotation failed: the current one is still written to and goes with a later cut).
    pub seq: Option<u64>,
    pub heads: Vec<Arc<FrozenHead>>,
}

struct Shared {
    live: RwLock<HashMap<Tenant, Head>>,
    flushing: RwLock<Vec<Arc<FrozenHead>>>,
    /// OTLP bytes in frozen heads not yet in blocks: what bounds memory while blocks are built and uploaded.
    backlog: AtomicUsize,
    /// Signalled whenever a frozen head leaves the backlog.
    drained: tokio::sync::Notify,
    /// Tenants with a block that currently fails to build or upload, and how many: their requests are refused
    /// (503) while other tenants keep being served.
    failing: parking_lot::Mutex<HashMap<Tenant, usize>>,
    metrics: Arc<Metrics>,
}

enum Cmd {
    Append {
        tenant: Tenant,
        header: Vec<u8>,
        body: Bytes,
        spans: Vec<(TraceId, SpanRecord)>,
        ack: oneshot::Sender<Result<(), IngestError>>,
    },
    /// Rotate the WAL and freeze every head; replies with the cut's number.
    Cut { reply: Option<oneshot::Sender<u64>> },
    /// Cut if some head is older than the maximum block age.
    Tick,
}

/// The handle receivers and queriers use.
pub struct Ingester {
    tx: mpsc::Sender<Cmd>,
    /// Span metrics and service graph, fed with each request's spans once they are acknowledged.
    generator: Option<Arc<crate::generate::Generator>>,
    shared: Arc<Shared>,
    flushed: watch::Receiver<u64>,
    backlog_limit: usize,
}

impl Ingester {
    /// Replays the WAL into memory, then starts the WAL thread and the flusher.
    pub fn start(
        cfg: IngestConfig,
        blocks: Arc<BlockStore>,
        metrics: Arc<Metrics>,
        generator: Option<Arc<crate::generate::Generator>>,
    ) -> Result<Arc<Self>, IngestError> {
        std::fs::create_dir_all(&cfg.wal_dir).map_err(|e| IngestError::Wal(e.to_string()))?;
        let shared = Arc::new(Shared {
            live: RwLock::new(HashMap::new()),
            flushing: RwLock::new(Vec::new()),
            backlog: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            failing: parking_lot::Mutex::new(HashMap::new()),
            metrics: metrics.clone(),
        });
        let seqs = wal::list_segments(&cfg.wal_dir).map_err(|e| IngestError::Wal(e.to_string()))?;
        let instance = wal::instance_id(&cfg.wal_dir, seqs.is_empty()).map_err(|e| IngestError::Wal(e.to_string()))?;
        // Segments a tenant's blocks already hold (a crash after upload, before the WAL was cleaned): their
        // records are skipped rather than replayed into a second copy.
        let mut in_blocks: HashMap<Tenant, Vec<(u64, u64)>> = HashMap::new();
        let (mut replayed, mut skipped) = (0usize, 0usize);
        for &seq in &seqs {
            let records = wal::read_segment(&cfg.wal_dir, seq).map_err(|e| IngestError::Wal(e.to_string()))?;
            let mut live = shared.live.write();
            for rec in records {
                let Ok(tenant) = Tenant::parse(Some(&rec.tenant)) else { continue };
                let ranges = in_blocks.entry(tenant.clone()).or_insert_with(|| {
                    blocks
                        .blocks(&tenant)
                        .iter()
                        .flat_map(|b| b.meta.wal.iter().filter(|w| w.instance == instance).map(|w| (w.first, w.last)))
                        .collect()
                });
                if ranges.iter().any(|&(first, last)| (first..=last).contains(&seq)) {
                    skipped += 1;
                    continue;
                }
                let Ok(req) = ExportTraceServiceRequest::decode(rec.body.clone()) else { continue };
                let spans = to_records(req);
                replayed += spans.len();
                insert(&mut live, tenant, spans, rec.body.len());
            }
        }
        if replayed > 0 || skipped > 0 {
            tracing::info!(spans = replayed, segments = seqs.len(), skipped_records = skipped, "replayed WAL");
        }
        metrics.live_spans.set(replayed as i64);
        // Segment numbers never repeat under one instance: a block's claim on a number must not cover records
        // written later.
        let claimed = blocks
            .all_blocks()
            .iter()
            .flat_map(|b| b.meta.wal.iter().filter(|w| w.instance == instance).map(|w| w.last))
            .max();
        let next = seqs.last().copied().max(claimed).map_or(1, |s| s + 1);
        let segment = wal::Wal::open(&cfg.wal_dir, next).map_err(|e| IngestError::Wal(e.to_string()))?;
        let (tx, rx) = mpsc::channel(4096);
        let (cut_tx, cut_rx) = mpsc::unbounded_channel();
        let (flushed_tx, flushed) = watch::channel(0u64);
        // One head may be building while the next fills; a second finished head waits for the first.
        let backlog_limit = cfg.max_block_bytes.saturating_mul(3) / 2;
        {
            let shared = shared.clone();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("strata-wal".into())
                .spawn(move || {
                    let since = seqs.first().copied().unwrap_or(next);
                    wal_thread(rx, WalState { wal: segment, instance, since, next_cut: 0 }, shared, cfg, cut_tx)
                })
                .map_err(|e| IngestError::Wal(e.to_string()))?;
        }
        tokio::spawn(flush::run(cut_rx, shared.clone(), blocks, cfg.clone(), flushed_tx));
        let ticker = tx.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_secs(1));
            loop {
                iv.tick().await;
                if ticker.send(Cmd::Tick).await.is_err() {
                    break;
                }
            }
        });
        Ok(Arc::new(Ingester { tx, generator, shared, flushed, backlog_limit }))
    }

    /// Makes a request's spans durable and live. `raw` is the request's protobuf encoding when the caller already
    /// has it unchanged, which spares re-encoding it for the WAL.
    pub async fn push(
        &self,
        tenant: Tenant,
        req: ExportTraceServiceRequest,
        raw: Option<Bytes>,
    ) -> Result<(), IngestError> {
        self.wait_for_backlog(&tenant).await?;
        let body = raw.unwrap_or_else(|| Bytes::from(req.encode_to_vec()));
        if body.len() > wal::MAX_BODY || tenant.as_str().len() > wal::MAX_TENANT {
            // Receivers cap requests below this (see config); a record that large would not replay.
            return Err(IngestError::Wal(format!("request of {} bytes does not fit a WAL record", body.len())));
        }
        let header = wal::record_header(tenant.as_str(), &body);
        let spans = to_records(req);
        if spans.is_empty() {
            return Ok(());
        }
        // The generator counts spans once they are acknowledged; what it needs is taken now (they move on).
        let observed = self.generator.as_ref().map(|g| (g, g.prepare(&tenant, &spans), tenant.clone()));
        let (ack, rx) = oneshot::channel();
        self.tx.send(Cmd::Append { tenant, header, body, spans, ack }).await.map_err(|_| IngestError::Shutdown)?;
        rx.await.map_err(|_| IngestError::Shutdown)??;
        if let Some((g, observed, tenant)) = observed {
            g.record(&tenant, observed);
        }
        Ok(())
    }

    /// Backpressure: while more than the allowed amount of data waits for upload, requests wait (bounded), so a
    /// burst slows clients down instead of growing memory without limit. A failing store is reported at once.
    async fn wait_for_backlog(&self, tenant: &Tenant) -> Result<(), IngestError> {
        let deadline = tokio::time::Instant::now() + BACKLOG_WAIT;
        loop {
            if self.shared.failing.lock().contains_key(tenant) {
                return Err(IngestError::StoreUnavailable);
            }
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let backlog = self.shared.backlog.load(Ordering::Relaxed);
            if backlog <= self.backlog_limit {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(IngestError::Backlog(backlog));
            }
        }
    }

    /// Cuts everything in memory into blocks and waits until they are in object storage.
    pub async fn flush(&self) -> Result<(), IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Cut { reply: Some(reply) }).await.map_err(|_| IngestError::Shutdown)?;
        let cut = rx.await.map_err(|_| IngestError::Shutdown)?;
        let mut flushed = self.flushed.clone();
        flushed.wait_for(|done| *done >= cut).await.map_err(|_| IngestError::Shutdown)?;
        Ok(())
    }

    /// Spans of a trace still in memory (live or waiting for upload).
    pub fn find_trace(&self, tenant: &Tenant, id: &TraceId) -> Vec<SpanRecord> {
        let mut out = Vec::new();
        if let Some(spans) = self.shared.live.read().get(tenant).and_then(|h| h.traces.get(id)) {
            out.extend(spans.iter().cloned());
        }
        for f in self.shared.flushing.read().iter().filter(|f| &f.tenant == tenant) {
            if let Some(spans) = f.find(id) {
                out.extend(spans.iter().cloned());
            }
        }
        out
    }

    /// Whether memory holds spans of the trace (no copy made, unlike [`Ingester::find_trace`]).
    /// The IDs of the tenant's traces in memory now (live and frozen heads; a trace in both is listed twice).
    /// For tests over many traces at once: one pass over memory instead of a lookup per trace.
    pub fn trace_ids(&self, tenant: &Tenant) -> Vec<TraceId> {
        let mut out: Vec<TraceId> =
            self.shared.live.read().get(tenant).map(|h| h.traces.keys().copied().collect()).unwrap_or_default();
        for f in self.shared.flushing.read().iter().filter(|f| &f.tenant == tenant) {
            out.extend(f.traces.iter().map(|t| t.0));
        }
        out
    }

    pub fn holds_trace(&self, tenant: &Tenant, id: &TraceId) -> bool {
        self.shared.live.read().get(tenant).is_some_and(|h| h.traces.contains_key(id))
            || self.shared.flushing.read().iter().any(|f| &f.tenant == tenant && f.find(id).is_some())
    }

    /// The tenant's spans still in memory as record batches of the block schema (built by the block writer's
    /// row builder), so searches run the same plan over them as over blocks. Each span is converted once: the
    /// live head converts what arrived since the previous search, a frozen head once.
    pub fn search_batches(&self, tenant: &Tenant) -> Result<Vec<RecordBatch>, BlockError> {
        let mut out = Vec::new();
        // Live first, then frozen: a head frozen in between is then seen twice (deduplicated later), never missed.
        if let Some(head) = self.shared.live.read().get(tenant) {
            out.extend(head.batches()?);
        }
        let frozen: Vec<Arc<FrozenHead>> =
            self.shared.flushing.read().iter().filter(|f| &f.tenant == tenant).cloned().collect();
        for f in frozen {
            if f.batches.get().is_none() {
                let b = traces_to_batches(f.traces.iter().map(|(id, r)| (id, r.as_slice())), SEARCH_BATCH_ROWS)?;
                let _ = f.batches.set(b);
            }
            out.extend(f.batches.get().into_iter().flatten().cloned());
        }
        Ok(out)
    }

    /// Whether uploads currently succeed (for readiness and error reporting).
    pub fn store_healthy(&self) -> bool {
        self.shared.failing.lock().is_empty()
    }
}

/// Moves a request's spans into records that share their resource and scope.
pub fn to_records(req: ExportTraceServiceRequest) -> Vec<(TraceId, SpanRecord)> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        for ss in rs.scope_spans {
            let origin = Arc::new(Origin {
                resource: resource.clone(),
                resource_schema_url: rs.schema_url.clone(),
                scope: ss.scope.unwrap_or_default(),
                scope_schema_url: ss.schema_url,
            });
            for span in ss.spans {
                if let Some(id) = TraceId::from_bytes(&span.trace_id) {
                    out.push((id, SpanRecord { origin: origin.clone(), span }));
                }
            }
        }
    }
    out
}

fn insert(live: &mut HashMap<Tenant, Head>, tenant: Tenant, spans: Vec<(TraceId, SpanRecord)>, bytes: usize) {
    let head = live.entry(tenant).or_insert_with(Head::new);
    head.spans += spans.len();
    head.bytes += bytes;
    let now = Instant::now();
    for (id, rec) in spans {
        let list = head.traces.entry(id).or_default();
        head.order.push((id, list.len() as u32));
        list.push(rec);
        head.seen.entry(id).or_insert((now, now)).1 = now;
    }
}

/// Longest a trace that keeps receiving spans is kept out of cuts.
const MAX_TRACE_LIVE: Duration = Duration::from_secs(30);

/// Which traces a cut moves into blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CutMode {
    /// Everything (`/flush`, shutdown).
    All,
    /// Traces idle for `max_trace_idle`, or live for `MAX_TRACE_LIVE`; the rest stay live so they land in one
    /// block (unless they would make up more than half a block).
    Idle,
}

/// An OTLP request holding `traces`' spans, grouped by resource and scope as they arrived.
fn to_request(traces: &[(TraceId, Vec<SpanRecord>)]) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let mut at: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    for (_, records) in traces {
        for r in records {
            let i = *at.entry(Arc::as_ptr(&r.origin) as usize).or_insert_with(|| {
                out.push(ResourceSpans {
                    resource: Some(r.origin.resource.clone()),
                    schema_url: r.origin.resource_schema_url.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(r.origin.scope.clone()),
                        spans: Vec::new(),
                        schema_url: r.origin.scope_schema_url.clone(),
                    }],
                });
                out.len() - 1
            });
            out[i].scope_spans[0].spans.push(r.span.clone());
        }
    }
    ExportTraceServiceRequest { resource_spans: out }
}

/// The WAL thread's log state.
struct WalState {
    wal: wal::Wal,
    /// This WAL's identity, recorded in blocks.
    instance: String,
    /// First segment whose records no cut has claimed yet.
    since: u64,
    next_cut: u64,
}

fn wal_thread(
    mut rx: mpsc::Receiver<Cmd>,
    mut segment: WalState,
    shared: Arc<Shared>,
    cfg: IngestConfig,
    cuts: mpsc::UnboundedSender<Cut>,
) {
    let mut pending: Vec<Cmd> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        pending.push(first);
        while pending.len() < 1024 {
            match rx.try_recv() {
                Ok(c) => pending.push(c),
                Err(_) => break,
            }
        }
        let mut group: Vec<Cmd> = Vec::new();
        for cmd in pending.drain(..) {
            match cmd {
                Cmd::Append { .. } => group.push(cmd),
                Cmd::Cut { reply } => {
                    commit(&mut segment.wal, &mut group, &shared);
                    let id = cut(&mut segment, &shared, &cuts, CutMode::All, &cfg);
                    if let Some(r) = reply {
                        let _ = r.send(id);
                    }
                }
                Cmd::Tick => {
                    commit(&mut segment.wal, &mut group, &shared);
                    let old = shared.live.read().values().any(|h| h.created.elapsed() >= cfg.max_block_age);
                    if old {
                        cut(&mut segment, &shared, &cuts, CutMode::Idle, &cfg);
                    }
                }
            }
        }
        commit(&mut segment.wal, &mut group, &shared);
        let full =
            shared.live.read().values().any(|h| h.spans >= cfg.max_block_spans || h.bytes >= cfg.max_block_bytes);
        if full {
            cut(&mut segment, &shared, &cuts, CutMode::Idle, &cfg);
        }
    }
    tracing::debug!("WAL thread stopped");
}

/// Writes a group of appends with one fsync, then makes them live and acknowledges them.
fn commit(segment: &mut wal::Wal, group: &mut Vec<Cmd>, shared: &Shared) {
    if group.is_empty() {
        return;
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(group.len() * 2);
    for c in group.iter() {
        if let Cmd::Append { header, body, .. } = c {
            parts.push(header);
            parts.push(body);
        }
    }
    let started = Instant::now();
    let res = segment.append(&parts);
    shared.metrics.wal_fsync_seconds.observe(started.elapsed().as_secs_f64());
    match res {
        Ok(n) => {
            shared.metrics.wal_bytes.inc_by(n);
            let mut live = shared.live.write();
            let mut acks = Vec::with_capacity(group.len());
            let mut added = 0usize;
            for c in group.drain(..) {
                if let Cmd::Append { tenant, body, spans, ack, .. } = c {
                    added += spans.len();
                    insert(&mut live, tenant, spans, body.len());
                    acks.push(ack);
                }
            }
            drop(live);
            shared.metrics.live_spans.inc_by(added as i64);
            for ack in acks {
                let _ = ack.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "WAL write failed; rejecting the requests");
            for c in group.drain(..) {
                if let Cmd::Append { ack, .. } = c {
                    let _ = ack.send(Err(IngestError::Wal(e.to_string())));
                }
            }
        }
    }
}

/// Leaves the head's active traces live: they move to a new live head and are logged again in the new WAL segment
/// (the old segments go once this cut is in blocks). Returns whether anything is left to freeze. If the active
/// traces would fill half a block, or logging them fails, everything is frozen instead.
fn carry_over(
    st: &mut WalState,
    live: &mut HashMap<Tenant, Head>,
    tenant: &Tenant,
    head: &mut Head,
    cfg: &IngestConfig,
) -> bool {
    // A trace that never goes quiet is still cut once it has been live this long (as Tempo's live period).
    let max_live = MAX_TRACE_LIVE.max(cfg.max_trace_idle * 2);
    let active: Vec<TraceId> = head
        .seen
        .iter()
        .filter(|(_, (first, last))| last.elapsed() < cfg.max_trace_idle && first.elapsed() < max_live)
        .map(|(id, _)| *id)
        .collect();
    let active_spans: usize = active.iter().filter_map(|id| head.traces.get(id)).map(Vec::len).sum();
    if active.is_empty() || active_spans * 2 > cfg.max_block_spans {
        return true;
    }
    let kept: Vec<(TraceId, Vec<SpanRecord>)> =
        active.iter().filter_map(|id| head.traces.get(id).map(|r| (*id, r.clone()))).collect();
    let body = to_request(&kept).encode_to_vec();
    let header = wal::record_header(tenant.as_str(), &body);
    if let Err(e) = st.wal.append(&[&header, &body]) {
        tracing::warn!(error = %e, "cannot log active traces again; cutting them too");
        return true;
    }
    let mut next = Head::new();
    for (id, records) in kept {
        head.traces.remove(&id);
        let seen = head.seen.remove(&id);
        head.spans -= records.len();
        next.spans += records.len();
        for rec in records {
            next.order.push((id, next.traces.get(&id).map_or(0, Vec::len) as u32));
            next.traces.entry(id).or_default().push(rec);
        }
        if let Some(seen) = seen {
            next.seen.insert(id, seen);
        }
    }
    next.bytes = body.len();
    head.bytes = head.bytes.saturating_sub(body.len());
    // The frozen part's search batches no longer match it; they are rebuilt on demand.
    head.order.clear();
    live.insert(tenant.clone(), next);
    !head.traces.is_empty()
}

/// Rotates the WAL and freezes every head. Returns the cut's number.
fn cut(
    st: &mut WalState,
    shared: &Shared,
    cuts: &mpsc::UnboundedSender<Cut>,
    mode: CutMode,
    cfg: &IngestConfig,
) -> u64 {
    st.next_cut += 1;
    let id = st.next_cut;
    let current = st.wal.seq();
    // Segments before the current one hold only data of this cut and earlier ones: once this cut is in blocks
    // they can go (which is also what frees a full WAL disk), and its blocks claim them.
    let mut mode = mode;
    let claimed = match st.wal.rotate() {
        Ok(closed) => Some(closed),
        Err(e) => {
            // Keep appending to the current segment; the cut still happens, the segment goes with a later cut.
            tracing::error!(error = %e, "cannot create a new WAL segment");
            // A segment that failed takes no more records, so this cut can claim it too: deleting it once the
            // cut is uploaded is what frees a full disk.
            // Without a fresh segment, traces left live could not be logged again apart from the old ones.
            mode = CutMode::All;
            if st.wal.failed() { Some(current) } else { current.checked_sub(1) }
        }
    };
    let range = claimed.filter(|&last| last >= st.since).map(|last| WalRange {
        instance: st.instance.clone(),
        first: st.since,
        last,
    });
    if let Some(last) = claimed {
        st.since = st.since.max(last + 1);
    }
    let heads: Vec<Arc<FrozenHead>> = {
        let mut live = shared.live.write();
        let taken = std::mem::take(&mut *live);
        let mut flushing = shared.flushing.write();
        let mut frozen = Vec::with_capacity(taken.len());
        for (tenant, mut head) in taken {
            if mode == CutMode::Idle && !carry_over(st, &mut live, &tenant, &mut head, cfg) {
                continue;
            }
            let mut traces: Vec<(TraceId, Vec<SpanRecord>)> = head.traces.into_iter().collect();
            traces.sort_unstable_by_key(|t| t.0);
            // Batches searches already built cover the frozen head if they cover every span.
            let batches = std::sync::OnceLock::new();
            let cached = head.search.into_inner();
            if cached.converted == head.order.len() && cached.converted > 0 {
                let _ = batches.set(cached.batches);
            }
            let f = Arc::new(FrozenHead {
                tenant,
                wal: range.clone(),
                traces,
                spans: head.spans,
                bytes: head.bytes,
                batches,
            });
            shared.backlog.fetch_add(f.bytes, Ordering::Relaxed);
            flushing.push(f.clone());
            frozen.push(f);
        }
        frozen
    };
    if cuts.send(Cut { id, seq: claimed, heads }).is_err() {
        tracing::error!("flusher stopped; frozen data stays in the WAL");
    }
    id
}
