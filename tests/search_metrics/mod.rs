//! TraceQL metrics end to end: `/api/metrics/query_range` and `/api/metrics/query` (JSON decoded strictly,
//! protobuf with the proto/ messages, gRPC streaming) compared point by point with a naive evaluator over the
//! spans `naive::matched_spans` yields, on traces split across blocks and memory.
//!
//! The naive side follows Tempo 2.9+: a range is aligned to its step (start down and one more step back, end
//! up), interval i is `(start + i*step, start + (i+1)*step]` and stamped with its end; rate = count / step
//! seconds; counting series have a 0 where nothing fell, min/max/sum/avg have no sample there; quantiles are
//! exact nearest-rank (0 for an empty interval); histogram buckets are the next power of two (durations in
//! seconds); series without by() values are labelled `__name__`, a span without any by() value `<first>="nil"`.

use std::collections::{BTreeMap, BTreeSet};

use query_lang as ql;
use serde::Deserialize;
use strata::api::tempopb::streaming_querier_client::StreamingQuerierClient;
use strata::api::tempopb::{QueryInstantRequest, QueryRangeRequest};

use super::common::{Server, http};
use super::naive::{self, Plain};
use super::{BASE, SearchMetrics, load};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RangeJson {
    #[serde(default)]
    series: Vec<SeriesJson>,
    metrics: Option<SearchMetrics>,
    status: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SeriesJson {
    #[serde(default)]
    labels: Vec<LabelJson>,
    #[serde(default)]
    samples: Vec<SampleJson>,
    #[serde(default)]
    exemplars: Vec<ExemplarJson>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SampleJson {
    timestamp_ms: Option<String>,
    value: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExemplarJson {
    #[serde(default)]
    labels: Vec<LabelJson>,
    value: Option<serde_json::Value>,
    timestamp_ms: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct LabelJson {
    key: String,
    value: LabelValue,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelValue {
    string_value: Option<String>,
    int_value: Option<String>,
    double_value: Option<f64>,
    bool_value: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct InstantJson {
    #[serde(default)]
    series: Vec<InstantSeriesJson>,
    metrics: Option<SearchMetrics>,
    status: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct InstantSeriesJson {
    #[serde(default)]
    labels: Vec<LabelJson>,
    value: Option<serde_json::Value>,
}

/// A series' labels as compared: (key, typed text).
type Labels = Vec<(String, String)>;
/// Series as compared: labels -> (unix ms -> value).
type SeriesMap = BTreeMap<Labels, BTreeMap<i64, f64>>;

fn label_text(v: &LabelValue) -> String {
    if let Some(s) = &v.string_value {
        return format!("s:{s}");
    }
    if let Some(i) = &v.int_value {
        return format!("i:{i}");
    }
    if let Some(f) = v.double_value {
        return format!("f:{f}");
    }
    if let Some(b) = v.bool_value {
        return format!("b:{b}");
    }
    "none".into()
}

fn plain_text(p: &Plain) -> String {
    match p {
        Plain::Str(s) => format!("s:{s}"),
        Plain::Int(i) => format!("i:{i}"),
        Plain::Float(f) => format!("f:{f}"),
        Plain::Bool(b) => format!("b:{b}"),
        Plain::Dur(d) => format!("s:{:?}", std::time::Duration::from_nanos(*d as u64)),
    }
}

fn number(v: &Option<serde_json::Value>) -> f64 {
    match v {
        None => 0.0,
        Some(serde_json::Value::Number(n)) => n.as_f64().expect("a finite number"),
        Some(serde_json::Value::String(s)) if s == "NaN" => f64::NAN,
        Some(other) => panic!("unexpected value {other}"),
    }
}

fn labels(l: &[LabelJson]) -> Labels {
    l.iter().map(|l| (l.key.clone(), label_text(&l.value))).collect()
}

fn range_map(r: &RangeJson) -> SeriesMap {
    let mut out = SeriesMap::new();
    for s in &r.series {
        let points = s
            .samples
            .iter()
            .map(|p| (p.timestamp_ms.as_deref().unwrap_or("0").parse::<i64>().expect("timestamp"), number(&p.value)))
            .collect();
        assert!(out.insert(labels(&s.labels), points).is_none(), "two series with the same labels: {:?}", s.labels);
    }
    out
}

const S: u64 = 1_000_000_000;

/// The aligned range of a request, as Tempo aligns it.
fn aligned(start: u64, end: u64, step: u64) -> (u64, u64) {
    let mut s = start / step * step;
    if s > step {
        s -= step;
    }
    (s, end.div_ceil(step) * step)
}

fn nearest_rank(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).max(1).min(v.len());
    v[rank - 1]
}

fn numeric(p: &Plain) -> Option<f64> {
    match p {
        Plain::Int(i) => Some(*i as f64),
        Plain::Float(f) => Some(*f),
        Plain::Dur(d) => Some(*d as f64 / 1e9),
        _ => None,
    }
}

fn next_pow2(v: f64) -> f64 {
    let mut b = 1.0f64;
    while b < v {
        b *= 2.0;
    }
    while b / 2.0 >= v {
        b /= 2.0;
    }
    b
}

/// The naive answer: labels -> value per interval (None: no sample).
type Naive = BTreeMap<Labels, Vec<Option<f64>>>;

fn naive_expr(e: &ql::MetricsExpr, traces: &[naive::GenTrace], start: u64, end: u64, step: u64) -> Naive {
    match e {
        ql::MetricsExpr::Pipeline(p) => {
            let leaf = naive_leaf(p, traces, start, end, step);
            naive_stages(leaf, &p.stages)
        }
        ql::MetricsExpr::Staged { expr, stages } => naive_stages(naive_expr(expr, traces, start, end, step), stages),
        ql::MetricsExpr::Binary { op, lhs, rhs } => {
            let apply = |a: f64, b: f64| -> Option<f64> {
                let r = match op {
                    ql::ArithOp::Add => a + b,
                    ql::ArithOp::Sub => a - b,
                    ql::ArithOp::Mul => a * b,
                    ql::ArithOp::Div => {
                        if b == 0.0 {
                            return None;
                        }
                        a / b
                    }
                    _ => return None,
                };
                Some(r)
            };
            let strip = |l: &Labels| -> Labels { l.iter().filter(|(k, _)| k != "__name__").cloned().collect() };
            match (&**lhs, &**rhs) {
                (x, ql::MetricsExpr::Scalar(c)) | (ql::MetricsExpr::Scalar(c), x) => {
                    let c = match c {
                        ql::Literal::Int(i) => *i as f64,
                        ql::Literal::Float(f) => *f,
                        _ => f64::NAN,
                    };
                    let scalar_left = matches!(**lhs, ql::MetricsExpr::Scalar(_));
                    naive_expr(x, traces, start, end, step)
                        .into_iter()
                        .map(|(l, v)| {
                            let v = v
                                .iter()
                                .map(|x| x.and_then(|x| if scalar_left { apply(c, x) } else { apply(x, c) }))
                                .collect();
                            (l, v)
                        })
                        .collect()
                }
                _ => {
                    let a = naive_expr(lhs, traces, start, end, step);
                    let b = naive_expr(rhs, traces, start, end, step);
                    let mut out = Naive::new();
                    for (la, va) in a {
                        let Some((_, vb)) = b.iter().find(|(lb, _)| strip(lb) == strip(&la)) else { continue };
                        let v = va.iter().zip(vb).map(|(x, y)| x.zip(*y).and_then(|(x, y)| apply(x, y))).collect();
                        out.insert(la, v);
                    }
                    out
                }
            }
        }
        ql::MetricsExpr::Scalar(_) => Naive::new(),
    }
}

fn naive_leaf(p: &ql::MetricsPipeline, traces: &[naive::GenTrace], start: u64, end: u64, step: u64) -> Naive {
    let n = ((end - start) / step) as usize;
    let f = &p.function;
    let mut fields = f.by.clone();
    fields.extend(f.op.field().cloned());
    let select = match &f.op {
        ql::MetricsOp::Compare { filter, .. } => Some(filter),
        _ => None,
    };
    let spans = naive::matched_spans(&p.pipeline, traces, &fields, select);
    // labels -> values per interval (counts push 1.0).
    let mut groups: BTreeMap<Labels, Vec<Vec<f64>>> = BTreeMap::new();
    let name = f.op.name();
    for s in &spans {
        if s.start_ns <= start || s.start_ns > end {
            continue;
        }
        let i = ((s.start_ns - start).div_ceil(step) - 1) as usize;
        if let ql::MetricsOp::Compare { .. } = f.op {
            let kind = if s.selected { "selection" } else { "baseline" };
            for (k, v) in &s.attrs {
                let l = vec![("__meta_type".to_string(), format!("s:{kind}")), (k.clone(), plain_text(v))];
                groups.entry(l).or_insert_with(|| vec![vec![]; n])[i].push(1.0);
                let t = vec![("__meta_type".to_string(), format!("s:{kind}_total")), (k.clone(), "s:nil".to_string())];
                groups.entry(t).or_insert_with(|| vec![vec![]; n])[i].push(1.0);
            }
            continue;
        }
        let mut l: Labels =
            f.by.iter()
                .zip(&s.fields)
                .filter_map(|(field, v)| v.as_ref().map(|v| (field.to_string(), plain_text(v))))
                .collect();
        if l.is_empty()
            && let Some(first) = f.by.first()
        {
            l.push((first.to_string(), "s:nil".into()));
        }
        let value = if f.op.field().is_some() { s.fields.last().cloned().flatten() } else { None };
        let value_num = value.as_ref().and_then(numeric);
        match &f.op {
            ql::MetricsOp::Rate | ql::MetricsOp::CountOverTime => {}
            ql::MetricsOp::HistogramOverTime(_) => {
                let Some(v) = value_num else { continue };
                if v <= 0.0 {
                    continue;
                }
                let b = match value {
                    Some(Plain::Dur(d)) => next_pow2(d as f64) / 1e9,
                    _ => next_pow2(v),
                };
                l.push(("__bucket".into(), format!("f:{b}")));
            }
            _ => {
                if value_num.is_none() {
                    continue;
                }
            }
        }
        if l.is_empty() {
            l.push(("__name__".into(), format!("s:{name}")));
        }
        groups.entry(l).or_insert_with(|| vec![vec![]; n])[i].push(value_num.unwrap_or(1.0));
    }
    if groups.is_empty() && f.by.is_empty() && matches!(f.op, ql::MetricsOp::Rate | ql::MetricsOp::CountOverTime) {
        groups.insert(vec![("__name__".into(), format!("s:{name}"))], vec![vec![]; n]);
    }
    let step_s = step as f64 / 1e9;
    let mut out = Naive::new();
    for (l, cells) in groups {
        match &f.op {
            ql::MetricsOp::Rate => {
                out.insert(l, cells.iter().map(|c| Some(c.len() as f64 / step_s)).collect());
            }
            ql::MetricsOp::CountOverTime | ql::MetricsOp::HistogramOverTime(_) | ql::MetricsOp::Compare { .. } => {
                out.insert(l, cells.iter().map(|c| Some(c.len() as f64)).collect());
            }
            ql::MetricsOp::MinOverTime(_) => {
                out.insert(l, cells.iter().map(|c| c.iter().copied().reduce(f64::min)).collect());
            }
            ql::MetricsOp::MaxOverTime(_) => {
                out.insert(l, cells.iter().map(|c| c.iter().copied().reduce(f64::max)).collect());
            }
            ql::MetricsOp::SumOverTime(_) => {
                out.insert(l, cells.iter().map(|c| c.iter().copied().reduce(|a, b| a + b)).collect());
            }
            ql::MetricsOp::AvgOverTime(_) => {
                let avg = |c: &Vec<f64>| (!c.is_empty()).then(|| c.iter().sum::<f64>() / c.len() as f64);
                out.insert(l, cells.iter().map(avg).collect());
            }
            ql::MetricsOp::QuantileOverTime(_, qs) => {
                let base: Labels = l.iter().filter(|(k, _)| k != "__name__").cloned().collect();
                for q in qs {
                    let mut lq = base.clone();
                    lq.push(("p".into(), format!("f:{q}")));
                    out.insert(lq, cells.iter().map(|c| Some(nearest_rank(c, *q))).collect());
                }
            }
        }
    }
    if let ql::MetricsOp::Compare { top_n, .. } = f.op {
        // Keep the top_n values per (type, attribute) by their total.
        type Ranked = Vec<(f64, String, Labels)>;
        let mut by_attr: BTreeMap<(String, String), Ranked> = BTreeMap::new();
        for (l, v) in &out {
            if l[0].1.ends_with("_total") {
                continue;
            }
            let total: f64 = v.iter().flatten().sum();
            by_attr.entry((l[0].1.clone(), l[1].0.clone())).or_default().push((total, l[1].1.clone(), l.clone()));
        }
        for (_, mut vals) in by_attr {
            vals.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (_, _, l) in vals.into_iter().skip(top_n as usize) {
                out.remove(&l);
            }
        }
    }
    out
}

fn naive_stages(mut set: Naive, stages: &[ql::SecondStage]) -> Naive {
    for st in stages {
        match st {
            ql::SecondStage::Filter { op, value } => {
                let x = match value {
                    ql::Literal::Int(i) => *i as f64,
                    ql::Literal::Float(f) => *f,
                    ql::Literal::Duration(d) => *d as f64 / 1e9,
                    _ => continue,
                };
                for v in set.values_mut() {
                    for p in v.iter_mut() {
                        let keep = p.is_some_and(|y| match op {
                            ql::CmpOp::Eq => y == x,
                            ql::CmpOp::Neq => y != x,
                            ql::CmpOp::Lt => y < x,
                            ql::CmpOp::Lte => y <= x,
                            ql::CmpOp::Gt => y > x,
                            ql::CmpOp::Gte => y >= x,
                        });
                        if !keep {
                            *p = None;
                        }
                    }
                }
            }
            ql::SecondStage::TopK(n) | ql::SecondStage::BottomK(n) => {
                let n = *n as usize;
                if set.len() <= n {
                    continue;
                }
                let top = matches!(st, ql::SecondStage::TopK(_));
                let keys: Vec<Labels> = set.keys().cloned().collect();
                let plain_key = |l: &Labels| -> Vec<(String, String)> {
                    l.iter()
                        .map(|(k, v)| (k.clone(), v.split_once(':').map_or(v.clone(), |x| x.1.to_string())))
                        .collect()
                };
                let len = set.values().next().map_or(0, Vec::len);
                let mut keep: BTreeSet<(Labels, usize)> = BTreeSet::new();
                #[allow(clippy::needless_range_loop)] // `i` indexes every series
                for i in 0..len {
                    let mut ranked: Vec<&Labels> = keys.iter().filter(|k| set[*k][i].is_some()).collect();
                    ranked.sort_by(|a, b| {
                        let (x, y) = (set[*a][i].unwrap_or(0.0), set[*b][i].unwrap_or(0.0));
                        let o = if top { y.total_cmp(&x) } else { x.total_cmp(&y) };
                        o.then_with(|| plain_key(a).cmp(&plain_key(b)))
                    });
                    for k in ranked.into_iter().take(n) {
                        keep.insert((k.clone(), i));
                    }
                }
                for (k, v) in set.iter_mut() {
                    for (i, p) in v.iter_mut().enumerate() {
                        if !keep.contains(&(k.clone(), i)) {
                            *p = None;
                        }
                    }
                }
            }
        }
    }
    set
}

/// The naive answer as compared: samples at interval ends, series without samples gone.
fn naive_map(n: Naive, start: u64, step: u64) -> SeriesMap {
    n.into_iter()
        .map(|(l, v)| {
            let pts: BTreeMap<i64, f64> = v
                .iter()
                .enumerate()
                .filter_map(|(i, x)| x.map(|x| (((start + (i as u64 + 1) * step) / 1_000_000) as i64, x)))
                .collect();
            (l, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same(a: &SeriesMap, b: &SeriesMap) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((la, pa), (lb, pb))| {
            la == lb
                && pa.len() == pb.len()
                && pa.iter().zip(pb).all(|((ta, va), (tb, vb))| ta == tb && close(*va, *vb))
        })
}

fn first_difference(got: &SeriesMap, want: &SeriesMap) -> String {
    for (l, w) in want {
        match got.get(l) {
            None => return format!("missing series {l:?}: {w:?}"),
            Some(g) if !same(&BTreeMap::from([(l.clone(), g.clone())]), &BTreeMap::from([(l.clone(), w.clone())])) => {
                return format!("series {l:?}\n    got  {g:?}\n    want {w:?}");
            }
            _ => {}
        }
    }
    match got.keys().find(|l| !want.contains_key(*l)) {
        Some(l) => format!("unexpected series {l:?}: {:?}", got[l]),
        None => "no difference".into(),
    }
}

fn get(srv: &Server, path: &str, params: &[(&str, String)], proto: bool) -> reqwest::blocking::Response {
    let mut req = http().get(format!("{}{path}", srv.api)).query(params);
    if proto {
        req = req.header("Accept", "application/protobuf");
    }
    req.send().expect("metrics request")
}

fn query_range(srv: &Server, q: &str, start: u64, end: u64, step: &str, exemplars: &str) -> RangeJson {
    let params = [
        ("q", q.to_string()),
        ("start", (start / S).to_string()),
        ("end", (end / S).to_string()),
        ("step", step.to_string()),
        ("exemplars", exemplars.to_string()),
    ];
    let r = get(srv, "/api/metrics/query_range", &params, false);
    let status = r.status();
    let body = r.text().expect("body");
    assert!(status.is_success(), "{q}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("strict decode of {q:?} failed: {e}\n{body}"))
}

/// Metrics queries, each function, by(), second stages, arithmetic, compare, and queries matching nothing.
const QUERIES: &[&str] = &[
    "{ } | rate()",
    "{ } | count_over_time()",
    "{ status = error } | rate() by (resource.service.name)",
    "{ } | count_over_time() by (name, kind)",
    "{ span.http.status_code >= 500 } | quantile_over_time(duration, .5, .99) by (name)",
    "{ } | quantile_over_time(duration, 0, .25, 1)",
    "{ } | quantile_over_time(span.http.status_code, .5) by (resource.service.name)",
    "{ } | min_over_time(duration) by (resource.service.name)",
    "{ } | max_over_time(duration) by (kind)",
    "{ } | sum_over_time(span.retry.count) by (.region)",
    "{ } | avg_over_time(span.http.status_code) by (span.http.method)",
    "{ } | avg_over_time(span.sample.ratio)",
    "{ } | sum_over_time(duration) by (resource.service.name, span.http.method)",
    "{ } | histogram_over_time(duration)",
    "{ kind = client } | histogram_over_time(duration) by (resource.service.name)",
    "{ } | histogram_over_time(span.http.status_code)",
    "{ } | count_over_time() by (span.does.not.exist)",
    "{ } | count_over_time() by (span.does.not.exist, span.http.method)",
    "{ } | rate() by (status)",
    "{ } | count_over_time() by (trace:rootService)",
    "{ } | count_over_time() by (resource.service.name) | topk(2)",
    "{ } | max_over_time(duration) by (name) | bottomk(3)",
    "{ kind = server } >> { kind = client } | count_over_time() by (resource.service.name)",
    "{ kind = server } !> { } | count_over_time()",
    "{ } | rate() by (resource.service.name) > 0.2",
    "{ } | quantile_over_time(duration, .9) by (resource.service.name) > 100ms",
    "({ status = error } | count_over_time() by (resource.service.name)) / ({ } | count_over_time() by (resource.service.name))",
    "({ } | rate()) * 60",
    "{ } | compare({ status = error }, 1000)",
    "{ resource.service.name = \"cart\" } | compare({ span.http.status_code >= 500 }, 1000)",
    "{ traceDuration > 2s } | count_over_time() by (resource.service.name)",
    "{ } | count() > 3 | count_over_time() by (resource.service.name)",
    // Matching nothing: ungrouped counts are a flat zero line, the others have no series.
    "{ span.does.not.exist = 1 } | rate()",
    "{ span.does.not.exist = 1 } | count_over_time() by (name)",
    "{ span.does.not.exist = 1 } | max_over_time(duration)",
    "{ name = \"no such span\" } | compare({ status = error })",
    "{ duration > 1000s } | quantile_over_time(duration, .5)",
];

fn loaded() -> (tempfile::TempDir, Server, Vec<naive::GenTrace>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let traces = naive::generate(7, 240, BASE);
    load(&srv, None, &traces);
    (dir, srv, traces)
}

#[test]
fn metrics_match_the_naive_evaluator() {
    let (_dir, srv, traces) = loaded();
    let mut failures = Vec::new();
    let mut empty = 0;
    // Steps that divide the bounds and one that does not, ranges that cut traces at both ends, and a range before
    // any data (every query empty: zero lines for ungrouped counts, nothing else).
    let ranges = [
        (BASE + 3 * S, BASE + 200 * S, 15 * S),
        (BASE + 40 * S, BASE + 130 * S, 7 * S),
        (BASE - 900 * S, BASE - 300 * S, 60 * S),
    ];
    for (start, end, step) in ranges {
        let (a_start, a_end) = aligned(start, end, step);
        for q in QUERIES {
            let parsed = ql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let ql::Body::Metrics(expr) = &parsed.body else { panic!("{q} is not a metrics query") };
            let want = naive_map(naive_expr(expr, &traces, a_start, a_end, step), a_start, step);
            if want.values().all(|p| p.values().all(|v| *v == 0.0)) {
                empty += 1;
            }
            let resp = query_range(&srv, q, start, end, &format!("{}s", step / S), "1");
            assert!(resp.status.is_none() && resp.message.is_none(), "{q}: complete answers carry no status");
            assert!(resp.metrics.is_some(), "{q}: metrics are reported");
            let got = range_map(&resp);
            if !same(&got, &want) {
                failures.push(format!("{q} (step {}s)\n  {}", step / S, first_difference(&got, &want)));
            }
        }
    }
    assert!(empty >= QUERIES.len() + 8, "only {empty} queries match nothing");
    assert!(failures.is_empty(), "{} metrics queries differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn instant_queries_match_the_naive_evaluator_and_other_forms_agree() {
    let (_dir, srv, traces) = loaded();
    let (start, end) = (BASE + 10 * S, BASE + 170 * S);
    for q in QUERIES.iter().filter(|q| !q.contains("topk") && !q.contains("bottomk")) {
        let parsed = ql::parse(q).expect("parses");
        let ql::Body::Metrics(expr) = &parsed.body else { unreachable!() };
        let want: BTreeMap<Labels, f64> = naive_expr(expr, &traces, start, end, end - start)
            .into_iter()
            .filter_map(|(l, v)| Some((l, v[0]?)))
            .collect();
        let params = [("q", q.to_string()), ("start", (start / S).to_string()), ("end", (end / S).to_string())];
        let r = get(&srv, "/api/metrics/query", &params, false);
        assert!(r.status().is_success(), "{q}: {}", r.status());
        let body = r.text().expect("body");
        let resp: InstantJson =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("strict decode of {q:?} failed: {e}\n{body}"));
        assert!(resp.status.is_none() && resp.message.is_none() && resp.metrics.is_some());
        let got: BTreeMap<Labels, f64> = resp.series.iter().map(|s| (labels(&s.labels), number(&s.value))).collect();
        let ok = got.len() == want.len() && got.iter().zip(&want).all(|((a, x), (b, y))| a == b && close(*x, *y));
        assert!(ok, "{q}: instant\n  got  {got:?}\n  want {want:?}");
    }

    // The protobuf form and the gRPC stream carry the same series as the JSON.
    let q = "{ } | quantile_over_time(duration, .5, .9) by (resource.service.name)";
    let (rs, re) = (BASE + 3 * S, BASE + 200 * S);
    let json = range_map(&query_range(&srv, q, rs, re, "10", "1"));
    let params = [
        ("q", q.to_string()),
        ("start", (rs / S).to_string()),
        ("end", (re / S).to_string()),
        ("step", "10".to_string()),
    ];
    let r = get(&srv, "/api/metrics/query_range", &params, true);
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/protobuf"));
    let bytes = r.bytes().expect("body");
    let proto = <strata::api::tempopb::QueryRangeResponse as prost::Message>::decode(bytes.as_ref()).expect("decodes");
    let proto_map = proto_series(&proto.series);
    assert!(same(&proto_map, &json), "protobuf and JSON differ");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = StreamingQuerierClient::connect(srv.api.clone()).await.expect("gRPC connects");
        let mut stream = client
            .metrics_query_range(QueryRangeRequest {
                query: q.into(),
                start: rs,
                end: re,
                step: 10 * S,
                ..Default::default()
            })
            .await
            .expect("metrics query range")
            .into_inner();
        let mut last = None;
        while let Some(msg) = stream.message().await.expect("stream message") {
            last = Some(msg);
        }
        let last = last.expect("at least one message");
        assert!(same(&proto_series(&last.series), &json), "gRPC and JSON differ");

        let mut stream = client
            .metrics_query_instant(QueryInstantRequest { query: "{ } | count_over_time()".into(), start: rs, end: re })
            .await
            .expect("metrics query instant")
            .into_inner();
        let msg = stream.message().await.expect("message").expect("one message");
        let want = naive_expr(
            &match ql::parse("{ } | count_over_time()").expect("parses").body {
                ql::Body::Metrics(m) => m,
                _ => unreachable!(),
            },
            &traces,
            rs,
            re,
            re - rs,
        );
        let want_count = want.values().next().and_then(|v| v[0]).expect("a count");
        assert_eq!(msg.series.len(), 1);
        assert!(close(msg.series[0].value, want_count), "{} vs {want_count}", msg.series[0].value);

        let bad = client
            .metrics_query_range(QueryRangeRequest {
                query: "{ } | rate(".into(),
                start: rs,
                end: re,
                ..Default::default()
            })
            .await;
        assert_eq!(bad.err().map(|e| e.code()), Some(tonic::Code::InvalidArgument));
    });
}

fn proto_series(series: &[strata::api::tempopb::TimeSeries]) -> SeriesMap {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    series
        .iter()
        .map(|s| {
            let l: Labels = s
                .labels
                .iter()
                .map(|kv| {
                    let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(x)) => format!("s:{x}"),
                        Some(Value::IntValue(x)) => format!("i:{x}"),
                        Some(Value::DoubleValue(x)) => format!("f:{x}"),
                        Some(Value::BoolValue(x)) => format!("b:{x}"),
                        _ => "none".into(),
                    };
                    (kv.key.clone(), v)
                })
                .collect();
            (l, s.samples.iter().map(|p| (p.timestamp_ms, p.value)).collect())
        })
        .collect()
}

#[test]
fn exemplars_link_matching_traces_and_bad_requests_are_400s() {
    let (_dir, srv, traces) = loaded();
    let (start, end) = (BASE + 3 * S, BASE + 200 * S);
    let q = "{ status = error } | count_over_time() by (resource.service.name)";
    let parsed = ql::parse(q).expect("parses");
    let ql::Body::Metrics(ql::MetricsExpr::Pipeline(p)) = &parsed.body else { unreachable!() };
    let matching: BTreeSet<String> =
        naive::matched_spans(&p.pipeline, &traces, &[], None).into_iter().map(|s| s.trace_id).collect();
    for (wanted, max) in [("10", 10usize), ("0", 100), ("1000", 100)] {
        let resp = query_range(&srv, q, start, end, "15", wanted);
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for s in &resp.series {
            let samples: BTreeMap<i64, f64> = s
                .samples
                .iter()
                .map(|p| (p.timestamp_ms.as_deref().unwrap_or("0").parse().expect("ts"), number(&p.value)))
                .collect();
            for e in &s.exemplars {
                total += 1;
                let id = e.labels.iter().find(|l| l.key == "trace:id").and_then(|l| l.value.string_value.clone());
                let id = format!("{:0>32}", id.expect("every exemplar names its trace"));
                assert!(matching.contains(&id), "exemplar trace {id} does not match the query");
                assert!(
                    seen.insert(id.clone()),
                    "one exemplar per trace: {id} twice in {:?}",
                    resp.series.iter().map(|s| &s.exemplars).collect::<Vec<_>>()
                );
                let ts: i64 = e.timestamp_ms.as_deref().expect("timestamp").parse().expect("ts");
                // A counting exemplar carries its series' value in the interval holding it.
                let interval_end = samples.range(ts + 1..).next().map(|(_, v)| *v);
                assert_eq!(interval_end, Some(number(&e.value)), "exemplar value is its interval's count");
            }
        }
        assert!(total > 0 && total <= max, "exemplars={wanted}: {total} exemplars");
    }
    let none = query_range(&srv, &format!("{q} with(exemplars=false)"), start, end, "15", "10");
    assert!(none.series.iter().all(|s| s.exemplars.is_empty()), "with(exemplars=false) turns them off");

    let bad = |params: &[(&str, &str)], want: &str| {
        let params: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let r = get(&srv, "/api/metrics/query_range", &params, false);
        let status = r.status().as_u16();
        let body = r.text().expect("body");
        assert_eq!(status, 400, "{params:?}: {body}");
        assert!(body.contains(want), "{params:?}: {body:?} should mention {want:?}");
    };
    let (s, e) = ((start / S).to_string(), (end / S).to_string());
    bad(&[("q", "{ } | rate("), ("start", &s), ("end", &e)], "at 1:");
    bad(&[("q", "{ }"), ("start", &s), ("end", &e)], "metrics function");
    bad(&[("q", "{ } | rate()"), ("start", &e), ("end", &s)], "end must be greater than start");
    bad(&[("q", "{ } | rate()"), ("start", &s), ("end", &e), ("step", "0.001")], "step of");
    bad(&[("q", "{ } | rate()"), ("start", "0"), ("end", &e), ("step", "60")], "maximum allowed duration");
    bad(&[("q", "{ } | rate()"), ("start", &s), ("end", &e), ("step", "soon")], "step");
    bad(&[("start", &s), ("end", &e)], "missing q");
    bad(&[("q", "{ } | rate()"), ("start", "99999999999999999999999"), ("end", &e)], "invalid start");
    bad(&[("q", "{ } | rate()"), ("start", &s), ("end", &e), ("exemplars", "-1")], "exemplars");
    bad(&[("q", "{ } | rate()"), ("start", &s), ("end", &e), ("step", "1e30")], "step");
    bad(&[("q", "{ } | compare({ status = error }) | topk(2)"), ("start", &s), ("end", &e)], "compare");
    let r = get(
        &srv,
        "/api/metrics/query",
        &[("q", "{ } | rate()".into()), ("start", s.clone()), ("end", s.clone())],
        false,
    );
    assert_eq!(r.status().as_u16(), 400, "an instant query over nothing");
}
