//! Receivers: OTLP over gRPC (:4317) and HTTP (:4318, protobuf and JSON). They authenticate nothing, pick the
//! tenant from `X-Scope-OrgID`, reject malformed input with a message, drop spans with invalid IDs (reported as
//! OTLP partial success) and acknowledge only what the ingester made durable.

pub mod grpc;
pub mod http;
mod validate;

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
