//! Receivers: OTLP over gRPC (:4317) and HTTP (:4318, protobuf and JSON), Zipkin v2 (:9411, JSON and protobuf),
//! Jaeger gRPC (:14250) and Jaeger Thrift over HTTP (:14268). They authenticate nothing, pick the tenant from
//! `X-Scope-OrgID`, reject malformed input with a message, drop spans with invalid IDs (reported as OTLP partial
//! success) and acknowledge only what the ingester made durable. Zipkin and Jaeger spans are converted to OTLP
//! first (`convert`), then take the same path.

mod convert;
pub mod grpc;
pub mod http;
pub mod jaeger;
mod validate;
pub mod zipkin;

pub use validate::{Validated, validate};

use std::sync::Arc;

use crate::ingest::IngestError;

/// Bytes of request bodies being received and decoded at once, across every receiver and tenant: one budget, so
/// a burst of large requests is refused (HTTP 429, which OTLP clients retry) or waits (gRPC) instead of growing
/// memory without bound.
#[derive(Clone)]
pub struct InflightBudget {
    sem: Arc<tokio::sync::Semaphore>,
    /// What a request whose decoded size is unknown (chunked, compressed, gRPC) is charged.
    max_request: usize,
    total: usize,
}

impl InflightBudget {
    pub fn new(total_bytes: usize, max_request_bytes: usize) -> Self {
        // Permits count KiB so any configured budget fits the semaphore's u32 acquisitions.
        let total = (total_bytes / 1024).max(1);
        InflightBudget { sem: Arc::new(tokio::sync::Semaphore::new(total)), max_request: max_request_bytes, total }
    }

    /// KiB charged for a request of `bytes` (or the largest allowed when unknown), never more than the budget.
    fn charge(&self, bytes: Option<usize>) -> u32 {
        let b = bytes.unwrap_or(self.max_request).min(self.max_request);
        (b.div_ceil(1024).max(1)).min(self.total) as u32
    }

    /// A share of the budget for one request, at once or not at all.
    pub fn try_acquire(&self, bytes: Option<usize>) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.sem.clone().try_acquire_many_owned(self.charge(bytes)).ok()
    }

    /// A share of the budget for one request, waiting for it.
    pub async fn acquire(&self, bytes: Option<usize>) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.sem.clone().acquire_many_owned(self.charge(bytes)).await.ok()
    }
}

/// What a receiver tells the client when the ingester refuses a request. Every variant is retryable.
pub fn ingest_error_message(e: &IngestError) -> String {
    format!("not accepted, retry later: {e}")
}

/// A tower layer charging each gRPC request the largest allowed size against the budget (a gRPC message's size
/// is known only once it is read); requests wait for their share rather than being refused.
#[derive(Clone)]
pub struct InflightLayer(pub InflightBudget);

impl<S> tower::Layer<S> for InflightLayer {
    type Service = InflightService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InflightService { inner, budget: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct InflightService<S> {
    inner: S,
    budget: InflightBudget,
}

impl<S, R> tower::Service<R> for InflightService<S>
where
    S: tower::Service<R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // The clone that was made ready serves this call; the fresh clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let budget = self.budget.clone();
        Box::pin(async move {
            let permit = budget.acquire(None).await;
            let resp = inner.call(req).await;
            drop(permit);
            resp
        })
    }
}

/// What became of a converted (Zipkin, Jaeger) request.
pub struct Accepted {
    pub accepted: usize,
    pub rejected: usize,
    /// Why spans were rejected; empty when none were.
    pub message: String,
}

/// Hands converted spans to the ingester like an OTLP request: invalid spans are dropped and counted, and the
/// answer comes once the rest is durable.
pub async fn accept(
    ingester: &crate::ingest::Ingester,
    metrics: &crate::telemetry::Metrics,
    tenant: crate::model::Tenant,
    request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    protocol: &'static str,
) -> Result<Accepted, IngestError> {
    use crate::telemetry::{ProtocolLabel, ReasonLabel};
    let label = ProtocolLabel { protocol };
    metrics.requests.get_or_create(&label).inc();
    let v = validate(request);
    if v.rejected > 0 {
        metrics.spans_rejected.get_or_create(&ReasonLabel { reason: "invalid_span" }).inc_by(v.rejected as u64);
    }
    let (accepted, rejected, message) = (v.accepted, v.rejected, v.message);
    if accepted > 0 {
        ingester.push(tenant, v.request, None).await?;
    }
    metrics.spans_accepted.get_or_create(&label).inc_by(accepted as u64);
    Ok(Accepted { accepted, rejected, message })
}

/// The tenant an HTTP request names (`X-Scope-OrgID`), or why it is invalid.
pub fn http_tenant(headers: &axum::http::HeaderMap) -> Result<crate::model::Tenant, String> {
    match headers.get("x-scope-orgid").map(|v| v.to_str()) {
        None => Ok(crate::model::Tenant::default()),
        Some(Ok(raw)) => crate::model::Tenant::parse(Some(raw)).map_err(|e| e.to_string()),
        Some(Err(_)) => Err("X-Scope-OrgID is not valid text".into()),
    }
}

/// Wraps a receiver's HTTP routes in what every HTTP receiver needs: a body limit (413), request decompression
/// and the shared in-flight budget (429 with `Retry-After` when spent).
pub fn http_limits(
    router: axum::Router,
    metrics: Arc<crate::telemetry::Metrics>,
    max_bytes: usize,
    budget: InflightBudget,
    refused: fn() -> axum::response::Response,
) -> axum::Router {
    use axum::http::{HeaderValue, header};
    router
        .layer(axum::extract::DefaultBodyLimit::max(max_bytes))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let (budget, metrics) = (budget.clone(), metrics.clone());
            async move {
                // Charged before the body is read: its declared length when it is sent uncompressed, else the
                // largest request allowed.
                let plain = req.headers().get(header::CONTENT_ENCODING).is_none_or(|v| v.as_bytes() == b"identity");
                let len = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|_| plain);
                match budget.try_acquire(len) {
                    Some(permit) => {
                        let resp = next.run(req).await;
                        drop(permit);
                        resp
                    }
                    None => {
                        let reason = crate::telemetry::ReasonLabel { reason: "inflight_budget" };
                        metrics.requests_failed.get_or_create(&reason).inc();
                        let mut resp = refused();
                        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        resp
                    }
                }
            }
        }))
}

/// What the Zipkin and Jaeger Thrift HTTP receivers share: they answer in plain text, count each failure by
/// reason, and answer `202 Accepted` once the converted spans are durable.
#[derive(Clone)]
pub struct TextReceiver {
    pub ingester: Arc<crate::ingest::Ingester>,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// The protocol's part: spans from a body of a media type.
    pub decode: Decode,
}

/// Turns a body of the given media type (lowercase, without parameters) into OTLP and the protocol's metrics
/// label, or refuses it.
pub type Decode =
    fn(
        &str,
        &[u8],
    )
        -> Result<(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest, &'static str), Refused>;

/// Why a receiver refused a body: the metrics reason, the status and the message.
pub struct Refused(pub &'static str, pub axum::http::StatusCode, pub String);

impl Refused {
    /// A body that could not be decoded (400).
    pub fn malformed(message: String) -> Self {
        Refused("malformed", axum::http::StatusCode::BAD_REQUEST, message)
    }

    /// A media type the receiver does not read (415); `expected` names the ones it does.
    pub fn media_type(got: &str, expected: &str) -> Self {
        Refused(
            "content_type",
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {got:?}: use {expected}"),
        )
    }
}

/// Every text receiver's request: body, tenant, decoding, then the ingest answer.
async fn receive(
    axum::extract::State(rx): axum::extract::State<TextReceiver>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> axum::response::Response {
    let (body, tenant) = match rx.body(body).and_then(|b| Ok((b, rx.tenant(&headers)?))) {
        Ok(ok) => ok,
        Err(answer) => return *answer,
    };
    let mime = media_type(&headers);
    match (rx.decode)(&mime, &body) {
        Ok((request, protocol)) => rx.ingest(tenant, request, protocol).await,
        Err(Refused(reason, status, message)) => rx.fail(reason, status, message),
    }
}

impl TextReceiver {
    /// A router serving the receiver at `path` under the HTTP receivers' limits.
    pub fn router(self, path: &str, max_bytes: usize, budget: InflightBudget) -> axum::Router {
        let metrics = self.metrics.clone();
        let routes = axum::Router::new().route(path, axum::routing::post(receive)).with_state(self);
        http_limits(routes, metrics, max_bytes, budget, || {
            text(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too many request bytes in flight on this server; retry later".into(),
            )
        })
    }

    /// Counts a refused request and answers it.
    pub fn fail(&self, reason: &'static str, status: axum::http::StatusCode, msg: String) -> axum::response::Response {
        self.metrics.requests_failed.get_or_create(&crate::telemetry::ReasonLabel { reason }).inc();
        text(status, msg)
    }

    /// The request body, or the answer to a body that could not be read (413 over the size limit).
    pub fn body(
        &self,
        body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Result<axum::body::Bytes, Box<axum::response::Response>> {
        body.map_err(|e| {
            let status = e.status();
            let reason = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_body" };
            Box::new(self.fail(reason, status, e.body_text()))
        })
    }

    /// The request's tenant, or the 400 for an invalid one.
    pub fn tenant(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<crate::model::Tenant, Box<axum::response::Response>> {
        http_tenant(headers).map_err(|m| Box::new(self.fail("bad_tenant", axum::http::StatusCode::BAD_REQUEST, m)))
    }

    /// Ingests converted spans: 202 once durable, 400 when no span was valid, 503 when the ingester refuses.
    pub async fn ingest(
        &self,
        tenant: crate::model::Tenant,
        request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        protocol: &'static str,
    ) -> axum::response::Response {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        match accept(&self.ingester, &self.metrics, tenant, request, protocol).await {
            Ok(a) if a.accepted == 0 && a.rejected > 0 => {
                self.fail("invalid_span", StatusCode::BAD_REQUEST, format!("no valid span: {}", a.message))
            }
            Ok(_) => StatusCode::ACCEPTED.into_response(),
            Err(e) => self.fail("unavailable", StatusCode::SERVICE_UNAVAILABLE, ingest_error_message(&e)),
        }
    }
}

/// The media type of a request: lowercase, without parameters.
fn media_type(headers: &axum::http::HeaderMap) -> String {
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn text(status: axum::http::StatusCode, msg: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}
