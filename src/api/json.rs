//! Trace JSON the way Tempo prints it: proto3 JSON of the OTLP messages, with IDs as base64 and enums by name,
//! fields holding their default value left out.
//!
//! [`ResourceSpansJson`] writes it straight from the messages. The first version converted them with
//! opentelemetry-proto's serde support into a `serde_json::Value` tree and rewrote it (hex IDs to base64, numeric
//! enums to names, defaults removed): for a 10,000-span trace that took ~200 of ~300 ms. It is kept as the
//! reference the direct writer is tested against.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
#[cfg(test)]
use serde_json::{Map, Value};

use crate::model::{SPAN_KIND_NAMES as KINDS, STATUS_CODE_NAMES as STATUS};

/// Resource spans as a JSON array in Tempo's style, through a `Value` tree (the reference for the tests).
#[cfg(test)]
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

#[cfg(test)]
fn array_at<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten()
}

#[cfg(test)]
fn hex_to_b64(m: &mut Map<String, Value>, key: &str) {
    if let Some(Value::String(s)) = m.get(key) {
        if s.is_empty() {
            m.remove(key);
        } else if let Ok(bytes) = hex::decode(s) {
            m.insert(key.to_string(), Value::String(STANDARD.encode(bytes)));
        }
    }
}

#[cfg(test)]
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

#[cfg(test)]
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

/// Resource spans as a JSON array in Tempo's style, written directly.
pub struct ResourceSpansJson<'a>(pub &'a [ResourceSpans]);

impl Serialize for ResourceSpansJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for rs in self.0 {
            seq.serialize_element(&Rs(rs))?;
        }
        seq.end()
    }
}

/// A list field, left out when empty (proto3 JSON).
fn list<'a, M: SerializeMap, T, W: Serialize>(
    m: &mut M,
    key: &str,
    items: &'a [T],
    wrap: fn(&'a T) -> W,
) -> Result<(), M::Error> {
    if items.is_empty() {
        return Ok(());
    }
    struct Items<'a, T, W>(&'a [T], fn(&'a T) -> W);
    impl<'a, T, W: Serialize> Serialize for Items<'a, T, W> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for i in self.0 {
                seq.serialize_element(&(self.1)(i))?;
            }
            seq.end()
        }
    }
    m.serialize_entry(key, &Items(items, wrap))
}

fn text<M: SerializeMap>(m: &mut M, key: &str, v: &str) -> Result<(), M::Error> {
    if v.is_empty() { Ok(()) } else { m.serialize_entry(key, v) }
}

fn count<M: SerializeMap>(m: &mut M, key: &str, v: u32) -> Result<(), M::Error> {
    if v == 0 { Ok(()) } else { m.serialize_entry(key, &v) }
}

/// A 64-bit time as proto3 JSON writes it: a decimal string, left out when zero.
fn nanos<M: SerializeMap>(m: &mut M, key: &str, v: u64) -> Result<(), M::Error> {
    if v == 0 { Ok(()) } else { m.serialize_entry(key, &v.to_string()) }
}

fn id<M: SerializeMap>(m: &mut M, key: &str, v: &[u8]) -> Result<(), M::Error> {
    if v.is_empty() { Ok(()) } else { m.serialize_entry(key, &STANDARD.encode(v)) }
}

struct Rs<'a>(&'a ResourceSpans);

impl Serialize for Rs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(r) = &self.0.resource {
            m.serialize_entry("resource", &Res(r))?;
        }
        list(&mut m, "scopeSpans", &self.0.scope_spans, Ss)?;
        text(&mut m, "schemaUrl", &self.0.schema_url)?;
        m.end()
    }
}

struct Res<'a>(&'a Resource);

impl Serialize for Res<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        list(&mut m, "attributes", &self.0.attributes, Kv)?;
        count(&mut m, "droppedAttributesCount", self.0.dropped_attributes_count)?;
        if !self.0.entity_refs.is_empty() {
            // Never written by Strata's receivers' clients today; kept in the generic form.
            let mut v = serde_json::to_value(&self.0.entity_refs).map_err(serde::ser::Error::custom)?;
            crate::model::protojson::strip_defaults(&mut v);
            m.serialize_entry("entityRefs", &v)?;
        }
        m.end()
    }
}

struct Ss<'a>(&'a ScopeSpans);

impl Serialize for Ss<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(scope) = &self.0.scope {
            m.serialize_entry("scope", &Scope(scope))?;
        }
        list(&mut m, "spans", &self.0.spans, SpanJson)?;
        text(&mut m, "schemaUrl", &self.0.schema_url)?;
        m.end()
    }
}

struct Scope<'a>(&'a InstrumentationScope);

impl Serialize for Scope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        text(&mut m, "name", &self.0.name)?;
        text(&mut m, "version", &self.0.version)?;
        list(&mut m, "attributes", &self.0.attributes, Kv)?;
        count(&mut m, "droppedAttributesCount", self.0.dropped_attributes_count)?;
        m.end()
    }
}

struct SpanJson<'a>(&'a Span);

impl Serialize for SpanJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sp = self.0;
        let mut m = s.serialize_map(None)?;
        id(&mut m, "traceId", &sp.trace_id)?;
        id(&mut m, "spanId", &sp.span_id)?;
        text(&mut m, "traceState", &sp.trace_state)?;
        id(&mut m, "parentSpanId", &sp.parent_span_id)?;
        count(&mut m, "flags", sp.flags)?;
        text(&mut m, "name", &sp.name)?;
        if let Some(kind) = usize::try_from(sp.kind).ok().filter(|k| *k != 0).and_then(|k| KINDS.get(k)) {
            m.serialize_entry("kind", kind)?;
        }
        nanos(&mut m, "startTimeUnixNano", sp.start_time_unix_nano)?;
        nanos(&mut m, "endTimeUnixNano", sp.end_time_unix_nano)?;
        list(&mut m, "attributes", &sp.attributes, Kv)?;
        count(&mut m, "droppedAttributesCount", sp.dropped_attributes_count)?;
        list(&mut m, "events", &sp.events, EventJson)?;
        count(&mut m, "droppedEventsCount", sp.dropped_events_count)?;
        list(&mut m, "links", &sp.links, LinkJson)?;
        count(&mut m, "droppedLinksCount", sp.dropped_links_count)?;
        // Grafana and Tempo always show a status; an unset one is an empty object.
        m.serialize_entry("status", &StatusJson(sp.status.as_ref()))?;
        m.end()
    }
}

struct StatusJson<'a>(Option<&'a Status>);

impl Serialize for StatusJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(st) = self.0 {
            text(&mut m, "message", &st.message)?;
            if let Some(code) = usize::try_from(st.code).ok().filter(|c| *c != 0).and_then(|c| STATUS.get(c)) {
                m.serialize_entry("code", code)?;
            }
        }
        m.end()
    }
}

struct EventJson<'a>(&'a Event);

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        nanos(&mut m, "timeUnixNano", self.0.time_unix_nano)?;
        text(&mut m, "name", &self.0.name)?;
        list(&mut m, "attributes", &self.0.attributes, Kv)?;
        count(&mut m, "droppedAttributesCount", self.0.dropped_attributes_count)?;
        m.end()
    }
}

struct LinkJson<'a>(&'a Link);

impl Serialize for LinkJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        id(&mut m, "traceId", &self.0.trace_id)?;
        id(&mut m, "spanId", &self.0.span_id)?;
        text(&mut m, "traceState", &self.0.trace_state)?;
        list(&mut m, "attributes", &self.0.attributes, Kv)?;
        count(&mut m, "droppedAttributesCount", self.0.dropped_attributes_count)?;
        count(&mut m, "flags", self.0.flags)?;
        m.end()
    }
}

/// An attribute at the top of a list: empty key and missing value left out like any default.
struct Kv<'a>(&'a KeyValue);

impl Serialize for Kv<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        text(&mut m, "key", &self.0.key)?;
        if let Some(v) = &self.0.value {
            m.serialize_entry("value", &Any(v))?;
        }
        m.end()
    }
}

/// A value: the field's presence is its type, so a default value is still written.
struct Any<'a>(&'a AnyValue);

impl Serialize for Any<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use any_value::Value as V;
        let mut m = s.serialize_map(None)?;
        match &self.0.value {
            Some(V::StringValue(v)) => m.serialize_entry("stringValue", v)?,
            Some(V::BoolValue(v)) => m.serialize_entry("boolValue", v)?,
            Some(V::IntValue(v)) => m.serialize_entry("intValue", &v.to_string())?,
            Some(V::DoubleValue(v)) => m.serialize_entry("doubleValue", &v.is_finite().then_some(*v))?,
            Some(V::BytesValue(v)) => m.serialize_entry("bytesValue", &STANDARD.encode(v))?,
            Some(V::StringValueStrindex(v)) => m.serialize_entry("stringValueStrindex", v)?,
            Some(V::ArrayValue(a)) => m.serialize_entry("arrayValue", &ArrayJson(&a.values))?,
            Some(V::KvlistValue(l)) => m.serialize_entry("kvlistValue", &KvListJson(&l.values))?,
            None => {}
        }
        m.end()
    }
}

struct ArrayJson<'a>(&'a [AnyValue]);

impl Serialize for ArrayJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("values", &self.0.iter().map(Any).collect::<Vec<_>>())?;
        m.end()
    }
}

/// Attributes nested in a map value keep every field (as opentelemetry-proto's serde writes them).
struct KvListJson<'a>(&'a [KeyValue]);

impl Serialize for KvListJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Nested<'a>(&'a KeyValue);
        impl Serialize for Nested<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("key", &self.0.key)?;
                m.serialize_entry("value", &self.0.value.as_ref().map(Any))?;
                if self.0.key_strindex != 0 {
                    m.serialize_entry("keyStrindex", &self.0.key_strindex)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("values", &self.0.iter().map(Nested).collect::<Vec<_>>())?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, v: Option<any_value::Value>) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: v }), ..Default::default() }
    }

    /// Every field and edge the writer handles: defaults, empty keys, missing values, nested arrays and maps,
    /// non-finite doubles, bytes, out-of-range enums.
    fn sample() -> Vec<ResourceSpans> {
        use any_value::Value as V;
        let nested = V::KvlistValue(KeyValueList {
            values: vec![
                kv("inner", Some(V::IntValue(0))),
                KeyValue { key: String::new(), value: None, ..Default::default() },
                kv(
                    "arr",
                    Some(V::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(V::BoolValue(false)) }] })),
                ),
            ],
        });
        let attrs = vec![
            kv("s", Some(V::StringValue(String::new()))),
            kv("i", Some(V::IntValue(-5))),
            kv("d", Some(V::DoubleValue(f64::NAN))),
            kv("d2", Some(V::DoubleValue(0.25))),
            kv("b", Some(V::BoolValue(false))),
            kv("bytes", Some(V::BytesValue(vec![1, 2, 255]))),
            kv(
                "a",
                Some(V::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(V::IntValue(7)) }, AnyValue { value: None }],
                })),
            ),
            kv("m", Some(nested)),
            kv("none", None),
            KeyValue { key: String::new(), value: None, ..Default::default() },
        ];
        let span = |kind: i32, status: Option<Status>| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: if kind == 2 { vec![] } else { vec![3; 8] },
            trace_state: if kind == 1 { "a=b".into() } else { String::new() },
            flags: kind as u32,
            name: if kind == 3 { String::new() } else { "op".into() },
            kind,
            start_time_unix_nano: if kind == 4 { 0 } else { 1_700_000_000_000_000_000 },
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: attrs.clone(),
            dropped_attributes_count: kind as u32 % 2,
            events: vec![Event {
                time_unix_nano: 0,
                name: "e".into(),
                attributes: attrs.clone(),
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 2,
            links: vec![Link {
                trace_id: vec![4; 16],
                span_id: vec![],
                trace_state: "x".into(),
                attributes: attrs.clone(),
                dropped_attributes_count: 0,
                flags: 1,
            }],
            dropped_links_count: 0,
            status,
        };
        vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: attrs.clone(),
                    dropped_attributes_count: 3,
                    entity_refs: vec![],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
                            version: String::new(),
                            attributes: attrs.clone(),
                            dropped_attributes_count: 0,
                        }),
                        spans: vec![
                            span(0, None),
                            span(1, Some(Status { message: String::new(), code: 0 })),
                            span(2, Some(Status { message: "boom".into(), code: 2 })),
                            span(3, Some(Status { message: String::new(), code: 1 })),
                            span(4, Some(Status { message: "odd".into(), code: 9 })),
                            span(5, None),
                            span(17, None),
                        ],
                        schema_url: "https://example/s".into(),
                    },
                    ScopeSpans { scope: None, spans: vec![], schema_url: String::new() },
                ],
                schema_url: String::new(),
            },
            ResourceSpans { resource: None, scope_spans: vec![], schema_url: "u".into() },
        ]
    }

    #[test]
    fn the_direct_writer_equals_the_value_tree() {
        let rs = sample();
        let reference = resource_spans_json(&rs);
        let direct: Value = serde_json::to_value(ResourceSpansJson(&rs)).expect("serialise");
        assert_eq!(direct, reference, "\ndirect:    {direct}\nreference: {reference}");
        assert_eq!(serde_json::to_value(ResourceSpansJson(&[])).expect("empty"), reference_of(&[]));
    }

    fn reference_of(rs: &[ResourceSpans]) -> Value {
        resource_spans_json(rs)
    }
}
