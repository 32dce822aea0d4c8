//! Wires the layers into the all-in-one server and runs it until a shutdown signal, then flushes.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::block::BlockOptions;
use crate::compact::Compactor;
use crate::config::{Config, Target};
use crate::ingest::{IngestConfig, IngestError, Ingester};
use crate::query::Querier;
use crate::receiver;
use crate::storage::{BlockStore, StorageError, open_store};
use crate::telemetry::Metrics;

/// Start-up and run-time failures of the server as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("ingest: {0}")]
    Ingest(#[from] IngestError),
    #[error("query engine: {0}")]
    Query(#[from] crate::query::QueryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("{what} server failed: {message}")]
    Serve { what: &'static str, message: String },
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

/// Runs Strata until `shutdown` resolves, then stops taking data, flushes everything to object storage (bounded
/// by the configured timeout) and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new());
    let store = open_store(&cfg.storage, &metrics)?;
    let blocks = Arc::new(BlockStore::open(store, metrics.clone(), cfg.caches).await?);
    // Background work on the block list: re-reading it (other processes write and compact the same bucket) and,
    // where this process compacts, compaction. Both stop when `stop_bg` turns true.
    let (stop_bg_tx, stop_bg) = watch::channel(false);
    tokio::spawn(refresh_blocks(blocks.clone(), cfg.blocklist_refresh, stop_bg.clone()));
    let compactor = if cfg.compaction || cfg.target == Target::Compactor {
        let owner = node_id(&cfg.data_dir).map_err(|e| ServerError::Ingest(IngestError::Wal(e.to_string())))?;
        Some(Arc::new(Compactor::new(blocks.clone(), cfg.compact.clone(), metrics.clone(), owner)))
    } else {
        None
    };
    let compaction = compactor.clone().map(|c| tokio::spawn(c.run(stop_bg.clone())));
    if cfg.target == Target::Compactor {
        let result = run_compactor_only(&cfg, metrics, shutdown).await;
        let _ = stop_bg_tx.send(true);
        if let Some(task) = compaction {
            let _ = task.await;
        }
        return result;
    }
    let generator = cfg.generator.then(|| {
        let g = crate::generate::GeneratorConfig {
            max_series: cfg.generator_max_series,
            max_label_values: cfg.generator_max_label_values,
            ..Default::default()
        };
        Arc::new(crate::generate::Generator::new(g, metrics.clone()))
    });
    let ingester = Ingester::start(
        IngestConfig {
            wal_dir: cfg.data_dir.join("wal"),
            max_block_spans: cfg.max_block_spans,
            max_block_bytes: cfg.max_block_bytes,
            max_block_age: cfg.max_block_age,
            max_trace_idle: cfg.max_trace_idle,
            block: BlockOptions::default(),
        },
        blocks.clone(),
        metrics.clone(),
        generator.clone(),
    )?;
    let querier = Arc::new(Querier::new(ingester.clone(), blocks.clone(), metrics.clone(), &cfg.query)?);

    let api_listener = bind(cfg.http_addr).await?;
    let http_listener = bind(cfg.otlp_http_addr).await?;
    let grpc_listener = bind(cfg.otlp_grpc_addr).await?;
    let zipkin_listener = match cfg.zipkin_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let jaeger_grpc_listener = match cfg.jaeger_grpc_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let jaeger_thrift_listener = match cfg.jaeger_thrift_http_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let off = |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(
        api = %cfg.http_addr, otlp_http = %cfg.otlp_http_addr, otlp_grpc = %cfg.otlp_grpc_addr,
        zipkin = %off(cfg.zipkin_addr), jaeger_grpc = %off(cfg.jaeger_grpc_addr),
        jaeger_thrift_http = %off(cfg.jaeger_thrift_http_addr),
        storage = ?cfg.storage, data_dir = %cfg.data_dir.display(), "strata is running"
    );

    // Receivers stop first (no new data), the API last (queries work while flushing).
    let (stop_rx_tx, stop_receivers) = watch::channel(false);
    let (stop_api_tx, stop_api) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let health = Arc::new(crate::telemetry::Health::default());
    let api_app =
        crate::api::router(querier, ingester.clone(), metrics.clone(), generator, cfg.query.clone(), health.clone());
    let api_task =
        tokio::spawn(axum::serve(api_listener, api_app).with_graceful_shutdown(wait(stop_api.clone())).into_future());
    let budget = receiver::InflightBudget::new(cfg.max_inflight_bytes, cfg.max_request_bytes);
    let otlp_http_app =
        receiver::http::router(ingester.clone(), metrics.clone(), cfg.max_request_bytes, budget.clone());
    let http_task = tokio::spawn(
        axum::serve(http_listener, otlp_http_app).with_graceful_shutdown(wait(stop_receivers.clone())).into_future(),
    );
    let grpc_svc = receiver::grpc::GrpcReceiver::service(ingester.clone(), metrics.clone(), cfg.max_request_bytes);
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(receiver::grpc::fix_status_codes))
            .layer(receiver::InflightLayer(budget.clone()))
            .add_service(grpc_svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                wait(stop_receivers.clone()),
            ),
    );
    // The other protocols' receivers, each optional; they fail /ready like the OTLP ones if they stop.
    let mut other_tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    if let Some(l) = zipkin_listener {
        let app = receiver::zipkin::router(ingester.clone(), metrics.clone(), cfg.max_request_bytes, budget.clone());
        let serve = axum::serve(l, app).with_graceful_shutdown(wait(stop_receivers.clone())).into_future();
        other_tasks.push(tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the Zipkin receiver failed");
            }
        }));
    }
    if let Some(l) = jaeger_thrift_listener {
        let app =
            receiver::jaeger::thrift_router(ingester.clone(), metrics.clone(), cfg.max_request_bytes, budget.clone());
        let serve = axum::serve(l, app).with_graceful_shutdown(wait(stop_receivers.clone())).into_future();
        other_tasks.push(tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the Jaeger Thrift receiver failed");
            }
        }));
    }
    if let Some(l) = jaeger_grpc_listener {
        let svc = receiver::jaeger::Collector::service(ingester.clone(), metrics.clone(), cfg.max_request_bytes);
        let serve = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(receiver::grpc::fix_status_codes))
            .layer(receiver::InflightLayer(budget.clone()))
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                wait(stop_receivers.clone()),
            );
        other_tasks.push(tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the Jaeger gRPC receiver failed");
            }
        }));
    }

    // A receiver that stops while the process runs (a panic, a listener error) makes /ready fail.
    let receivers_stopping = stop_receivers.clone();
    let watch_receivers = {
        let health = health.clone();
        let (http_done, grpc_done) = (http_task.abort_handle(), grpc_task.abort_handle());
        let others: Vec<_> = other_tasks.iter().map(|t| t.abort_handle()).collect();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if *receivers_stopping.borrow() {
                    return;
                }
                if http_done.is_finished() || grpc_done.is_finished() || others.iter().any(|t| t.is_finished()) {
                    tracing::error!("a receiver stopped unexpectedly; /ready now fails");
                    health.receiver_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        })
    };
    tokio::pin!(shutdown);
    let early: Option<ServerError> = tokio::select! {
        _ = &mut shutdown => None,
        r = api_task_watch(&api_task) => Some(r),
    };
    tracing::info!("shutting down: stopping receivers, flushing blocks");
    let _ = stop_rx_tx.send(true);
    watch_receivers.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = http_task.await;
        let _ = grpc_task.await;
        for t in other_tasks {
            let _ = t.await;
        }
    })
    .await;
    match tokio::time::timeout(cfg.shutdown_timeout, ingester.flush()).await {
        Ok(Ok(())) => tracing::info!("all data flushed to object storage"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "flush on shutdown failed; the WAL keeps the data for the next start")
        }
        Err(_) => tracing::error!("flush on shutdown timed out; the WAL keeps the data for the next start"),
    }
    let _ = stop_bg_tx.send(true);
    if let Some(task) = compaction {
        // A merge in progress is abandoned at the next await; its partial upload is collected later.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    let _ = stop_api_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), api_task).await;
    match early {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// This process's identity (kept in `<data dir>/node-id`), stable across restarts.
fn node_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Re-reads the block list every `every` (blocks from other processes; compacted ones leave).
async fn refresh_blocks(blocks: Arc<BlockStore>, every: std::time::Duration, mut stop: watch::Receiver<bool>) {
    loop {
        // A list that could not be read at start-up is retried sooner.
        let wait = if blocks.loaded() { every } else { every.min(std::time::Duration::from_secs(2)) };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        if let Err(e) = blocks.refresh().await {
            tracing::warn!(error = %e, "block list refresh failed");
        }
    }
}

/// The compactor role: compaction runs in the background; the HTTP address serves `/metrics` and `/ready`.
async fn run_compactor_only(
    cfg: &Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    use axum::routing::get;
    let listener = bind(cfg.http_addr).await?;
    tracing::info!(api = %cfg.http_addr, storage = ?cfg.storage, "strata compactor is running");
    let m = metrics.clone();
    let app = axum::Router::new()
        .route("/ready", get(|| async { "ready" }))
        .route("/api/echo", get(|| async { "echo" }))
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
    let (stop_tx, mut stop) = watch::channel(false);
    let task = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|v| *v).await;
            })
            .into_future(),
    );
    shutdown.await;
    tracing::info!("shutting down the compactor");
    let _ = stop_tx.send(true);
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServerError::Serve { what: "compactor HTTP", message: e.to_string() }),
        Err(e) => Err(ServerError::Serve { what: "compactor HTTP", message: e.to_string() }),
    }
}

/// Resolves only if the API server stops on its own (a serve error), which is then a reason to exit.
async fn api_task_watch(task: &tokio::task::JoinHandle<std::io::Result<()>>) -> ServerError {
    loop {
        if task.is_finished() {
            return ServerError::Serve { what: "query API", message: "stopped unexpectedly".into() };
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
