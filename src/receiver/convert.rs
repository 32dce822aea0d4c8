//! From Zipkin's and Jaeger's span models to OTLP, the way the OpenTelemetry Collector's translators do it:
//! tags the OTLP exporters derive from OTLP fields (`span.kind`, `otel.status_code`, `error`,
//! `otel.status_description`, `otel.scope.*` / `otel.library.*`, `w3c.tracestate`) go back into those fields;
//! every other tag becomes an attribute of its type; spans are grouped by resource and scope.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status::StatusCode};
use prost::Message;

/// A tag value in the foreign model.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
}

impl TagValue {
    fn any(self) -> AnyValue {
        use any_value::Value as V;
        AnyValue {
            value: Some(match self {
                TagValue::Str(s) => V::StringValue(s),
                TagValue::Bool(b) => V::BoolValue(b),
                TagValue::Int(i) => V::IntValue(i),
                TagValue::Double(d) => V::DoubleValue(d),
                TagValue::Bytes(b) => V::BytesValue(b),
            }),
        }
    }

    pub fn text(&self) -> String {
        match self {
            TagValue::Str(s) => s.clone(),
            TagValue::Bool(b) => b.to_string(),
            TagValue::Int(i) => i.to_string(),
            TagValue::Double(d) => d.to_string(),
            TagValue::Bytes(b) => hex::encode(b),
        }
    }
}

pub fn attribute(key: impl Into<String>, value: TagValue) -> KeyValue {
    KeyValue { key: key.into(), value: Some(value.any()), ..Default::default() }
}

/// A span being converted: the OTLP span plus what decides its scope.
#[derive(Default)]
pub struct SpanDraft {
    pub span: Span,
    pub scope_name: String,
    pub scope_version: String,
    /// Status code and message as the tags said them, resolved by [`SpanDraft::finish`].
    status_code: Option<StatusCode>,
    error_tag: Option<String>,
    status_message: Option<String>,
    /// Jaeger's rules (a bool `error` tag is the final word; `http.status_code` as a fallback), else Zipkin's.
    pub jaeger: bool,
    http_status: Option<(i64, Option<String>)>,
}

impl SpanDraft {
    /// A span converted with Jaeger's status rules (`jaeger`) or Zipkin's.
    pub fn new(jaeger: bool) -> Self {
        SpanDraft { jaeger, ..SpanDraft::default() }
    }

    /// Takes one tag: into a span field when it encodes one, else as an attribute.
    pub fn tag(&mut self, key: String, value: TagValue) {
        match key.as_str() {
            "span.kind" => {
                use opentelemetry_proto::tonic::trace::v1::span::SpanKind as K;
                let kind = match value.text().to_ascii_lowercase().as_str() {
                    "client" => K::Client,
                    "server" => K::Server,
                    "producer" => K::Producer,
                    "consumer" => K::Consumer,
                    "internal" => K::Internal,
                    _ => {
                        self.span.attributes.push(attribute(key, value));
                        return;
                    }
                };
                self.span.kind = kind as i32;
            }
            "otel.status_code" => match value.text().to_ascii_uppercase().as_str() {
                "OK" => self.status_code = Some(StatusCode::Ok),
                "ERROR" => self.status_code = Some(StatusCode::Error),
                _ => self.span.attributes.push(attribute(key, value)),
            },
            "otel.status_description" => self.status_message = Some(value.text()),
            // Jaeger: only a bool `true` is the error flag (other values stay attributes, as in the Collector);
            // Zipkin: the error message itself.
            "error" if self.jaeger => match value {
                TagValue::Bool(true) => self.error_tag = Some(String::new()),
                v => self.span.attributes.push(attribute(key, v)),
            },
            "error" => match value {
                TagValue::Bool(false) => {}
                TagValue::Str(s) if s.eq_ignore_ascii_case("false") => {}
                TagValue::Bool(true) => self.error_tag = Some(String::new()),
                v => {
                    let t = v.text();
                    self.error_tag = Some(if t.eq_ignore_ascii_case("true") { String::new() } else { t });
                }
            },
            "http.status_code" if self.jaeger => {
                if let TagValue::Int(code) = &value {
                    self.http_status.get_or_insert((*code, None)).0 = *code;
                } else if let Ok(code) = value.text().parse::<i64>() {
                    self.http_status.get_or_insert((code, None)).0 = code;
                }
                self.span.attributes.push(attribute(key, value));
            }
            "http.status_message" if self.jaeger => {
                self.http_status.get_or_insert((0, None)).1 = Some(value.text());
                self.span.attributes.push(attribute(key, value));
            }
            "otel.scope.name" | "otel.library.name" => self.scope_name = value.text(),
            "otel.scope.version" | "otel.library.version" => self.scope_version = value.text(),
            "w3c.tracestate" => self.span.trace_state = value.text(),
            _ => self.span.attributes.push(attribute(key, value)),
        }
    }

    /// The span with its status resolved: `otel.status_code` wins, an `error` tag alone means ERROR; a
    /// description without either stays an attribute. Repeated keys keep their last value (OTLP forbids
    /// duplicates; the Collector writes tags into a map).
    pub fn finish(mut self) -> (Span, String, String) {
        let error = self.error_tag.as_ref().map(|_| StatusCode::Error);
        let code = if self.jaeger {
            // Jaeger: `error=true` first, then `otel.status_code`, then a failed HTTP status (5xx; 4xx on a
            // client), as the Collector decides.
            error.or(self.status_code).or_else(|| {
                let (http, message) = self.http_status.clone()?;
                let client = self.span.kind == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32;
                let failed = (500..600).contains(&http) || (client && (400..500).contains(&http));
                if failed && self.status_message.is_none() {
                    self.status_message = message;
                }
                failed.then_some(StatusCode::Error)
            })
        } else {
            self.status_code.or(error)
        };
        match code {
            Some(code) => {
                let message = match code {
                    StatusCode::Error => self.status_message.or(self.error_tag.filter(|m| !m.is_empty())),
                    _ => self.status_message,
                };
                self.span.status = Some(Status { code: code as i32, message: message.unwrap_or_default() });
            }
            None => {
                if let Some(m) = self.status_message {
                    self.span.attributes.push(attribute("otel.status_description", TagValue::Str(m)));
                }
            }
        }
        dedupe(&mut self.span.attributes);
        for e in &mut self.span.events {
            dedupe(&mut e.attributes);
        }
        (self.span, self.scope_name, self.scope_version)
    }
}

/// Collects converted spans into one OTLP request, one ResourceSpans per distinct resource and one ScopeSpans
/// per scope within it, in first-seen order.
#[derive(Default)]
pub struct RequestBuilder {
    resources: Vec<ResourceSpans>,
    by_resource: HashMap<Vec<u8>, usize>,
    by_scope: HashMap<(usize, String, String), usize>,
}

impl RequestBuilder {
    pub fn push(&mut self, resource: &Resource, draft: SpanDraft) {
        let key = resource.encode_to_vec();
        let r = *self.by_resource.entry(key).or_insert_with(|| {
            self.resources.push(ResourceSpans { resource: Some(resource.clone()), ..Default::default() });
            self.resources.len() - 1
        });
        let (span, name, version) = draft.finish();
        let scopes = &mut self.resources[r].scope_spans;
        let s = *self.by_scope.entry((r, name.clone(), version.clone())).or_insert_with(|| {
            scopes.push(ScopeSpans {
                scope: Some(InstrumentationScope { name, version, ..Default::default() }),
                ..Default::default()
            });
            scopes.len() - 1
        });
        scopes[s].spans.push(span);
    }

    pub fn finish(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest { resource_spans: self.resources }
    }
}

/// A resource naming its service, with other attributes (a `service.name` among them gives way).
pub fn resource(service: &str, mut attributes: Vec<KeyValue>) -> Resource {
    attributes.retain(|a| a.key != "service.name");
    attributes.insert(0, attribute("service.name", TagValue::Str(service.to_string())));
    dedupe(&mut attributes);
    Resource { attributes, ..Default::default() }
}

/// Keeps the last attribute of each key, in first-seen order of the kept ones.
pub fn dedupe(attributes: &mut Vec<KeyValue>) {
    if attributes.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(attributes.len());
    let mut kept: Vec<KeyValue> = Vec::with_capacity(attributes.len());
    for a in attributes.drain(..).rev() {
        if seen.insert(a.key.clone()) {
            kept.push(a);
        }
    }
    kept.reverse();
    *attributes = kept;
}

/// A 64-bit ID as 8 big-endian bytes; a trace ID's two halves as 16.
pub fn id64(v: i64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub fn id128(high: i64, low: i64) -> Vec<u8> {
    let mut b = high.to_be_bytes().to_vec();
    b.extend_from_slice(&low.to_be_bytes());
    b
}

/// Left-pads a shorter (64-bit) trace ID to 16 bytes, as OTLP wants.
pub fn pad_trace_id(mut b: Vec<u8>) -> Vec<u8> {
    if !b.is_empty() && b.len() < 16 {
        let mut out = vec![0u8; 16 - b.len()];
        out.append(&mut b);
        return out;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_that_encode_fields_go_back_into_them() {
        let mut d = SpanDraft::default();
        d.tag("span.kind".into(), TagValue::Str("client".into()));
        d.tag("error".into(), TagValue::Str("db timeout".into()));
        d.tag("otel.status_code".into(), TagValue::Str("ERROR".into()));
        d.tag("otel.scope.name".into(), TagValue::Str("lib".into()));
        d.tag("http.status_code".into(), TagValue::Int(500));
        let (span, scope, _) = d.finish();
        assert_eq!(span.kind, 3);
        let status = span.status.expect("status");
        assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "db timeout"));
        assert_eq!(scope, "lib");
        assert_eq!(span.attributes.len(), 1);

        let mut d = SpanDraft { jaeger: true, ..SpanDraft::default() };
        d.tag("otel.status_code".into(), TagValue::Str("OK".into()));
        d.tag("error".into(), TagValue::Bool(true));
        d.tag("otel.status_description".into(), TagValue::Str("boom".into()));
        let status = d.finish().0.status.expect("status");
        assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "boom"), "Jaeger: error wins");

        // Jaeger without status tags: a failed HTTP status decides; a string `error` stays an attribute.
        let mut d = SpanDraft { jaeger: true, ..SpanDraft::default() };
        d.span.kind = 3;
        d.tag("http.status_code".into(), TagValue::Int(404));
        d.tag("http.status_message".into(), TagValue::Str("Not Found".into()));
        d.tag("error".into(), TagValue::Str("oops".into()));
        let span = d.finish().0;
        let status = span.status.expect("status");
        assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "Not Found"));
        assert!(span.attributes.iter().any(|a| a.key == "error"));
        let mut d = SpanDraft { jaeger: true, ..SpanDraft::default() };
        d.span.kind = 2;
        d.tag("http.status_code".into(), TagValue::Int(404));
        assert!(d.finish().0.status.is_none(), "a 404 answered by a server is not its error");

        let mut d = SpanDraft::default();
        d.tag("error".into(), TagValue::Bool(false));
        d.tag("otel.status_description".into(), TagValue::Str("kept".into()));
        d.tag("k".into(), TagValue::Int(1));
        d.tag("k".into(), TagValue::Int(2));
        let span = d.finish().0;
        assert!(span.status.is_none());
        let keys: Vec<&str> = span.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["k", "otel.status_description"], "the last `k` kept, the description stays");
        assert_eq!(
            span.attributes[0].value.as_ref().and_then(|v| v.value.clone()),
            Some(any_value::Value::IntValue(2))
        );
    }

    #[test]
    fn ids() {
        assert_eq!(pad_trace_id(vec![1; 8]), [vec![0; 8], vec![1; 8]].concat());
        assert_eq!(id128(1, -1), [vec![0, 0, 0, 0, 0, 0, 0, 1], vec![0xff; 8]].concat());
    }
}
