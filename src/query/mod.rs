//! Query: answers questions about stored traces from every place spans can be (live heads, frozen heads waiting
//! for upload, blocks in object storage) as one consistent view: trace by ID, and TraceQL search on DataFusion
//! (`search`: plan and orchestration, `prune`: TraceQL to DataFusion predicates, `table`: DataFusion tables over
//! blocks, `eval`: the exact per-trace operator, `local`: answers from one block's filtered rows, `gate`: traces
//! ruled out from cached columns before any is read). Semantics: `SEMANTICS.md`; design: `DESIGN.md`.

pub mod eval;
mod gate;
pub mod jaeger;
mod local;
pub mod metrics;
pub mod prune;
pub mod search;
pub mod sql;
pub mod table;
pub mod tags;
pub mod udf;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use crate::ingest::Ingester;
use crate::model::{Origin, SpanRecord, Tenant, TraceId, kv, service_name};
use crate::storage::{BlockStore, StorageError};
use crate::telemetry::Metrics;

/// Query-layer errors.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("reading blocks: {0}")]
    Storage(#[from] StorageError),
    #[error("reading data in memory: {0}")]
    Memory(#[from] crate::block::BlockError),
    #[error("query engine: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    #[error("query engine: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A query task died (a bug, reported rather than taking the server down).
    #[error("query task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The query asked for more than the configured limits allow; the message says which and how to narrow it.
    #[error("{0}")]
    Limit(String),
    /// Data that does not have the shape the query layer expects (a bug or a damaged block).
    #[error("unexpected data: {0}")]
    Internal(String),
    /// A SQL statement that does not parse, plan or is not allowed (only reads are).
    #[error("invalid SQL: {0}")]
    Sql(String),
}

impl QueryError {
    /// True when the request itself is wrong (a 400).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, QueryError::Sql(_))
    }

    /// True when the request, not the server, is at fault (over a limit): answered with a 4xx.
    pub fn is_limit(&self) -> bool {
        matches!(self, QueryError::Limit(_))
            || matches!(self, QueryError::Engine(datafusion::error::DataFusionError::ResourcesExhausted(_)))
    }
}

/// A trace as returned to clients, with what it took to assemble it.
pub struct TraceResult {
    pub resource_spans: Vec<ResourceSpans>,
    pub span_count: usize,
    /// Why some spans may be missing (a block that may hold the trace could not be read); `None` when complete.
    pub partial: Option<String>,
}

/// The read side of Strata.
pub struct Querier {
    ingester: Arc<Ingester>,
    blocks: Arc<BlockStore>,
    metrics: Arc<Metrics>,
    engine: search::SearchEngine,
}

impl Querier {
    /// Whether the block list has been read from storage (queries before that see only data in memory).
    pub fn blocks_loaded(&self) -> bool {
        self.blocks.loaded()
    }

    pub fn new(
        ingester: Arc<Ingester>,
        blocks: Arc<BlockStore>,
        metrics: Arc<Metrics>,
        limits: &crate::config::QueryLimits,
    ) -> Result<Self, QueryError> {
        let engine = search::SearchEngine::new(ingester.clone(), blocks.clone(), limits)?;
        Ok(Querier { ingester, blocks, metrics, engine })
    }

    /// A search that reports traces as soon as they are certain (see `SearchEngine::search_streaming`).
    pub async fn search_streaming(
        &self,
        tenant: &Tenant,
        req: &search::SearchRequest,
        progress: search::Progress<'_>,
    ) -> Result<search::SearchResult, QueryError> {
        self.observed(self.engine.search_streaming(tenant, req, progress)).await
    }

    /// A TraceQL metrics query (range or instant).
    pub async fn metrics(
        &self,
        tenant: &Tenant,
        req: &metrics::MetricsRequest,
    ) -> Result<metrics::MetricsResult, QueryError> {
        self.observed(self.engine.metrics(tenant, req)).await
    }

    /// One read-only SQL statement over the tenant's spans.
    pub async fn sql(&self, tenant: &Tenant, sql: &str, max_bytes: usize) -> Result<sql::SqlOutput, QueryError> {
        self.engine.sql(tenant, sql, max_bytes).await
    }

    /// A service's span names and kinds (Jaeger's operations).
    pub async fn operations(
        &self,
        tenant: &Tenant,
        service: &str,
        max_bytes: usize,
    ) -> Result<Vec<jaeger::Operation>, QueryError> {
        self.engine.operations(tenant, service, max_bytes).await
    }

    /// Calls between services whose callee span started in `[start, end)` (Jaeger's dependencies).
    pub async fn dependencies(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<jaeger::Dependency>, QueryError> {
        self.engine.dependencies(tenant, start, end, max_bytes).await
    }

    /// Tag names per scope.
    pub async fn tag_names(
        &self,
        tenant: &Tenant,
        scopes: &[tags::TagScope],
        req: &tags::TagRequest,
    ) -> Result<Vec<(tags::TagScope, Vec<String>)>, QueryError> {
        self.engine.tag_names(tenant, scopes, req).await
    }

    /// Distinct values of one tag.
    pub async fn tag_values(
        &self,
        tenant: &Tenant,
        tag: &query_lang::Field,
        req: &tags::TagRequest,
    ) -> Result<Vec<tags::TagValue>, QueryError> {
        self.engine.tag_values(tenant, tag, req).await
    }

    /// Counts and times a search for `/metrics`.
    async fn observed<T>(&self, search: impl Future<Output = Result<T, QueryError>>) -> Result<T, QueryError> {
        let started = Instant::now();
        self.metrics.searches.inc();
        let r = search.await;
        self.metrics.search_seconds.observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            self.metrics.search_errors.inc();
        }
        r
    }

    /// A TraceQL search over everything the tenant has stored, newest traces first.
    pub async fn search(
        &self,
        tenant: &Tenant,
        req: &search::SearchRequest,
    ) -> Result<search::SearchResult, QueryError> {
        self.observed(self.engine.search(tenant, req)).await
    }

    /// Every fragment of a trace, wherever it sits, merged into one trace with duplicate spans removed.
    /// `None` when no span of it is stored.
    pub async fn trace_by_id(&self, tenant: &Tenant, id: TraceId) -> Result<Option<TraceResult>, QueryError> {
        let started = Instant::now();
        self.metrics.trace_lookups.inc();
        let mut records = self.ingester.find_trace(tenant, &id);
        let (stored, failed) = self.blocks.find_trace(tenant, id).await;
        records.extend(stored);
        self.metrics.trace_lookup_seconds.observe(started.elapsed().as_secs_f64());
        if let Some(first) = failed.into_iter().next() {
            tracing::warn!(error = %first, trace = %id, "a block that may hold the trace could not be read");
            if records.is_empty() {
                // Nothing found: "not found" would be a claim the store cannot back.
                return Err(first.into());
            }
            let mut t = merge_trace(records);
            t.partial = Some(format!("some spans may be missing: a block could not be read ({first})"));
            return Ok(Some(t));
        }
        if records.is_empty() {
            return Ok(None);
        }
        Ok(Some(merge_trace(records)))
    }
}

/// Groups spans by resource and scope, dedupes them (same span ID and kind: a retried export or a fragment
/// stored twice), and fills in what Grafana requires on every element.
pub fn merge_trace(records: Vec<SpanRecord>) -> TraceResult {
    let mut seen: HashSet<(Vec<u8>, i32)> = HashSet::with_capacity(records.len());
    // Origins compared by content; the pointer cache avoids re-encoding the common shared origin.
    let mut key_of: HashMap<*const Origin, Vec<u8>> = HashMap::new();
    let mut groups: Vec<(Arc<Origin>, Vec<Span>)> = Vec::new();
    let mut group_of: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut count = 0;
    for rec in records {
        if !seen.insert((rec.span.span_id.clone(), rec.span.kind)) {
            continue;
        }
        count += 1;
        let key = key_of.entry(Arc::as_ptr(&rec.origin)).or_insert_with(|| origin_key(&rec.origin)).clone();
        let gi = *group_of.entry(key).or_insert_with(|| {
            groups.push((rec.origin.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push(rec.span);
    }
    // One ResourceSpans per distinct resource, one ScopeSpans per scope inside it.
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut res_index: HashMap<Vec<u8>, usize> = HashMap::new();
    for (origin, mut spans) in groups {
        spans.sort_by(|a, b| a.start_time_unix_nano.cmp(&b.start_time_unix_nano).then(a.span_id.cmp(&b.span_id)));
        for s in &mut spans {
            if s.status.is_none() {
                s.status = Some(Status::default());
            }
        }
        let mut resource = origin.resource.clone();
        if service_name(&resource).is_none() {
            resource.attributes.insert(
                0,
                kv("service.name", Some(AnyValue { value: Some(Value::StringValue("unknown_service".into())) })),
            );
        }
        let rkey = [resource.encode_to_vec(), origin.resource_schema_url.as_bytes().to_vec()].concat();
        let ri = *res_index.entry(rkey).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some(resource),
                scope_spans: Vec::new(),
                schema_url: origin.resource_schema_url.clone(),
            });
            out.len() - 1
        });
        out[ri].scope_spans.push(ScopeSpans {
            scope: Some(origin.scope.clone()),
            spans,
            schema_url: origin.scope_schema_url.clone(),
        });
    }
    TraceResult { resource_spans: out, span_count: count, partial: None }
}

fn origin_key(o: &Origin) -> Vec<u8> {
    let mut k = encode_resource(&o.resource);
    k.extend_from_slice(&(o.resource_schema_url.len() as u32).to_le_bytes());
    k.extend_from_slice(o.resource_schema_url.as_bytes());
    k.extend_from_slice(&encode_scope(&o.scope));
    k.extend_from_slice(o.scope_schema_url.as_bytes());
    k
}

fn encode_resource(r: &Resource) -> Vec<u8> {
    let mut v = r.encode_to_vec();
    v.splice(0..0, (v.len() as u32).to_le_bytes());
    v
}

fn encode_scope(s: &InstrumentationScope) -> Vec<u8> {
    let mut v = s.encode_to_vec();
    v.splice(0..0, (v.len() as u32).to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(origin: &Arc<Origin>, id: u8, kind: i32) -> SpanRecord {
        SpanRecord {
            origin: origin.clone(),
            span: Span { span_id: vec![id; 8], kind, start_time_unix_nano: u64::from(id), ..Default::default() },
        }
    }

    #[test]
    fn merges_fragments_and_dedupes() {
        let svc = |name: &str| Origin {
            resource: Resource {
                attributes: vec![kv("service.name", Some(AnyValue { value: Some(Value::StringValue(name.into())) }))],
                ..Default::default()
            },
            ..Default::default()
        };
        let a1 = Arc::new(svc("a"));
        let a2 = Arc::new(svc("a")); // same content, different allocation (e.g. from another block)
        let b = Arc::new(svc("b"));
        let t = merge_trace(vec![rec(&a1, 1, 2), rec(&b, 2, 3), rec(&a2, 3, 2), rec(&a2, 1, 2), rec(&a2, 1, 3)]);
        assert_eq!(t.span_count, 4);
        assert_eq!(t.resource_spans.len(), 2);
        let a = &t.resource_spans[0];
        assert_eq!(a.scope_spans.len(), 1);
        assert_eq!(a.scope_spans[0].spans.len(), 3);
        assert!(a.scope_spans[0].spans.iter().all(|s| s.status.is_some()));
        let anon = merge_trace(vec![rec(&Arc::new(Origin::default()), 9, 1)]);
        let r = anon.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(service_name(r), Some("unknown_service"));
    }
}
