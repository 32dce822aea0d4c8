//! TraceQL search, tags, SQL and gRPC streaming, end to end: the real binary fed over OTLP/HTTP, queried over
//! `/api/search` (and the rest) as Grafana does, and compared with the naive evaluator in `tests/naive` over the
//! same generated traces. One test binary, so the naive evaluator's own tests run once.
//!
//! Traces are split on purpose: some of their spans go into a first block, some into a second, some stay in
//! memory, so trace-level values and structural operators must be computed over all fragments.

mod common;
mod naive;
mod search_metrics;

use std::collections::{BTreeMap, BTreeSet};

use common::{Server, http};
use naive::{GenTrace, NaiveTrace};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use serde::Deserialize;
use strata::api::tempopb::streaming_querier_client::StreamingQuerierClient;
use strata::api::tempopb::{SearchRequest, SearchTagValuesRequest, SearchTagsRequest};

/// SearchResponse as Grafana decodes it: any field outside Tempo's messages fails the decode.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SearchResponse {
    #[serde(default)]
    traces: Vec<TraceMeta>,
    metrics: Option<SearchMetrics>,
}

// Every field Tempo may send is declared so that anything else fails the decode; not all are checked.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct SearchMetrics {
    inspected_traces: Option<u32>,
    inspected_bytes: Option<String>,
    total_blocks: Option<u32>,
    completed_jobs: Option<u32>,
    total_jobs: Option<u32>,
    total_block_bytes: Option<String>,
    inspected_spans: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
struct TraceMeta {
    traceID: String,
    rootServiceName: Option<String>,
    rootTraceName: Option<String>,
    startTimeUnixNano: Option<String>,
    durationMs: Option<u32>,
    spanSet: Option<SpanSet>,
    #[serde(default)]
    spanSets: Vec<SpanSet>,
    #[serde(default)]
    serviceStats: BTreeMap<String, ServiceStats>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceStats {
    span_count: Option<u32>,
    error_count: Option<u32>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct SpanSet {
    #[serde(default)]
    spans: Vec<SpanJson>,
    matched: Option<u32>,
    #[serde(default)]
    attributes: Vec<Attr>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case, dead_code)]
struct SpanJson {
    spanID: String,
    name: Option<String>,
    startTimeUnixNano: Option<String>,
    durationNanos: Option<String>,
    #[serde(default)]
    attributes: Vec<Attr>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Attr {
    key: String,
    value: AttrValue,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AttrValue {
    string_value: Option<String>,
    int_value: Option<String>,
    double_value: Option<f64>,
    bool_value: Option<bool>,
    array_value: Option<serde_json::Value>,
}

impl AttrValue {
    /// The value as the naive evaluator renders `by()` values.
    fn render(&self) -> String {
        if let Some(s) = &self.string_value {
            return s.clone();
        }
        if let Some(i) = &self.int_value {
            return i.clone();
        }
        if let Some(d) = self.double_value {
            return d.to_string();
        }
        if let Some(b) = self.bool_value {
            return b.to_string();
        }
        format!("{:?}", self.array_value)
    }
}

fn pad_id(s: &str) -> String {
    format!("{s:0>32}")
}

fn search_raw(srv: &Server, tenant: Option<&str>, params: &[(&str, &str)], proto: bool) -> reqwest::blocking::Response {
    let mut req = http().get(format!("{}/api/search", srv.api)).query(params);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    if proto {
        req = req.header("Accept", "application/protobuf");
    }
    req.send().expect("search request")
}

fn search(srv: &Server, tenant: Option<&str>, q: &str, limit: usize) -> SearchResponse {
    let limit = limit.to_string();
    let r = search_raw(srv, tenant, &[("q", q), ("limit", &limit), ("spss", "100000")], false);
    let status = r.status();
    let body = r.text().expect("body");
    assert!(status.is_success(), "search {q:?}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("strict decode of {q:?} failed: {e}\n{body}"))
}

/// Sends the spans of `traces` whose index in the trace satisfies `pick`, grouped by resource and scope.
fn send(srv: &Server, tenant: Option<&str>, traces: &[GenTrace], pick: impl Fn(usize, usize) -> bool) {
    let mut req = ExportTraceServiceRequest::default();
    for (ti, t) in traces.iter().enumerate() {
        for (si, s) in t.spans.iter().enumerate() {
            if !pick(ti, si) {
                continue;
            }
            let rs = match req.resource_spans.iter_mut().position(|r| r.resource.as_ref() == Some(&s.resource)) {
                Some(i) => &mut req.resource_spans[i],
                None => {
                    req.resource_spans.push(ResourceSpans {
                        resource: Some(s.resource.clone()),
                        scope_spans: Vec::new(),
                        schema_url: String::new(),
                    });
                    req.resource_spans.last_mut().expect("just pushed")
                }
            };
            let ss = match rs.scope_spans.iter_mut().position(|x| x.scope.as_ref() == Some(&s.scope)) {
                Some(i) => &mut rs.scope_spans[i],
                None => {
                    rs.scope_spans.push(ScopeSpans {
                        scope: Some(s.scope.clone()),
                        spans: Vec::new(),
                        schema_url: String::new(),
                    });
                    rs.scope_spans.last_mut().expect("just pushed")
                }
            };
            ss.spans.push(s.span.clone());
        }
        if req.encoded_len() > 4 << 20 {
            assert_eq!(srv.post_otlp(tenant, &req), 200);
            req = ExportTraceServiceRequest::default();
        }
    }
    if !req.resource_spans.is_empty() {
        assert_eq!(srv.post_otlp(tenant, &req), 200);
    }
}

/// Where each span goes: 0 = first block, 1 = second block, 2 = memory. A third of the traces are split.
fn placement(ti: usize, si: usize) -> usize {
    match ti % 6 {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => si % 2,       // split between the two blocks
        4 => (si % 2) * 2, // split between a block and memory
        _ => si % 3,       // in all three places
    }
}

/// Loads the traces into a fresh server, split across two blocks and memory.
fn load(srv: &Server, tenant: Option<&str>, traces: &[GenTrace]) {
    send(srv, tenant, traces, |t, s| placement(t, s) == 0);
    srv.flush();
    send(srv, tenant, traces, |t, s| placement(t, s) == 1);
    srv.flush();
    // Memory gets its spans in two arrivals with a search in between, so the searched copy of memory is built in
    // two parts and some traces straddle them.
    send(srv, tenant, traces, |t, s| placement(t, s) == 2 && s % 2 == 0);
    let _ = search_raw(srv, tenant, &[("q", "{ }"), ("limit", "1")], false);
    send(srv, tenant, traces, |t, s| placement(t, s) == 2 && s % 2 == 1);
}

/// One spanset as compared: span IDs, matched count, by() attributes.
type SpansetKey = (BTreeSet<String>, u32, Vec<(String, String)>);

#[derive(Debug, PartialEq)]
struct Got {
    id: String,
    root_service: Option<String>,
    root_name: Option<String>,
    start: u64,
    duration_ms: u64,
    stats: BTreeMap<String, (u32, u32)>,
    /// Spansets: (span IDs, matched, by() attributes).
    sets: BTreeSet<SpansetKey>,
}

fn got(t: &TraceMeta) -> Got {
    Got {
        id: pad_id(&t.traceID),
        root_service: t.rootServiceName.clone(),
        root_name: t.rootTraceName.clone(),
        start: t.startTimeUnixNano.as_deref().unwrap_or("0").parse().expect("start"),
        duration_ms: u64::from(t.durationMs.unwrap_or(0)),
        stats: t
            .serviceStats
            .iter()
            .map(|(k, v)| (k.clone(), (v.span_count.unwrap_or(0), v.error_count.unwrap_or(0))))
            .collect(),
        sets: t
            .spanSets
            .iter()
            .map(|s| {
                (
                    s.spans.iter().map(|sp| sp.spanID.clone()).collect(),
                    s.matched.unwrap_or(0),
                    s.attributes.iter().map(|a| (a.key.clone(), a.value.render())).collect(),
                )
            })
            .collect(),
    }
}

fn want(t: &NaiveTrace) -> Got {
    Got {
        id: t.trace_id.clone(),
        root_service: t.root_service.clone().filter(|s| !s.is_empty()),
        root_name: t.root_name.clone().filter(|n| !n.is_empty()),
        start: t.start_ns,
        duration_ms: t.duration_ms,
        stats: t.service_stats.clone(),
        sets: t.spansets.iter().map(|s| (s.span_ids.clone(), s.span_ids.len() as u32, s.by_attrs.clone())).collect(),
    }
}

const BASE: u64 = 1_700_000_000_000_000_000;

#[test]
fn search_matches_the_naive_evaluator_on_split_traces() {
    differential(&[]);
}

/// The same table with a column cache too small for any block: every search takes the Parquet scans and reads
/// (the plan for data sets larger than the cache), which the default run no longer reaches.
#[test]
fn search_without_the_column_cache_matches_the_naive_evaluator() {
    differential(&[("STRATA_COLUMN_CACHE_BYTES", "1")]);
}

fn differential(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), env);
    let traces = naive::generate(42, 240, BASE);
    load(&srv, None, &traces);

    let queries = naive::queries();
    assert!(queries.len() >= 100, "the table has {} queries", queries.len());
    let mut empty = 0;
    let mut failures = Vec::new();
    for q in &queries {
        let parsed = query_lang::parse(q).expect("table queries parse");
        let expected: Vec<Got> = naive::evaluate(&parsed, &traces).iter().map(want).collect();
        if expected.is_empty() {
            empty += 1;
        }
        let resp = search(&srv, None, q, 100_000);
        let actual: Vec<Got> = resp.traces.iter().map(got).collect();
        if actual != expected {
            let first_diff = actual.iter().zip(&expected).position(|(a, b)| a != b);
            failures.push(format!(
                "{q}\n  got {} traces, want {}; first difference at {first_diff:?}:\n  got  {:?}\n  want {:?}",
                actual.len(),
                expected.len(),
                first_diff.and_then(|i| actual.get(i)),
                first_diff.and_then(|i| expected.get(i)),
            ));
            continue;
        }
        // spanSet repeats the first spanset; limit keeps the newest.
        for t in &resp.traces {
            let first = t.spanSets.first().map(|s| s.spans.iter().map(|x| x.spanID.clone()).collect::<Vec<_>>());
            let dep = t.spanSet.as_ref().map(|s| s.spans.iter().map(|x| x.spanID.clone()).collect::<Vec<_>>());
            assert_eq!(first, dep, "{q}: spanSet is not the first of spanSets");
        }
        // Small limits take the newest-first index walk (and, for rare matches, its hand-over to scans): the
        // answers must be the newest matches, whole.
        for limit in [3, 20] {
            let top: Vec<Got> = search(&srv, None, q, limit).traces.iter().map(got).collect();
            let want_top: Vec<&Got> = expected.iter().take(limit).collect();
            if top.iter().collect::<Vec<_>>() != want_top {
                let ids = |v: &[&Got]| v.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
                failures.push(format!(
                    "{q}\n  limit={limit} gave {:?}, want {:?}",
                    ids(&top.iter().collect::<Vec<_>>()),
                    ids(&want_top)
                ));
            }
        }
    }
    assert!(empty >= 10, "only {empty} queries match nothing");
    assert!(failures.is_empty(), "{} of {} queries differ:\n{}", failures.len(), queries.len(), failures.join("\n"));
}

#[test]
fn spans_per_spanset_and_protobuf_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let traces = naive::generate(7, 60, BASE);
    load(&srv, None, &traces);
    let q = "{ }";
    let r = search_raw(&srv, None, &[("q", q), ("limit", "1000"), ("spss", "2")], false);
    assert!(r.status().is_success());
    let json: SearchResponse = serde_json::from_str(&r.text().expect("body")).expect("strict JSON");
    let expected = naive::evaluate(&query_lang::parse(q).expect("parse"), &traces);
    assert_eq!(json.traces.len(), expected.len());
    for (t, w) in json.traces.iter().zip(&expected) {
        let s = &t.spanSets[0];
        assert!(s.spans.len() <= 2, "spss=2 caps the listed spans");
        assert_eq!(s.matched, Some(w.spansets[0].span_ids.len() as u32), "matched counts every span");
    }
    let m = json.metrics.expect("metrics");
    assert_eq!(m.total_jobs, m.completed_jobs, "a finished search completed all its jobs");
    assert_eq!(m.total_blocks, Some(2));

    let r = search_raw(&srv, None, &[("q", q), ("limit", "1000"), ("spss", "2")], true);
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/protobuf"));
    let pb = strata::api::tempopb::SearchResponse::decode(r.bytes().expect("body")).expect("SearchResponse protobuf");
    assert_eq!(pb.traces.len(), json.traces.len());
    for (p, j) in pb.traces.iter().zip(&json.traces) {
        assert_eq!(p.trace_id, j.traceID);
        assert_eq!(p.start_time_unix_nano.to_string(), j.startTimeUnixNano.clone().unwrap_or_default());
        assert_eq!(p.span_sets.len(), j.spanSets.len());
        assert_eq!(p.span_sets[0].matched, j.spanSets[0].matched.unwrap_or(0));
    }
}

#[test]
fn newest_first_with_limit_across_many_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let traces = naive::generate(99, 400, BASE);
    // Twenty blocks whose time ranges interleave: trace i goes to block i % 20.
    for b in 0..20 {
        send(&srv, None, &traces, |t, _| t % 20 == b);
        srv.flush();
    }
    for q in ["{ }", "{ status = error }", "{ resource.service.name = \"frontend\" }", "{ kind = server } >> { }"] {
        let parsed = query_lang::parse(q).expect("parse");
        let expected: Vec<String> = naive::evaluate(&parsed, &traces).iter().map(|t| t.trace_id.clone()).collect();
        for limit in [1, 7, 50] {
            let got: Vec<String> = search(&srv, None, q, limit).traces.iter().map(|t| pad_id(&t.traceID)).collect();
            let want: Vec<String> = expected.iter().take(limit).cloned().collect();
            assert_eq!(got, want, "{q} limit={limit}");
        }
    }
}

#[test]
fn tenants_do_not_see_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let a = naive::generate(1, 20, BASE);
    let b = naive::generate(2, 30, BASE);
    send(&srv, Some("team-a"), &a, |_, _| true);
    send(&srv, Some("team-b"), &b, |_, _| true);
    srv.flush();
    send(&srv, Some("team-a"), &naive::generate(3, 5, BASE + 10_000_000_000_000), |_, _| true);
    let ids = |traces: &[GenTrace]| -> BTreeSet<String> { traces.iter().map(|t| hex::encode(t.id)).collect() };
    let got_a: BTreeSet<String> =
        search(&srv, Some("team-a"), "{ }", 1000).traces.iter().map(|t| pad_id(&t.traceID)).collect();
    let got_b: BTreeSet<String> =
        search(&srv, Some("team-b"), "{ }", 1000).traces.iter().map(|t| pad_id(&t.traceID)).collect();
    let mut want_a = ids(&a);
    want_a.extend(ids(&naive::generate(3, 5, BASE + 10_000_000_000_000)));
    assert_eq!(got_a, want_a);
    assert_eq!(got_b, ids(&b));
    assert!(search(&srv, Some("nobody"), "{ }", 1000).traces.is_empty());
}

#[test]
fn bad_search_requests_are_400s_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("q", "{ .a < 3")], "1:9"),
        (&[("q", "{ .a = 1 } | rate()")], "metrics"),
        (&[("q", "{ parent.a = 1 }")], "unsupported"),
        (&[("q", "{ }"), ("limit", "abc")], "limit"),
        (&[("q", "{ }"), ("limit", "-1")], "limit"),
        (&[("q", "{ }"), ("start", "99999999999999999999")], "start"),
        (&[("q", "{ }"), ("start", "1e300")], "start"),
        (&[("q", "{ }"), ("start", "20"), ("end", "10")], "start is after end"),
        (&[("tags", "novalue")], "tags"),
        (&[("minDuration", "fast")], "minDuration"),
    ];
    for (params, needle) in cases {
        let r = search_raw(&srv, None, params, false);
        let status = r.status();
        let body = r.text().unwrap_or_default();
        assert_eq!(status, 400, "{params:?}: {body}");
        assert!(body.contains(needle), "{params:?}: {body:?} should mention {needle:?}");
    }
    // Still serving; hints are accepted (results are always newest first).
    assert!(search(&srv, None, "{ }", 5).traces.is_empty());
    assert!(search(&srv, None, "{ } with(most_recent=true)", 5).traces.is_empty());
}

#[test]
fn legacy_tag_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let traces = naive::generate(5, 40, BASE);
    load(&srv, None, &traces);
    let r = search_raw(&srv, None, &[("tags", "service.name=frontend"), ("limit", "1000")], false);
    assert!(r.status().is_success());
    let got: SearchResponse = serde_json::from_str(&r.text().expect("body")).expect("strict JSON");
    let q = query_lang::parse(r#"{ .service.name = "frontend" }"#).expect("parse");
    let want: Vec<String> = naive::evaluate(&q, &traces).iter().map(|t| t.trace_id.clone()).collect();
    let got: Vec<String> = got.traces.iter().map(|t| pad_id(&t.traceID)).collect();
    assert_eq!(got, want);
}

fn send_each(srv: &Server, traces: &[naive::GenTrace]) {
    let mut req = ExportTraceServiceRequest::default();
    for t in traces {
        for s in &t.spans {
            req.resource_spans.push(ResourceSpans {
                resource: Some(s.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(s.scope.clone()),
                    spans: vec![s.span.clone()],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    assert_eq!(srv.post_otlp(None, &req), 200);
}

#[test]
fn streaming_search_reports_progress_and_every_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let traces = naive::generate(11, 120, BASE);
    // Twelve blocks (three rounds of four) plus data in memory.
    for chunk in traces.chunks(10) {
        send_each(&srv, chunk);
        srv.flush();
    }
    let extra = naive::generate(12, 5, BASE + 1_000_000_000_000_000);
    send_each(&srv, &extra);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client =
            StreamingQuerierClient::connect(srv.api.clone()).await.expect("gRPC connects on the HTTP port");
        for (q, limit) in [("{ }", 1000u32), ("{ status = error }", 1000), ("{ }", 5)] {
            let mut stream = client
                .search(SearchRequest { query: q.into(), limit, spans_per_span_set: 3, ..Default::default() })
                .await
                .expect("search")
                .into_inner();
            let mut ids = Vec::new();
            let mut messages = 0;
            let mut last_progress = (0, 0);
            while let Some(msg) = stream.message().await.expect("stream message") {
                messages += 1;
                let m = msg.metrics.expect("every message carries metrics");
                assert!(m.completed_jobs >= last_progress.0, "progress never goes back");
                last_progress = (m.completed_jobs, m.total_jobs);
                ids.extend(msg.traces.iter().map(|t| format!("{:0>32}", t.trace_id)));
            }
            assert_eq!(last_progress.0, last_progress.1, "{q}: the last message reports every job done");
            assert!(messages > 1, "{q}: results stream in several messages, got {messages}");
            let unique: BTreeSet<&String> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "{q}: no trace is sent twice");
            let mut all: Vec<naive::GenTrace> = naive::generate(11, 120, BASE);
            all.extend(naive::generate(12, 5, BASE + 1_000_000_000_000_000));
            let want: BTreeSet<String> = naive::evaluate(&query_lang::parse(q).expect("parse"), &all)
                .into_iter()
                .take(limit as usize)
                .map(|t| t.trace_id)
                .collect();
            assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<String>>(), want, "{q} limit {limit}");
        }

        // Grafana's streaming health check: `{}` limit 1 over the last 15 minutes answers (possibly empty).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as u32;
        let mut stream = client
            .search(SearchRequest { query: "{}".into(), limit: 1, start: now - 900, end: now, ..Default::default() })
            .await
            .expect("health search")
            .into_inner();
        assert!(stream.message().await.expect("first message").is_some());

        let bad = client.search(SearchRequest { query: "{ .a = ".into(), ..Default::default() }).await;
        let err = match bad {
            Err(e) => e,
            Ok(resp) => resp.into_inner().message().await.expect_err("a bad query is an error"),
        };
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("1:8"), "{}", err.message());

        let tags = client.search_tags_v2(SearchTagsRequest::default()).await.expect("tags").into_inner();
        let tags = tags.collect_all().await;
        let scopes: Vec<String> = tags.iter().flat_map(|m| m.scopes.iter().map(|s| s.name.clone())).collect();
        assert!(scopes.contains(&"resource".to_string()) && scopes.contains(&"span".to_string()), "{scopes:?}");
        let values = client
            .search_tag_values_v2(SearchTagValuesRequest {
                tag_name: "resource.service.name".into(),
                ..Default::default()
            })
            .await
            .expect("values")
            .into_inner()
            .collect_all()
            .await;
        let got: BTreeSet<String> = values.iter().flat_map(|m| m.tag_values.iter().map(|v| v.value.clone())).collect();
        let want: BTreeSet<String> = traces
            .iter()
            .flat_map(|t| &t.spans)
            .filter_map(|s| {
                s.resource.attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| {
                    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                            Some(s.clone())
                        }
                        _ => None,
                    }
                })
            })
            .collect();
        assert!(want.is_subset(&got), "service names {want:?} all listed in {got:?}");
    });

    // The same over HTTP as newline-delimited JSON (`/api/search/stream`): each line a strict SearchResponse,
    // progress that never goes back, no trace twice, and together exactly `/api/search`'s traces.
    for (q, limit) in [("{ }", 1000usize), ("{ status = error }", 1000), ("{ }", 5), ("{ .nothing = 1 }", 20)] {
        let text = http()
            .get(format!("{}/api/search/stream", srv.api))
            .query(&[("q", q), ("limit", &limit.to_string())])
            .send()
            .expect("stream")
            .text()
            .expect("body");
        let lines: Vec<SearchResponse> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{q}: line {l:.200}: {e}")))
            .collect();
        assert!(lines.len() > 1 || limit == 20, "{q}: several lines as blocks complete, got {}", lines.len());
        let mut done = (0, 0);
        let mut ids = BTreeSet::new();
        for l in &lines {
            let m = l.metrics.as_ref().expect("metrics on every line");
            let completed = m.completed_jobs.unwrap_or(0);
            assert!(completed >= done.0, "{q}: progress never goes back");
            done = (completed, m.total_jobs.unwrap_or(0));
            for t in &l.traces {
                assert!(ids.insert(pad_id(&t.traceID)), "{q}: {} sent twice", t.traceID);
            }
        }
        assert_eq!(done.0, done.1, "{q}: the last line reports every job done");
        let whole = search(&srv, None, q, limit);
        let want: BTreeSet<String> = whole.traces.iter().map(|t| pad_id(&t.traceID)).collect();
        assert_eq!(ids, want, "{q} limit {limit}: streamed = /api/search");
    }
}

/// Drains a tonic stream into its messages.
trait CollectAll<T> {
    async fn collect_all(self) -> Vec<T>;
}

impl<T> CollectAll<T> for tonic::Streaming<T> {
    async fn collect_all(mut self) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(m) = self.message().await.expect("stream message") {
            out.push(m);
        }
        out
    }
}

/// Typed values of a tag over generated spans, as `/api/v2/search/tag/<tag>/values` lists them.
fn typed_values(
    traces: &[GenTrace],
    pick: fn(&naive::GenSpan) -> Vec<&KeyValue>,
    key: &str,
) -> BTreeSet<(String, String)> {
    fn push(v: &AnyValue, out: &mut BTreeSet<(String, String)>) {
        match &v.value {
            Some(Value::StringValue(s)) => {
                out.insert(("string".into(), s.clone()));
            }
            Some(Value::IntValue(i)) => {
                out.insert(("int".into(), i.to_string()));
            }
            Some(Value::DoubleValue(d)) => {
                out.insert(("float".into(), d.to_string()));
            }
            Some(Value::BoolValue(b)) => {
                out.insert(("bool".into(), b.to_string()));
            }
            Some(Value::ArrayValue(a)) => {
                a.values.iter().filter(|x| !matches!(x.value, Some(Value::ArrayValue(_)))).for_each(|x| push(x, out))
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for s in traces.iter().flat_map(|t| &t.spans) {
        // Every occurrence counts: a repeated key lists all its values.
        for kv in pick(s).into_iter().filter(|kv| kv.key == key) {
            if let Some(v) = &kv.value {
                push(v, &mut out);
            }
        }
    }
    out
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TagsV2 {
    scopes: Vec<TagScope>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TagScope {
    name: String,
    tags: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TagValuesV2 {
    tag_values: Vec<TypedValue>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TypedValue {
    r#type: String,
    value: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TagsV1 {
    tag_names: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TagValuesV1 {
    tag_values: Vec<String>,
}

fn get_json<T: serde::de::DeserializeOwned>(srv: &Server, tenant: Option<&str>, path: &str, q: &[(&str, &str)]) -> T {
    let mut req = http().get(format!("{}{path}", srv.api)).query(q);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let r = req.send().expect("request");
    let status = r.status();
    let body = r.text().expect("body");
    assert!(status.is_success(), "{path} {q:?}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("strict decode of {path}: {e}\n{body}"))
}

#[test]
fn tags_and_tag_values_list_what_is_stored() {
    tags_and_tag_values(&[]);
}

/// The same without the decoded-column cache: narrowed values come from Parquet scans.
#[test]
fn tags_and_tag_values_without_the_column_cache() {
    tags_and_tag_values(&[("STRATA_COLUMN_CACHE_BYTES", "1")]);
}

fn tags_and_tag_values(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), env);
    let traces = naive::generate(21, 120, BASE);
    load(&srv, None, &traces);

    let tags: TagsV2 = get_json(&srv, None, "/api/v2/search/tags", &[("limit", "5000")]);
    let scope = |name: &str| -> BTreeSet<String> {
        tags.scopes.iter().find(|s| s.name == name).map(|s| s.tags.iter().cloned().collect()).unwrap_or_default()
    };
    let keys = |pick: &dyn Fn(&naive::GenSpan) -> Vec<String>| -> BTreeSet<String> {
        traces.iter().flat_map(|t| &t.spans).flat_map(pick).collect()
    };
    assert_eq!(scope("span"), keys(&|s| s.span.attributes.iter().map(|kv| kv.key.clone()).collect()));
    assert_eq!(scope("resource"), keys(&|s| s.resource.attributes.iter().map(|kv| kv.key.clone()).collect()));
    assert_eq!(
        scope("event"),
        keys(&|s| s.span.events.iter().flat_map(|e| e.attributes.iter().map(|kv| kv.key.clone())).collect())
    );
    assert_eq!(
        scope("link"),
        keys(&|s| s.span.links.iter().flat_map(|l| l.attributes.iter().map(|kv| kv.key.clone())).collect())
    );
    assert!(scope("intrinsic").contains("status") && scope("intrinsic").contains("trace:rootService"));
    let only_span: TagsV2 = get_json(&srv, None, "/api/v2/search/tags", &[("scope", "span")]);
    assert_eq!(only_span.scopes.len(), 1);
    let v1: TagsV1 = get_json(&srv, None, "/api/search/tags", &[]);
    assert!(v1.tag_names.iter().any(|t| t == "service.name"));

    fn span_attrs(s: &naive::GenSpan) -> Vec<&KeyValue> {
        s.span.attributes.iter().collect()
    }
    fn res_attrs(s: &naive::GenSpan) -> Vec<&KeyValue> {
        s.resource.attributes.iter().collect()
    }
    for (tag, want) in [
        ("span.http.method", typed_values(&traces, span_attrs, "http.method")),
        ("span.http.status_code", typed_values(&traces, span_attrs, "http.status_code")),
        ("span.user.id", typed_values(&traces, span_attrs, "user.id")),
        ("span.tags", typed_values(&traces, span_attrs, "tags")),
        ("resource.service.name", typed_values(&traces, res_attrs, "service.name")),
        ("resource.deployment.environment", typed_values(&traces, res_attrs, "deployment.environment")),
    ] {
        let got: TagValuesV2 = get_json(&srv, None, &format!("/api/v2/search/tag/{tag}/values"), &[]);
        let got: BTreeSet<(String, String)> = got.tag_values.into_iter().map(|v| (v.r#type, v.value)).collect();
        assert_eq!(got, want, "{tag}");
    }
    let status: TagValuesV2 = get_json(&srv, None, "/api/v2/search/tag/status/values", &[]);
    assert!(status.tag_values.iter().all(|v| v.r#type == "keyword"));
    assert!(status.tag_values.iter().any(|v| v.value == "error"));
    let kinds: TagValuesV2 = get_json(&srv, None, "/api/v2/search/tag/kind/values", &[]);
    let names = ["unspecified", "internal", "server", "client", "producer", "consumer"];
    let want: BTreeSet<(String, String)> = traces
        .iter()
        .flat_map(|t| &t.spans)
        .map(|s| ("keyword".to_string(), names[s.span.kind.clamp(0, 5) as usize].to_string()))
        .collect();
    let got: BTreeSet<(String, String)> = kinds.tag_values.into_iter().map(|v| (v.r#type, v.value)).collect();
    assert_eq!(got, want, "kind values");
    let v1: TagValuesV1 = get_json(&srv, None, "/api/search/tag/service.name/values", &[]);
    let want: BTreeSet<String> = typed_values(&traces, res_attrs, "service.name").into_iter().map(|(_, v)| v).collect();
    assert_eq!(v1.tag_values.into_iter().collect::<BTreeSet<_>>(), want);

    // q narrows names and values to the spans the query matches (its spansets), span-local queries (a filtered
    // row scan) and others (the search) alike.
    let matched_spans = |q: &str| -> Vec<GenTrace> {
        let hits = naive::evaluate(&query_lang::parse(q).expect("parse"), &traces);
        let spans: BTreeSet<(String, String)> = hits
            .iter()
            .flat_map(|t| t.spansets.iter().flat_map(|s| s.span_ids.iter().map(|id| (t.trace_id.clone(), id.clone()))))
            .collect();
        let mut out = naive::generate(21, 120, BASE);
        for t in &mut out {
            let trace = hex::encode(t.id);
            t.spans.retain(|s| spans.contains(&(trace.clone(), hex::encode(&s.span.span_id))));
            // A span's value of a key is its first one (the generator repeats some keys).
            for s in &mut t.spans {
                for list in [&mut s.span.attributes, &mut s.resource.attributes] {
                    let mut seen = BTreeSet::new();
                    list.retain(|kv| seen.insert(kv.key.clone()));
                }
            }
        }
        out
    };
    let mut nonempty = 0;
    for (q, tag, key, pick) in [
        (
            "{ status = error }",
            "resource.service.name",
            "service.name",
            res_attrs as fn(&naive::GenSpan) -> Vec<&KeyValue>,
        ),
        ("{ span.http.method = \"GET\" }", "span.http.status_code", "http.status_code", span_attrs),
        ("{ span.http.status_code >= 500 && kind = server }", "span.user.id", "user.id", span_attrs),
        ("{ span.http.method = \"GET\" } | select(span.user.id)", "span.http.method", "http.method", span_attrs),
        ("{ } > { status = error }", "span.http.method", "http.method", span_attrs),
        ("{ span.http.method = \"GET\" } | count() > 2", "resource.service.name", "service.name", res_attrs),
        ("{ status = error } && { span.http.method = \"POST\" }", "span.http.method", "http.method", span_attrs),
        ("{ name = \"no such span\" }", "resource.service.name", "service.name", res_attrs),
    ] {
        let got: TagValuesV2 = get_json(&srv, None, &format!("/api/v2/search/tag/{tag}/values"), &[("q", q)]);
        let got: BTreeSet<(String, String)> = got.tag_values.into_iter().map(|v| (v.r#type, v.value)).collect();
        let want = typed_values(&matched_spans(q), pick, key);
        nonempty += usize::from(!want.is_empty());
        assert_eq!(got, want, "{tag} for {q}");
    }
    assert!(nonempty >= 6, "the narrowing queries must mostly match something");
    let q = "{ status = error }";
    let narrowed: TagsV2 = get_json(&srv, None, "/api/v2/search/tags", &[("q", q), ("scope", "span")]);
    let want: BTreeSet<String> = matched_spans(q)
        .iter()
        .flat_map(|t| &t.spans)
        .flat_map(|s| s.span.attributes.iter().map(|kv| kv.key.clone()))
        .collect();
    assert_eq!(narrowed.scopes[0].tags.iter().cloned().collect::<BTreeSet<_>>(), want);
    // An unfinished query from the editor never fails the request.
    for q in ["{ span.http.", "{ resource.service.name = ", "{}", "((("] {
        let _: TagValuesV2 = get_json(&srv, None, "/api/v2/search/tag/name/values", &[("q", q)]);
        let _: TagsV2 = get_json(&srv, None, "/api/v2/search/tags", &[("q", q)]);
    }
    // Other tenants see none of it.
    let other: TagsV2 = get_json(&srv, Some("someone-else"), "/api/v2/search/tags", &[]);
    assert!(other.scopes.iter().all(|s| s.name == "intrinsic"), "{other:?}");
    let other: TagValuesV2 =
        get_json(&srv, Some("someone-else"), "/api/v2/search/tag/resource.service.name/values", &[]);
    assert!(other.tag_values.is_empty());
}

fn sql(srv: &Server, tenant: Option<&str>, statement: &str) -> (u16, String) {
    let mut req = http().post(format!("{}/api/sql", srv.api)).body(statement.to_string());
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let r = req.send().expect("sql");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

#[test]
fn sql_reads_one_tenant_and_never_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let a = naive::generate(31, 30, BASE);
    let b = naive::generate(32, 20, BASE);
    send(&srv, Some("team-a"), &a, |t, _| t % 2 == 0);
    srv.flush();
    send(&srv, Some("team-a"), &a, |t, _| t % 2 == 1);
    send(&srv, Some("team-b"), &b, |_, _| true);
    srv.flush();
    // Rows as stored: a block keeps one copy of a span (same ID and kind).
    let spans = |t: &[GenTrace]| -> usize {
        t.iter()
            .map(|t| t.spans.iter().map(|s| (s.span.span_id.clone(), s.span.kind)).collect::<BTreeSet<_>>().len())
            .sum()
    };
    let count = |tenant: &str| -> u64 {
        let (status, body) = sql(&srv, Some(tenant), "SELECT count(*) AS n FROM spans");
        assert_eq!(status, 200, "{body}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON rows");
        rows[0]["n"].as_u64().expect("count")
    };
    assert_eq!(count("team-a") as usize, spans(&a));
    assert_eq!(count("team-b") as usize, spans(&b));
    assert_eq!(count("nobody"), 0);

    // Attributes in slots and in lists read alike.
    let (status, body) = sql(
        &srv,
        Some("team-b"),
        "SELECT attr(resource_attrs, 'service.name') AS svc, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(status, 200, "{body}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON rows");
    let total: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap_or(0)).sum();
    assert_eq!(total as usize, spans(&b));

    let r = http()
        .post(format!("{}/api/sql", srv.api))
        .header("X-Scope-OrgID", "team-b")
        .header("Accept", "application/vnd.apache.arrow.stream")
        .body("SELECT name FROM spans")
        .send()
        .expect("sql");
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().expect("body");
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).expect("IPC");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, spans(&b));

    for bad in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO spans SELECT * FROM spans",
        "COPY (SELECT * FROM spans) TO '/tmp/strata-copy.csv'",
        "DROP TABLE spans",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM 'data/blocks'",
        "SELECT nope FROM spans",
        "SELEC 1",
        "",
    ] {
        let (status, body) = sql(&srv, Some("team-a"), bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert!(!std::path::Path::new("/tmp/strata-copy.csv").exists());
}

#[test]
fn searches_during_ingest_and_flush_see_every_acknowledged_trace_once() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Arc::new(Server::start(&dir.path().join("data"), &[("STRATA_MAX_BLOCK_SPANS", "400")]));
    let traces = Arc::new(naive::generate(41, 300, BASE));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let writer = {
        let (srv, traces, acked) = (srv.clone(), traces.clone(), acked.clone());
        std::thread::spawn(move || {
            for (i, chunk) in traces.chunks(5).enumerate() {
                send(&srv, None, chunk, |_, _| true);
                acked.lock().expect("lock").extend(chunk.iter().map(|t| hex::encode(t.id)));
                if i % 6 == 5 {
                    srv.flush();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let mut rounds = 0;
    loop {
        let done = writer.is_finished();
        let before: BTreeSet<String> = acked.lock().expect("lock").clone();
        let got: Vec<String> = search(&srv, None, "{ }", 100_000).traces.iter().map(|t| pad_id(&t.traceID)).collect();
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "a trace was returned twice");
        let missing: Vec<&String> = before.difference(&unique).collect();
        assert!(missing.is_empty(), "acknowledged traces missing from a search: {missing:?}");
        rounds += 1;
        if done {
            break;
        }
    }
    writer.join().expect("writer");
    assert!(rounds > 3, "only {rounds} searches ran while ingesting");
    assert_eq!(search(&srv, None, "{ }", 100_000).traces.len(), traces.len());
}

#[test]
fn query_limits_answer_with_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let traces = naive::generate(51, 40, BASE);
    {
        let srv = Server::start(&dir.path().join("a"), &[("STRATA_MAX_RESPONSE_BYTES", "2000")]);
        load(&srv, None, &traces);
        let r = search_raw(&srv, None, &[("q", "{ }"), ("limit", "1000")], false);
        let (status, body) = (r.status(), r.text().unwrap_or_default());
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("max_response_bytes"), "{body}");
        let (status, body) = sql(&srv, None, "SELECT * FROM spans");
        assert_eq!(status, 422, "{body}");
        let r = search_raw(&srv, None, &[("q", "{ }"), ("limit", "1"), ("spss", "1")], false);
        let (status, body) = (r.status(), r.text().unwrap_or_default());
        assert_eq!(status, 200, "small answers still fit: {body}");
    }
    {
        let srv = Server::start(&dir.path().join("b"), &[("STRATA_MAX_QUERY_SCAN_BYTES", "1")]);
        load(&srv, None, &traces);
        let r = search_raw(&srv, None, &[("q", "{ }"), ("limit", "1000")], false);
        let (status, body) = (r.status(), r.text().unwrap_or_default());
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("max_query_scan_bytes"), "{body}");
    }
    {
        let srv = Server::start(&dir.path().join("c"), &[("STRATA_QUERY_TIMEOUT", "1ns")]);
        load(&srv, None, &traces);
        let r = search_raw(&srv, None, &[("q", "{ }")], false);
        let (status, body) = (r.status(), r.text().unwrap_or_default());
        assert_eq!(status, 504, "{body}");
        assert!(body.contains("query_timeout"), "{body}");
        // The server is still fine.
        assert!(http().get(format!("{}/ready", srv.api)).send().expect("ready").status().is_success());
    }
}
