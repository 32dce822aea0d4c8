//! OTLP/HTTP `POST /v1/traces`: protobuf or JSON, optionally gzip/deflate compressed, CORS open for browsers.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{ingest_error_message, validate};
use crate::ingest::Ingester;
use crate::model::Tenant;
use crate::telemetry::{Metrics, ProtocolLabel, ReasonLabel};

#[derive(Clone)]
struct AppState {
    ingester: Arc<Ingester>,
    metrics: Arc<Metrics>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP puts on errors.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The OTLP/HTTP router. `max_bytes` bounds the decompressed body; larger bodies get 413.
pub fn router(
    ingester: Arc<Ingester>,
    metrics: Arc<Metrics>,
    max_bytes: usize,
    budget: super::InflightBudget,
) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            HeaderName::from_static("x-scope-orgid"),
        ])
        .max_age(std::time::Duration::from_secs(3600));
    let routes =
        Router::new().route("/v1/traces", post(export)).with_state(AppState { ingester, metrics: metrics.clone() });
    super::http_limits(routes, metrics, max_bytes, budget, || {
        error(
            Format::Json,
            StatusCode::TOO_MANY_REQUESTS,
            "too many request bytes in flight on this server; retry later".into(),
        )
    })
    .layer(cors)
}

fn error(format: Format, status: StatusCode, message: String) -> Response {
    let grpc_code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        _ => 14,
    };
    let body = RpcStatus { code: grpc_code, message };
    let bytes = match format {
        Format::Protobuf => body.encode_to_vec(),
        Format::Json => serde_json::to_vec(&body).unwrap_or_default(),
    };
    let mut resp = (status, [(header::CONTENT_TYPE, format.content_type())], bytes).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

async fn export(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let format = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            st.metrics.requests_failed.get_or_create(&ReasonLabel { reason: "content_type" }).inc();
            return error(
                Format::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type {ct:?}: use application/x-protobuf or application/json"),
            );
        }
    };
    let protocol = ProtocolLabel { protocol: if format == Format::Json { "http_json" } else { "http_protobuf" } };
    st.metrics.requests.get_or_create(&protocol).inc();
    let fail = |reason: &'static str, status: StatusCode, msg: String| {
        st.metrics.requests_failed.get_or_create(&ReasonLabel { reason }).inc();
        error(format, status, msg)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status();
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_body" };
            return fail(reason, status, e.body_text());
        }
    };
    let tenant = match headers.get("x-scope-orgid").map(|v| v.to_str()) {
        None => Tenant::default(),
        Some(Ok(raw)) => match Tenant::parse(Some(raw)) {
            Ok(t) => t,
            Err(e) => return fail("bad_tenant", StatusCode::BAD_REQUEST, e.to_string()),
        },
        Some(Err(_)) => return fail("bad_tenant", StatusCode::BAD_REQUEST, "X-Scope-OrgID is not valid text".into()),
    };
    let request = match format {
        Format::Protobuf => {
            ExportTraceServiceRequest::decode(body.clone()).map_err(|e| format!("malformed OTLP protobuf: {e}"))
        }
        Format::Json => {
            serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| format!("malformed OTLP JSON: {e}"))
        }
    };
    let request = match request {
        Ok(r) => r,
        Err(msg) => return fail("malformed", StatusCode::BAD_REQUEST, msg),
    };
    let v = validate(request);
    if v.rejected > 0 {
        st.metrics.spans_rejected.get_or_create(&ReasonLabel { reason: "invalid_span" }).inc_by(v.rejected as u64);
    }
    let raw = (format == Format::Protobuf && v.unchanged()).then_some(body);
    let accepted = v.accepted as u64;
    if let Err(e) = st.ingester.push(tenant, v.request, raw).await {
        return fail("unavailable", StatusCode::SERVICE_UNAVAILABLE, ingest_error_message(&e));
    }
    st.metrics.spans_accepted.get_or_create(&protocol).inc_by(accepted);
    let partial_success = (v.rejected > 0)
        .then_some(ExportTracePartialSuccess { rejected_spans: v.rejected as i64, error_message: v.message });
    let resp = ExportTraceServiceResponse { partial_success };
    let bytes = match format {
        Format::Protobuf => resp.encode_to_vec(),
        Format::Json => {
            let mut v = serde_json::to_value(&resp).unwrap_or_default();
            crate::model::protojson::strip_defaults(&mut v);
            serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec())
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], bytes).into_response()
}
