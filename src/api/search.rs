//! `GET /api/search`: Tempo's search endpoint (TraceQL `q`, or the legacy `tags`/`minDuration`/`maxDuration`),
//! answered as `tempopb.SearchResponse` in protobuf or in the proto3 JSON Grafana decodes strictly.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;
use query_lang::{Body, ValidationError};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{Api, ApiError, bad_request, parse_time, tempopb, tenant, wants_protobuf};
use crate::query::search::{SearchRequest, SearchResult, SearchStats, SpanHit, SpansetHit, TraceHit};

pub const DEFAULT_LIMIT: usize = 20;
pub const DEFAULT_SPSS: usize = 3;

/// Parses and validates a search query; errors are 400s that quote the parser's message and position.
pub fn parse_search(q: &str) -> Result<query_lang::Pipeline, ApiError> {
    let parsed = query_lang::parse(q).map_err(|e| bad_request(format!("invalid TraceQL query: {e}")))?;
    match query_lang::validate(&parsed) {
        Ok(()) => {}
        Err(ValidationError::Unsupported(m)) => {
            return Err(bad_request(format!("unsupported TraceQL: {m} is not supported yet")));
        }
        Err(e) => return Err(bad_request(format!("invalid TraceQL query: {e}"))),
    }
    match parsed.body {
        Body::Spans(p) => Ok(p),
        Body::Metrics(_) => Err(bad_request("metrics queries are answered by /api/metrics/query_range, not by search")),
    }
}

pub(super) fn number(
    params: &HashMap<String, String>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(0) => Ok(default),
            Ok(n) if n <= max as u64 => Ok(n as usize),
            Ok(_) => Err(bad_request(format!("{key} must be at most {max}"))),
            Err(_) => Err(bad_request(format!("invalid {key} parameter {v:?}: expected a positive integer"))),
        },
    }
}

/// The time range of a request, validated.
pub fn time_range(params: &HashMap<String, String>) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let mut range = [None, None];
    for (i, key) in ["start", "end"].iter().enumerate() {
        if let Some(v) = params.get(*key).filter(|v| !v.trim().is_empty()) {
            range[i] = Some(parse_time(v).ok_or_else(|| bad_request(format!("invalid {key} parameter {v:?}")))?);
        }
    }
    if let [Some(s), Some(e)] = range
        && s > e
    {
        return Err(bad_request("invalid time range: start is after end"));
    }
    Ok((range[0], range[1]))
}

/// The TraceQL equivalent of Tempo's legacy search parameters (HTTP form).
fn legacy_query(params: &HashMap<String, String>) -> Result<String, ApiError> {
    let tags = match params.get("tags") {
        Some(t) => logfmt(t).map_err(bad_request)?,
        None => Vec::new(),
    };
    let mut durations = [None, None];
    for (i, key) in ["minDuration", "maxDuration"].iter().enumerate() {
        if let Some(v) = params.get(*key).filter(|v| !v.trim().is_empty()) {
            let d = humantime::parse_duration(v.trim())
                .map_err(|e| bad_request(format!("invalid {key} parameter {v:?}: {e}")))?;
            durations[i] = Some(d);
        }
    }
    legacy_traceql(&tags, durations[0], durations[1])
}

/// Legacy tag search as TraceQL: each tag an attribute condition (`name` and `status.code` are the span's),
/// and the duration bounds on the trace's duration.
pub(super) fn legacy_traceql(
    tags: &[(String, String)],
    min: Option<std::time::Duration>,
    max: Option<std::time::Duration>,
) -> Result<String, ApiError> {
    let mut conds: Vec<String> = Vec::new();
    for (k, v) in tags {
        let value = query_lang::quote_string(v);
        conds.push(match k.as_str() {
            "name" => format!("name = {value}"),
            "status.code" | "status" => match v.as_str() {
                "ok" | "error" | "unset" => format!("status = {v}"),
                _ => return Err(bad_request(format!("invalid status {v:?}: use ok, error or unset"))),
            },
            _ => format!(".{} = {value}", query_lang::quote_attribute(k)),
        });
    }
    if let Some(d) = min {
        conds.push(format!("traceDuration >= {}ns", d.as_nanos()));
    }
    if let Some(d) = max {
        conds.push(format!("traceDuration <= {}ns", d.as_nanos()));
    }
    Ok(format!("{{ {} }}", conds.join(" && ")))
}

/// `key=value key2="quoted value"` pairs.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!("invalid tags parameter: expected key=value near {key:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err("invalid tags parameter: unterminated quote".into()),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        out.push((key, value));
    }
}

pub(super) async fn search(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match run(&api, &headers, &params).await {
        Ok(r) => {
            let response = render(&api, &headers, &r);
            // Freeing tens of thousands of hits takes a while: not on the answer's path.
            if r.traces.len() > 1000 {
                tokio::task::spawn_blocking(move || drop(r));
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn run(api: &Api, headers: &HeaderMap, params: &HashMap<String, String>) -> Result<SearchResult, ApiError> {
    let (tenant, req) = request(api, headers, params)?;
    api.bounded("search", api.querier.search(&tenant, &req)).await
}

/// A search request's tenant and engine request, validated.
fn request(
    api: &Api,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(crate::model::Tenant, SearchRequest), ApiError> {
    let tenant = tenant(headers)?;
    let limit = number(params, "limit", DEFAULT_LIMIT, api.limits.max_search_limit)?;
    let spss = number(params, "spss", DEFAULT_SPSS, api.limits.max_search_limit)?;
    let (start, end) = time_range(params)?;
    let q = match params.get("q").map(|q| q.trim()).filter(|q| !q.is_empty()) {
        Some(q) => q.to_string(),
        None => legacy_query(params)?,
    };
    let pipeline = parse_search(&q)?;
    Ok((tenant, SearchRequest { pipeline, limit, spans_per_spanset: spss, start, end }))
}

/// `GET /api/search/stream` (Strata's own; the web UI uses it): the same search and parameters, answered as
/// newline-delimited JSON while it runs. Each line is a Tempo `SearchResponse`: the traces that became certain
/// as blocks completed (progress in `metrics.completedJobs` / `totalJobs`), the last line the rest of the answer;
/// merged and ordered newest first they are exactly `/api/search`'s traces. A failure after the first line is a
/// last line `{"error":"..."}`.
pub(super) async fn search_stream(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (tenant, req) = match request(&api, &headers, &params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let last_word = tx.clone();
    let worker = tokio::spawn(async move {
        let max = api.limits.query.max_response_bytes;
        let mut written = 0usize;
        let mut sent = std::collections::HashSet::new();
        let progress_tx = tx.clone();
        let mut progress = |hits: Vec<TraceHit>, stats: &SearchStats| {
            let hits: Vec<&TraceHit> = hits.iter().collect();
            let line = ndjson_line(&hits, stats);
            let len = line.len();
            // A slow reader's full channel skips this line: its traces go in the last one.
            if written + len <= max && progress_tx.try_send(line).is_ok() {
                written += len;
                sent.extend(hits.iter().map(|h| h.trace_id));
            }
        };
        let timeout = api.limits.query.timeout;
        let search = tokio::time::timeout(timeout, api.querier.search_streaming(&tenant, &req, &mut progress));
        // A reader that went away (the UI cancels searches it no longer shows) stops the search.
        let result = tokio::select! {
            r = search => r,
            () = tx.closed() => return,
        };
        let last = match result {
            Ok(Ok(r)) => {
                let rest: Vec<&TraceHit> = r.traces.iter().filter(|h| !sent.contains(&h.trace_id)).collect();
                let line = ndjson_line(&rest, &r.stats);
                if written + line.len() > max {
                    error_line(&format!(
                        "the response would be more than max_response_bytes ({max}); ask for fewer results"
                    ))
                } else {
                    line
                }
            }
            Ok(Err(e)) => error_line(&format!("search failed: {e}")),
            Err(_) => error_line(&format!("search did not finish within {timeout:?} (query_timeout)")),
        };
        let _ = tx.send(last).await;
    });
    // A search that panicked still ends its stream with an error line.
    tokio::spawn(async move {
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "a streamed search stopped");
            let _ = last_word.send(error_line("search failed")).await;
        }
    });
    use futures::StreamExt;
    let body = axum::body::Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    (axum::http::StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn ndjson_line(traces: &[&TraceHit], stats: &SearchStats) -> bytes::Bytes {
    use std::io::Write;
    let metrics = metrics_proto(stats);
    let mut out = b"{\"traces\":[".to_vec();
    let written = traces
        .iter()
        .enumerate()
        .try_for_each(|(i, t)| if i > 0 { out.write_all(b",") } else { Ok(()) }.and_then(|()| write_trace(&mut out, t)))
        .and_then(|()| out.write_all(b"],\"metrics\":"))
        .and_then(|()| serde_json::to_writer(&mut out, &MetricsJson(&metrics)).map_err(std::io::Error::other))
        .and_then(|()| out.write_all(b"}"));
    if let Err(e) = written {
        out = serde_json::to_vec(&serde_json::json!({ "error": e.to_string() })).unwrap_or_default();
    }
    out.push(b'\n');
    bytes::Bytes::from(out)
}

fn error_line(msg: &str) -> bytes::Bytes {
    let mut out = serde_json::to_vec(&serde_json::json!({ "error": msg })).unwrap_or_default();
    out.push(b'\n');
    bytes::Bytes::from(out)
}

/// The SearchResponse in protobuf, or in the proto3 JSON Tempo emits: lowerCamel names, 64-bit integers as
/// strings, zero values omitted, and nothing outside Tempo's messages (Grafana rejects unknown fields). JSON is
/// serialised straight from the search result: a tree of `serde_json::Value`s (or a copy as proto messages) for
/// 50k traces cost more than the search itself.
fn render(api: &Api, headers: &HeaderMap, r: &SearchResult) -> Response {
    if wants_protobuf(headers) {
        return api.sized(to_proto(r).encode_to_vec(), "application/protobuf");
    }
    let metrics = metrics_proto(&r.stats);
    let rest = match serde_json::to_string(&MetricsJson(&metrics)) {
        Ok(m) => format!(",\"metrics\":{m}"),
        Err(e) => {
            return ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the response: {e}"))
                .into_response();
        }
    };
    api.json_array_with("traces", &r.traces, write_trace, &rest)
}

/// Hex trace ID with leading zeros stripped, as Tempo prints it in search results.
fn short_hex(id: &crate::model::TraceId) -> String {
    trimmed_hex(id, &mut [0u8; 32]).to_string()
}

/// [`short_hex`] written into `buf`.
fn trimmed_hex<'b>(id: &crate::model::TraceId, buf: &'b mut [u8; 32]) -> &'b str {
    // Cannot fail: 16 bytes fill 32 hex digits, and hex digits are UTF-8.
    let hex = hex::encode_to_slice(id.0, buf).ok().and_then(|()| std::str::from_utf8(buf).ok()).unwrap_or("");
    match hex.trim_start_matches('0') {
        "" => "0",
        t => t,
    }
}

pub(super) fn trace_meta(t: &TraceHit) -> tempopb::TraceSearchMetadata {
    let span_sets: Vec<tempopb::SpanSet> = t
        .spansets
        .iter()
        .map(|s| tempopb::SpanSet {
            spans: s
                .spans
                .iter()
                .map(|sp| tempopb::Span {
                    span_id: hex::encode(sp.span_id),
                    name: sp.name.to_string(),
                    start_time_unix_nano: sp.start_unix_nano,
                    duration_nanos: sp.duration_nanos,
                    attributes: sp.attributes.clone(),
                })
                .collect(),
            matched: s.matched,
            attributes: s.attributes.clone(),
        })
        .collect();
    tempopb::TraceSearchMetadata {
        trace_id: short_hex(&t.trace_id),
        root_service_name: t.root_service_name.to_string(),
        root_trace_name: t.root_trace_name.as_deref().unwrap_or_default().to_string(),
        start_time_unix_nano: t.start_unix_nano,
        duration_ms: u32::try_from(t.duration_nanos / 1_000_000).unwrap_or(u32::MAX),
        span_set: span_sets.first().cloned(),
        span_sets,
        service_stats: t
            .service_stats
            .iter()
            .map(|(k, (n, e))| (k.to_string(), tempopb::ServiceStats { span_count: *n, error_count: *e }))
            .collect(),
    }
}

pub(super) fn to_proto(r: &SearchResult) -> tempopb::SearchResponse {
    tempopb::SearchResponse {
        traces: r.traces.iter().map(trace_meta).collect(),
        metrics: Some(metrics_proto(&r.stats)),
    }
}

pub(super) fn metrics_proto(s: &SearchStats) -> tempopb::SearchMetrics {
    tempopb::SearchMetrics {
        inspected_traces: u32::try_from(s.inspected_traces).unwrap_or(u32::MAX),
        inspected_bytes: s.inspected_bytes,
        total_blocks: s.total_blocks,
        completed_jobs: s.completed_jobs,
        total_jobs: s.total_jobs,
        total_block_bytes: s.total_block_bytes,
        inspected_spans: s.inspected_spans,
        // Newer than the Tempo revision Grafana pins: left at zero, so never encoded.
        backend_reads: 0,
        backend_bytes: 0,
        additional_metrics: Default::default(),
    }
}

/// 64-bit integers are strings in proto3 JSON; written without an intermediate `String`.
pub(super) struct Str64(pub u64);

impl Serialize for Str64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Formatted on the stack: `collect_str` runs the escaper over each piece `fmt` writes.
        s.serialize_str(itoa::Buffer::new().format(self.0))
    }
}

/// An OTLP value in proto3 JSON (64-bit ints as strings).
struct AnyJson<'a>(&'a AnyValue);

impl Serialize for AnyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match &self.0.value {
            Some(Value::StringValue(v)) => m.serialize_entry("stringValue", v)?,
            Some(Value::IntValue(v)) => m.serialize_entry("intValue", &StrI64(*v))?,
            Some(Value::DoubleValue(v)) => m.serialize_entry("doubleValue", v)?,
            Some(Value::BoolValue(v)) => m.serialize_entry("boolValue", v)?,
            Some(Value::ArrayValue(a)) => m.serialize_entry("arrayValue", &ArrayJson(&a.values))?,
            _ => {}
        }
        m.end()
    }
}

/// A signed 64-bit integer as a proto3 JSON string.
pub(super) struct StrI64(pub i64);

impl Serialize for StrI64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(itoa::Buffer::new().format(self.0))
    }
}

struct ArrayJson<'a>(&'a [AnyValue]);

impl Serialize for ArrayJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("values", &Seq(self.0.iter().map(AnyJson)))?;
        m.end()
    }
}

/// Serialises an iterator as a JSON array without collecting it.
pub(super) struct Seq<I>(pub I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// OTLP key-values in proto3 JSON.
pub struct AttributesJson<'a>(pub &'a [KeyValue]);

impl Serialize for AttributesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(KeyValueJson))
    }
}

struct KeyValueJson<'a>(&'a KeyValue);

impl Serialize for KeyValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let empty = AnyValue { value: None };
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", &self.0.key)?;
        m.serialize_entry("value", &AnyJson(self.0.value.as_ref().unwrap_or(&empty)))?;
        m.end()
    }
}

/// Writes one JSON object a field at a time. Keys, hex IDs and decimal numbers need no escaping and are copied
/// as they are; strings and nested values go through serde_json. A search answer is millions of such fields
/// (109 MB for 100k traces), and serde's map serialiser escaped every key and number anew.
struct Obj<'w, W: std::io::Write> {
    w: &'w mut W,
    first: bool,
}

impl<'w, W: std::io::Write> Obj<'w, W> {
    fn new(w: &'w mut W) -> std::io::Result<Self> {
        w.write_all(b"{")?;
        Ok(Obj { w, first: true })
    }

    fn key(&mut self, key: &str) -> std::io::Result<()> {
        self.w.write_all(if std::mem::take(&mut self.first) { b"\"" } else { b",\"" })?;
        self.w.write_all(key.as_bytes())?;
        self.w.write_all(b"\":")
    }

    /// `"value"`, for text known to need no escaping (hex, decimal digits).
    fn plain(&mut self, key: &str, value: &str) -> std::io::Result<()> {
        self.key(key)?;
        self.w.write_all(b"\"")?;
        self.w.write_all(value.as_bytes())?;
        self.w.write_all(b"\"")
    }

    /// A 32-bit integer: a JSON number.
    fn u32(&mut self, key: &str, value: u32) -> std::io::Result<()> {
        self.key(key)?;
        self.w.write_all(itoa::Buffer::new().format(value).as_bytes())
    }

    /// A proto3 JSON 64-bit integer: a decimal string.
    fn u64(&mut self, key: &str, value: u64) -> std::io::Result<()> {
        self.plain(key, itoa::Buffer::new().format(value))
    }

    fn value(&mut self, key: &str, value: &impl Serialize) -> std::io::Result<()> {
        self.key(key)?;
        serde_json::to_writer(&mut *self.w, value).map_err(std::io::Error::other)
    }

    /// Already serialised JSON.
    fn raw(&mut self, key: &str, json: &[u8]) -> std::io::Result<()> {
        self.key(key)?;
        self.w.write_all(json)
    }

    fn end(self) -> std::io::Result<()> {
        self.w.write_all(b"}")
    }
}

fn write_spanset(w: &mut impl std::io::Write, x: &SpansetHit) -> std::io::Result<()> {
    let mut o = Obj::new(w)?;
    if !x.spans.is_empty() {
        o.key("spans")?;
        for (i, span) in x.spans.iter().enumerate() {
            o.w.write_all(if i == 0 { b"[" } else { b"," })?;
            write_span(o.w, span)?;
        }
        o.w.write_all(b"]")?;
    }
    if x.matched != 0 {
        o.u32("matched", x.matched)?;
    }
    if !x.attributes.is_empty() {
        o.value("attributes", &AttributesJson(&x.attributes))?;
    }
    o.end()
}

fn write_span(w: &mut impl std::io::Write, x: &SpanHit) -> std::io::Result<()> {
    let mut o = Obj::new(w)?;
    let mut hex = [0u8; 16];
    hex::encode_to_slice(x.span_id, &mut hex).map_err(std::io::Error::other)?;
    o.plain("spanID", std::str::from_utf8(&hex).map_err(std::io::Error::other)?)?;
    if !x.name.is_empty() {
        o.value("name", &&*x.name)?;
    }
    if x.start_unix_nano != 0 {
        o.u64("startTimeUnixNano", x.start_unix_nano)?;
    }
    if x.duration_nanos != 0 {
        o.u64("durationNanos", x.duration_nanos)?;
    }
    if !x.attributes.is_empty() {
        o.value("attributes", &AttributesJson(&x.attributes))?;
    }
    o.end()
}

/// Writes one trace of a SearchResponse. `spanSet` (deprecated, kept for Grafana 9) repeats `spanSets[0]`: the
/// span set is serialised once and its bytes written twice (the spans are most of a large answer).
pub(super) fn write_trace(w: &mut impl std::io::Write, t: &TraceHit) -> std::io::Result<()> {
    let mut hex = [0u8; 32];
    let id = trimmed_hex(&t.trace_id, &mut hex);
    let root_name = t.root_trace_name.as_deref().unwrap_or("");
    let duration_ms = u32::try_from(t.duration_nanos / 1_000_000).unwrap_or(u32::MAX);
    let mut o = Obj::new(w)?;
    o.plain("traceID", id)?;
    if !t.root_service_name.is_empty() {
        o.value("rootServiceName", &&*t.root_service_name)?;
    }
    if !root_name.is_empty() {
        o.value("rootTraceName", &root_name)?;
    }
    if t.start_unix_nano != 0 {
        o.u64("startTimeUnixNano", t.start_unix_nano)?;
    }
    if duration_ms != 0 {
        o.u32("durationMs", duration_ms)?;
    }
    if let Some((set, others)) = t.spansets.split_first() {
        let mut first = Vec::with_capacity(512);
        write_spanset(&mut first, set)?;
        o.raw("spanSet", &first)?;
        o.raw("spanSets", b"[")?;
        o.w.write_all(&first)?;
        for other in others {
            o.w.write_all(b",")?;
            write_spanset(o.w, other)?;
        }
        o.w.write_all(b"]")?;
    }
    if !t.service_stats.is_empty() {
        o.value("serviceStats", &StatsJson(&t.service_stats))?;
    }
    o.end()
}

/// Service name -> stats, in name order (the search sorts them).
struct StatsJson<'a>(&'a [(std::sync::Arc<str>, (u32, u32))]);

impl Serialize for StatsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, (spans, errors)) in self.0 {
            m.serialize_entry(&**name, &ServiceStatsJson(*spans, *errors))?;
        }
        m.end()
    }
}

struct ServiceStatsJson(u32, u32);

impl Serialize for ServiceStatsJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        put!(m, "spanCount", self.0, self.0 == 0);
        put!(m, "errorCount", self.1, self.1 == 0);
        m.end()
    }
}

pub(super) struct MetricsJson<'a>(pub &'a tempopb::SearchMetrics);

impl Serialize for MetricsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        put!(m, "inspectedTraces", x.inspected_traces, x.inspected_traces == 0);
        put!(m, "inspectedBytes", Str64(x.inspected_bytes), x.inspected_bytes == 0);
        put!(m, "totalBlocks", x.total_blocks, x.total_blocks == 0);
        put!(m, "completedJobs", x.completed_jobs, x.completed_jobs == 0);
        put!(m, "totalJobs", x.total_jobs, x.total_jobs == 0);
        put!(m, "totalBlockBytes", Str64(x.total_block_bytes), x.total_block_bytes == 0);
        put!(m, "inspectedSpans", Str64(x.inspected_spans), x.inspected_spans == 0);
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_pairs() {
        assert_eq!(
            logfmt(r#"service.name=shop  name="GET /cart" x=a\b"#).unwrap(),
            vec![
                ("service.name".to_string(), "shop".to_string()),
                ("name".to_string(), "GET /cart".to_string()),
                ("x".to_string(), r"a\b".to_string())
            ]
        );
        assert!(logfmt("novalue").is_err());
        assert!(logfmt(r#"a="open"#).is_err());
    }

    #[test]
    fn legacy_parameters_become_traceql() {
        let p: HashMap<String, String> = [
            ("tags".to_string(), r#"service.name=shop name="GET /" status.code=error"#.to_string()),
            ("minDuration".to_string(), "100ms".to_string()),
        ]
        .into();
        let q = legacy_query(&p).unwrap();
        assert_eq!(
            q,
            r#"{ ."service.name" = "shop" && name = "GET /" && status = error && traceDuration >= 100000000ns }"#
        );
        assert!(parse_search(&q).is_ok());
    }
}
