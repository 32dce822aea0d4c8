//! The flusher: turns frozen heads into blocks, uploads them (retrying until the store accepts them), then
//! retires the WAL segments they came from.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{Cut, FrozenHead, IngestConfig, Shared};
use crate::block::{BuiltBlock, build_block};
use crate::storage::BlockStore;

const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub(super) async fn run(
    mut cuts: mpsc::UnboundedReceiver<Cut>,
    shared: Arc<Shared>,
    blocks: Arc<BlockStore>,
    cfg: IngestConfig,
    flushed: watch::Sender<u64>,
) {
    while let Some(cut) = cuts.recv().await {
        for head in &cut.heads {
            flush_head(head, &shared, &blocks, &cfg).await;
            shared.flushing.write().retain(|f| !Arc::ptr_eq(f, head));
            shared.backlog.fetch_sub(head.bytes, Ordering::Relaxed);
            shared.drained.notify_waiters();
            shared.metrics.live_spans.dec_by(head.spans as i64);
        }
        if let Some(seq) = cut.seq {
            let dir = cfg.wal_dir.clone();
            match tokio::task::spawn_blocking(move || super::wal::remove_through(&dir, seq)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete flushed WAL segments"),
                Err(e) => tracing::warn!(error = %e, "WAL cleanup task failed"),
            }
        }
        flushed.send_replace(cut.id);
    }
}

async fn flush_head(head: &Arc<FrozenHead>, shared: &Shared, blocks: &BlockStore, cfg: &IngestConfig) {
    if head.spans == 0 {
        return;
    }
    let started = Instant::now();
    let block_id = uuid::Uuid::new_v4().to_string();
    let mut built: BuiltBlock = loop {
        let h = head.clone();
        let opts = cfg.block.clone();
        let id = block_id.clone();
        let res =
            tokio::task::spawn_blocking(move || build_block(h.tenant.as_str(), &id, &h.traces, h.bytes as u64, &opts))
                .await;
        match res {
            Ok(Ok(b)) => break b,
            Ok(Err(e)) => tracing::error!(error = %e, tenant = %head.tenant, "building block failed; retrying"),
            Err(e) => tracing::error!(error = %e, tenant = %head.tenant, "block builder panicked; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    built.meta.wal = head.wal.clone().into_iter().collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        match blocks.publish(&head.tenant, &built).await {
            Ok(()) => {
                shared.store_healthy.store(true, Ordering::Relaxed);
                break;
            }
            Err(e) => {
                shared.store_healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, tenant = %head.tenant, retry_in = ?backoff, "block upload failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    shared.metrics.blocks_flushed.inc();
    shared.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
    tracing::info!(
        tenant = %head.tenant,
        block = %built.meta.block_id,
        spans = built.meta.span_count,
        traces = built.meta.trace_count,
        bytes = built.meta.data_size,
        raw_bytes = built.meta.raw_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "block flushed"
    );
}
