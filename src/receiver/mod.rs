//! Receivers: OTLP over gRPC (:4317) and HTTP (:4318, protobuf and JSON). They authenticate nothing, pick the
//! tenant from `X-Scope-OrgID`, reject malformed input with a message, drop spans with invalid IDs (reported as
//! OTLP partial success) and acknowledge only what the ingester made durable.

pub mod grpc;
pub mod http;
mod validate;

pub use validate::{Validated, validate};

use crate::ingest::IngestError;

/// What a receiver tells the client when the ingester refuses a request. Every variant is retryable.
pub fn ingest_error_message(e: &IngestError) -> String {
    format!("not accepted, retry later: {e}")
}
