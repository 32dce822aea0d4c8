//! Block format: what a block is on object storage, and how it is built from and read back into spans.
//!
//! A block is three objects under `<tenant>/<block id>/`: `data.parquet` (one row per span, sorted by trace ID),
//! `bloom` (a trace-ID bloom filter) and `meta.json`, written last so a block is visible only when complete.
//! This module is pure format: bytes in, bytes out. Moving them to and from object storage is `storage`'s job.

pub mod attrs;
pub mod bloom;
pub mod reader;
pub mod schema;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use bloom::TraceBloom;
pub use reader::{batch_to_spans, trace_id_filter};
pub use writer::{BlockOptions, BuiltBlock, build_block};

/// Object names inside a block's folder.
pub const DATA_OBJECT: &str = "data.parquet";
pub const BLOOM_OBJECT: &str = "bloom";
pub const META_OBJECT: &str = "meta.json";
/// Written into `meta.format` so future readers can tell layouts apart.
pub const FORMAT: &str = "strata-parquet";

/// Errors building or decoding a block.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("block meta: {0}")]
    Meta(#[from] serde_json::Error),
    #[error("bloom filter: {0}")]
    Bloom(String),
    #[error("block has an unexpected layout: {0}")]
    Layout(String),
}

/// Which attribute a dedicated slot column holds in this block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedicatedColumn {
    /// `resource` or `span`.
    pub scope: String,
    /// The attribute key, e.g. `http.method`.
    pub name: String,
    /// `string` or `int`.
    #[serde(rename = "type")]
    pub value_type: String,
    /// The slot column that holds it, e.g. `span_str_03`.
    pub column: String,
}

/// The small JSON object that describes a block and makes it visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    pub format: String,
    pub schema_version: u32,
    pub block_id: String,
    pub tenant: String,
    /// Earliest span start and latest span end in the block, unix nanoseconds.
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub span_count: u64,
    pub trace_count: u64,
    /// Hex trace IDs bounding the block, for pruning before the bloom filter is consulted.
    pub min_trace_id: String,
    pub max_trace_id: String,
    pub data_size: u64,
    pub bloom_size: u64,
    pub row_groups: u64,
    /// Raw OTLP protobuf bytes of the spans the block was built from, for compression accounting.
    pub raw_bytes: u64,
    pub compaction_level: u32,
    pub created_at_unix: u64,
    pub dedicated_columns: Vec<DedicatedColumn>,
}

impl BlockMeta {
    pub fn to_json(&self) -> Result<Vec<u8>, BlockError> {
        Ok(serde_json::to_vec_pretty(self)?)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, BlockError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}
