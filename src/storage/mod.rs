//! Object storage: where blocks live (local directory or S3) and the per-tenant block index readers use.
//!
//! `BlockStore` owns the bucket layout (`<tenant>/<block>/{data.parquet,bloom,meta.json}` and
//! `<tenant>/index.json`), keeps every block's meta and bloom filter in memory and caches Parquet footers, so a
//! trace lookup touches object storage only for the row group that holds the trace.

mod blocks;
mod counting;
mod file;
mod lease;

pub use blocks::{BlockEntry, BlockStore, CacheBudgets, data_path, now_unix};
pub use counting::CountingStore;
pub use file::ObjectFile;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::config::StorageConfig;
use crate::telemetry::Metrics;

/// Storage-layer errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("object store path: {0}")]
    Path(#[from] object_store::path::Error),
    #[error("block: {0}")]
    Block(#[from] crate::block::BlockError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("block index: {0}")]
    Index(#[from] serde_json::Error),
    #[error("cannot prepare local storage directory {path}: {source}")]
    LocalDir { path: String, source: std::io::Error },
}

/// Opens the configured object store, with request counting. S3 credentials come from the usual `AWS_*`
/// environment variables.
pub fn open_store(cfg: &StorageConfig, metrics: &Metrics) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let store = open_backend(cfg)?;
    Ok(Arc::new(CountingStore::new(
        store,
        metrics.object_gets.clone(),
        metrics.object_puts.clone(),
        metrics.object_read_bytes.clone(),
    )))
}

fn open_backend(cfg: &StorageConfig) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match cfg {
        StorageConfig::Local { path } => {
            std::fs::create_dir_all(path)
                .map_err(|source| StorageError::LocalDir { path: path.display().to_string(), source })?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(path)?.with_automatic_cleanup(true)))
        }
        StorageConfig::S3(s3) => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_virtual_hosted_style_request(!s3.path_style);
            if let Some(ep) = &s3.endpoint {
                b = b.with_endpoint(ep).with_allow_http(ep.starts_with("http://"));
            }
            let store: Arc<dyn ObjectStore> = Arc::new(b.build()?);
            Ok(if s3.prefix.is_empty() { store } else { Arc::new(PrefixStore::new(store, s3.prefix.as_str())) })
        }
    }
}
