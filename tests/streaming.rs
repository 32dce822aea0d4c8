//! Tempo's gRPC `StreamingQuerier` on the HTTP port, consumed by a tonic client the way Grafana's streaming mode
//! does: search results arrive in several messages with progress, and tags answer over gRPC too.

mod common;
mod naive;

use std::collections::BTreeSet;

use common::Server;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use strata::api::tempopb::streaming_querier_client::StreamingQuerierClient;
use strata::api::tempopb::{SearchRequest, SearchTagValuesRequest, SearchTagsRequest};

const BASE: u64 = 1_700_000_000_000_000_000;

fn send(srv: &Server, traces: &[naive::GenTrace]) {
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
        send(&srv, chunk);
        srv.flush();
    }
    let extra = naive::generate(12, 5, BASE + 1_000_000_000_000_000);
    send(&srv, &extra);

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
