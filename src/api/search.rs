//! `GET /api/search`: Tempo's search endpoint (TraceQL `q`, or the legacy `tags`/`minDuration`/`maxDuration`),
//! answered as `tempopb.SearchResponse` in protobuf or in the proto3 JSON Grafana decodes strictly.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;
use query_lang::{Body, ValidationError};
use serde_json::{Map, Value as Json, json};

use super::{Api, ApiError, bad_request, parse_time, tempopb, tenant, wants_protobuf};
use crate::query::search::{SearchRequest, SearchResult, SearchStats, TraceHit};

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
            _ => format!(".{} = {value}", query_lang::quote_string(k)),
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
        Ok(r) => render(&api, &headers, &r),
        Err(e) => e.into_response(),
    }
}

async fn run(api: &Api, headers: &HeaderMap, params: &HashMap<String, String>) -> Result<SearchResult, ApiError> {
    let tenant = tenant(headers)?;
    let limit = number(params, "limit", DEFAULT_LIMIT, api.limits.max_search_limit)?;
    let spss = number(params, "spss", DEFAULT_SPSS, api.limits.max_search_limit)?;
    let (start, end) = time_range(params)?;
    let q = match params.get("q").map(|q| q.trim()).filter(|q| !q.is_empty()) {
        Some(q) => q.to_string(),
        None => legacy_query(params)?,
    };
    let pipeline = parse_search(&q)?;
    let req = SearchRequest { pipeline, limit, spans_per_spanset: spss, start, end };
    api.bounded("search", api.querier.search(&tenant, &req)).await
}

fn render(api: &Api, headers: &HeaderMap, r: &SearchResult) -> Response {
    let msg = to_proto(r);
    if wants_protobuf(headers) {
        return api.sized(msg.encode_to_vec(), "application/protobuf");
    }
    match serde_json::to_vec(&response_json(&msg)) {
        Ok(body) => api.sized(body, "application/json"),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the response: {e}")).into_response(),
    }
}

/// Hex trace ID with leading zeros stripped, as Tempo prints it in search results.
fn short_hex(id: &crate::model::TraceId) -> String {
    let h = id.to_hex();
    let t = h.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
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
                    span_id: hex::encode(&sp.span_id),
                    name: sp.name.clone(),
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
        root_service_name: t.root_service_name.clone(),
        root_trace_name: t.root_trace_name.clone().unwrap_or_default(),
        start_time_unix_nano: t.start_unix_nano,
        duration_ms: u32::try_from(t.duration_nanos / 1_000_000).unwrap_or(u32::MAX),
        span_set: span_sets.first().cloned(),
        span_sets,
        service_stats: t
            .service_stats
            .iter()
            .map(|(k, (n, e))| (k.clone(), tempopb::ServiceStats { span_count: *n, error_count: *e }))
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

/// Inserts `key` unless the value is proto3's default (zero, empty), which proto3 JSON omits.
fn put(m: &mut Map<String, Json>, key: &str, v: Json) {
    let default = match &v {
        Json::String(s) => s.is_empty() || s == "0",
        Json::Number(n) => n.as_u64() == Some(0),
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
        Json::Null => true,
        Json::Bool(b) => !b,
    };
    if !default {
        m.insert(key.into(), v);
    }
}

/// An OTLP value in proto3 JSON (64-bit ints as strings).
pub fn any_value_json(v: &AnyValue) -> Json {
    match &v.value {
        Some(Value::StringValue(s)) => json!({ "stringValue": s }),
        Some(Value::IntValue(i)) => json!({ "intValue": i.to_string() }),
        Some(Value::DoubleValue(d)) => json!({ "doubleValue": d }),
        Some(Value::BoolValue(b)) => json!({ "boolValue": b }),
        Some(Value::ArrayValue(a)) => {
            json!({ "arrayValue": { "values": a.values.iter().map(any_value_json).collect::<Vec<_>>() } })
        }
        _ => json!({}),
    }
}

pub fn attributes_json(attrs: &[KeyValue]) -> Json {
    Json::Array(
        attrs
            .iter()
            .map(|kv| {
                json!({ "key": kv.key, "value": kv.value.as_ref().map(any_value_json).unwrap_or_else(|| json!({})) })
            })
            .collect(),
    )
}

fn spanset_json(s: &tempopb::SpanSet) -> Json {
    let spans: Vec<Json> = s
        .spans
        .iter()
        .map(|sp| {
            let mut m = Map::new();
            put(&mut m, "spanID", json!(sp.span_id));
            put(&mut m, "name", json!(sp.name));
            put(&mut m, "startTimeUnixNano", json!(sp.start_time_unix_nano.to_string()));
            put(&mut m, "durationNanos", json!(sp.duration_nanos.to_string()));
            put(&mut m, "attributes", attributes_json(&sp.attributes));
            Json::Object(m)
        })
        .collect();
    let mut m = Map::new();
    put(&mut m, "spans", Json::Array(spans));
    put(&mut m, "matched", json!(s.matched));
    put(&mut m, "attributes", attributes_json(&s.attributes));
    Json::Object(m)
}

/// The SearchResponse in the proto3 JSON Tempo emits: lowerCamel names, 64-bit integers as strings, zero values
/// omitted, and nothing outside Tempo's messages (Grafana rejects unknown fields).
pub fn response_json(r: &tempopb::SearchResponse) -> Json {
    let traces: Vec<Json> = r
        .traces
        .iter()
        .map(|t| {
            let mut m = Map::new();
            put(&mut m, "traceID", json!(t.trace_id));
            put(&mut m, "rootServiceName", json!(t.root_service_name));
            put(&mut m, "rootTraceName", json!(t.root_trace_name));
            put(&mut m, "startTimeUnixNano", json!(t.start_time_unix_nano.to_string()));
            put(&mut m, "durationMs", json!(t.duration_ms));
            if let Some(s) = &t.span_set {
                m.insert("spanSet".into(), spanset_json(s));
            }
            put(&mut m, "spanSets", Json::Array(t.span_sets.iter().map(spanset_json).collect()));
            let mut stats: Vec<(&String, &tempopb::ServiceStats)> = t.service_stats.iter().collect();
            stats.sort_by(|a, b| a.0.cmp(b.0));
            let stats: Map<String, Json> = stats
                .into_iter()
                .map(|(k, v)| {
                    let mut s = Map::new();
                    put(&mut s, "spanCount", json!(v.span_count));
                    put(&mut s, "errorCount", json!(v.error_count));
                    (k.clone(), Json::Object(s))
                })
                .collect();
            put(&mut m, "serviceStats", Json::Object(stats));
            Json::Object(m)
        })
        .collect();
    let mut metrics = Map::new();
    if let Some(x) = &r.metrics {
        put(&mut metrics, "inspectedTraces", json!(x.inspected_traces));
        put(&mut metrics, "inspectedBytes", json!(x.inspected_bytes.to_string()));
        put(&mut metrics, "totalBlocks", json!(x.total_blocks));
        put(&mut metrics, "completedJobs", json!(x.completed_jobs));
        put(&mut metrics, "totalJobs", json!(x.total_jobs));
        put(&mut metrics, "totalBlockBytes", json!(x.total_block_bytes.to_string()));
        put(&mut metrics, "inspectedSpans", json!(x.inspected_spans.to_string()));
    }
    json!({ "traces": traces, "metrics": metrics })
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
