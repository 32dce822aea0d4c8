//! Span metrics and service graph, end to end: the real binary fed over OTLP/HTTP with a known topology, scraped by
//! a real Prometheus (Debian's `prometheus` package, installed by tests/run.sh), and asked through Prometheus' HTTP
//! API with the PromQL Grafana's service graph and RED panels use.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port, http, kv, s, trace_id};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One span of trace `t`, `kind`, with `parent` (0 = root) and status `error`.
#[allow(clippy::too_many_arguments)]
fn span(t: u64, id: u64, parent: u64, name: &str, kind: i32, error: bool, ms: u64, attrs: &[(&str, &str)]) -> Span {
    Span {
        trace_id: trace_id(t),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 { vec![] } else { parent.to_be_bytes().to_vec() },
        name: name.into(),
        kind,
        start_time_unix_nano: T0 + t * 1000 * MS,
        end_time_unix_nano: T0 + t * 1000 * MS + ms * MS,
        attributes: attrs.iter().map(|(k, v)| kv(k, s(v))).collect(),
        status: Some(Status { code: if error { 2 } else { 0 }, ..Default::default() }),
        ..Default::default()
    }
}

fn request(spans: Vec<(&str, Span)>) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for (svc, sp) in spans {
        by_service.entry(svc).or_default().push(sp);
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", s(svc))], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Trace `t`: a user calls frontend, which calls checkout (failing in every fourth trace), which queries a
/// database and publishes a message that worker consumes. The two halves of each pair arrive in different
/// requests (clients first in even traces, servers first in odd ones).
fn topology(t: u64) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let failed = t.is_multiple_of(4);
    let clients = vec![
        ("frontend", span(t, 1, 0, "GET /checkout", 2, false, 120, &[])),
        ("frontend", span(t, 2, 1, "POST /pay", 3, false, 100, &[])),
        (
            "checkout",
            span(t, 4, 3, "SELECT orders", 3, false, 20, &[("db.system", "postgresql"), ("db.name", "orders")]),
        ),
        ("checkout", span(t, 5, 3, "publish order", 4, false, 5, &[])),
    ];
    let servers = vec![
        ("checkout", span(t, 3, 2, "POST /pay", 2, failed, 90, &[])),
        ("worker", span(t, 6, 5, "consume order", 5, false, 30, &[])),
    ];
    if t.is_multiple_of(2) { (request(clients), request(servers)) } else { (request(servers), request(clients)) }
}

/// Starts Prometheus scraping `target` every second. Fails (never skips) when Prometheus is not installed.
fn prometheus(dir: &std::path::Path, target: &str) -> (Prometheus, String) {
    let bin = which("prometheus").expect(
        "prometheus is not installed: tests/run.sh installs Debian's `prometheus` package (apt-get install prometheus)",
    );
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: strata\n    \
             metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("prometheus config");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start prometheus");
    let p = Prometheus(child);
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !http().get(format!("{url}/-/ready")).send().is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(60), "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    (p, url)
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file())
}

/// An instant PromQL query: each series' labels (as `k=v` joined by `,`) -> value.
fn promql(url: &str, q: &str) -> BTreeMap<String, f64> {
    let r = http().get(format!("{url}/api/v1/query")).query(&[("query", q)]).send().expect("promql");
    let v: serde_json::Value = r.json().expect("json");
    assert_eq!(v["status"], "success", "{q}: {v}");
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let labels = s["metric"].as_object().map_or(String::new(), |m| {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
        });
        let value: f64 = s["value"][1].as_str().and_then(|x| x.parse().ok()).expect("sample value");
        out.insert(labels, value);
    }
    out
}

/// Polls a query until it answers `want` (Prometheus needs a few scrapes).
fn eventually(url: &str, q: &str, want: &BTreeMap<String, f64>) {
    let started = Instant::now();
    loop {
        let got = promql(url, q);
        if &got == want {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{q}\n  got  {got:?}\n  want {want:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn prometheus_scrapes_the_service_graph_and_span_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let traces = 20u64;
    for t in 0..traces {
        let (first, second) = topology(t);
        assert_eq!(srv.post_otlp(None, &first), 200);
        assert_eq!(srv.post_otlp(None, &second), 200);
    }
    let target = srv.api.trim_start_matches("http://").to_string();
    let (_prom, url) = prometheus(dir.path(), &target);

    // The edges of the topology with their call counts; failures only on frontend -> checkout.
    eventually(
        &url,
        "sum by (client, server, connection_type) (traces_service_graph_request_total)",
        &map(&[
            ("client=checkout,connection_type=database,server=orders", 20.0),
            ("client=checkout,connection_type=messaging_system,server=worker", 20.0),
            ("client=frontend,server=checkout", 20.0),
            ("client=user,connection_type=virtual_node,server=frontend", 20.0),
        ]),
    );
    eventually(
        &url,
        "sum by (client, server) (traces_service_graph_request_failed_total)",
        &map(&[("client=frontend,server=checkout", 5.0)]),
    );
    // Server-side latency histogram: 90 ms for checkout, in the 0.1 s bucket.
    eventually(
        &url,
        r#"sum by (client, server) (traces_service_graph_request_server_seconds_bucket{le="0.1",server="checkout"})"#,
        &map(&[("client=frontend,server=checkout", 20.0)]),
    );
    // Span metrics, as Grafana's RED table filters them.
    eventually(
        &url,
        r#"sum by (service, span_name) (traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER"})"#,
        &map(&[("service=checkout,span_name=POST /pay", 20.0), ("service=frontend,span_name=GET /checkout", 20.0)]),
    );
    eventually(
        &url,
        r#"sum by (span_name) (traces_spanmetrics_calls_total{status_code="STATUS_CODE_ERROR"})"#,
        &map(&[("span_name=POST /pay", 5.0)]),
    );
    eventually(
        &url,
        r#"sum by (service) (traces_spanmetrics_latency_count)"#,
        &map(&[("service=checkout", 60.0), ("service=frontend", 40.0), ("service=worker", 20.0)]),
    );
    // Grafana's own service-map query form (rates over the scrape window) names the same edges.
    let started = Instant::now();
    loop {
        let got = promql(&url, "sum by (client, server) (rate(traces_service_graph_request_total[1m]))");
        let edges: Vec<&String> = got.keys().collect();
        if edges.len() == 4 {
            assert_eq!(
                edges,
                vec![
                    "client=checkout,server=orders",
                    "client=checkout,server=worker",
                    "client=frontend,server=checkout",
                    "client=user,server=frontend"
                ]
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "rate query: {got:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
