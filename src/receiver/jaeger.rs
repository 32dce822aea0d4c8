//! Jaeger's collector protocols: gRPC `jaeger.api_v2.CollectorService/PostSpans` (:14250) and Thrift over HTTP
//! (`POST /api/traces`, a binary-protocol `jaeger.Batch`, :14268). Both become OTLP the way the OpenTelemetry
//! Collector's Jaeger receiver converts them: the process is the resource, the parent is the first `CHILD_OF`
//! reference (or Thrift's `parentSpanId`), other references are links, logs are events (`event` field -> name),
//! and tag types are kept.

use std::sync::Arc;

use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use thrift::protocol::{TBinaryInputProtocol, TInputProtocol, TType};

use super::convert::{RequestBuilder, SpanDraft, TagValue, attribute, id64, id128, pad_trace_id, resource};
use super::{InflightBudget, Refused, TextReceiver, accept, ingest_error_message};
use crate::ingest::Ingester;
use crate::telemetry::Metrics;

/// Jaeger's api_v2 messages and `CollectorService`, generated from `proto/jaeger.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/jaeger.api_v2.rs"));
}

// ---- The common model both encodings decode into ----

struct JSpan {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    /// Thrift's explicit parent (empty when none or zero).
    parent_id: Vec<u8>,
    operation: String,
    /// (trace ID, span ID, is CHILD_OF)
    references: Vec<(Vec<u8>, Vec<u8>, bool)>,
    start_ns: u64,
    duration_ns: u64,
    tags: Vec<(String, TagValue)>,
    logs: Vec<(u64, Vec<(String, TagValue)>)>,
    /// A process of its own (api_v2 allows one per span), else the batch's.
    process: Option<JProcess>,
}

#[derive(Clone, Default)]
struct JProcess {
    service: String,
    tags: Vec<(String, TagValue)>,
}

fn convert(batch_process: Option<JProcess>, spans: Vec<JSpan>) -> ExportTraceServiceRequest {
    let mut b = RequestBuilder::default();
    let to_resource = |p: &JProcess| {
        let service = if p.service.is_empty() { "unknown_service" } else { p.service.as_str() };
        // The Collector's renames of two Jaeger client tags.
        let attrs = p.tags.iter().map(|(k, v)| match (k.as_str(), v) {
            ("hostname", v) => attribute("host.name", v.clone()),
            ("jaeger.version", v) => {
                attribute("opencensus.exporterversion", TagValue::Str(format!("Jaeger-{}", v.text())))
            }
            _ => attribute(k.clone(), v.clone()),
        });
        resource(service, attrs.collect())
    };
    let batch_resource = batch_process.as_ref().map(to_resource).unwrap_or_else(|| to_resource(&JProcess::default()));
    for s in spans {
        let mut d = SpanDraft::new(true);
        d.span.trace_id = pad_trace_id(s.trace_id.clone());
        d.span.span_id = s.span_id;
        d.span.name = s.operation;
        d.span.start_time_unix_nano = s.start_ns;
        d.span.end_time_unix_nano = s.start_ns.saturating_add(s.duration_ns);
        d.span.parent_span_id = s.parent_id;
        let refs: Vec<(Vec<u8>, Vec<u8>, bool)> =
            s.references.into_iter().map(|(t, span, child_of)| (pad_trace_id(t), span, child_of)).collect();
        // The parent, unless Thrift named one: the first CHILD_OF within the trace, else the first FOLLOWS_FROM
        // within it (as the Collector does). Every other reference is a link noting its type.
        // The reference that is the parent is not a link too; a FOLLOWS_FROM to a parent Thrift named is.
        let same_trace = |r: &(Vec<u8>, Vec<u8>, bool)| r.0 == d.span.trace_id;
        let parent_ref = if d.span.parent_span_id.is_empty() {
            let found = refs.iter().position(|r| same_trace(r) && r.2).or_else(|| refs.iter().position(same_trace));
            if let Some(i) = found {
                d.span.parent_span_id = refs[i].1.clone();
            }
            found
        } else {
            refs.iter().position(|r| same_trace(r) && r.2 && r.1 == d.span.parent_span_id)
        };
        for (i, (trace, span, child_of)) in refs.into_iter().enumerate() {
            if Some(i) == parent_ref {
                continue;
            }
            let kind = if child_of { "child_of" } else { "follows_from" };
            d.span.links.push(Link {
                trace_id: trace,
                span_id: span,
                attributes: vec![attribute(REF_TYPE_ATTR, TagValue::Str(kind.into()))],
                ..Default::default()
            });
        }
        for (k, v) in s.tags {
            d.tag(k, v);
        }
        d.span.events = s
            .logs
            .into_iter()
            .map(|(ts, fields)| {
                let mut e = Event { time_unix_nano: ts, ..Default::default() };
                for (k, v) in fields {
                    // The `event` field names the event, whatever its type (the last one wins).
                    if k == "event" {
                        e.name = v.text();
                    } else {
                        e.attributes.push(attribute(k, v));
                    }
                }
                e
            })
            .collect();
        match &s.process {
            Some(p) => b.push(&to_resource(p), d),
            None => b.push(&batch_resource, d),
        }
    }
    b.finish()
}

/// The link attribute noting a Jaeger reference's type, as the Collector names it.
const REF_TYPE_ATTR: &str = "opentracing.ref_type";

// ---- gRPC ----

fn proto_tag(kv: proto::KeyValue) -> (String, TagValue) {
    let v = match proto::ValueType::try_from(kv.v_type) {
        Ok(proto::ValueType::Bool) => TagValue::Bool(kv.v_bool),
        Ok(proto::ValueType::Int64) => TagValue::Int(kv.v_int64),
        Ok(proto::ValueType::Float64) => TagValue::Double(kv.v_float64),
        Ok(proto::ValueType::Binary) => TagValue::Bytes(kv.v_binary),
        _ => TagValue::Str(kv.v_str),
    };
    (kv.key, v)
}

fn proto_process(p: proto::Process) -> JProcess {
    JProcess { service: p.service_name, tags: p.tags.into_iter().map(proto_tag).collect() }
}

fn timestamp_ns(t: Option<prost_types::Timestamp>) -> u64 {
    t.map_or(0, |t| (t.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(t.nanos.max(0) as u64))
}

fn duration_ns(d: Option<prost_types::Duration>) -> u64 {
    d.map_or(0, |d| (d.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(d.nanos.max(0) as u64))
}

/// A `PostSpans` batch as OTLP.
pub fn from_proto(batch: proto::Batch) -> ExportTraceServiceRequest {
    let spans = batch
        .spans
        .into_iter()
        .map(|s| JSpan {
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent_id: Vec::new(),
            operation: s.operation_name,
            references: s
                .references
                .into_iter()
                .map(|r| (r.trace_id, r.span_id, r.ref_type == proto::SpanRefType::ChildOf as i32))
                .collect(),
            start_ns: timestamp_ns(s.start_time),
            duration_ns: duration_ns(s.duration),
            tags: s.tags.into_iter().map(proto_tag).collect(),
            logs: s
                .logs
                .into_iter()
                .map(|l| (timestamp_ns(l.timestamp), l.fields.into_iter().map(proto_tag).collect()))
                .collect(),
            process: s.process.map(proto_process),
        })
        .collect();
    convert(batch.process.map(proto_process), spans)
}

/// The gRPC `CollectorService`.
#[derive(Clone)]
pub struct Collector {
    ingester: Arc<Ingester>,
    metrics: Arc<Metrics>,
}

impl Collector {
    pub fn service(
        ingester: Arc<Ingester>,
        metrics: Arc<Metrics>,
        max_bytes: usize,
    ) -> proto::collector_service_server::CollectorServiceServer<Collector> {
        proto::collector_service_server::CollectorServiceServer::new(Collector { ingester, metrics })
            .max_decoding_message_size(max_bytes)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    }
}

#[tonic::async_trait]
impl proto::collector_service_server::CollectorService for Collector {
    async fn post_spans(
        &self,
        request: tonic::Request<proto::PostSpansRequest>,
    ) -> Result<tonic::Response<proto::PostSpansResponse>, tonic::Status> {
        let tenant = match request.metadata().get("x-scope-orgid").map(|v| v.to_str()) {
            None => crate::model::Tenant::default(),
            Some(Ok(raw)) => {
                crate::model::Tenant::parse(Some(raw)).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            }
            Some(Err(_)) => return Err(tonic::Status::invalid_argument("x-scope-orgid is not valid text")),
        };
        let batch = request.into_inner().batch.unwrap_or_default();
        let req = from_proto(batch);
        match accept(&self.ingester, &self.metrics, tenant, req, "jaeger_grpc").await {
            Ok(a) if a.accepted == 0 && a.rejected > 0 => {
                Err(tonic::Status::invalid_argument(format!("no valid span: {}", a.message)))
            }
            Ok(_) => Ok(tonic::Response::new(proto::PostSpansResponse {})),
            Err(e) => Err(tonic::Status::unavailable(ingest_error_message(&e))),
        }
    }
}

// ---- Thrift over HTTP ----

pub fn thrift_router(
    ingester: Arc<Ingester>,
    metrics: Arc<Metrics>,
    max_bytes: usize,
    budget: InflightBudget,
) -> Router {
    TextReceiver { ingester, metrics, decode: decode_thrift }.router("/api/traces", max_bytes, budget)
}

fn decode_thrift(mime: &str, body: &[u8]) -> Result<(ExportTraceServiceRequest, &'static str), Refused> {
    match mime {
        "application/x-thrift" | "application/vnd.apache.thrift.binary" => {
            from_thrift(body).map(|r| (r, "jaeger_thrift_http")).map_err(Refused::malformed)
        }
        _ => Err(Refused::media_type(mime, "application/x-thrift (binary protocol)")),
    }
}

/// A `jaeger.Batch` in Thrift's binary protocol as OTLP.
pub fn from_thrift(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    // No length in the input may claim more than the body holds (the library checks before allocating).
    let config = thrift::TConfiguration::builder()
        .max_message_size(Some(body.len()))
        .max_frame_size(Some(body.len()))
        .max_string_size(Some(body.len()))
        .max_container_size(Some(body.len()))
        .build()
        .map_err(|e| format!("configuring the Thrift decoder: {e:?}"))?;
    let mut p = TBinaryInputProtocol::with_config(body, true, config);
    let (process, spans) = read_batch(&mut p).map_err(|e| {
        // The library's Display shows only the error's kind ("bad data"); its message says what was wrong.
        let detail = match &e {
            thrift::Error::Protocol(p) if !p.message.is_empty() => p.message.clone(),
            e => e.to_string(),
        };
        format!("malformed Jaeger Thrift batch: {detail}")
    })?;
    Ok(convert(process, spans))
}

type TResult<T> = thrift::Result<T>;

/// Reads a struct's fields, handing each (id, type) to `field`, which consumes it or returns false to have the
/// protocol pass over it (fields added to jaeger.thrift later). The structs are read with the `thrift` crate's
/// protocol rather than generated: its code generator is a separate C++ tool this build does not need, and four
/// small structs are all the Jaeger batch uses.
fn read_struct(
    p: &mut dyn TInputProtocol,
    mut field: impl FnMut(&mut dyn TInputProtocol, i16, TType) -> TResult<bool>,
) -> TResult<()> {
    p.read_struct_begin()?;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        let consumed = match f.id {
            Some(id) => field(p, id, f.field_type)?,
            None => false,
        };
        if !consumed {
            p.skip(f.field_type)?;
        }
        p.read_field_end()?;
    }
    p.read_struct_end()
}

fn read_list<T>(
    p: &mut dyn TInputProtocol,
    mut item: impl FnMut(&mut dyn TInputProtocol) -> TResult<T>,
) -> TResult<Vec<T>> {
    let l = p.read_list_begin()?;
    if l.element_type != TType::Struct {
        return Err(thrift::Error::Protocol(thrift::ProtocolError::new(
            thrift::ProtocolErrorKind::InvalidData,
            format!("expected a list of structs, found a list of {:?}", l.element_type),
        )));
    }
    let mut out = Vec::with_capacity(usize::try_from(l.size).unwrap_or(0).min(1024));
    for _ in 0..l.size {
        out.push(item(p)?);
    }
    p.read_list_end()?;
    Ok(out)
}

fn read_batch(p: &mut dyn TInputProtocol) -> TResult<(Option<JProcess>, Vec<JSpan>)> {
    let (mut process, mut spans) = (None, Vec::new());
    read_struct(p, |p, id, ty| {
        match (id, ty) {
            (1, TType::Struct) => process = Some(read_process(p)?),
            (2, TType::List) => spans = read_list(p, read_span)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((process, spans))
}

fn read_process(p: &mut dyn TInputProtocol) -> TResult<JProcess> {
    let mut out = JProcess::default();
    read_struct(p, |p, id, ty| {
        match (id, ty) {
            (1, TType::String) => out.service = p.read_string()?,
            (2, TType::List) => out.tags = read_list(p, read_tag)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Thrift's `TagType`: STRING, DOUBLE, BOOL, LONG, BINARY.
fn read_tag(p: &mut dyn TInputProtocol) -> TResult<(String, TagValue)> {
    let (mut key, mut ty) = (String::new(), 0i32);
    let (mut s, mut d, mut b, mut l, mut bin) = (None, None, None, None, None);
    read_struct(p, |p, id, t| {
        match (id, t) {
            (1, TType::String) => key = p.read_string()?,
            (2, TType::I32) => ty = p.read_i32()?,
            (3, TType::String) => s = Some(p.read_string()?),
            (4, TType::Double) => d = Some(p.read_double()?),
            (5, TType::Bool) => b = Some(p.read_bool()?),
            (6, TType::I64) => l = Some(p.read_i64()?),
            (7, TType::String) => bin = Some(p.read_bytes()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let v = match ty {
        1 => TagValue::Double(d.unwrap_or_default()),
        2 => TagValue::Bool(b.unwrap_or_default()),
        3 => TagValue::Int(l.unwrap_or_default()),
        4 => TagValue::Bytes(bin.unwrap_or_default()),
        _ => TagValue::Str(s.unwrap_or_default()),
    };
    Ok((key, v))
}

fn micros(us: i64) -> u64 {
    (us.max(0) as u64).saturating_mul(1000)
}

fn read_span(p: &mut dyn TInputProtocol) -> TResult<JSpan> {
    let (mut low, mut high, mut span_id, mut parent) = (0i64, 0i64, 0i64, 0i64);
    let mut s = JSpan {
        trace_id: Vec::new(),
        span_id: Vec::new(),
        parent_id: Vec::new(),
        operation: String::new(),
        references: Vec::new(),
        start_ns: 0,
        duration_ns: 0,
        tags: Vec::new(),
        logs: Vec::new(),
        process: None,
    };
    read_struct(p, |p, id, ty| {
        match (id, ty) {
            (1, TType::I64) => low = p.read_i64()?,
            (2, TType::I64) => high = p.read_i64()?,
            (3, TType::I64) => span_id = p.read_i64()?,
            (4, TType::I64) => parent = p.read_i64()?,
            (5, TType::String) => s.operation = p.read_string()?,
            (6, TType::List) => s.references = read_list(p, read_reference)?,
            (8, TType::I64) => s.start_ns = micros(p.read_i64()?),
            (9, TType::I64) => s.duration_ns = micros(p.read_i64()?),
            (10, TType::List) => s.tags = read_list(p, read_tag)?,
            (11, TType::List) => s.logs = read_list(p, read_log)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    s.trace_id = id128(high, low);
    s.span_id = id64(span_id);
    if parent != 0 {
        s.parent_id = id64(parent);
    }
    Ok(s)
}

fn read_reference(p: &mut dyn TInputProtocol) -> TResult<(Vec<u8>, Vec<u8>, bool)> {
    let (mut ty, mut low, mut high, mut span) = (0i32, 0i64, 0i64, 0i64);
    read_struct(p, |p, id, t| {
        match (id, t) {
            (1, TType::I32) => ty = p.read_i32()?,
            (2, TType::I64) => low = p.read_i64()?,
            (3, TType::I64) => high = p.read_i64()?,
            (4, TType::I64) => span = p.read_i64()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((id128(high, low), id64(span), ty == 0))
}

fn read_log(p: &mut dyn TInputProtocol) -> TResult<(u64, Vec<(String, TagValue)>)> {
    let (mut ts, mut fields) = (0i64, Vec::new());
    read_struct(p, |p, id, t| {
        match (id, t) {
            (1, TType::I64) => ts = p.read_i64()?,
            (2, TType::List) => fields = read_list(p, read_tag)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((micros(ts), fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::{
        TBinaryOutputProtocol, TFieldIdentifier, TListIdentifier, TOutputProtocol, TStructIdentifier,
    };

    /// Writes a small batch with the library's encoder: process with a typed tag, one span with a parent, a
    /// FOLLOWS_FROM reference, typed tags and a log.
    fn batch() -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut o = TBinaryOutputProtocol::new(&mut buf, true);
            let o: &mut dyn TOutputProtocol = &mut o;
            let field = |o: &mut dyn TOutputProtocol, id: i16, t: TType| {
                o.write_field_begin(&TFieldIdentifier::new::<_, String, i16>(None, t, id)).unwrap()
            };
            let tag = |o: &mut dyn TOutputProtocol, key: &str, ty: i32, write: &dyn Fn(&mut dyn TOutputProtocol)| {
                o.write_struct_begin(&TStructIdentifier::new("Tag")).unwrap();
                field(o, 1, TType::String);
                o.write_string(key).unwrap();
                field(o, 2, TType::I32);
                o.write_i32(ty).unwrap();
                write(o);
                o.write_field_stop().unwrap();
                o.write_struct_end().unwrap();
            };
            o.write_struct_begin(&TStructIdentifier::new("Batch")).unwrap();
            field(o, 1, TType::Struct);
            o.write_struct_begin(&TStructIdentifier::new("Process")).unwrap();
            field(o, 1, TType::String);
            o.write_string("cart").unwrap();
            field(o, 2, TType::List);
            o.write_list_begin(&TListIdentifier::new(TType::Struct, 1)).unwrap();
            tag(o, "host.name", 0, &|o| {
                field(o, 3, TType::String);
                o.write_string("h1").unwrap();
            });
            o.write_field_stop().unwrap();
            o.write_struct_end().unwrap();
            field(o, 2, TType::List);
            o.write_list_begin(&TListIdentifier::new(TType::Struct, 1)).unwrap();
            o.write_struct_begin(&TStructIdentifier::new("Span")).unwrap();
            for (id, v) in [(1, 7i64), (2, 0), (3, 2), (4, 1)] {
                field(o, id, TType::I64);
                o.write_i64(v).unwrap();
            }
            field(o, 5, TType::String);
            o.write_string("SELECT").unwrap();
            field(o, 6, TType::List);
            o.write_list_begin(&TListIdentifier::new(TType::Struct, 1)).unwrap();
            o.write_struct_begin(&TStructIdentifier::new("SpanRef")).unwrap();
            field(o, 1, TType::I32);
            o.write_i32(1).unwrap();
            for (id, v) in [(2, 9i64), (3, 0), (4, 5)] {
                field(o, id, TType::I64);
                o.write_i64(v).unwrap();
            }
            o.write_field_stop().unwrap();
            o.write_struct_end().unwrap();
            field(o, 7, TType::I32);
            o.write_i32(1).unwrap();
            field(o, 8, TType::I64);
            o.write_i64(1_700_000_000_000_000).unwrap();
            field(o, 9, TType::I64);
            o.write_i64(1500).unwrap();
            field(o, 10, TType::List);
            o.write_list_begin(&TListIdentifier::new(TType::Struct, 3)).unwrap();
            tag(o, "rows", 3, &|o| {
                field(o, 6, TType::I64);
                o.write_i64(42).unwrap();
            });
            tag(o, "span.kind", 0, &|o| {
                field(o, 3, TType::String);
                o.write_string("client").unwrap();
            });
            tag(o, "error", 2, &|o| {
                field(o, 5, TType::Bool);
                o.write_bool(true).unwrap();
            });
            field(o, 11, TType::List);
            o.write_list_begin(&TListIdentifier::new(TType::Struct, 1)).unwrap();
            o.write_struct_begin(&TStructIdentifier::new("Log")).unwrap();
            field(o, 1, TType::I64);
            o.write_i64(1_700_000_000_000_100).unwrap();
            field(o, 2, TType::List);
            o.write_list_begin(&TListIdentifier::new(TType::Struct, 2)).unwrap();
            tag(o, "event", 0, &|o| {
                field(o, 3, TType::String);
                o.write_string("retry").unwrap();
            });
            tag(o, "attempt", 3, &|o| {
                field(o, 6, TType::I64);
                o.write_i64(2).unwrap();
            });
            o.write_field_stop().unwrap();
            o.write_struct_end().unwrap();
            o.write_field_stop().unwrap();
            o.write_struct_end().unwrap();
            o.write_field_stop().unwrap();
            o.write_struct_end().unwrap();
        }
        buf
    }

    #[test]
    fn thrift_batches_convert_like_the_collector() {
        let req = from_thrift(&batch()).expect("valid batch");
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().expect("resource").attributes;
        assert_eq!(attrs.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["service.name", "host.name"]);
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, id128(0, 7));
        assert_eq!((s.span_id.clone(), s.parent_span_id.clone()), (id64(2), id64(1)));
        assert_eq!(s.kind, 3);
        assert_eq!(s.status.as_ref().map(|st| st.code), Some(2));
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_500_000);
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.links[0].span_id, id64(5));
        assert_eq!(s.events[0].name, "retry");
        assert_eq!(s.events[0].attributes[0].key, "attempt");
        assert_eq!(s.attributes.len(), 1, "only `rows` stays an attribute");
    }

    #[test]
    fn truncated_or_lying_thrift_is_refused() {
        let b = batch();
        for cut in [1, 10, b.len() / 2, b.len() - 1] {
            assert!(from_thrift(&b[..cut]).is_err(), "cut at {cut}");
        }
        // A list claiming two billion elements must fail before allocating for them.
        let mut lie = vec![0x0f, 0x00, 0x02, 0x0c, 0x7f, 0xff, 0xff, 0xff];
        lie.push(0);
        assert!(from_thrift(&lie).is_err());
    }
}
