//! Runtime configuration: defaults, overridden by a YAML file, then environment variables, then flags.
//!
//! clap reads flags and `STRATA_*` variables in one place; the YAML file fills whatever neither sets, so a
//! container can ship a file and still be tuned per deployment with environment variables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Configuration errors, reported at start-up before anything listens.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: serde_yaml::Error },
    #[error("invalid value for {field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// Where blocks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A directory on local disk (`<data-dir>/blocks` unless `--local-path` says otherwise).
    #[default]
    Local,
    /// An S3-compatible bucket (AWS S3, MinIO, ...).
    S3,
}

/// Command-line flags; every one also reads an environment variable.
#[derive(Debug, Parser, Default)]
#[command(name = "strata", version, about = "Strata trace store: OTLP in, Parquet on object storage, Tempo's API out")]
pub struct Args {
    /// YAML configuration file; flags and environment variables override its values.
    #[arg(long, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the WAL and, with local storage, the blocks [default: ./data]
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Query API (Tempo-compatible HTTP) listen address [default: 0.0.0.0:3200]
    #[arg(long, env = "STRATA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// OTLP gRPC listen address [default: 0.0.0.0:4317]
    #[arg(long, env = "STRATA_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP HTTP listen address [default: 0.0.0.0:4318]
    #[arg(long, env = "STRATA_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,
    /// Zipkin v2 receiver (`POST /api/v2/spans`, JSON and protobuf) listen address, or `off` [default: 0.0.0.0:9411]
    #[arg(long, env = "STRATA_ZIPKIN_ADDR")]
    pub zipkin_addr: Option<String>,
    /// Jaeger gRPC receiver (`jaeger.api_v2.CollectorService/PostSpans`) listen address, or `off`
    /// [default: 0.0.0.0:14250]
    #[arg(long, env = "STRATA_JAEGER_GRPC_ADDR")]
    pub jaeger_grpc_addr: Option<String>,
    /// Jaeger Thrift-over-HTTP receiver (`POST /api/traces`) listen address, or `off` [default: 0.0.0.0:14268]
    #[arg(long, env = "STRATA_JAEGER_THRIFT_HTTP_ADDR")]
    pub jaeger_thrift_http_addr: Option<String>,
    /// Block storage backend [default: local]
    #[arg(long, env = "STRATA_STORAGE", value_enum)]
    pub storage: Option<StorageKind>,
    /// Directory for blocks with local storage [default: <data-dir>/blocks]
    #[arg(long, env = "STRATA_LOCAL_PATH")]
    pub local_path: Option<PathBuf>,
    /// S3 endpoint URL, e.g. http://minio:9000 (empty: AWS)
    #[arg(long, env = "STRATA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 bucket name
    #[arg(long, env = "STRATA_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket under which tenants' blocks are written
    #[arg(long, env = "STRATA_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// S3 region [default: $AWS_REGION or us-east-1]
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    /// Use path-style S3 URLs (MinIO and most self-hosted servers need this) [default: true when an endpoint is set]
    #[arg(long, env = "STRATA_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
    /// Cut the live head into a block once it holds this many spans [default: 100000]
    #[arg(long, env = "STRATA_MAX_BLOCK_SPANS")]
    pub max_block_spans: Option<usize>,
    /// Cut the live head into a block once its OTLP payload reaches this many bytes [default: 32MiB]
    #[arg(long, env = "STRATA_MAX_BLOCK_BYTES")]
    pub max_block_bytes: Option<usize>,
    /// Cut the live head into a block at the latest after this long, e.g. 30s, 5m [default: 2m]
    #[arg(long, env = "STRATA_MAX_BLOCK_AGE", value_parser = humantime::parse_duration)]
    pub max_block_age: Option<Duration>,
    /// A trace still receiving spans is kept out of a block cut until it has been idle this long (so it lands in
    /// one block), e.g. 5s [default: 5s]
    #[arg(long, env = "STRATA_MAX_TRACE_IDLE", value_parser = humantime::parse_duration)]
    pub max_trace_idle: Option<Duration>,
    /// Largest accepted OTLP request body, in bytes (after decompression) [default: 16MiB]
    #[arg(long, env = "STRATA_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Request bytes being received at once across all receivers and tenants; over it, HTTP answers 429 and
    /// gRPC requests wait [default: 256MiB]
    #[arg(long, env = "STRATA_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// Span metrics and service-graph series from ingested spans, on /metrics [default: true]
    #[arg(long, env = "STRATA_GENERATOR")]
    pub generator: Option<bool>,
    /// Most span-metrics series, and most service-graph edges, per tenant [default: 10000]
    #[arg(long, env = "STRATA_GENERATOR_MAX_SERIES")]
    pub generator_max_series: Option<usize>,
    /// Most distinct values of one generated label (service, span name, client, server) per tenant; more fold
    /// into `__overflow__` [default: 2000]
    #[arg(long, env = "STRATA_GENERATOR_MAX_LABEL_VALUES")]
    pub generator_max_label_values: Option<usize>,
    /// How long SIGTERM may spend flushing blocks before exiting, e.g. 30s [default: 30s]
    #[arg(long, env = "STRATA_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Longest a search, tag or SQL query may run before it is answered 504, e.g. 60s [default: 2m]
    #[arg(long, env = "STRATA_QUERY_TIMEOUT", value_parser = humantime::parse_duration)]
    pub query_timeout: Option<Duration>,
    /// Most block bytes one query may scan [default: 64GiB]
    #[arg(long, env = "STRATA_MAX_QUERY_SCAN_BYTES")]
    pub max_query_scan_bytes: Option<u64>,
    /// Largest response one query may return, in bytes [default: 256MiB]
    #[arg(long, env = "STRATA_MAX_RESPONSE_BYTES")]
    pub max_response_bytes: Option<usize>,
    /// Memory the query engine may use for sorting, grouping and joins, in bytes [default: 2GiB]
    #[arg(long, env = "STRATA_QUERY_MEMORY_BYTES")]
    pub query_memory_bytes: Option<usize>,
    /// Longest time range of a TraceQL metrics query, e.g. 7d [default: 24h, as Tempo]
    #[arg(long, env = "STRATA_METRICS_MAX_RANGE", value_parser = humantime::parse_duration)]
    pub metrics_max_range: Option<Duration>,
    /// Most intervals (range / step) of a TraceQL metrics query [default: 10000, as Tempo]
    #[arg(long, env = "STRATA_METRICS_MAX_INTERVALS")]
    pub metrics_max_intervals: Option<u64>,
    /// Most series one TraceQL metrics function may produce [default: 1000]
    #[arg(long, env = "STRATA_METRICS_MAX_SERIES")]
    pub metrics_max_series: Option<usize>,
    /// Log filter in tracing's EnvFilter syntax [default: info]
    #[arg(long, env = "STRATA_LOG")]
    pub log: Option<String>,
    /// Which roles this process runs: all (ingest, query, compaction), compactor (compaction only, beside other
    /// processes on the same bucket) [default: all]
    #[arg(long, env = "STRATA_TARGET", value_enum)]
    pub target: Option<Target>,
    /// Run compaction in the all-in-one process [default: true]
    #[arg(long, env = "STRATA_COMPACTION")]
    pub compaction: Option<bool>,
    /// Time between compaction passes, e.g. 30s [default: 30s]
    #[arg(long, env = "STRATA_COMPACTION_INTERVAL", value_parser = humantime::parse_duration)]
    pub compaction_interval: Option<Duration>,
    /// Blocks whose latest spans fall in the same window of this length are merged, e.g. 1h [default: 1h]
    #[arg(long, env = "STRATA_COMPACTION_WINDOW", value_parser = humantime::parse_duration)]
    pub compaction_window: Option<Duration>,
    /// Blocks of one time window and level are merged once there are this many [default: 4]
    #[arg(long, env = "STRATA_COMPACTION_MIN_INPUTS")]
    pub compaction_min_inputs: Option<usize>,
    /// Most blocks one merge reads [default: 8]
    #[arg(long, env = "STRATA_COMPACTION_MAX_INPUTS")]
    pub compaction_max_inputs: Option<usize>,
    /// Compaction stops growing a block at this many bytes [default: 512MiB]
    #[arg(long, env = "STRATA_COMPACTION_TARGET_BYTES")]
    pub compaction_target_bytes: Option<u64>,
    /// How long blocks replaced by compaction stay readable before deletion, e.g. 10m [default: 10m]
    #[arg(long, env = "STRATA_COMPACTION_GRACE", value_parser = humantime::parse_duration)]
    pub compaction_grace: Option<Duration>,
    /// Delete blocks whose latest span is older than this, e.g. 14d; 0 keeps everything [default: 0]
    #[arg(long, env = "STRATA_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// Memory for cached Parquet footers, in bytes [default: 128MiB]
    #[arg(long, env = "STRATA_FOOTER_CACHE_BYTES")]
    pub footer_cache_bytes: Option<u64>,
    /// Memory for cached per-block trace indexes, in bytes [default: 128MiB]
    #[arg(long, env = "STRATA_TRACE_INDEX_CACHE_BYTES")]
    pub trace_index_cache_bytes: Option<u64>,
    /// Memory for whole decoded block columns that searches filter on (service, name, status, duration,
    /// dedicated attribute slots), in bytes [default: 128MiB]
    #[arg(long, env = "STRATA_COLUMN_CACHE_BYTES")]
    pub column_cache_bytes: Option<u64>,
    /// How often the block list is re-read from the bucket (blocks written or compacted by other processes)
    /// [default: 1m]
    #[arg(long, env = "STRATA_BLOCKLIST_REFRESH", value_parser = humantime::parse_duration)]
    pub blocklist_refresh: Option<Duration>,
}

/// The roles one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Ingest, query and compaction in one process.
    #[default]
    All,
    /// Compaction and retention only (plus /metrics and /ready on the HTTP address).
    Compactor,
}

/// The YAML file's shape. Every key is optional; names match the long flags with `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub http_addr: Option<SocketAddr>,
    pub otlp_grpc_addr: Option<SocketAddr>,
    pub otlp_http_addr: Option<SocketAddr>,
    pub zipkin_addr: Option<String>,
    pub jaeger_grpc_addr: Option<String>,
    pub jaeger_thrift_http_addr: Option<String>,
    pub storage: Option<StorageKind>,
    pub local_path: Option<PathBuf>,
    pub s3: Option<FileS3>,
    pub max_block_spans: Option<usize>,
    pub max_block_bytes: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub max_block_age: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub max_trace_idle: Option<Duration>,
    pub max_request_bytes: Option<usize>,
    pub max_inflight_bytes: Option<usize>,
    pub generator: Option<bool>,
    pub generator_max_series: Option<usize>,
    pub generator_max_label_values: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub shutdown_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub query_timeout: Option<Duration>,
    pub max_query_scan_bytes: Option<u64>,
    pub max_response_bytes: Option<usize>,
    pub query_memory_bytes: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub metrics_max_range: Option<Duration>,
    pub metrics_max_intervals: Option<u64>,
    pub metrics_max_series: Option<usize>,
    pub log: Option<String>,
    pub target: Option<Target>,
    pub compaction: Option<bool>,
    #[serde(default, with = "opt_duration")]
    pub compaction_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub compaction_window: Option<Duration>,
    pub compaction_target_bytes: Option<u64>,
    pub compaction_min_inputs: Option<usize>,
    pub compaction_max_inputs: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub compaction_grace: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub retention: Option<Duration>,
    /// Per-tenant retention overriding `retention`, e.g. `{team-a: 7d}` (file only).
    pub tenant_retention: Option<HashMap<String, String>>,
    pub footer_cache_bytes: Option<u64>,
    pub trace_index_cache_bytes: Option<u64>,
    pub column_cache_bytes: Option<u64>,
    #[serde(default, with = "opt_duration")]
    pub blocklist_refresh: Option<Duration>,
}

/// The `s3:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileS3 {
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

/// S3 settings; credentials come from the standard `AWS_*` environment variables.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub path_style: bool,
}

/// Storage settings after merging.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    Local { path: PathBuf },
    S3(S3Config),
}

/// The merged configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    /// Receivers for other protocols; `None` when turned off.
    pub zipkin_addr: Option<SocketAddr>,
    pub jaeger_grpc_addr: Option<SocketAddr>,
    pub jaeger_thrift_http_addr: Option<SocketAddr>,
    pub storage: StorageConfig,
    pub max_block_spans: usize,
    pub max_block_bytes: usize,
    pub max_block_age: Duration,
    pub max_trace_idle: Duration,
    pub max_request_bytes: usize,
    pub max_inflight_bytes: usize,
    /// Span metrics and service graph on (with their per-tenant series limit).
    pub generator: bool,
    pub generator_max_series: usize,
    pub generator_max_label_values: usize,
    pub shutdown_timeout: Duration,
    pub query: QueryLimits,
    pub log: String,
    pub target: Target,
    /// Whether this process compacts (always for the compactor target).
    pub compaction: bool,
    pub compact: crate::compact::CompactConfig,
    pub blocklist_refresh: Duration,
    pub caches: crate::storage::CacheBudgets,
}

/// Bounds on every query, so one request cannot take the server down.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub max_scan_bytes: u64,
    pub max_response_bytes: usize,
    pub memory_bytes: usize,
    /// Longest range, most intervals and most series of a metrics query.
    pub metrics_max_range: Duration,
    pub metrics_max_intervals: u64,
    pub metrics_max_series: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(120),
            max_scan_bytes: 64 << 30,
            max_response_bytes: 256 << 20,
            memory_bytes: 2 << 30,
            metrics_max_range: Duration::from_secs(24 * 3600),
            metrics_max_intervals: 10_000,
            metrics_max_series: 1000,
        }
    }
}

impl Config {
    /// Merges flags/environment over the YAML file (if any) over the defaults.
    pub fn load(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    fn merge(a: Args, f: FileConfig) -> Result<Self, ConfigError> {
        let data_dir = a.data_dir.or(f.data_dir).unwrap_or_else(|| PathBuf::from("./data"));
        let fs3 = f.s3.unwrap_or_default();
        let kind = a.storage.or(f.storage).unwrap_or_default();
        let storage = match kind {
            StorageKind::Local => {
                StorageConfig::Local { path: a.local_path.or(f.local_path).unwrap_or_else(|| data_dir.join("blocks")) }
            }
            StorageKind::S3 => {
                let endpoint = a.s3_endpoint.or(fs3.endpoint).filter(|e| !e.is_empty());
                let bucket = a.s3_bucket.or(fs3.bucket).filter(|b| !b.is_empty()).ok_or(ConfigError::Invalid {
                    field: "s3 bucket",
                    message: "storage is s3 but no bucket is set (STRATA_S3_BUCKET / --s3-bucket)".into(),
                })?;
                S3Config {
                    path_style: a.s3_path_style.or(fs3.path_style).unwrap_or(endpoint.is_some()),
                    endpoint,
                    bucket,
                    prefix: a.s3_prefix.or(fs3.prefix).unwrap_or_default().trim_matches('/').to_string(),
                    region: a.s3_region.or(fs3.region).unwrap_or_else(|| "us-east-1".into()),
                }
                .into()
            }
        };
        let cfg = Config {
            data_dir,
            http_addr: a.http_addr.or(f.http_addr).unwrap_or(([0, 0, 0, 0], 3200).into()),
            otlp_grpc_addr: a.otlp_grpc_addr.or(f.otlp_grpc_addr).unwrap_or(([0, 0, 0, 0], 4317).into()),
            otlp_http_addr: a.otlp_http_addr.or(f.otlp_http_addr).unwrap_or(([0, 0, 0, 0], 4318).into()),
            zipkin_addr: listen("zipkin_addr", a.zipkin_addr.or(f.zipkin_addr), 9411)?,
            jaeger_grpc_addr: listen("jaeger_grpc_addr", a.jaeger_grpc_addr.or(f.jaeger_grpc_addr), 14250)?,
            jaeger_thrift_http_addr: listen(
                "jaeger_thrift_http_addr",
                a.jaeger_thrift_http_addr.or(f.jaeger_thrift_http_addr),
                14268,
            )?,
            storage,
            max_block_spans: a.max_block_spans.or(f.max_block_spans).unwrap_or(100_000),
            max_block_bytes: a.max_block_bytes.or(f.max_block_bytes).unwrap_or(32 << 20),
            max_block_age: a.max_block_age.or(f.max_block_age).unwrap_or(Duration::from_secs(120)),
            max_trace_idle: a.max_trace_idle.or(f.max_trace_idle).unwrap_or(Duration::from_secs(5)),
            max_request_bytes: a.max_request_bytes.or(f.max_request_bytes).unwrap_or(16 << 20),
            max_inflight_bytes: a.max_inflight_bytes.or(f.max_inflight_bytes).unwrap_or(256 << 20),
            generator: a.generator.or(f.generator).unwrap_or(true),
            generator_max_series: a.generator_max_series.or(f.generator_max_series).unwrap_or(10_000),
            generator_max_label_values: a.generator_max_label_values.or(f.generator_max_label_values).unwrap_or(2_000),
            shutdown_timeout: a.shutdown_timeout.or(f.shutdown_timeout).unwrap_or(Duration::from_secs(30)),
            query: {
                let d = QueryLimits::default();
                QueryLimits {
                    timeout: a.query_timeout.or(f.query_timeout).unwrap_or(d.timeout),
                    max_scan_bytes: a.max_query_scan_bytes.or(f.max_query_scan_bytes).unwrap_or(d.max_scan_bytes),
                    max_response_bytes: a.max_response_bytes.or(f.max_response_bytes).unwrap_or(d.max_response_bytes),
                    memory_bytes: a.query_memory_bytes.or(f.query_memory_bytes).unwrap_or(d.memory_bytes),
                    metrics_max_range: a.metrics_max_range.or(f.metrics_max_range).unwrap_or(d.metrics_max_range),
                    metrics_max_intervals: a
                        .metrics_max_intervals
                        .or(f.metrics_max_intervals)
                        .unwrap_or(d.metrics_max_intervals),
                    metrics_max_series: a.metrics_max_series.or(f.metrics_max_series).unwrap_or(d.metrics_max_series),
                }
            },
            log: a.log.or(f.log).unwrap_or_else(|| "info".into()),
            target: a.target.or(f.target).unwrap_or_default(),
            compaction: a.compaction.or(f.compaction).unwrap_or(true),
            compact: {
                let d = crate::compact::CompactConfig::default();
                let mut tenant_retention = HashMap::new();
                for (tenant, v) in f.tenant_retention.unwrap_or_default() {
                    let keep = humantime::parse_duration(&v).map_err(|e| ConfigError::Invalid {
                        field: "tenant_retention",
                        message: format!("{tenant}: {e}"),
                    })?;
                    tenant_retention.insert(tenant, keep);
                }
                crate::compact::CompactConfig {
                    interval: a.compaction_interval.or(f.compaction_interval).unwrap_or(d.interval),
                    window: a.compaction_window.or(f.compaction_window).unwrap_or(d.window),
                    target_bytes: a.compaction_target_bytes.or(f.compaction_target_bytes).unwrap_or(d.target_bytes),
                    min_inputs: a.compaction_min_inputs.or(f.compaction_min_inputs).unwrap_or(d.min_inputs),
                    max_inputs: a.compaction_max_inputs.or(f.compaction_max_inputs).unwrap_or(d.max_inputs),
                    grace: a.compaction_grace.or(f.compaction_grace).unwrap_or(d.grace),
                    retention: a.retention.or(f.retention).filter(|r| !r.is_zero()),
                    tenant_retention,
                    ..d
                }
            },
            blocklist_refresh: a.blocklist_refresh.or(f.blocklist_refresh).unwrap_or(Duration::from_secs(60)),
            caches: {
                let d = crate::storage::CacheBudgets::default();
                crate::storage::CacheBudgets {
                    footer_bytes: a.footer_cache_bytes.or(f.footer_cache_bytes).unwrap_or(d.footer_bytes),
                    trace_index_bytes: a
                        .trace_index_cache_bytes
                        .or(f.trace_index_cache_bytes)
                        .unwrap_or(d.trace_index_bytes),
                    column_bytes: a.column_cache_bytes.or(f.column_cache_bytes).unwrap_or(d.column_bytes),
                }
            },
        };
        if cfg.query.max_scan_bytes == 0
            || cfg.query.max_response_bytes == 0
            || cfg.query.memory_bytes == 0
            || cfg.query.metrics_max_intervals == 0
            || cfg.query.metrics_max_series == 0
        {
            return Err(ConfigError::Invalid {
                field: "limits",
                message: "max_query_scan_bytes, max_response_bytes, query_memory_bytes, metrics_max_intervals and \
                          metrics_max_series must be positive"
                    .into(),
            });
        }
        if cfg.max_request_bytes > crate::ingest::wal::MAX_BODY {
            return Err(ConfigError::Invalid {
                field: "max_request_bytes",
                message: format!(
                    "{} is more than one write-ahead-log record holds ({} bytes)",
                    cfg.max_request_bytes,
                    crate::ingest::wal::MAX_BODY
                ),
            });
        }
        if cfg.max_block_spans == 0 || cfg.max_block_bytes == 0 || cfg.max_request_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "limits",
                message: "max_block_spans, max_block_bytes and max_request_bytes must be positive".into(),
            });
        }
        Ok(cfg)
    }
}

impl From<S3Config> for StorageConfig {
    fn from(c: S3Config) -> Self {
        StorageConfig::S3(c)
    }
}

/// An optional listener's address: unset -> all interfaces on `port`; `off` (or empty) -> not started.
fn listen(field: &'static str, value: Option<String>, port: u16) -> Result<Option<SocketAddr>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(Some(([0, 0, 0, 0], port).into())),
        Some("" | "off" | "false") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e| ConfigError::Invalid {
            field,
            message: format!("{v:?} is neither a listen address (host:port) nor `off`: {e}"),
        }),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_receivers_move_or_turn_off() {
        let a =
            Args { zipkin_addr: Some("off".into()), jaeger_grpc_addr: Some("127.0.0.1:1".into()), ..Args::default() };
        let c = Config::merge(a, FileConfig::default()).unwrap();
        assert_eq!(c.zipkin_addr, None);
        assert_eq!(c.jaeger_grpc_addr, Some(([127, 0, 0, 1], 1).into()));
        let bad = Args { jaeger_thrift_http_addr: Some("nowhere".into()), ..Args::default() };
        assert!(Config::merge(bad, FileConfig::default()).is_err());
    }

    #[test]
    fn defaults_need_no_configuration() {
        let c = Config::merge(Args::default(), FileConfig::default()).unwrap();
        assert_eq!(c.http_addr.port(), 3200);
        assert_eq!(c.otlp_grpc_addr.port(), 4317);
        assert_eq!(c.otlp_http_addr.port(), 4318);
        assert_eq!(c.zipkin_addr.map(|a| a.port()), Some(9411));
        assert_eq!(c.jaeger_grpc_addr.map(|a| a.port()), Some(14250));
        assert_eq!(c.jaeger_thrift_http_addr.map(|a| a.port()), Some(14268));
        assert!(matches!(c.storage, StorageConfig::Local { ref path } if path.ends_with("data/blocks")));
    }

    #[test]
    fn flags_override_file() {
        let file: FileConfig = serde_yaml::from_str(
            "storage: s3\ns3: {bucket: b1, prefix: /p/, endpoint: 'http://x:9000'}\nmax_block_age: 10s\nhttp_addr: 127.0.0.1:1\n",
        )
        .unwrap();
        let args = Args { http_addr: Some("127.0.0.1:2".parse().unwrap()), ..Args::default() };
        let c = Config::merge(args, file).unwrap();
        assert_eq!(c.http_addr.port(), 2);
        assert_eq!(c.max_block_age, Duration::from_secs(10));
        match c.storage {
            StorageConfig::S3(s) => {
                assert_eq!(s.bucket, "b1");
                assert_eq!(s.prefix, "p");
                assert!(s.path_style);
            }
            other => panic!("expected s3, got {other:?}"),
        }
    }

    #[test]
    fn s3_without_bucket_is_an_error() {
        let args = Args { storage: Some(StorageKind::S3), ..Args::default() };
        assert!(Config::merge(args, FileConfig::default()).is_err());
        assert!(serde_yaml::from_str::<FileConfig>("nonsense: 1").is_err());
    }
}
