//! `tempopb.StreamingQuerier` over gRPC, served on the HTTP API's port (plaintext HTTP/2): what Grafana's Tempo
//! data source uses when streaming is on. Search streams the traces that are certain as each round of blocks
//! completes, with completedJobs/totalJobs for progress; tag calls answer in one message.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::metrics::{instant_proto, instant_request, range_proto, range_request};
use super::search::{DEFAULT_LIMIT, DEFAULT_SPSS, legacy_traceql, metrics_proto, parse_search, trace_meta};
use super::tags::{TagParams, names, parse_tag, v1_field, values};
use super::tempopb::streaming_querier_server::{StreamingQuerier, StreamingQuerierServer};
use super::tempopb::{
    QueryInstantRequest, QueryInstantResponse, QueryRangeRequest, QueryRangeResponse, SearchRequest, SearchResponse,
    SearchTagValuesRequest, SearchTagValuesResponse, SearchTagValuesV2Response, SearchTagsRequest, SearchTagsResponse,
    SearchTagsV2Response, SearchTagsV2Scope, TagValue,
};
use super::{Api, ApiError};
use crate::model::Tenant;
use crate::query::search::SearchRequest as EngineRequest;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(super) struct Service {
    api: Api,
}

/// The gRPC service, ready to be merged into the HTTP router.
pub(super) fn service(api: Api) -> StreamingQuerierServer<Service> {
    StreamingQuerierServer::new(Service { api })
}

fn status(e: ApiError) -> Status {
    match e.0 {
        axum::http::StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(e.1),
        axum::http::StatusCode::UNPROCESSABLE_ENTITY => Status::resource_exhausted(e.1),
        s if s.is_client_error() => Status::invalid_argument(e.1),
        _ => Status::internal(e.1),
    }
}

fn tenant<T>(req: &Request<T>) -> Result<Tenant, Status> {
    let raw = req.metadata().get("x-scope-orgid").map(|v| v.to_str().unwrap_or("\u{0}"));
    Tenant::parse(raw).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Unix seconds (0 = unset) as nanoseconds.
fn seconds(s: u32) -> Option<u64> {
    (s != 0).then(|| u64::from(s) * 1_000_000_000)
}

fn range(start: u32, end: u32) -> Result<(Option<u64>, Option<u64>), Status> {
    let (s, e) = (seconds(start), seconds(end));
    if let (Some(s), Some(e)) = (s, e)
        && s > e
    {
        return Err(Status::invalid_argument("invalid time range: start is after end"));
    }
    Ok((s, e))
}

fn once<T: Send + 'static>(msg: T) -> Response<Streamed<T>> {
    Response::new(Box::pin(futures::stream::once(async move { Ok(msg) })))
}

#[tonic::async_trait]
impl StreamingQuerier for Service {
    type SearchStream = Streamed<SearchResponse>;
    type SearchTagsStream = Streamed<SearchTagsResponse>;
    type SearchTagsV2Stream = Streamed<SearchTagsV2Response>;
    type SearchTagValuesStream = Streamed<SearchTagValuesResponse>;
    type SearchTagValuesV2Stream = Streamed<SearchTagValuesV2Response>;
    type MetricsQueryRangeStream = Streamed<QueryRangeResponse>;
    type MetricsQueryInstantStream = Streamed<QueryInstantResponse>;

    async fn search(&self, req: Request<SearchRequest>) -> Result<Response<Self::SearchStream>, Status> {
        let tenant = tenant(&req)?;
        let r = req.into_inner();
        let max = self.api.limits.max_search_limit;
        let pick = |v: u32, default: usize| -> Result<usize, Status> {
            match v as usize {
                0 => Ok(default),
                n if n <= max => Ok(n),
                _ => Err(Status::invalid_argument(format!("limit must be at most {max}"))),
            }
        };
        let limit = pick(r.limit, DEFAULT_LIMIT)?;
        let spss = pick(r.spans_per_span_set, DEFAULT_SPSS)?;
        let (start, end) = range(r.start, r.end)?;
        let q = if r.query.trim().is_empty() {
            let mut tags: Vec<(String, String)> = r.tags.into_iter().collect();
            tags.sort();
            let ms = |v: u32| (v != 0).then(|| Duration::from_millis(u64::from(v)));
            legacy_traceql(&tags, ms(r.min_duration_ms), ms(r.max_duration_ms)).map_err(status)?
        } else {
            r.query
        };
        let pipeline = parse_search(&q).map_err(status)?;
        let req = EngineRequest { pipeline, limit, spans_per_spanset: spss, start, end };
        let (tx, rx) = mpsc::channel::<Result<SearchResponse, Status>>(16);
        let querier = self.api.querier.clone();
        let timeout = self.api.limits.query.timeout;
        tokio::spawn(async move {
            let mut sent = std::collections::HashSet::new();
            let progress_tx = tx.clone();
            let mut progress = |hits: Vec<crate::query::search::TraceHit>,
                                stats: &crate::query::search::SearchStats| {
                let msg = SearchResponse {
                    traces: hits.iter().map(trace_meta).collect(),
                    metrics: Some(metrics_proto(stats)),
                };
                // A slow client's full channel skips this message: its traces stay unsent and go in the last
                // one. A client that went away just stops receiving; the search finishes on its own.
                if progress_tx.try_send(Ok(msg)).is_ok() {
                    sent.extend(hits.iter().map(|h| h.trace_id));
                }
            };
            let result = tokio::time::timeout(timeout, querier.search_streaming(&tenant, &req, &mut progress)).await;
            let last = match result {
                Ok(Ok(r)) => Ok(SearchResponse {
                    traces: r.traces.iter().filter(|h| !sent.contains(&h.trace_id)).map(trace_meta).collect(),
                    metrics: Some(metrics_proto(&r.stats)),
                }),
                Ok(Err(e)) if e.is_limit() => Err(Status::resource_exhausted(format!("search: {e}"))),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, query = %q, "streaming search failed");
                    Err(Status::internal(format!("search failed: {e}")))
                }
                Err(_) => {
                    Err(Status::deadline_exceeded(format!("search did not finish within {timeout:?} (query_timeout)")))
                }
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn search_tags(&self, req: Request<SearchTagsRequest>) -> Result<Response<Self::SearchTagsStream>, Status> {
        let tenant = tenant(&req)?;
        let p = tag_params(req.into_inner())?;
        let names = names(&self.api, &tenant, &p, false).await.map_err(status)?;
        let mut all: Vec<String> = names.into_iter().flat_map(|(_, v)| v).collect();
        all.sort();
        all.dedup();
        all.truncate(p.limit);
        Ok(once(SearchTagsResponse { tag_names: all, metrics: None }))
    }

    async fn search_tags_v2(
        &self,
        req: Request<SearchTagsRequest>,
    ) -> Result<Response<Self::SearchTagsV2Stream>, Status> {
        let tenant = tenant(&req)?;
        let p = tag_params(req.into_inner())?;
        let names = names(&self.api, &tenant, &p, true).await.map_err(status)?;
        let scopes =
            names.into_iter().map(|(scope, tags)| SearchTagsV2Scope { name: scope.name().into(), tags }).collect();
        Ok(once(SearchTagsV2Response { scopes, metrics: None }))
    }

    async fn search_tag_values(
        &self,
        req: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesStream>, Status> {
        let tenant = tenant(&req)?;
        let r = req.into_inner();
        let field = v1_field(&r.tag_name);
        let p = value_params(&r)?;
        let v = values(&self.api, &tenant, &field, &p).await.map_err(status)?;
        let tag_values = v.into_iter().filter(|v| v.ty == "string").map(|v| v.value).collect();
        Ok(once(SearchTagValuesResponse { tag_values, metrics: None }))
    }

    async fn search_tag_values_v2(
        &self,
        req: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesV2Stream>, Status> {
        let tenant = tenant(&req)?;
        let r = req.into_inner();
        let field = parse_tag(&r.tag_name).map_err(status)?;
        let p = value_params(&r)?;
        let v = values(&self.api, &tenant, &field, &p).await.map_err(status)?;
        let tag_values = v.into_iter().map(|v| TagValue { r#type: v.ty, value: v.value }).collect();
        Ok(once(SearchTagValuesV2Response { tag_values, metrics: None }))
    }

    async fn metrics_query_range(
        &self,
        req: Request<QueryRangeRequest>,
    ) -> Result<Response<Self::MetricsQueryRangeStream>, Status> {
        let tenant = tenant(&req)?;
        let r = req.into_inner();
        let (start, end) = metrics_range(r.start, r.end);
        let step = (r.step != 0).then_some(r.step);
        let q = metrics_request(&self.api, &tenant, |l| {
            range_request(l, &r.query, start, end, step, u64::from(r.exemplars))
        })
        .await?;
        Ok(once(range_proto(&q)))
    }

    async fn metrics_query_instant(
        &self,
        req: Request<QueryInstantRequest>,
    ) -> Result<Response<Self::MetricsQueryInstantStream>, Status> {
        let tenant = tenant(&req)?;
        let r = req.into_inner();
        let (start, end) = metrics_range(r.start, r.end);
        let q = metrics_request(&self.api, &tenant, |l| instant_request(l, &r.query, start, end)).await?;
        Ok(once(instant_proto(&q)))
    }
}

/// A metrics request's bounds: unix nanoseconds (seconds accepted too, as the HTTP API does); an unset end is now,
/// an unset start an hour before it.
fn metrics_range(start: u64, end: u64) -> (u64, u64) {
    let scale = |v: u64| crate::api::parse_time(&v.to_string()).unwrap_or(v);
    let end = if end == 0 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    } else {
        scale(end)
    };
    let start = if start == 0 { end.saturating_sub(3_600_000_000_000) } else { scale(start) };
    (start, end)
}

/// Validates and runs a metrics query; the whole answer is one message (the last message of a stream is
/// complete, so a client that merges partial messages gets the same).
async fn metrics_request(
    api: &Api,
    tenant: &Tenant,
    build: impl FnOnce(&crate::config::QueryLimits) -> Result<crate::query::metrics::MetricsRequest, ApiError>,
) -> Result<crate::query::metrics::MetricsResult, Status> {
    let req = build(&api.limits.query).map_err(status)?;
    api.bounded("metrics query", api.querier.metrics(tenant, &req)).await.map_err(status)
}

const MAX_TAGS: usize = 100_000;

fn tag_params(r: SearchTagsRequest) -> Result<TagParams, Status> {
    let (start, end) = range(r.start, r.end)?;
    let limit = match r.max_tags_per_scope as usize {
        0 => MAX_TAGS,
        n => n.min(MAX_TAGS),
    };
    Ok(TagParams { scope: Some(r.scope), q: Some(r.query), start, end, limit })
}

fn value_params(r: &SearchTagValuesRequest) -> Result<TagParams, Status> {
    let (start, end) = range(r.start, r.end)?;
    let limit = match r.max_tag_values as usize {
        0 => MAX_TAGS,
        n => n.min(MAX_TAGS),
    };
    Ok(TagParams { scope: None, q: Some(r.query.clone()), start, end, limit })
}
