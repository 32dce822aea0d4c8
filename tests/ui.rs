//! The built-in web UI in a real browser: starts the real binary, ingests known traces over OTLP, and runs
//! `tests/ui/check.mjs` (playwright-core driving Debian's Chromium; installed by the test script) against it: each
//! page loads without console errors, a search finds a known trace, the timeline shows its spans, compare marks
//! the known differences, the service graph draws the known edges. Screenshots go to
//! `<target tmp>/ui-artifacts`. A missing Node.js, playwright-core or Chromium fails the test.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Server, kv, s};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Spans of several traces, grouped by service when sent.
#[derive(Default)]
struct Traces {
    by_service: BTreeMap<String, Vec<Span>>,
}

impl Traces {
    /// A span `id` of `trace` (IDs from small numbers), starting `at_ms` after `t0` and lasting `ms`.
    #[allow(clippy::too_many_arguments)]
    fn span(&mut self, t0: u64, trace: u64, id: u64, parent: Option<u64>, svc: &str, name: &str, at_ms: u64, ms: u64) {
        let start = t0 + at_ms * 1_000_000;
        let error = name.contains("fail");
        self.by_service.entry(svc.to_string()).or_default().push(Span {
            trace_id: common::trace_id(trace),
            span_id: (id + 1).to_be_bytes().to_vec(),
            parent_span_id: parent.map(|p| (p + 1).to_be_bytes().to_vec()).unwrap_or_default(),
            name: name.to_string(),
            kind: if parent.is_none() { 2 } else { 3 },
            start_time_unix_nano: start,
            end_time_unix_nano: start + ms * 1_000_000,
            attributes: vec![kv("http.method", s("GET"))],
            status: error.then(|| Status { code: 2, message: "failed".into() }),
            ..Default::default()
        });
    }

    fn request(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self
                .by_service
                .into_iter()
                .map(|(svc, spans)| ResourceSpans {
                    resource: Some(Resource { attributes: vec![kv("service.name", s(&svc))], ..Default::default() }),
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                })
                .collect(),
        }
    }
}

fn hex_trace(n: u64) -> String {
    hex::encode(common::trace_id(n))
}

/// The UI's test dependencies: playwright-core from npm (pinned by tests/ui/package.json) in a directory outside
/// the repository, installed once per machine.
fn node_modules() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var("STRATA_UI_NODE_MODULES").unwrap_or_else(|_| {
        format!("{}/.cache/strata-ui-test", std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
    });
    let pkg = root.join("tests/ui/package.json");
    let stamp = Path::new(&dir).join("package.json");
    let same = std::fs::read(&pkg).ok() == std::fs::read(&stamp).ok();
    if !same || !Path::new(&dir).join("node_modules/playwright-core").exists() {
        std::fs::create_dir_all(&dir).expect("node modules dir");
        std::fs::copy(&pkg, &stamp).expect("copy package.json");
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix", &dir])
            .output()
            .expect("npm (Node.js) is required for the UI test");
        assert!(out.status.success(), "npm install failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    dir
}

#[test]
fn web_ui_in_a_real_browser() {
    let modules = node_modules();
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&dir.path().join("data"), &[]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let t0 = (now.as_secs() - 300) * 1_000_000_000;
    let mut t = Traces::default();

    // A small trace with one root: frontend -> cart -> postgres, and frontend -> checkout -> payment.
    let small = 1;
    t.span(t0, small, 0, None, "frontend", "GET /cart", 0, 120);
    t.span(t0, small, 1, Some(0), "cart", "get cart", 5, 60);
    t.span(t0, small, 2, Some(1), "postgres", "SELECT cart", 10, 20);
    t.span(t0, small, 3, Some(1), "postgres", "SELECT items", 35, 20);
    t.span(t0, small, 4, Some(0), "checkout", "prepare", 70, 40);
    t.span(t0, small, 5, Some(4), "payment", "authorize", 75, 30);
    t.span(t0, small, 6, Some(4), "payment", "charge fail", 106, 2);

    // More traces for the search list (the check merges a replayed stream of at least six).
    for n in 0..8u64 {
        let trace = 10 + n;
        t.span(t0, trace, 0, None, "frontend", "GET /cart", 3000 + n * 100, 30 + n);
        t.span(t0, trace, 1, Some(0), "cart", "get cart", 3002 + n * 100, 20);
    }

    // A compare pair: B has `notify` added, lacks `audit`, and `charge` is five times slower.
    let (a, b) = (2, 3);
    for (trace, charge_ms, extra) in [(a, 10, "audit"), (b, 50, "notify")] {
        t.span(t0, trace, 0, None, "frontend", "GET /checkout", 1000, 100);
        t.span(t0, trace, 1, Some(0), "payment", "charge", 1005, charge_ms);
        t.span(t0, trace, 2, Some(0), "inventory", "reserve", 1060, 5);
        t.span(t0, trace, 3, Some(0), if extra == "audit" { "checkout" } else { "mail" }, extra, 1070, 5);
    }

    // A 10,000-span trace: a tree of fan-out 4 over eight services.
    let big = 4;
    let services = ["frontend", "cart", "checkout", "payment", "inventory", "search", "mail", "postgres"];
    let mut depth = vec![0u64; 10_000];
    for id in 0..10_000u64 {
        let parent = (id > 0).then(|| (id - 1) / 4);
        if let Some(p) = parent {
            depth[id as usize] = depth[p as usize] + 1;
        }
        let d = depth[id as usize];
        // Children start 3 ms after their parent and end before it.
        t.span(t0, big, id, parent, services[(id % 8) as usize], &format!("op {}", id % 50), 2000 + d * 3, 100 - d * 5);
    }
    assert_eq!(server.post_otlp(None, &t.request()), 200);

    let (start, end) = (now.as_secs() - 600, now.as_secs() + 60);
    let expect = serde_json::json!({
        "search": { "service": "cart", "start": start, "end": end, "traceId": hex_trace(small) },
        "trace": { "traceId": hex_trace(small), "spanCount": 7 },
        "compare": { "a": hex_trace(a), "b": hex_trace(b), "added": ["notify"], "missing": ["audit"], "slower": ["charge"] },
        "graph": { "start": start, "end": end,
                   "edges": [["frontend", "cart"], ["cart", "postgres"], ["checkout", "payment"], ["frontend", "mail"]] },
        "big": { "traceId": hex_trace(big), "spanCount": 10_000 },
    });
    let expect_path = dir.path().join("expect.json");
    std::fs::write(&expect_path, expect.to_string()).expect("write expectations");
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-artifacts");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bench = std::env::var("STRATA_UI_BENCH").unwrap_or_default();
    let out = Command::new("node")
        .arg(root.join("tests/ui/check.mjs"))
        .env("STRATA_UI_BASE", &server.api)
        .env("STRATA_UI_EXPECT", &expect_path)
        .env("STRATA_UI_ARTIFACTS", &artifacts)
        .env("STRATA_UI_NODE_MODULES", &modules)
        .env("STRATA_UI_BENCH", &bench)
        .output()
        .expect("node (Node.js) is required for the UI test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser check failed (screenshots in {}):\n{stdout}\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
