//! End to end with real OTLP clients: the OpenTelemetry Rust SDK's exporters (gRPC with gzip, HTTP protobuf,
//! HTTP JSON) and a browser-style OTLP/JSON POST, read back through Tempo's trace-by-ID API.

mod common;

use base64::Engine;
use common::{Server, http};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// What one SDK run produced: the trace ID and the (root, child) span IDs.
struct Emitted {
    trace_id: [u8; 16],
    root: [u8; 8],
    child: [u8; 8],
}

fn emit(provider: SdkTracerProvider) -> Emitted {
    let tracer = provider.tracer("e2e-scope");
    let root = tracer
        .span_builder("GET /cart")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.method", "GET"),
            KeyValue::new("http.status_code", 200i64),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("cached", true),
        ])
        .start(&tracer);
    let cx = Context::current_with_span(root);
    let root_ctx = cx.span().span_context().clone();
    let mut child = tracer.span_builder("SELECT cart").with_kind(SpanKind::Client).start_with_context(&tracer, &cx);
    child.add_event("retry", vec![KeyValue::new("attempt", 2i64)]);
    child.add_link(root_ctx.clone(), vec![KeyValue::new("link.kind", "self")]);
    child.set_status(Status::error("db timeout"));
    let child_ctx = child.span_context().clone();
    child.end();
    cx.span().end();
    provider.force_flush().expect("flush exporter");
    provider.shutdown().expect("shutdown exporter");
    Emitted {
        trace_id: root_ctx.trace_id().to_bytes(),
        root: root_ctx.span_id().to_bytes(),
        child: child_ctx.span_id().to_bytes(),
    }
}

fn provider(exporter: SpanExporter, service: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_string()).build())
        .build()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

/// Compares what Strata returns with what the SDK was told to record, span by span.
fn check_trace(rs: &[ResourceSpans], e: &Emitted, service: &str) {
    assert_eq!(rs.len(), 1, "one resource");
    let res = rs[0].resource.as_ref().expect("resource");
    assert_eq!(strata::model::service_name(res), Some(service));
    assert_eq!(rs[0].scope_spans.len(), 1);
    let scope = rs[0].scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(scope.name, "e2e-scope");
    let spans = &rs[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    let root = spans.iter().find(|s| s.span_id == e.root).expect("root span");
    let child = spans.iter().find(|s| s.span_id == e.child).expect("child span");
    for s in spans {
        assert_eq!(s.trace_id, e.trace_id);
        assert!(s.status.is_some(), "every span carries a status");
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    assert_eq!(root.name, "GET /cart");
    assert_eq!(root.kind, 2);
    assert!(root.parent_span_id.is_empty());
    assert_eq!(attr(root, "http.method"), Some(&Value::StringValue("GET".into())));
    assert_eq!(attr(root, "http.status_code"), Some(&Value::IntValue(200)));
    assert_eq!(attr(root, "ratio"), Some(&Value::DoubleValue(0.25)));
    assert_eq!(attr(root, "cached"), Some(&Value::BoolValue(true)));
    assert_eq!(child.name, "SELECT cart");
    assert_eq!(child.kind, 3);
    assert_eq!(child.parent_span_id, e.root);
    let st = child.status.as_ref().expect("status");
    assert_eq!((st.code, st.message.as_str()), (2, "db timeout"));
    assert_eq!(child.events.len(), 1);
    assert_eq!(child.events[0].name, "retry");
    assert_eq!(child.events[0].attributes[0].key, "attempt");
    assert_eq!(child.links.len(), 1);
    assert_eq!(child.links[0].span_id, e.root);
    assert_eq!(child.links[0].trace_id, e.trace_id);
}

/// Reads the trace back every way Tempo serves it, before and after it moves into a block.
fn read_back(server: &Server, e: &Emitted, service: &str) {
    for phase in ["live", "block"] {
        let rs = server.trace(None, &e.trace_id).unwrap_or_else(|| panic!("{phase}: trace not found"));
        check_trace(&rs, e, service);
        // v1 protobuf is tempopb.Trace, wire-identical to TracesData.
        let r = http()
            .get(format!("{}/api/traces/{}", server.api, hex::encode(e.trace_id)))
            .header("Accept", "application/protobuf")
            .send()
            .expect("v1");
        assert_eq!(r.status(), 200);
        let t = <strata::api::tempopb::Trace as prost::Message>::decode(r.bytes().expect("body")).expect("decode v1");
        check_trace(&t.resource_spans, e, service);
        // JSON: Tempo style, base64 IDs and enum names.
        let j: serde_json::Value = http()
            .get(format!("{}/api/traces/{}", server.api, hex::encode(e.trace_id)))
            .send()
            .expect("v1 json")
            .json()
            .expect("json");
        let spans = &j["batches"][0]["scopeSpans"][0]["spans"];
        let b64 = base64::engine::general_purpose::STANDARD.encode(e.trace_id);
        assert!(spans.as_array().is_some_and(|a| a.len() == 2), "{j}");
        assert!(spans.as_array().is_some_and(|a| a.iter().all(|s| s["traceId"] == b64.as_str())), "{j}");
        assert!(spans.as_array().is_some_and(|a| a.iter().any(|s| s["kind"] == "SPAN_KIND_SERVER")), "{j}");
        let v2: serde_json::Value = http()
            .get(format!("{}/api/v2/traces/{}", server.api, hex::encode(e.trace_id)))
            .send()
            .expect("v2 json")
            .json()
            .expect("json");
        assert_eq!(v2["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().map(Vec::len), Some(2));
        if phase == "live" {
            server.flush();
        }
    }
}

/// Runs the SDK against a fresh server through one of the exporters and reads the trace back.
fn sdk_round_trip(service: &str, build: impl FnOnce(&Server) -> SpanExporter) {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[]);
    let e = emit(provider(build(&server), service));
    read_back(&server, &e, service);
}

#[test]
fn sdk_grpc_exporter_with_gzip() {
    // tonic needs a runtime to be current while the SDK exports.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    sdk_round_trip("grpc-svc", |s| {
        SpanExporter::builder()
            .with_tonic()
            .with_endpoint(s.grpc.clone())
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .expect("grpc exporter")
    });
}

#[test]
fn sdk_http_protobuf_exporter() {
    sdk_round_trip("http-svc", |s| http_exporter(s, Protocol::HttpBinary));
}

#[test]
fn sdk_http_json_exporter() {
    sdk_round_trip("json-svc", |s| http_exporter(s, Protocol::HttpJson));
}

fn http_exporter(s: &Server, protocol: Protocol) -> SpanExporter {
    SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(format!("{}/v1/traces", s.otlp_http))
        .build()
        .expect("http exporter")
}

#[test]
fn browser_otlp_json_post_with_cors() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[]);
    let url = format!("{}/v1/traces", server.otlp_http);
    let pre = http()
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://shop.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,traceparent,tracestate")
        .send()
        .expect("preflight");
    assert!(pre.status().is_success(), "preflight {}", pre.status());
    let allowed =
        pre.headers().get("access-control-allow-headers").and_then(|v| v.to_str().ok()).unwrap_or("").to_lowercase();
    for h in ["content-type", "traceparent", "tracestate"] {
        assert!(allowed.contains(h), "{h} not allowed: {allowed}");
    }
    assert_eq!(
        pre.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("http://shop.example")
    );
    // What the OpenTelemetry JS web exporter sends: hex IDs, string int64s, numeric enums.
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web-ui"}}]},
      "scopeSpans":[{"scope":{"name":"@opentelemetry/instrumentation-fetch","version":"0.50.0"},"spans":[
        {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"HTTP GET","kind":3,
         "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000",
         "attributes":[{"key":"http.url","value":{"stringValue":"/api/cart"}},{"key":"http.status_code","value":{"intValue":"200"}}],
         "events":[{"timeUnixNano":"1700000000100000000","name":"responseStart"}],
         "status":{"code":1}}]}]}]}"#;
    let r = http()
        .post(&url)
        .header("Origin", "http://shop.example")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .expect("post");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("access-control-allow-origin"));
    let id = hex::decode("0af7651916cd43dd8448eb211c80319c").expect("hex");
    let rs = server.trace(None, &id).expect("browser trace found");
    let span = &rs[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "HTTP GET");
    assert_eq!(span.kind, 3);
    assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 250_000_000);
    assert_eq!(attr(span, "http.status_code"), Some(&Value::IntValue(200)));
    assert_eq!(span.events[0].name, "responseStart");
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(1));
    assert_eq!(rs[0].scope_spans[0].scope.as_ref().map(|s| s.version.as_str()), Some("0.50.0"));
}

#[test]
fn tenants_are_kept_apart() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(server.post_otlp(Some("team-a"), &common::request(1, 1, 3, "a")), 200);
    assert_eq!(server.post_otlp(Some("team-b"), &common::request(2, 1, 2, "b")), 200);
    for phase in ["live", "block"] {
        assert_eq!(
            server.trace(Some("team-a"), &common::trace_id(1)).map(|r| common::span_count(&r)),
            Some(3),
            "{phase}"
        );
        assert!(server.trace(Some("team-b"), &common::trace_id(1)).is_none(), "{phase}");
        assert!(server.trace(None, &common::trace_id(1)).is_none(), "{phase}");
        assert_eq!(
            server.trace(Some("team-b"), &common::trace_id(2)).map(|r| common::span_count(&r)),
            Some(2),
            "{phase}"
        );
        server.flush();
    }
    let blocks = dir.path().join("data/blocks");
    assert!(blocks.join("team-a/index.json").exists());
    assert!(blocks.join("team-b/index.json").exists());
}
