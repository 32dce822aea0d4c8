//! Synthetic microservice traces for benchmarks: a web shop where a frontend calls cart, checkout, payment,
//! inventory, a cache and a database. Typed attributes, events, errors and links, in the proportions of real
//! OpenTelemetry instrumentation. Deterministic for a given seed.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

/// splitmix64: tiny, fast, deterministic; quality is irrelevant here.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for c in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        out
    }
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::StringValue(v.to_string())) })
}
fn i(v: i64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::IntValue(v)) })
}
fn d(v: f64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::DoubleValue(v)) })
}
fn b(v: bool) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::BoolValue(v)) })
}
fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue { key: k.to_string(), value: v, ..Default::default() }
}

const SERVICES: [&str; 7] = ["frontend", "cart", "checkout", "payment", "inventory", "redis", "postgres"];
const ROUTES: [&str; 6] = ["/", "/cart", "/checkout", "/product/{id}", "/api/recommendations", "/login"];

fn resource(svc: usize, pod: u64) -> Resource {
    let name = SERVICES[svc];
    Resource {
        attributes: vec![
            kv("service.name", s(name)),
            kv("service.version", s("1.14.2")),
            kv("service.namespace", s("shop")),
            kv("deployment.environment", s("production")),
            kv("host.name", s(&format!("node-{}", pod % 12))),
            kv("k8s.namespace.name", s("shop-prod")),
            kv("k8s.pod.name", s(&format!("{name}-7f9c8d-{pod:05}"))),
            kv("k8s.deployment.name", s(name)),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("telemetry.sdk.language", s(if svc.is_multiple_of(2) { "go" } else { "java" })),
            kv("telemetry.sdk.version", s("1.28.0")),
            kv("process.runtime.name", s(if svc.is_multiple_of(2) { "go" } else { "OpenJDK Runtime Environment" })),
        ],
        dropped_attributes_count: 0,
        ..Default::default()
    }
}

struct Builder<'a> {
    rng: &'a mut Rng,
    trace_id: [u8; 16],
    spans: Vec<(usize, Span)>,
    now: u64,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        svc: usize,
        parent: Option<[u8; 8]>,
        name: &str,
        kind: i32,
        start: u64,
        dur: u64,
        attrs: Vec<KeyValue>,
        error: bool,
    ) -> [u8; 8] {
        let id = self.rng.bytes::<8>();
        let mut sp = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: name.to_string(),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes: attrs,
            flags: 0x101,
            status: Some(Status { code: if error { 2 } else { 0 }, message: String::new() }),
            ..Default::default()
        };
        if error {
            sp.status = Some(Status { code: 2, message: "upstream request failed".into() });
            sp.events.push(span::Event {
                time_unix_nano: start + dur / 2,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("java.net.SocketTimeoutException")),
                    kv("exception.message", s("Read timed out after 2000 ms")),
                    kv(
                        "exception.stacktrace",
                        s("java.net.SocketTimeoutException: Read timed out\n\tat java.net.SocketInputStream.read(SocketInputStream.java:150)\n\tat shop.Client.call(Client.java:88)"),
                    ),
                ],
                dropped_attributes_count: 0,
            });
        }
        self.spans.push((svc, sp));
        id
    }

    /// A call from `from` to `to`: a client span in the caller and a server span in the callee.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        from: usize,
        to: usize,
        parent: [u8; 8],
        start: u64,
        dur: u64,
        route: &str,
        error: bool,
    ) -> [u8; 8] {
        let status = if error { 503 } else { 200 };
        let client = self.span(
            from,
            Some(parent),
            &format!("POST {route}"),
            3,
            start,
            dur,
            vec![
                kv("http.request.method", s("POST")),
                kv("server.address", s(SERVICES[to])),
                kv("server.port", i(8080)),
                kv("url.full", s(&format!("http://{}:8080{route}", SERVICES[to]))),
                kv("http.response.status_code", i(status)),
            ],
            error,
        );
        self.span(
            to,
            Some(client),
            &format!("POST {route}"),
            2,
            start + dur / 20,
            dur - dur / 10,
            vec![
                kv("http.request.method", s("POST")),
                kv("http.route", s(route)),
                kv("http.response.status_code", i(status)),
                kv("network.protocol.version", s("1.1")),
                kv("user_agent.original", s("okhttp/4.12.0")),
            ],
            error,
        )
    }
}

/// One trace: returns its ID and spans tagged with the service index that produced them.
pub fn trace(rng: &mut Rng, now: u64) -> ([u8; 16], Vec<(usize, Span)>) {
    let trace_id = rng.bytes::<16>();
    let error = rng.chance(3);
    let mut bd = Builder { rng, trace_id, spans: Vec::with_capacity(10), now };
    let start = bd.now - bd.rng.below(60_000_000_000);
    let route = ROUTES[bd.rng.below(ROUTES.len() as u64) as usize];
    let total = 20_000_000 + bd.rng.below(400_000_000);
    let user = format!("user-{}", bd.rng.below(50_000));
    let client_addr = format!("10.{}.{}.{}", bd.rng.below(255), bd.rng.below(255), bd.rng.below(255));
    let root = bd.span(
        0,
        None,
        &format!("GET {route}"),
        2,
        start,
        total,
        vec![
            kv("http.request.method", s("GET")),
            kv("http.route", s(route)),
            kv("http.response.status_code", i(if error { 500 } else { 200 })),
            kv("url.scheme", s("https")),
            kv("client.address", s(&client_addr)),
            kv("enduser.id", s(&user)),
            kv("session.sampled", b(true)),
        ],
        error,
    );
    // Cache lookup.
    let hit = bd.rng.chance(70);
    let redis_start = start + 1_000_000;
    let redis_dur = 300_000 + bd.rng.below(700_000);
    let cache = bd.span(
        0,
        Some(root),
        "GET",
        3,
        redis_start,
        redis_dur,
        vec![kv("db.system", s("redis")), kv("db.operation", s("GET")), kv("cache.hit", b(hit))],
        false,
    );
    let _ = cache;
    // Downstream calls: cart, then checkout -> payment (+ inventory) for checkout routes.
    let cart_start = start + 3_000_000;
    let cart_dur = total / 5;
    let cart = bd.call(0, 1, root, cart_start, cart_dur, "/cart/items", false);
    let items = bd.rng.below(8) as i64;
    let q = bd.span(
        6,
        Some(cart),
        "SELECT shop.cart_items",
        3,
        cart_start + cart_dur / 5,
        cart_dur / 2,
        vec![
            kv("db.system", s("postgresql")),
            kv("db.name", s("shop")),
            kv("db.statement", s("SELECT id, sku, qty, price FROM cart_items WHERE cart_id = $1")),
            kv("db.rows_returned", i(items)),
        ],
        false,
    );
    let _ = q;
    if route == "/checkout" || bd.rng.chance(40) {
        let co_start = cart_start + cart_dur + 1_000_000;
        let co_dur = total / 2;
        let co = bd.call(0, 2, root, co_start, co_dur, "/checkout/place-order", error);
        let amount = (bd.rng.below(50_000) as f64) / 100.0;
        let pay = bd.call(2, 3, co, co_start + co_dur / 10, co_dur / 3, "/payment/charge", error);
        let mut last = bd.spans.len() - 1;
        bd.spans[last].1.attributes.push(kv("payment.amount", d(amount)));
        bd.spans[last].1.attributes.push(kv("payment.currency", s("EUR")));
        let _ = pay;
        let inv = bd.call(2, 4, co, co_start + co_dur / 2, co_dur / 4, "/inventory/reserve", false);
        last = bd.spans.len() - 1;
        bd.spans[last].1.attributes.push(kv(
            "inventory.skus",
            Some(AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: (0..items.max(1))
                        .map(|n| AnyValue { value: Some(Value::StringValue(format!("SKU-{n:04}"))) })
                        .collect(),
                })),
            }),
        ));
        // The order event is consumed asynchronously elsewhere: a link ties it back.
        let (link_trace, link_span) = (bd.rng.bytes::<16>(), bd.rng.bytes::<8>());
        bd.spans[last].1.links.push(span::Link {
            trace_id: link_trace.to_vec(),
            span_id: link_span.to_vec(),
            trace_state: String::new(),
            attributes: vec![kv("messaging.system", s("kafka"))],
            dropped_attributes_count: 0,
            flags: 0x101,
        });
        let _ = inv;
    }
    (trace_id, bd.spans)
}

/// Batches `traces` traces into export requests of about `per_request` traces, grouped by service the way a
/// Collector's batch processor sends them. Returns the requests and the trace IDs.
pub fn requests(seed: u64, traces: usize, per_request: usize) -> (Vec<ExportTraceServiceRequest>, Vec<[u8; 16]>) {
    let mut rng = Rng::new(seed);
    let now = 1_763_900_000_000_000_000u64;
    let mut ids = Vec::with_capacity(traces);
    let mut reqs = Vec::new();
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut in_req = 0;
    let pod = rng.below(1000);
    let flush = |by_service: &mut Vec<Vec<Span>>, reqs: &mut Vec<ExportTraceServiceRequest>| {
        let resource_spans = by_service
            .iter_mut()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(svc, v)| ResourceSpans {
                resource: Some(resource(svc, pod + svc as u64)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.instrumentation.http".into(),
                        version: "2.3.0".into(),
                        ..Default::default()
                    }),
                    spans: std::mem::take(v),
                    schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            })
            .collect();
        reqs.push(ExportTraceServiceRequest { resource_spans });
    };
    for _ in 0..traces {
        let (id, spans) = trace(&mut rng, now);
        ids.push(id);
        for (svc, sp) in spans {
            by_service[svc].push(sp);
        }
        in_req += 1;
        if in_req == per_request {
            flush(&mut by_service, &mut reqs);
            in_req = 0;
        }
    }
    if in_req > 0 {
        flush(&mut by_service, &mut reqs);
    }
    (reqs, ids)
}
