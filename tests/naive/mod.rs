//! Differential-test helpers for TraceQL search: a deterministic trace generator, a deliberately
//! naive evaluator of `src/query/SEMANTICS.md`, and a table of queries.
//!
//! The evaluator is written to be obviously correct, not fast: parents are found by scanning the
//! span list, ancestors by walking parents, siblings by comparing parents, structural operators by
//! trying every (a, b) pair. It never panics on a valid query; anything it cannot make sense of
//! matches nothing.
//!
//! Rules chosen where SEMANTICS.md is silent or ambiguous (the engine must agree):
//!  1. Truth: `{ x }`, `&&`, `||` and `!` treat only the single bool `true` as true; a list (even
//!     `[true]`), an absent value or any other type is not true.
//!  2. A comparison with a list on *both* sides looks at every (left element, right element) pair:
//!     `= =~ < <= > >=` need one pair to satisfy it; `!=` / `!~` need both lists non-empty and no pair
//!     satisfying `=` / `=~`. A list against an absent or opaque value is false.
//!  3. `event:name`, `event:timeSinceStart`, `link:traceID`, `link:spanID` are absent (not an empty
//!     list) on a span with no events / links. `instrumentation:name` is absent when empty, like
//!     `instrumentation:version`.
//!  4. Lists hold scalars only: bytes / key-value lists / empty values inside arrays, and such values
//!     of `event.x` / `link.x`, are skipped. A key that only has skipped values is still present
//!     (an empty list: every comparison false, `!= nil` true).
//!  5. Arithmetic: `number * duration` is a duration like `duration * number`; `number / duration`,
//!     `duration / duration`, `duration % x`, `duration ^ x`, `duration + number` are absent. Unary
//!     `-` on a duration is a duration. `/` and `%` by zero are absent for floats too. Duration times
//!     or divided by a float is truncated toward zero (`as i64`, saturating). Float results keep IEEE
//!     values (NaN compares false to everything). `^` is always float (`powf`). Int `%` is Rust's
//!     `wrapping_rem` (sign of the dividend).
//!  6. `by(e)`: values are grouped by type *and* value (int 200, float 200.0 and string "200" are
//!     three groups). Opaque values (bytes, ...) are dropped like absent ones. A part keeps the
//!     by-attributes its spanset already had (a repeated key is overwritten in place, a new key is
//!     appended). Filters, spanset operators, scalar filters and `select()` keep a spanset's
//!     by-attributes; `coalesce()` produces one spanset with none.
//!  7. A parenthesised pipeline that is a whole stage is inlined (the parser flattens these anyway).
//!  8. Aggregates: a spanset whose values mix durations and numbers fails the filter. `min`, `max`,
//!     `sum` over ints only are ints (`sum` wrapping), with any float they are floats; `avg` is a
//!     float (of nanoseconds for durations). Float sums add in the trace's deduplicated span order.
//!     A scalar filter side that is not an aggregate or a literal (arithmetic, sub-pipeline) fails.
//!  9. `nestedSetLeft/Right/Parent` and `parent` are absent on every span.
//! 10. Ancestors: walking starts with the span itself marked visited, so a span is never its own
//!     ancestor (even in a cycle). A span whose parent ID is its own span ID has itself as parent.
//! 11. Spans with an unknown parent ID have no parent, so two orphans sharing the same unknown
//!     parent ID are *not* siblings. "Other" in `~` means a different span (after dedupe), so two
//!     spans with the same span ID but different kinds under one parent are siblings.
//!     `NaiveSpanset::span_ids` is a set of hex IDs, so such spans show up once.
//! 12. `root_service`: `Some("<root span not yet received>")` without a root span; `None` when the
//!     root's resource has no string `service.name`. A non-string `service.name` counts as missing
//!     (for `trace:rootService` and `serviceStats` too).
//! 13. `duration` is the signed difference end - start (negative if end < start); `duration_ms` and
//!     `trace:duration` use a saturating end - start.
//! 14. `nil = nil` is true, `nil != nil` false. Status codes / kinds outside the enums compare as
//!     their number and render as it. An invalid regex matches nothing.
//! 15. Int against float compares as f64. Spansets with an equal earliest span (cannot happen: they
//!     are disjoint) fall back to comparing span ID sets, then by-attributes.
#![allow(dead_code)]

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use query_lang as ql;

// ---------------------------------------------------------------------------------------------
// Generated data
// ---------------------------------------------------------------------------------------------

pub struct GenSpan {
    pub resource: Resource,
    pub scope: InstrumentationScope,
    pub span: Span,
}

pub struct GenTrace {
    pub id: [u8; 16],
    pub spans: Vec<GenSpan>,
}

/// splitmix64: tiny, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// Spread over decades between `lo` and `hi` (inclusive), integers only (so the output does not
    /// depend on the platform's floating point library).
    fn spread(&mut self, lo: u64, hi: u64) -> u64 {
        let lo = lo.max(1);
        if hi <= lo {
            return lo;
        }
        let mut decades = vec![];
        let mut d = 1u64;
        while d <= hi {
            if d.saturating_mul(10) > lo {
                decades.push(d);
            }
            match d.checked_mul(10) {
                Some(n) => d = n,
                None => break,
            }
        }
        let d = self.pick(&decades);
        let v = d + self.below(d.saturating_mul(9));
        v.clamp(lo, hi)
    }
}

const SERVICES: [(&str, &str); 7] = [
    ("frontend", "us-east"),
    ("checkout", "us-east"),
    ("cart", "us-west"),
    ("payment", "eu-west"),
    ("inventory", "us-west"),
    ("shipping", "eu-west"),
    ("auth", "us-east"),
];

#[derive(Clone, Copy, PartialEq)]
enum Cat {
    Http,
    Db,
    Msg,
    Internal,
}

const NAMES: [(&str, Cat); 13] = [
    ("GET /cart", Cat::Http),
    ("POST /checkout", Cat::Http),
    ("GET /items", Cat::Http),
    ("PUT /cart/item", Cat::Http),
    ("DELETE /cart/item", Cat::Http),
    ("SELECT orders", Cat::Db),
    ("INSERT payments", Cat::Db),
    ("redis GET", Cat::Db),
    ("publish order", Cat::Msg),
    ("consume order", Cat::Msg),
    ("authorize", Cat::Internal),
    ("charge card", Cat::Internal),
    ("compute shipping", Cat::Internal),
];

const SPAN_REGIONS: [&str; 3] = ["eu-west", "ap-south", "us-west"];
const ERROR_MESSAGES: [&str; 4] = ["timeout", "connection refused", "internal error", ""];

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn vs(s: &str) -> Value {
    Value::StringValue(s.to_string())
}

fn varr(values: Vec<Value>) -> Value {
    Value::ArrayValue(ArrayValue { values: values.into_iter().map(|v| AnyValue { value: Some(v) }).collect() })
}

#[derive(Clone, Copy)]
enum PlanParent {
    None,
    Node(usize),
    Missing(u64),
}

struct PlanNode {
    parent: PlanParent,
    depth: u32,
    start: u64,
    dur: u64,
    service: usize,
    id: u64,
}

const MAX_DEPTH: u32 = 6;

fn add_child(rng: &mut Rng, nodes: &mut Vec<PlanNode>, p: usize) -> usize {
    let (pstart, pdur, pdepth, psvc) = (nodes[p].start, nodes[p].dur, nodes[p].depth, nodes[p].service);
    let dur = rng.spread(1_000, pdur.max(1_000));
    let start = pstart + rng.below(pdur.saturating_sub(dur) + 1);
    let service = if rng.chance(50) { psvc } else { rng.below(SERVICES.len() as u64) as usize };
    nodes.push(PlanNode { parent: PlanParent::Node(p), depth: pdepth + 1, start, dur, service, id: 0 });
    nodes.len() - 1
}

fn fresh_id(rng: &mut Rng, used: &mut BTreeSet<u64>) -> u64 {
    loop {
        let v = rng.next();
        if v != 0 && used.insert(v) {
            return v;
        }
    }
}

/// Deterministic (own splitmix64 PRNG) for a seed. Trace `i` starts at
/// `base_time_ns + i * 1_000_000_007 + jitter` with jitter < 0.9 s, so all trace starts differ.
pub fn generate(seed: u64, n_traces: usize, base_time_ns: u64) -> Vec<GenTrace> {
    let mut rng = Rng(seed ^ 0x05EE_D0F5_7A7A);
    let mut used_trace_ids = BTreeSet::new();
    let mut out: Vec<GenTrace> = Vec::with_capacity(n_traces);
    for i in 0..n_traces {
        let id = loop {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&rng.next().to_be_bytes());
            b[8..].copy_from_slice(&rng.next().to_be_bytes());
            if b != [0u8; 16] && used_trace_ids.insert(b) {
                break b;
            }
        };
        let start = base_time_ns + i as u64 * 1_000_000_007 + rng.below(900_000_000);
        let link_target = out.last().map(|t| (t.id.to_vec(), t.spans[0].span.span_id.clone()));
        let t = gen_trace(&mut rng, id, start, link_target);
        out.push(t);
    }
    out
}

fn gen_trace(rng: &mut Rng, id: [u8; 16], start: u64, link_target: Option<(Vec<u8>, Vec<u8>)>) -> GenTrace {
    let shape = rng.below(100);
    let root_dur = if shape < 10 { rng.spread(1_000, 5_000_000_000) } else { rng.spread(1_000_000, 5_000_000_000) };
    let root_svc = rng.below(SERVICES.len() as u64) as usize;
    let mut nodes =
        vec![PlanNode { parent: PlanParent::None, depth: 0, start, dur: root_dur, service: root_svc, id: 0 }];
    match shape {
        0..10 => {}
        10..20 => {
            // A deep chain, then a few extra spans.
            let mut p = 0;
            for _ in 0..MAX_DEPTH {
                p = add_child(rng, &mut nodes, p);
            }
            for _ in 0..rng.below(4) {
                let p = rng.below(nodes.len() as u64) as usize;
                if nodes[p].depth < MAX_DEPTH {
                    add_child(rng, &mut nodes, p);
                }
            }
        }
        20..30 => {
            // Wide: many siblings under the root.
            let k = 8 + rng.below(13);
            for _ in 0..k {
                add_child(rng, &mut nodes, 0);
            }
            for _ in 0..rng.below(3) {
                let p = 1 + rng.below(k) as usize;
                add_child(rng, &mut nodes, p);
            }
        }
        _ => {
            let n = 2 + rng.below(24);
            while (nodes.len() as u64) < n {
                let p = rng.below(nodes.len() as u64) as usize;
                if nodes[p].depth < MAX_DEPTH {
                    add_child(rng, &mut nodes, p);
                }
            }
        }
    }
    let mut used_ids = BTreeSet::new();
    if rng.chance(10) {
        // One or two orphans sharing the same unknown parent, maybe with a child.
        let missing = fresh_id(rng, &mut used_ids);
        for _ in 0..1 + rng.below(2) {
            let s = start + rng.below(root_dur);
            let dur = rng.spread(1_000, 5_000_000_000);
            let service = rng.below(SERVICES.len() as u64) as usize;
            nodes.push(PlanNode { parent: PlanParent::Missing(missing), depth: 1, start: s, dur, service, id: 0 });
            if rng.chance(50) {
                let p = nodes.len() - 1;
                add_child(rng, &mut nodes, p);
            }
        }
    }
    if rng.chance(8) {
        // A second root, starting strictly after the first one.
        let s = start + 1 + rng.below(root_dur);
        let dur = rng.spread(10_000, 5_000_000_000);
        let service = rng.below(SERVICES.len() as u64) as usize;
        nodes.push(PlanNode { parent: PlanParent::None, depth: 0, start: s, dur, service, id: 0 });
        let p = nodes.len() - 1;
        for _ in 0..rng.below(3) {
            add_child(rng, &mut nodes, p);
        }
    }
    if rng.chance(3) {
        // The root never arrived: the first span points at an unknown parent.
        nodes[0].parent = PlanParent::Missing(fresh_id(rng, &mut used_ids));
    }
    for n in nodes.iter_mut() {
        n.id = fresh_id(rng, &mut used_ids);
    }

    let env = if rng.chance(75) { "prod" } else { "staging" };
    let pods: Vec<String> = (0..SERVICES.len()).map(|_| format!("10{}", 1 + rng.below(9))).collect();
    let mut spans = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let parent_span_id = match n.parent {
            PlanParent::None => vec![],
            PlanParent::Node(p) => nodes[p].id.to_be_bytes().to_vec(),
            PlanParent::Missing(m) => m.to_be_bytes().to_vec(),
        };
        let (svc, region) = SERVICES[n.service];
        let mut res_attrs = vec![];
        if i == 0 || !rng.chance(2) {
            res_attrs.push(kv("service.name", vs(svc)));
        }
        res_attrs.push(kv("deployment.environment", vs(env)));
        res_attrs.push(kv("k8s.pod.name", vs(&pods[n.service])));
        res_attrs.push(kv("region", vs(region)));
        let resource = Resource { attributes: res_attrs, ..Default::default() };
        let link = if rng.chance(15) { link_target.clone() } else { None };
        let (scope, span) = gen_span(rng, id, n, parent_span_id, i == 0, link);
        spans.push(GenSpan { resource, scope, span });
    }
    // Store the spans in a shuffled order so nothing can rely on parents coming first.
    for i in (1..spans.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        spans.swap(i, j);
    }
    GenTrace { id, spans }
}

fn gen_span(
    rng: &mut Rng,
    trace_id: [u8; 16],
    n: &PlanNode,
    parent_span_id: Vec<u8>,
    is_first: bool,
    link_target: Option<(Vec<u8>, Vec<u8>)>,
) -> (InstrumentationScope, Span) {
    let (name, cat) = if is_first && rng.chance(70) { NAMES[rng.below(5) as usize] } else { rng.pick(&NAMES) };
    let mut kind = match cat {
        Cat::Http => {
            if is_first || rng.chance(50) {
                2
            } else {
                3
            }
        }
        Cat::Db => 3,
        Cat::Msg => {
            if name.starts_with("publish") {
                4
            } else {
                5
            }
        }
        Cat::Internal => {
            if rng.chance(80) {
                1
            } else {
                0
            }
        }
    };
    if rng.chance(15) {
        kind = rng.below(6) as i32;
    }

    let mut attrs = vec![];
    let mut status_code_attr = 0;
    match cat {
        Cat::Http => {
            let method = if rng.chance(90) {
                name.split(' ').next().unwrap_or("GET")
            } else {
                rng.pick(&["GET", "POST", "PUT", "DELETE"])
            };
            attrs.push(kv("http.method", vs(method)));
            attrs.push(kv("http.route", vs(name.split(' ').nth(1).unwrap_or("/"))));
            let code = match rng.below(100) {
                0..50 => 200,
                50..60 => 201,
                60..75 => 404,
                75..90 => 500,
                _ => 503,
            };
            status_code_attr = code;
            attrs.push(kv("http.status_code", Value::IntValue(code)));
            if rng.chance(3) {
                // A second value for the same key: only the first one counts.
                attrs.push(kv("http.method", vs("PATCH")));
            }
        }
        Cat::Db => {
            let system = match name {
                "redis GET" => "redis",
                _ => rng.pick(&["postgresql", "postgresql", "mongodb"]),
            };
            attrs.push(kv("db.system", vs(system)));
        }
        Cat::Msg => attrs.push(kv("messaging.system", vs(rng.pick(&["kafka", "rabbitmq"])))),
        Cat::Internal => {}
    }
    if rng.chance(40) {
        attrs.push(kv("retry.count", Value::IntValue(rng.below(4) as i64)));
    }
    if rng.chance(30) {
        attrs.push(kv("sample.ratio", Value::DoubleValue(rng.pick(&[0.1, 0.25, 0.5, 0.75, 1.0]))));
    }
    if rng.chance(30) {
        attrs.push(kv("cache.hit", Value::BoolValue(rng.chance(50))));
    }
    if rng.chance(25) {
        let tags: &[&str] = rng.pick(&[&["a", "b"][..], &["b", "c"][..], &["a"][..]]);
        attrs.push(kv("tags", varr(tags.iter().map(|t| vs(t)).collect())));
    }
    if rng.chance(15) {
        let ports: &[i64] = rng.pick(&[&[80, 443][..], &[8080][..]]);
        attrs.push(kv("ports", varr(ports.iter().map(|p| Value::IntValue(*p)).collect())));
    }
    match rng.below(100) {
        0..15 => attrs.push(kv("user.id", Value::IntValue(1 + rng.below(30) as i64))),
        15..25 => attrs.push(kv("user.id", vs(&format!("u-{}", 1 + rng.below(30))))),
        _ => {}
    }
    if rng.chance(10) {
        attrs.push(kv("region", vs(rng.pick(&SPAN_REGIONS))));
    }
    if rng.chance(15) {
        attrs.push(kv("component", vs(rng.pick(&["grpc", "http", "redis"]))));
    }
    if rng.chance(5) {
        attrs.push(kv("payload", Value::BytesValue(vec![1, 2, 3])));
    }
    // Shuffle attribute order a little (keeps the duplicate http.method after the first one).
    if attrs.len() > 3 && rng.chance(50) {
        let last = attrs.len() - 1;
        attrs.swap(last, last - 1);
        if attrs.iter().filter(|a| a.key == "http.method").count() > 1 {
            attrs.swap(last, last - 1);
        }
    }

    let (code, message) = if status_code_attr >= 500 && rng.chance(70) || rng.chance(8) {
        (2, rng.pick(&ERROR_MESSAGES).to_string())
    } else if rng.chance(25) {
        (1, if rng.chance(20) { "done".to_string() } else { String::new() })
    } else {
        (0, String::new())
    };

    let mut events = vec![];
    if rng.chance(40) {
        for _ in 0..1 + rng.below(3) {
            let time_unix_nano = n.start + rng.below(n.dur + 1);
            let ename = rng.pick(&["exception", "retry", "cache.miss"]);
            let mut ea = vec![];
            match ename {
                "exception" => {
                    ea.push(kv("exception.type", vs(rng.pick(&["IOError", "TimeoutError", "ValueError"]))));
                    ea.push(kv("exception.message", vs(rng.pick(&["boom", "deadline exceeded"]))));
                    ea.push(kv("exception.escaped", Value::BoolValue(rng.chance(30))));
                }
                "retry" => ea.push(kv("attempt", Value::IntValue(1 + rng.below(3) as i64))),
                _ => {
                    ea.push(kv("cache.key", vs(&format!("user:{}", rng.below(5)))));
                    if rng.chance(50) {
                        ea.push(kv("keys", varr(vec![vs("k1"), vs("k2")])));
                    }
                    if rng.chance(50) {
                        ea.push(kv("component", vs("memcached")));
                    }
                }
            }
            events.push(Event { time_unix_nano, name: ename.to_string(), attributes: ea, ..Default::default() });
        }
    }

    let mut links = vec![];
    if let Some((tid, sid)) = link_target {
        links.push(Link {
            trace_id: tid,
            span_id: sid,
            attributes: vec![
                kv("relation", vs(rng.pick(&["follows_from", "follows_from", "batch_item"]))),
                kv("weight", Value::IntValue(1 + rng.below(5) as i64)),
            ],
            ..Default::default()
        });
        if rng.chance(40) {
            let mut tid = vec![];
            tid.extend_from_slice(&rng.next().to_be_bytes());
            tid.extend_from_slice(&rng.next().to_be_bytes());
            links.push(Link {
                trace_id: tid,
                span_id: (rng.next() | 1).to_be_bytes().to_vec(),
                attributes: vec![
                    kv("relation", vs(rng.pick(&["batch_item", "retry_of"]))),
                    kv("weight", Value::IntValue(1 + rng.below(5) as i64)),
                ],
                ..Default::default()
            });
        }
    }

    let scope = match cat {
        Cat::Http => {
            if rng.chance(50) {
                InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.4.0".into(),
                    attributes: vec![kv("library.language", vs("go"))],
                    ..Default::default()
                }
            } else {
                InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.3.1".into(),
                    ..Default::default()
                }
            }
        }
        Cat::Db => {
            InstrumentationScope { name: "io.opentelemetry.sql".into(), version: "0.9.2".into(), ..Default::default() }
        }
        Cat::Msg => InstrumentationScope {
            name: "io.opentelemetry.messaging".into(),
            version: "2.0.0".into(),
            attributes: vec![kv("library.language", vs("rust"))],
            ..Default::default()
        },
        Cat::Internal => {
            if rng.chance(20) {
                InstrumentationScope::default()
            } else {
                InstrumentationScope { name: "strata.custom".into(), ..Default::default() }
            }
        }
    };

    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: n.id.to_be_bytes().to_vec(),
        parent_span_id,
        name: name.to_string(),
        kind,
        start_time_unix_nano: n.start,
        end_time_unix_nano: n.start + n.dur,
        attributes: attrs,
        events,
        links,
        status: Some(Status { code, message }),
        ..Default::default()
    };
    (scope, span)
}

// ---------------------------------------------------------------------------------------------
// Query table
// ---------------------------------------------------------------------------------------------

/// What a query is expected to do on generated data (checked by `query_table_hits_generated_data` for seeds
/// 1, 2, 3 and 42 with 240 traces each).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Matches at least one trace.
    Some,
    /// Matches nothing, whatever the data.
    None,
    /// No expectation (rare combinations).
    Any,
}

use Expect::{Any, None as Nothing, Some as Hits};

const QUERIES: &[(&str, Expect)] = &[
    // --- intrinsics ---
    ("{ duration > 100ms }", Hits),
    ("{ duration <= 10us }", Hits),
    ("{ span:duration >= 1s && span:duration < 2s }", Hits),
    ("{ duration > 1.5s }", Hits),
    ("{ name = \"GET /cart\" }", Hits),
    ("{ name != \"GET /cart\" && kind = server }", Hits),
    ("{ span:name = \"consume order\" }", Hits),
    ("{ name =~ \"GET.*\" }", Hits),
    ("{ name =~ \".*order\" }", Hits),
    ("{ name !~ \".*order\" }", Hits),
    ("{ name > \"redis\" }", Hits),
    ("{ name <= \"DELETE /cart/item\" }", Hits),
    ("{ name >= \"compute\" && name < \"consume\" }", Hits),
    ("{ status = error }", Hits),
    ("{ status != unset }", Hits),
    ("{ status = ok && kind = client }", Hits),
    ("{ span:status = unset }", Hits),
    ("{ statusMessage = \"timeout\" }", Hits),
    ("{ statusMessage =~ \"conn.*\" }", Hits),
    ("{ status = error && statusMessage = \"\" }", Hits),
    ("{ span:statusMessage = \"done\" }", Hits),
    ("{ kind = internal }", Hits),
    ("{ kind = producer }", Hits),
    ("{ kind = consumer }", Hits),
    ("{ kind = unspecified }", Hits),
    ("{ span:kind != server && span:kind != client }", Hits),
    ("{ span:id =~ \"0.*\" }", Hits),
    ("{ span:id =~ \"[0-9a-f]{16}\" }", Hits),
    ("{ span:parentID != nil }", Hits),
    ("{ !(span:parentID != nil) }", Hits),
    ("{ span:parentID =~ \"[0-9a-f]{16}\" && span:id =~ \"[0-7].*\" }", Hits),
    ("{ span:childCount = 0 }", Hits),
    ("{ span:childCount >= 5 }", Hits),
    ("{ span:childCount = 1 && kind = server }", Hits),
    ("{ trace:id =~ \"a.*\" }", Hits),
    ("{ trace:id =~ \"[0-9a-f]{32}\" && span:childCount > 2 }", Hits),
    ("{ trace:rootName = \"GET /cart\" }", Hits),
    ("{ rootName =~ \"POST.*\" }", Hits),
    ("{ trace:rootName != \"GET /cart\" && trace:rootName != nil }", Hits),
    ("{ trace:rootService = \"frontend\" }", Hits),
    ("{ rootServiceName != \"frontend\" && kind = consumer }", Hits),
    ("{ !(trace:rootService != nil) }", Hits),
    ("{ trace:duration > 2s }", Hits),
    ("{ traceDuration < 1ms }", Hits),
    ("{ event:name = \"exception\" }", Hits),
    ("{ event:name != \"exception\" }", Hits),
    ("{ event:name =~ \"cache.*\" }", Hits),
    ("{ event:timeSinceStart > 10ms }", Hits),
    ("{ event:timeSinceStart < 1us }", Any),
    ("{ link:traceID != nil }", Hits),
    ("{ link:traceID =~ \"[0-9a-f]{32}\" }", Hits),
    ("{ link:spanID =~ \"[0-9a-f]{16}\" && link:spanID !~ \"0.*\" }", Any),
    ("{ instrumentation:name = \"io.opentelemetry.http\" }", Hits),
    ("{ !(instrumentation:name != nil) }", Hits),
    ("{ instrumentation:version = \"1.4.0\" }", Hits),
    ("{ instrumentation:version != nil && instrumentation:name =~ \".*sql\" }", Hits),
    // --- scopes ---
    ("{ span.http.method = \"GET\" }", Hits),
    ("{ span.http.method != \"GET\" }", Hits),
    ("{ span.http.route = \"/cart/item\" && span.http.method = \"DELETE\" }", Hits),
    ("{ resource.service.name = \"checkout\" }", Hits),
    ("{ resource.deployment.environment = \"staging\" }", Hits),
    ("{ resource.k8s.pod.name = \"103\" }", Hits),
    ("{ resource.k8s.pod.name > \"105\" }", Hits),
    ("{ resource.service.name != nil && resource.service.name !~ \"c.*\" }", Hits),
    ("{ event.exception.type = \"IOError\" }", Hits),
    ("{ event.attempt >= 2 }", Hits),
    ("{ event.exception.escaped = true }", Hits),
    ("{ event.keys = \"k2\" }", Hits),
    ("{ link.relation = \"follows_from\" }", Hits),
    ("{ link.weight > 3 }", Hits),
    ("{ link.relation != \"follows_from\" }", Hits),
    ("{ instrumentation.library.language = \"go\" }", Hits),
    ("{ instrumentation.library.language != nil && kind = consumer }", Hits),
    ("{ .region = \"ap-south\" }", Hits),
    ("{ .region = \"us-east\" }", Hits),
    ("{ span.region = nil && .region != nil }", Hits),
    ("{ .region = \"eu-west\" && resource.region != \"eu-west\" }", Hits),
    ("{ .exception.type = \"TimeoutError\" }", Hits),
    ("{ .relation = \"batch_item\" }", Hits),
    ("{ .component = \"memcached\" }", Hits),
    ("{ .component = \"redis\" && event.component = \"memcached\" }", Any),
    ("{ .service.name = \"cart\" }", Hits),
    ("{ .http.status_code = 404 }", Hits),
    // --- comparisons by type ---
    ("{ span.http.status_code = 500 }", Hits),
    ("{ span.http.status_code != 200 }", Hits),
    ("{ span.http.status_code < 300 }", Hits),
    ("{ span.http.status_code <= 201 && span.http.status_code > 200 }", Hits),
    ("{ span.http.status_code >= 503 }", Hits),
    ("{ span.http.status_code > 499.5 }", Hits),
    ("{ span.retry.count = 2.0 }", Hits),
    ("{ span.sample.ratio > 0.3 }", Hits),
    ("{ span.sample.ratio = 0.25 }", Hits),
    ("{ span.sample.ratio <= 0.1 }", Hits),
    ("{ span.sample.ratio < 1 }", Hits),
    ("{ span.sample.ratio >= 1 }", Hits),
    ("{ span.cache.hit = true }", Hits),
    ("{ span.cache.hit != true }", Hits),
    ("{ span.cache.hit }", Hits),
    ("{ !span.cache.hit }", Hits),
    ("{ span.user.id = 7 }", Hits),
    ("{ span.user.id =~ \"u-.*\" }", Hits),
    ("{ span.user.id > 10 && span.user.id < 20 }", Hits),
    ("{ span.user.id > \"u-2\" }", Hits),
    // --- arrays ---
    ("{ span.tags = \"a\" }", Hits),
    ("{ span.tags != \"a\" }", Hits),
    ("{ span.tags =~ \"[bc]\" }", Hits),
    ("{ span.tags !~ \"a\" }", Hits),
    ("{ span.ports = 443 }", Hits),
    ("{ span.ports > 1000 }", Hits),
    ("{ span.ports != 80 }", Hits),
    ("{ span.ports < 100 && span.ports > 400 }", Hits),
    // --- nil ---
    ("{ span.http.method = nil }", Hits),
    ("{ span.db.system != nil }", Hits),
    ("{ span.payload != nil }", Hits),
    ("{ span.tags != nil && span.ports = nil }", Hits),
    ("{ .user.id = nil && kind = server }", Hits),
    // --- arithmetic ---
    ("{ span.http.status_code + 1 = 501 }", Hits),
    ("{ duration * 2 > 1s }", Hits),
    ("{ 2 * duration > 1s }", Hits),
    ("{ span.retry.count * 10 >= 20 }", Hits),
    ("{ span.http.status_code / 100 = 5 }", Hits),
    ("{ span.http.status_code % 100 = 3 }", Hits),
    ("{ span.retry.count ^ 2 = 9 }", Hits),
    ("{ -span.retry.count < -1 }", Hits),
    ("{ span.sample.ratio * 4 = 1 }", Hits),
    ("{ duration / 2 < 1ms }", Hits),
    ("{ duration - 100ms > 1s }", Hits),
    ("{ span.http.status_code - span.retry.count = 497 }", Any),
    // --- ! and || inside filters ---
    ("{ !(status = error) && kind = server }", Hits),
    ("{ status = error || span.http.status_code >= 500 }", Hits),
    ("{ !(span.http.status_code = 200) }", Hits),
    ("{ (span.http.method = \"GET\" || span.http.method = \"POST\") && span.http.status_code = 404 }", Hits),
    ("{ !(kind = server || kind = client) && status = error }", Hits),
    // --- spanset && and || ---
    ("{ status = error } && { resource.service.name = \"payment\" }", Hits),
    ("{ name = \"SELECT orders\" } || { name = \"redis GET\" }", Hits),
    ("{ kind = producer } && { kind = consumer } && { status = error }", Any),
    // --- structural ---
    ("{ kind = server } > { kind = client }", Hits),
    ("{ resource.service.name = \"frontend\" } >> { status = error }", Hits),
    ("{ kind = client } < { kind = server }", Hits),
    ("{ status = error } << { resource.service.name = \"frontend\" }", Hits),
    ("{ name = \"SELECT orders\" } ~ { name = \"redis GET\" }", Hits),
    ("{ } ~ { }", Hits),
    ("{ } !> { }", Hits),
    ("{ kind = server } !< { kind = server }", Hits),
    ("{ status = error } !>> { }", Hits),
    ("{ } !<< { }", Hits),
    ("{ } !~ { }", Hits),
    ("{ kind = server } &> { kind = client }", Hits),
    ("{ kind = client } &< { }", Hits),
    ("{ resource.service.name = \"frontend\" } &>> { status = error }", Hits),
    ("{ status = error } &<< { kind = server }", Hits),
    ("{ span.http.method != nil } &~ { span.db.system != nil }", Hits),
    ("{ } >> { } >> { } >> { } >> { }", Hits),
    ("{ } > { } > { } > { } > { } > { } > { }", Any),
    ("{ name = \"no such span\" } !> { kind = server }", Hits),
    ("{ } !> { span:parentID != nil }", Hits),
    ("{ } ~ { span:parentID != nil && span:childCount = 0 }", Hits),
    ("({ status = error } | count() > 1) && { kind = server }", Hits),
    ("{ kind = server } > ({ kind = client } | by(resource.service.name) | count() > 1)", Any),
    ("({ kind = server } >> { status = error }) || ({ kind = consumer } < { })", Hits),
    ("{ kind = server } > { kind = client } > { kind = client }", Any),
    // --- pipelines ---
    ("{ } | count() > 3", Hits),
    ("{ } | count() = 1", Hits),
    ("{ status = error } | count() >= 2", Hits),
    ("{ } | avg(duration) > 500ms", Hits),
    ("{ } | min(duration) < 10us", Hits),
    ("{ } | max(duration) >= 4s", Any),
    ("{ } | sum(span.retry.count) > 5", Hits),
    ("{ } | avg(span.sample.ratio) > 0.5123", Hits),
    ("{ } | max(span.http.status_code) = 503", Hits),
    ("{ } | min(span.http.status_code) = 200 | max(span.http.status_code) = 200", Hits),
    ("{ } | sum(duration) > 10s", Any),
    // The aggregate gate's shape: one filter with an exact row predicate, then an aggregate of duration or count.
    ("{ resource.service.name = \"frontend\" } | avg(duration) > 300ms", Hits),
    ("{ kind = server } | max(duration) > 1s", Hits),
    ("{ status = error && duration > 100ms } | count() > 1", Hits),
    ("{ name = \"GET /cart\" } | sum(duration) >= 500ms", Hits),
    ("{ kind = client || status = error } | min(duration) < 5ms", Hits),
    ("{ span.http.status_code = 200 } | count() >= 3", Hits),
    ("{ resource.service.name = \"checkout\" && kind != internal } | avg(duration) <= 50ms", Hits),
    ("{ } | by(resource.service.name) | count() > 3", Hits),
    ("{ } | by(span.http.method)", Hits),
    ("{ status = error } | by(resource.service.name)", Hits),
    ("{ } | by(kind) | count() = 1", Hits),
    ("{ } | by(status)", Hits),
    ("{ } | by(span.http.status_code) | avg(duration) > 100ms", Hits),
    ("{ } | by(span.cache.hit)", Hits),
    ("{ } | by(span.sample.ratio)", Hits),
    ("{ } | by(duration > 1s)", Hits),
    ("{ span.http.status_code >= 500 } | by(span.http.status_code / 100)", Hits),
    ("{ kind = producer } | by(duration)", Hits),
    ("{ } | by(resource.service.name) | by(kind)", Hits),
    ("{ } | by(resource.service.name) | coalesce()", Hits),
    ("{ status = error } | coalesce() | count() > 1", Hits),
    ("{ } | select(span.http.method, resource.service.name)", Hits),
    ("{ status = error } | select(statusMessage, span.http.route)", Hits),
    ("{ } | by(resource.service.name) | count() > 3 | coalesce()", Hits),
    ("{ resource.service.name = \"checkout\" } | by(span.http.route) | avg(span.http.status_code) >= 500", Hits),
    ("{ } | by(resource.service.name) | { status = error } > { }", Any),
    ("{ } | by(name) | count() > 2 | by(kind)", Hits),
    ("{ } | by(trace:rootService) | count() > 5", Hits),
    // --- Grafana query builder style ---
    ("{resource.service.name=\"checkout\" && name=\"GET /cart\" && status=error && duration>100ms}", Any),
    ("{resource.service.name=\"frontend\" && span.http.method=\"GET\"}", Hits),
    ("{resource.deployment.environment=\"prod\" && kind=server && duration>=1s}", Hits),
    ("{name=\"charge card\" && resource.service.name=\"payment\"}", Any),
    ("{resource.service.name=\"frontend\" && name=~\"GET.*\" && status=error && duration>10ms}", Hits),
    ("{resource.service.name=~\"check.*|cart\" && status!=ok}", Hits),
    ("{ status = error } with(most_recent=true)", Hits),
    // --- must match nothing ---
    ("{ name =~ \"GET\" }", Nothing),
    ("{ name =~ \"get.*\" }", Nothing),
    ("{ span.http.status_code = \"500\" }", Nothing),
    ("{ resource.k8s.pod.name = 103 }", Nothing),
    ("{ span.cache.hit = \"true\" }", Nothing),
    ("{ duration > 0 }", Nothing),
    ("{ span.http.method = \"PATCH\" }", Nothing),
    ("{ resource.service.name = \"nonexistent\" }", Nothing),
    ("{ duration > 10s }", Nothing),
    ("{ duration < 1us }", Nothing),
    ("{ span.http.status_code > 500 && span.http.status_code < 503 }", Nothing),
    ("{ span.tags = \"z\" }", Nothing),
    ("{ span.ports = \"80\" }", Nothing),
    ("{ span.sample.ratio > 1 }", Nothing),
    ("{ span.http.status_code % 0 = 0 }", Nothing),
    ("{ span.http.status_code / 0 > 0 }", Nothing),
    ("{ duration + 1 > 0s }", Nothing),
    ("{ } | count() > 100", Nothing),
    ("{ kind = server } | count() > 1000", Nothing),
    ("{ resource.service.name = \"payment\" } | avg(duration) > 1h", Nothing),
    ("{ status = error } | min(duration) > 1h", Nothing),
    ("{ } | avg(duration) > 1", Nothing),
    ("{ } | sum(span.http.method) > 0", Nothing),
    ("{ span.http.status_code = 999 } > { }", Nothing),
    ("{ } < { span:childCount = 0 }", Nothing),
    ("{ .nonexistent != nil }", Nothing),
    ("{ resource.region = \"ap-south\" }", Nothing),
    ("{ span:id = \"0000000000000000\" }", Nothing),
    ("{ status = error && status = ok }", Nothing),
    ("{ kind = server && kind = client }", Nothing),
    ("{ event:name = \"deploy\" }", Nothing),
    ("{ trace:duration > 1h }", Nothing),
    ("{ instrumentation:name = \"nope\" }", Nothing),
    ("{ span.payload = \"x\" }", Nothing),
    ("{ span.user.id = \"7\" }", Nothing),
    ("{ span.http.status_code = 999 } || { span.http.status_code = 998 }", Nothing),
    ("{ resource.service.name = \"auth\" } && { resource.service.name = \"nonexistent\" }", Nothing),
    ("{ span.tags != nil } && { span.tags = \"z\" }", Nothing),
    ("{ } | by(span.nonexistent)", Nothing),
];

/// The query table (>= 120 queries; each parses and validates).
pub fn queries() -> Vec<String> {
    QUERIES.iter().map(|(q, _)| q.to_string()).collect()
}

/// The queries of the table that must match nothing on any generated data.
pub fn queries_matching_nothing() -> Vec<String> {
    QUERIES.iter().filter(|(_, e)| *e == Expect::None).map(|(q, _)| q.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Evaluator
// ---------------------------------------------------------------------------------------------

pub struct NaiveSpanset {
    /// 16 lower hex digits each.
    pub span_ids: BTreeSet<String>,
    /// `(by(<e>), value)`; values rendered as plain text.
    pub by_attrs: Vec<(String, String)>,
}

pub struct NaiveTrace {
    /// 32 lower hex digits.
    pub trace_id: String,
    pub root_service: Option<String>,
    pub root_name: Option<String>,
    pub start_ns: u64,
    pub duration_ms: u64,
    pub spansets: Vec<NaiveSpanset>,
    /// service name -> (span count, error count).
    pub service_stats: BTreeMap<String, (u32, u32)>,
}

const NO_ROOT_SERVICE: &str = "<root span not yet received>";

/// One value of a field.
#[derive(Clone, Debug)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dur(i64),
    Status(i32),
    Kind(i32),
}

/// What a field gives on a span.
#[derive(Clone, Debug)]
enum Val {
    Absent,
    One(Scalar),
    /// Present but compares to nothing (bytes, key-value lists, empty values).
    Opaque,
    List(Vec<Scalar>),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn scalar_of_any(v: &AnyValue) -> Option<Scalar> {
    match v.value.as_ref()? {
        Value::StringValue(s) => Some(Scalar::Str(s.clone())),
        Value::IntValue(i) => Some(Scalar::Int(*i)),
        Value::DoubleValue(f) => Some(Scalar::Float(*f)),
        Value::BoolValue(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn val_of_kv(kv: &KeyValue) -> Val {
    let Some(any) = kv.value.as_ref() else { return Val::Opaque };
    match any.value.as_ref() {
        Some(Value::ArrayValue(a)) => Val::List(a.values.iter().filter_map(scalar_of_any).collect()),
        _ => match scalar_of_any(any) {
            Some(s) => Val::One(s),
            None => Val::Opaque,
        },
    }
}

/// The first attribute with this key.
fn lookup(attrs: &[KeyValue], key: &str) -> Option<Val> {
    attrs.iter().find(|kv| kv.key == key).map(val_of_kv)
}

/// `event.x` / `link.x`: the list over all items that have the key, arrays flattened.
fn lookup_many<'a>(items: impl Iterator<Item = &'a [KeyValue]>, key: &str) -> Option<Val> {
    let mut found = false;
    let mut out = vec![];
    for attrs in items {
        match lookup(attrs, key) {
            None => {}
            Some(v) => {
                found = true;
                match v {
                    Val::One(s) => out.push(s),
                    Val::List(l) => out.extend(l),
                    Val::Opaque | Val::Absent => {}
                }
            }
        }
    }
    if found { Some(Val::List(out)) } else { None }
}

fn service_name(r: &Resource) -> Option<String> {
    match lookup(&r.attributes, "service.name") {
        Some(Val::One(Scalar::Str(s))) => Some(s),
        _ => None,
    }
}

/// One trace, deduplicated, with its tree resolved the slow way.
struct Ctx<'a> {
    spans: Vec<&'a GenSpan>,
    parent: Vec<Option<usize>>,
    /// ancestors[i]: every span reachable by following parents from i (never i itself).
    ancestors: Vec<BTreeSet<usize>>,
    root: Option<usize>,
    trace_id: String,
    start: u64,
    end: u64,
}

impl<'a> Ctx<'a> {
    fn new(t: &'a GenTrace) -> Ctx<'a> {
        // Dedupe by (span ID, kind): first copy wins.
        let mut spans: Vec<&GenSpan> = vec![];
        for s in &t.spans {
            let dup = spans.iter().any(|o| o.span.span_id == s.span.span_id && o.span.kind == s.span.kind);
            if !dup {
                spans.push(s);
            }
        }
        // Parent: the span whose ID is the parent ID; with several, the lowest kind.
        let mut parent = vec![None; spans.len()];
        for i in 0..spans.len() {
            let pid = &spans[i].span.parent_span_id;
            if pid.is_empty() {
                continue;
            }
            let mut best: Option<usize> = None;
            for j in 0..spans.len() {
                if &spans[j].span.span_id == pid {
                    match best {
                        Some(b) if spans[b].span.kind <= spans[j].span.kind => {}
                        _ => best = Some(j),
                    }
                }
            }
            parent[i] = best;
        }
        let mut ancestors = vec![BTreeSet::new(); spans.len()];
        for i in 0..spans.len() {
            let mut visited = BTreeSet::new();
            visited.insert(i);
            let mut cur = parent[i];
            while let Some(p) = cur {
                if visited.contains(&p) {
                    break;
                }
                visited.insert(p);
                ancestors[i].insert(p);
                cur = parent[p];
            }
        }
        // Root: empty parent ID, earliest start, then lowest span ID.
        let mut root: Option<usize> = None;
        for i in 0..spans.len() {
            if !spans[i].span.parent_span_id.is_empty() {
                continue;
            }
            let better = match root {
                None => true,
                Some(r) => {
                    let a = (spans[i].span.start_time_unix_nano, &spans[i].span.span_id, spans[i].span.kind);
                    let b = (spans[r].span.start_time_unix_nano, &spans[r].span.span_id, spans[r].span.kind);
                    a < b
                }
            };
            if better {
                root = Some(i);
            }
        }
        let start = spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.span.end_time_unix_nano).max().unwrap_or(0);
        Ctx { spans, parent, ancestors, root, trace_id: hex(&t.id), start, end }
    }

    fn span(&self, i: usize) -> &Span {
        &self.spans[i].span
    }

    fn attribute(&self, i: usize, a: &ql::Attribute) -> Val {
        if a.parent {
            return Val::Absent;
        }
        let gs = self.spans[i];
        let span_v = || lookup(&gs.span.attributes, &a.name);
        let res_v = || lookup(&gs.resource.attributes, &a.name);
        let scope_v = || lookup(&gs.scope.attributes, &a.name);
        let event_v = || lookup_many(gs.span.events.iter().map(|e| &e.attributes[..]), &a.name);
        let link_v = || lookup_many(gs.span.links.iter().map(|l| &l.attributes[..]), &a.name);
        let v = match a.scope {
            ql::Scope::Span => span_v(),
            ql::Scope::Resource => res_v(),
            ql::Scope::Instrumentation => scope_v(),
            ql::Scope::Event => event_v(),
            ql::Scope::Link => link_v(),
            ql::Scope::Unscoped => span_v().or_else(res_v).or_else(link_v).or_else(event_v),
        };
        v.unwrap_or(Val::Absent)
    }

    fn intrinsic(&self, i: usize, x: ql::Intrinsic) -> Val {
        use ql::Intrinsic as I;
        let s = self.span(i);
        let one = Val::One;
        let str_or_absent = |v: &str| if v.is_empty() { Val::Absent } else { one(Scalar::Str(v.to_string())) };
        let list_or_absent = |l: Vec<Scalar>| if l.is_empty() { Val::Absent } else { Val::List(l) };
        match x {
            I::Duration => one(Scalar::Dur((s.end_time_unix_nano as i128 - s.start_time_unix_nano as i128) as i64)),
            I::Name => one(Scalar::Str(s.name.clone())),
            I::Status => one(Scalar::Status(s.status.as_ref().map(|st| st.code).unwrap_or(0))),
            I::StatusMessage => one(Scalar::Str(s.status.as_ref().map(|st| st.message.clone()).unwrap_or_default())),
            I::Kind => one(Scalar::Kind(s.kind)),
            I::ChildCount => {
                one(Scalar::Int((0..self.spans.len()).filter(|&j| self.parent[j] == Some(i)).count() as i64))
            }
            I::SpanId => one(Scalar::Str(hex(&s.span_id))),
            I::ParentId => {
                if s.parent_span_id.is_empty() {
                    Val::Absent
                } else {
                    one(Scalar::Str(hex(&s.parent_span_id)))
                }
            }
            I::TraceRootName => match self.root {
                Some(r) => one(Scalar::Str(self.span(r).name.clone())),
                None => Val::Absent,
            },
            I::TraceRootService => match self.root.and_then(|r| service_name(&self.spans[r].resource)) {
                Some(n) => one(Scalar::Str(n)),
                None => Val::Absent,
            },
            I::TraceDuration => one(Scalar::Dur(self.end.saturating_sub(self.start) as i64)),
            I::TraceId => one(Scalar::Str(self.trace_id.clone())),
            I::EventName => list_or_absent(s.events.iter().map(|e| Scalar::Str(e.name.clone())).collect()),
            I::EventTimeSinceStart => list_or_absent(
                s.events
                    .iter()
                    .map(|e| Scalar::Dur((e.time_unix_nano as i128 - s.start_time_unix_nano as i128) as i64))
                    .collect(),
            ),
            I::LinkTraceId => list_or_absent(s.links.iter().map(|l| Scalar::Str(hex(&l.trace_id))).collect()),
            I::LinkSpanId => list_or_absent(s.links.iter().map(|l| Scalar::Str(hex(&l.span_id))).collect()),
            I::InstrumentationName => str_or_absent(&self.spans[i].scope.name),
            I::InstrumentationVersion => str_or_absent(&self.spans[i].scope.version),
            I::Parent | I::NestedSetLeft | I::NestedSetRight | I::NestedSetParent => Val::Absent,
        }
    }

    // ----- field expressions -----

    fn eval(&self, i: usize, e: &ql::FieldExpr) -> Val {
        use ql::BinaryOp as B;
        match e {
            ql::FieldExpr::Literal(l) => literal(l),
            ql::FieldExpr::Field(ql::Field::Attribute(a)) => self.attribute(i, a),
            ql::FieldExpr::Field(ql::Field::Intrinsic(x)) => self.intrinsic(i, *x),
            ql::FieldExpr::Unary { op: ql::UnaryOp::Not, expr } => {
                Val::One(Scalar::Bool(!is_true(&self.eval(i, expr))))
            }
            ql::FieldExpr::Unary { op: ql::UnaryOp::Neg, expr } => match self.eval(i, expr) {
                Val::One(Scalar::Int(x)) => Val::One(Scalar::Int(x.wrapping_neg())),
                Val::One(Scalar::Float(x)) => Val::One(Scalar::Float(-x)),
                Val::One(Scalar::Dur(x)) => Val::One(Scalar::Dur(x.wrapping_neg())),
                _ => Val::Absent,
            },
            ql::FieldExpr::Binary { op, lhs, rhs } => match op {
                B::And => Val::One(Scalar::Bool(is_true(&self.eval(i, lhs)) && is_true(&self.eval(i, rhs)))),
                B::Or => Val::One(Scalar::Bool(is_true(&self.eval(i, lhs)) || is_true(&self.eval(i, rhs)))),
                B::Add | B::Sub | B::Mul | B::Div | B::Mod | B::Pow => {
                    arith(*op, &self.eval(i, lhs), &self.eval(i, rhs))
                }
                B::Eq | B::Neq | B::Lt | B::Lte | B::Gt | B::Gte | B::Regex | B::NotRegex => {
                    let is_nil = |x: &ql::FieldExpr| matches!(x, ql::FieldExpr::Literal(ql::Literal::Nil));
                    if is_nil(lhs) || is_nil(rhs) {
                        let other = if is_nil(lhs) { rhs } else { lhs };
                        let present = !matches!(self.eval(i, other), Val::Absent);
                        let r = match op {
                            B::Eq => !present,
                            B::Neq => present,
                            _ => false,
                        };
                        return Val::One(Scalar::Bool(r));
                    }
                    Val::One(Scalar::Bool(compare(*op, &self.eval(i, lhs), &self.eval(i, rhs))))
                }
            },
        }
    }

    fn keeps(&self, i: usize, f: &ql::SpansetFilter) -> bool {
        match &f.expr {
            None => true,
            Some(e) => is_true(&self.eval(i, e)),
        }
    }

    // ----- spansets -----

    fn run_pipeline(&self, stages: &[ql::Stage], input: Vec<SS>) -> Vec<SS> {
        let mut cur = input;
        for st in stages {
            let next: Vec<SS> = match st {
                ql::Stage::Spanset(ql::SpansetExpr::Pipeline(p)) => self.run_pipeline(&p.stages, cur),
                ql::Stage::Spanset(e) => cur.iter().flat_map(|s| self.eval_spanset(e, s)).collect(),
                ql::Stage::ScalarFilter(f) => cur.into_iter().filter(|s| self.scalar_filter(f, s)).collect(),
                ql::Stage::By(e) => cur.iter().flat_map(|s| self.by(e, s)).collect(),
                ql::Stage::Select(_) => cur,
                ql::Stage::Coalesce => {
                    if cur.is_empty() {
                        vec![]
                    } else {
                        let spans = cur.iter().flat_map(|s| s.spans.iter().copied()).collect();
                        vec![SS { spans, attrs: vec![] }]
                    }
                }
            };
            cur = next.into_iter().filter(|s| !s.spans.is_empty()).collect();
        }
        cur
    }

    fn eval_spanset(&self, e: &ql::SpansetExpr, input: &SS) -> Vec<SS> {
        match e {
            ql::SpansetExpr::Filter(f) => {
                let spans = input.spans.iter().copied().filter(|&i| self.keeps(i, f)).collect();
                vec![SS { spans, attrs: input.attrs.clone() }]
            }
            ql::SpansetExpr::Pipeline(p) => self.run_pipeline(&p.stages, vec![input.clone()]),
            ql::SpansetExpr::Op { op, lhs, rhs } => {
                let union = |l: Vec<SS>| -> BTreeSet<usize> { l.into_iter().flat_map(|s| s.spans).collect() };
                let a = union(self.eval_spanset(lhs, input));
                let b = union(self.eval_spanset(rhs, input));
                let spans = self.spanset_op(*op, &a, &b);
                vec![SS { spans, attrs: input.attrs.clone() }]
            }
        }
    }

    /// The structural relation between span `a` (left side) and span `b` (right side).
    fn related(&self, rel: Rel, a: usize, b: usize) -> bool {
        match rel {
            Rel::Child => self.parent[b] == Some(a),
            Rel::Parent => self.parent[a] == Some(b),
            Rel::Descendant => self.ancestors[b].contains(&a),
            Rel::Ancestor => self.ancestors[a].contains(&b),
            Rel::Sibling => a != b && self.parent[a].is_some() && self.parent[a] == self.parent[b],
        }
    }

    fn spanset_op(&self, op: ql::SpansetOp, a: &BTreeSet<usize>, b: &BTreeSet<usize>) -> BTreeSet<usize> {
        use ql::SpansetOp as O;
        let (rel, mode) = match op {
            O::And => {
                return if !a.is_empty() && !b.is_empty() { a.union(b).copied().collect() } else { BTreeSet::new() };
            }
            O::Union => return a.union(b).copied().collect(),
            O::Child => (Rel::Child, Mode::Plain),
            O::Parent => (Rel::Parent, Mode::Plain),
            O::Descendant => (Rel::Descendant, Mode::Plain),
            O::Ancestor => (Rel::Ancestor, Mode::Plain),
            O::Sibling => (Rel::Sibling, Mode::Plain),
            O::NotChild => (Rel::Child, Mode::Not),
            O::NotParent => (Rel::Parent, Mode::Not),
            O::NotDescendant => (Rel::Descendant, Mode::Not),
            O::NotAncestor => (Rel::Ancestor, Mode::Not),
            O::NotSibling => (Rel::Sibling, Mode::Not),
            O::UnionChild => (Rel::Child, Mode::Union),
            O::UnionParent => (Rel::Parent, Mode::Union),
            O::UnionDescendant => (Rel::Descendant, Mode::Union),
            O::UnionAncestor => (Rel::Ancestor, Mode::Union),
            O::UnionSibling => (Rel::Sibling, Mode::Union),
        };
        let mut out = BTreeSet::new();
        for &bi in b {
            let mut found = false;
            for &ai in a {
                if self.related(rel, ai, bi) {
                    found = true;
                    if mode == Mode::Union {
                        out.insert(ai);
                        out.insert(bi);
                    }
                }
            }
            match mode {
                Mode::Plain if found => {
                    out.insert(bi);
                }
                Mode::Not if !found => {
                    out.insert(bi);
                }
                _ => {}
            }
        }
        out
    }

    fn by(&self, e: &ql::FieldExpr, input: &SS) -> Vec<SS> {
        let key = format!("by({e})");
        // (type tag, rendered value) -> spans
        let mut groups: BTreeMap<(u8, String), BTreeSet<usize>> = BTreeMap::new();
        for &i in &input.spans {
            if let Val::One(v) = self.eval(i, e) {
                groups.entry((type_tag(&v), render(&v))).or_default().insert(i);
            }
        }
        groups
            .into_iter()
            .map(|((_, value), spans)| {
                let mut attrs = input.attrs.clone();
                match attrs.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => attrs.push((key.clone(), value)),
                }
                SS { spans, attrs }
            })
            .collect()
    }

    fn scalar_filter(&self, f: &ql::ScalarFilter, s: &SS) -> bool {
        let (Some(l), Some(r)) = (self.scalar(&f.lhs, s), self.scalar(&f.rhs, s)) else { return false };
        let ord = match (l, r) {
            (Agg::Int(x), Agg::Int(y)) => Some(x.cmp(&y)),
            (Agg::Dur(x), Agg::Dur(y)) => x.partial_cmp(&y),
            (Agg::Int(x), Agg::Float(y)) => (x as f64).partial_cmp(&y),
            (Agg::Float(x), Agg::Int(y)) => x.partial_cmp(&(y as f64)),
            (Agg::Float(x), Agg::Float(y)) => x.partial_cmp(&y),
            _ => None,
        };
        let Some(ord) = ord else { return false };
        match f.op {
            ql::CmpOp::Eq => ord == Ordering::Equal,
            ql::CmpOp::Neq => ord != Ordering::Equal,
            ql::CmpOp::Lt => ord == Ordering::Less,
            ql::CmpOp::Lte => ord != Ordering::Greater,
            ql::CmpOp::Gt => ord == Ordering::Greater,
            ql::CmpOp::Gte => ord != Ordering::Less,
        }
    }

    fn scalar(&self, e: &ql::ScalarExpr, s: &SS) -> Option<Agg> {
        match e {
            ql::ScalarExpr::Literal(ql::Literal::Int(x)) => Some(Agg::Int(*x)),
            ql::ScalarExpr::Literal(ql::Literal::Float(x)) => Some(Agg::Float(*x)),
            ql::ScalarExpr::Literal(ql::Literal::Duration(x)) => Some(Agg::Dur(*x as f64)),
            ql::ScalarExpr::Aggregate(a) => self.aggregate(a, s),
            _ => None,
        }
    }

    fn aggregate(&self, a: &ql::Aggregate, s: &SS) -> Option<Agg> {
        if a.op == ql::AggregateOp::Count {
            return Some(Agg::Int(s.spans.len() as i64));
        }
        let e = a.expr.as_ref()?;
        let mut ints = vec![];
        let mut floats = vec![];
        let mut durs = vec![];
        for &i in &s.spans {
            match self.eval(i, e) {
                Val::One(Scalar::Int(x)) => ints.push(x),
                Val::One(Scalar::Float(x)) => floats.push(x),
                Val::One(Scalar::Dur(x)) => durs.push(x),
                _ => {}
            }
        }
        let numbers = ints.len() + floats.len();
        if !durs.is_empty() {
            if numbers > 0 {
                return None;
            }
            return Some(match a.op {
                ql::AggregateOp::Min => Agg::Dur(*durs.iter().min()? as f64),
                ql::AggregateOp::Max => Agg::Dur(*durs.iter().max()? as f64),
                ql::AggregateOp::Sum => Agg::Dur(durs.iter().fold(0i64, |acc, x| acc.wrapping_add(*x)) as f64),
                ql::AggregateOp::Avg => {
                    Agg::Dur(durs.iter().map(|x| *x as i128).sum::<i128>() as f64 / durs.len() as f64)
                }
                ql::AggregateOp::Count => return None,
            });
        }
        if numbers == 0 {
            return None;
        }
        if floats.is_empty() {
            return Some(match a.op {
                ql::AggregateOp::Min => Agg::Int(*ints.iter().min()?),
                ql::AggregateOp::Max => Agg::Int(*ints.iter().max()?),
                ql::AggregateOp::Sum => Agg::Int(ints.iter().fold(0i64, |acc, x| acc.wrapping_add(*x))),
                ql::AggregateOp::Avg => {
                    Agg::Float(ints.iter().map(|x| *x as i128).sum::<i128>() as f64 / ints.len() as f64)
                }
                ql::AggregateOp::Count => return None,
            });
        }
        // Mixed ints and floats: everything as f64, in span order.
        let mut all = vec![];
        for &i in &s.spans {
            match self.eval(i, e) {
                Val::One(Scalar::Int(x)) => all.push(x as f64),
                Val::One(Scalar::Float(x)) => all.push(x),
                _ => {}
            }
        }
        Some(match a.op {
            ql::AggregateOp::Min => Agg::Float(all.iter().copied().fold(f64::INFINITY, f64::min)),
            ql::AggregateOp::Max => Agg::Float(all.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            ql::AggregateOp::Sum => Agg::Float(all.iter().sum()),
            ql::AggregateOp::Avg => Agg::Float(all.iter().sum::<f64>() / all.len() as f64),
            ql::AggregateOp::Count => return None,
        })
    }
}

/// A spanset during evaluation: span indexes into `Ctx::spans` plus by() attributes.
#[derive(Clone, Debug)]
struct SS {
    spans: BTreeSet<usize>,
    attrs: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Rel {
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Not,
    Union,
}

/// An aggregate or a scalar-filter literal.
#[derive(Clone, Copy, Debug)]
enum Agg {
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Dur(f64),
}

fn literal(l: &ql::Literal) -> Val {
    let s = match l {
        ql::Literal::String(s) => Scalar::Str(s.clone()),
        ql::Literal::Int(x) => Scalar::Int(*x),
        ql::Literal::Float(x) => Scalar::Float(*x),
        ql::Literal::Duration(x) => Scalar::Dur(*x),
        ql::Literal::Bool(b) => Scalar::Bool(*b),
        ql::Literal::Nil => return Val::Absent,
        ql::Literal::Status(st) => Scalar::Status(match st {
            ql::Status::Unset => 0,
            ql::Status::Ok => 1,
            ql::Status::Error => 2,
        }),
        ql::Literal::Kind(k) => Scalar::Kind(match k {
            ql::Kind::Unspecified => 0,
            ql::Kind::Internal => 1,
            ql::Kind::Server => 2,
            ql::Kind::Client => 3,
            ql::Kind::Producer => 4,
            ql::Kind::Consumer => 5,
        }),
    };
    Val::One(s)
}

fn is_true(v: &Val) -> bool {
    matches!(v, Val::One(Scalar::Bool(true)))
}

fn type_tag(s: &Scalar) -> u8 {
    match s {
        Scalar::Str(_) => 0,
        Scalar::Int(_) => 1,
        Scalar::Float(_) => 2,
        Scalar::Bool(_) => 3,
        Scalar::Dur(_) => 4,
        Scalar::Status(_) => 5,
        Scalar::Kind(_) => 6,
    }
}

/// Plain-text rendering of a by() value.
fn render(s: &Scalar) -> String {
    match s {
        Scalar::Str(x) => x.clone(),
        Scalar::Int(x) => x.to_string(),
        Scalar::Float(x) => x.to_string(),
        Scalar::Bool(x) => x.to_string(),
        // Durations print as Rust prints a `std::time::Duration` (`1.5s`, `250ms`), with a sign.
        Scalar::Dur(x) => {
            let sign = if *x < 0 { "-" } else { "" };
            format!("{sign}{:?}", std::time::Duration::from_nanos(x.unsigned_abs()))
        }
        Scalar::Status(c) => match c {
            0 => "unset".to_string(),
            1 => "ok".to_string(),
            2 => "error".to_string(),
            other => other.to_string(),
        },
        Scalar::Kind(k) => match k {
            0 => "unspecified".to_string(),
            1 => "internal".to_string(),
            2 => "server".to_string(),
            3 => "client".to_string(),
            4 => "producer".to_string(),
            5 => "consumer".to_string(),
            other => other.to_string(),
        },
    }
}

thread_local! {
    static REGEXES: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::new(HashMap::new());
}

fn regex_matches(pattern: &str, text: &str) -> bool {
    REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let re =
            cache.entry(pattern.to_string()).or_insert_with(|| regex::Regex::new(&format!("^(?:{pattern})$")).ok());
        re.as_ref().is_some_and(|re| re.is_match(text))
    })
}

/// Compares two single values (`op` is a comparison or regex operator).
fn compare_scalar(op: ql::BinaryOp, a: &Scalar, b: &Scalar) -> bool {
    use Scalar as S;
    use ql::BinaryOp as B;
    if matches!(op, B::Regex | B::NotRegex) {
        return match (a, b) {
            (S::Str(text), S::Str(pattern)) => regex_matches(pattern, text) == (op == B::Regex),
            _ => false,
        };
    }
    let ordered = matches!(op, B::Lt | B::Lte | B::Gt | B::Gte);
    let ord: Option<Ordering> = match (a, b) {
        (S::Int(x), S::Int(y)) => Some(x.cmp(y)),
        (S::Int(x), S::Float(y)) => (*x as f64).partial_cmp(y),
        (S::Float(x), S::Int(y)) => x.partial_cmp(&(*y as f64)),
        (S::Float(x), S::Float(y)) => x.partial_cmp(y),
        (S::Dur(x), S::Dur(y)) => Some(x.cmp(y)),
        (S::Str(x), S::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (S::Bool(x), S::Bool(y)) if !ordered => Some(x.cmp(y)),
        (S::Status(x), S::Status(y)) if !ordered => Some(x.cmp(y)),
        (S::Kind(x), S::Kind(y)) if !ordered => Some(x.cmp(y)),
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        B::Eq => ord == Ordering::Equal,
        B::Neq => ord != Ordering::Equal,
        B::Lt => ord == Ordering::Less,
        B::Lte => ord != Ordering::Greater,
        B::Gt => ord == Ordering::Greater,
        B::Gte => ord != Ordering::Less,
        _ => false,
    }
}

fn compare(op: ql::BinaryOp, l: &Val, r: &Val) -> bool {
    use ql::BinaryOp as B;
    let elems = |v: &Val| -> Vec<Scalar> {
        match v {
            Val::One(s) => vec![s.clone()],
            Val::List(l) => l.clone(),
            Val::Absent | Val::Opaque => vec![],
        }
    };
    let any_list = matches!(l, Val::List(_)) || matches!(r, Val::List(_));
    if !any_list {
        return match (l, r) {
            (Val::One(a), Val::One(b)) => compare_scalar(op, a, b),
            _ => false,
        };
    }
    let (ls, rs) = (elems(l), elems(r));
    let mut pairs = vec![];
    for a in &ls {
        for b in &rs {
            pairs.push((a, b));
        }
    }
    match op {
        // Some element must be comparable with the other side (same type class; strings for `!~`).
        B::Neq => {
            pairs.iter().any(|(a, b)| compare_scalar(B::Eq, a, b) || compare_scalar(B::Neq, a, b))
                && !pairs.iter().any(|(a, b)| compare_scalar(B::Eq, a, b))
        }
        B::NotRegex => {
            pairs.iter().any(|(a, b)| matches!((a, b), (Scalar::Str(_), Scalar::Str(_))))
                && !pairs.iter().any(|(a, b)| compare_scalar(B::Regex, a, b))
        }
        _ => pairs.iter().any(|(a, b)| compare_scalar(op, a, b)),
    }
}

fn arith(op: ql::BinaryOp, l: &Val, r: &Val) -> Val {
    use Scalar as S;
    use ql::BinaryOp as B;
    let (Val::One(a), Val::One(b)) = (l, r) else { return Val::Absent };
    let float = |x: f64| Val::One(S::Float(x));
    let dur_f = |x: f64| Val::One(S::Dur(x as i64));
    match (a, b) {
        (S::Int(x), S::Int(y)) => match op {
            B::Add => Val::One(S::Int(x.wrapping_add(*y))),
            B::Sub => Val::One(S::Int(x.wrapping_sub(*y))),
            B::Mul => Val::One(S::Int(x.wrapping_mul(*y))),
            B::Mod if *y == 0 => Val::Absent,
            B::Mod => Val::One(S::Int(x.wrapping_rem(*y))),
            B::Div if *y == 0 => Val::Absent,
            B::Div => float(*x as f64 / *y as f64),
            B::Pow => float((*x as f64).powf(*y as f64)),
            _ => Val::Absent,
        },
        (S::Dur(x), S::Dur(y)) => match op {
            B::Add => Val::One(S::Dur(x.wrapping_add(*y))),
            B::Sub => Val::One(S::Dur(x.wrapping_sub(*y))),
            _ => Val::Absent,
        },
        (S::Dur(x), S::Int(y)) => match op {
            B::Mul => Val::One(S::Dur(x.wrapping_mul(*y))),
            B::Div if *y == 0 => Val::Absent,
            B::Div => Val::One(S::Dur(x.wrapping_div(*y))),
            _ => Val::Absent,
        },
        (S::Int(x), S::Dur(y)) => match op {
            B::Mul => Val::One(S::Dur(x.wrapping_mul(*y))),
            _ => Val::Absent,
        },
        (S::Dur(x), S::Float(y)) => match op {
            B::Mul => dur_f(*x as f64 * y),
            B::Div if *y == 0.0 => Val::Absent,
            B::Div => dur_f(*x as f64 / y),
            _ => Val::Absent,
        },
        (S::Float(x), S::Dur(y)) => match op {
            B::Mul => dur_f(x * *y as f64),
            _ => Val::Absent,
        },
        (S::Int(_) | S::Float(_), S::Int(_) | S::Float(_)) => {
            let f = |s: &S| match s {
                S::Int(v) => *v as f64,
                S::Float(v) => *v,
                _ => 0.0,
            };
            let (x, y) = (f(a), f(b));
            match op {
                B::Add => float(x + y),
                B::Sub => float(x - y),
                B::Mul => float(x * y),
                B::Div if y == 0.0 => Val::Absent,
                B::Div => float(x / y),
                B::Mod if y == 0.0 => Val::Absent,
                B::Mod => float(x % y),
                B::Pow => float(x.powf(y)),
                _ => Val::Absent,
            }
        }
        _ => Val::Absent,
    }
}

/// All matching traces, newest first (start desc, trace id asc). Spansets sorted by their
/// earliest span (start, span ID).
pub fn evaluate(q: &ql::Query, traces: &[GenTrace]) -> Vec<NaiveTrace> {
    let ql::Body::Spans(pipeline) = &q.body else { return vec![] };
    let mut out = vec![];
    for t in traces {
        let cx = Ctx::new(t);
        if cx.spans.is_empty() {
            continue;
        }
        let all = SS { spans: (0..cx.spans.len()).collect(), attrs: vec![] };
        let result = cx.run_pipeline(&pipeline.stages, vec![all]);
        if result.is_empty() {
            continue;
        }
        let mut keyed: Vec<((u64, String), NaiveSpanset)> = result
            .into_iter()
            .map(|s| {
                let earliest = s
                    .spans
                    .iter()
                    .map(|&i| (cx.span(i).start_time_unix_nano, hex(&cx.span(i).span_id)))
                    .min()
                    .unwrap_or_default();
                let span_ids = s.spans.iter().map(|&i| hex(&cx.span(i).span_id)).collect();
                (earliest, NaiveSpanset { span_ids, by_attrs: s.attrs })
            })
            .collect();
        keyed.sort_by(|(ka, a), (kb, b)| {
            ka.cmp(kb).then_with(|| a.span_ids.cmp(&b.span_ids)).then_with(|| a.by_attrs.cmp(&b.by_attrs))
        });
        let mut service_stats: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for s in &cx.spans {
            if let Some(name) = service_name(&s.resource) {
                let e = service_stats.entry(name).or_default();
                e.0 += 1;
                if s.span.status.as_ref().is_some_and(|st| st.code == 2) {
                    e.1 += 1;
                }
            }
        }
        let (root_service, root_name) = match cx.root {
            Some(r) => (service_name(&cx.spans[r].resource), Some(cx.span(r).name.clone())),
            None => (Some(NO_ROOT_SERVICE.to_string()), None),
        };
        out.push(NaiveTrace {
            trace_id: cx.trace_id.clone(),
            root_service,
            root_name,
            start_ns: cx.start,
            duration_ms: cx.end.saturating_sub(cx.start) / 1_000_000,
            spansets: keyed.into_iter().map(|(_, s)| s).collect(),
            service_stats,
        });
    }
    out.sort_by(|a, b| b.start_ns.cmp(&a.start_ns).then_with(|| a.trace_id.cmp(&b.trace_id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    fn h(n: u64) -> String {
        format!("{n:016x}")
    }

    struct B(GenSpan);

    impl B {
        fn attr(mut self, k: &str, v: Value) -> Self {
            self.0.span.attributes.push(kv(k, v));
            self
        }
        fn empty_attr(mut self, k: &str) -> Self {
            self.0.span.attributes.push(KeyValue { key: k.into(), value: None, ..Default::default() });
            self
        }
        fn res(mut self, k: &str, v: Value) -> Self {
            self.0.resource.attributes.push(kv(k, v));
            self
        }
        fn kind(mut self, k: i32) -> Self {
            self.0.span.kind = k;
            self
        }
        fn status(mut self, code: i32, msg: &str) -> Self {
            self.0.span.status = Some(Status { code, message: msg.into() });
            self
        }
        fn event(mut self, name: &str, offset_ns: u64, attributes: Vec<KeyValue>) -> Self {
            let time_unix_nano = self.0.span.start_time_unix_nano + offset_ns;
            self.0.span.events.push(Event { time_unix_nano, name: name.into(), attributes, ..Default::default() });
            self
        }
        fn link(mut self, trace_id: &[u8], span_id: u64, attributes: Vec<KeyValue>) -> Self {
            self.0.span.links.push(Link {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_be_bytes().to_vec(),
                attributes,
                ..Default::default()
            });
            self
        }
        fn scope(mut self, name: &str, version: &str, attributes: Vec<KeyValue>) -> Self {
            self.0.scope =
                InstrumentationScope { name: name.into(), version: version.into(), attributes, ..Default::default() };
            self
        }
    }

    /// Span `id` under `parent` (0: none), starting `start_ms` after T0, lasting `dur_ms`.
    fn span(id: u64, parent: u64, svc: &str, name: &str, start_ms: u64, dur_ms: u64) -> B {
        let mut res = vec![];
        if !svc.is_empty() {
            res.push(kv("service.name", vs(svc)));
        }
        B(GenSpan {
            resource: Resource { attributes: res, ..Default::default() },
            scope: InstrumentationScope::default(),
            span: Span {
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: if parent == 0 { vec![] } else { parent.to_be_bytes().to_vec() },
                name: name.into(),
                kind: 1,
                start_time_unix_nano: T0 + start_ms * MS,
                end_time_unix_nano: T0 + (start_ms + dur_ms) * MS,
                status: Some(Status::default()),
                ..Default::default()
            },
        })
    }

    fn trace(n: u8, spans: Vec<B>) -> GenTrace {
        let id = [n; 16];
        let spans = spans
            .into_iter()
            .map(|b| {
                let mut g = b.0;
                g.span.trace_id = id.to_vec();
                g
            })
            .collect();
        GenTrace { id, spans }
    }

    fn run(q: &str, traces: &[GenTrace]) -> Vec<NaiveTrace> {
        let p = ql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        ql::validate(&p).unwrap_or_else(|e| panic!("{q}: {e}"));
        evaluate(&p, traces)
    }

    fn ids(s: &NaiveSpanset) -> Vec<u64> {
        s.span_ids.iter().map(|x| u64::from_str_radix(x, 16).unwrap()).collect()
    }

    /// The spansets of the one trace, as span numbers.
    fn sets(q: &str, t: &GenTrace) -> Vec<Vec<u64>> {
        let r = run(q, std::slice::from_ref(t));
        assert!(r.len() <= 1);
        r.first().map(|t| t.spansets.iter().map(ids).collect()).unwrap_or_default()
    }

    /// The union of the matched spans, sorted.
    fn hits(q: &str, t: &GenTrace) -> Vec<u64> {
        let mut v: Vec<u64> = sets(q, t).into_iter().flatten().collect();
        v.sort();
        v.dedup();
        v
    }

    fn check(t: &GenTrace, cases: &[(&str, &[u64])]) {
        let mut bad = vec![];
        for (q, want) in cases {
            let got = hits(q, t);
            if got != *want {
                bad.push(format!("{q}: want {want:?}, got {got:?}"));
            }
        }
        assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    }

    /// 1 (frontend, root) > 2 (checkout) > 4 (payment, error) > 6; 2 > 5 (cart); 1 > 3 (checkout);
    /// 7 and 8 are orphans under the unknown 99 (shipping).
    fn tree() -> GenTrace {
        trace(
            1,
            vec![
                span(6, 4, "payment", "INSERT payments", 30, 10).kind(3),
                span(1, 0, "frontend", "GET /cart", 0, 1000).kind(2),
                span(2, 1, "checkout", "POST /checkout", 10, 500).kind(3),
                span(3, 1, "checkout", "SELECT orders", 600, 50).kind(3),
                span(4, 2, "payment", "charge card", 20, 100).kind(1).status(2, "declined"),
                span(5, 2, "cart", "redis GET", 200, 5).kind(3),
                span(7, 99, "shipping", "consume order", 700, 5).kind(5),
                span(8, 99, "shipping", "consume order", 710, 5).kind(5),
            ],
        )
    }

    #[test]
    fn structural_operators() {
        let t = tree();
        check(
            &t,
            &[
                ("{ name = \"GET /cart\" } > { }", &[2, 3]),
                ("{ } > { kind = internal }", &[4]),
                ("{ resource.service.name = \"frontend\" } >> { }", &[2, 3, 4, 5, 6]),
                ("{ status = error } < { }", &[2]),
                ("{ status = error } << { }", &[1, 2]),
                ("{ name = \"charge card\" } ~ { }", &[5]),
                ("{ } ~ { }", &[2, 3, 4, 5]),
                ("{ } !~ { }", &[1, 6, 7, 8]),
                ("{ } !> { }", &[1, 7, 8]),
                ("{ } !< { }", &[3, 5, 6, 7, 8]),
                ("{ } !>> { }", &[1, 7, 8]),
                ("{ } !<< { }", &[3, 5, 6, 7, 8]),
                ("{ status = error } !<< { }", &[3, 4, 5, 6, 7, 8]),
                ("{ kind = internal } !> { kind = client }", &[2, 3, 5]),
                ("{ kind = internal } &> { }", &[4, 6]),
                ("{ kind = internal } &< { }", &[2, 4]),
                ("{ name = \"POST /checkout\" } &>> { }", &[2, 4, 5, 6]),
                ("{ name = \"INSERT payments\" } &<< { }", &[1, 2, 4, 6]),
                ("{ name = \"charge card\" } &~ { }", &[4, 5]),
                ("{ name = \"nope\" } !> { kind = consumer }", &[7, 8]),
                ("{ name = \"nope\" } > { }", &[]),
                ("{ name = \"nope\" } &> { }", &[]),
                ("{ } >> { } >> { } >> { }", &[6]),
                ("{ name = \"GET /cart\" } > { } > { }", &[4, 5]),
                ("{ name = \"GET /cart\" } && { status = error }", &[1, 4]),
                ("{ name = \"GET /cart\" } && { name = \"nope\" }", &[]),
                ("{ name = \"GET /cart\" } || { name = \"nope\" }", &[1]),
                ("({ kind = client } | count() > 3) && { kind = server }", &[1, 2, 3, 5, 6]),
                ("({ kind = client } | count() > 4) && { kind = server }", &[]),
                ("{ kind = server } > ({ kind = client } | by(resource.service.name) | count() > 1)", &[2, 3]),
                ("{ span:childCount = 2 }", &[1, 2]),
                ("{ span:childCount = 0 }", &[3, 5, 6, 7, 8]),
                ("{ span:parentID = \"0000000000000063\" }", &[7, 8]),
                ("{ span:parentID != nil }", &[2, 3, 4, 5, 6, 7, 8]),
                ("{ span:id = \"0000000000000004\" }", &[4]),
                ("{ trace:rootName = \"GET /cart\" && trace:rootService = \"frontend\" }", &[1, 2, 3, 4, 5, 6, 7, 8]),
                ("{ trace:duration = 1s && traceDuration > 999ms }", &[1, 2, 3, 4, 5, 6, 7, 8]),
                (
                    "{ trace:id = \"01010101010101010101010101010101\" && rootName = \"GET /cart\" }",
                    &[1, 2, 3, 4, 5, 6, 7, 8],
                ),
            ],
        );
        let r = run("{ }", std::slice::from_ref(&t));
        let nt = &r[0];
        assert_eq!(nt.trace_id, "01010101010101010101010101010101");
        assert_eq!(nt.root_service.as_deref(), Some("frontend"));
        assert_eq!(nt.root_name.as_deref(), Some("GET /cart"));
        assert_eq!(nt.start_ns, T0);
        assert_eq!(nt.duration_ms, 1000);
        let stats: Vec<(&str, (u32, u32))> = nt.service_stats.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            stats,
            vec![
                ("cart", (1, 0)),
                ("checkout", (2, 0)),
                ("frontend", (1, 0)),
                ("payment", (2, 1)),
                ("shipping", (2, 0))
            ]
        );
    }

    /// No root (10 points at an unknown parent); attributes of every type; a duplicate span; two
    /// spans sharing the ID 11 (server and client).
    fn attrs_trace() -> GenTrace {
        trace(
            2,
            vec![
                span(10, 77, "auth", "authorize", 0, 2)
                    .res("region", vs("us-east"))
                    .attr("http.status_code", Value::IntValue(500))
                    .attr("tags", varr(vec![vs("a"), vs("b")]))
                    .attr("ports", varr(vec![Value::IntValue(80), Value::IntValue(443)]))
                    .attr("cache.hit", Value::BoolValue(true))
                    .attr("sample.ratio", Value::DoubleValue(0.25))
                    .attr("region", vs("ap-south"))
                    .event(
                        "exception",
                        MS,
                        vec![kv("exception.type", vs("IOError")), kv("keys", varr(vec![vs("k1"), vs("k2")]))],
                    )
                    .event("retry", 0, vec![kv("attempt", Value::IntValue(2)), kv("component", vs("memcached"))])
                    .link(&[7; 16], 0x55, vec![kv("relation", vs("follows_from")), kv("weight", Value::IntValue(3))])
                    .scope("lib", "", vec![kv("library.language", vs("go"))]),
                span(11, 10, "auth", "GET /x", 1, 1)
                    .kind(2)
                    .res("region", vs("us-east"))
                    .attr("http.status_code", vs("500"))
                    .attr("retry.count", Value::IntValue(3))
                    .attr("payload", Value::BytesValue(vec![1]))
                    .empty_attr("empty")
                    .attr("http.method", vs("GET"))
                    .attr("http.method", vs("PATCH")),
                span(11, 10, "auth", "DUP", 1, 1).kind(2),
                span(11, 10, "auth", "GET /x client", 1, 1).kind(3).res("region", vs("us-east")),
                span(14, 11, "auth", "child", 1, 1).res("region", vs("us-east")).attr("component", vs("grpc")).event(
                    "cache.miss",
                    0,
                    vec![kv("component", vs("memcached"))],
                ),
            ],
        )
    }

    #[test]
    fn attributes_and_values() {
        let t = attrs_trace();
        let all: &[u64] = &[10, 11, 14];
        check(
            &t,
            &[
                // dedupe: the "DUP" copy of (11, server) is dropped
                ("{ name = \"DUP\" }", &[]),
                ("{ name = \"GET /x client\" }", &[11]),
                // unscoped precedence: span, resource, link, event
                ("{ .region = \"ap-south\" }", &[10]),
                ("{ .region = \"us-east\" }", &[11, 14]),
                ("{ resource.region = \"us-east\" }", all),
                ("{ .exception.type = \"IOError\" }", &[10]),
                ("{ .relation = \"follows_from\" }", &[10]),
                ("{ .component = \"memcached\" }", &[10]),
                ("{ .component = \"grpc\" }", &[14]),
                ("{ event.component = \"memcached\" }", &[10, 14]),
                ("{ span.component = \"memcached\" }", &[]),
                // arrays
                ("{ span.tags = \"a\" }", &[10]),
                ("{ span.tags != \"a\" }", &[]),
                ("{ span.tags != \"c\" }", &[10]),
                ("{ span.tags =~ \"b\" }", &[10]),
                ("{ span.tags !~ \"a|b\" }", &[]),
                ("{ span.tags !~ \"c\" }", &[10]),
                ("{ span.tags > \"a\" }", &[10]),
                ("{ span.ports > 400 }", &[10]),
                ("{ span.ports < 80 }", &[]),
                ("{ span.ports != 5 }", &[10]),
                ("{ span.ports = \"80\" }", &[]),
                // No element is a string: nothing is comparable, so `!=` is false too.
                ("{ span.ports != \"80\" }", &[]),
                ("{ event.keys = \"k2\" }", &[10]),
                ("{ event.attempt = 2 }", &[10]),
                ("{ event.attempt != 2 }", &[]),
                // nil and opaque values
                ("{ span.payload != nil }", &[11]),
                // 11 is also the ID of the client copy, which has no payload
                ("{ span.payload = nil }", &[10, 11, 14]),
                ("{ span.payload = \"x\" }", &[]),
                ("{ span.payload != \"x\" }", &[]),
                ("{ span.empty != nil }", &[11]),
                ("{ span.nothing = nil }", all),
                ("{ .nothing != nil }", &[]),
                // type mismatch (never true, not even !=)
                ("{ span.http.status_code = 500 }", &[10]),
                ("{ span.http.status_code = \"500\" }", &[11]),
                ("{ span.http.status_code != 500 }", &[]),
                ("{ span.http.status_code >= 500 }", &[10]),
                ("{ span.cache.hit = \"true\" }", &[]),
                ("{ duration > 0 }", &[]),
                // the first attribute with a key wins
                ("{ span.http.method = \"PATCH\" }", &[]),
                ("{ span.http.method = \"GET\" }", &[11]),
                // regexes are anchored
                ("{ name =~ \"auth\" }", &[]),
                ("{ name =~ \"auth.*\" }", &[10]),
                ("{ name !~ \"auth\" }", all),
                ("{ name =~ \"GET /x|child\" }", &[11, 14]),
                ("{ span.retry.count =~ \"3\" }", &[]),
                ("{ span.retry.count !~ \"3\" }", &[]),
                // numbers
                ("{ span.sample.ratio = 0.25 }", &[10]),
                ("{ span.sample.ratio < 1 }", &[10]),
                ("{ span.retry.count = 3.0 }", &[11]),
                // arithmetic
                ("{ span.http.status_code + 1 = 501 }", &[10]),
                ("{ span.http.status_code / 1000 = 0.5 }", &[10]),
                ("{ span.retry.count / 2 = 1.5 }", &[11]),
                ("{ span.retry.count ^ 2 = 9 }", &[11]),
                ("{ span.retry.count % 2 = 1 }", &[11]),
                ("{ span.retry.count % 0 = 0 }", &[]),
                ("{ span.retry.count / 0 = 0 }", &[]),
                ("{ -span.retry.count = -3 }", &[11]),
                ("{ span.sample.ratio * 4 = 1 }", &[10]),
                ("{ duration * 2 = 4ms }", &[10]),
                ("{ 2 * duration = 4ms }", &[10]),
                ("{ duration * 1.5 = 3ms }", &[10]),
                ("{ duration / 2 = 1ms }", &[10]),
                ("{ duration / 0 = 1ms }", &[]),
                ("{ duration + 1 > 0s }", &[]),
                ("{ duration - 1ms = 1ms }", &[10]),
                ("{ -duration < 0s }", all),
                ("{ span.http.status_code + span.retry.count > 0 }", &[]),
                // bools and logic
                ("{ span.cache.hit }", &[10]),
                ("{ !span.cache.hit }", &[11, 14]),
                ("{ span.cache.hit != false }", &[10]),
                ("{ span.retry.count }", &[]),
                ("{ !(span.http.status_code = 500) }", &[11, 14]),
                ("{ span.retry.count || name = \"authorize\" }", &[10]),
                ("{ true }", all),
                ("{ false }", &[]),
                ("{ 1 = 1 }", all),
                // events, links, instrumentation
                ("{ event:name = \"retry\" }", &[10]),
                ("{ event:name != \"exception\" }", &[14]),
                ("{ event:name != \"cache.miss\" }", &[10]),
                ("{ event:name != nil }", &[10, 14]),
                ("{ event:timeSinceStart = 1ms }", &[10]),
                ("{ event:timeSinceStart < 1us }", &[10, 14]),
                ("{ link:traceID = \"07070707070707070707070707070707\" }", &[10]),
                ("{ link:spanID = \"0000000000000055\" }", &[10]),
                ("{ link:spanID != \"0000000000000055\" }", &[]),
                ("{ link.weight >= 3 }", &[10]),
                ("{ instrumentation:name = \"lib\" }", &[10]),
                ("{ instrumentation:version != nil }", &[]),
                ("{ !(instrumentation:name != nil) }", &[11, 14]),
                ("{ instrumentation.library.language = \"go\" }", &[10]),
                // no root span
                ("{ trace:rootService != nil }", &[]),
                ("{ trace:rootName != nil }", &[]),
                ("{ !(trace:rootService != nil) }", all),
                ("{ nestedSetLeft > 0 }", &[]),
                // parents with a duplicated span ID: the lowest kind (server) is the parent
                ("{ kind = server } > { }", &[14]),
                ("{ kind = client } > { }", &[]),
                ("{ kind = client } ~ { kind = server }", &[11]),
                ("{ span:childCount = 1 }", &[11]),
                ("{ span:childCount = 0 && kind = client }", &[11]),
                ("{ span:childCount = 2 }", &[10]),
                ("{ } !> { }", &[10]),
            ],
        );
        let r = run("{ }", std::slice::from_ref(&t));
        assert_eq!(r[0].root_service.as_deref(), Some("<root span not yet received>"));
        assert_eq!(r[0].root_name, None);
        assert_eq!(r[0].service_stats.get("auth"), Some(&(4, 0)));
    }

    /// 21 (frontend) > 22, 23 (checkout) ; 22 > 24, 25 (payment, errors) ; 23 > 26 (cart).
    fn pipeline_trace() -> GenTrace {
        trace(
            3,
            vec![
                span(21, 0, "frontend", "GET /cart", 0, 100)
                    .kind(2)
                    .attr("http.status_code", Value::IntValue(200))
                    .attr("retry.count", Value::IntValue(1)),
                span(22, 21, "checkout", "POST /checkout", 1, 50)
                    .kind(3)
                    .attr("http.status_code", Value::IntValue(500))
                    .attr("retry.count", Value::IntValue(2))
                    .attr("sample.ratio", Value::DoubleValue(0.5)),
                span(23, 21, "checkout", "POST /checkout", 2, 30)
                    .kind(3)
                    .attr("http.status_code", Value::IntValue(500))
                    .attr("sample.ratio", Value::DoubleValue(1.0)),
                span(24, 22, "payment", "charge card", 3, 10).status(2, "").attr("retry.count", Value::IntValue(3)),
                span(25, 22, "payment", "charge card", 4, 20).status(2, "x"),
                span(26, 23, "cart", "redis GET", 5, 1).kind(3).attr("cache.hit", Value::BoolValue(false)),
            ],
        )
    }

    type BySets = Vec<(Vec<u64>, Vec<(String, String)>)>;

    fn by_sets(q: &str, t: &GenTrace) -> BySets {
        let r = run(q, std::slice::from_ref(t));
        r.first().map(|t| t.spansets.iter().map(|s| (ids(s), s.by_attrs.clone())).collect()).unwrap_or_default()
    }

    fn a(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn pipelines() {
        let t = pipeline_trace();
        let all: &[u64] = &[21, 22, 23, 24, 25, 26];
        check(
            &t,
            &[
                ("{ } | count() = 6", all),
                ("{ } | count() > 6", &[]),
                ("{ } | count() > 5.5", all),
                ("{ } | count() > 1ms", &[]),
                ("{ status = error } | count() = 2", &[24, 25]),
                ("{ } | avg(duration) > 35ms", all),
                ("{ } | avg(duration) > 36ms", &[]),
                ("{ } | avg(duration) > 1", &[]),
                ("{ } | sum(span.retry.count) = 6", all),
                ("{ } | min(span.retry.count) = 1", all),
                ("{ } | max(duration) = 100ms", all),
                ("{ } | min(duration) = 1ms", all),
                ("{ } | sum(duration) = 211ms", all),
                ("{ } | avg(span.sample.ratio) = 0.75", all),
                ("{ } | sum(span.sample.ratio) = 1.5", all),
                ("{ } | avg(span.http.status_code) = 400", all),
                ("{ } | max(span.http.status_code) = 500.0", all),
                ("{ } | sum(resource.service.name) > 0", &[]),
                ("{ } | sum(span.nothing) >= 0", &[]),
                ("{ } | avg(span.retry.count + 1) = 3", all),
                ("{ status = error } | coalesce() | count() = 2", &[24, 25]),
                ("{ } | select(span.http.method)", all),
                ("({ } | by(resource.service.name) | count() > 1) && { kind = server }", &[21, 22, 23, 24, 25]),
                ("{ } | by(resource.service.name) | { kind = internal } > { }", &[]),
                ("{ } | by(resource.service.name) | { } !> { }", all),
            ],
        );
        let svc = "by(resource.service.name)";
        assert_eq!(
            by_sets("{ } | by(resource.service.name)", &t),
            vec![
                (vec![21], vec![a(svc, "frontend")]),
                (vec![22, 23], vec![a(svc, "checkout")]),
                (vec![24, 25], vec![a(svc, "payment")]),
                (vec![26], vec![a(svc, "cart")]),
            ]
        );
        assert_eq!(
            by_sets("{ } | by(resource.service.name) | count() > 1", &t),
            vec![(vec![22, 23], vec![a(svc, "checkout")]), (vec![24, 25], vec![a(svc, "payment")])]
        );
        assert_eq!(
            by_sets("{ } | by(resource.service.name) | count() > 1 | coalesce()", &t),
            vec![(vec![22, 23, 24, 25], vec![])]
        );
        assert_eq!(
            by_sets("{ } | by(resource.service.name) | { } !> { }", &t)[1],
            (vec![22, 23], vec![a(svc, "checkout")])
        );
        let code = "by(span.http.status_code)";
        let kind = "by(span:kind)";
        assert_eq!(
            by_sets("{ } | by(span.http.status_code) | by(kind)", &t),
            vec![
                (vec![21], vec![a(code, "200"), a(kind, "server")]),
                (vec![22, 23], vec![a(code, "500"), a(kind, "client")]),
            ]
        );
        assert_eq!(by_sets("{ } | by(kind) | by(kind)", &t)[0], (vec![21], vec![a(kind, "server")]));
        let ratio = "by(span.sample.ratio)";
        assert_eq!(
            by_sets("{ } | by(span.sample.ratio)", &t),
            vec![(vec![22], vec![a(ratio, "0.5")]), (vec![23], vec![a(ratio, "1")])]
        );
        assert_eq!(by_sets("{ } | by(span.cache.hit)", &t), vec![(vec![26], vec![a("by(span.cache.hit)", "false")])]);
        assert_eq!(by_sets("{ } | by(duration)", &t)[0], (vec![21], vec![a("by(span:duration)", "100ms")]));
        assert_eq!(
            by_sets("{ } | by(status)", &t),
            vec![
                (vec![21, 22, 23, 26], vec![a("by(span:status)", "unset")]),
                (vec![24, 25], vec![a("by(span:status)", "error")]),
            ]
        );
        assert_eq!(
            by_sets("{ } | by(span.retry.count * 2 > 3)", &t),
            vec![
                // a comparison with an absent side is false, not absent
                (vec![21, 23, 25, 26], vec![a("by(span.retry.count * 2 > 3)", "false")]),
                (vec![22, 24], vec![a("by(span.retry.count * 2 > 3)", "true")]),
            ]
        );
        assert_eq!(
            by_sets("{ } | by(span.http.status_code / 1000)", &t)[1],
            (vec![22, 23], vec![a("by(span.http.status_code / 1000)", "0.5")])
        );
        assert!(by_sets("{ } | by(span.nothing)", &t).is_empty());
    }

    #[test]
    fn by_keys_use_the_printed_expression() {
        for e in ["resource.service.name", "kind", "duration", "span.retry.count * 2 > 3", ".a + 1"] {
            let q = ql::parse(&format!("{{ }} | by({e})")).unwrap();
            let ql::Body::Spans(p) = &q.body else { panic!() };
            let ql::Stage::By(fe) = &p.stages[1] else { panic!() };
            let printed = format!("by({fe})");
            assert!(printed.starts_with("by("), "{printed}");
        }
    }

    #[test]
    fn trace_order_and_metrics_queries() {
        let mut older = trace(5, vec![span(1, 0, "a", "x", 0, 1)]);
        let mut tie_a = trace(4, vec![span(1, 0, "a", "x", 5, 1)]);
        let tie_b = trace(3, vec![span(1, 0, "a", "x", 5, 1)]);
        // Same start for tie_a and tie_b: trace ID ascending.
        older.spans[0].span.start_time_unix_nano -= 1;
        tie_a.spans[0].span.end_time_unix_nano += 3 * MS;
        let traces = vec![older, tie_a, tie_b];
        let r = run("{ }", &traces);
        let order: Vec<&str> = r.iter().map(|t| &t.trace_id[..2]).collect();
        assert_eq!(order, vec!["03", "04", "05"]);
        assert_eq!(r[1].duration_ms, 4);
        assert!(run("{ } | rate()", &traces).is_empty());
        assert!(run("{ name = \"nope\" }", &traces).is_empty());
    }

    #[test]
    fn spansets_ordered_by_earliest_span() {
        let t = trace(
            6,
            vec![
                span(9, 0, "z", "r", 0, 100),
                span(3, 9, "b", "x", 50, 1),
                span(2, 9, "a", "x", 20, 1),
                span(8, 9, "a", "x", 60, 1),
                span(1, 9, "c", "x", 20, 1),
            ],
        );
        let got: Vec<Vec<u64>> =
            by_sets("{ name = \"x\" } | by(resource.service.name)", &t).into_iter().map(|(s, _)| s).collect();
        assert_eq!(got, vec![vec![1], vec![2, 8], vec![3]]);
    }

    // ----- generator and query table -----

    fn depth(spans: &[GenSpan], i: usize) -> usize {
        let mut d = 0;
        let mut cur = i;
        while let Some(p) = spans.iter().position(|s| s.span.span_id == spans[cur].span.parent_span_id) {
            d += 1;
            cur = p;
            if d > 100 {
                break;
            }
        }
        d
    }

    #[test]
    fn generator_is_deterministic_and_well_formed() {
        let a = generate(7, 300, T0);
        let b = generate(7, 300, T0);
        let c = generate(8, 300, T0);
        assert_eq!(a.len(), 300);
        let same = |x: &[GenTrace], y: &[GenTrace]| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| {
                    p.id == q.id
                        && p.spans.len() == q.spans.len()
                        && p.spans
                            .iter()
                            .zip(&q.spans)
                            .all(|(s, t)| s.span == t.span && s.resource == t.resource && s.scope == t.scope)
                })
        };
        assert!(same(&a, &b));
        assert!(!same(&a, &c));

        let mut starts = BTreeSet::new();
        let mut trace_ids = BTreeSet::new();
        let (mut orphans, mut two_roots, mut no_root, mut deep, mut wide) = (0, 0, 0, 0, 0);
        let mut kinds = BTreeSet::new();
        let mut codes = BTreeSet::new();
        let (mut min_dur, mut max_dur) = (u64::MAX, 0);
        for (i, t) in a.iter().enumerate() {
            assert_ne!(t.id, [0; 16]);
            assert!(trace_ids.insert(t.id));
            assert!(!t.spans.is_empty() && t.spans.len() <= 40, "{} spans", t.spans.len());
            let ids: BTreeSet<&Vec<u8>> = t.spans.iter().map(|s| &s.span.span_id).collect();
            assert_eq!(ids.len(), t.spans.len(), "span IDs unique");
            assert!(t.spans.iter().all(|s| s.span.span_id.len() == 8 && s.span.span_id != [0; 8]));
            assert!(t.spans.iter().all(|s| s.span.trace_id == t.id));
            let start = t.spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap();
            assert!(start >= T0 + i as u64 * 1_000_000_007);
            assert!(start < T0 + i as u64 * 1_000_000_007 + 900_000_000);
            assert!(starts.insert(start));
            let roots = t.spans.iter().filter(|s| s.span.parent_span_id.is_empty()).count();
            let unknown = t
                .spans
                .iter()
                .filter(|s| !s.span.parent_span_id.is_empty() && !ids.contains(&s.span.parent_span_id))
                .count();
            two_roots += (roots >= 2) as u32;
            no_root += (roots == 0) as u32;
            orphans += (roots >= 1 && unknown > 0) as u32;
            let max_depth = (0..t.spans.len()).map(|j| depth(&t.spans, j)).max().unwrap();
            assert!(max_depth <= 8, "depth {max_depth}");
            deep += (max_depth >= 6) as u32;
            let max_children = t
                .spans
                .iter()
                .map(|p| t.spans.iter().filter(|s| s.span.parent_span_id == p.span.span_id).count())
                .max()
                .unwrap();
            wide += (max_children >= 8) as u32;
            for s in &t.spans {
                kinds.insert(s.span.kind);
                codes.insert(s.span.status.as_ref().unwrap().code);
                let d = s.span.end_time_unix_nano - s.span.start_time_unix_nano;
                min_dur = min_dur.min(d);
                max_dur = max_dur.max(d);
                assert!((1_000..=5_000_000_000).contains(&d));
            }
        }
        assert!(
            orphans >= 5 && two_roots >= 5 && no_root >= 2 && deep >= 10 && wide >= 10,
            "{orphans} {two_roots} {no_root} {deep} {wide}"
        );
        assert_eq!(kinds.len(), 6);
        assert_eq!(codes.len(), 3);
        assert!(min_dur < 10_000 && max_dur > 3_000_000_000, "{min_dur} {max_dur}");
    }

    #[test]
    fn query_table() {
        let qs = queries();
        assert!(qs.len() >= 120, "{} queries", qs.len());
        assert!(queries_matching_nothing().len() >= 15);
        let mut seen = BTreeSet::new();
        for q in &qs {
            assert!(seen.insert(q), "duplicate {q}");
            let p = ql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            ql::validate(&p).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn query_table_hits_generated_data() {
        let mut bad = vec![];
        for seed in [1u64, 2, 3, 42] {
            let traces = generate(seed, 240, T0);
            for (q, expect) in QUERIES {
                let p = ql::parse(q).unwrap();
                let n = evaluate(&p, &traces).len();
                match expect {
                    Expect::Some if n == 0 => bad.push(format!("seed {seed}: expected matches: {q}")),
                    Expect::None if n > 0 => bad.push(format!("seed {seed}: expected no match, got {n}: {q}")),
                    _ => {}
                }
                if seed == 1 && std::env::var("NAIVE_STATS").is_ok() {
                    println!("{n:4} {expect:?} {q}");
                }
            }
        }
        assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics support: the spans a pipeline yields, with plain values of the fields a metrics query reads
// ---------------------------------------------------------------------------------------------

/// A field's first value, as a metrics label or sample sees it. Statuses and kinds are their names.
#[derive(Clone, Debug, PartialEq)]
pub enum Plain {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Dur(i64),
}

fn plain(v: &Val) -> Option<Plain> {
    let first = match v {
        Val::One(s) => s.clone(),
        Val::List(l) => l.first()?.clone(),
        Val::Absent | Val::Opaque => return None,
    };
    Some(match first {
        Scalar::Str(s) => Plain::Str(s),
        Scalar::Int(i) => Plain::Int(i),
        Scalar::Float(f) => Plain::Float(f),
        Scalar::Bool(b) => Plain::Bool(b),
        Scalar::Dur(d) => Plain::Dur(d),
        Scalar::Status(c) => Plain::Str(["unset", "ok", "error"].get(c as usize).copied().unwrap_or("unset").into()),
        Scalar::Kind(k) => Plain::Str(
            ["unspecified", "internal", "server", "client", "producer", "consumer"]
                .get(k as usize)
                .copied()
                .unwrap_or("unspecified")
                .into(),
        ),
    })
}

/// One span a metrics pipeline counts.
pub struct MatchedSpan {
    /// 32 lower hex digits.
    pub trace_id: String,
    pub start_ns: u64,
    /// The first value of each asked field, in order.
    pub fields: Vec<Option<Plain>>,
    /// Whether the span passes `select` (compare()'s selection filter), when one is given.
    pub selected: bool,
    /// `name`, `status`, `kind`, then `resource.<key>` and `span.<key>` (first value per key, scalars only).
    pub attrs: Vec<(String, Plain)>,
}

/// Every span `pipeline` yields in each trace (a span in several spansets once), trace by trace.
pub fn matched_spans(
    pipeline: &ql::Pipeline,
    traces: &[GenTrace],
    fields: &[ql::Field],
    select: Option<&ql::SpansetFilter>,
) -> Vec<MatchedSpan> {
    let mut out = vec![];
    for t in traces {
        let cx = Ctx::new(t);
        if cx.spans.is_empty() {
            continue;
        }
        let all = SS { spans: (0..cx.spans.len()).collect(), attrs: vec![] };
        let mut spans: BTreeSet<usize> = BTreeSet::new();
        for s in cx.run_pipeline(&pipeline.stages, vec![all]) {
            spans.extend(s.spans.iter().copied());
        }
        for i in spans {
            let value = |f: &ql::Field| match f {
                ql::Field::Attribute(a) => cx.attribute(i, a),
                ql::Field::Intrinsic(x) => cx.intrinsic(i, *x),
            };
            let mut attrs: Vec<(String, Plain)> = vec![];
            for (name, x) in
                [("name", ql::Intrinsic::Name), ("status", ql::Intrinsic::Status), ("kind", ql::Intrinsic::Kind)]
            {
                if let Some(v) = plain(&cx.intrinsic(i, x)) {
                    attrs.push((name.to_string(), v));
                }
            }
            for (prefix, list) in [("resource.", &cx.spans[i].resource.attributes), ("span.", &cx.span(i).attributes)] {
                for kv in list.iter() {
                    let key = format!("{prefix}{}", kv.key);
                    if attrs.iter().any(|(k, _)| *k == key) {
                        continue;
                    }
                    // The first value of the key decides; a key whose first value is not a scalar is left out.
                    if let Some(v) = plain(&lookup(list, &kv.key).unwrap_or(Val::Absent)) {
                        attrs.push((key, v));
                    }
                }
            }
            out.push(MatchedSpan {
                trace_id: cx.trace_id.clone(),
                start_ns: cx.span(i).start_time_unix_nano,
                fields: fields.iter().map(|f| plain(&value(f))).collect(),
                selected: select.is_some_and(|f| cx.keeps(i, f)),
                attrs,
            });
        }
    }
    out
}
