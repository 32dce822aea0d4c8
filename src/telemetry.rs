//! Self-metrics, exposed on `/metrics` in Prometheus text format.
//!
//! One registry for the whole process; every layer records into the `Metrics` handle it is given, so the api
//! layer only has to encode it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label for per-protocol counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

/// Label for per-reason counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every self-metric Strata exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<ProtocolLabel, Counter>,
    pub spans_accepted: Family<ProtocolLabel, Counter>,
    pub spans_rejected: Family<ReasonLabel, Counter>,
    pub requests_failed: Family<ReasonLabel, Counter>,
    pub wal_fsync_seconds: Histogram,
    pub wal_bytes: Counter,
    pub flush_seconds: Histogram,
    pub blocks_flushed: Counter,
    pub blocks: Gauge,
    pub live_spans: Gauge,
    pub object_store_errors: Counter,
    pub object_gets: Counter,
    pub object_puts: Counter,
    pub object_read_bytes: Counter,
    pub trace_lookups: Counter,
    pub searches: Counter,
    pub search_seconds: Histogram,
    pub search_errors: Counter,
    pub trace_lookup_seconds: Histogram,
    pub flush_failures: Counter,
    pub compactions: Counter,
    pub compaction_errors: Counter,
    pub compacted_blocks: Counter,
    pub compacted_spans: Counter,
    /// Traces compaction copied as stored rows (found in one input) instead of rebuilding them.
    pub compaction_copied_traces: Counter,
    pub blocks_deleted: Counter,
    /// Spans or edges the metrics generator left out (series or pending limits, unpaired edges).
    pub generator_dropped: Family<ReasonLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strata");
        let m = Metrics {
            requests: Family::default(),
            spans_accepted: Family::default(),
            spans_rejected: Family::default(),
            requests_failed: Family::default(),
            wal_fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            wal_bytes: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            blocks_flushed: Counter::default(),
            blocks: Gauge::default(),
            live_spans: Gauge::default(),
            object_store_errors: Counter::default(),
            object_gets: Counter::default(),
            object_puts: Counter::default(),
            object_read_bytes: Counter::default(),
            trace_lookups: Counter::default(),
            searches: Counter::default(),
            search_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            search_errors: Counter::default(),
            flush_failures: Counter::default(),
            compactions: Counter::default(),
            compaction_errors: Counter::default(),
            compacted_blocks: Counter::default(),
            compacted_spans: Counter::default(),
            compaction_copied_traces: Counter::default(),
            blocks_deleted: Counter::default(),
            generator_dropped: Family::default(),
            trace_lookup_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register("ingest_requests", "OTLP export requests received", m.requests.clone());
        registry.register("ingest_spans_accepted", "Spans made durable in the WAL", m.spans_accepted.clone());
        registry.register("ingest_spans_rejected", "Spans refused (invalid IDs, ...)", m.spans_rejected.clone());
        registry.register("ingest_requests_failed", "OTLP requests answered with an error", m.requests_failed.clone());
        registry.register("wal_fsync_seconds", "Duration of one WAL group write + fsync", m.wal_fsync_seconds.clone());
        registry.register("wal_written_bytes", "Bytes appended to the WAL", m.wal_bytes.clone());
        registry.register("flush_seconds", "Time to build and upload one block", m.flush_seconds.clone());
        registry.register("blocks_flushed", "Blocks written to object storage", m.blocks_flushed.clone());
        registry.register("blocks", "Blocks currently in the block index", m.blocks.clone());
        registry.register("live_spans", "Spans held in memory, not yet in a block", m.live_spans.clone());
        registry.register("object_store_errors", "Failed object storage operations", m.object_store_errors.clone());
        registry.register("object_store_gets", "GET requests to object storage", m.object_gets.clone());
        registry.register("object_store_puts", "PUT requests to object storage", m.object_puts.clone());
        registry.register("object_store_read_bytes", "Bytes read from object storage", m.object_read_bytes.clone());
        registry.register("trace_lookups", "Trace-by-ID lookups", m.trace_lookups.clone());
        registry.register("searches", "TraceQL searches run", m.searches.clone());
        registry.register(
            "flush_failures",
            "Failed attempts to build or upload a block (retried)",
            m.flush_failures.clone(),
        );
        registry.register("compactions", "Compaction jobs finished (blocks merged into one)", m.compactions.clone());
        registry.register(
            "compaction_errors",
            "Compaction jobs that failed (retried later)",
            m.compaction_errors.clone(),
        );
        registry.register("compacted_blocks", "Input blocks merged by compaction", m.compacted_blocks.clone());
        registry.register("compacted_spans", "Spans written by compaction", m.compacted_spans.clone());
        registry.register(
            "compaction_copied_traces",
            "Traces compaction copied row for row (in one input only) instead of rebuilding",
            m.compaction_copied_traces.clone(),
        );
        registry.register("blocks_deleted", "Blocks deleted (replaced, expired or orphaned)", m.blocks_deleted.clone());
        registry.register("search_seconds", "TraceQL search latency", m.search_seconds.clone());
        registry.register(
            "search_errors",
            "TraceQL searches that failed after being accepted",
            m.search_errors.clone(),
        );
        registry.register("trace_lookup_seconds", "Trace-by-ID latency", m.trace_lookup_seconds.clone());
        registry.register(
            "generator_dropped",
            "Spans or edges the metrics generator left out, by reason",
            m.generator_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.encode_with(|_| {})
    }

    /// The exposition with more families (the generated series) appended before its end marker.
    pub fn encode_with(&self, extra: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        extra(&mut out);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/ready` reports beyond the store: parts of the process that died or are not loaded yet.
#[derive(Default, Debug)]
pub struct Health {
    /// Set when a receiver stopped on its own: the process no longer takes data and must not look ready.
    pub receiver_failed: std::sync::atomic::AtomicBool,
}
