//! The flusher: turns frozen heads into blocks, uploads them (retrying until the store accepts them), then
//! retires the WAL segments they came from.

use std::collections::VecDeque;
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
    // Every head is built and uploaded by its own task, so one that keeps failing (a store rejecting one tenant,
    // a block that cannot be built) does not hold back the others. Cuts still complete in order: a cut's WAL
    // segments go only once it and every earlier cut are in blocks.
    let mut pending: VecDeque<(u64, Option<u64>, tokio::task::JoinHandle<()>)> = VecDeque::new();
    // One block is built at a time (building holds the head twice over in memory); uploads, and their retries,
    // do not hold the slot.
    let building = Arc::new(tokio::sync::Semaphore::new(1));
    loop {
        let oldest = async {
            match pending.front_mut() {
                Some((_, _, task)) => {
                    let _ = task.await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            cut = cuts.recv() => match cut {
                Some(cut) => {
                    let heads: Vec<_> = cut
                        .heads
                        .into_iter()
                        .map(|head| {
                            let (shared, blocks, cfg) = (shared.clone(), blocks.clone(), cfg.clone());
                            let building = building.clone();
                            tokio::spawn(async move {
                                flush_head(&head, &shared, &blocks, &cfg, &building).await;
                                shared.flushing.write().retain(|f| !Arc::ptr_eq(f, &head));
                                shared.backlog.fetch_sub(head.bytes, Ordering::Relaxed);
                                shared.drained.notify_waiters();
                                shared.metrics.live_spans.dec_by(head.spans as i64);
                            })
                        })
                        .collect();
                    let all = tokio::spawn(async move {
                        for h in heads {
                            let _ = h.await;
                        }
                    });
                    pending.push_back((cut.id, cut.seq, all));
                }
                None => break,
            },
            _ = oldest => {
                if let Some((id, seq, _)) = pending.pop_front() {
                    retire(id, seq, &cfg, &flushed).await;
                }
            }
        }
    }
    while let Some((id, seq, task)) = pending.pop_front() {
        let _ = task.await;
        retire(id, seq, &cfg, &flushed).await;
    }
}

/// A cut is in blocks: its WAL segments go, and `/flush` calls waiting for it return.
async fn retire(id: u64, seq: Option<u64>, cfg: &IngestConfig, flushed: &watch::Sender<u64>) {
    if let Some(seq) = seq {
        let dir = cfg.wal_dir.clone();
        match tokio::task::spawn_blocking(move || super::wal::remove_through(&dir, seq)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete flushed WAL segments"),
            Err(e) => tracing::warn!(error = %e, "WAL cleanup task failed"),
        }
    }
    flushed.send_replace(id);
}

async fn flush_head(
    head: &Arc<FrozenHead>,
    shared: &Shared,
    blocks: &BlockStore,
    cfg: &IngestConfig,
    building: &tokio::sync::Semaphore,
) {
    if head.spans == 0 {
        return;
    }
    let started = Instant::now();
    let block_id = uuid::Uuid::new_v4().to_string();
    let mut build_backoff = Duration::from_secs(1);
    let slot = building.acquire().await.ok();
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
        shared.metrics.flush_failures.inc();
        tokio::time::sleep(build_backoff).await;
        build_backoff = (build_backoff * 2).min(MAX_BACKOFF);
    };
    drop(slot);
    built.meta.wal = head.wal.clone().into_iter().collect();
    let mut backoff = Duration::from_millis(100);
    let mut failed = false;
    loop {
        match blocks.publish(&head.tenant, &built).await {
            Ok(()) => {
                if failed {
                    let mut f = shared.failing.lock();
                    if let Some(n) = f.get_mut(&head.tenant) {
                        *n -= 1;
                        if *n == 0 {
                            f.remove(&head.tenant);
                        }
                    }
                }
                break;
            }
            Err(e) => {
                if !failed {
                    failed = true;
                    *shared.failing.lock().entry(head.tenant.clone()).or_default() += 1;
                }
                shared.metrics.flush_failures.inc();
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
