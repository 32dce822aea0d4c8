//! The block index and the block-level read path.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::RwLock;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::bloom_filter::Sbbf;
use serde::{Deserialize, Serialize};

use super::StorageError;
use super::file::{ObjectFile, reader_options};
use crate::block::{
    self, BLOOM_OBJECT, BlockMeta, BuiltBlock, DATA_OBJECT, META_OBJECT, SpanParts, TraceBloom, TraceIndex,
};
use crate::model::{SpanRecord, Tenant, TraceId};
use crate::telemetry::Metrics;

const INDEX_OBJECT: &str = "index.json";
/// Searches fetching at most this many traces from a block take their rows from the cached decoded columns when
/// those are all they need (20 traces spread over 9 blocks: ~8 ms of page decompression otherwise); larger
/// fetches read the file, so that one bulk search does not pull every block's columns into the cache.
const CACHED_FETCH_MAX: usize = 1024;
/// How many blocks are loaded (meta + bloom) at once at start-up.
const LOAD_CONCURRENCY: usize = 16;

/// One block as readers see it: meta and bloom in memory; its footer and trace index live in the store's
/// byte-bounded caches.
pub struct BlockEntry {
    pub meta: BlockMeta,
    pub min_id: TraceId,
    pub max_id: TraceId,
    bloom: TraceBloom,
    /// The block list generation when this process added the entry (0: loaded from the bucket), so a refresh
    /// that listed the bucket before the block was published does not drop it.
    added_gen: u64,
}

impl BlockEntry {
    fn new(meta: BlockMeta, bloom: TraceBloom) -> Self {
        let min_id = TraceId::from_hex(&meta.min_trace_id).unwrap_or_default();
        let max_id = TraceId::from_hex(&meta.max_trace_id).unwrap_or(TraceId([0xff; 16]));
        BlockEntry { meta, min_id, max_id, bloom, added_gen: 0 }
    }

    /// Cheap, in-memory test: can this block hold the trace?
    pub fn may_contain(&self, id: &TraceId) -> bool {
        *id >= self.min_id && *id <= self.max_id && self.bloom.may_contain(id)
    }
}

/// What `<tenant>/index.json` holds: the metas of every live block, so a reader can load the tenant with one GET.
#[derive(Serialize, Deserialize, Default)]
struct IndexFile {
    blocks: Vec<BlockMeta>,
}

/// Conditional writes of `index.json` tried before leaving it to the next write.
const INDEX_WRITE_ATTEMPTS: usize = 5;
/// A block another writer listed in `index.json` that this process still has not seen after this long was removed
/// (compacted, expired): this process refreshes its list every minute.
const INDEX_FOREIGN_TTL_SECS: u64 = 3600;

/// The index a writer stores: its own blocks, plus the stored entries of other writers it has not seen yet,
/// minus blocks it knows were removed (retired by compaction, expired) or that another listed block replaces.
fn merge_index(ours: Vec<BlockMeta>, stored: Vec<BlockMeta>, removed: &[String], now: u64) -> Vec<BlockMeta> {
    let mut out = ours;
    let known: std::collections::HashSet<String> = out.iter().map(|m| m.block_id.clone()).collect();
    out.extend(stored.into_iter().filter(|m| {
        !known.contains(&m.block_id)
            && !removed.contains(&m.block_id)
            && m.created_at_unix.saturating_add(INDEX_FOREIGN_TTL_SECS) > now
    }));
    let replaced: std::collections::HashSet<String> = out.iter().flat_map(|m| m.replaces.iter().cloned()).collect();
    out.retain(|m| !replaced.contains(&m.block_id));
    out.sort_by(|a, b| a.block_id.cmp(&b.block_id));
    out
}

/// All tenants' blocks, and the operations that read and write them.
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    tenants: RwLock<HashMap<Tenant, Vec<Arc<BlockEntry>>>>,
    /// Blocks replaced by compaction, still in the bucket for queries that started on them: with the time they
    /// were replaced (unix seconds), until garbage collection deletes them.
    retired: RwLock<HashMap<Tenant, Vec<(BlockMeta, u64)>>>,
    /// Bumped by every block this process adds; see `BlockEntry::added_gen`.
    generation: std::sync::atomic::AtomicU64,
    /// Whether the block list has been read from the bucket at least once (start-up does not wait for an
    /// unreachable store: ingest and WAL replay go on, and the list is loaded by a later refresh).
    loaded: std::sync::atomic::AtomicBool,
    /// Parquet footers (with page index) by block ID, least recently used out first.
    footers: quick_cache::sync::Cache<String, ArrowReaderMetadata, FooterWeight>,
    /// Trace indexes by block ID, likewise.
    indexes: quick_cache::sync::Cache<String, Arc<TraceIndex>, IndexWeight>,
    /// Whole decoded columns by (block ID, column), likewise: a search filtering on plain columns evaluates its
    /// predicate on them instead of decompressing the block's pages again (see `query/DESIGN.md`).
    columns: quick_cache::sync::Cache<(String, String), ArrayRef, ColumnWeight>,
    /// Per block ID: which of its traces (by trace-index position) some other block's bloom filter may hold,
    /// with a fingerprint of the other blocks it was computed against.
    shared: quick_cache::sync::Cache<String, Arc<(u64, arrow::buffer::BooleanBuffer)>, SharedWeight>,
    /// Per (block ID, predicate text): the rows of the block that pass the predicate (see `mask`).
    masks: quick_cache::sync::Cache<(String, String), arrow::buffer::BooleanBuffer, MaskWeight>,
    /// Per (block ID, row group, leaf): what rules values of an attribute list out of the row group.
    attr_blooms: quick_cache::sync::Cache<(String, usize, usize), Arc<ValueFilter>, BloomWeight>,
    column_budget: u64,
    metrics: Arc<Metrics>,
}

/// Byte budgets for what the store caches per block.
#[derive(Debug, Clone, Copy)]
pub struct CacheBudgets {
    pub footer_bytes: u64,
    pub trace_index_bytes: u64,
    pub column_bytes: u64,
}

impl Default for CacheBudgets {
    fn default() -> Self {
        CacheBudgets { footer_bytes: 128 << 20, trace_index_bytes: 128 << 20, column_bytes: 128 << 20 }
    }
}

#[derive(Clone)]
struct FooterWeight;

impl quick_cache::Weighter<String, ArrowReaderMetadata> for FooterWeight {
    fn weight(&self, key: &String, val: &ArrowReaderMetadata) -> u64 {
        (key.len() + val.metadata().memory_size()) as u64
    }
}

#[derive(Clone)]
struct IndexWeight;

impl quick_cache::Weighter<String, Arc<TraceIndex>> for IndexWeight {
    fn weight(&self, key: &String, val: &Arc<TraceIndex>) -> u64 {
        (key.len() + val.heap_bytes()) as u64
    }
}

#[derive(Clone)]
struct ColumnWeight;

impl quick_cache::Weighter<(String, String), ArrayRef> for ColumnWeight {
    fn weight(&self, key: &(String, String), val: &ArrayRef) -> u64 {
        (key.0.len() + key.1.len() + val.get_array_memory_size()) as u64
    }
}

#[derive(Clone)]
struct SharedWeight;

impl quick_cache::Weighter<String, Arc<(u64, arrow::buffer::BooleanBuffer)>> for SharedWeight {
    fn weight(&self, key: &String, val: &Arc<(u64, arrow::buffer::BooleanBuffer)>) -> u64 {
        (key.len() + 16 + val.1.inner().len()) as u64
    }
}

#[derive(Clone)]
struct MaskWeight;

impl quick_cache::Weighter<(String, String), arrow::buffer::BooleanBuffer> for MaskWeight {
    fn weight(&self, key: &(String, String), val: &arrow::buffer::BooleanBuffer) -> u64 {
        (key.0.len() + key.1.len() + 32 + val.inner().len()) as u64
    }
}

#[derive(Clone)]
struct BloomWeight;

impl quick_cache::Weighter<(String, usize, usize), Arc<ValueFilter>> for BloomWeight {
    fn weight(&self, key: &(String, usize, usize), val: &Arc<ValueFilter>) -> u64 {
        let keys: usize = val.array_keys.iter().map(|k| k.len() + 24).sum();
        (key.0.len() + 16 + keys + val.bloom.as_ref().map_or(0, |b| b.num_blocks() * 32)) as u64
    }
}

/// What rules string values of an attribute list out of one row group: the Parquet bloom filter of its string
/// leaf (none in blocks written before it existed), and the keys that have array values there (an array of the
/// key may match any value, and its elements are not in the filter).
pub struct ValueFilter {
    bloom: Option<Sbbf>,
    array_keys: std::collections::HashSet<String>,
}

/// Blocks named in some meta's `replaces` (hidden: a compacted block holds their spans), with the latest time
/// one was replaced.
fn replaced_at(metas: &[BlockMeta]) -> HashMap<String, u64> {
    let mut at: HashMap<String, u64> = HashMap::new();
    for m in metas {
        for r in &m.replaces {
            let t = at.entry(r.clone()).or_insert(0);
            *t = (*t).max(m.created_at_unix);
        }
    }
    at
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn block_path(tenant: &str, block: &str, object: &str) -> Path {
    Path::from_iter([tenant, block, object])
}

/// Where a block's Parquet data lives in the object store.
pub fn data_path(tenant: &Tenant, block: &str) -> Path {
    block_path(tenant.as_str(), block, DATA_OBJECT)
}

impl BlockStore {
    /// Loads every tenant's block list: `index.json` plus a listing to catch blocks it does not name yet
    /// (a crash between writing a block's meta and the index). Listing happens here and on refresh, never per
    /// query. When the store cannot be listed, the store opens empty (not loaded) and [`BlockStore::refresh`]
    /// loads it later.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        metrics: Arc<Metrics>,
        budgets: CacheBudgets,
    ) -> Result<Self, StorageError> {
        // Item estimates only size the caches' tables; the byte budgets bound them.
        let bs = BlockStore {
            footers: quick_cache::sync::Cache::with_weighter(1024, budgets.footer_bytes, FooterWeight),
            indexes: quick_cache::sync::Cache::with_weighter(1024, budgets.trace_index_bytes, IndexWeight),
            columns: quick_cache::sync::Cache::with_weighter(4096, budgets.column_bytes, ColumnWeight),
            // A bit per trace: an eighth of the trace indexes' budget holds far more blocks than they do.
            shared: quick_cache::sync::Cache::with_weighter(1024, budgets.trace_index_bytes / 8, SharedWeight),
            // A bit per row: a sixteenth of the columns' budget holds thousands of block predicates.
            masks: quick_cache::sync::Cache::with_weighter(4096, budgets.column_bytes / 16, MaskWeight),
            // Metadata-like, a few kilobytes per row group: a quarter of the footers' budget.
            attr_blooms: quick_cache::sync::Cache::with_weighter(4096, budgets.footer_bytes / 4, BloomWeight),
            column_budget: budgets.column_bytes,
            store,
            tenants: RwLock::new(HashMap::new()),
            retired: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            loaded: std::sync::atomic::AtomicBool::new(false),
            metrics,
        };
        if let Err(e) = bs.load_all().await {
            tracing::error!(error = %e, "cannot read the block list; starting without it and retrying");
        }
        Ok(bs)
    }

    /// Whether the block list has been read from the bucket.
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn load_all(&self) -> Result<(), StorageError> {
        let top = self.store.list_with_delimiter(None).await.map_err(|e| self.err(e))?;
        let mut tenants = HashMap::new();
        let mut retired_all = HashMap::new();
        for dir in top.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            let Ok(tenant) = Tenant::parse(Some(name)) else { continue };
            let (entries, retired) = self.load_tenant(&tenant).await?;
            tracing::info!(tenant = %tenant, blocks = entries.len(), retired = retired.len(), "loaded block index");
            tenants.insert(tenant.clone(), entries);
            retired_all.insert(tenant, retired);
        }
        {
            // Blocks this process published meanwhile (ingest does not wait for the list) are kept.
            let mut current = self.tenants.write();
            for (tenant, mut entries) in tenants {
                for e in current.remove(&tenant).unwrap_or_default() {
                    if !entries.iter().any(|x| x.meta.block_id == e.meta.block_id) {
                        entries.push(e);
                    }
                }
                current.insert(tenant, entries);
            }
        }
        self.retired.write().extend(retired_all);
        self.loaded.store(true, std::sync::atomic::Ordering::SeqCst);
        self.update_gauge();
        Ok(())
    }

    /// Re-reads the block list from the bucket, so blocks written, compacted or deleted by other processes are
    /// seen: new blocks are loaded (a block that failed to load before is tried again), replaced and deleted ones
    /// leave the list. Known blocks keep their cached bloom, footer and trace index. A tenant whose listing fails
    /// keeps its current list.
    pub async fn refresh(&self) -> Result<(), StorageError> {
        if !self.loaded() {
            return self.load_all().await;
        }
        let top = self.store.list_with_delimiter(None).await.map_err(|e| self.err(e))?;
        for dir in top.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            let Ok(tenant) = Tenant::parse(Some(name)) else { continue };
            if let Err(e) = self.refresh_tenant(&tenant).await {
                tracing::warn!(tenant = %tenant, error = %e, "block list refresh failed; keeping the current list");
            }
        }
        self.update_gauge();
        Ok(())
    }

    async fn refresh_tenant(&self, tenant: &Tenant) -> Result<(), StorageError> {
        let started_gen = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let current: HashMap<String, Arc<BlockEntry>> =
            self.blocks(tenant).into_iter().map(|e| (e.meta.block_id.clone(), e)).collect();
        let retired: HashMap<String, (BlockMeta, u64)> = self
            .retired
            .read()
            .get(tenant)
            .into_iter()
            .flatten()
            .map(|(m, at)| (m.block_id.clone(), (m.clone(), *at)))
            .collect();
        let listed = self.list_block_ids(tenant).await?;
        let mut metas: Vec<BlockMeta> = Vec::with_capacity(listed.len());
        for id in &listed {
            if let Some(e) = current.get(id) {
                metas.push(e.meta.clone());
            } else if let Some((m, _)) = retired.get(id) {
                metas.push(m.clone());
            } else {
                match self.load_meta(tenant, id).await {
                    Ok(m) => metas.push(m),
                    Err(e) => tracing::warn!(tenant = %tenant, block = %id, error = %e, "cannot read block meta"),
                }
            }
        }
        let replaced_at = replaced_at(&metas);
        let mut fresh: Vec<BlockEntry> = Vec::new();
        for m in metas.iter().filter(|m| !replaced_at.contains_key(&m.block_id) && !current.contains_key(&m.block_id)) {
            match self.load_block(tenant, m.clone()).await {
                Ok(e) => fresh.push(e),
                Err(e) => tracing::warn!(tenant = %tenant, block = %m.block_id, error = %e, "cannot load block"),
            }
        }
        let listed_ids: std::collections::HashSet<&str> = listed.iter().map(String::as_str).collect();
        let mut tenants = self.tenants.write();
        let list = tenants.entry(tenant.clone()).or_default();
        list.retain(|e| {
            let id = e.meta.block_id.as_str();
            // Added by this process after the listing began: its meta may not have been listed yet.
            e.added_gen > started_gen || (listed_ids.contains(id) && !replaced_at.contains_key(id))
        });
        for e in fresh {
            if !list.iter().any(|x| x.meta.block_id == e.meta.block_id) {
                list.push(Arc::new(e));
            }
        }
        list.sort_by(|a, b| a.meta.block_id.cmp(&b.meta.block_id));
        drop(tenants);
        let mut retired_now: Vec<(BlockMeta, u64)> = metas
            .iter()
            .filter_map(|m| {
                replaced_at.get(&m.block_id).map(|at| (m.clone(), retired.get(&m.block_id).map_or(*at, |r| r.1)))
            })
            .collect();
        // Replaced blocks this process still lists as retired but whose meta is already gone stay out.
        retired_now.retain(|(m, _)| listed_ids.contains(m.block_id.as_str()));
        self.retired.write().insert(tenant.clone(), retired_now);
        Ok(())
    }

    fn err(&self, e: object_store::Error) -> StorageError {
        self.metrics.object_store_errors.inc();
        StorageError::ObjectStore(e)
    }

    fn update_gauge(&self) {
        let n: usize = self.tenants.read().values().map(Vec::len).sum();
        self.metrics.blocks.set(n as i64);
    }

    /// The tenant's visible blocks, and those compaction replaced (hidden, awaiting deletion).
    async fn load_tenant(
        &self,
        tenant: &Tenant,
    ) -> Result<(Vec<Arc<BlockEntry>>, Vec<(BlockMeta, u64)>), StorageError> {
        let mut known: HashMap<String, BlockMeta> = HashMap::new();
        match self.store.get(&Path::from_iter([tenant.as_str(), INDEX_OBJECT])).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.err(e))?;
                match serde_json::from_slice::<IndexFile>(&bytes) {
                    Ok(idx) => known.extend(idx.blocks.into_iter().map(|m| (m.block_id.clone(), m))),
                    Err(e) => tracing::warn!(tenant = %tenant, error = %e, "ignoring unreadable index.json"),
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err(e)),
        }
        // Blocks with a meta.json are complete; the listing is the truth, the index only saves GETs.
        let listed = self.list_block_ids(tenant).await?;
        let loads = listed.into_iter().map(|id| {
            let known_meta = known.remove(&id);
            async move {
                match known_meta {
                    Some(m) => Ok(m),
                    None => self.load_meta(tenant, &id).await,
                }
            }
        });
        let metas: Vec<BlockMeta> = futures::stream::iter(loads)
            .buffer_unordered(LOAD_CONCURRENCY)
            .filter_map(|r| async move {
                r.inspect_err(|e| tracing::error!(tenant = %tenant, error = %e, "skipping unreadable block meta")).ok()
            })
            .collect()
            .await;
        // A block named by another's `replaces` is hidden: the compacted block holds its spans.
        let replaced_at = replaced_at(&metas);
        let retired: Vec<(BlockMeta, u64)> =
            metas.iter().filter_map(|m| replaced_at.get(m.block_id.as_str()).map(|at| (m.clone(), *at))).collect();
        let visible: Vec<BlockMeta> =
            metas.iter().filter(|m| !replaced_at.contains_key(m.block_id.as_str())).cloned().collect();
        let loads = visible.into_iter().map(|m| async move { self.load_block(tenant, m).await });
        let mut entries: Vec<Arc<BlockEntry>> = futures::stream::iter(loads)
            .buffer_unordered(LOAD_CONCURRENCY)
            .filter_map(|r| async move {
                match r {
                    Ok(e) => Some(Arc::new(e)),
                    Err(e) => {
                        tracing::error!(error = %e, "skipping unreadable block");
                        None
                    }
                }
            })
            .collect()
            .await;
        entries.sort_by(|a, b| a.meta.block_id.cmp(&b.meta.block_id));
        Ok((entries, retired))
    }

    /// IDs of the tenant's complete blocks (those with a meta.json), from a listing.
    async fn list_block_ids(&self, tenant: &Tenant) -> Result<Vec<String>, StorageError> {
        let prefix = Path::from(tenant.as_str());
        self.store
            .list(Some(&prefix))
            .try_filter_map(|o| async move {
                let parts: Vec<_> = o.location.parts().collect();
                Ok((parts.len() == 3 && parts[2].as_ref() == META_OBJECT).then(|| parts[1].as_ref().to_string()))
            })
            .try_collect()
            .await
            .map_err(|e| self.err(e))
    }

    async fn load_meta(&self, tenant: &Tenant, id: &str) -> Result<BlockMeta, StorageError> {
        let r = self.store.get(&block_path(tenant.as_str(), id, META_OBJECT)).await.map_err(|e| self.err(e))?;
        Ok(BlockMeta::from_json(&r.bytes().await.map_err(|e| self.err(e))?)?)
    }

    async fn load_block(&self, tenant: &Tenant, meta: BlockMeta) -> Result<BlockEntry, StorageError> {
        let r = self
            .store
            .get(&block_path(tenant.as_str(), &meta.block_id, BLOOM_OBJECT))
            .await
            .map_err(|e| self.err(e))?;
        let bloom = TraceBloom::from_bytes(&r.bytes().await.map_err(|e| self.err(e))?)?;
        Ok(BlockEntry::new(meta, bloom))
    }

    /// Uploads a block (data, bloom, then meta: the meta makes it visible), registers it, rewrites the tenant's
    /// index. Safe to retry: every object is written whole under a fresh block ID.
    pub async fn publish(&self, tenant: &Tenant, built: &BuiltBlock) -> Result<(), StorageError> {
        let t = tenant.as_str();
        let id = built.meta.block_id.as_str();
        self.put(&block_path(t, id, DATA_OBJECT), built.data.clone()).await?;
        self.put(&block_path(t, id, BLOOM_OBJECT), built.bloom.clone()).await?;
        self.put(&block_path(t, id, META_OBJECT), Bytes::from(built.meta.to_json()?)).await?;
        let entry = BlockEntry::new(built.meta.clone(), TraceBloom::from_bytes(&built.bloom)?);
        let options = reader_options();
        if let Ok(footer) = ArrowReaderMetadata::try_new(built.parquet_meta.clone(), options) {
            self.footers.insert(built.meta.block_id.clone(), footer);
        }
        self.swap(tenant, Some(entry), &[]);
        self.write_index(tenant, &[]).await;
        Ok(())
    }

    /// Makes a compacted block visible: its data is already uploaded; writes its bloom, then its meta (which
    /// names the blocks it replaces, so from that moment any reader listing the bucket sees it instead of them),
    /// then swaps it for them in memory and rewrites the tenant index. The replaced blocks stay in the bucket
    /// until [`BlockStore::collect_garbage`] deletes them after a grace period.
    pub async fn publish_merged(&self, tenant: &Tenant, meta: BlockMeta, bloom: Bytes) -> Result<(), StorageError> {
        let t = tenant.as_str();
        let id = meta.block_id.clone();
        self.put(&block_path(t, &id, BLOOM_OBJECT), bloom.clone()).await?;
        self.put(&block_path(t, &id, META_OBJECT), Bytes::from(meta.to_json()?)).await?;
        let replaces = meta.replaces.clone();
        let entry = BlockEntry::new(meta, TraceBloom::from_bytes(&bloom)?);
        self.swap(tenant, Some(entry), &replaces);
        self.write_index(tenant, &[]).await;
        Ok(())
    }

    /// Adds `entry` (if new) and retires the blocks `gone`, in one step for readers.
    fn swap(&self, tenant: &Tenant, mut entry: Option<BlockEntry>, gone: &[String]) {
        let now = now_unix();
        if let Some(e) = entry.as_mut() {
            e.added_gen = self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        }
        let mut tenants = self.tenants.write();
        let list = tenants.entry(tenant.clone()).or_default();
        let (out, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|e| gone.contains(&e.meta.block_id));
        *list = keep;
        if let Some(entry) = entry
            && !list.iter().any(|e| e.meta.block_id == entry.meta.block_id)
        {
            list.push(Arc::new(entry));
        }
        drop(tenants);
        self.retired.write().entry(tenant.clone()).or_default().extend(out.into_iter().map(|e| (e.meta.clone(), now)));
        self.update_gauge();
    }

    /// Rewrites `<tenant>/index.json`: this process's blocks merged with what another writer (an ingester, a
    /// compactor) stored there meanwhile, minus `gone` (blocks just deleted here), written with a conditional PUT
    /// (create when absent, otherwise only over the version just read) and retried when someone wrote in
    /// between, so concurrent writers never drop each other's blocks. Stores without conditional updates (the
    /// local file system, owned by one process) are overwritten. The index only saves start-up GETs (the listing
    /// is the truth), so a failure is logged and never fails the publication that triggered it; a process that
    /// has not read the bucket's block list yet leaves the index alone (its view would drop other writers' blocks).
    async fn write_index(&self, tenant: &Tenant, gone: &[String]) {
        if !self.loaded() {
            return;
        }
        match self.try_write_index(tenant, gone).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(tenant = %tenant, "index.json kept changing under concurrent writers; left for the next write")
            }
            Err(e) => tracing::warn!(tenant = %tenant, error = %e, "index.json not rewritten; the next write retries"),
        }
    }

    async fn try_write_index(&self, tenant: &Tenant, gone: &[String]) -> Result<bool, StorageError> {
        use object_store::{PutMode, PutOptions, UpdateVersion};
        let path = Path::from_iter([tenant.as_str(), INDEX_OBJECT]);
        for _ in 0..INDEX_WRITE_ATTEMPTS {
            let (stored, mode) = match self.store.get(&path).await {
                Ok(r) => {
                    let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                    let conditional = version.e_tag.is_some() || version.version.is_some();
                    let bytes = r.bytes().await.map_err(|e| self.err(e))?;
                    let stored = serde_json::from_slice::<IndexFile>(&bytes).map(|i| i.blocks).unwrap_or_default();
                    // A store that names no version cannot take a conditional update: overwrite.
                    (stored, if conditional { PutMode::Update(version) } else { PutMode::Overwrite })
                }
                Err(object_store::Error::NotFound { .. }) => (Vec::new(), PutMode::Create),
                Err(e) => return Err(self.err(e)),
            };
            let mut removed: Vec<String> =
                self.retired.read().get(tenant).into_iter().flatten().map(|(m, _)| m.block_id.clone()).collect();
            removed.extend(gone.iter().cloned());
            let ours: Vec<BlockMeta> = self.blocks(tenant).iter().map(|e| e.meta.clone()).collect();
            let merged = merge_index(ours, stored, &removed, now_unix());
            let payload = PutPayload::from(serde_json::to_vec(&IndexFile { blocks: merged })?);
            let put = |mode: PutMode| self.store.put_opts(&path, payload.clone(), PutOptions::from(mode));
            match put(mode).await {
                Ok(_) => return Ok(true),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => continue,
                Err(object_store::Error::NotImplemented { .. }) => {
                    put(PutMode::Overwrite).await.map_err(|e| self.err(e))?;
                    return Ok(true);
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(false)
    }

    /// Tenants with blocks (visible or retired).
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut t: Vec<Tenant> = self.tenants.read().keys().cloned().collect();
        t.extend(self.retired.read().keys().filter(|k| !t.contains(k)).cloned().collect::<Vec<_>>());
        t
    }

    /// Removes blocks past retention from view at once (meta first, so a reader never sees a block whose data
    /// is gone); their other objects go with garbage collection.
    pub async fn expire(&self, tenant: &Tenant, ids: &[String]) -> Result<(), StorageError> {
        for id in ids {
            self.delete(&block_path(tenant.as_str(), id, META_OBJECT)).await?;
        }
        {
            let mut tenants = self.tenants.write();
            if let Some(list) = tenants.get_mut(tenant) {
                list.retain(|e| !ids.contains(&e.meta.block_id));
            }
        }
        self.update_gauge();
        self.write_index(tenant, ids).await;
        Ok(())
    }

    /// Deletes what no reader needs any more: blocks replaced more than `grace` seconds ago (meta first; a block
    /// only once the blocks it replaced itself are gone, so none of them reappears), and objects of blocks that
    /// never got a meta (an upload cut short) or lost it (expired), older than `orphan_age` seconds. Returns how
    /// many blocks were deleted.
    pub async fn collect_garbage(&self, tenant: &Tenant, grace: u64, orphan_age: u64) -> Result<usize, StorageError> {
        let now = now_unix();
        let retired: Vec<(BlockMeta, u64)> = self.retired.read().get(tenant).cloned().unwrap_or_default();
        let mut deleted = 0usize;
        for (meta, at) in &retired {
            let waits_on_older = meta.replaces.iter().any(|r| retired.iter().any(|(m, _)| &m.block_id == r));
            if now.saturating_sub(*at) < grace || waits_on_older {
                continue;
            }
            self.delete_block(tenant, &meta.block_id).await?;
            if let Some(list) = self.retired.write().get_mut(tenant) {
                list.retain(|(m, _)| m.block_id != meta.block_id);
            }
            deleted += 1;
        }
        // Orphans: block folders without a meta.
        let prefix = Path::from(tenant.as_str());
        let objects: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.err(e))?;
        let mut folders: HashMap<String, (bool, u64, Vec<Path>)> = HashMap::new();
        for o in objects {
            let parts: Vec<String> = o.location.parts().map(|p| p.as_ref().to_string()).collect();
            if parts.len() != 3 {
                continue;
            }
            let f = folders.entry(parts[1].clone()).or_insert((false, 0, Vec::new()));
            f.0 |= parts[2] == META_OBJECT;
            f.1 = f.1.max(o.last_modified.timestamp().max(0) as u64);
            f.2.push(o.location);
        }
        for (_, (has_meta, newest, paths)) in folders {
            if has_meta || now.saturating_sub(newest) < orphan_age {
                continue;
            }
            for p in paths {
                self.delete(&p).await?;
            }
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes a block's objects, meta first.
    async fn delete_block(&self, tenant: &Tenant, id: &str) -> Result<(), StorageError> {
        for object in [META_OBJECT, DATA_OBJECT, BLOOM_OBJECT] {
            self.delete(&block_path(tenant.as_str(), id, object)).await?;
        }
        Ok(())
    }

    async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Reads a whole block in trace-ID order, `batch_rows` rows at a time (for compaction).
    pub async fn stream_block(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        batch_rows: usize,
    ) -> Result<parquet::arrow::async_reader::ParquetRecordBatchStream<ObjectFile>, StorageError> {
        let footer = self.footer(tenant, b).await?;
        Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(self.data_file(tenant, b), footer)
            .with_batch_size(batch_rows)
            .build()?)
    }

    /// A writer for a new block's data object: large outputs are uploaded in parts as they are written.
    pub fn data_writer(&self, tenant: &Tenant, block_id: &str) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::new(self.store.clone(), block_path(tenant.as_str(), block_id, DATA_OBJECT))
    }

    /// Size of an uploaded object.
    pub async fn object_size(&self, tenant: &Tenant, block_id: &str) -> Result<u64, StorageError> {
        let m = self.store.head(&block_path(tenant.as_str(), block_id, DATA_OBJECT)).await.map_err(|e| self.err(e))?;
        Ok(m.size)
    }

    async fn put(&self, path: &Path, data: Bytes) -> Result<(), StorageError> {
        self.store.put(path, PutPayload::from_bytes(data)).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every tenant's blocks.
    pub fn all_blocks(&self) -> Vec<Arc<BlockEntry>> {
        self.tenants.read().values().flatten().cloned().collect()
    }

    /// The tenant's blocks, for queriers that scan.
    pub fn blocks(&self, tenant: &Tenant) -> Vec<Arc<BlockEntry>> {
        self.tenants.read().get(tenant).cloned().unwrap_or_default()
    }

    /// For each trace of block `b` (by position in its trace `index`), whether another of the tenant's blocks,
    /// as listed now, may hold spans of it (bloom filter and ID range). Computed once per block and set of other
    /// blocks (a search settling 100k traces spent a fifth of its time probing ten blooms per trace), again
    /// whenever a block appears or goes.
    pub fn shared_traces(&self, tenant: &Tenant, b: &BlockEntry, index: &TraceIndex) -> arrow::buffer::BooleanBuffer {
        let others: Vec<Arc<BlockEntry>> =
            self.blocks(tenant).into_iter().filter(|o| o.meta.block_id != b.meta.block_id).collect();
        // Order-independent: the sum of the other block IDs' hashes, plus their count.
        let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let fingerprint =
            others.iter().map(|o| state.hash_one(&o.meta.block_id)).fold(others.len() as u64, u64::wrapping_add);
        if let Some(hit) = self.shared.get(&b.meta.block_id).filter(|e| e.0 == fingerprint) {
            return hit.1.clone();
        }
        let bits = arrow::buffer::BooleanBuffer::collect_bool(index.len(), |t| {
            let id = index.id(t);
            others.iter().any(|o| o.may_contain(&id))
        });
        self.shared.insert(b.meta.block_id.clone(), Arc::new((fingerprint, bits.clone())));
        bits
    }

    /// All spans of `id` stored in the tenant's blocks, and how many blocks that may hold it could not be read
    /// (the answer is then partial). Blocks are chosen by ID range and bloom filter only, so the answer does not
    /// depend on any time range the caller had in mind.
    pub async fn find_trace(&self, tenant: &Tenant, id: TraceId) -> (Vec<SpanRecord>, Vec<StorageError>) {
        let candidates: Vec<Arc<BlockEntry>> = self.blocks(tenant).into_iter().filter(|b| b.may_contain(&id)).collect();
        let reads = candidates.iter().map(|b| self.read_trace(tenant, b, id));
        let mut spans = Vec::new();
        let mut failed = Vec::new();
        for r in futures::future::join_all(reads).await {
            match r {
                Ok(s) => spans.extend(s),
                Err(e) => failed.push(e),
            }
        }
        (spans, failed)
    }

    async fn read_trace(&self, tenant: &Tenant, b: &BlockEntry, id: TraceId) -> Result<Vec<SpanRecord>, StorageError> {
        Ok(self.read_traces(tenant, b, &[id], SpanParts::ALL).await?.into_iter().map(|(_, s)| s).collect())
    }

    /// All spans of the traces `ids` (sorted ascending) held by one block, in one read: row groups and pages
    /// whose trace-ID range holds none of them are skipped, and only the columns of `parts` are decoded.
    pub async fn read_traces(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        ids: &[TraceId],
        parts: SpanParts,
    ) -> Result<Vec<(TraceId, SpanRecord)>, StorageError> {
        let mut out = Vec::new();
        for batch in &self.read_trace_rows(tenant, b, ids, parts, false, false).await? {
            out.extend(block::batch_to_spans(batch, &b.meta.dedicated_columns)?);
        }
        Ok(out)
    }

    /// The rows of the traces `ids` (sorted ascending) in this block, as record batches. `parts` leaves out what
    /// the caller never looks at; with `view_only`, only the columns `block::SpanRows` reads are decoded
    /// (searches), otherwise every column needed to rebuild OTLP spans.
    pub async fn read_trace_rows(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        ids: &[TraceId],
        parts: SpanParts,
        view_only: bool,
        cache: bool,
    ) -> Result<Vec<arrow::array::RecordBatch>, StorageError> {
        let reader = self.data_file(tenant, b);
        let footer = self.footer(tenant, b).await?;
        // A search reads several traces: the block's trace index gives their exact rows (and says which the block
        // does not hold at all). A lookup by ID uses the index only if a search already loaded it.
        let index =
            if ids.len() > 1 { Some(self.trace_index(tenant, b).await?) } else { self.indexes.get(&b.meta.block_id) };
        if let Some(index) = index {
            let mut runs: Vec<std::ops::Range<usize>> =
                ids.iter().filter_map(|id| index.find(id)).map(|i| index.rows(i)).collect();
            if runs.is_empty() {
                return Ok(Vec::new());
            }
            runs.sort_by_key(|r| r.start);
            if view_only
                && cache
                && ids.len() <= CACHED_FETCH_MAX
                && let Some(rows) = self.cached_trace_rows(tenant, b, &footer, parts, &runs).await?
            {
                return Ok(vec![rows]);
            }
            let (groups, selection) = block::rows_selection(footer.metadata(), &runs);
            let mask = parts_mask(&footer, parts, view_only);
            let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer.clone())
                .with_projection(mask)
                .with_row_groups(groups)
                .with_row_selection(selection)
                .build()?;
            return Ok(stream.try_collect().await.inspect_err(|_| {
                self.metrics.object_store_errors.inc();
            })?);
        }
        // Rows are sorted by trace ID, so row-group statistics narrow the read to the groups that may hold them.
        let holds_any = |lo: &[u8], hi: &[u8]| {
            let at = ids.partition_point(|id| &id.0[..] < lo);
            ids.get(at).is_some_and(|id| &id.0[..] <= hi)
        };
        let groups: Vec<usize> = footer
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, rg)| match rg.column(0).statistics() {
                Some(s) => match (s.min_bytes_opt(), s.max_bytes_opt()) {
                    (Some(lo), Some(hi)) => holds_any(lo, hi),
                    _ => true,
                },
                None => true,
            })
            .map(|(i, _)| i)
            .collect();
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        // With the page index, only the pages that may hold the traces are fetched, all columns in coalesced
        // requests, and filtered in memory; without it, whole row groups are read and filtered.
        let mask = parts_mask(&footer, parts, view_only);
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer.clone()).with_projection(mask);
        let builder = match block::page_selection_any(footer.metadata(), &groups, ids) {
            Some(sel) => builder.with_row_groups(groups).with_row_selection(sel),
            None => builder.with_row_groups(groups),
        };
        // One trace: its pages are decoded whole (one request). Several: trace IDs are read first and the other
        // columns decoded only for their rows.
        let builder = if ids.len() > 1 {
            let filter =
                block::trace_ids_filter(footer.metadata().file_metadata().schema_descr(), Arc::new(ids.to_vec()));
            builder.with_row_filter(filter)
        } else {
            builder
        };
        let stream = builder.build()?;
        let batches: Vec<_> = stream.try_collect().await.inspect_err(|_| {
            self.metrics.object_store_errors.inc();
        })?;
        Ok(batches.iter().map(|batch| block::only_traces(batch, ids)).collect::<Result<_, _>>()?)
    }

    /// `runs` of a block's rows taken from its cached decoded columns, typed as the file types them; `None` when
    /// the read needs a nested column (attribute lists, events, links), which is not cached.
    async fn cached_trace_rows(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        footer: &ArrowReaderMetadata,
        parts: SpanParts,
        runs: &[std::ops::Range<usize>],
    ) -> Result<Option<RecordBatch>, StorageError> {
        let names: Vec<&str> =
            footer.schema().fields().iter().map(|f| f.name().as_str()).filter(|n| wanted(parts, true, n)).collect();
        let rows = UInt32Array::from_iter_values(runs.iter().flat_map(|r| r.clone()).map(|r| r as u32));
        self.take_cached(tenant, b, &names, Some(&rows), false).await
    }

    /// Rows `rows` (in that order) of the block's columns `names`, taken from the cached decoded columns and typed
    /// as the file types them; `None` when a column is nested or missing (see [`BlockStore::columns`]).
    /// `rows: None` takes every row. With `dictionaries`, strings stay dictionary-encoded as the cache keeps them
    /// (for readers that take either, `block::Text`): the rows then share the cache's strings.
    pub async fn take_cached(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        names: &[&str],
        rows: Option<&UInt32Array>,
        dictionaries: bool,
    ) -> Result<Option<RecordBatch>, StorageError> {
        let footer = self.footer(tenant, b).await?;
        let Some(whole) = self.columns(tenant, b, names).await? else { return Ok(None) };
        let mut fields = Vec::with_capacity(names.len());
        let mut columns = Vec::with_capacity(names.len());
        for (name, c) in names.iter().zip(whole.columns()) {
            let mut field = footer.schema().field_with_name(name)?.clone();
            let taken = match rows {
                Some(rows) => arrow::compute::take(c, rows, None)?,
                None => c.clone(),
            };
            // Strings are cached as dictionaries; other readers expect the file's types.
            if taken.data_type() == field.data_type() || dictionaries {
                field = field.with_data_type(taken.data_type().clone());
                columns.push(taken);
            } else {
                columns.push(arrow::compute::cast(&taken, field.data_type())?);
            }
            fields.push(field);
        }
        Ok(Some(RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?))
    }

    /// Every row of a block, a batch at a time, with only `columns` of the view and the optional `parts`: what a
    /// span-by-span scan reads (a metrics query over span-level fields needs no trace assembly).
    pub async fn scan_rows(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        columns: &[&str],
        parts: SpanParts,
    ) -> Result<futures::stream::BoxStream<'static, Result<arrow::array::RecordBatch, StorageError>>, StorageError>
    {
        let reader = self.data_file(tenant, b);
        let footer = self.footer(tenant, b).await?;
        let roots: Vec<usize> = footer
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                columns.contains(&f.name().as_str()) || (SpanParts::optional(f.name()) && parts.keeps(f.name()))
            })
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(footer.metadata().file_metadata().schema_descr(), roots);
        let metrics = self.metrics.clone();
        let stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer).with_projection(mask).build()?;
        Ok(stream
            .map_err(move |e| {
                metrics.object_store_errors.inc();
                StorageError::from(e)
            })
            .boxed())
    }

    fn data_file(&self, tenant: &Tenant, b: &BlockEntry) -> ObjectFile {
        ObjectFile::new(
            self.store.clone(),
            block_path(tenant.as_str(), &b.meta.block_id, DATA_OBJECT),
            b.meta.data_size,
        )
    }

    /// The block's Parquet footer (with page index), from the cache or fetched.
    async fn footer(&self, tenant: &Tenant, b: &BlockEntry) -> Result<ArrowReaderMetadata, StorageError> {
        let reader = self.data_file(tenant, b);
        self.footers
            .get_or_insert_async(&b.meta.block_id, async move {
                let mut r = reader.clone();
                ArrowReaderMetadata::load_async(&mut r, reader_options()).await.map_err(StorageError::from)
            })
            .await
            .inspect_err(|_| {
                self.metrics.object_store_errors.inc();
            })
    }

    /// The block's trace index, from the cache or built from its trace ID and trace start columns (one read of
    /// two columns).
    pub async fn trace_index(&self, tenant: &Tenant, b: &BlockEntry) -> Result<Arc<TraceIndex>, StorageError> {
        let footer = self.footer(tenant, b).await?;
        self.indexes
            .get_or_insert_async(&b.meta.block_id, async {
                use block::schema::col;
                let names = [col::TRACE_ID, col::TRACE_START, col::SERVICE_NAME, col::STATUS_CODE];
                let roots: Vec<usize> = footer
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| names.contains(&f.name().as_str()))
                    .map(|(i, _)| i)
                    .collect();
                let batches = self.read_whole(tenant, b, &footer, roots).await?;
                Ok::<_, StorageError>(Arc::new(TraceIndex::from_batches(&batches)?))
            })
            .await
    }

    /// Every row of the block's top-level columns `roots`, in large batches.
    async fn read_whole(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        footer: &ArrowReaderMetadata,
        roots: Vec<usize>,
    ) -> Result<Vec<RecordBatch>, StorageError> {
        let mask = ProjectionMask::roots(footer.metadata().file_metadata().schema_descr(), roots);
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(self.data_file(tenant, b), footer.clone())
            .with_projection(mask)
            .with_batch_size(65536)
            .build()?;
        Ok(stream.try_collect().await.inspect_err(|_| {
            self.metrics.object_store_errors.inc();
        })?)
    }

    /// The block's attribute list column `name` (`span_attrs`, `resource_attrs`) in row order with only the
    /// leaves a candidate test reads (`key`, `kind`, `s`): decoding a nested column is mostly its levels, paid per
    /// leaf, so this is under half the work of the whole column (a rare attribute value's search was 10% level
    /// decoding, 7% zstd). Read on each call: a list is too large to keep. `None` when the block lacks them.
    pub async fn attr_leaves(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        name: &str,
        tests: Option<&[(String, String)]>,
    ) -> Result<Option<ArrayRef>, StorageError> {
        let footer = self.footer(tenant, b).await?;
        let descr = footer.metadata().file_metadata().schema_descr();
        let (s_leaf, key_leaf, kind_leaf) =
            (list_leaf(descr, name, "s"), list_leaf(descr, name, "key"), list_leaf(descr, name, "kind"));
        let leaves: Vec<usize> = (0..descr.num_columns())
            .filter(|&i| {
                let column = descr.column(i);
                let parts = column.path().parts();
                parts.first().is_some_and(|p| p == name)
                    && parts.len() > 2
                    && parts.last().is_some_and(|l| matches!(l.as_str(), "key" | "kind" | "s"))
            })
            .collect();
        if leaves.len() != 3 {
            return Ok(None);
        }
        let mask = ProjectionMask::leaves(descr, leaves);
        let builder = || {
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.data_file(tenant, b), footer.clone())
                .with_projection(mask.clone())
                .with_batch_size(65536)
        };
        // Row groups are decoded on every core at once (one block's test is on the search's critical path);
        // those whose bloom filter rules out every tested value are not read at all.
        let mut tasks = Vec::new();
        for rg in 0..footer.metadata().num_row_groups() {
            if let (Some(tests), Some(s), Some(key), Some(kind)) = (tests, s_leaf, key_leaf, kind_leaf)
                && self.row_group_lacks(tenant, b, &footer, rg, [s, key, kind], tests).await?
            {
                tasks.push(None);
                continue;
            }
            let stream = builder().with_row_groups(vec![rg]).build()?;
            tasks.push(Some(tokio::spawn(stream.try_collect::<Vec<RecordBatch>>())));
        }
        // The list's type as this projection reads it (for the empty lists of skipped row groups).
        let Some(list_type) = builder()
            .with_row_groups(Vec::new())
            .build()?
            .schema()
            .field_with_name(name)
            .ok()
            .map(|f| f.data_type().clone())
        else {
            return Ok(None);
        };
        let DataType::List(item) = &list_type else { return Ok(None) };
        let mut parts: Vec<ArrayRef> = Vec::new();
        for (rg, task) in tasks.into_iter().enumerate() {
            let Some(task) = task else {
                // No row here holds a tested value: empty lists, which no `attr_may_match` of those values passes.
                let rows = footer.metadata().row_group(rg).num_rows().max(0) as usize;
                parts.push(Arc::new(arrow::array::ListArray::new(
                    item.clone(),
                    arrow::buffer::OffsetBuffer::new_zeroed(rows),
                    arrow::array::new_empty_array(item.data_type()),
                    None,
                )));
                continue;
            };
            let part = task
                .await
                .map_err(|e| parquet::errors::ParquetError::General(format!("decoding a row group stopped: {e}")))?
                .inspect_err(|_| {
                    self.metrics.object_store_errors.inc();
                })?;
            parts.extend(part.iter().filter_map(|batch| batch.column_by_name(name).cloned()));
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        Ok(Some(arrow::compute::concat(&refs)?))
    }

    /// The rows of block `b` that pass a predicate (by its text), when computed before. Blocks never change, so
    /// a predicate's rows stay valid: a dashboard refreshing a search, or a query edited around the same filter,
    /// does not evaluate it again.
    pub fn mask(&self, b: &BlockEntry, predicate: &str) -> Option<arrow::buffer::BooleanBuffer> {
        self.masks.get(&(b.meta.block_id.clone(), predicate.to_string()))
    }

    /// Keeps the rows of block `b` that pass a predicate (see [`BlockStore::mask`]).
    pub fn keep_mask(&self, b: &BlockEntry, predicate: String, rows: arrow::buffer::BooleanBuffer) {
        self.masks.insert((b.meta.block_id.clone(), predicate), rows);
    }

    /// Whether no row group of block `b` has a string attribute matching any of `tests` (key, value) in attribute
    /// list `name`, by the row groups' value filters (see [`BlockStore::row_group_lacks`]); false when unsure.
    /// Reads nothing but the filters, kept once read.
    pub async fn lacks_values(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        name: &str,
        tests: &[(String, String)],
    ) -> Result<bool, StorageError> {
        let footer = self.footer(tenant, b).await?;
        let descr = footer.metadata().file_metadata().schema_descr();
        let (Some(s), Some(key), Some(kind)) =
            (list_leaf(descr, name, "s"), list_leaf(descr, name, "key"), list_leaf(descr, name, "kind"))
        else {
            return Ok(false);
        };
        for rg in 0..footer.metadata().num_row_groups() {
            if !self.row_group_lacks(tenant, b, &footer, rg, [s, key, kind], tests).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether row group `rg` has no string attribute matching any of `tests` (key, value) in the list whose
    /// `s`, `key` and `kind` leaves are given: the bloom filter rules out each value and the key has no array
    /// value there. False when unsure (no filter in the file).
    async fn row_group_lacks(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        footer: &ArrowReaderMetadata,
        rg: usize,
        leaves: [usize; 3],
        tests: &[(String, String)],
    ) -> Result<bool, StorageError> {
        let key = (b.meta.block_id.clone(), rg, leaves[0]);
        let filter = match self.attr_blooms.get(&key) {
            Some(f) => f,
            None => {
                let f = Arc::new(self.value_filter(tenant, b, footer, rg, leaves).await?);
                self.attr_blooms.insert(key, f.clone());
                f
            }
        };
        let Some(bloom) = &filter.bloom else { return Ok(false) };
        Ok(tests.iter().all(|(k, v)| !filter.array_keys.contains(k) && !bloom.check(v.as_str())))
    }

    /// Reads row group `rg`'s [`ValueFilter`]: the bloom filter, and when the `kind` statistics show array
    /// items, the keys that have them (the `key` and `kind` leaves decoded once; the answer is cached).
    async fn value_filter(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        footer: &ArrowReaderMetadata,
        rg: usize,
        [s_leaf, key_leaf, kind_leaf]: [usize; 3],
    ) -> Result<ValueFilter, StorageError> {
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(self.data_file(tenant, b), footer.clone());
        let bloom = builder.get_row_group_column_bloom_filter(rg, s_leaf).await?;
        let mut array_keys = std::collections::HashSet::new();
        if bloom.is_none() {
            return Ok(ValueFilter { bloom, array_keys });
        }
        let array = i32::from(crate::block::schema::kind::ARRAY);
        let no_arrays = match footer.metadata().row_group(rg).column(kind_leaf).statistics() {
            Some(parquet::file::statistics::Statistics::Int32(k)) => {
                k.min_opt().is_some_and(|&lo| lo > array) || k.max_opt().is_some_and(|&hi| hi < array)
            }
            _ => false,
        };
        if !no_arrays {
            let descr = footer.metadata().file_metadata().schema_descr();
            let mut stream = builder
                .with_projection(ProjectionMask::leaves(descr, [key_leaf, kind_leaf]))
                .with_row_groups(vec![rg])
                .with_batch_size(65536)
                .build()?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let Some(list) = batch.column(0).as_list_opt::<i32>() else { continue };
                let items = list.values().as_struct();
                let (Some(keys), Some(kinds)) = (
                    items.column_by_name("key").and_then(|k| k.as_string_opt::<i32>()),
                    items.column_by_name("kind").and_then(|k| k.as_primitive_opt::<arrow::datatypes::Int8Type>()),
                ) else {
                    continue;
                };
                for j in 0..kinds.len() {
                    if kinds.is_valid(j) && i32::from(kinds.value(j)) == array && keys.is_valid(j) {
                        array_keys.insert(keys.value(j).to_string());
                    }
                }
            }
        }
        Ok(ValueFilter { bloom, array_keys })
    }

    /// The block's columns `names`, whole and decoded, as one batch in row order (rows numbered as in the file),
    /// from the cache or read once. `None` when a column is missing from the block (an older schema) or is not
    /// a plain column (lists and structs are too large to keep).
    pub async fn columns(
        &self,
        tenant: &Tenant,
        b: &BlockEntry,
        names: &[&str],
    ) -> Result<Option<RecordBatch>, StorageError> {
        let footer = self.footer(tenant, b).await?;
        let file_schema = footer.schema().clone();
        let mut fields = Vec::with_capacity(names.len());
        for name in names {
            match file_schema.field_with_name(name) {
                Ok(f) if !f.data_type().is_nested() => fields.push(f.clone()),
                _ => return Ok(None),
            }
        }
        let mut arrays: Vec<Option<ArrayRef>> =
            names.iter().map(|n| self.columns.get(&(b.meta.block_id.clone(), n.to_string()))).collect();
        let missing: Vec<usize> = (0..names.len()).filter(|&i| arrays[i].is_none()).collect();
        if !missing.is_empty() {
            let roots: Vec<usize> = missing.iter().filter_map(|&i| file_schema.index_of(names[i]).ok()).collect();
            let batches = self.read_whole(tenant, b, &footer, roots).await?;
            for &i in &missing {
                let parts: Vec<&dyn Array> =
                    batches.iter().filter_map(|batch| batch.column_by_name(names[i]).map(|a| a.as_ref())).collect();
                let whole = if parts.is_empty() {
                    arrow::array::new_empty_array(fields[i].data_type())
                } else {
                    arrow::compute::concat(&parts)?
                };
                // Strings repeat (services, span names, slot values): kept as dictionaries, a comparison then
                // looks at each distinct value once.
                let whole = match whole.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => arrow::compute::cast(
                        &whole,
                        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    )?,
                    _ => whole,
                };
                self.columns.insert((b.meta.block_id.clone(), names[i].to_string()), whole.clone());
                arrays[i] = Some(whole);
            }
        }
        let arrays: Vec<ArrayRef> = arrays.into_iter().flatten().collect();
        let fields: Vec<Field> =
            fields.iter().zip(&arrays).map(|(f, a)| f.as_ref().clone().with_data_type(a.data_type().clone())).collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        Ok(Some(RecordBatch::try_new(schema, arrays)?))
    }

    /// The column cache's budget in bytes.
    pub fn column_cache_bytes(&self) -> u64 {
        self.column_budget
    }

    /// The object store blocks live in, for query engines that read them directly.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
}

/// Whether a read of `parts` takes the top-level column `name`.
fn wanted(parts: SpanParts, view_only: bool, name: &str) -> bool {
    parts.keeps(name) && (!view_only || block::VIEW_COLUMNS.contains(&name) || SpanParts::optional(name))
}

/// The top-level columns holding `parts` of a span.
fn parts_mask(footer: &ArrowReaderMetadata, parts: SpanParts, view_only: bool) -> ProjectionMask {
    let roots: Vec<usize> = footer
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted(parts, view_only, f.name()))
        .map(|(i, _)| i)
        .collect();
    ProjectionMask::roots(footer.metadata().file_metadata().schema_descr(), roots)
}

/// The leaf `last` (`s`, `key`, `kind`) of attribute list column `name` in a block's Parquet schema.
fn list_leaf(descr: &parquet::schema::types::SchemaDescriptor, name: &str, last: &str) -> Option<usize> {
    (0..descr.num_columns()).find(|&i| {
        let column = descr.column(i);
        let parts = column.path().parts();
        parts.first().is_some_and(|p| p == name) && parts.len() > 2 && parts.last().is_some_and(|l| l == last)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, created: u64, replaces: &[&str]) -> BlockMeta {
        let mut m: BlockMeta = serde_json::from_value(serde_json::json!({
            "format": "strata-parquet-v1", "schemaVersion": 1, "blockId": id, "tenant": "t",
            "startTimeUnixNano": 0, "endTimeUnixNano": 0, "spanCount": 1, "traceCount": 1,
            "minTraceId": "00", "maxTraceId": "ff", "dataSize": 1, "bloomSize": 1, "rowGroups": 1,
            "rawBytes": 1, "compactionLevel": 0, "createdAtUnix": created, "dedicatedColumns": []
        }))
        .expect("meta");
        m.replaces = replaces.iter().map(|s| s.to_string()).collect();
        m
    }

    fn ids(v: &[BlockMeta]) -> Vec<&str> {
        v.iter().map(|m| m.block_id.as_str()).collect()
    }

    #[test]
    fn index_merge_keeps_other_writers_blocks_and_drops_removed_ones() {
        let now = 10_000;
        let ours = vec![meta("a1", now, &[]), meta("c", now, &["x1", "x2"])];
        let stored = vec![
            meta("a1", now, &[]),
            meta("b1", now - 10, &[]),    // another writer's new block: kept
            meta("x1", now - 10, &[]),    // replaced by our compacted block: dropped
            meta("r", now - 10, &[]),     // retired here: dropped
            meta("old", now - 7200, &[]), // another writer's block we never saw in an hour: removed meanwhile
            meta("y", now - 10, &["b0"]), // another writer's compaction output
            meta("b0", now - 20, &[]),    // ...replaced by it
        ];
        let merged = merge_index(ours, stored, &["r".to_string()], now);
        assert_eq!(ids(&merged), vec!["a1", "b1", "c", "y"]);
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use crate::block::{BlockOptions, build_block};
    use crate::model::Origin;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn traces(ids: &[u8]) -> Vec<(TraceId, Vec<SpanRecord>)> {
        let origin = Arc::new(Origin::default());
        ids.iter()
            .map(|&i| {
                let span = Span {
                    trace_id: vec![i; 16],
                    span_id: vec![i; 8],
                    name: "s".into(),
                    start_time_unix_nano: 1_000 + u64::from(i),
                    end_time_unix_nano: 2_000,
                    ..Default::default()
                };
                (TraceId([i; 16]), vec![SpanRecord { origin: origin.clone(), span }])
            })
            .collect()
    }

    #[tokio::test]
    async fn shared_traces_follow_the_block_list() -> Result<(), Box<dyn std::error::Error>> {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let bs = BlockStore::open(store, Arc::new(Metrics::new()), CacheBudgets::default()).await?;
        let tenant = Tenant::parse(Some("t"))?;
        bs.publish(&tenant, &build_block("t", "a", &traces(&[1, 2, 3]), 0, &BlockOptions::default())?).await?;
        let a = bs.blocks(&tenant).into_iter().find(|b| b.meta.block_id == "a").ok_or("block a")?;
        let index = bs.trace_index(&tenant, &a).await?;
        let bits = |bs: &BlockStore| bs.shared_traces(&tenant, &a, &index).iter().collect::<Vec<bool>>();
        assert_eq!(bits(&bs), [false, false, false], "no other block");
        // A block holding trace 2 appears: the cached answer must not be reused.
        bs.publish(&tenant, &build_block("t", "b", &traces(&[2, 9]), 0, &BlockOptions::default())?).await?;
        assert_eq!(bits(&bs), [false, true, false]);
        assert_eq!(bits(&bs), [false, true, false], "from the cache");
        // And goes again.
        bs.expire(&tenant, &["b".to_string()]).await?;
        assert_eq!(bits(&bs), [false, false, false]);
        Ok(())
    }
}
