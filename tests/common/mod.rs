//! Test harness: starts the real `strata` binary on free loopback ports and talks to it like clients do.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use strata::api::tempopb::TraceByIdResponse;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running `strata` process. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    pub api: String,
    pub otlp_http: String,
    pub grpc: String,
    /// Zipkin (`http://127.0.0.1:<port>`), Jaeger gRPC and Jaeger Thrift-over-HTTP receivers.
    pub zipkin: String,
    pub jaeger_grpc: String,
    pub jaeger_thrift: String,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    ports: [u16; 6],
}

impl Server {
    /// Starts strata with its data in `data_dir` and extra environment variables, and waits until it is ready.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let ports = [(); 6].map(|()| free_port());
        let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let mut s = Server {
            child: None,
            api: url(0),
            otlp_http: url(1),
            grpc: url(2),
            zipkin: url(3),
            jaeger_grpc: url(4),
            jaeger_thrift: url(5),
            data_dir: data_dir.to_path_buf(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: data_dir.with_extension("log"),
            ports,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        // STRATA_TEST_BIN runs another build (e.g. release, for the UI benchmark) through the same harness.
        let bin = std::env::var("STRATA_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").to_string());
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STRATA_DATA_DIR", &self.data_dir)
            .env("STRATA_HTTP_ADDR", format!("127.0.0.1:{}", self.ports[0]))
            .env("STRATA_OTLP_HTTP_ADDR", format!("127.0.0.1:{}", self.ports[1]))
            .env("STRATA_OTLP_GRPC_ADDR", format!("127.0.0.1:{}", self.ports[2]))
            .env("STRATA_ZIPKIN_ADDR", format!("127.0.0.1:{}", self.ports[3]))
            .env("STRATA_JAEGER_GRPC_ADDR", format!("127.0.0.1:{}", self.ports[4]))
            .env("STRATA_JAEGER_THRIFT_HTTP_ADDR", format!("127.0.0.1:{}", self.ports[5]))
            .env("STRATA_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start strata"));
        self.wait_ready(Duration::from_secs(60));
    }

    /// Starts the process again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        let client = http();
        loop {
            if let Ok(r) = client.get(format!("{}/api/echo", self.api)).send()
                && r.status().is_success()
            {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("strata exited early with {st}:\n{}", self.logs());
            }
            assert!(start.elapsed() < limit, "strata not ready after {limit:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let start = Instant::now();
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    assert!(st.success(), "strata exited with {st} after SIGTERM:\n{}", self.logs());
                    return;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "strata did not stop:\n{}", self.logs());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn flush(&self) {
        let r = http().post(format!("{}/flush", self.api)).send().expect("flush");
        assert!(r.status().is_success(), "flush failed: {}", r.status());
    }

    /// Trace by ID over v2 with protobuf, the way Grafana asks. None on 404.
    pub fn trace(&self, tenant: Option<&str>, id: &[u8]) -> Option<Vec<ResourceSpans>> {
        let mut req = http()
            .get(format!("{}/api/v2/traces/{}", self.api, hex::encode(id)))
            .header("Accept", "application/protobuf");
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let r = req.send().expect("trace request");
        if r.status() == 404 {
            return None;
        }
        assert!(r.status().is_success(), "trace lookup: {} {}", r.status(), r.text().unwrap_or_default());
        let resp = TraceByIdResponse::decode(r.bytes().expect("body")).expect("TraceByIDResponse protobuf");
        Some(resp.trace.expect("a 200 always carries a trace").resource_spans)
    }

    /// POSTs an OTLP protobuf request; returns the HTTP status.
    pub fn post_otlp(&self, tenant: Option<&str>, req: &ExportTraceServiceRequest) -> u16 {
        let mut r = http()
            .post(format!("{}/v1/traces", self.otlp_http))
            .header("Content-Type", "application/x-protobuf")
            .body(req.encode_to_vec());
        if let Some(t) = tenant {
            r = r.header("X-Scope-OrgID", t);
        }
        r.send().map(|r| r.status().as_u16()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client")
}

pub fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::StringValue(v.into())) })
}

pub fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue { key: k.into(), value: v, ..Default::default() }
}

/// A deterministic 16-byte trace ID from a number.
pub fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0xab; 8];
    id.extend_from_slice(&n.to_be_bytes());
    id
}

/// One request with `traces` traces of `spans` spans each (a root and children), for service `svc`.
pub fn request(first_trace: u64, traces: u64, spans: u64, svc: &str) -> ExportTraceServiceRequest {
    let mut out = Vec::new();
    for t in first_trace..first_trace + traces {
        for i in 0..spans {
            let mut sid = t.to_be_bytes().to_vec();
            sid[0] = i as u8 + 1;
            let parent = if i == 0 {
                vec![]
            } else {
                let mut p = t.to_be_bytes().to_vec();
                p[0] = 1;
                p
            };
            out.push(Span {
                trace_id: trace_id(t),
                span_id: sid,
                parent_span_id: parent,
                name: format!("op-{i}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + t * 1000 + i,
                end_time_unix_nano: 1_700_000_000_000_000_000 + t * 1000 + i + 500,
                attributes: vec![
                    kv("http.method", s("GET")),
                    kv("i", Some(AnyValue { value: Some(Value::IntValue(i as i64)) })),
                ],
                status: Some(Status { code: if i == 1 { 2 } else { 0 }, message: String::new() }),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s(svc))], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "test".into(), ..Default::default() }),
                spans: out,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn span_count(rs: &[ResourceSpans]) -> usize {
    rs.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
}

/// An S3 server (moto) on a free loopback port.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub port: u16,
}

impl S3Server {
    /// A moto S3 server on a free port. A missing `moto_server` fails the test (`tests/run.sh` installs it).
    pub fn start() -> S3Server {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> S3Server {
        let bin = std::env::var("STRATA_TEST_MOTO").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = child.unwrap_or_else(|e| {
            panic!("the S3 tests need a real S3 server: {bin} cannot be started ({e}); tests/run.sh installs moto")
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while http().get(&endpoint).send().is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { child, endpoint, port }
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r = http().put(format!("{}/{bucket}", self.endpoint)).send().expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// One object's bytes, read with signed requests (objects are private).
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .with_allow_http(true)
            .build()
            .expect("S3 client");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let r = store.get(&object_store::path::Path::from(key)).await.expect("get object");
            r.bytes().await.expect("object body").to_vec()
        })
    }

    /// Every key in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let body = http()
            .get(format!("{}/{bucket}?list-type=2&max-keys=10000", self.endpoint))
            .send()
            .expect("list")
            .text()
            .expect("list body");
        body.split("<Key>").skip(1).filter_map(|p| p.split("</Key>").next()).map(str::to_string).collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gRPC codec that puts raw bytes on the wire as the request message (to send malformed protobuf) and decodes
/// the answer as `R`.
pub struct RawCodec<R>(std::marker::PhantomData<R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(std::marker::PhantomData)
    }
}

pub struct RawEncoder;

pub struct RawDecoder<R>(std::marker::PhantomData<R>);

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl<R: prost::Message + Default> tonic::codec::Decoder for RawDecoder<R> {
    type Item = R;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<R>, tonic::Status> {
        R::decode(src).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl<R: prost::Message + Default + Send + 'static> tonic::codec::Codec for RawCodec<R> {
    type Encode = Vec<u8>;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder<R>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder<R> {
        RawDecoder(std::marker::PhantomData)
    }
}
