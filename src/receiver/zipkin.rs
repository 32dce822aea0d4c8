//! Zipkin v2 `POST /api/v2/spans` (:9411): a JSON array of spans (`application/json`) or `ListOfSpans` in
//! protobuf (`application/x-protobuf`), optionally gzip-compressed. Answered `202 Accepted` once durable, as
//! Zipkin's collector does. Zipkin tags are strings, so attributes arrive as strings.
//!
//! Converted as the OpenTelemetry Collector does, with two deliberate differences for what the OpenTelemetry
//! Zipkin exporters send: a span without a kind is INTERNAL (they leave INTERNAL out; the Collector makes it
//! UNSPECIFIED), and the `error` tag's text is the status message (they write the description there).

use std::sync::Arc;

use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use prost::Message;
use serde::Deserialize;

use super::convert::{RequestBuilder, SpanDraft, TagValue, attribute, pad_trace_id, resource};
use super::{InflightBudget, Refused, TextReceiver};
use crate::ingest::Ingester;
use crate::telemetry::Metrics;

/// Zipkin's protobuf messages, generated from `proto/zipkin.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/zipkin.proto3.rs"));
}

pub fn router(ingester: Arc<Ingester>, metrics: Arc<Metrics>, max_bytes: usize, budget: InflightBudget) -> Router {
    TextReceiver { ingester, metrics, decode }.router("/api/v2/spans", max_bytes, budget)
}

fn decode(mime: &str, body: &[u8]) -> Result<(ExportTraceServiceRequest, &'static str), Refused> {
    match mime {
        // Zipkin's own clients send JSON without a content type at times.
        "application/json" | "" => from_json(body).map(|r| (r, "zipkin_json")).map_err(Refused::malformed),
        "application/x-protobuf" | "application/protobuf" => {
            from_proto(body).map(|r| (r, "zipkin_protobuf")).map_err(Refused::malformed)
        }
        _ => Err(Refused::media_type(mime, "application/json or application/x-protobuf")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: String,
    #[serde(default)]
    parent_id: Option<String>,
    id: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(default)]
    local_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    tags: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<i64>,
}

#[derive(Deserialize)]
struct JsonAnnotation {
    timestamp: u64,
    value: String,
}

fn hex_id(field: &str, s: &str, max: usize) -> Result<Vec<u8>, String> {
    let b = hex::decode(if s.len() % 2 == 1 { format!("0{s}") } else { s.to_string() })
        .map_err(|e| format!("invalid {field} {s:?}: {e}"))?;
    if b.len() > max {
        return Err(format!("invalid {field} {s:?}: longer than {max} bytes"));
    }
    Ok(b)
}

/// One span in Zipkin's model, whichever encoding it came in.
struct ZipkinSpan {
    trace_id: Vec<u8>,
    parent_id: Vec<u8>,
    id: Vec<u8>,
    kind: Option<SpanKind>,
    name: String,
    timestamp_us: u64,
    duration_us: u64,
    local: Endpoint,
    remote: Option<Endpoint>,
    annotations: Vec<(u64, String)>,
    tags: Vec<(String, String)>,
}

#[derive(Default)]
struct Endpoint {
    service: String,
    ip: Option<String>,
    port: Option<i64>,
}

fn kind_of(s: &str) -> Option<SpanKind> {
    match s.to_ascii_uppercase().as_str() {
        "CLIENT" => Some(SpanKind::Client),
        "SERVER" => Some(SpanKind::Server),
        "PRODUCER" => Some(SpanKind::Producer),
        "CONSUMER" => Some(SpanKind::Consumer),
        _ => None,
    }
}

fn from_json(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let spans: Vec<JsonSpan> = serde_json::from_slice(body)
        .map_err(|e| format!("malformed Zipkin JSON (expected an array of v2 spans): {e}"))?;
    let endpoint = |e: JsonEndpoint| Endpoint {
        service: e.service_name.unwrap_or_default(),
        ip: e.ipv4.or(e.ipv6),
        port: e.port.filter(|p| *p != 0),
    };
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        out.push(ZipkinSpan {
            trace_id: hex_id("traceId", &s.trace_id, 16)?,
            parent_id: match s.parent_id.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => hex_id("parentId", p, 8)?,
                None => Vec::new(),
            },
            id: hex_id("id", &s.id, 8)?,
            kind: s.kind.as_deref().and_then(kind_of),
            name: s.name.unwrap_or_default(),
            timestamp_us: s.timestamp.unwrap_or(0),
            duration_us: s.duration.unwrap_or(0),
            local: s.local_endpoint.map(endpoint).unwrap_or_default(),
            remote: s.remote_endpoint.map(endpoint),
            annotations: s.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
            tags: s
                .tags
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        });
    }
    Ok(convert(out))
}

fn ip_text(v4: &[u8], v6: &[u8]) -> Option<String> {
    if let Ok(b) = <[u8; 4]>::try_from(v4) {
        return Some(std::net::Ipv4Addr::from(b).to_string());
    }
    <[u8; 16]>::try_from(v6).ok().map(|b| std::net::Ipv6Addr::from(b).to_string())
}

fn from_proto(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let list = proto::ListOfSpans::decode(body).map_err(|e| format!("malformed Zipkin protobuf (ListOfSpans): {e}"))?;
    let endpoint = |e: proto::Endpoint| Endpoint {
        ip: ip_text(&e.ipv4, &e.ipv6),
        service: e.service_name,
        port: (e.port != 0).then_some(i64::from(e.port)),
    };
    let out = list
        .spans
        .into_iter()
        .map(|s| ZipkinSpan {
            kind: match proto::span::Kind::try_from(s.kind) {
                Ok(proto::span::Kind::Client) => Some(SpanKind::Client),
                Ok(proto::span::Kind::Server) => Some(SpanKind::Server),
                Ok(proto::span::Kind::Producer) => Some(SpanKind::Producer),
                Ok(proto::span::Kind::Consumer) => Some(SpanKind::Consumer),
                _ => None,
            },
            trace_id: s.trace_id,
            parent_id: s.parent_id,
            id: s.id,
            name: s.name,
            timestamp_us: s.timestamp,
            duration_us: s.duration,
            local: s.local_endpoint.map(endpoint).unwrap_or_default(),
            remote: s.remote_endpoint.map(endpoint),
            annotations: s.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
            tags: {
                let mut t: Vec<(String, String)> = s.tags.into_iter().collect();
                t.sort();
                t
            },
        })
        .collect();
    Ok(convert(out))
}

/// Zipkin spans as OTLP: the local endpoint's service is the resource; a span without a kind is INTERNAL (the
/// OpenTelemetry Zipkin exporter leaves INTERNAL out); the remote endpoint becomes `peer.service` /
/// `net.peer.ip` / `net.peer.port`; annotations become events.
fn convert(spans: Vec<ZipkinSpan>) -> ExportTraceServiceRequest {
    let received_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let mut b = RequestBuilder::default();
    for s in spans {
        let mut d = SpanDraft::default();
        d.span.trace_id = pad_trace_id(s.trace_id);
        // A span naming itself as its parent has none.
        d.span.parent_span_id = if s.parent_id == s.id { Vec::new() } else { s.parent_id };
        d.span.span_id = s.id;
        d.span.name = s.name;
        d.span.kind = s.kind.unwrap_or(SpanKind::Internal) as i32;
        // A span without a timestamp is stored at its arrival, marked as the Collector marks it (at 1970 it
        // would stretch its block's time range and defeat pruning by time).
        let start_us = if s.timestamp_us == 0 {
            d.span.attributes.push(attribute("otel.zipkin.absentField.startTime", TagValue::Bool(true)));
            received_us
        } else {
            s.timestamp_us
        };
        d.span.start_time_unix_nano = start_us.saturating_mul(1000);
        d.span.end_time_unix_nano = start_us.saturating_add(s.duration_us).saturating_mul(1000);
        let mut res_attrs = Vec::new();
        for (k, v) in s.tags {
            // Resource attributes the OpenTelemetry exporters copy into every span's tags go back to the
            // resource, as the Collector does.
            if is_resource_key(&k) {
                res_attrs.push(attribute(k, TagValue::Str(v)));
            } else {
                d.tag(k, TagValue::Str(v));
            }
        }
        if let Some(r) = s.remote {
            if !r.service.is_empty() {
                d.span.attributes.push(attribute("peer.service", TagValue::Str(r.service)));
            }
            if let Some(ip) = r.ip {
                d.span.attributes.push(attribute("net.peer.ip", TagValue::Str(ip)));
            }
            if let Some(p) = r.port {
                d.span.attributes.push(attribute("net.peer.port", TagValue::Int(p)));
            }
        }
        d.span.events = s.annotations.into_iter().map(|(ts, value)| event(ts, value)).collect();
        if let Some(ip) = s.local.ip {
            d.span.attributes.push(attribute("net.host.ip", TagValue::Str(ip)));
        }
        if let Some(p) = s.local.port {
            d.span.attributes.push(attribute("net.host.port", TagValue::Int(p)));
        }
        let service = if s.local.service.is_empty() { "unknown_service".to_string() } else { s.local.service };
        b.push(&resource(&service, res_attrs), d);
    }
    b.finish()
}

/// Tag keys that describe the process rather than the span (OpenTelemetry resource conventions).
fn is_resource_key(key: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "service.",
        "host.",
        "deployment.",
        "telemetry.",
        "process.",
        "os.",
        "container.",
        "k8s.",
        "cloud.",
        "faas.",
        "device.",
        "webengine.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

/// An annotation as an event. The OpenTelemetry Zipkin exporters write an event as `{"<name>": {<attributes>}}`:
/// that form is read back into name and typed attributes; any other value is the event's name.
fn event(ts_us: u64, value: String) -> Event {
    let mut e = Event { time_unix_nano: ts_us.saturating_mul(1000), ..Default::default() };
    if value.starts_with('{')
        && let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(&value)
        && m.len() == 1
        && let Some((name, serde_json::Value::Object(attrs))) = m.into_iter().next()
    {
        e.name = name;
        for (k, v) in attrs {
            let v = match v {
                serde_json::Value::String(s) => TagValue::Str(s),
                serde_json::Value::Bool(b) => TagValue::Bool(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => TagValue::Int(i),
                    None => TagValue::Double(n.as_f64().unwrap_or_default()),
                },
                other => TagValue::Str(other.to_string()),
            };
            e.attributes.push(attribute(k, v));
        }
        return e;
    }
    e.name = value;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_spans_convert_like_the_collector() {
        let body = br#"[{"traceId":"0123456789abcdef","id":"0000000000000002","parentId":"0000000000000001",
            "kind":"CLIENT","name":"get","timestamp":1700000000000000,"duration":1500,
            "localEndpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"},"remoteEndpoint":{"serviceName":"db","port":5432},
            "annotations":[{"timestamp":1700000000000100,"value":"retry"}],
            "tags":{"http.status_code":"500","error":"boom","otel.scope.name":"lib","host.name":"h1","service.name":"x"}}]"#;
        let req = from_json(body).expect("valid");
        let rs = &req.resource_spans[0];
        let res: Vec<&str> = rs.resource.iter().flat_map(|r| r.attributes.iter().map(|a| a.key.as_str())).collect();
        assert_eq!(res, ["service.name", "host.name"], "resource tags hoisted; the endpoint names the service");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("lib"));
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, [vec![0; 8], hex::decode("0123456789abcdef").unwrap()].concat());
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_500_000);
        assert_eq!(s.status.as_ref().map(|st| st.message.as_str()), Some("boom"));
        assert_eq!(s.events[0].name, "retry");
        let keys: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["http.status_code", "peer.service", "net.peer.port", "net.host.ip"]);
        let e = event(1, r#"{"retry": {"attempt": 2, "why": "timeout"}}"#.into());
        assert_eq!((e.name.as_str(), e.attributes.len()), ("retry", 2));
        assert_eq!(event(1, "plain text".into()).name, "plain text");
        assert!(from_json(b"{").is_err());
        assert!(from_json(br#"[{"traceId":"zz","id":"01"}]"#).is_err());
    }
}
