//! Span-level validation: the IDs a block and every query depend on.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// A request with its invalid spans removed.
pub struct Validated {
    pub request: ExportTraceServiceRequest,
    pub accepted: usize,
    pub rejected: usize,
    /// Why spans were rejected, for the partial-success message; empty when none were.
    pub message: String,
}

impl Validated {
    /// True when nothing was removed, so the request's original encoding can be logged as is.
    pub fn unchanged(&self) -> bool {
        self.rejected == 0
    }
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

/// Drops spans whose trace ID is not 16 non-zero bytes, whose span ID is not 8 non-zero bytes, or whose parent
/// span ID is neither empty nor 8 bytes. An all-zero parent is read as "no parent", which some SDKs send.
pub fn validate(mut request: ExportTraceServiceRequest) -> Validated {
    let (mut accepted, mut rejected) = (0usize, 0usize);
    let (mut bad_trace, mut bad_span, mut bad_parent) = (0usize, 0usize, 0usize);
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain_mut(|s| {
                let ok = if !valid_id(&s.trace_id, 16) {
                    bad_trace += 1;
                    false
                } else if !valid_id(&s.span_id, 8) {
                    bad_span += 1;
                    false
                } else if !(s.parent_span_id.is_empty() || s.parent_span_id.len() == 8) {
                    bad_parent += 1;
                    false
                } else {
                    true
                };
                if ok {
                    if !s.parent_span_id.is_empty() && s.parent_span_id.iter().all(|b| *b == 0) {
                        s.parent_span_id.clear();
                    }
                    accepted += 1;
                } else {
                    rejected += 1;
                }
                ok
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    request.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    let mut reasons = Vec::new();
    if bad_trace > 0 {
        reasons.push(format!("{bad_trace} with a trace ID that is not 16 non-zero bytes"));
    }
    if bad_span > 0 {
        reasons.push(format!("{bad_span} with a span ID that is not 8 non-zero bytes"));
    }
    if bad_parent > 0 {
        reasons.push(format!("{bad_parent} with a parent span ID that is not 8 bytes"));
    }
    let message = if reasons.is_empty() { String::new() } else { format!("rejected spans: {}", reasons.join(", ")) };
    Validated { request, accepted, rejected, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn span(t: Vec<u8>, s: Vec<u8>, p: Vec<u8>) -> Span {
        Span { trace_id: t, span_id: s, parent_span_id: p, ..Default::default() }
    }

    #[test]
    fn drops_invalid_ids_and_keeps_the_rest() {
        let spans = vec![
            span(vec![1; 16], vec![1; 8], vec![]),
            span(vec![1; 16], vec![2; 8], vec![0; 8]),
            span(vec![0; 16], vec![3; 8], vec![]),
            span(vec![1; 15], vec![3; 8], vec![]),
            span(vec![1; 16], vec![0; 8], vec![]),
            span(vec![1; 16], vec![4; 8], vec![1; 3]),
        ];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        let v = validate(req);
        assert_eq!((v.accepted, v.rejected), (2, 4));
        assert!(v.message.contains("2 with a trace ID"), "{}", v.message);
        assert!(v.message.contains("1 with a span ID"), "{}", v.message);
        assert!(v.message.contains("1 with a parent"), "{}", v.message);
        assert!(v.request.resource_spans[0].scope_spans[0].spans[1].parent_span_id.is_empty());
        assert!(!v.unchanged());
    }
}
