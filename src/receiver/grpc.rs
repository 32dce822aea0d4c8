//! OTLP/gRPC `TraceService/Export`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{ingest_error_message, validate};
use crate::ingest::Ingester;
use crate::model::Tenant;
use crate::telemetry::{Metrics, ProtocolLabel, ReasonLabel};

const PROTOCOL: ProtocolLabel = ProtocolLabel { protocol: "grpc" };

/// The gRPC trace receiver.
pub struct GrpcReceiver {
    ingester: Arc<Ingester>,
    metrics: Arc<Metrics>,
}

impl GrpcReceiver {
    /// The tonic service, accepting gzip and limiting decoded messages to `max_bytes`.
    pub fn service(ingester: Arc<Ingester>, metrics: Arc<Metrics>, max_bytes: usize) -> TraceServiceServer<Self> {
        TraceServiceServer::new(GrpcReceiver { ingester, metrics })
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes)
    }

    fn fail(&self, reason: &'static str, status: Status) -> Status {
        self.metrics.requests_failed.get_or_create(&ReasonLabel { reason }).inc();
        status
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.metrics.requests.get_or_create(&PROTOCOL).inc();
        let header = request.metadata().get("x-scope-orgid").map(|v| v.to_str().map_err(|_| ()));
        let tenant = match header {
            None => Tenant::default(),
            Some(Err(())) => {
                return Err(self.fail("bad_tenant", Status::invalid_argument("x-scope-orgid is not valid text")));
            }
            Some(Ok(raw)) => Tenant::parse(Some(raw))
                .map_err(|e| self.fail("bad_tenant", Status::invalid_argument(e.to_string())))?,
        };
        let v = validate(request.into_inner());
        if v.rejected > 0 {
            self.metrics.spans_rejected.get_or_create(&ReasonLabel { reason: "invalid_id" }).inc_by(v.rejected as u64);
        }
        let accepted = v.accepted as u64;
        self.ingester
            .push(tenant, v.request, None)
            .await
            .map_err(|e| self.fail("unavailable", Status::unavailable(ingest_error_message(&e))))?;
        self.metrics.spans_accepted.get_or_create(&PROTOCOL).inc_by(accepted);
        let partial_success = (v.rejected > 0)
            .then(|| ExportTracePartialSuccess { rejected_spans: v.rejected as i64, error_message: v.message });
        Ok(Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

/// tonic answers an over-limit message with OUT_OF_RANGE; OTLP clients expect RESOURCE_EXHAUSTED for "too
/// large", so the status is rewritten on the way out.
pub fn too_large_as_resource_exhausted(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let out_of_range = resp.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    let too_large = resp
        .headers()
        .get("grpc-message")
        .is_some_and(|m| m.to_str().is_ok_and(|s| s.contains("message length too large")));
    if out_of_range && too_large {
        resp.headers_mut().insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}
