//! Zipkin and Jaeger end to end. Real clients (the OpenTelemetry Python exporters for Zipkin JSON, Zipkin
//! protobuf, Jaeger Thrift over HTTP and Jaeger gRPC, installed from PyPI by `tests/clients/install.sh`) send one
//! known trace each; it is read back through Tempo's API and Jaeger's, and compared field by field. Jaeger's JSON
//! is decoded with structs that reject unknown fields. Bad input for each protocol gets a clear 4xx / gRPC code;
//! dependencies are checked on a known topology.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{Server, http};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;

// ---- Jaeger's JSON, strictly ----

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    data: Option<T>,
    total: usize,
    #[allow(dead_code)]
    limit: usize,
    #[allow(dead_code)]
    offset: usize,
    errors: Option<Vec<JError>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JError {
    #[serde(default)]
    code: u16,
    msg: String,
    #[serde(rename = "traceID", default)]
    #[allow(dead_code)]
    trace_id: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<JSpan>,
    processes: HashMap<String, JProcess>,
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    flags: u32,
    operation_name: String,
    references: Vec<JRef>,
    start_time: u64,
    duration: u64,
    tags: Vec<JKeyValue>,
    logs: Vec<JLog>,
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JRef {
    ref_type: String,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JProcess {
    service_name: String,
    tags: Vec<JKeyValue>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JLog {
    timestamp: u64,
    fields: Vec<JKeyValue>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct JKeyValue {
    key: String,
    #[serde(rename = "type")]
    ty: String,
    value: serde_json::Value,
}

#[derive(Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JDependency {
    parent: String,
    child: String,
    call_count: u64,
}

#[derive(Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JOperation {
    name: String,
    span_kind: String,
}

fn get<T: serde::de::DeserializeOwned>(url: &str) -> (u16, Envelope<T>) {
    let r = http().get(url).send().expect("request");
    let status = r.status().as_u16();
    let text = r.text().expect("body");
    let env = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not Jaeger's shape ({e}): {text}"));
    (status, env)
}

// ---- The real clients ----

/// The Python exporters' directory, installed (once per machine) by the script the test command also uses.
fn clients() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("tests/clients/install.sh"))
        .output()
        .expect("tests/clients/install.sh needs bash and python3 with pip");
    assert!(out.status.success(), "installing the Python clients failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[derive(Deserialize, Debug)]
struct Emitted {
    trace_id: String,
    spans: HashMap<String, String>,
    service: String,
}

fn emit(pythonpath: &str, protocol: &str, endpoint: &str) -> Emitted {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/clients/emit.py"))
        .args([protocol, endpoint])
        .env("PYTHONPATH", pythonpath)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{protocol} client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{protocol}: bad client output ({e})"))
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn str_value(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The trace as Tempo's API returns it: each span with its resource and scope name.
fn spans_of(rs: &[ResourceSpans]) -> Vec<(Resource, String, Span)> {
    let mut out = Vec::new();
    for r in rs {
        for ss in &r.scope_spans {
            for s in &ss.spans {
                out.push((
                    r.resource.clone().unwrap_or_default(),
                    ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                    s.clone(),
                ));
            }
        }
    }
    out
}

/// Checks the known trace field by field, through Tempo's API (OTLP) and Jaeger's.
fn check(server: &Server, protocol: &str, e: &Emitted) {
    let typed = protocol.starts_with("jaeger");
    let id = hex::decode(&e.trace_id).expect("hex trace ID");
    let rs = server.trace(None, &id).unwrap_or_else(|| panic!("{protocol}: trace not found"));
    let spans = spans_of(&rs);
    assert_eq!(spans.len(), 3, "{protocol}: {spans:?}");
    let by_name =
        |n: &str| spans.iter().find(|(_, _, s)| s.name == n).unwrap_or_else(|| panic!("{protocol}: no span {n}"));
    let (res, scope, root) = by_name("GET /cart");
    let (_, _, client) = by_name("SELECT cart");
    let (_, _, internal) = by_name("serialize");
    for (name, s) in [("GET /cart", root), ("SELECT cart", client), ("serialize", internal)] {
        assert_eq!(hex::encode(&s.span_id), e.spans[name], "{protocol}: {name} span ID");
        assert_eq!(s.trace_id, id, "{protocol}: {name} trace ID");
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    }
    assert_eq!(str_value(attr(&res.attributes, "service.name")), Some(e.service.as_str()), "{protocol}");
    assert_eq!(scope, "e2e-scope", "{protocol}: scope from otel.scope.name");
    assert!(root.parent_span_id.is_empty(), "{protocol}: root has no parent");
    assert_eq!(client.parent_span_id, root.span_id, "{protocol}: client's parent");
    assert_eq!(internal.parent_span_id, client.span_id, "{protocol}: grandchild's parent");
    assert_eq!((root.kind, client.kind, internal.kind), (2, 3, 1), "{protocol}: server, client, internal");
    assert_eq!(
        client.status,
        Some(Status { code: 2, message: "db timeout".into() }),
        "{protocol}: error status from the tags"
    );
    assert_eq!(internal.status.as_ref().map(|s| s.code), Some(1), "{protocol}: OK status");
    assert!(root.status.as_ref().is_none_or(|s| s.code == 0), "{protocol}: unset status");
    for derived in ["span.kind", "otel.status_code", "error", "otel.scope.name", "otel.status_description"] {
        assert!(attr(&client.attributes, derived).is_none(), "{protocol}: {derived} went back into its field");
    }
    assert_eq!(str_value(attr(&root.attributes, "http.method")), Some("GET"), "{protocol}");
    if typed {
        // Jaeger keeps tag types.
        assert_eq!(attr(&root.attributes, "http.status_code"), Some(&Value::IntValue(200)), "{protocol}");
        assert_eq!(attr(&root.attributes, "ratio"), Some(&Value::DoubleValue(0.25)), "{protocol}");
        assert_eq!(attr(&root.attributes, "cached"), Some(&Value::BoolValue(true)), "{protocol}");
        assert_eq!(client.links.len(), 1, "{protocol}: FOLLOWS_FROM becomes a link");
        assert_eq!(client.links[0].span_id, root.span_id, "{protocol}: link target");
    } else {
        // Zipkin tags are strings.
        assert_eq!(str_value(attr(&root.attributes, "http.status_code")), Some("200"), "{protocol}");
        assert_eq!(str_value(attr(&root.attributes, "cached")), Some("true"), "{protocol}");
    }
    assert_eq!(client.events.len(), 1, "{protocol}: one event");
    let ev = &client.events[0];
    assert_eq!(attr(&ev.attributes, "attempt"), Some(&Value::IntValue(2)), "{protocol}: event attribute");
    if protocol.starts_with("zipkin") {
        assert_eq!(ev.name, "retry", "{protocol}: event name from the annotation");
    } else {
        // These clients name the event in a `message` field; only `event` names it (as in the Collector).
        assert_eq!(str_value(attr(&ev.attributes, "message")), Some("retry"), "{protocol}");
        assert_eq!(ev.name, "", "{protocol}");
        let ref_type = str_value(attr(&client.links[0].attributes, "opentracing.ref_type"));
        assert_eq!(ref_type, Some("follows_from"), "{protocol}: the reference type noted on the link");
    }
    if protocol.starts_with("jaeger-grpc") || protocol.starts_with("zipkin") {
        // jaeger-grpc sends the resource as each span's process; the Zipkin exporters copy it into every span's
        // tags, which go back to the resource.
        assert_eq!(str_value(attr(&res.attributes, "host.name")), Some("h1"), "{protocol}: resource attributes");
        assert_eq!(str_value(attr(&res.attributes, "deployment.environment")), Some("test"), "{protocol}");
        if protocol.starts_with("zipkin") {
            assert!(attr(&root.attributes, "host.name").is_none(), "{protocol}: not on the span");
        }
    }

    // Jaeger's API: the same trace in Jaeger's UI model.
    let (status, env) = get::<Vec<JTrace>>(&format!("{}/jaeger/api/traces/{}", server.api, e.trace_id));
    assert_eq!(status, 200, "{protocol}");
    assert!(env.errors.is_none());
    let data = env.data.expect("data");
    assert_eq!(data.len(), 1);
    let t = &data[0];
    assert_eq!(t.trace_id, e.trace_id);
    assert!(t.warnings.is_none());
    assert_eq!(t.spans.len(), 3);
    let js = |n: &str| t.spans.iter().find(|s| s.operation_name == n).unwrap_or_else(|| panic!("{protocol}: {n}"));
    let (jroot, jclient) = (js("GET /cart"), js("SELECT cart"));
    assert_eq!(jroot.span_id, e.spans["GET /cart"]);
    assert!(jroot.references.is_empty());
    assert_eq!(jclient.references[0].ref_type, "CHILD_OF");
    assert_eq!(jclient.references[0].span_id, e.spans["GET /cart"]);
    assert_eq!(jclient.references[0].trace_id, e.trace_id);
    assert_eq!(jroot.start_time, root.start_time_unix_nano / 1000);
    assert_eq!(jroot.duration, (root.end_time_unix_nano - root.start_time_unix_nano) / 1000);
    assert!(t.spans.iter().all(|s| s.trace_id == e.trace_id && s.warnings.is_none()));
    let tag = |s: &JSpan, k: &str| s.tags.iter().find(|t| t.key == k).cloned();
    let kind = tag(jclient, "span.kind").expect("span.kind tag");
    assert_eq!((kind.ty.as_str(), kind.value.as_str()), ("string", Some("client")));
    let err = tag(jclient, "error").expect("error tag");
    assert_eq!((err.ty.as_str(), err.value.as_bool()), ("bool", Some(true)));
    if typed {
        let code = tag(jroot, "http.status_code").expect("typed tag");
        assert_eq!((code.ty.as_str(), code.value.as_i64()), ("int64", Some(200)));
        assert_eq!(jclient.references.len(), 2, "{protocol}: the link as FOLLOWS_FROM");
        assert_eq!(jclient.references[1].ref_type, "FOLLOWS_FROM");
    }
    assert_eq!(jclient.logs.len(), 1);
    assert_eq!(jclient.logs[0].timestamp, ev.time_unix_nano / 1000);
    assert!(jclient.logs[0].fields.iter().any(|f| f.key == "attempt" && f.ty == "int64" && f.value == 2));
    assert_eq!(t.processes[&jroot.process_id].service_name, e.service);
    assert!(t.processes.values().all(|p| p.tags.iter().all(|t| t.key != "service.name")));
}

#[test]
fn zipkin_and_jaeger_clients_round_trip() {
    let pythonpath = clients();
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[]);
    let grpc_endpoint = server.jaeger_grpc.trim_start_matches("http://").to_string();
    let cases = [
        ("zipkin-json", format!("{}/api/v2/spans", server.zipkin)),
        ("zipkin-proto", format!("{}/api/v2/spans", server.zipkin)),
        ("jaeger-thrift", format!("{}/api/traces", server.jaeger_thrift)),
        ("jaeger-grpc", grpc_endpoint),
    ];
    let emitted: Vec<(&str, Emitted)> = cases.iter().map(|(p, ep)| (*p, emit(&pythonpath, p, ep))).collect();
    for phase in ["live", "block"] {
        for (p, e) in &emitted {
            check(&server, &format!("{p} ({phase})"), e);
        }
        if phase == "live" {
            server.flush();
        }
    }

    // Jaeger search, services and operations see them.
    let (_, services) = get::<Vec<String>>(&format!("{}/jaeger/api/services", server.api));
    let names = services.data.expect("services");
    assert_eq!(services.total, names.len());
    for (p, _) in &emitted {
        assert!(names.contains(&format!("e2e-{p}")), "{names:?}");
    }
    let (_, ops) = get::<Vec<String>>(&format!("{}/jaeger/api/services/e2e-jaeger-grpc/operations", server.api));
    assert_eq!(ops.data.expect("ops"), ["GET /cart", "SELECT cart", "serialize"]);
    let (_, ops) = get::<Vec<JOperation>>(&format!(
        "{}/jaeger/api/operations?service=e2e-zipkin-json&spanKind=client",
        server.api
    ));
    assert_eq!(ops.data.expect("ops"), [JOperation { name: "SELECT cart".into(), span_kind: "client".into() }]);
    let (_, none) = get::<Vec<String>>(&format!("{}/jaeger/api/services/nobody/operations", server.api));
    assert_eq!(none.data.expect("ops"), Vec::<String>::new());

    let jaeger = &emitted[3].1;
    let search = |q: &str| -> Vec<String> {
        let (status, env) = get::<Vec<JTrace>>(&format!("{}/jaeger/api/traces?{q}", server.api));
        assert_eq!(status, 200, "{q}");
        env.data.expect("data").into_iter().map(|t| t.trace_id).collect()
    };
    let found = search(r#"service=e2e-jaeger-grpc&operation=SELECT%20cart&tags=%7B%22error%22%3A%22true%22%7D"#);
    assert_eq!(found, std::slice::from_ref(&jaeger.trace_id));
    assert_eq!(search("service=e2e-jaeger-grpc&tags=%7B%22http.status_code%22%3A%22200%22%7D"), found);
    assert_eq!(search("service=e2e-jaeger-grpc&tag=cached:true"), found);
    assert!(search("service=e2e-jaeger-grpc&minDuration=1h").is_empty(), "no span lasts an hour");
    assert!(search("service=e2e-jaeger-grpc&operation=serialize&tags=%7B%22error%22%3A%22true%22%7D").is_empty());
    assert_eq!(search("").len(), 4, "no condition: every trace");
    assert_eq!(search("limit=2").len(), 2);
    assert_eq!(search(&format!("traceID={}", jaeger.trace_id)), found);

    // Bad requests: Jaeger's error shape and a 4xx.
    for (q, want) in [
        ("minDuration=abc", "minDuration"),
        ("tags=%7Bnot", "tags"),
        ("tag=novalue", "tag"),
        ("minDuration=2s&maxDuration=1s", "maxDuration"),
        ("start=x", "start"),
    ] {
        let (status, env) = get::<Option<Vec<JTrace>>>(&format!("{}/jaeger/api/traces?{q}", server.api));
        assert_eq!(status, 400, "{q}");
        let errors = env.errors.expect("errors");
        assert_eq!(errors[0].code, 400);
        assert!(errors[0].msg.contains(want), "{q}: {}", errors[0].msg);
    }
    let (status, env) = get::<Option<Vec<JTrace>>>(&format!("{}/jaeger/api/traces/{}", server.api, "ab".repeat(16)));
    assert_eq!(status, 404);
    assert_eq!(env.errors.expect("errors")[0].msg, "trace not found");
    let (status, _) = get::<Option<Vec<JTrace>>>(&format!("{}/jaeger/api/traces/xyz", server.api));
    assert_eq!(status, 400);
    for (path, want) in [
        ("traces?limit=1501", "limit"),
        ("operations", "service"),
        ("operations?service=a&spanKind=sideways", "spanKind"),
    ] {
        let (status, env) = get::<Option<Vec<JTrace>>>(&format!("{}/jaeger/api/{path}", server.api));
        assert_eq!(status, 400, "{path}");
        assert!(env.errors.expect("errors")[0].msg.contains(want), "{path}");
    }
    // Tag keys and values with quotes, backslashes and control characters are searched, not misparsed.
    let tags = serde_json::json!({ "a\"b\\c\td": "x\"y\\z\n" }).to_string();
    let url =
        reqwest::Url::parse_with_params(&format!("{}/jaeger/api/traces", server.api), &[("tags", tags)]).expect("url");
    let (status, env) = get::<Vec<JTrace>>(url.as_str());
    assert_eq!(status, 200, "{:?}", env.errors);
    assert!(env.data.expect("data").is_empty());
}

#[test]
fn bad_zipkin_and_jaeger_input_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[("STRATA_MAX_REQUEST_BYTES", "100000")]);
    let post = |url: String, ct: &str, body: Vec<u8>| {
        let r = http().post(url).header("Content-Type", ct).body(body).send().expect("post");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    for url in [format!("{}/api/v2/spans", server.zipkin), format!("{}/api/traces", server.jaeger_thrift)] {
        let r = http().post(&url).header("X-Scope-OrgID", "a/b").body("[]").send().expect("post");
        assert_eq!(r.status().as_u16(), 400, "{url}: a bad tenant");
    }
    let zipkin = format!("{}/api/v2/spans", server.zipkin);
    let thrift = format!("{}/api/traces", server.jaeger_thrift);
    let cases: Vec<(String, &str, Vec<u8>, u16, &str)> = vec![
        (zipkin.clone(), "application/json", b"{not json".to_vec(), 400, "Zipkin JSON"),
        (zipkin.clone(), "application/json", br#"[{"traceId":"xyz","id":"1"}]"#.to_vec(), 400, "traceId"),
        (zipkin.clone(), "application/json", br#"[{"traceId":"0","id":"0"}]"#.to_vec(), 400, "no valid span"),
        (zipkin.clone(), "application/x-protobuf", vec![0xff, 0xff, 0xff], 400, "Zipkin protobuf"),
        (zipkin.clone(), "text/csv", b"a,b".to_vec(), 415, "content type"),
        (thrift.clone(), "application/x-thrift", vec![0x0c, 0x00, 0x01, 0x0b], 400, "Thrift"),
        // A list claiming two billion spans.
        (
            thrift.clone(),
            "application/x-thrift",
            vec![0x0f, 0x00, 0x02, 0x0c, 0x7f, 0xff, 0xff, 0xff, 0],
            400,
            "Thrift",
        ),
        (thrift.clone(), "application/json", b"[]".to_vec(), 415, "x-thrift"),
        // Spans given as a list of integers.
        (
            thrift.clone(),
            "application/x-thrift",
            vec![0x0f, 0, 2, 0x08, 0, 0, 0, 1, 0, 0, 0, 5, 0],
            400,
            "list of structs",
        ),
    ];
    for (url, ct, body, want, text) in cases {
        let (status, msg) = post(url.clone(), ct, body);
        assert_eq!(status, want, "{url} {ct}: {msg}");
        assert!(msg.contains(text), "{url} {ct}: {msg:?} should mention {text:?}");
    }
    let big = vec![b' '; 200_000];
    assert_eq!(post(zipkin, "application/json", big).0, 413, "over the request size limit");

    // gRPC: a batch with only invalid spans is INVALID_ARGUMENT; a valid one is accepted and durable.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use strata::receiver::jaeger::proto::{
            Batch, PostSpansRequest, Process, Span as JaegerSpan, collector_service_client::CollectorServiceClient,
        };
        let mut client = CollectorServiceClient::connect(server.jaeger_grpc.clone()).await.expect("connect");
        let bad = PostSpansRequest {
            batch: Some(Batch {
                spans: vec![JaegerSpan { trace_id: vec![0; 16], ..Default::default() }],
                process: None,
            }),
        };
        let err = client.post_spans(bad).await.expect_err("invalid IDs");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        let mut req = tonic::Request::new(PostSpansRequest::default());
        req.metadata_mut().insert("x-scope-orgid", "a/b".parse().expect("metadata"));
        assert_eq!(client.post_spans(req).await.expect_err("bad tenant").code(), tonic::Code::InvalidArgument);
        let many = PostSpansRequest {
            batch: Some(Batch {
                spans: vec![JaegerSpan { operation_name: "x".repeat(1000), ..Default::default() }; 200],
                process: None,
            }),
        };
        let err = client.post_spans(many).await.expect_err("over the request size limit");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
        // Malformed protobuf on the wire: INVALID_ARGUMENT (not tonic's INTERNAL).
        let channel = tonic::transport::Channel::from_shared(server.jaeger_grpc.clone()).expect("uri");
        let mut raw = tonic::client::Grpc::new(channel.connect().await.expect("connect"));
        raw.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans");
        let err = raw
            .unary::<_, strata::receiver::jaeger::proto::PostSpansResponse, _>(
                tonic::Request::new(vec![0xffu8, 0xff, 0xff, 0x0f, 0x01]),
                path,
                common::RawCodec::default(),
            )
            .await
            .expect_err("malformed");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        let good = PostSpansRequest {
            batch: Some(Batch {
                spans: vec![JaegerSpan {
                    trace_id: vec![7; 16],
                    span_id: vec![1; 8],
                    operation_name: "op".into(),
                    start_time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                    duration: Some(prost_types::Duration { seconds: 0, nanos: 5_000 }),
                    ..Default::default()
                }],
                process: Some(Process { service_name: "grpc-direct".into(), tags: vec![] }),
            }),
        };
        client.post_spans(good).await.expect("accepted");
    });
    let rs = server.trace(None, &[7; 16]).expect("the accepted span is stored");
    assert_eq!(common::span_count(&rs), 1);
    let ready = http().get(format!("{}/ready", server.api)).send().expect("ready");
    assert_eq!(ready.status(), 200, "bad input did not hurt the server");
}

fn any(s: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::StringValue(s.into())) })
}

/// `calls` traces of a -> b -> c plus a -> d, and a same-service child that is no dependency.
fn topology(calls: u64) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let mut by_service: HashMap<&str, Vec<Span>> = HashMap::new();
    for t in 0..calls {
        let trace_id = common::trace_id(1000 + t);
        let span = |n: u8, parent: Option<u8>| Span {
            trace_id: trace_id.clone(),
            span_id: vec![n; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("op{n}"),
            start_time_unix_nano: now - 1_000_000_000 + u64::from(n),
            end_time_unix_nano: now,
            ..Default::default()
        };
        by_service.entry("a").or_default().extend([span(1, None), span(5, Some(1))]);
        by_service.entry("b").or_default().push(span(2, Some(1)));
        by_service.entry("c").or_default().push(span(3, Some(2)));
        by_service.entry("d").or_default().push(span(4, Some(1)));
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![common::kv("service.name", any(svc))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
    }
}

#[test]
fn jaeger_dependencies_follow_the_topology() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(server.post_otlp(None, &topology(3)), 200);
    let deps = |q: &str| {
        let (status, env) = get::<Vec<JDependency>>(&format!("{}/jaeger/api/dependencies?{q}", server.api));
        assert_eq!(status, 200, "{q}");
        let mut d = env.data.expect("data");
        d.sort();
        d
    };
    let dep = |p: &str, c: &str, n: u64| JDependency { parent: p.into(), child: c.into(), call_count: n };
    let want = vec![dep("a", "b", 3), dep("a", "d", 3), dep("b", "c", 3)];
    let ops = |svc: &str| {
        let (status, env) = get::<Vec<JOperation>>(&format!("{}/jaeger/api/operations?service={svc}", server.api));
        assert_eq!(status, 200);
        env.data.expect("data").into_iter().map(|o| (o.name, o.span_kind)).collect::<Vec<_>>()
    };
    let a_ops = vec![("op1".to_string(), String::new()), ("op5".to_string(), String::new())];
    assert_eq!(deps(""), want, "in memory");
    assert_eq!(ops("a"), a_ops, "operations in memory");
    server.flush();
    assert_eq!(deps(""), want, "from a block");
    assert_eq!(ops("a"), a_ops, "operations from a block");
    assert!(ops("nobody").is_empty());
    // A retried export stores the same spans again (in memory now, in a block before): counted once.
    assert_eq!(server.post_otlp(None, &topology(3)), 200);
    assert_eq!(deps(""), want, "duplicates count once");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    assert_eq!(deps(&format!("endTs={now_ms}&lookback=60000")), want);
    assert!(deps(&format!("endTs={}&lookback=60000", now_ms - 3_600_000)).is_empty(), "an hour ago: nothing");
    assert_eq!(deps("service=c"), vec![dep("b", "c", 3)]);
    let (status, env) = get::<Option<Vec<JDependency>>>(&format!("{}/jaeger/api/dependencies?endTs=soon", server.api));
    assert_eq!(status, 400);
    assert!(env.errors.expect("errors")[0].msg.contains("endTs"));
}
