//! The block index and the block-level read path.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::RwLock;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::StorageError;
use super::file::{ObjectFile, reader_options};
use crate::block::{
    self, BLOOM_OBJECT, BlockMeta, BuiltBlock, DATA_OBJECT, META_OBJECT, SpanParts, TraceBloom, TraceIndex,
};
use crate::model::{SpanRecord, Tenant, TraceId};
use crate::telemetry::Metrics;

const INDEX_OBJECT: &str = "index.json";
/// How many blocks are loaded (meta + bloom) at once at start-up.
const LOAD_CONCURRENCY: usize = 16;

/// One block as readers see it: meta and bloom in memory, footer cached after first use.
pub struct BlockEntry {
    pub meta: BlockMeta,
    pub min_id: TraceId,
    pub max_id: TraceId,
    bloom: TraceBloom,
    footer: OnceCell<ArrowReaderMetadata>,
    /// Where each trace's rows are, read from the data on first use by a search.
    index: OnceCell<Arc<TraceIndex>>,
}

impl BlockEntry {
    fn new(meta: BlockMeta, bloom: TraceBloom) -> Self {
        let min_id = TraceId::from_hex(&meta.min_trace_id).unwrap_or_default();
        let max_id = TraceId::from_hex(&meta.max_trace_id).unwrap_or(TraceId([0xff; 16]));
        BlockEntry { meta, min_id, max_id, bloom, footer: OnceCell::new(), index: OnceCell::new() }
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

/// All tenants' blocks, and the operations that read and write them.
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    tenants: RwLock<HashMap<Tenant, Vec<Arc<BlockEntry>>>>,
    metrics: Arc<Metrics>,
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
    /// (a crash between writing a block's meta and the index). Listing happens here only, never per query.
    pub async fn open(store: Arc<dyn ObjectStore>, metrics: Arc<Metrics>) -> Result<Self, StorageError> {
        let bs = BlockStore { store, tenants: RwLock::new(HashMap::new()), metrics };
        let top = bs.store.list_with_delimiter(None).await.map_err(|e| bs.err(e))?;
        for dir in top.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            let Ok(tenant) = Tenant::parse(Some(name)) else { continue };
            let entries = bs.load_tenant(&tenant).await?;
            tracing::info!(tenant = %tenant, blocks = entries.len(), "loaded block index");
            bs.tenants.write().insert(tenant, entries);
        }
        bs.update_gauge();
        Ok(bs)
    }

    fn err(&self, e: object_store::Error) -> StorageError {
        self.metrics.object_store_errors.inc();
        StorageError::ObjectStore(e)
    }

    fn update_gauge(&self) {
        let n: usize = self.tenants.read().values().map(Vec::len).sum();
        self.metrics.blocks.set(n as i64);
    }

    async fn load_tenant(&self, tenant: &Tenant) -> Result<Vec<Arc<BlockEntry>>, StorageError> {
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
        let prefix = Path::from(tenant.as_str());
        let listed: Vec<String> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|o| async move {
                let parts: Vec<_> = o.location.parts().collect();
                Ok((parts.len() == 3 && parts[2].as_ref() == META_OBJECT).then(|| parts[1].as_ref().to_string()))
            })
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        let loads = listed.into_iter().map(|id| {
            let known_meta = known.remove(&id);
            async move { self.load_block(tenant, &id, known_meta).await }
        });
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
        Ok(entries)
    }

    async fn load_block(&self, tenant: &Tenant, id: &str, meta: Option<BlockMeta>) -> Result<BlockEntry, StorageError> {
        let meta = match meta {
            Some(m) => m,
            None => {
                let r = self.store.get(&block_path(tenant.as_str(), id, META_OBJECT)).await.map_err(|e| self.err(e))?;
                BlockMeta::from_json(&r.bytes().await.map_err(|e| self.err(e))?)?
            }
        };
        let r = self.store.get(&block_path(tenant.as_str(), id, BLOOM_OBJECT)).await.map_err(|e| self.err(e))?;
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
            let _ = entry.footer.set(footer);
        }
        let metas: Vec<BlockMeta> = {
            let mut tenants = self.tenants.write();
            let list = tenants.entry(tenant.clone()).or_default();
            if !list.iter().any(|e| e.meta.block_id == id) {
                list.push(Arc::new(entry));
            }
            list.iter().map(|e| e.meta.clone()).collect()
        };
        self.update_gauge();
        let index = serde_json::to_vec(&IndexFile { blocks: metas })?;
        self.put(&Path::from_iter([t, INDEX_OBJECT]), Bytes::from(index)).await?;
        Ok(())
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

    /// All spans of `id` stored in the tenant's blocks. Blocks are chosen by ID range and bloom filter only, so
    /// the answer does not depend on any time range the caller had in mind.
    pub async fn find_trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<SpanRecord>, StorageError> {
        let candidates: Vec<Arc<BlockEntry>> = self.blocks(tenant).into_iter().filter(|b| b.may_contain(&id)).collect();
        let reads = candidates.iter().map(|b| self.read_trace(tenant, b, id));
        let parts: Vec<Vec<SpanRecord>> = futures::future::try_join_all(reads).await?;
        Ok(parts.into_iter().flatten().collect())
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
        let reader = self.data_file(tenant, b);
        let footer = self.footer(tenant, b).await?;
        // A search reads several traces: the block's trace index gives their exact rows (and says which the block
        // does not hold at all). A lookup by ID uses the index only if a search already loaded it.
        let index = if ids.len() > 1 { Some(self.trace_index(tenant, b).await?) } else { b.index.get().cloned() };
        if let Some(index) = index {
            let mut runs: Vec<std::ops::Range<usize>> =
                ids.iter().filter_map(|id| index.find(id)).map(|i| index.rows(i)).collect();
            if runs.is_empty() {
                return Ok(Vec::new());
            }
            runs.sort_by_key(|r| r.start);
            let (groups, selection) = block::rows_selection(footer.metadata(), &runs);
            let mask = parts_mask(&footer, parts);
            let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer.clone())
                .with_projection(mask)
                .with_row_groups(groups)
                .with_row_selection(selection)
                .build()?;
            let batches: Vec<_> = stream.try_collect().await.inspect_err(|_| {
                self.metrics.object_store_errors.inc();
            })?;
            let mut out = Vec::new();
            for batch in &batches {
                out.extend(block::batch_to_spans(batch, &b.meta.dedicated_columns)?);
            }
            return Ok(out);
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
        let mask = parts_mask(&footer, parts);
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
        let mut out = Vec::new();
        for batch in &batches {
            let batch = block::only_traces(batch, ids)?;
            out.extend(block::batch_to_spans(&batch, &b.meta.dedicated_columns)?);
        }
        Ok(out)
    }

    fn data_file(&self, tenant: &Tenant, b: &BlockEntry) -> ObjectFile {
        ObjectFile::new(
            self.store.clone(),
            block_path(tenant.as_str(), &b.meta.block_id, DATA_OBJECT),
            b.meta.data_size,
        )
    }

    /// The block's Parquet footer (with page index), fetched once and kept with the block.
    async fn footer(&self, tenant: &Tenant, b: &BlockEntry) -> Result<ArrowReaderMetadata, StorageError> {
        let reader = self.data_file(tenant, b);
        Ok(b.footer
            .get_or_try_init(|| {
                let mut r = reader.clone();
                async move { ArrowReaderMetadata::load_async(&mut r, reader_options()).await }
            })
            .await
            .inspect_err(|_| {
                self.metrics.object_store_errors.inc();
            })?
            .clone())
    }

    /// The block's trace index, built on first use from its trace ID and trace start columns (one read of two
    /// columns) and kept with the block.
    pub async fn trace_index(&self, tenant: &Tenant, b: &BlockEntry) -> Result<Arc<TraceIndex>, StorageError> {
        let footer = self.footer(tenant, b).await?;
        let index = b
            .index
            .get_or_try_init(|| async {
                let names = [block::schema::col::TRACE_ID, block::schema::col::TRACE_START];
                let roots: Vec<usize> = footer
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| names.contains(&f.name().as_str()))
                    .map(|(i, _)| i)
                    .collect();
                let mask = ProjectionMask::roots(footer.metadata().file_metadata().schema_descr(), roots);
                let stream =
                    ParquetRecordBatchStreamBuilder::new_with_metadata(self.data_file(tenant, b), footer.clone())
                        .with_projection(mask)
                        .with_batch_size(65536)
                        .build()?;
                let batches: Vec<_> = stream.try_collect().await.inspect_err(|_| {
                    self.metrics.object_store_errors.inc();
                })?;
                Ok::<_, StorageError>(Arc::new(TraceIndex::from_batches(&batches)?))
            })
            .await?;
        Ok(index.clone())
    }

    /// The object store blocks live in, for query engines that read them directly.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
}

/// The top-level columns holding `parts` of a span.
fn parts_mask(footer: &ArrowReaderMetadata, parts: SpanParts) -> ProjectionMask {
    let roots: Vec<usize> =
        footer.schema().fields().iter().enumerate().filter(|(_, f)| parts.keeps(f.name())).map(|(i, _)| i).collect();
    ProjectionMask::roots(footer.metadata().file_metadata().schema_descr(), roots)
}
