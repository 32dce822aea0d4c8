//! Types every layer shares: trace IDs, tenants, and the in-memory span record.
//!
//! Spans travel as OTLP protobuf structures until they are written into a block, so nothing is lost between the
//! receiver and the Parquet writer; `SpanRecord` only adds the shared resource and scope they belong to.

pub mod protojson;

use std::fmt;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

/// The tenant used when a request carries no `X-Scope-OrgID`, as in Tempo.
pub const DEFAULT_TENANT: &str = "single-tenant";

/// OTLP span kinds by number, as the protobuf enum names them (Tempo's JSON and metrics labels use these).
pub const SPAN_KIND_NAMES: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

/// OTLP status codes by number, as the protobuf enum names them.
pub const STATUS_CODE_NAMES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// Errors parsing identifiers that arrive from clients.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("trace ID must be 1 to 32 hex characters, got {0} characters")]
    Length(usize),
    #[error("trace ID is not hexadecimal: {0:?}")]
    NotHex(String),
    #[error("trace ID is all zeroes")]
    Zero,
    #[error("invalid tenant ID {0:?}: use 1-150 characters of letters, digits, '-', '_' or '.'")]
    Tenant(String),
}

/// A 16-byte trace ID. Ordered bytewise, which is the sort order of rows in a block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// Parses the hex form used in URLs: case-insensitive, and shorter IDs are left-padded with zeroes
    /// (64-bit Jaeger/Zipkin IDs are commonly written that way).
    pub fn from_hex(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        if s.is_empty() || s.len() > 32 {
            return Err(IdError::Length(s.len()));
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::NotHex(s.to_string()));
        }
        let padded = format!("{s:0>32}");
        let mut out = [0u8; 16];
        hex::decode_to_slice(padded, &mut out).map_err(|_| IdError::NotHex(s.to_string()))?;
        if out == [0u8; 16] {
            return Err(IdError::Zero);
        }
        Ok(TraceId(out))
    }

    /// Accepts exactly 16 non-zero bytes, the only valid OTLP trace ID.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = b.try_into().ok()?;
        (arr != [0u8; 16]).then_some(TraceId(arr))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.to_hex())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A tenant name, validated so it is safe as an object-store path segment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// Validates a tenant taken from `X-Scope-OrgID`; `None` or empty means the default tenant.
    pub fn parse(raw: Option<&str>) -> Result<Self, IdError> {
        let s = raw.map(str::trim).unwrap_or("");
        if s.is_empty() {
            return Ok(Self::default());
        }
        let ok = s.len() <= 150
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok { Ok(Tenant(Arc::from(s))) } else { Err(IdError::Tenant(s.to_string())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Tenant(Arc::from(DEFAULT_TENANT))
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The resource and instrumentation scope a group of spans was sent with; shared by all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    pub resource: Resource,
    pub resource_schema_url: String,
    pub scope: InstrumentationScope,
    pub scope_schema_url: String,
}

/// One span with the origin it came from: the unit live traces and block readers both produce.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub origin: Arc<Origin>,
    pub span: Span,
}

/// Builds a `KeyValue`; the proto type has fields (string-table indexes) that traces never use.
pub fn kv(key: impl Into<String>, value: Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> KeyValue {
    KeyValue { key: key.into(), value, ..Default::default() }
}

/// Reads `service.name` from a resource, the one resource attribute every query surface needs.
pub fn service_name(resource: &Resource) -> Option<&str> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    resource.attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_hex_padding_and_errors() {
        let id = TraceId::from_hex("ABC").unwrap();
        assert_eq!(id.to_hex(), "00000000000000000000000000000abc");
        assert_eq!(TraceId::from_hex(""), Err(IdError::Length(0)));
        assert_eq!(TraceId::from_hex(&"1".repeat(33)), Err(IdError::Length(33)));
        assert!(matches!(TraceId::from_hex("xyz"), Err(IdError::NotHex(_))));
        assert_eq!(TraceId::from_hex("0000"), Err(IdError::Zero));
        assert!(TraceId::from_bytes(&[0u8; 16]).is_none());
        assert!(TraceId::from_bytes(&[1u8; 8]).is_none());
    }

    #[test]
    fn tenant_validation() {
        assert_eq!(Tenant::parse(None).unwrap().as_str(), DEFAULT_TENANT);
        assert_eq!(Tenant::parse(Some("team-a.prod_1")).unwrap().as_str(), "team-a.prod_1");
        assert!(Tenant::parse(Some("../etc")).is_err());
        assert!(Tenant::parse(Some("a/b")).is_err());
        assert!(Tenant::parse(Some("..")).is_err());
    }
}
