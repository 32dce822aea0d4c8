//! Every class of bad input gets its exact status code, and the server keeps running and keeps good data.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Server, http, request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

fn post(server: &Server, ct: &str, body: Vec<u8>) -> reqwest::blocking::Response {
    http().post(format!("{}/v1/traces", server.otlp_http)).header("Content-Type", ct).body(body).send().expect("post")
}

#[test]
fn http_bad_input_classes() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[("STRATA_MAX_REQUEST_BYTES", "20000")]);

    // Malformed protobuf and JSON: 400 with a message.
    let r = post(&server, "application/x-protobuf", vec![0xff, 0xff, 0xff, 0x0f, 0x01]);
    assert_eq!(r.status(), 400);
    let st = r.bytes().expect("body");
    assert!(!st.is_empty(), "400 carries a google.rpc.Status");
    let r = post(&server, "application/json", b"{\"resourceSpans\": [ {".to_vec());
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("text").contains("malformed OTLP JSON"));
    let r = post(&server, "application/json", b"{\"resourceSpans\": 5}".to_vec());
    assert_eq!(r.status(), 400);

    // Unknown content type: 415.
    assert_eq!(post(&server, "text/plain", b"hello".to_vec()).status(), 415);
    assert_eq!(post(&server, "", b"hello".to_vec()).status(), 415);

    // Too large, plain and gzip-compressed (the limit applies after decompression): 413.
    let big = request(1, 40, 10, "big").encode_to_vec();
    assert!(big.len() > 20000);
    assert_eq!(post(&server, "application/x-protobuf", big.clone()).status(), 413);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&big).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 20000, "compressed body is under the limit");
    let r = http()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .body(gz)
        .send()
        .expect("post");
    assert_eq!(r.status(), 413);

    // A small gzip request is fine.
    let small = request(100, 1, 2, "gz").encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&small).expect("gzip");
    let r = http()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .expect("post");
    assert_eq!(r.status(), 200);
    assert!(server.trace(None, &common::trace_id(100)).is_some());

    // Invalid IDs: those spans rejected and counted, the rest kept.
    let mut req = request(200, 1, 3, "ids");
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    let mut bad_trace = spans[0].clone();
    bad_trace.trace_id = vec![0; 16];
    let mut short_trace = spans[0].clone();
    short_trace.trace_id = vec![1; 5];
    let mut bad_span = spans[0].clone();
    bad_span.span_id = vec![0; 8];
    spans.extend([bad_trace, short_trace, bad_span]);
    let r = post(&server, "application/x-protobuf", req.encode_to_vec());
    assert_eq!(r.status(), 200);
    let resp = ExportTraceServiceResponse::decode(r.bytes().expect("body")).expect("response");
    let ps = resp.partial_success.expect("partial success");
    assert_eq!(ps.rejected_spans, 3);
    assert!(ps.error_message.contains("trace ID"), "{}", ps.error_message);
    assert_eq!(server.trace(None, &common::trace_id(200)).map(|r| common::span_count(&r)), Some(3));

    // Bad tenant: 400. Bad trace IDs on the query API: 400; unknown: 404.
    let r = http()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", "../../etc")
        .body(request(300, 1, 1, "t").encode_to_vec())
        .send()
        .expect("post");
    assert_eq!(r.status(), 400);
    for bad in ["zz", "0123456789abcdef0123456789abcdef0", "0000"] {
        let r = http().get(format!("{}/api/traces/{bad}", server.api)).send().expect("get");
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.text().expect("text").contains("invalid trace ID"));
    }
    let r = http().get(format!("{}/api/v2/traces/abc?start=yesterday", server.api)).send().expect("get");
    assert_eq!(r.status(), 400);
    let r = http().get(format!("{}/api/v2/traces/abcdef", server.api)).send().expect("get");
    assert_eq!(r.status(), 404);

    // Still alive and serving.
    assert_eq!(http().get(format!("{}/ready", server.api)).send().expect("ready").status(), 200);
    let metrics = http().get(format!("{}/metrics", server.api)).send().expect("metrics").text().expect("text");
    assert!(metrics.contains("strata_ingest_spans_rejected_total{reason=\"invalid_span\"} 3"), "{metrics}");
}

#[test]
fn grpc_bad_input_classes() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[("STRATA_MAX_REQUEST_BYTES", "20000")]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(server.grpc.clone()).await.expect("connect");
        // Too large: RESOURCE_EXHAUSTED.
        let err = client.export(request(1, 40, 10, "big")).await.expect_err("too large");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        // Bad tenant: INVALID_ARGUMENT.
        let mut req = tonic::Request::new(request(2, 1, 1, "t"));
        req.metadata_mut().insert("x-scope-orgid", "a/b".parse().expect("meta"));
        let err = client.export(req).await.expect_err("bad tenant");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // Invalid IDs: partial success.
        let mut req = request(3, 1, 2, "ids");
        let mut bad = req.resource_spans[0].scope_spans[0].spans[0].clone();
        bad.span_id = vec![1; 3];
        req.resource_spans[0].scope_spans[0].spans.push(bad);
        let resp = client.export(req).await.expect("export").into_inner();
        assert_eq!(resp.partial_success.map(|p| p.rejected_spans), Some(1));
        // Malformed protobuf body: INVALID_ARGUMENT.
        let mut raw = tonic::client::Grpc::new(
            tonic::transport::Channel::from_shared(server.grpc.clone()).expect("uri").connect().await.expect("connect"),
        );
        raw.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
        let err = raw
            .unary::<_, ExportTraceServiceResponse, _>(
                tonic::Request::new(vec![0xffu8, 0xff, 0xff, 0x0f, 0x01]),
                path,
                common::RawCodec::<ExportTraceServiceResponse>::default(),
            )
            .await
            .expect_err("malformed");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    });
    assert_eq!(server.trace(None, &common::trace_id(3)).map(|r| common::span_count(&r)), Some(2));
}

/// A tmpfs mount that is unmounted on drop; None when this machine does not allow mounting (not root).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_wal_disk_answers_503_and_recovers() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let Some(disk) = SmallDisk::mount(&data, "1m") else {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root) to fill the WAL disk");
        return;
    };
    let blocks = dir.path().join("blocks");
    let mut server = Server::start(&data, &[("STRATA_LOCAL_PATH", blocks.to_str().expect("utf-8 path"))]);
    let mut acked = Vec::new();
    let mut refused = false;
    for t in 0..400u64 {
        match server.post_otlp(None, &request(t * 10, 10, 5, "disk")) {
            200 => acked.push(t * 10),
            503 => {
                refused = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused, "the WAL disk never filled up");
    assert!(!acked.is_empty());
    // Still alive, and everything acknowledged is there.
    assert_eq!(http().get(format!("{}/api/echo", server.api)).send().expect("echo").status(), 200);
    for t in &acked {
        assert_eq!(server.trace(None, &common::trace_id(*t)).map(|r| common::span_count(&r)), Some(5), "trace {t}");
    }
    // Flushing moves the data into blocks (another disk) and frees the WAL: ingest works again.
    server.flush();
    let status = server.post_otlp(None, &request(9_000_000, 1, 1, "disk"));
    assert_eq!(status, 200, "ingest after the flush freed the WAL:\n{}", server.logs());
    for t in acked.iter().step_by(7) {
        assert_eq!(server.trace(None, &common::trace_id(*t)).map(|r| common::span_count(&r)), Some(5), "trace {t}");
    }
    server.kill9();
    drop(disk);
}

#[test]
fn request_bytes_in_flight_are_bounded_across_requests() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[("STRATA_MAX_INFLIGHT_BYTES", "65536")]);
    let body = request(1, 100, 5, "big").encode_to_vec();
    assert!(body.len() > 40_000, "the request must take most of the budget: {}", body.len());
    // A client that declared a large body and is still sending it holds its share of the budget...
    let addr = server.otlp_http.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        slow,
        "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("headers");
    slow.write_all(&body[..100]).expect("first bytes");
    std::thread::sleep(Duration::from_millis(300));
    // ...so a second large request is refused with a retryable 429 instead of piling up in memory.
    let r = http()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("Content-Type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .expect("second request");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Once the first finishes, the budget is free again.
    slow.write_all(&body[100..]).expect("rest");
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut slow, &mut answer).expect("answer");
    assert_eq!(&answer, b"HTTP/1.1 200", "the slow request is served");
    drop(slow);
    assert_eq!(server.post_otlp(None, &request(1, 100, 5, "big")), 200);
}
