//! Metrics from traces, computed at ingest for every tenant: span metrics (calls and latency per service, span
//! name, kind and status) and the service graph (requests, failures and latencies per edge between services, from
//! client/server and producer/consumer span pairs, with virtual nodes for uninstrumented peers and databases).
//! Names, labels and buckets are Tempo's metrics-generator's, so Grafana's service graph and RED panels work on a
//! stock Prometheus that scrapes `/metrics` (Tempo pushes them by remote write instead; a scrape needs no setup).
//!
//! Fed by `ingest` with the spans of each request once it is acknowledged; read by `api` when `/metrics` is
//! scraped. Cardinality is bounded per tenant (series beyond the limit are counted, not created); pending edges
//! are bounded too. Series live as long as the process (counters restart at 0 with it, which `rate()` handles).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::{Origin, SpanRecord, Tenant, TraceId, service_name};
use crate::telemetry::Metrics;

/// Tempo's span-metrics latency buckets (seconds): 2 ms doubling 14 times.
const SPAN_BUCKETS: [f64; 14] =
    [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];
/// Tempo's service-graph latency buckets (seconds): 100 ms doubling 8 times.
const EDGE_BUCKETS: [f64; 8] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];
/// Span attributes naming an uninstrumented peer, first found wins (Tempo's `peer_attributes`).
const PEER_ATTRIBUTES: [&str; 4] = ["peer.service", "db.name", "db.system", "db.system.name"];
/// Attributes that make a client span a database call (Tempo's `database_name_attributes`).
const DATABASE_ATTRIBUTES: [&str; 4] = ["db.namespace", "db.name", "db.system", "db.system.name"];
/// Longest label value kept (longer ones are cut).
const MAX_LABEL_LEN: usize = 1024;
/// The value a label takes once it has too many distinct values.
pub const OVERFLOW: &str = "__overflow__";
/// How often unpaired edges are checked for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// Most span-metrics series, and most service-graph edges, per tenant.
    pub max_series: usize,
    /// Most distinct values of one label (service, span name, client, server) per tenant; later values become
    /// [`OVERFLOW`], so counts stay whole while series stay bounded.
    pub max_label_values: usize,
    /// How long half an edge waits for its other side before it expires (Tempo's `wait`).
    pub wait: Duration,
    /// Most unpaired edges held per tenant (Tempo's `max_items`).
    pub max_pending: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            max_series: 10_000,
            max_label_values: 2_000,
            wait: Duration::from_secs(10),
            max_pending: 10_000,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLabels {
    tenant: String,
    service: String,
    span_name: String,
    span_kind: &'static str,
    status_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    tenant: String,
    client: String,
    server: String,
    /// Empty (and so absent for Prometheus) for a plain client/server edge.
    connection_type: &'static str,
}

#[derive(Clone)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// What ingest keeps of a span for the generator until the request is acknowledged: its span-metrics series
/// (looked up already, so nothing is copied) and what the service graph pairs on.
pub struct Observed {
    series: Option<(Counter, Histogram)>,
    trace: TraceId,
    /// Span and parent IDs as numbers (0: none).
    span_id: u64,
    parent: u64,
    origin: Arc<Origin>,
    kind: i32,
    status: i32,
    seconds: f64,
    /// The first peer attribute (an uninstrumented peer's name).
    peer: Option<String>,
    /// For a database call: the server node's name.
    database: Option<String>,
}

/// Half of an edge waiting for the other.
struct Pending {
    created: Instant,
    client: Option<(String, f64)>,
    server: Option<(String, f64)>,
    failed: bool,
    messaging: bool,
    peer: Option<String>,
}

struct SpanSeries {
    labels: SpanLabels,
    calls: Counter,
    latency: Histogram,
}

struct EdgeSeries {
    labels: EdgeLabels,
    total: Counter,
    /// Created at the edge's first failure, as Tempo does (no zero series for edges that never fail).
    failed: Option<Counter>,
    server: Histogram,
    client: Histogram,
}

/// Maps on the ingest path hash with aHash (SipHash was a third of the generator's cost per span).
type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Default)]
struct TenantState {
    /// Span-metrics series by a hash of their labels (collisions resolved by comparing labels).
    spans: FastMap<u64, Vec<SpanSeries>>,
    span_series: usize,
    edges: FastMap<(String, String, &'static str), EdgeSeries>,
    pending: FastMap<(TraceId, u64), Pending>,
    /// Distinct values seen per label (for `max_label_values`).
    values: FastMap<&'static str, std::collections::HashSet<String>>,
    last_sweep: Option<Instant>,
}

/// Span metrics and service graph for every tenant.
pub struct Generator {
    cfg: GeneratorConfig,
    registry: Registry,
    calls: Family<SpanLabels, Counter>,
    latency: Family<SpanLabels, Histogram, Buckets>,
    requests: Family<EdgeLabels, Counter>,
    failed: Family<EdgeLabels, Counter>,
    server_seconds: Family<EdgeLabels, Histogram, Buckets>,
    client_seconds: Family<EdgeLabels, Histogram, Buckets>,
    tenants: Mutex<HashMap<Tenant, TenantState>>,
    metrics: Arc<Metrics>,
    hasher: ahash::RandomState,
}

use crate::model::{SPAN_KIND_NAMES as KINDS, STATUS_CODE_NAMES as STATUSES};

fn cut(s: &str) -> String {
    if s.len() <= MAX_LABEL_LEN {
        return s.to_string();
    }
    let mut end = MAX_LABEL_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

/// The peer a span names (first of [`PEER_ATTRIBUTES`]) and, for a client or producer span that is a database
/// call, the database's node name (peer.service, server.address, network.peer.address[:port], else the database).
fn peers(rec: &SpanRecord) -> (Option<String>, Option<String>) {
    let s = &rec.span;
    let peer = PEER_ATTRIBUTES.iter().find_map(|k| string_attr(&s.attributes, k)).map(cut);
    if !matches!(s.kind, 3 | 4) {
        return (peer, None);
    }
    let resource = &rec.origin.resource.attributes;
    let db_name =
        DATABASE_ATTRIBUTES.iter().find_map(|k| string_attr(&s.attributes, k).or_else(|| string_attr(resource, k)));
    let Some(db_name) = db_name else { return (peer, None) };
    let address = string_attr(&s.attributes, "network.peer.address").map(|a| {
        match s.attributes.iter().find(|kv| kv.key == "network.peer.port").and_then(|kv| kv.value.as_ref()) {
            Some(v) => match &v.value {
                Some(Value::IntValue(p)) => format!("{a}:{p}"),
                Some(Value::StringValue(p)) => format!("{a}:{p}"),
                _ => a.to_string(),
            },
            None => a.to_string(),
        }
    });
    let server = string_attr(&s.attributes, "peer.service")
        .or_else(|| string_attr(&s.attributes, "server.address"))
        .map(str::to_string)
        .or(address)
        .unwrap_or_else(|| db_name.to_string());
    (peer, Some(cut(&server)))
}

/// An 8-byte span ID as a number (0 for none or a malformed one: validation refuses those).
fn id64(id: &[u8]) -> u64 {
    <[u8; 8]>::try_from(id).map_or(0, u64::from_be_bytes)
}

impl Generator {
    pub fn new(cfg: GeneratorConfig, metrics: Arc<Metrics>) -> Self {
        let mut registry = Registry::default();
        let calls = Family::<SpanLabels, Counter>::default();
        let latency = Family::new_with_constructor(Buckets(&SPAN_BUCKETS));
        let requests = Family::<EdgeLabels, Counter>::default();
        let failed = Family::<EdgeLabels, Counter>::default();
        let server_seconds = Family::new_with_constructor(Buckets(&EDGE_BUCKETS));
        let client_seconds = Family::new_with_constructor(Buckets(&EDGE_BUCKETS));
        registry.register(
            "traces_spanmetrics_calls",
            "Spans received, per service, name, kind and status",
            calls.clone(),
        );
        registry.register("traces_spanmetrics_latency", "Span durations in seconds", latency.clone());
        registry.register("traces_service_graph_request", "Requests between two services", requests.clone());
        registry.register(
            "traces_service_graph_request_failed",
            "Failed requests between two services",
            failed.clone(),
        );
        registry.register(
            "traces_service_graph_request_server_seconds",
            "Request durations seen by the server, in seconds",
            server_seconds.clone(),
        );
        registry.register(
            "traces_service_graph_request_client_seconds",
            "Request durations seen by the client, in seconds",
            client_seconds.clone(),
        );
        Generator {
            cfg,
            registry,
            calls,
            latency,
            requests,
            failed,
            server_seconds,
            client_seconds,
            tenants: Mutex::new(HashMap::new()),
            metrics,
            hasher: ahash::RandomState::new(),
        }
    }

    /// What the generator needs of a request's spans, taken before they go to the WAL (they are moved there).
    /// Span-metrics series are found (or created) now; they are counted by [`Generator::record`] once the spans
    /// are acknowledged.
    pub fn prepare(&self, tenant: &Tenant, spans: &[(TraceId, SpanRecord)]) -> Vec<Observed> {
        let mut tenants = self.tenants.lock();
        let st = tenants.entry(tenant.clone()).or_default();
        spans
            .iter()
            .map(|(trace, rec)| {
                let service = service_name(&rec.origin.resource).unwrap_or("");
                let series = self.span_series(st, tenant, service, &rec.span);
                let s = &rec.span;
                let ns = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
                // Only the kinds the service graph pairs read attributes (internal spans are most spans).
                let (peer, database) = if matches!(s.kind, 2..=5) { peers(rec) } else { (None, None) };
                Observed {
                    series,
                    trace: *trace,
                    span_id: id64(&s.span_id),
                    parent: id64(&s.parent_span_id),
                    origin: rec.origin.clone(),
                    kind: s.kind,
                    status: s.status.as_ref().map_or(0, |st| st.code),
                    seconds: ns as f64 / 1e9,
                    peer,
                    database,
                }
            })
            .collect()
    }

    /// Records acknowledged spans.
    pub fn record(&self, tenant: &Tenant, spans: Vec<Observed>) {
        let mut tenants = self.tenants.lock();
        let st = tenants.entry(tenant.clone()).or_default();
        for o in spans {
            if let Some((calls, latency)) = &o.series {
                calls.inc();
                latency.observe(o.seconds);
            }
            let origin = o.origin.clone();
            let service = service_name(&origin.resource).unwrap_or("");
            if !service.is_empty() {
                self.service_graph(st, tenant, service, o);
            }
        }
        self.sweep(st, tenant, Instant::now(), false);
    }

    /// The span-metrics series of a span, created on first use; `None` past the series limit.
    fn span_series(
        &self,
        st: &mut TenantState,
        tenant: &Tenant,
        service: &str,
        span: &opentelemetry_proto::tonic::trace::v1::Span,
    ) -> Option<(Counter, Histogram)> {
        let status = span.status.as_ref().map_or(0, |s| s.code);
        let kind_label = KINDS.get(span.kind as usize).copied().unwrap_or(KINDS[0]);
        let status_label = STATUSES.get(status as usize).copied().unwrap_or(STATUSES[0]);
        let h = self.hasher.hash_one((service, span.name.as_str(), span.kind, status));
        let list = st.spans.entry(h).or_default();
        let found = list.iter().find(|s| {
            s.labels.service == service
                && s.labels.span_name == span.name
                && s.labels.span_kind == kind_label
                && s.labels.status_code == status_label
        });
        if let Some(s) = found {
            return Some((s.calls.clone(), s.latency.clone()));
        }
        // A new series: labels with too many values already fold into the overflow value (and its series).
        let service = self.admit(st, "service", service);
        let name = self.admit(st, "span_name", &span.name);
        if service == OVERFLOW || name == OVERFLOW {
            let h = self.hasher.hash_one((service.as_str(), name.as_str(), span.kind, status));
            let found = st.spans.get(&h).and_then(|l| {
                l.iter().find(|s| {
                    s.labels.service == service
                        && s.labels.span_name == name
                        && s.labels.span_kind == kind_label
                        && s.labels.status_code == status_label
                })
            });
            if let Some(s) = found {
                return Some((s.calls.clone(), s.latency.clone()));
            }
        }
        if st.span_series >= self.cfg.max_series {
            self.dropped("span_metrics_series_limit");
            return None;
        }
        let h = self.hasher.hash_one((service.as_str(), name.as_str(), span.kind, status));
        let labels = SpanLabels {
            tenant: tenant.as_str().to_string(),
            service,
            span_name: name,
            span_kind: kind_label,
            status_code: status_label,
        };
        let calls = self.calls.get_or_create(&labels).clone();
        let latency = self.latency.get_or_create(&labels).clone();
        st.span_series += 1;
        st.spans.entry(h).or_default().push(SpanSeries { labels, calls: calls.clone(), latency: latency.clone() });
        Some((calls, latency))
    }

    /// The value a label may take: itself (cut to the longest kept length) while the label has room for
    /// another distinct value, else [`OVERFLOW`].
    fn admit(&self, st: &mut TenantState, label: &'static str, value: &str) -> String {
        let value = cut(value);
        let seen = st.values.entry(label).or_default();
        if seen.contains(&value) {
            return value;
        }
        if seen.len() >= self.cfg.max_label_values {
            self.dropped("label_values_limit");
            return OVERFLOW.to_string();
        }
        seen.insert(value.clone());
        value
    }

    fn service_graph(&self, st: &mut TenantState, tenant: &Tenant, service: &str, o: Observed) {
        let failed = o.status == 2;
        match o.kind {
            // Client or producer: keyed by its own span ID; a database call is an edge on its own.
            3 | 4 => {
                if let Some(db) = o.database {
                    self.edge(st, tenant, service, &db, "database", failed, Some(o.seconds), Some(o.seconds));
                    return;
                }
                let messaging = o.kind == 4;
                self.half(st, tenant, (o.trace, o.span_id), |p| {
                    p.client = Some((service.to_string(), o.seconds));
                    p.failed |= failed;
                    p.messaging |= messaging;
                    p.peer = o.peer.clone();
                });
            }
            // Server or consumer: keyed by its parent's span ID. A root has no client to wait for: its caller is a
            // user (or the peer it names).
            2 | 5 => {
                if o.parent == 0 {
                    let client = o.peer.as_deref().unwrap_or("user");
                    self.edge(st, tenant, client, service, "virtual_node", failed, Some(o.seconds), None);
                    return;
                }
                let messaging = o.kind == 5;
                self.half(st, tenant, (o.trace, o.parent), |p| {
                    p.server = Some((service.to_string(), o.seconds));
                    p.failed |= failed;
                    p.messaging |= messaging;
                });
            }
            _ => {}
        }
    }

    /// Adds one side to a pending edge, recording the edge once both sides are known.
    fn half(&self, st: &mut TenantState, tenant: &Tenant, key: (TraceId, u64), set: impl FnOnce(&mut Pending)) {
        if !st.pending.contains_key(&key) && st.pending.len() >= self.cfg.max_pending {
            self.dropped("service_graph_pending_limit");
            return;
        }
        let p = st.pending.entry(key).or_insert_with(|| Pending {
            created: Instant::now(),
            client: None,
            server: None,
            failed: false,
            messaging: false,
            peer: None,
        });
        set(p);
        if p.client.is_some()
            && p.server.is_some()
            && let Some(p) = st.pending.remove(&key)
            && let (Some((client, cs)), Some((server, ss))) = (p.client, p.server)
        {
            let ty = if p.messaging { "messaging_system" } else { "" };
            self.edge(st, tenant, &client, &server, ty, p.failed, Some(ss), Some(cs));
        }
    }

    /// Records one request on an edge (a missing side's latency counts as 0, as Tempo's virtual nodes do).
    #[allow(clippy::too_many_arguments)]
    fn edge(
        &self,
        st: &mut TenantState,
        tenant: &Tenant,
        client: &str,
        server: &str,
        ty: &'static str,
        failed: bool,
        server_seconds: Option<f64>,
        client_seconds: Option<f64>,
    ) {
        let mut key = (client.to_string(), server.to_string(), ty);
        if !st.edges.contains_key(&key) {
            key = (self.admit(st, "client", client), self.admit(st, "server", server), ty);
        }
        if !st.edges.contains_key(&key) {
            if st.edges.len() >= self.cfg.max_series {
                self.dropped("service_graph_series_limit");
                return;
            }
            let labels = EdgeLabels {
                tenant: tenant.as_str().to_string(),
                client: key.0.clone(),
                server: key.1.clone(),
                connection_type: ty,
            };
            let series = EdgeSeries {
                total: self.requests.get_or_create(&labels).clone(),
                failed: None,
                server: self.server_seconds.get_or_create(&labels).clone(),
                client: self.client_seconds.get_or_create(&labels).clone(),
                labels,
            };
            st.edges.insert(key.clone(), series);
        }
        let Some(e) = st.edges.get_mut(&key) else { return };
        e.total.inc();
        if failed {
            e.failed.get_or_insert_with(|| self.failed.get_or_create(&e.labels).clone()).inc();
        }
        e.server.observe(server_seconds.unwrap_or(0.0));
        e.client.observe(client_seconds.unwrap_or(0.0));
    }

    /// Expires edges that waited longer than `wait`: a client that named its peer gets a virtual server node;
    /// anything else unpaired is dropped (as Tempo does).
    fn sweep(&self, st: &mut TenantState, tenant: &Tenant, now: Instant, force: bool) {
        let every = SWEEP_EVERY.min(self.cfg.wait);
        if !force && st.last_sweep.is_some_and(|t| now.duration_since(t) < every) {
            return;
        }
        st.last_sweep = Some(now);
        let wait = self.cfg.wait;
        let expired: Vec<(TraceId, u64)> =
            st.pending.iter().filter(|(_, p)| now.duration_since(p.created) >= wait).map(|(k, _)| *k).collect();
        for k in expired {
            let Some(p) = st.pending.remove(&k) else { continue };
            match (p.client, p.peer) {
                (Some((client, cs)), Some(peer)) if p.server.is_none() => {
                    self.edge(st, tenant, &client, &peer, "virtual_node", p.failed, None, Some(cs));
                }
                _ => self.dropped("service_graph_unpaired"),
            }
        }
    }

    fn dropped(&self, reason: &'static str) {
        self.metrics.generator_dropped.get_or_create(&crate::telemetry::ReasonLabel { reason }).inc();
    }

    /// Appends the generated series to a Prometheus text exposition (without the closing `# EOF`).
    pub fn encode(&self, out: &mut String) {
        {
            let mut tenants = self.tenants.lock();
            let now = Instant::now();
            for (tenant, st) in tenants.iter_mut() {
                self.sweep(st, tenant, now, false);
            }
        }
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::model::kv;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};

    pub fn rec(svc: &str, id: u8, parent: u8, kind: i32, error: bool, attrs: &[(&str, &str)]) -> (TraceId, SpanRecord) {
        let text = |v: &str| Some(AnyValue { value: Some(Value::StringValue(v.into())) });
        let origin = Origin {
            resource: Resource { attributes: vec![kv("service.name", text(svc))], ..Default::default() },
            ..Default::default()
        };
        let span = Span {
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            name: format!("op{id}"),
            kind,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 1_000 + 50_000_000,
            attributes: attrs.iter().map(|(k, v)| kv(*k, text(v))).collect(),
            status: Some(Status { code: if error { 2 } else { 0 }, ..Default::default() }),
            ..Default::default()
        };
        (TraceId([7; 16]), SpanRecord { origin: Arc::new(origin), span })
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    fn exposition(g: &Generator) -> String {
        let mut out = String::new();
        g.encode(&mut out);
        out
    }

    #[test]
    fn pairs_edges_and_expires_unpaired_ones_into_virtual_nodes() {
        let cfg =
            GeneratorConfig { wait: Duration::from_millis(100), max_series: 3, max_pending: 10, max_label_values: 10 };
        let g = Generator::new(cfg, Arc::new(Metrics::new()));
        let tenant = Tenant::default();
        // A pair (client in one request, server in the next), a client naming an uninstrumented peer, and a
        // server whose client never comes.
        let first = vec![rec("web", 1, 0, 3, false, &[]), rec("web", 2, 0, 3, true, &[("peer.service", "billing")])];
        g.record(&tenant, g.prepare(&tenant, &first));
        let second = vec![rec("api", 3, 1, 2, false, &[]), rec("api", 4, 9, 2, false, &[])];
        g.record(&tenant, g.prepare(&tenant, &second));
        // Past `wait`, the scrape's sweep expires what is still unpaired.
        std::thread::sleep(Duration::from_millis(150));
        let text = exposition(&g);
        let edge = |client: &str, server: &str, ty: &str| {
            format!(
                "traces_service_graph_request_total{{tenant=\"single-tenant\",client=\"{client}\",server=\"{server}\",\
                 connection_type=\"{ty}\"}} 1"
            )
        };
        assert!(text.contains(&edge("web", "api", "")), "{text}");
        assert!(text.contains(&edge("web", "billing", "virtual_node")), "{text}");
        assert!(
            text.contains(
                "traces_service_graph_request_failed_total{tenant=\"single-tenant\",client=\"web\",\
                               server=\"billing\",connection_type=\"virtual_node\"} 1"
            ),
            "{text}"
        );
        assert_eq!(text.matches("traces_service_graph_request_total{").count(), 2, "the lone server is dropped");
        // Span metrics: one series per (service, name, kind, status), capped at max_series (3 of 4 here).
        assert_eq!(text.matches("traces_spanmetrics_calls_total{").count(), 3, "{text}");
        assert!(text.contains("span_kind=\"SPAN_KIND_CLIENT\",status_code=\"STATUS_CODE_ERROR\"} 1"), "{text}");
        assert!(text.contains("traces_spanmetrics_latency_bucket{") && text.contains("le=\"0.064\""), "{text}");
    }
}

#[cfg(test)]
mod limits {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn labels_with_too_many_values_fold_into_overflow() {
        let cfg = GeneratorConfig { max_label_values: 2, ..Default::default() };
        let g = Generator::new(cfg, Arc::new(Metrics::new()));
        let tenant = Tenant::default();
        // Four span names (internal spans, so no edges): two keep their name, the others share the overflow.
        let spans: Vec<_> = (1..=4).map(|i| rec("web", i, 0, 1, false, &[])).collect();
        g.record(&tenant, g.prepare(&tenant, &spans));
        g.record(&tenant, g.prepare(&tenant, &spans));
        let mut text = String::new();
        g.encode(&mut text);
        let calls = |name: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with("traces_spanmetrics_calls_total{") && l.contains(&format!("span_name=\"{name}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(calls("op1"), vec!["2"]);
        assert_eq!(calls("op2"), vec!["2"]);
        assert_eq!(calls("op3"), Vec::<String>::new());
        assert_eq!(calls(OVERFLOW), vec!["4"], "{text}");
    }
}
