//! Jaeger's query API (the JSON API Jaeger UI and Grafana's Jaeger data source call) under `/jaeger/api/`: its
//! paths would collide with Tempo's `/api/traces/<id>`. Searches run on the same engine as TraceQL: the form's
//! service, operation, tags and durations become one spanset filter, so a trace matches when one of its spans
//! meets them all, as in Jaeger. Traces are converted from OTLP the way the OpenTelemetry Collector's Jaeger
//! translator does (resource -> process, scope/kind/status -> tags, events -> logs, parent and links ->
//! references), and answered in Jaeger's UI model (IDs in hex, times in microseconds).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use futures::StreamExt;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, status::StatusCode as OtlpStatus};
use serde::Serialize;

use super::search::parse_search;
use super::{Api, ApiError, tenant};
use crate::model::TraceId;
use crate::query::search::SearchRequest;
use crate::query::tags::TagRequest;

/// The link attribute holding a Jaeger reference's type (`child_of` / `follows_from`), the Collector's name.
const REF_TYPE_ATTR: &str = "opentracing.ref_type";

/// Jaeger's default number of traces a search returns.
const DEFAULT_LIMIT: usize = 100;
/// The most traces (or `traceID`s) one search may ask for: each is fetched whole (Jaeger UI offers up to 1500).
const MAX_LIMIT: usize = 1500;
/// Jaeger's default dependencies window.
const DEFAULT_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// Traces fetched at once to fill a search answer.
const FETCH_CONCURRENCY: usize = 8;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route("/jaeger/api/services/{service}/operations", get(service_operations))
        .route("/jaeger/api/operations", get(operations))
        .route("/jaeger/api/traces", get(find_traces))
        .route("/jaeger/api/traces/{id}", get(trace))
        .route("/jaeger/api/dependencies", get(dependencies))
}

/// Jaeger's `structuredResponse`.
#[derive(Serialize)]
struct Envelope<T> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<JaegerError>>,
}

#[derive(Serialize)]
struct JaegerError {
    #[serde(skip_serializing_if = "is_zero")]
    code: u16,
    msg: String,
    #[serde(rename = "traceID", skip_serializing_if = "String::is_empty")]
    trace_id: String,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

fn envelope<T: Serialize>(api: &Api, data: T, total: usize, errors: Option<Vec<JaegerError>>) -> Response {
    // Over max_response_bytes, the 422 is in Jaeger's envelope too.
    match super::ChunkWriter::serialize(
        &Envelope { data, total, limit: 0, offset: 0, errors },
        api.limits.query.max_response_bytes,
    ) {
        Ok(chunks) => api.chunked_answer(chunks),
        Err(e) => failure(e),
    }
}

/// An error in Jaeger's shape: `{"data":null,...,"errors":[{"code","msg"}]}` with the same HTTP status.
fn failure(e: ApiError) -> Response {
    let ApiError(status, msg) = e;
    let body = Envelope::<Option<()>> {
        data: None,
        total: 0,
        limit: 0,
        offset: 0,
        errors: Some(vec![JaegerError { code: status.as_u16(), msg, trace_id: String::new() }]),
    };
    (status, axum::Json(body)).into_response()
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn services(State(api): State<Api>, headers: HeaderMap) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let field = service_field();
        let req = TagRequest { start: None, end: None, narrow: None, limit: usize::MAX };
        api.bounded("services", api.querier.tag_values(&tenant, &field, &req)).await
    };
    match run.await {
        Ok(values) => {
            let names: Vec<String> = values.into_iter().map(|v| v.value).collect();
            let total = names.len();
            envelope(&api, names, total, None)
        }
        Err(e) => failure(e),
    }
}

fn service_field() -> query_lang::Field {
    query_lang::Field::Attribute(query_lang::Attribute::new(query_lang::Scope::Resource, "service.name"))
}

async fn service_operations(State(api): State<Api>, headers: HeaderMap, Path(service): Path<String>) -> Response {
    match operation_list(&api, &headers, &service).await {
        Ok(ops) => {
            let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
            names.dedup();
            let total = names.len();
            envelope(&api, names, total, None)
        }
        Err(e) => failure(e),
    }
}

#[derive(Serialize)]
struct OperationJson {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: &'static str,
}

async fn operations(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let service =
            params.get("service").filter(|s| !s.is_empty()).ok_or_else(|| bad("parameter 'service' is required"))?;
        let kind = match params.get("spanKind").map(String::as_str).filter(|k| !k.is_empty()) {
            None => None,
            Some(k) => Some(
                (0..=5)
                    .find(|n| kind_name(*n) == k)
                    .ok_or_else(|| bad(format!("unable to parse param 'spanKind': unsupported span kind: '{k}'")))?,
            ),
        };
        let ops = operation_list(&api, &headers, service).await?;
        Ok::<_, ApiError>(
            ops.into_iter()
                .filter(|o| kind.is_none_or(|k| o.kind == k))
                .map(|o| OperationJson { name: o.name, span_kind: kind_name(o.kind) })
                .collect::<Vec<_>>(),
        )
    };
    match run.await {
        Ok(ops) => {
            let total = ops.len();
            envelope(&api, ops, total, None)
        }
        Err(e) => failure(e),
    }
}

async fn operation_list(
    api: &Api,
    headers: &HeaderMap,
    service: &str,
) -> Result<Vec<crate::query::jaeger::Operation>, ApiError> {
    let tenant = tenant(headers)?;
    let max = api.limits.query.max_response_bytes;
    api.bounded("operations", api.querier.operations(&tenant, service, max)).await
}

/// Jaeger's name of an OTLP span kind (`""` for unspecified).
fn kind_name(kind: i8) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "",
    }
}

async fn dependencies(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let end_ms = match params.get("endTs").filter(|v| !v.is_empty()) {
            Some(v) => v.trim().parse::<u64>().map_err(|e| bad(format!("unable to parse param 'endTs': {e}")))?,
            None => now().as_millis() as u64,
        };
        let lookback_ms = match params.get("lookback").filter(|v| !v.is_empty()) {
            Some(v) => v.trim().parse::<u64>().map_err(|e| bad(format!("unable to parse param 'lookback': {e}")))?,
            None => DEFAULT_LOOKBACK.as_millis() as u64,
        };
        let end = end_ms.checked_mul(1_000_000).ok_or_else(|| bad("endTs is out of range"))?;
        let start = end.saturating_sub(lookback_ms.saturating_mul(1_000_000));
        let max = api.limits.query.max_response_bytes;
        let deps = api.bounded("dependencies", api.querier.dependencies(&tenant, start, end, max)).await?;
        let service = params.get("service").filter(|s| !s.is_empty());
        Ok::<_, ApiError>(
            deps.into_iter()
                .filter(|d| service.is_none_or(|s| &d.parent == s || &d.child == s))
                .map(|d| DependencyJson { parent: d.parent, child: d.child, call_count: d.calls })
                .collect::<Vec<_>>(),
        )
    };
    match run.await {
        Ok(deps) => envelope(&api, deps, 0, None),
        Err(e) => failure(e),
    }
}

#[derive(Serialize)]
struct DependencyJson {
    parent: String,
    child: String,
    #[serde(rename = "callCount")]
    call_count: u64,
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

async fn trace(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let id = TraceId::from_hex(&id).map_err(|e| bad(format!("invalid trace ID: {e}")))?;
        match api.bounded("trace lookup", api.querier.trace_by_id(&tenant, id)).await? {
            Some(t) => Ok(trace_json(&id, &t.resource_spans, t.partial)),
            None => Err(ApiError(StatusCode::NOT_FOUND, "trace not found".into())),
        }
    };
    match run.await {
        Ok(t) => envelope(&api, vec![t], 0, None),
        Err(e) => failure(e),
    }
}

async fn find_traces(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    match search(&api, &headers, &params).await {
        Ok((traces, errors)) => envelope(&api, traces, 0, (!errors.is_empty()).then_some(errors)),
        Err(e) => failure(e),
    }
}

/// What a Jaeger search form asks for.
#[derive(Debug, Default, PartialEq)]
struct JaegerQuery {
    service: Option<String>,
    operation: Option<String>,
    tags: BTreeMap<String, String>,
    min_duration: Option<Duration>,
    max_duration: Option<Duration>,
    /// Unix nanoseconds.
    start: Option<u64>,
    end: Option<u64>,
    limit: usize,
    trace_ids: Vec<TraceId>,
}

fn parse_query(params: &[(String, String)], max_limit: usize) -> Result<JaegerQuery, ApiError> {
    let mut q = JaegerQuery { limit: DEFAULT_LIMIT, ..Default::default() };
    for (key, value) in params {
        // Names are taken as sent (Jaeger does not trim them); numbers may carry spaces.
        let v = match key.as_str() {
            "service" | "operation" | "tag" | "tags" => value.as_str(),
            _ => value.trim(),
        };
        if v.is_empty() {
            continue;
        }
        let parse_err = |e: &dyn std::fmt::Display| bad(format!("unable to parse param '{key}': {e}"));
        match key.as_str() {
            "service" => q.service = Some(v.to_string()),
            "operation" => q.operation = Some(v.to_string()),
            "tag" => {
                let (k, val) = v
                    .split_once(':')
                    .ok_or_else(|| bad(format!("malformed 'tag' parameter, expecting key:value, received: {v}")))?;
                q.tags.insert(k.to_string(), val.to_string());
            }
            "tags" => {
                let map: BTreeMap<String, String> = serde_json::from_str(v)
                    .map_err(|e| bad(format!("malformed 'tags' parameter, cannot unmarshal JSON: {e}")))?;
                q.tags.extend(map);
            }
            "minDuration" => q.min_duration = Some(go_duration(v).map_err(|e| parse_err(&e))?),
            "maxDuration" => q.max_duration = Some(go_duration(v).map_err(|e| parse_err(&e))?),
            "start" | "end" => {
                let us: u64 = v.parse().map_err(|e| parse_err(&e))?;
                let ns = us.checked_mul(1000).ok_or_else(|| parse_err(&"out of range"))?;
                if key == "start" {
                    q.start = Some(ns);
                } else {
                    q.end = Some(ns);
                }
            }
            "limit" => {
                let n: usize = v.parse().map_err(|e| parse_err(&e))?;
                if n > max_limit {
                    return Err(bad(format!("limit must be at most {max_limit}")));
                }
                if n > 0 {
                    q.limit = n;
                }
            }
            "traceID" if q.trace_ids.len() >= max_limit => {
                return Err(bad(format!("at most {max_limit} traceID parameters")));
            }
            "traceID" => {
                q.trace_ids.push(TraceId::from_hex(v).map_err(|e| bad(format!("cannot parse traceID param: {e}")))?)
            }
            _ => {}
        }
    }
    if let (Some(min), Some(max)) = (q.min_duration, q.max_duration)
        && max < min
    {
        return Err(bad("'maxDuration' should be greater than 'minDuration'"));
    }
    if let (Some(s), Some(e)) = (q.start, q.end)
        && s > e
    {
        return Err(bad("invalid time range: start is after end"));
    }
    Ok(q)
}

/// The TraceQL spanset filter a Jaeger search means: every condition on one span.
fn traceql(q: &JaegerQuery) -> String {
    use query_lang::quote_string as quote;
    let mut conds = Vec::new();
    if let Some(s) = &q.service {
        conds.push(format!("resource.service.name = {}", quote(s)));
    }
    if let Some(o) = &q.operation {
        conds.push(format!("name = {}", quote(o)));
    }
    for (k, v) in &q.tags {
        conds.push(tag_condition(k, v));
    }
    if let Some(d) = q.min_duration {
        conds.push(format!("duration >= {}ns", d.as_nanos()));
    }
    if let Some(d) = q.max_duration {
        conds.push(format!("duration <= {}ns", d.as_nanos()));
    }
    if conds.is_empty() { "{ }".to_string() } else { format!("{{ {} }}", conds.join(" && ")) }
}

/// One Jaeger tag as a condition. The tags the translator derives from OTLP fields (`error`, `span.kind`,
/// `otel.status_code`, `otel.status_description`) test those fields; other tags match a span or resource
/// attribute or an event attribute (Jaeger's log fields), typed as the text reads (Jaeger sends text only).
fn tag_condition(key: &str, value: &str) -> String {
    use query_lang::quote_string as quote;
    match (key, value.to_ascii_lowercase().as_str()) {
        ("error", "true") => return "status = error".into(),
        ("error", "false") => return "status != error".into(),
        ("span.kind", k @ ("server" | "client" | "producer" | "consumer" | "internal")) => {
            return format!("kind = {k}");
        }
        ("otel.status_code", s @ ("ok" | "error")) => return format!("status = {s}"),
        ("otel.status_description", _) => return format!("statusMessage = {}", quote(value)),
        _ => {}
    }
    let attr = query_lang::quote_attribute(key);
    let mut literals = vec![quote(value)];
    if let Ok(i) = value.parse::<i64>() {
        literals.push(i.to_string());
    } else if let Ok(f) = value.parse::<f64>()
        && f.is_finite()
    {
        literals.push(format!("{f:?}"));
    } else if value == "true" || value == "false" {
        literals.push(value.to_string());
    }
    let mut alts = Vec::new();
    if key == "event" {
        // The receivers turn a log's `event` field into the event's name.
        alts.push(format!("event:name = {}", quote(value)));
    }
    for lit in &literals {
        alts.push(format!(".{attr} = {lit}"));
        alts.push(format!("event.{attr} = {lit}"));
    }
    format!("({})", alts.join(" || "))
}

/// Parses Go's `time.ParseDuration` form (`1.5ms`, `2h45m`, `100us`), which Jaeger's search takes: TraceQL's
/// duration syntax without its day, week and year units.
fn go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let text = s.strip_prefix('+').unwrap_or(s);
    if text.contains(['d', 'w', 'y']) {
        return Err(format!("time: unknown unit in duration {s:?}"));
    }
    query_lang::parse_duration(text)
        .and_then(|ns| u64::try_from(ns).ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| format!("time: invalid duration {s:?}"))
}

type Found = (Vec<TraceJson>, Vec<JaegerError>);

async fn search(api: &Api, headers: &HeaderMap, params: &[(String, String)]) -> Result<Found, ApiError> {
    let tenant = tenant(headers)?;
    let q = parse_query(params, MAX_LIMIT.min(api.limits.max_search_limit))?;
    let ids: Vec<TraceId> = if q.trace_ids.is_empty() {
        let pipeline = parse_search(&traceql(&q))?;
        let req = SearchRequest { pipeline, limit: q.limit, spans_per_spanset: 1, start: q.start, end: q.end };
        let found = api.bounded("search", api.querier.search(&tenant, &req)).await?;
        found.traces.iter().map(|t| t.trace_id).collect()
    } else {
        q.trace_ids.clone()
    };
    let querier = &api.querier;
    let max = api.limits.query.max_response_bytes;
    // Whole traces are held until the answer is written: stop as soon as they pass the response limit.
    let fetch = async {
        let mut stream = std::pin::pin!(
            futures::stream::iter(ids)
                .map(|id| {
                    let tenant = &tenant;
                    async move { querier.trace_by_id(tenant, id).await.map(|t| (id, t)) }
                })
                .buffered(FETCH_CONCURRENCY)
        );
        let (mut traces, mut errors, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        while let Some(next) = stream.next().await {
            let (id, t) = next?;
            match t {
                Some(t) => {
                    bytes += t.resource_spans.iter().map(prost::Message::encoded_len).sum::<usize>();
                    if bytes > max {
                        return Ok(Err(ApiError(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("the traces found are more than max_response_bytes ({max}); lower the limit"),
                        )));
                    }
                    traces.push(trace_json(&id, &t.resource_spans, t.partial));
                }
                // Asked for by ID and not stored (a search hit is always stored).
                None => errors.push(JaegerError {
                    code: 0,
                    msg: "trace not found".into(),
                    trace_id: jaeger_trace_id(&id.0),
                }),
            }
        }
        Ok(Ok((traces, errors)))
    };
    api.bounded("trace lookup", fetch).await?
}

// ---- The UI model ----

#[derive(Serialize)]
struct TraceJson {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<SpanJson>,
    processes: BTreeMap<String, ProcessJson>,
    warnings: Option<Vec<String>>,
}

#[derive(Serialize)]
struct SpanJson {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(skip_serializing_if = "is_zero_u32")]
    flags: u32,
    #[serde(rename = "operationName")]
    operation_name: String,
    references: Vec<ReferenceJson>,
    #[serde(rename = "startTime")]
    start_time: u64,
    duration: u64,
    tags: Vec<KeyValueJson>,
    logs: Vec<LogJson>,
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<Vec<String>>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct ReferenceJson {
    #[serde(rename = "refType")]
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Serialize, PartialEq, Clone)]
struct ProcessJson {
    #[serde(rename = "serviceName")]
    service_name: String,
    tags: Vec<KeyValueJson>,
}

#[derive(Serialize)]
struct LogJson {
    timestamp: u64,
    fields: Vec<KeyValueJson>,
}

#[derive(Serialize, PartialEq, Clone)]
struct KeyValueJson {
    key: String,
    #[serde(rename = "type")]
    ty: &'static str,
    value: serde_json::Value,
}

/// Jaeger prints a 128-bit trace ID whose high half is zero as 16 hex digits.
fn jaeger_trace_id(id: &[u8]) -> String {
    let hex = hex::encode(id);
    match hex.strip_prefix("0000000000000000") {
        Some(low) if hex.len() == 32 => low.to_string(),
        _ => hex,
    }
}

fn kv(key: &str, ty: &'static str, value: serde_json::Value) -> KeyValueJson {
    KeyValueJson { key: key.to_string(), ty, value }
}

/// An attribute as a Jaeger tag: primitives keep their type; arrays and maps become their JSON text.
fn tag(a: &KeyValue) -> KeyValueJson {
    use serde_json::Value as J;
    match a.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => kv(&a.key, "string", J::String(s.clone())),
        Some(Value::BoolValue(b)) => kv(&a.key, "bool", J::Bool(*b)),
        Some(Value::IntValue(i)) => kv(&a.key, "int64", J::from(*i)),
        Some(Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => kv(&a.key, "float64", J::Number(n)),
            None => kv(&a.key, "string", J::String(d.to_string())),
        },
        Some(Value::BytesValue(b)) => {
            kv(&a.key, "binary", J::String(base64::engine::general_purpose::STANDARD.encode(b)))
        }
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
            kv(&a.key, "string", J::String(plain(&AnyValue { value: Some(v.clone()) }).to_string()))
        }
        // No value (or a profiles-only string-table index, meaningless here).
        Some(Value::StringValueStrindex(_)) | None => kv(&a.key, "string", J::String(String::new())),
    }
}

/// An attribute value as plain JSON (how the translator writes arrays and maps into string tags).
fn plain(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Some(Value::BytesValue(b)) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(plain).collect()),
        Some(Value::KvlistValue(m)) => {
            J::Object(m.values.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, plain))).collect())
        }
        Some(Value::StringValueStrindex(_)) | None => J::Null,
    }
}

fn process(resource: Option<&Resource>) -> ProcessJson {
    let attrs = resource.map(|r| r.attributes.as_slice()).unwrap_or_default();
    let service =
        attrs.iter().find(|a| a.key == "service.name").and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        });
    ProcessJson {
        // The Collector's name for a resource without one.
        service_name: service.unwrap_or_else(|| "OTLPResourceNoServiceName".to_string()),
        tags: attrs.iter().filter(|a| a.key != "service.name").map(tag).collect(),
    }
}

fn span_tags(
    span: &Span,
    scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
) -> Vec<KeyValueJson> {
    use serde_json::Value as J;
    let mut tags: Vec<KeyValueJson> = span.attributes.iter().map(tag).collect();
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            tags.push(kv("otel.scope.name", "string", J::String(scope.name.clone())));
        }
        if !scope.version.is_empty() {
            tags.push(kv("otel.scope.version", "string", J::String(scope.version.clone())));
        }
    }
    let kind = kind_name(span.kind.clamp(0, 5) as i8);
    if !kind.is_empty() {
        tags.push(kv("span.kind", "string", J::String(kind.to_string())));
    }
    if let Some(status) = &span.status {
        match OtlpStatus::try_from(status.code) {
            Ok(OtlpStatus::Ok) => tags.push(kv("otel.status_code", "string", J::String("OK".into()))),
            Ok(OtlpStatus::Error) => {
                tags.push(kv("otel.status_code", "string", J::String("ERROR".into())));
                tags.push(kv("error", "bool", J::Bool(true)));
            }
            _ => {}
        }
        if !status.message.is_empty() {
            tags.push(kv("otel.status_description", "string", J::String(status.message.clone())));
        }
    }
    if !span.trace_state.is_empty() {
        tags.push(kv("w3c.tracestate", "string", J::String(span.trace_state.clone())));
    }
    for (key, n) in [
        ("otel.dropped_attributes_count", span.dropped_attributes_count),
        ("otel.dropped_events_count", span.dropped_events_count),
        ("otel.dropped_links_count", span.dropped_links_count),
    ] {
        if n > 0 {
            tags.push(kv(key, "int64", J::from(n)));
        }
    }
    tags
}

fn span_json(
    span: &Span,
    scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    process_id: &str,
) -> SpanJson {
    let trace_id = jaeger_trace_id(&span.trace_id);
    let mut references = Vec::new();
    if !span.parent_span_id.is_empty() {
        references.push(ReferenceJson {
            ref_type: "CHILD_OF",
            trace_id: trace_id.clone(),
            span_id: hex::encode(&span.parent_span_id),
        });
    }
    for l in &span.links {
        // The receivers note a Jaeger reference's type on the link, as the Collector does.
        let child_of = l.attributes.iter().any(|a| {
            a.key == REF_TYPE_ATTR
                && matches!(a.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s == "child_of")
        });
        references.push(ReferenceJson {
            ref_type: if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" },
            trace_id: jaeger_trace_id(&l.trace_id),
            span_id: hex::encode(&l.span_id),
        });
    }
    let logs = span
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            // The event's name is the `event` field, unless an attribute already says it.
            if !e.name.is_empty() && !e.attributes.iter().any(|a| a.key == "event") {
                fields.push(kv("event", "string", serde_json::Value::String(e.name.clone())));
            }
            fields.extend(e.attributes.iter().map(tag));
            LogJson { timestamp: e.time_unix_nano / 1000, fields }
        })
        .collect();
    SpanJson {
        trace_id,
        span_id: hex::encode(&span.span_id),
        flags: 0,
        operation_name: span.name.clone(),
        references,
        start_time: span.start_time_unix_nano / 1000,
        duration: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1000,
        tags: span_tags(span, scope),
        logs,
        process_id: process_id.to_string(),
        warnings: None,
    }
}

/// A trace in Jaeger's UI model: spans in start order, equal processes shared (`p1`, `p2`, ... by first use).
fn trace_json(id: &TraceId, resource_spans: &[ResourceSpans], partial: Option<String>) -> TraceJson {
    let mut processes: Vec<ProcessJson> = Vec::new();
    // Equal resources share a process; found by their encoding (a trace may have many resources).
    let mut by_resource: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut spans = Vec::new();
    for rs in resource_spans {
        let key = rs.resource.as_ref().map(prost::Message::encode_to_vec).unwrap_or_default();
        let n = *by_resource.entry(key).or_insert_with(|| {
            processes.push(process(rs.resource.as_ref()));
            processes.len() - 1
        });
        let pid = format!("p{}", n + 1);
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                spans.push((s.start_time_unix_nano, span_json(s, ss.scope.as_ref(), &pid)));
            }
        }
    }
    spans.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.span_id.cmp(&b.1.span_id)));
    TraceJson {
        trace_id: jaeger_trace_id(&id.0),
        spans: spans.into_iter().map(|(_, s)| s).collect(),
        processes: processes.into_iter().enumerate().map(|(i, p)| (format!("p{}", i + 1), p)).collect(),
        warnings: partial.map(|m| vec![m]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(go_duration("2h45m"), Ok(Duration::from_secs(2 * 3600 + 45 * 60)));
        assert_eq!(go_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert!(go_duration("10").is_err(), "a unit is required");
        assert!(go_duration("5 parsecs").is_err());
        assert!(go_duration("-1s").is_err());
        assert!(go_duration("").is_err());
    }

    #[test]
    fn search_forms_become_one_spanset_filter() {
        let params: Vec<(String, String)> = [
            ("service", "cart"),
            ("operation", "GET /cart"),
            ("tags", r#"{"http.status_code":"500","error":"true"}"#),
            ("minDuration", "1ms"),
            ("start", "1700000000000000"),
            ("limit", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let q = parse_query(&params, 1000).expect("a valid form");
        assert_eq!(q.limit, 5);
        assert_eq!(q.start, Some(1_700_000_000_000_000_000));
        let text = traceql(&q);
        assert_eq!(
            text,
            "{ resource.service.name = \"cart\" && name = \"GET /cart\" && status = error && \
             (.\"http.status_code\" = \"500\" || event.\"http.status_code\" = \"500\" || \
             .\"http.status_code\" = 500 || event.\"http.status_code\" = 500) && duration >= 1000000ns }"
        );
        assert!(parse_search(&text).is_ok(), "{text}");
        let bad_tags = vec![("tags".to_string(), "{not json".to_string())];
        assert!(parse_query(&bad_tags, 10).is_err());
        let over = vec![("limit".to_string(), "11".to_string())];
        assert!(parse_query(&over, 10).is_err());
    }

    #[test]
    fn short_trace_ids_print_as_jaeger_does() {
        let mut id = [0u8; 16];
        id[15] = 1;
        assert_eq!(jaeger_trace_id(&id), "0000000000000001");
        id[0] = 0xab;
        assert_eq!(jaeger_trace_id(&id), "ab000000000000000000000000000001");
    }
}
