//! Trace JSON the way Tempo prints it: proto3 JSON of the OTLP messages, with IDs as base64 and enums by name.
//!
//! opentelemetry-proto's serde support writes OTLP/JSON (hex IDs, numeric enums); Tempo's HTTP API emits
//! protobuf-JSON from Go, so the few fields that differ are rewritten here.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_json::{Map, Value};

use crate::model::{SPAN_KIND_NAMES as KINDS, STATUS_CODE_NAMES as STATUS};

/// Resource spans as a JSON array in Tempo's style.
pub fn resource_spans_json(rs: &[ResourceSpans]) -> Value {
    let mut v = serde_json::to_value(rs).unwrap_or(Value::Array(Vec::new()));
    crate::model::protojson::strip_defaults(&mut v);
    if let Value::Array(list) = &mut v {
        for r in list {
            for ss in array_at(r, "scopeSpans") {
                for span in array_at(ss, "spans") {
                    if let Value::Object(m) = span {
                        rewrite_span(m);
                    }
                }
            }
        }
    }
    v
}

fn array_at<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten()
}

fn hex_to_b64(m: &mut Map<String, Value>, key: &str) {
    if let Some(Value::String(s)) = m.get(key) {
        if s.is_empty() {
            m.remove(key);
        } else if let Ok(bytes) = hex::decode(s) {
            m.insert(key.to_string(), Value::String(STANDARD.encode(bytes)));
        }
    }
}

fn enum_name(m: &mut Map<String, Value>, key: &str, names: &[&str]) {
    if let Some(n) = m.get(key).and_then(Value::as_u64) {
        match names.get(n as usize) {
            Some(name) if n != 0 => {
                m.insert(key.to_string(), Value::String((*name).to_string()));
            }
            _ => {
                m.remove(key);
            }
        }
    }
}

fn rewrite_span(m: &mut Map<String, Value>) {
    for k in ["traceId", "spanId", "parentSpanId"] {
        hex_to_b64(m, k);
    }
    enum_name(m, "kind", &KINDS);
    match m.get_mut("status") {
        Some(Value::Object(st)) => enum_name(st, "code", &STATUS),
        // Grafana and Tempo always show a status; an unset one is an empty object.
        _ => {
            m.insert("status".into(), Value::Object(Map::new()));
        }
    }
    if let Some(Value::Array(links)) = m.get_mut("links") {
        for l in links.iter_mut().filter_map(Value::as_object_mut) {
            hex_to_b64(l, "traceId");
            hex_to_b64(l, "spanId");
        }
    }
}
