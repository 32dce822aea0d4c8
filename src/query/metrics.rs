//! TraceQL metrics (`{ ... } | rate() by (...)`): time series computed from the spans a search pipeline yields.
//!
//! No second engine: each metrics pipeline runs as a search over the range (same candidate scans, same exact
//! per-trace evaluation, live data included) that hands every matching trace, with its spansets, to an
//! accumulator instead of collecting hits. The accumulator buckets each matched span (once, however many spansets
//! hold it) by its start time and folds it into its series. Semantics follow Tempo 2.9+ (see `SEMANTICS.md`):
//! intervals are `(start + i*step, start + (i+1)*step]`, stamped with their end.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use query_lang::{
    ArithOp, CmpOp, Field, Literal, MetricsExpr, MetricsFunction, MetricsOp, MetricsPipeline, SecondStage,
};

use std::sync::Arc;

use futures::StreamExt;
use query_lang::Pipeline;

use super::QueryError;
use super::eval::{Evaluator, ReadNeeds, SpanSet, TraceData, span_local};
use super::local::each_run;
use super::search::{Reads, SearchEngine, SearchRequest, SearchStats, Source, cores};
use crate::block::SpanParts;
use crate::model::Tenant;

/// Most distinct values of one attribute `compare()` counts; later values count in the attribute's totals only.
const COMPARE_MAX_VALUES: usize = 10_000;

/// A metrics query over `(start, end]`, in `step`-long intervals (all unix nanoseconds / nanoseconds).
pub struct MetricsRequest {
    pub expr: MetricsExpr,
    pub start: u64,
    pub end: u64,
    pub step: u64,
    /// Most exemplars in the whole answer (0: none).
    pub exemplars: usize,
    /// Most series one function may produce before the query fails.
    pub max_series: usize,
}

/// The time frame of a query, shared by the accumulators of its sources.
#[derive(Clone, Copy)]
struct Frame {
    start: u64,
    end: u64,
    step: u64,
    exemplars: usize,
    max_series: usize,
}

impl MetricsRequest {
    fn frame(&self) -> Frame {
        Frame {
            start: self.start,
            end: self.end,
            step: self.step,
            exemplars: self.exemplars,
            max_series: self.max_series,
        }
    }

    /// Unix milliseconds of interval `i`'s end.
    fn timestamp_ms(&self, i: usize) -> i64 {
        self.frame().timestamp_ms(i)
    }
}

impl Frame {
    fn intervals(&self) -> usize {
        ((self.end.saturating_sub(self.start)) / self.step.max(1)) as usize
    }

    /// The interval a span starting at `ts` falls in: `(start + i*step, start + (i+1)*step]`.
    fn interval(&self, ts: u64) -> Option<usize> {
        if ts <= self.start || ts > self.end {
            return None;
        }
        // An unaligned end (a range not a whole number of steps) has no interval for its last partial step.
        Some(((ts - self.start - 1) / self.step.max(1)) as usize).filter(|&i| i < self.intervals())
    }

    /// Unix milliseconds of interval `i`'s end.
    fn timestamp_ms(&self, i: usize) -> i64 {
        ((self.start + (i as u64 + 1) * self.step) / 1_000_000) as i64
    }
}

/// One output series: labels, samples `(unix ms, value)` oldest first (intervals without a value left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<KeyValue>,
    pub samples: Vec<(i64, f64)>,
    pub exemplars: Vec<Exemplar>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<KeyValue>,
    pub value: f64,
    pub timestamp_ms: i64,
}

pub struct MetricsResult {
    pub series: Vec<Series>,
    pub stats: SearchStats,
}

/// A series while it is computed: one value per interval, NaN where it has none.
#[derive(Clone)]
struct Raw {
    labels: Vec<(String, AnyValue)>,
    values: Vec<f64>,
    /// (interval, span start ns, own value or NaN = the series' value there, trace ID hex).
    exemplars: Vec<(usize, u64, f64, String)>,
}

type Set = Vec<Raw>;

/// Values of one series per interval, as the function needs them.
enum Cells {
    /// rate, count_over_time, histogram buckets: counts.
    Count(Vec<f64>),
    /// min/max/sum_over_time: NaN until a value arrives.
    Fold(Vec<f64>),
    /// avg_over_time: (sum, count).
    Avg(Vec<(f64, u64)>),
    /// quantile_over_time: every value (exact nearest-rank quantiles).
    Values(Vec<Vec<f64>>),
}

struct Group {
    labels: Vec<(String, AnyValue)>,
    cells: Cells,
    exemplars: Vec<(usize, u64, f64, String)>,
}

/// Chooses exemplars spread over the range: at most one per trace, at most two per slice of the range.
struct ExemplarPicker {
    limit: usize,
    taken: usize,
    per_slice: Vec<u8>,
    start: u64,
    width: u64,
}

impl ExemplarPicker {
    fn new(req: &Frame) -> Self {
        let slices = (req.exemplars / 2).max(1);
        let width = (req.end.saturating_sub(req.start) / slices as u64).max(1);
        ExemplarPicker { limit: req.exemplars, taken: 0, per_slice: vec![0; slices], start: req.start, width }
    }

    fn take(&mut self, ts: u64) -> bool {
        if self.taken >= self.limit {
            return false;
        }
        let slice = ((ts.saturating_sub(self.start) / self.width) as usize).min(self.per_slice.len() - 1);
        if self.per_slice[slice] >= 2 {
            return false;
        }
        self.per_slice[slice] += 1;
        self.taken += 1;
        true
    }
}

fn str_value(s: impl Into<String>) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(s.into())) }
}

/// A label value as plain text (what ties between series are broken by).
fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(f)) => f.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// Labels as (key, text) pairs: the order series are sorted in, and topk/bottomk ties broken by.
fn label_order(labels: &[(String, AnyValue)]) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| (k.clone(), value_text(v))).collect()
}

fn label_key(labels: &[(String, AnyValue)]) -> String {
    use std::fmt::Write;
    let mut k = String::new();
    for (name, v) in labels {
        let _ = write!(k, "{name}\u{1f}{:?}\u{1e}", v.value);
    }
    k
}

/// The group labels of span `i`: by() values in order, absent ones dropped; when every one is absent, the first
/// key with the string `nil` (as Tempo labels such spans).
fn group_labels(eval: &Evaluator, t: &TraceData, i: usize, by: &[Field], names: &[String]) -> Vec<(String, AnyValue)> {
    let labels: Vec<(String, AnyValue)> =
        by.iter().zip(names).filter_map(|(f, name)| eval.label_value(t, i, f).map(|v| (name.clone(), v))).collect();
    match (labels.is_empty(), names.first()) {
        (true, Some(first)) => vec![(first.clone(), str_value("nil"))],
        _ => labels,
    }
}

/// The bucket Tempo's histograms put a value in: the next power of two at or above it (durations bucketed in
/// nanoseconds, labelled in seconds). `None` for values that have no bucket (zero, negative).
fn log2_bucket(v: f64, duration: bool) -> Option<f64> {
    let x = if duration { v * 1e9 } else { v };
    if x.is_nan() || x <= 0.0 || !x.is_finite() {
        return None;
    }
    // log2 of a value just above a power of two may round down to it: settle the bucket exactly.
    let mut b = 2f64.powi(x.log2().ceil() as i32);
    while b < x {
        b *= 2.0;
    }
    while b / 2.0 >= x {
        b /= 2.0;
    }
    Some(if duration { b.round() / 1e9 } else { b })
}

/// Whether a field's metric values are durations (reported in seconds).
fn is_duration(f: &Field) -> bool {
    use query_lang::Intrinsic::*;
    matches!(f, Field::Intrinsic(Duration | TraceDuration | EventTimeSinceStart))
}

/// Exact nearest-rank quantile: the smallest value with at least `q * n` values at or below it.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Folds the matched spans of one metrics pipeline into series (one per source when sources are scanned in
/// parallel, merged at the end).
struct Accumulator {
    req: Frame,
    function: Arc<MetricsFunction>,
    /// The by() fields as printed (label keys).
    by_names: Vec<String>,
    /// Reused buffer for series keys.
    key: String,
    groups: HashMap<String, Group>,
    picker: ExemplarPicker,
    /// `compare()`: ((type, attribute) -> value key -> (value, counts)), and totals per (type, attribute).
    compare: CompareCounts,
    compare_totals: HashMap<(bool, String), Vec<f64>>,
    too_many: Option<String>,
}

impl Accumulator {
    fn new(req: Frame, function: Arc<MetricsFunction>) -> Self {
        Accumulator {
            req,
            by_names: function.by.iter().map(ToString::to_string).collect(),
            key: String::new(),
            function,
            groups: HashMap::new(),
            picker: ExemplarPicker::new(&req),
            compare: HashMap::new(),
            compare_totals: HashMap::new(),
            too_many: None,
        }
    }

    /// The series `labels` belong to, created on first use; `None` past the series limit.
    fn group<'g>(
        groups: &'g mut HashMap<String, Group>,
        req: &Frame,
        op: &MetricsOp,
        key: &str,
        labels: impl FnOnce() -> Vec<(String, AnyValue)>,
        too_many: &mut Option<String>,
    ) -> Option<&'g mut Group> {
        if !groups.contains_key(key) {
            if groups.len() >= req.max_series {
                *too_many = Some(format!(
                    "the metrics query produces more than {} series (max_metrics_series); group by fewer or \
                     lower-cardinality attributes",
                    req.max_series
                ));
                return None;
            }
            let n = req.intervals();
            let cells = match op {
                MetricsOp::Rate | MetricsOp::CountOverTime | MetricsOp::HistogramOverTime(_) => {
                    Cells::Count(vec![0.0; n])
                }
                MetricsOp::AvgOverTime(_) => Cells::Avg(vec![(0.0, 0); n]),
                MetricsOp::QuantileOverTime(..) => Cells::Values(vec![Vec::new(); n]),
                _ => Cells::Fold(vec![f64::NAN; n]),
            };
            groups.insert(key.to_string(), Group { labels: labels(), cells, exemplars: Vec::new() });
        }
        groups.get_mut(key)
    }

    /// One matching trace: each span of its spansets counted once.
    fn visit(&mut self, eval: &Evaluator, t: &TraceData, sets: &[SpanSet]) {
        if self.too_many.is_some() {
            return;
        }
        let mut spans: Vec<usize> = sets.iter().flat_map(|s| s.spans.iter().copied()).collect();
        spans.sort_unstable();
        spans.dedup();
        let mut exemplar_taken = false;
        let function = self.function.clone();
        for i in spans {
            let ts = t.start_of(i);
            let Some(at) = self.req.interval(ts) else { continue };
            if let MetricsOp::Compare { filter, start, end, .. } = &function.op {
                let in_window = (*start == 0 && *end == 0) || ((*start as u64) < ts && ts <= *end as u64);
                let selected = in_window && eval.span_matches(filter, t, i);
                self.compare_span(eval, t, i, at, selected);
                continue;
            }
            let value = function.op.field().map(|f| (eval.metric_value(t, i, f), is_duration(f)));
            let bucket = match (&function.op, value) {
                (MetricsOp::HistogramOverTime(_), Some((Some(v), dur))) => match log2_bucket(v, dur) {
                    Some(b) => Some(b),
                    None => continue,
                },
                (MetricsOp::HistogramOverTime(_), _) => continue,
                _ => None,
            };
            // The series key, written without allocating: by() values in order (a span without any is keyed as
            // the first field's "nil"), then the bucket.
            let mut key = std::mem::take(&mut self.key);
            key.clear();
            let mut any = false;
            for (n, f) in function.by.iter().enumerate() {
                let at_len = key.len();
                key.push(char::from(b'0' + (n % 10) as u8));
                if eval.write_label(t, i, f, &mut key) {
                    key.push('\u{1e}');
                    any = true;
                } else {
                    key.truncate(at_len);
                }
            }
            if !any && !function.by.is_empty() {
                key.push_str("0snil\u{1e}");
            }
            if let Some(b) = bucket {
                key.push('b');
                key.push_str(&b.to_bits().to_string());
            }
            let labels = || {
                let mut labels = group_labels(eval, t, i, &function.by, &self.by_names);
                if let Some(b) = bucket {
                    labels.push(("__bucket".to_string(), AnyValue { value: Some(Value::DoubleValue(b)) }));
                }
                if labels.is_empty() {
                    labels.push(("__name__".to_string(), str_value(function.op.name())));
                }
                labels
            };
            let op = &function.op;
            let found = Self::group(&mut self.groups, &self.req, op, &key, labels, &mut self.too_many);
            self.key = key;
            let Some(g) = found else { return };
            let own = match (&mut g.cells, value) {
                (Cells::Count(c), _) => {
                    c[at] += 1.0;
                    f64::NAN
                }
                (Cells::Fold(c), Some((Some(v), _))) => {
                    c[at] = match (op, c[at].is_nan()) {
                        (_, true) => v,
                        (MetricsOp::MinOverTime(_), false) => c[at].min(v),
                        (MetricsOp::MaxOverTime(_), false) => c[at].max(v),
                        (_, false) => c[at] + v,
                    };
                    v
                }
                (Cells::Avg(c), Some((Some(v), _))) => {
                    c[at].0 += v;
                    c[at].1 += 1;
                    v
                }
                (Cells::Values(c), Some((Some(v), _))) => {
                    c[at].push(v);
                    v
                }
                _ => continue,
            };
            if !exemplar_taken && self.picker.take(ts) {
                g.exemplars.push((at, ts, own, short_hex(&t.id.to_hex())));
                exemplar_taken = true;
            }
        }
    }

    fn compare_span(&mut self, eval: &Evaluator, t: &TraceData, i: usize, at: usize, selected: bool) {
        let n = self.req.intervals();
        let mut attrs = eval.compare_intrinsics(t, i);
        attrs.extend(eval.span_attributes(t, i));
        for (key, value) in attrs {
            self.compare_totals.entry((selected, key.clone())).or_insert_with(|| vec![0.0; n])[at] += 1.0;
            let values = self.compare.entry((selected, key)).or_default();
            let vkey = format!("{:?}", value.value);
            if !values.contains_key(&vkey) && values.len() >= COMPARE_MAX_VALUES {
                continue;
            }
            values.entry(vkey).or_insert_with(|| (value, vec![0.0; n])).1[at] += 1.0;
        }
    }

    /// Adds what another accumulator of the same query (another source) folded.
    fn merge(&mut self, other: Accumulator) {
        if self.too_many.is_none() {
            self.too_many = other.too_many;
        }
        let op = self.function.op.clone();
        for (key, g) in other.groups {
            match self.groups.get_mut(&key) {
                None => {
                    if self.groups.len() >= self.req.max_series {
                        self.too_many = Some(format!(
                            "the metrics query produces more than {} series (max_metrics_series)",
                            self.req.max_series
                        ));
                        continue;
                    }
                    self.groups.insert(key, g);
                }
                Some(mine) => {
                    mine.exemplars.extend(g.exemplars);
                    match (&mut mine.cells, g.cells) {
                        (Cells::Count(a), Cells::Count(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
                        (Cells::Avg(a), Cells::Avg(b)) => a.iter_mut().zip(b).for_each(|(x, y)| {
                            x.0 += y.0;
                            x.1 += y.1;
                        }),
                        (Cells::Values(a), Cells::Values(b)) => a.iter_mut().zip(b).for_each(|(x, y)| x.extend(y)),
                        (Cells::Fold(a), Cells::Fold(b)) => a.iter_mut().zip(b).for_each(|(x, y)| {
                            *x = match (x.is_nan(), y.is_nan(), &op) {
                                (_, true, _) => *x,
                                (true, false, _) => y,
                                (false, false, MetricsOp::MinOverTime(_)) => x.min(y),
                                (false, false, MetricsOp::MaxOverTime(_)) => x.max(y),
                                (false, false, _) => *x + y,
                            }
                        }),
                        _ => {}
                    }
                }
            }
        }
        for (k, values) in other.compare {
            let mine = self.compare.entry(k).or_default();
            for (vk, (v, counts)) in values {
                if !mine.contains_key(&vk) && mine.len() >= COMPARE_MAX_VALUES {
                    continue;
                }
                let e = mine.entry(vk).or_insert_with(|| (v, vec![0.0; counts.len()]));
                e.1.iter_mut().zip(counts).for_each(|(x, y)| *x += y);
            }
        }
        for (k, counts) in other.compare_totals {
            let mine = self.compare_totals.entry(k).or_insert_with(|| vec![0.0; counts.len()]);
            mine.iter_mut().zip(counts).for_each(|(x, y)| *x += y);
        }
    }

    /// Keeps the exemplars the limits allow over all series (sources picked theirs independently): oldest
    /// first, one per trace, at most two per slice of the range.
    fn settle_exemplars(&mut self) {
        // (start, trace, series, position in the series' list)
        let mut all: Vec<(u64, String, String, usize)> = self
            .groups
            .iter()
            .flat_map(|(key, g)| g.exemplars.iter().enumerate().map(move |(i, e)| (e.1, e.3.clone(), key.clone(), i)))
            .collect();
        all.sort();
        let mut picker = ExemplarPicker::new(&self.req);
        let mut traces = std::collections::HashSet::new();
        let kept: std::collections::HashSet<(String, usize)> = all
            .into_iter()
            .filter(|(ts, trace, _, _)| traces.insert(trace.clone()) && picker.take(*ts))
            .map(|(_, _, key, i)| (key, i))
            .collect();
        for (key, g) in self.groups.iter_mut() {
            let mut i = 0;
            g.exemplars.retain(|_| {
                i += 1;
                kept.contains(&(key.clone(), i - 1))
            });
        }
    }

    fn finish(mut self) -> Result<Set, QueryError> {
        if let Some(msg) = self.too_many {
            return Err(QueryError::Limit(msg));
        }
        self.settle_exemplars();
        if let MetricsOp::Compare { top_n, .. } = &self.function.op {
            return Ok(compare_series(self.compare, self.compare_totals, (*top_n).max(1) as usize));
        }
        let step_seconds = self.req.step as f64 / 1e9;
        let mut out: Set = Vec::new();
        let mut groups: Vec<Group> = self.groups.into_values().collect();
        // Ungrouped counts exist even when nothing matched (a flat zero line, as Tempo draws it).
        if groups.is_empty()
            && self.function.by.is_empty()
            && matches!(self.function.op, MetricsOp::Rate | MetricsOp::CountOverTime)
        {
            groups.push(Group {
                labels: vec![("__name__".to_string(), str_value(self.function.op.name()))],
                cells: Cells::Count(vec![0.0; self.req.intervals()]),
                exemplars: Vec::new(),
            });
        }
        for g in groups {
            match g.cells {
                Cells::Count(c) => {
                    let values: Vec<f64> = match self.function.op {
                        MetricsOp::Rate => c.iter().map(|x| x / step_seconds).collect(),
                        _ => c,
                    };
                    let exemplars = fill_exemplars(g.exemplars, &values);
                    out.push(Raw { labels: g.labels, values, exemplars });
                }
                Cells::Fold(values) => out.push(Raw { labels: g.labels, values, exemplars: g.exemplars }),
                Cells::Avg(c) => {
                    let values = c.iter().map(|(s, n)| if *n == 0 { f64::NAN } else { s / *n as f64 }).collect();
                    out.push(Raw { labels: g.labels, values, exemplars: g.exemplars })
                }
                Cells::Values(mut c) => {
                    let MetricsOp::QuantileOverTime(_, qs) = &self.function.op else { continue };
                    for cell in &mut c {
                        cell.sort_by(f64::total_cmp);
                    }
                    // Without by(), Tempo labels quantile series by `p` alone.
                    let base: Vec<(String, AnyValue)> = g.labels.into_iter().filter(|(k, _)| k != "__name__").collect();
                    let mut per_q: Vec<Raw> = qs
                        .iter()
                        .map(|q| {
                            let mut labels = base.clone();
                            labels.push(("p".to_string(), AnyValue { value: Some(Value::DoubleValue(*q)) }));
                            Raw { labels, values: c.iter().map(|cell| quantile(cell, *q)).collect(), exemplars: vec![] }
                        })
                        .collect();
                    // Each exemplar goes to the quantile series whose value there is closest to its own.
                    for e in g.exemplars {
                        if let Some(best) = (0..per_q.len()).min_by(|&a, &b| {
                            (per_q[a].values[e.0] - e.2).abs().total_cmp(&(per_q[b].values[e.0] - e.2).abs())
                        }) {
                            per_q[best].exemplars.push(e);
                        }
                    }
                    out.extend(per_q);
                }
            }
        }
        Ok(out)
    }
}

/// Counting exemplars take the value of their series in their interval.
fn fill_exemplars(mut ex: Vec<(usize, u64, f64, String)>, values: &[f64]) -> Vec<(usize, u64, f64, String)> {
    for e in &mut ex {
        e.2 = values[e.0];
    }
    ex
}

type CompareCounts = HashMap<(bool, String), HashMap<String, (AnyValue, Vec<f64>)>>;

/// `compare()`'s series: per attribute, the `top_n` most frequent values of the selection and of the baseline
/// (by their count over the whole range), and each side's total per attribute.
fn compare_series(counts: CompareCounts, totals: HashMap<(bool, String), Vec<f64>>, top_n: usize) -> Set {
    let kind = |selected: bool| if selected { "selection" } else { "baseline" };
    let mut out: Set = Vec::new();
    for ((selected, key), values) in counts {
        let mut ranked: Vec<(AnyValue, Vec<f64>, f64)> =
            values.into_values().map(|(v, c)| (v, c.clone(), c.iter().sum::<f64>())).collect();
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| value_text(&a.0).cmp(&value_text(&b.0))));
        for (v, values, _) in ranked.into_iter().take(top_n) {
            out.push(Raw {
                labels: vec![("__meta_type".to_string(), str_value(kind(selected))), (key.clone(), v)],
                values,
                exemplars: Vec::new(),
            });
        }
    }
    for ((selected, key), values) in totals {
        out.push(Raw {
            labels: vec![
                ("__meta_type".to_string(), str_value(format!("{}_total", kind(selected)))),
                (key, str_value("nil")),
            ],
            values,
            exemplars: Vec::new(),
        });
    }
    out
}

fn short_hex(h: &str) -> String {
    let t = h.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

fn literal_number(l: &Literal) -> Option<f64> {
    match l {
        Literal::Int(i) => Some(*i as f64),
        Literal::Float(f) => Some(*f),
        Literal::Duration(d) => Some(*d as f64 / 1e9),
        _ => None,
    }
}

fn cmp(op: CmpOp, a: f64, b: f64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Neq => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Lte => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Gte => a >= b,
    }
}

/// `topk`/`bottomk` (per interval: series in the top n at any interval stay, with only those intervals) and
/// value filters (failing samples dropped).
fn second_stages(mut set: Set, stages: &[SecondStage]) -> Set {
    for stage in stages {
        match stage {
            SecondStage::Filter { op, value } => {
                let Some(x) = literal_number(value) else { continue };
                for s in &mut set {
                    for v in &mut s.values {
                        if !v.is_nan() && !cmp(*op, *v, x) {
                            *v = f64::NAN;
                        }
                    }
                }
            }
            SecondStage::TopK(n) | SecondStage::BottomK(n) => {
                let n = (*n).max(0) as usize;
                if set.len() <= n {
                    continue;
                }
                let top = matches!(stage, SecondStage::TopK(_));
                let intervals = set.first().map_or(0, |s| s.values.len());
                let keys: Vec<Vec<(String, String)>> = set.iter().map(|s| label_order(&s.labels)).collect();
                let mut keep = vec![vec![false; intervals]; set.len()];
                #[allow(clippy::needless_range_loop)] // `i` indexes every series' values, not only `keep`
                for i in 0..intervals {
                    let mut ranked: Vec<usize> = (0..set.len()).filter(|&s| !set[s].values[i].is_nan()).collect();
                    ranked.sort_by(|&a, &b| {
                        let o = set[a].values[i].total_cmp(&set[b].values[i]);
                        (if top { o.reverse() } else { o }).then_with(|| keys[a].cmp(&keys[b]))
                    });
                    for &s in ranked.iter().take(n) {
                        keep[s][i] = true;
                    }
                }
                for (s, k) in set.iter_mut().zip(keep) {
                    for (v, k) in s.values.iter_mut().zip(k) {
                        if !k {
                            *v = f64::NAN;
                        }
                    }
                }
            }
        }
    }
    set.retain(|s| s.values.iter().any(|v| !v.is_nan()));
    set
}

fn arith(op: ArithOp, a: f64, b: f64) -> f64 {
    match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div if b == 0.0 => f64::NAN,
        ArithOp::Div => a / b,
        ArithOp::Mod if b == 0.0 => f64::NAN,
        ArithOp::Mod => a % b,
        ArithOp::Pow => a.powf(b),
    }
}

/// Labels a binary operation matches series by: all but the function name.
fn match_key(labels: &[(String, AnyValue)]) -> String {
    let kept: Vec<(String, AnyValue)> = labels.iter().filter(|(k, _)| k != "__name__").cloned().collect();
    label_key(&kept)
}

/// An operand of metrics arithmetic.
enum Operand {
    Const(f64),
    Series(Set),
}

impl SearchEngine {
    /// Runs a metrics query.
    pub async fn metrics(&self, tenant: &Tenant, req: &MetricsRequest) -> Result<MetricsResult, QueryError> {
        if req.step == 0 || req.end <= req.start {
            return Err(QueryError::Limit("a metrics query needs end > start and step > 0".into()));
        }
        let mut stats = SearchStats::default();
        let set = match self.metrics_expr(tenant, req, &req.expr, &mut stats).await? {
            Operand::Series(s) => s,
            Operand::Const(_) => Vec::new(),
        };
        Ok(MetricsResult { series: finish(set, req), stats })
    }

    fn metrics_expr<'a>(
        &'a self,
        tenant: &'a Tenant,
        req: &'a MetricsRequest,
        expr: &'a MetricsExpr,
        stats: &'a mut SearchStats,
    ) -> futures::future::BoxFuture<'a, Result<Operand, QueryError>> {
        Box::pin(async move {
            Ok(match expr {
                MetricsExpr::Scalar(l) => Operand::Const(literal_number(l).unwrap_or(f64::NAN)),
                MetricsExpr::Pipeline(p) => Operand::Series(self.metrics_pipeline(tenant, req, p, stats).await?),
                MetricsExpr::Staged { expr, stages } => match self.metrics_expr(tenant, req, expr, stats).await? {
                    Operand::Series(s) => Operand::Series(second_stages(s, stages)),
                    c => c,
                },
                MetricsExpr::Binary { op, lhs, rhs } => {
                    let a = self.metrics_expr(tenant, req, lhs, stats).await?;
                    let b = self.metrics_expr(tenant, req, rhs, stats).await?;
                    Operand::Series(binary(*op, a, b))
                }
            })
        })
    }

    async fn metrics_pipeline(
        &self,
        tenant: &Tenant,
        req: &MetricsRequest,
        p: &MetricsPipeline,
        stats: &mut SearchStats,
    ) -> Result<Set, QueryError> {
        let search = SearchRequest {
            pipeline: p.pipeline.clone(),
            limit: usize::MAX,
            spans_per_spanset: 0,
            start: Some(req.start.saturating_add(1)),
            end: Some(req.end),
        };
        let mut fields: Vec<Field> = p.function.by.clone();
        fields.extend(p.function.op.field().cloned());
        let compare = matches!(p.function.op, MetricsOp::Compare { .. });
        let function = Arc::new(p.function.clone());
        let acc = if !compare && span_local(&p.pipeline, &fields) {
            self.scan_metrics(tenant, req.frame(), &p.pipeline, &fields, function, stats).await?
        } else {
            let reads = if compare { Reads::All } else { Reads::Fields(&fields) };
            let eval = Evaluator::new(p.pipeline.clone());
            let mut acc = Accumulator::new(req.frame(), function);
            let mut visit = |t: &TraceData, sets: &[SpanSet]| acc.visit(&eval, t, sets);
            let r = self.search_with(tenant, &search, Some((&mut visit, reads)), None).await?;
            add_stats(stats, &r.stats);
            acc
        };
        let set = acc.finish()?;
        Ok(second_stages(set, &p.stages))
    }

    /// A span-local pipeline (see `eval::span_local`) over every source in range, row by row: each source's rows
    /// are read with only the columns the query names and evaluated a run of one trace's rows at a time, sources
    /// in parallel (one accumulator each, merged). No trace is assembled across sources: a span-local query
    /// yields the same spans either way.
    async fn scan_metrics(
        &self,
        tenant: &Tenant,
        frame: Frame,
        pipeline: &Pipeline,
        fields: &[Field],
        function: Arc<MetricsFunction>,
        stats: &mut SearchStats,
    ) -> Result<Accumulator, QueryError> {
        let needs = fields.iter().fold(ReadNeeds::new(pipeline), ReadNeeds::with_field);
        let columns = needs.view_columns();
        let eval = Arc::new(Evaluator::new(pipeline.clone()));
        let sources = self.sources(tenant, Some(frame.start.saturating_add(1)), Some(frame.end))?;
        let block_bytes: u64 = sources.iter().filter_map(Source::block).map(|b| b.meta.data_size).sum();
        stats.total_blocks += (sources.len() - 1) as u32;
        stats.total_block_bytes += block_bytes;
        stats.total_jobs += sources.len() as u32;
        stats.inspected_bytes += block_bytes;
        if stats.inspected_bytes > self.max_scan_bytes {
            return Err(QueryError::Limit(format!(
                "the metrics query would scan more than {} bytes of blocks (max_query_scan_bytes); narrow the time \
                 range or the query",
                self.max_scan_bytes
            )));
        }
        let tasks = sources.into_iter().map(|source| {
            let (eval, function, blocks, tenant) =
                (eval.clone(), function.clone(), self.blocks.clone(), tenant.clone());
            let parts = source.block().map_or(SpanParts::ALL, |b| needs.parts_for(&b.meta));
            let columns = columns.clone();
            tokio::spawn(async move {
                let mut acc = Accumulator::new(frame, function);
                let mut spans = 0u64;
                match source {
                    Source::Memory(batches) => {
                        for batch in &batches {
                            spans += each_run(batch, &[], &eval, &mut |t, sets| acc.visit(&eval, t, sets))?;
                        }
                    }
                    Source::Block(b) => {
                        let mut stream = blocks.scan_rows(&tenant, &b, &columns, parts).await?;
                        while let Some(batch) = stream.next().await {
                            spans += each_run(&batch?, &b.meta.dedicated_columns, &eval, &mut |t, sets| {
                                acc.visit(&eval, t, sets)
                            })?;
                        }
                    }
                }
                Ok::<_, QueryError>((acc, spans))
            })
        });
        let empty = Accumulator::new(frame, function.clone());
        let mut done = futures::stream::iter(tasks).buffer_unordered(cores());
        let mut total: Option<Accumulator> = None;
        while let Some(r) = done.next().await {
            let (acc, spans) = r??;
            stats.inspected_spans += spans;
            stats.completed_jobs += 1;
            match total.as_mut() {
                None => total = Some(acc),
                Some(t) => t.merge(acc),
            }
        }
        drop(done);
        Ok(total.unwrap_or(empty))
    }
}

fn add_stats(into: &mut SearchStats, s: &SearchStats) {
    into.inspected_traces += s.inspected_traces;
    into.inspected_spans += s.inspected_spans;
    into.inspected_bytes += s.inspected_bytes;
    into.total_blocks = into.total_blocks.max(s.total_blocks);
    into.total_block_bytes = into.total_block_bytes.max(s.total_block_bytes);
    into.completed_jobs += s.completed_jobs;
    into.total_jobs += s.total_jobs;
}

fn binary(op: ArithOp, a: Operand, b: Operand) -> Set {
    match (a, b) {
        (Operand::Const(x), Operand::Const(y)) => {
            let _ = arith(op, x, y);
            Vec::new()
        }
        (Operand::Series(mut s), Operand::Const(y)) => {
            s.iter_mut().for_each(|r| r.values.iter_mut().for_each(|v| *v = arith(op, *v, y)));
            s
        }
        (Operand::Const(x), Operand::Series(mut s)) => {
            s.iter_mut().for_each(|r| r.values.iter_mut().for_each(|v| *v = arith(op, x, *v)));
            s
        }
        (Operand::Series(l), Operand::Series(r)) => {
            let rhs: HashMap<String, &Raw> = r.iter().map(|s| (match_key(&s.labels), s)).collect();
            l.into_iter()
                .filter_map(|mut s| {
                    let other = rhs.get(&match_key(&s.labels))?;
                    for (v, w) in s.values.iter_mut().zip(&other.values) {
                        *v = arith(op, *v, *w);
                    }
                    s.exemplars.clear();
                    Some(s)
                })
                .collect()
        }
    }
}

/// Samples without a value dropped, series without samples dropped, sorted as Tempo sorts them.
fn finish(set: Set, req: &MetricsRequest) -> Vec<Series> {
    let kv = |labels: Vec<(String, AnyValue)>| -> Vec<KeyValue> {
        labels.into_iter().map(|(k, v)| crate::model::kv(k, Some(v))).collect()
    };
    let mut out: Vec<Series> = set
        .into_iter()
        .filter_map(|r| {
            let samples: Vec<(i64, f64)> = r
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, v)| (req.timestamp_ms(i), *v))
                .collect();
            if samples.is_empty() {
                return None;
            }
            let mut exemplars: Vec<Exemplar> = r
                .exemplars
                .into_iter()
                .filter(|e| !r.values[e.0].is_nan())
                .map(|(_, ts, value, trace)| Exemplar {
                    labels: vec![crate::model::kv("trace:id", Some(str_value(trace)))],
                    value,
                    timestamp_ms: (ts / 1_000_000) as i64,
                })
                .collect();
            exemplars.sort_by_key(|e| e.timestamp_ms);
            Some(Series { labels: kv(r.labels), samples, exemplars })
        })
        .collect();
    out.sort_by_cached_key(|s| {
        let labels: Vec<(String, String)> =
            s.labels.iter().map(|l| (l.key.clone(), l.value.as_ref().map(value_text).unwrap_or_default())).collect();
        (labels.len(), labels)
    });
    out
}
