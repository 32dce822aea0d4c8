//! The query API on :3200, shaped like Grafana Tempo's so Grafana's Tempo data source works unchanged, plus
//! operations endpoints (`/ready`, `/metrics`, `/flush`).

/// Writes `key: value` unless the value is proto3's default, which proto3 JSON omits (declared before the modules
/// so every JSON writer below can use it).
macro_rules! put {
    ($m:expr, $key:expr, $v:expr, $default:expr) => {
        if !$default {
            $m.serialize_entry($key, &$v)?;
        }
    };
}

mod grpc;
mod jaeger;
mod json;
mod metrics;
mod search;
mod sql;
mod tags;
pub mod tempopb;
mod ui;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prost::Message;

use crate::config::QueryLimits;
use crate::ingest::Ingester;
use crate::model::{Tenant, TraceId};
use crate::query::{Querier, TraceResult};
use crate::telemetry::Metrics;

/// The Tempo-compatible version Strata reports. Older Grafana turns gRPC streaming on from 2.2.0, which Strata
/// serves (`tempopb.StreamingQuerier` on this port).
pub const TEMPO_COMPAT_VERSION: &str = "2.2.0";

#[derive(Clone)]
struct Api {
    querier: Arc<Querier>,
    /// Span metrics and service graph, exposed with the self-metrics.
    generator: Option<Arc<crate::generate::Generator>>,
    ingester: Arc<Ingester>,
    metrics: Arc<Metrics>,
    health: Arc<crate::telemetry::Health>,
    limits: Limits,
}

/// Bounds on what one query may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest `limit` (and `spss`) a search accepts.
    pub max_search_limit: usize,
    pub query: QueryLimits,
}

impl Api {
    /// Runs a query under the configured timeout; a query over it is a 504 and stops consuming resources.
    async fn bounded<T>(
        &self,
        what: &str,
        query: impl Future<Output = Result<T, crate::query::QueryError>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.limits.query.timeout, query).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_limit() => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{what}: {e}"))),
            Ok(Err(e)) if e.is_bad_request() => Err(ApiError(StatusCode::BAD_REQUEST, e.to_string())),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "{what} failed");
                Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} failed: {e}")))
            }
            Err(_) => Err(ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{what} did not finish within {:?} (query_timeout)", self.limits.query.timeout),
            )),
        }
    }

    /// Refuses a response larger than `max_response_bytes`.
    fn sized(&self, body: Vec<u8>, content_type: &'static str) -> Response {
        let max = self.limits.query.max_response_bytes;
        if body.len() > max {
            return ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the response would be {} bytes, more than max_response_bytes ({max}); ask for fewer results",
                    body.len()
                ),
            )
            .into_response();
        }
        (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
    }

    /// Serialises `value` as JSON in chunks of [`CHUNK`] bytes (no single large buffer, no copies while it
    /// grows) and answers with them, or with 422 as soon as it passes `max_response_bytes`.
    fn json_chunked(&self, value: &impl serde::Serialize) -> Response {
        let max = self.limits.query.max_response_bytes;
        match ChunkWriter::serialize(value, max) {
            Ok(chunks) => self.chunked_answer(chunks),
            Err(e) => e.into_response(),
        }
    }

    /// `{"<key>":[items...]<rest>}`, where `rest` is JSON text such as `,"metrics":{...}` and `write` writes one
    /// item's JSON: the array's elements, the bulk of a large answer, are written on every core (a contiguous
    /// share each) and joined in order. On the benchmark's 100k-trace answer serialising took 0.5 s on one core.
    fn json_array_with<T: Sync>(
        &self,
        key: &'static str,
        items: &[T],
        write: impl Fn(&mut ChunkWriter, &T) -> std::io::Result<()> + Sync,
        rest: &str,
    ) -> Response {
        let max = self.limits.query.max_response_bytes;
        let started = std::time::Instant::now();
        let shares = crate::query::search::cores().min(items.len().div_ceil(2048)).max(1);
        let per = items.len().div_ceil(shares).max(1);
        let write = &write;
        let parts: Vec<Result<Vec<bytes::Bytes>, ApiError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .chunks(per)
                .map(|share| scope.spawn(move || ChunkWriter::write_items(share, max, write)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "encoding the response failed".into()))
                    })
                })
                .collect()
        });
        let mut chunks = vec![bytes::Bytes::from(format!("{{\"{key}\":["))];
        let mut total = 0usize;
        for part in parts {
            let part = match part {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            if part.iter().all(bytes::Bytes::is_empty) {
                continue;
            }
            if total > 0 {
                chunks.push(bytes::Bytes::from_static(b","));
            }
            total += part.iter().map(bytes::Bytes::len).sum::<usize>();
            chunks.extend(part.into_iter().filter(|c| !c.is_empty()));
        }
        chunks.push(bytes::Bytes::from(format!("]{rest}}}")));
        if total > max {
            return too_large(max).into_response();
        }
        tracing::debug!(bytes = total, ms = started.elapsed().as_secs_f64() * 1e3, shares, "JSON written");
        self.chunked_answer(chunks)
    }

    /// Answers with JSON chunks: one goes out whole, with its length; more are streamed.
    fn chunked_answer(&self, mut chunks: Vec<bytes::Bytes>) -> Response {
        let body = if chunks.len() == 1 {
            axum::body::Body::from(chunks.remove(0))
        } else {
            axum::body::Body::from_stream(futures::stream::iter(
                chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
            ))
        };
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Size of the pieces a large JSON answer is written in.
const CHUNK: usize = 1 << 20;

/// An `io::Write` that collects bytes in fixed-size chunks and refuses to grow past `max`.
struct ChunkWriter {
    chunks: Vec<bytes::Bytes>,
    current: Vec<u8>,
    max: usize,
    /// Set once a write was refused for `max`.
    over: bool,
}

/// The 422 for an answer over `max_response_bytes`.
fn too_large(max: usize) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("the response would be more than max_response_bytes ({max}) bytes; ask for fewer results"),
    )
}

impl ChunkWriter {
    /// `value` as JSON chunks, or the 422 once it passes `max` bytes.
    fn serialize(value: &impl serde::Serialize, max: usize) -> Result<Vec<bytes::Bytes>, ApiError> {
        let w = ChunkWriter { chunks: Vec::new(), current: Vec::with_capacity(4096), max, over: false };
        // The serializer owns the writer (not `&mut`): its `write_all` then inlines into every small write.
        let mut ser = serde_json::Serializer::new(w);
        let written = serde::Serialize::serialize(value, &mut ser);
        let mut w = ser.into_inner();
        match written {
            Ok(()) => {
                w.chunks.push(bytes::Bytes::from(w.current));
                Ok(w.chunks)
            }
            Err(_) if w.over => Err(too_large(max)),
            Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the response: {e}"))),
        }
    }

    /// `items` as comma-separated JSON (no brackets), each written by `write`, or the 422 once past `max` bytes.
    fn write_items<T>(
        items: &[T],
        max: usize,
        write: impl Fn(&mut ChunkWriter, &T) -> std::io::Result<()>,
    ) -> Result<Vec<bytes::Bytes>, ApiError> {
        use std::io::Write;
        let mut w = ChunkWriter { chunks: Vec::new(), current: Vec::with_capacity(CHUNK), max, over: false };
        for (i, item) in items.iter().enumerate() {
            let written = if i > 0 { w.write_all(b",") } else { Ok(()) }.and_then(|()| write(&mut w, item));
            if let Err(e) = written {
                return Err(match w.over {
                    true => too_large(max),
                    false => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the response: {e}")),
                });
            }
        }
        w.chunks.push(bytes::Bytes::from(w.current));
        Ok(w.chunks)
    }

    fn len(&self) -> usize {
        self.chunks.len() * CHUNK + self.current.len()
    }

    /// Fills the current chunk, starts new ones; the size limit is checked here, once per chunk.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        if self.len() + buf.len() > self.max {
            self.over = true;
            return Err(std::io::Error::other("response too large"));
        }
        while !buf.is_empty() {
            let take = (CHUNK - self.current.len()).min(buf.len());
            self.current.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.current.len() == CHUNK {
                let full = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK));
                self.chunks.push(bytes::Bytes::from(full));
            }
        }
        Ok(())
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    // serde_json writes a few bytes at a time, tens of millions of times for a large answer: the common case
    // (room left in the chunk) must be a bounds check and a copy.
    #[inline(always)]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.len() < CHUNK - self.current.len() {
            self.current.extend_from_slice(buf);
            Ok(())
        } else {
            self.spill(buf)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds the query API router.
pub fn router(
    querier: Arc<Querier>,
    ingester: Arc<Ingester>,
    metrics: Arc<Metrics>,
    generator: Option<Arc<crate::generate::Generator>>,
    query: QueryLimits,
    health: Arc<crate::telemetry::Health>,
) -> Router {
    let api =
        Api { querier, generator, ingester, metrics, health, limits: Limits { max_search_limit: 1_000_000, query } };
    Router::new()
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/flush", post(flush))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(search::search))
        .route("/api/search/stream", get(search::search_stream))
        .route("/api/sql", post(sql::sql))
        .route("/api/metrics/query_range", get(metrics::query_range))
        .route("/api/metrics/query", get(metrics::query_instant))
        .route("/api/search/tags", get(tags::tags_v1))
        .route("/api/v2/search/tags", get(tags::tags_v2))
        .route("/api/search/tag/{tag}/values", get(tags::tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tags::tag_values_v2))
        .merge(jaeger::routes())
        .merge(ui::routes())
        .with_state(api.clone())
        .merge(tonic::service::Routes::new(grpc::service(api)).into_axum_router())
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into()).into_response()
}

async fn buildinfo() -> Response {
    axum::Json(serde_json::json!({
        "version": TEMPO_COMPAT_VERSION,
        "revision": format!("strata-{}", env!("CARGO_PKG_VERSION")),
        "branch": "main",
        "buildUser": "strata",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

async fn ready(State(api): State<Api>) -> Response {
    if api.health.receiver_failed.load(std::sync::atomic::Ordering::Relaxed) {
        text(StatusCode::SERVICE_UNAVAILABLE, "a receiver stopped; restart the process")
    } else if !api.ingester.store_healthy() {
        text(StatusCode::SERVICE_UNAVAILABLE, "object storage is failing")
    } else if !api.querier.blocks_loaded() {
        text(StatusCode::SERVICE_UNAVAILABLE, "the block list has not been read from storage yet")
    } else {
        text(StatusCode::OK, "ready")
    }
}

async fn metrics_text(State(api): State<Api>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        api.metrics.encode_with(|out| {
            if let Some(g) = &api.generator {
                g.encode(out);
            }
        }),
    )
        .into_response()
}

async fn flush(State(api): State<Api>) -> Response {
    match api.ingester.flush().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// An error answer: status and a plain-text message.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        text(self.0, self.1)
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn tenant(headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let raw = headers.get("x-scope-orgid").map(|v| v.to_str().unwrap_or("\u{0}"));
    Tenant::parse(raw).map_err(|e| bad_request(e.to_string()))
}

/// Parses a time parameter: unix seconds (integer or fractional), unix nanoseconds, or RFC 3339.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        // Anything past year ~5000 in seconds is really nanoseconds (or ms/us: scale by magnitude).
        return match n {
            0..=99_999_999_999 => n.checked_mul(1_000_000_000),
            100_000_000_000..=99_999_999_999_999 => n.checked_mul(1_000_000),
            100_000_000_000_000..=99_999_999_999_999_999 => n.checked_mul(1_000),
            _ => Some(n),
        };
    }
    if let Ok(f) = s.parse::<f64>() {
        return (f.is_finite() && f >= 0.0 && f * 1e9 < u64::MAX as f64).then_some((f * 1e9) as u64);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/protobuf") || a.contains("application/x-protobuf"))
}

/// Shared front half of both trace endpoints: validate input, run the lookup.
async fn lookup(
    api: &Api,
    headers: &HeaderMap,
    id: &str,
    params: &HashMap<String, String>,
) -> Result<TraceResult, ApiError> {
    let tenant = tenant(headers)?;
    let id = TraceId::from_hex(id).map_err(|e| bad_request(format!("invalid trace ID: {e}")))?;
    // start/end are accepted and checked, but not used to narrow the search: blocks are found by trace ID (bloom
    // filters), so a trace is found even when the caller's time range misses it.
    search::time_range(params)?;
    match api.querier.trace_by_id(&tenant, id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(ApiError(StatusCode::NOT_FOUND, "trace not found".into())),
        Err(e) => {
            tracing::error!(error = %e, trace = %id, "trace lookup failed");
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("trace lookup failed: {e}")))
        }
    }
}

/// Which of Tempo's two trace-by-ID shapes to answer with.
#[derive(Clone, Copy)]
enum TraceApi {
    V1,
    V2,
}

async fn trace_v1(
    state: State<Api>,
    headers: HeaderMap,
    id: Path<String>,
    params: Query<HashMap<String, String>>,
) -> Response {
    trace_by_id(TraceApi::V1, state, headers, id, params).await
}

async fn trace_v2(
    state: State<Api>,
    headers: HeaderMap,
    id: Path<String>,
    params: Query<HashMap<String, String>>,
) -> Response {
    trace_by_id(TraceApi::V2, state, headers, id, params).await
}

async fn trace_by_id(
    version: TraceApi,
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let t = match lookup(&api, &headers, &id, &params).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let trace = tempopb::Trace { resource_spans: t.resource_spans };
    // v2 says when a block could not be read (Tempo's PARTIAL); v1 has no field for it.
    let (status, message) = match t.partial {
        Some(m) => (tempopb::PartialStatus::Partial, m),
        None => (tempopb::PartialStatus::Complete, String::new()),
    };
    if wants_protobuf(&headers) {
        let body = match version {
            TraceApi::V1 => trace.encode_to_vec(),
            TraceApi::V2 => tempopb::TraceByIdResponse {
                trace: Some(trace),
                metrics: Some(tempopb::TraceByIdMetrics::default()),
                status: status as i32,
                message,
            }
            .encode_to_vec(),
        };
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/protobuf")], body).into_response();
    }
    api.json_chunked(&TraceJson {
        version,
        spans: json::ResourceSpansJson(&trace.resource_spans),
        partial: status == tempopb::PartialStatus::Partial,
        message: &message,
    })
}

/// `{"batches":[...]}` (v1) or `{"trace":{"resourceSpans":[...]},"metrics":{}}` (v2, with Tempo's `PARTIAL`
/// status and message when a block could not be read).
struct TraceJson<'a> {
    version: TraceApi,
    spans: json::ResourceSpansJson<'a>,
    partial: bool,
    message: &'a str,
}

impl serde::Serialize for TraceJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Wrapped<'a>(&'a json::ResourceSpansJson<'a>);
        impl serde::Serialize for Wrapped<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("resourceSpans", self.0)?;
                m.end()
            }
        }
        let mut m = s.serialize_map(None)?;
        match self.version {
            TraceApi::V1 => m.serialize_entry("batches", &self.spans)?,
            TraceApi::V2 => {
                m.serialize_entry("trace", &Wrapped(&self.spans))?;
                m.serialize_entry("metrics", &serde_json::Map::new())?;
                if self.partial {
                    m.serialize_entry("status", "PARTIAL")?;
                    m.serialize_entry("message", self.message)?;
                }
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn time_parameters() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000000000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("99999999999"), None, "seconds past u64 nanoseconds overflow cleanly");
        assert_eq!(parse_time("1e300"), None);
    }
}
