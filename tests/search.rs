//! TraceQL search, end to end: the real binary fed over OTLP/HTTP, queried over `/api/search` as Grafana does, and
//! compared with the naive evaluator in `tests/naive` over the same generated traces.
//!
//! Traces are split on purpose: some of their spans go into a first block, some into a second, some stay in
//! memory, so trace-level values and structural operators must be computed over all fragments.

mod common;
mod naive;

use std::collections::{BTreeMap, BTreeSet};

use common::{Server, http};
use naive::{GenTrace, NaiveTrace};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use serde::Deserialize;

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
    send(srv, tenant, traces, |t, s| placement(t, s) == 2);
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
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
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
        let top = search(&srv, None, q, 3);
        let top_ids: Vec<String> = top.traces.iter().map(|t| pad_id(&t.traceID)).collect();
        let want_ids: Vec<String> = expected.iter().take(3).map(|t| t.id.clone()).collect();
        if top_ids != want_ids {
            failures.push(format!("{q}\n  limit=3 gave {top_ids:?}, want {want_ids:?}"));
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
    // Still serving.
    assert!(search(&srv, None, "{ }", 5).traces.is_empty());
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
