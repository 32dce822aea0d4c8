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
            self.metrics
                .spans_rejected
                .get_or_create(&ReasonLabel { reason: "invalid_span" })
                .inc_by(v.rejected as u64);
        }
        let accepted = v.accepted as u64;
        self.ingester
            .push(tenant, v.request, None)
            .await
            .map_err(|e| self.fail("unavailable", Status::unavailable(ingest_error_message(&e))))?;
        self.metrics.spans_accepted.get_or_create(&PROTOCOL).inc_by(accepted);
        let partial_success = (v.rejected > 0)
            .then_some(ExportTracePartialSuccess { rejected_spans: v.rejected as i64, error_message: v.message });
        Ok(Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

/// tonic reports an over-limit message as OUT_OF_RANGE and an undecodable one as INTERNAL; OTLP clients expect
/// RESOURCE_EXHAUSTED for "too large" and INVALID_ARGUMENT for malformed input (the latter tells them not to
/// retry). The status is rewritten on the way out, in the headers (trailers-only replies) or the trailers.
pub fn fix_status_codes(resp: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    use http_body_util::BodyExt;
    let (mut parts, body) = resp.into_parts();
    fix_status(&mut parts.headers);
    let body = body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            fix_status(&mut trailers);
            http_body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}

fn fix_status(h: &mut http::HeaderMap) {
    let code = h.get("grpc-status").map(|v| v.as_bytes().to_vec());
    let message = h.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("").replace("%20", " ");
    let new = match code.as_deref() {
        Some(b"11") if message.contains("message length too large") => "8",
        Some(b"13") if message.contains("decode") => "3",
        _ => return,
    };
    h.insert("grpc-status", http::HeaderValue::from_static(new));
}
