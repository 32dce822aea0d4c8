//! Exact evaluation of a TraceQL search over one whole trace: the per-trace operator of the search plan.
//!
//! DataFusion narrows a search to candidate traces (see `prune`); this module then sees every span of each
//! candidate, from every place it is stored, and applies the rules in `SEMANTICS.md` exactly: typed comparisons,
//! arrays, `nil`, structural operators over the whole trace's tree (so split traces and negated forms are exact),
//! and pipelines. Tree relations use parent span IDs rather than per-block nested-set numbers, because a trace
//! split across blocks has no single numbering.

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;
use query_lang::{
    AggregateOp, Attribute, BinaryOp, CmpOp, Field, FieldExpr, Intrinsic, Kind, Literal, Pipeline, ScalarExpr,
    ScalarFilter, Scope, SpansetExpr, SpansetOp, Stage, Status, UnaryOp,
};
use regex::Regex;

use crate::block::schema::kind as attr_kind;
use crate::block::{AttrRef, AttrScope, BlockMeta, SpanParts, SpanRows};
use crate::model::TraceId;

/// What Tempo reports as the root service of a trace whose root span has not arrived.
pub const NO_ROOT_SERVICE: &str = "<root span not yet received>";

/// One trace with its spans deduplicated and its tree resolved. Spans are rows of record batches (blocks' and
/// memory's alike), read in place: nothing is turned into OTLP structs.
pub struct TraceData<'a> {
    pub id: TraceId,
    rows: &'a [SpanRows],
    /// (batch, row) of each span.
    spans: Vec<(u32, u32)>,
    parent: Vec<Option<usize>>,
    child_count: Vec<u32>,
    pub root: Option<usize>,
    pub start: u64,
    pub end: u64,
}

impl<'a> TraceData<'a> {
    /// Builds the trace from the rows of its fragments. Duplicates (same span ID and kind) keep their first copy.
    pub fn new(id: TraceId, rows: &'a [SpanRows], refs: &[(u32, u32)]) -> Self {
        let at = |&(b, r): &(u32, u32)| (&rows[b as usize], r as usize);
        let mut seen: ahash::AHashSet<(&[u8], i32)> = ahash::AHashSet::with_capacity(refs.len());
        let spans: Vec<(u32, u32)> = refs
            .iter()
            .copied()
            .filter(|x| {
                let (v, r) = at(x);
                seen.insert((v.span_id(r), v.kind(r)))
            })
            .collect();
        // Span ID -> index; with several kinds under one ID, the lowest kind is the parent.
        let mut by_id: ahash::AHashMap<&[u8], usize> = ahash::AHashMap::with_capacity(spans.len());
        for (i, x) in spans.iter().enumerate() {
            let (v, r) = at(x);
            by_id
                .entry(v.span_id(r))
                .and_modify(|j| {
                    let (w, q) = at(&spans[*j]);
                    if v.kind(r) < w.kind(q) {
                        *j = i;
                    }
                })
                .or_insert(i);
        }
        let parent: Vec<Option<usize>> = spans
            .iter()
            .map(|x| {
                let (v, r) = at(x);
                v.parent_id(r).and_then(|p| by_id.get(p).copied())
            })
            .collect();
        let mut child_count = vec![0u32; spans.len()];
        for p in parent.iter().flatten() {
            child_count[*p] += 1;
        }
        let (mut start, mut end) = (u64::MAX, 0u64);
        for x in &spans {
            let (v, r) = at(x);
            start = start.min(v.start(r));
            end = end.max(v.end(r));
        }
        if spans.is_empty() {
            start = 0;
        }
        let mut t = TraceData { id, rows, spans, parent, child_count, root: None, start, end };
        t.root = (0..t.len()).filter(|&i| t.parent_id(i).is_none()).min_by(|&a, &b| span_order(&t, a, b));
        t
    }

    /// A run of rows of one trace taken as they are, for span-local evaluation (see [`span_local`]): no
    /// deduplication and no tree (no parents, children or root), which such an evaluation never looks at.
    pub fn local(id: TraceId, rows: &'a [SpanRows], refs: Vec<(u32, u32)>) -> Self {
        let (mut start, mut end) = (u64::MAX, 0u64);
        for &(b, r) in &refs {
            let (v, r) = (&rows[b as usize], r as usize);
            start = start.min(v.start(r));
            end = end.max(v.end(r));
        }
        let n = refs.len();
        TraceData {
            id,
            rows,
            spans: refs,
            parent: vec![None; n],
            child_count: vec![0; n],
            root: None,
            start: if n == 0 { 0 } else { start },
            end,
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The batch and row of span `i`.
    pub fn at(&self, i: usize) -> (&'a SpanRows, usize) {
        let (b, r) = self.spans[i];
        (&self.rows[b as usize], r as usize)
    }

    pub fn span_id(&self, i: usize) -> &'a [u8] {
        let (v, r) = self.at(i);
        v.span_id(r)
    }

    pub fn parent_id(&self, i: usize) -> Option<&'a [u8]> {
        let (v, r) = self.at(i);
        v.parent_id(r)
    }

    pub fn name(&self, i: usize) -> &'a str {
        let (v, r) = self.at(i);
        v.name(r)
    }

    pub fn start_of(&self, i: usize) -> u64 {
        let (v, r) = self.at(i);
        v.start(r)
    }

    pub fn end_of(&self, i: usize) -> u64 {
        let (v, r) = self.at(i);
        v.end(r)
    }

    pub fn status_code(&self, i: usize) -> i32 {
        let (v, r) = self.at(i);
        v.status_code(r)
    }

    /// The span's `service.name` when it is a string.
    pub fn service(&self, i: usize) -> Option<&'a str> {
        let (v, r) = self.at(i);
        match v.attr(r, AttrScope::Resource, "service.name") {
            Some(AttrRef::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn root_service(&self) -> Option<&'a str> {
        self.root.map(|r| self.service(r).unwrap_or(""))
    }

    pub fn root_name(&self) -> Option<&'a str> {
        self.root.map(|r| self.name(r))
    }

    /// Ancestors of `i`, nearest first, stopping at a span already visited.
    fn ancestors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut visited = vec![i];
        let mut cur = self.parent[i];
        std::iter::from_fn(move || {
            let p = cur?;
            if visited.contains(&p) {
                return None;
            }
            visited.push(p);
            cur = self.parent[p];
            Some(p)
        })
    }
}

/// A value read from a span.
#[derive(Debug, Clone)]
enum V<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dur(i64),
    Status(Status),
    Kind(Kind),
}

/// The result of evaluating a field expression on a span.
#[derive(Debug, Clone)]
enum E<'a> {
    Absent,
    /// Present but comparable to nothing (bytes, key-value lists, empty values).
    Opaque,
    One(V<'a>),
    Many(Vec<V<'a>>),
}

impl<'a> E<'a> {
    fn values(&self) -> &[V<'a>] {
        match self {
            E::One(v) => std::slice::from_ref(v),
            E::Many(v) => v,
            _ => &[],
        }
    }
}

fn scalar(v: &AnyValue) -> Option<V<'static>> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => V::Str(Cow::Owned(s.clone())),
        Value::IntValue(i) => V::Int(*i),
        Value::DoubleValue(d) => V::Float(*d),
        Value::BoolValue(b) => V::Bool(*b),
        _ => return None,
    })
}

/// A stored attribute value as the evaluator sees it: scalars compare, arrays compare by element, anything else
/// (bytes, key-value lists, no value) is present but comparable to nothing.
fn stored(a: AttrRef<'_>) -> E<'_> {
    match a {
        AttrRef::Str(s) => E::One(V::Str(Cow::Borrowed(s))),
        AttrRef::Int(i) => E::One(V::Int(i)),
        AttrRef::Float(f) => E::One(V::Float(f)),
        AttrRef::Bool(b) => E::One(V::Bool(b)),
        AttrRef::Empty => E::Opaque,
        AttrRef::Raw(attr_kind::BYTES | attr_kind::KVLIST, _) => E::Opaque,
        AttrRef::Raw(_, raw) => match AnyValue::decode(raw) {
            Ok(AnyValue { value: Some(Value::ArrayValue(a)) }) => E::Many(a.values.iter().filter_map(scalar).collect()),
            Ok(v) => scalar(&v).map_or(E::Opaque, E::One),
            Err(_) => E::Opaque,
        },
    }
}

fn lookup(a: Option<AttrRef<'_>>) -> E<'_> {
    a.map_or(E::Absent, stored)
}

/// Values of a key over several attribute lists (events, links): absent when none has it.
fn lookup_many<'a>(found_values: impl Iterator<Item = AttrRef<'a>>) -> E<'a> {
    let mut found = false;
    let mut out = Vec::new();
    for a in found_values {
        found = true;
        match stored(a) {
            E::One(v) => out.push(v),
            E::Many(v) => out.extend(v),
            E::Absent | E::Opaque => {}
        }
    }
    match (found, out.is_empty()) {
        (false, _) => E::Absent,
        (true, true) => E::Opaque,
        (true, false) => E::Many(out),
    }
}

fn status_of(code: i32) -> Status {
    match code {
        1 => Status::Ok,
        2 => Status::Error,
        _ => Status::Unset,
    }
}

fn kind_of(k: i32) -> Kind {
    match k {
        1 => Kind::Internal,
        2 => Kind::Server,
        3 => Kind::Client,
        4 => Kind::Producer,
        5 => Kind::Consumer,
        _ => Kind::Unspecified,
    }
}

fn literal(l: &Literal) -> E<'_> {
    match l {
        Literal::String(s) => E::One(V::Str(Cow::Borrowed(s))),
        Literal::Int(i) => E::One(V::Int(*i)),
        Literal::Float(f) => E::One(V::Float(*f)),
        Literal::Duration(d) => E::One(V::Dur(*d)),
        Literal::Bool(b) => E::One(V::Bool(*b)),
        Literal::Status(s) => E::One(V::Status(*s)),
        Literal::Kind(k) => E::One(V::Kind(*k)),
        Literal::Nil => E::Absent,
    }
}

/// A compiled search: the pipeline plus what evaluating it needs (regexes, returned attributes).
pub struct Evaluator {
    pipeline: Pipeline,
    regexes: parking_lot::Mutex<HashMap<String, Option<Regex>>>,
    /// Attributes shown on returned spans: (key as shown, attribute).
    pub shown: Vec<(String, Attribute)>,
}

/// One spanset of a matched trace: indices into `TraceData::spans`, plus `by()` values.
#[derive(Debug, Clone, Default)]
pub struct SpanSet {
    pub spans: Vec<usize>,
    pub by: Vec<(String, AnyValue)>,
}

impl Evaluator {
    /// Prepares a validated search pipeline.
    pub fn new(pipeline: Pipeline) -> Self {
        let mut shown: Vec<(String, Attribute)> = Vec::new();
        collect_shown(&pipeline, &mut shown);
        Evaluator { pipeline, regexes: parking_lot::Mutex::new(HashMap::new()), shown }
    }

    /// The spansets the query yields for this trace; empty when the trace does not match.
    pub fn evaluate(&self, t: &TraceData) -> Vec<SpanSet> {
        let all = SpanSet { spans: (0..t.len()).collect(), by: Vec::new() };
        let mut out = self.pipeline_sets(&self.pipeline, vec![all], t);
        for s in &mut out {
            s.spans.sort_by(|&a, &b| span_order(t, a, b));
        }
        out.sort_by(|a, b| match (a.spans.first(), b.spans.first()) {
            (Some(&x), Some(&y)) => span_order(t, x, y),
            _ => std::cmp::Ordering::Equal,
        });
        out
    }

    /// The attributes shown for span `i`: each shown attribute the span has, as an OTLP value.
    pub fn shown_attributes(&self, t: &TraceData, i: usize) -> Vec<KeyValue> {
        let mut out = Vec::new();
        for (key, attr) in &self.shown {
            let v = match self.attribute(t, i, attr) {
                E::One(v) => to_any(&v),
                E::Many(vs) => AnyValue {
                    value: Some(Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vs.iter().map(to_any).collect(),
                    })),
                },
                _ => continue,
            };
            out.push(crate::model::kv(key.clone(), Some(v)));
        }
        out
    }

    /// The values of `field` on span `i`, rendered for tag-value listings (`udf::tag_value_text`).
    pub fn tag_values(&self, t: &TraceData, i: usize, field: &Field) -> Vec<String> {
        let e = match field {
            Field::Attribute(a) => self.attribute(t, i, a),
            Field::Intrinsic(x) => self.intrinsic(t, i, *x),
        };
        e.values()
            .iter()
            .map(|v| {
                let (ty, text) = match v {
                    V::Str(s) => ("string", s.to_string()),
                    V::Int(x) => ("int", x.to_string()),
                    V::Float(x) => ("float", x.to_string()),
                    V::Bool(x) => ("bool", x.to_string()),
                    V::Dur(x) => ("duration", format_duration(*x)),
                    V::Status(x) => ("keyword", x.as_str().to_string()),
                    V::Kind(x) => ("keyword", x.as_str().to_string()),
                };
                super::udf::tag_value_text(ty, &text)
            })
            .collect()
    }

    fn field_of<'t>(&self, t: &'t TraceData, i: usize, field: &Field) -> E<'t> {
        match field {
            Field::Attribute(a) => self.attribute(t, i, a),
            Field::Intrinsic(x) => self.intrinsic(t, i, *x),
        }
    }

    /// The value of `field` on span `i` as a metrics series label: `None` when the span has none that can label
    /// a series (absent, bytes, maps); arrays label by their first element.
    pub fn label_value(&self, t: &TraceData, i: usize, field: &Field) -> Option<AnyValue> {
        self.field_of(t, i, field).values().first().map(to_any)
    }

    /// Writes the first value of `field` on span `i` into `out`, tagged with its type, so equal label values (as
    /// [`Evaluator::label_value`] gives them) write equal text; false when the span has none. Allocates nothing:
    /// metrics find a span's series by this text.
    pub fn write_label(&self, t: &TraceData, i: usize, field: &Field, out: &mut String) -> bool {
        use std::fmt::Write;
        let e = self.field_of(t, i, field);
        let Some(v) = e.values().first() else { return false };
        let _ = match v {
            V::Str(s) => {
                out.push('s');
                out.push_str(s);
                Ok(())
            }
            V::Int(x) => write!(out, "i{x}"),
            V::Float(x) => write!(out, "f{}", x.to_bits()),
            V::Bool(b) => write!(out, "b{b}"),
            // Shown as text (see `to_any`), so keyed as that text.
            V::Dur(d) => write!(out, "s{}", format_duration(*d)),
            V::Status(x) => write!(out, "s{}", x.as_str()),
            V::Kind(x) => write!(out, "s{}", x.as_str()),
        };
        true
    }

    /// The value of `field` on span `i` as a metrics sample: numbers as they are, durations in seconds (Tempo's
    /// unit for latency series). `None` for anything else.
    pub fn metric_value(&self, t: &TraceData, i: usize, field: &Field) -> Option<f64> {
        match self.field_of(t, i, field).values().first()? {
            V::Int(x) => Some(*x as f64),
            V::Float(x) => Some(*x),
            V::Dur(ns) => Some(*ns as f64 / 1e9),
            _ => None,
        }
    }

    /// Whether span `i` passes a spanset filter on its own (`compare()`'s selection).
    pub fn span_matches(&self, filter: &query_lang::SpansetFilter, t: &TraceData, i: usize) -> bool {
        filter.expr.as_ref().is_none_or(|x| truthy(&self.field(x, t, i)))
    }

    /// The span intrinsics `compare()` breaks spans down by, as labels.
    pub fn compare_intrinsics(&self, t: &TraceData, i: usize) -> Vec<(String, AnyValue)> {
        [Intrinsic::Name, Intrinsic::Status, Intrinsic::Kind]
            .into_iter()
            .filter_map(|x| {
                let v = self.intrinsic(t, i, x).values().first().map(to_any)?;
                Some((x.legacy_name().unwrap_or(x.canonical_name()).to_string(), v))
            })
            .collect()
    }

    /// Every attribute of span `i` with a scalar value, keyed as TraceQL names them (`span.x`, `resource.x`),
    /// first value per key: what `compare()` breaks spans down by.
    pub fn span_attributes(&self, t: &TraceData, i: usize) -> Vec<(String, AnyValue)> {
        let (v, r) = t.at(i);
        let mut out: Vec<(String, AnyValue)> = Vec::new();
        for (scope, prefix) in [(AttrScope::Resource, "resource."), (AttrScope::Span, "span.")] {
            for key in v.attr_keys(r, scope) {
                let name = format!("{prefix}{key}");
                if out.iter().any(|(k, _)| *k == name) {
                    continue;
                }
                if let Some(value) = lookup(v.attr(r, scope, key)).values().first() {
                    out.push((name, to_any(value)));
                }
            }
        }
        out
    }

    fn pipeline_sets(&self, p: &Pipeline, mut sets: Vec<SpanSet>, t: &TraceData) -> Vec<SpanSet> {
        for stage in &p.stages {
            sets = match stage {
                Stage::Spanset(e) => sets.into_iter().flat_map(|s| self.spanset(e, &s, t)).collect(),
                Stage::ScalarFilter(f) => sets.into_iter().filter(|s| self.scalar_filter(f, s, t)).collect(),
                Stage::By(e) => sets.into_iter().flat_map(|s| self.group_by(e, s, t)).collect(),
                Stage::Select(_) => sets,
                Stage::Coalesce => {
                    let mut spans: Vec<usize> = sets.into_iter().flat_map(|s| s.spans).collect();
                    spans.sort_unstable();
                    spans.dedup();
                    vec![SpanSet { spans, by: Vec::new() }]
                }
            };
            sets.retain(|s| !s.spans.is_empty());
            if sets.is_empty() {
                break;
            }
        }
        sets
    }

    fn spanset(&self, e: &SpansetExpr, input: &SpanSet, t: &TraceData) -> Vec<SpanSet> {
        match e {
            SpansetExpr::Filter(f) => {
                let spans = match &f.expr {
                    None => input.spans.clone(),
                    Some(x) => input.spans.iter().copied().filter(|&i| truthy(&self.field(x, t, i))).collect(),
                };
                vec![SpanSet { spans, by: input.by.clone() }]
            }
            SpansetExpr::Pipeline(p) => self.pipeline_sets(p, vec![input.clone()], t),
            SpansetExpr::Op { op, lhs, rhs } => {
                let side = |x: &SpansetExpr| -> Vec<bool> {
                    let mut mask = vec![false; t.len()];
                    for s in self.spanset(x, input, t) {
                        for i in s.spans {
                            mask[i] = true;
                        }
                    }
                    mask
                };
                let (a, b) = (side(lhs), side(rhs));
                let mask = structural(*op, &a, &b, t);
                let spans: Vec<usize> = (0..t.len()).filter(|&i| mask[i]).collect();
                vec![SpanSet { spans, by: input.by.clone() }]
            }
        }
    }

    fn scalar_filter(&self, f: &ScalarFilter, s: &SpanSet, t: &TraceData) -> bool {
        let (ScalarExpr::Aggregate(agg), ScalarExpr::Literal(lit)) = (&f.lhs, &f.rhs) else { return false };
        // (value, is a duration). Durations compare only with durations, numbers only with numbers.
        let (value, duration) = match (agg.op, &agg.expr) {
            (AggregateOp::Count, _) => (s.spans.len() as f64, false),
            (_, None) => return false,
            (op, Some(e)) => {
                let (mut nums, mut durs) = (Vec::new(), Vec::new());
                for &i in &s.spans {
                    match self.field(e, t, i) {
                        E::One(V::Int(v)) => nums.push(v as f64),
                        E::One(V::Float(v)) => nums.push(v),
                        E::One(V::Dur(v)) => durs.push(v as f64),
                        _ => {}
                    }
                }
                let (vals, duration) = match (nums.is_empty(), durs.is_empty()) {
                    (false, true) => (nums, false),
                    (true, false) => (durs, true),
                    _ => return false,
                };
                let v = match op {
                    AggregateOp::Sum => vals.iter().sum(),
                    AggregateOp::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                    AggregateOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                    AggregateOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    AggregateOp::Count => vals.len() as f64,
                };
                (v, duration)
            }
        };
        let rhs = match (lit, duration) {
            (Literal::Int(i), false) => *i as f64,
            (Literal::Float(f), false) => *f,
            (Literal::Duration(d), true) => *d as f64,
            _ => return false,
        };
        cmp_f64(f.op, value, rhs)
    }

    fn group_by(&self, e: &FieldExpr, s: SpanSet, t: &TraceData) -> Vec<SpanSet> {
        let key = format!("by({e})");
        let mut groups: Vec<(String, AnyValue, Vec<usize>)> = Vec::new();
        for &i in &s.spans {
            let E::One(v) = self.field(e, t, i) else { continue };
            let id = value_key(&v);
            match groups.iter_mut().find(|g| g.0 == id) {
                Some(g) => g.2.push(i),
                None => groups.push((id, to_any(&v), vec![i])),
            }
        }
        groups
            .into_iter()
            .map(|(_, v, spans)| {
                // A later by() of the same expression replaces the earlier value in place.
                let mut by = s.by.clone();
                match by.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = v,
                    None => by.push((key.clone(), v)),
                }
                SpanSet { spans, by }
            })
            .collect()
    }

    fn attribute<'t>(&self, t: &'t TraceData, i: usize, a: &Attribute) -> E<'t> {
        let (v, r) = t.at(i);
        let key = a.name.as_str();
        match a.scope {
            Scope::Span => lookup(v.attr(r, AttrScope::Span, key)),
            Scope::Resource => lookup(v.attr(r, AttrScope::Resource, key)),
            Scope::Instrumentation => lookup(v.attr(r, AttrScope::Instrumentation, key)),
            Scope::Event => lookup_many(v.event_attrs(r, key)),
            Scope::Link => lookup_many(v.link_attrs(r, key)),
            Scope::Unscoped => {
                for e in [
                    lookup(v.attr(r, AttrScope::Span, key)),
                    lookup(v.attr(r, AttrScope::Resource, key)),
                    lookup_many(v.link_attrs(r, key)),
                    lookup_many(v.event_attrs(r, key)),
                ] {
                    if !matches!(e, E::Absent) {
                        return e;
                    }
                }
                E::Absent
            }
        }
    }

    fn intrinsic<'t>(&self, t: &'t TraceData, i: usize, x: Intrinsic) -> E<'t> {
        let (v, r) = t.at(i);
        let text = |s: &'t str| E::One(V::Str(Cow::Borrowed(s)));
        let owned = |s: String| E::One(V::Str(Cow::Owned(s)));
        let non_empty = |s: &'t str| if s.is_empty() { E::Absent } else { text(s) };
        match x {
            Intrinsic::Duration => E::One(V::Dur(v.end(r).wrapping_sub(v.start(r)) as i64)),
            Intrinsic::Name => text(v.name(r)),
            Intrinsic::Status => E::One(V::Status(status_of(v.status_code(r)))),
            Intrinsic::StatusMessage => text(v.status_message(r)),
            Intrinsic::Kind => E::One(V::Kind(kind_of(v.kind(r)))),
            Intrinsic::ChildCount => E::One(V::Int(i64::from(t.child_count[i]))),
            Intrinsic::SpanId => owned(hex::encode(v.span_id(r))),
            Intrinsic::ParentId => v.parent_id(r).map_or(E::Absent, |p| owned(hex::encode(p))),
            Intrinsic::TraceRootName => t.root_name().map_or(E::Absent, text),
            Intrinsic::TraceRootService => t.root_service().map_or(E::Absent, text),
            Intrinsic::TraceDuration => E::One(V::Dur(t.duration() as i64)),
            Intrinsic::TraceId => owned(t.id.to_hex()),
            Intrinsic::EventName => many(
                (0..v.event_count(r)).filter_map(|k| v.event(r, k)).map(|(n, _)| V::Str(Cow::Borrowed(n))).collect(),
            ),
            Intrinsic::EventTimeSinceStart => many(
                (0..v.event_count(r))
                    .filter_map(|k| v.event(r, k))
                    .map(|(_, time)| V::Dur(time.wrapping_sub(v.start(r)) as i64))
                    .collect(),
            ),
            Intrinsic::LinkTraceId => many(
                (0..v.link_count(r))
                    .filter_map(|k| v.link(r, k))
                    .map(|(tid, _)| V::Str(Cow::Owned(hex::encode(tid))))
                    .collect(),
            ),
            Intrinsic::LinkSpanId => many(
                (0..v.link_count(r))
                    .filter_map(|k| v.link(r, k))
                    .map(|(_, sid)| V::Str(Cow::Owned(hex::encode(sid))))
                    .collect(),
            ),
            Intrinsic::InstrumentationName => non_empty(v.scope_name(r)),
            Intrinsic::InstrumentationVersion => non_empty(v.scope_version(r)),
            // Refused by validation (`parent`) or internal numbering that a split trace does not have.
            Intrinsic::Parent | Intrinsic::NestedSetLeft | Intrinsic::NestedSetRight | Intrinsic::NestedSetParent => {
                E::Absent
            }
        }
    }

    fn field<'t>(&self, e: &'t FieldExpr, t: &'t TraceData, i: usize) -> E<'t> {
        match e {
            FieldExpr::Literal(l) => literal(l),
            FieldExpr::Field(Field::Attribute(a)) => self.attribute(t, i, a),
            FieldExpr::Field(Field::Intrinsic(x)) => self.intrinsic(t, i, *x),
            FieldExpr::Unary { op: UnaryOp::Not, expr } => E::One(V::Bool(!truthy(&self.field(expr, t, i)))),
            FieldExpr::Unary { op: UnaryOp::Neg, expr } => match self.field(expr, t, i) {
                E::One(V::Int(v)) => E::One(V::Int(v.wrapping_neg())),
                E::One(V::Float(v)) => E::One(V::Float(-v)),
                E::One(V::Dur(v)) => E::One(V::Dur(v.wrapping_neg())),
                _ => E::Absent,
            },
            FieldExpr::Binary { op, lhs, rhs } => match op {
                BinaryOp::And => E::One(V::Bool(truthy(&self.field(lhs, t, i)) && truthy(&self.field(rhs, t, i)))),
                BinaryOp::Or => E::One(V::Bool(truthy(&self.field(lhs, t, i)) || truthy(&self.field(rhs, t, i)))),
                BinaryOp::Eq | BinaryOp::Neq
                    if matches!(**rhs, FieldExpr::Literal(Literal::Nil))
                        || matches!(**lhs, FieldExpr::Literal(Literal::Nil)) =>
                {
                    let other = if matches!(**rhs, FieldExpr::Literal(Literal::Nil)) { lhs } else { rhs };
                    let absent = matches!(self.field(other, t, i), E::Absent);
                    E::One(V::Bool(if *op == BinaryOp::Eq { absent } else { !absent }))
                }
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Pow => {
                    match (self.field(lhs, t, i), self.field(rhs, t, i)) {
                        (E::One(a), E::One(b)) => arith(*op, &a, &b).map_or(E::Absent, E::One),
                        _ => E::Absent,
                    }
                }
                _ => {
                    let (a, b) = (self.field(lhs, t, i), self.field(rhs, t, i));
                    E::One(V::Bool(self.compare(*op, &a, &b)))
                }
            },
        }
    }

    fn compare(&self, op: BinaryOp, a: &E, b: &E) -> bool {
        let (xs, ys) = (a.values(), b.values());
        let pairs = || xs.iter().flat_map(|x| ys.iter().map(move |y| (x, y)));
        match op {
            BinaryOp::Neq => {
                pairs().any(|(x, y)| comparable(x, y)) && !pairs().any(|(x, y)| cmp_values(BinaryOp::Eq, x, y))
            }
            BinaryOp::NotRegex => {
                pairs().any(|(x, y)| matches!((x, y), (V::Str(_), V::Str(_))))
                    && !pairs().any(|(x, y)| self.regex_match(x, y))
            }
            BinaryOp::Regex => pairs().any(|(x, y)| self.regex_match(x, y)),
            _ => pairs().any(|(x, y)| cmp_values(op, x, y)),
        }
    }

    fn regex_match(&self, x: &V, y: &V) -> bool {
        let (V::Str(s), V::Str(pat)) = (x, y) else { return false };
        let mut cache = self.regexes.lock();
        let re = cache.entry(pat.to_string()).or_insert_with(|| Regex::new(&format!("^(?:{pat})$")).ok());
        re.as_ref().is_some_and(|re| re.is_match(s))
    }
}

fn many(v: Vec<V<'_>>) -> E<'_> {
    if v.is_empty() { E::Absent } else { E::Many(v) }
}

fn truthy(e: &E) -> bool {
    matches!(e, E::One(V::Bool(true)))
}

fn span_order(t: &TraceData, a: usize, b: usize) -> std::cmp::Ordering {
    t.start_of(a).cmp(&t.start_of(b)).then_with(|| t.span_id(a).cmp(t.span_id(b)))
}

fn comparable(x: &V, y: &V) -> bool {
    matches!(
        (x, y),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_))
            | (V::Dur(_), V::Dur(_))
            | (V::Str(_), V::Str(_))
            | (V::Bool(_), V::Bool(_))
            | (V::Status(_), V::Status(_))
            | (V::Kind(_), V::Kind(_))
    )
}

fn ord_holds(op: BinaryOp, o: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    match (op, o) {
        (_, None) => false,
        (BinaryOp::Eq, Some(o)) => o == Equal,
        (BinaryOp::Neq, Some(o)) => o != Equal,
        (BinaryOp::Lt, Some(o)) => o == Less,
        (BinaryOp::Lte, Some(o)) => o != Greater,
        (BinaryOp::Gt, Some(o)) => o == Greater,
        (BinaryOp::Gte, Some(o)) => o != Less,
        _ => false,
    }
}

fn cmp_values(op: BinaryOp, x: &V, y: &V) -> bool {
    let equality_only = matches!(op, BinaryOp::Eq | BinaryOp::Neq);
    let o = match (x, y) {
        (V::Int(a), V::Int(b)) => Some(a.cmp(b)),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => num(x).partial_cmp(&num(y)),
        (V::Dur(a), V::Dur(b)) => Some(a.cmp(b)),
        (V::Str(a), V::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (V::Bool(a), V::Bool(b)) if equality_only => Some(if a == b { std::cmp::Ordering::Equal } else { a.cmp(b) }),
        (V::Status(a), V::Status(b)) if equality_only => Some(eq_ord(a == b)),
        (V::Kind(a), V::Kind(b)) if equality_only => Some(eq_ord(a == b)),
        _ => None,
    };
    ord_holds(op, o)
}

fn eq_ord(eq: bool) -> std::cmp::Ordering {
    if eq { std::cmp::Ordering::Equal } else { std::cmp::Ordering::Less }
}

fn num(v: &V) -> f64 {
    match v {
        V::Int(i) => *i as f64,
        V::Float(f) => *f,
        _ => f64::NAN,
    }
}

pub(crate) fn cmp_f64(op: CmpOp, a: f64, b: f64) -> bool {
    ord_holds(op.to_binary(), a.partial_cmp(&b))
}

fn arith<'a>(op: BinaryOp, a: &V, b: &V) -> Option<V<'a>> {
    use BinaryOp::*;
    Some(match (a, b) {
        (V::Int(x), V::Int(y)) => match op {
            Add => V::Int(x.wrapping_add(*y)),
            Sub => V::Int(x.wrapping_sub(*y)),
            Mul => V::Int(x.wrapping_mul(*y)),
            Mod => V::Int(x.checked_rem(*y)?),
            Div => V::Float(float_div(*x as f64, *y as f64)?),
            Pow => V::Float((*x as f64).powf(*y as f64)),
            _ => return None,
        },
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            let (x, y) = (num(a), num(b));
            V::Float(match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => float_div(x, y)?,
                Mod => {
                    if y == 0.0 {
                        return None;
                    }
                    x % y
                }
                Pow => x.powf(y),
                _ => return None,
            })
        }
        (V::Dur(x), V::Dur(y)) => match op {
            Add => V::Dur(x.wrapping_add(*y)),
            Sub => V::Dur(x.wrapping_sub(*y)),
            _ => return None,
        },
        (V::Dur(d), V::Int(_) | V::Float(_)) => match op {
            Mul => V::Dur((*d as f64 * num(b)) as i64),
            Div => V::Dur(float_div(*d as f64, num(b))? as i64),
            _ => return None,
        },
        (V::Int(_) | V::Float(_), V::Dur(d)) => match op {
            Mul => V::Dur((num(a) * *d as f64) as i64),
            _ => return None,
        },
        _ => return None,
    })
}

fn float_div(x: f64, y: f64) -> Option<f64> {
    (y != 0.0).then(|| x / y)
}

fn value_key(v: &V) -> String {
    match v {
        V::Str(s) => format!("s:{s}"),
        V::Int(i) => format!("i:{i}"),
        V::Float(f) => format!("f:{f}"),
        V::Bool(b) => format!("b:{b}"),
        V::Dur(d) => format!("d:{d}"),
        V::Status(s) => format!("st:{}", s.as_str()),
        V::Kind(k) => format!("k:{}", k.as_str()),
    }
}

fn to_any(v: &V) -> AnyValue {
    let value = match v {
        V::Str(s) => Value::StringValue(s.to_string()),
        V::Int(i) => Value::IntValue(*i),
        V::Float(f) => Value::DoubleValue(*f),
        V::Bool(b) => Value::BoolValue(*b),
        V::Dur(d) => Value::StringValue(format_duration(*d)),
        V::Status(s) => Value::StringValue(s.as_str().into()),
        V::Kind(k) => Value::StringValue(k.as_str().into()),
    };
    AnyValue { value: Some(value) }
}

/// Durations shown as Tempo shows them in spanset attributes (Go's duration format, e.g. `1.5s`, `250ms`).
fn format_duration(ns: i64) -> String {
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    let sign = if ns < 0 { "-" } else { "" };
    format!("{sign}{d:?}")
}

/// Spans of the B side that the operator returns, or both sides' related spans for the union forms.
fn structural(op: SpansetOp, a: &[bool], b: &[bool], t: &TraceData) -> Vec<bool> {
    let n = t.len();
    let mut out = vec![false; n];
    let parent = |i: usize| t.parent[i];
    match op {
        SpansetOp::And => {
            if a.iter().any(|x| *x) && b.iter().any(|x| *x) {
                (0..n).for_each(|i| out[i] = a[i] || b[i]);
            }
        }
        SpansetOp::Union => (0..n).for_each(|i| out[i] = a[i] || b[i]),
        SpansetOp::Child | SpansetOp::NotChild | SpansetOp::UnionChild => {
            for j in (0..n).filter(|&j| b[j]) {
                let hit = parent(j).filter(|&p| a[p]);
                match op {
                    SpansetOp::Child => out[j] |= hit.is_some(),
                    SpansetOp::NotChild => out[j] |= hit.is_none(),
                    _ => {
                        if let Some(p) = hit {
                            out[j] = true;
                            out[p] = true;
                        }
                    }
                }
            }
        }
        SpansetOp::Parent | SpansetOp::NotParent | SpansetOp::UnionParent => {
            // B spans that are the parent of some A span.
            let mut is_parent_of_a = vec![false; n];
            for i in (0..n).filter(|&i| a[i]) {
                if let Some(p) = parent(i)
                    && b[p]
                {
                    is_parent_of_a[p] = true;
                    if op == SpansetOp::UnionParent {
                        out[i] = true;
                        out[p] = true;
                    }
                }
            }
            match op {
                SpansetOp::Parent => (0..n).for_each(|j| out[j] = b[j] && is_parent_of_a[j]),
                SpansetOp::NotParent => (0..n).for_each(|j| out[j] = b[j] && !is_parent_of_a[j]),
                _ => {}
            }
        }
        SpansetOp::Descendant | SpansetOp::NotDescendant | SpansetOp::UnionDescendant => {
            for j in (0..n).filter(|&j| b[j]) {
                let mut found = false;
                for x in t.ancestors(j) {
                    if a[x] {
                        found = true;
                        if op == SpansetOp::UnionDescendant {
                            out[x] = true;
                        } else {
                            break;
                        }
                    }
                }
                match op {
                    SpansetOp::Descendant => out[j] |= found,
                    SpansetOp::NotDescendant => out[j] |= !found,
                    _ => out[j] |= found,
                }
            }
        }
        SpansetOp::Ancestor | SpansetOp::NotAncestor | SpansetOp::UnionAncestor => {
            // B spans that are an ancestor of some A span.
            let mut is_ancestor_of_a = vec![false; n];
            for i in (0..n).filter(|&i| a[i]) {
                for x in t.ancestors(i) {
                    if b[x] {
                        is_ancestor_of_a[x] = true;
                        if op == SpansetOp::UnionAncestor {
                            out[i] = true;
                            out[x] = true;
                        }
                    }
                }
            }
            match op {
                SpansetOp::Ancestor => (0..n).for_each(|j| out[j] = b[j] && is_ancestor_of_a[j]),
                SpansetOp::NotAncestor => (0..n).for_each(|j| out[j] = b[j] && !is_ancestor_of_a[j]),
                _ => {}
            }
        }
        SpansetOp::Sibling | SpansetOp::NotSibling | SpansetOp::UnionSibling => {
            // Count A spans per parent, so "another A span under the same parent" is O(1) per B span.
            let mut a_under: HashMap<usize, usize> = HashMap::new();
            for i in (0..n).filter(|&i| a[i]) {
                if let Some(p) = parent(i) {
                    *a_under.entry(p).or_default() += 1;
                }
            }
            for j in (0..n).filter(|&j| b[j]) {
                let others = parent(j).map_or(0, |p| a_under.get(&p).copied().unwrap_or(0) - usize::from(a[j]));
                match op {
                    SpansetOp::Sibling => out[j] |= others > 0,
                    SpansetOp::NotSibling => out[j] |= others == 0,
                    _ => {
                        if others > 0 {
                            out[j] = true;
                            let p = parent(j);
                            for i in (0..n).filter(|&i| a[i] && i != j && parent(i) == p) {
                                out[i] = true;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Whether a field is read from the span itself (not from its trace, parent or tree position).
fn span_level(f: &Field) -> bool {
    match f {
        Field::Attribute(a) => !a.parent,
        Field::Intrinsic(x) => !matches!(
            x,
            Intrinsic::TraceRootName
                | Intrinsic::TraceRootService
                | Intrinsic::TraceDuration
                | Intrinsic::ChildCount
                | Intrinsic::Parent
                | Intrinsic::NestedSetLeft
                | Intrinsic::NestedSetRight
                | Intrinsic::NestedSetParent
        ),
    }
}

fn span_level_expr(e: &FieldExpr) -> bool {
    match e {
        FieldExpr::Field(f) => span_level(f),
        FieldExpr::Literal(_) => true,
        FieldExpr::Unary { expr, .. } => span_level_expr(expr),
        FieldExpr::Binary { lhs, rhs, .. } => span_level_expr(lhs) && span_level_expr(rhs),
    }
}

/// Whether a pipeline, and `fields` read from the spans it yields, look at one span at a time: filter stages
/// (and `select()`) over span-level fields only. Such a query gives the same spans whether a trace is evaluated
/// whole or a fragment at a time, so metrics over it can scan rows without assembling traces.
pub fn span_local(p: &Pipeline, fields: &[Field]) -> bool {
    fields.iter().all(span_level)
        && p.stages.iter().all(|s| match s {
            Stage::Spanset(SpansetExpr::Filter(f)) => f.expr.as_ref().is_none_or(span_level_expr),
            Stage::Select(_) => true,
            _ => false,
        })
}

/// Whether a pipeline gives the same answer on a whole trace and on only those of its spans that pass the
/// candidate predicate (`prune::candidate_filter`, a superset of every `{ }` filter): span-level fields only, and
/// no operator that looks at spans outside the spansets built from filters (structural operators do; `&&`, `||`,
/// aggregates over a spanset, `by()`, `select()` and `coalesce()` do not). A search answers such a query for a
/// trace stored in one block from that block's filtered rows, with no whole-trace read.
pub fn run_local(p: &Pipeline) -> bool {
    fn set_ok(e: &SpansetExpr) -> bool {
        match e {
            SpansetExpr::Filter(f) => f.expr.as_ref().is_none_or(span_level_expr),
            SpansetExpr::Op { op, lhs, rhs } => {
                matches!(op, SpansetOp::And | SpansetOp::Union) && set_ok(lhs) && set_ok(rhs)
            }
            SpansetExpr::Pipeline(p) => run_local(p),
        }
    }
    fn scalar_ok(e: &ScalarExpr) -> bool {
        match e {
            ScalarExpr::Aggregate(a) => a.expr.as_ref().is_none_or(span_level_expr),
            ScalarExpr::Literal(_) => true,
            ScalarExpr::Binary { lhs, rhs, .. } => scalar_ok(lhs) && scalar_ok(rhs),
            ScalarExpr::Pipeline(_) => false,
        }
    }
    // The first stage must be built from filters: it is the one that sees every span of the trace.
    matches!(p.stages.first(), Some(Stage::Spanset(_)))
        && p.stages.iter().all(|s| match s {
            Stage::Spanset(e) => set_ok(e),
            Stage::ScalarFilter(f) => scalar_ok(&f.lhs) && scalar_ok(&f.rhs),
            Stage::By(e) => span_level_expr(e),
            Stage::Select(fs) => fs.iter().all(span_level),
            Stage::Coalesce => true,
        })
}

/// What a whole-trace fetch must decode for a pipeline: the span parts it reads, and the attributes it names
/// (a block whose dedicated slots hold all of them whole needs no generic list).
pub struct ReadNeeds {
    parts: SpanParts,
    attrs: Vec<Attribute>,
    /// The view columns the fields read (for reads that take only those, see [`SpanRows::partial`]).
    columns: Vec<&'static str>,
}

impl ReadNeeds {
    pub fn new(p: &Pipeline) -> Self {
        let mut needs = ReadNeeds { parts: SpanParts::NONE, attrs: Vec::new(), columns: Vec::new() };
        needs.pipeline(p);
        needs
    }

    /// Also reads `field` (a tag whose values a listing collects from the matching traces).
    pub fn with_field(mut self, field: &Field) -> Self {
        self.field(field);
        self
    }

    /// The view columns a span-local evaluation reads: trace ID, start and duration, plus those of the fields.
    pub fn view_columns(&self) -> Vec<&'static str> {
        use crate::block::schema::col;
        let mut out = vec![col::TRACE_ID, col::START, col::DURATION];
        for c in &self.columns {
            if !out.contains(c) {
                out.push(c);
            }
        }
        out
    }

    /// The parts to read from one block: generic attribute lists are left out when every attribute of that
    /// scope the query names sits in a dedicated slot that holds all of its values.
    pub fn parts_for(&self, meta: &BlockMeta) -> SpanParts {
        let mut parts = self.parts;
        // Only the slots of keys the query names (unscoped names may sit in either scope).
        parts.slots = meta
            .dedicated_columns
            .iter()
            .filter(|d| {
                self.attrs.iter().any(|a| {
                    a.name == d.name
                        && match a.scope {
                            Scope::Unscoped => true,
                            Scope::Resource => d.scope == "resource",
                            Scope::Span => d.scope == "span",
                            _ => false,
                        }
                })
            })
            .filter_map(|d| crate::block::slot_bit(&d.column))
            .fold(0, |acc, b| acc | b);
        let whole_slot = |scope: &str, key: &str| {
            meta.dedicated_columns.iter().any(|d| d.scope == scope && d.name == key && !d.also_in_list)
        };
        let covered = |scope: Scope, key: &str| match scope {
            Scope::Resource => (key == "service.name" && !meta.service_name_in_list) || whole_slot("resource", key),
            Scope::Span => whole_slot("span", key),
            _ => false,
        };
        if parts.resource_list {
            parts.resource_list = self
                .attrs
                .iter()
                .any(|a| matches!(a.scope, Scope::Resource | Scope::Unscoped) && !covered(Scope::Resource, &a.name));
        }
        if parts.span_list {
            parts.span_list = self
                .attrs
                .iter()
                .any(|a| matches!(a.scope, Scope::Span | Scope::Unscoped) && !covered(Scope::Span, &a.name));
        }
        parts
    }

    fn field(&mut self, f: &Field) {
        use crate::block::schema::col;
        let column = match f {
            Field::Attribute(a) if matches!(a.scope, Scope::Resource | Scope::Unscoped) => Some(col::SERVICE_NAME),
            Field::Intrinsic(Intrinsic::Name | Intrinsic::TraceRootName) => Some(col::NAME),
            Field::Intrinsic(Intrinsic::Status) => Some(col::STATUS_CODE),
            Field::Intrinsic(Intrinsic::StatusMessage) => Some(col::STATUS_MESSAGE),
            Field::Intrinsic(Intrinsic::Kind) => Some(col::KIND),
            Field::Intrinsic(Intrinsic::SpanId) => Some(col::SPAN_ID),
            Field::Intrinsic(Intrinsic::ParentId) => Some(col::PARENT_SPAN_ID),
            Field::Intrinsic(Intrinsic::InstrumentationName) => Some(col::SCOPE_NAME),
            Field::Intrinsic(Intrinsic::InstrumentationVersion) => Some(col::SCOPE_VERSION),
            _ => None,
        };
        if let Some(c) = column
            && !self.columns.contains(&c)
        {
            self.columns.push(c);
        }
        let parts = &mut self.parts;
        match f {
            Field::Attribute(a) => {
                self.attrs.push(a.clone());
                match a.scope {
                    Scope::Span => {
                        parts.span_attrs = true;
                        parts.span_list = true;
                    }
                    Scope::Resource => {
                        parts.resource_attrs = true;
                        parts.resource_list = true;
                    }
                    Scope::Instrumentation => parts.scope_attrs = true,
                    Scope::Event => parts.events = true,
                    Scope::Link => parts.links = true,
                    Scope::Unscoped => {
                        parts.span_attrs = true;
                        parts.span_list = true;
                        parts.resource_attrs = true;
                        parts.resource_list = true;
                        parts.events = true;
                        parts.links = true;
                    }
                }
            }
            Field::Intrinsic(Intrinsic::EventName | Intrinsic::EventTimeSinceStart) => parts.events = true,
            Field::Intrinsic(Intrinsic::LinkTraceId | Intrinsic::LinkSpanId) => parts.links = true,
            Field::Intrinsic(_) => {}
        }
    }

    fn expr(&mut self, e: &FieldExpr) {
        match e {
            FieldExpr::Field(f) => self.field(f),
            FieldExpr::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            FieldExpr::Unary { expr: x, .. } => self.expr(x),
            FieldExpr::Literal(_) => {}
        }
    }

    fn spanset(&mut self, e: &SpansetExpr) {
        match e {
            SpansetExpr::Filter(f) => {
                if let Some(x) = &f.expr {
                    self.expr(x);
                }
            }
            SpansetExpr::Op { lhs, rhs, .. } => {
                self.spanset(lhs);
                self.spanset(rhs);
            }
            SpansetExpr::Pipeline(p) => self.pipeline(p),
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        for stage in &p.stages {
            match stage {
                Stage::Spanset(e) => self.spanset(e),
                Stage::By(e) => self.expr(e),
                Stage::Select(fields) => fields.iter().for_each(|f| self.field(f)),
                Stage::ScalarFilter(f) => {
                    for side in [&f.lhs, &f.rhs] {
                        if let ScalarExpr::Aggregate(a) = side
                            && let Some(e) = &a.expr
                        {
                            self.expr(e);
                        }
                    }
                }
                Stage::Coalesce => {}
            }
        }
    }
}

/// Attributes named in filters and `select()`, in query order, one per key.
fn collect_shown(p: &Pipeline, out: &mut Vec<(String, Attribute)>) {
    fn add(a: &Attribute, out: &mut Vec<(String, Attribute)>) {
        if !out.iter().any(|(k, _)| *k == a.name) {
            out.push((a.name.clone(), a.clone()));
        }
    }
    fn field_expr(e: &FieldExpr, out: &mut Vec<(String, Attribute)>) {
        match e {
            FieldExpr::Field(Field::Attribute(a)) => add(a, out),
            FieldExpr::Binary { lhs, rhs, .. } => {
                field_expr(lhs, out);
                field_expr(rhs, out);
            }
            FieldExpr::Unary { expr, .. } => field_expr(expr, out),
            _ => {}
        }
    }
    fn spanset(e: &SpansetExpr, out: &mut Vec<(String, Attribute)>) {
        match e {
            SpansetExpr::Filter(f) => {
                if let Some(x) = &f.expr {
                    field_expr(x, out);
                }
            }
            SpansetExpr::Op { lhs, rhs, .. } => {
                spanset(lhs, out);
                spanset(rhs, out);
            }
            SpansetExpr::Pipeline(p) => collect_shown(p, out),
        }
    }
    for stage in &p.stages {
        match stage {
            Stage::Spanset(e) => spanset(e, out),
            Stage::Select(fields) => {
                for f in fields {
                    if let Field::Attribute(a) = f {
                        add(a, out);
                    }
                }
            }
            _ => {}
        }
    }
}
