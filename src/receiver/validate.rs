//! Span-level validation: the IDs a block and every query depend on.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

/// A request with its invalid spans removed.
pub struct Validated {
    pub request: ExportTraceServiceRequest,
    pub accepted: usize,
    pub rejected: usize,
    /// Accepted spans that were normalised (an all-zero parent ID cleared).
    pub rewritten: usize,
    /// Why spans were rejected, for the partial-success message; empty when none were.
    pub message: String,
}

impl Validated {
    /// True when nothing was removed or rewritten, so the request's original encoding can be logged as is (the
    /// WAL must replay exactly the spans that were acknowledged).
    pub fn unchanged(&self) -> bool {
        self.rejected == 0 && self.rewritten == 0
    }
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

/// Latest timestamp a block can store (signed 64-bit nanoseconds: year 2262).
const MAX_TIME: u64 = i64::MAX as u64;

/// Whether a span's timestamps fit the block format and make sense: start and end (and event times) within
/// signed 64-bit nanoseconds, end not before start.
fn valid_times(s: &Span) -> bool {
    s.start_time_unix_nano <= MAX_TIME
        && s.end_time_unix_nano <= MAX_TIME
        && s.end_time_unix_nano >= s.start_time_unix_nano
        && s.events.iter().all(|e| e.time_unix_nano <= MAX_TIME)
}

/// Whether kind and status code are values OTLP defines (blocks store them in one byte; anything else would be
/// truncated into a different value).
fn valid_codes(s: &Span) -> bool {
    (0..=5).contains(&s.kind) && s.status.as_ref().is_none_or(|st| (0..=2).contains(&st.code))
}

/// Drops spans whose trace ID is not 16 non-zero bytes, whose span ID is not 8 non-zero bytes, whose parent
/// span ID is neither empty nor 8 bytes, whose timestamps do not fit (after year 2262, or end before start), or
/// whose kind or status code OTLP does not define. An all-zero parent is read as "no parent", which some SDKs send.
pub fn validate(mut request: ExportTraceServiceRequest) -> Validated {
    let (mut accepted, mut rejected, mut rewritten) = (0usize, 0usize, 0usize);
    let (mut bad_trace, mut bad_span, mut bad_parent) = (0usize, 0usize, 0usize);
    let (mut bad_time, mut bad_code) = (0usize, 0usize);
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
                } else if !valid_times(s) {
                    bad_time += 1;
                    false
                } else if !valid_codes(s) {
                    bad_code += 1;
                    false
                } else {
                    true
                };
                if ok {
                    if !s.parent_span_id.is_empty() && s.parent_span_id.iter().all(|b| *b == 0) {
                        s.parent_span_id.clear();
                        rewritten += 1;
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
    if bad_time > 0 {
        reasons.push(format!("{bad_time} with an end before the start or a time after year 2262"));
    }
    if bad_code > 0 {
        reasons.push(format!("{bad_code} with a kind or status code OTLP does not define"));
    }
    let message = if reasons.is_empty() { String::new() } else { format!("rejected spans: {}", reasons.join(", ")) };
    Validated { request, accepted, rejected, rewritten, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span::Event};

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

    fn one(s: Span) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![s], ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_cleared_zero_parent_is_a_change() {
        // The WAL logs the original bytes only for unchanged requests: a replay must see the cleared parent.
        let v = validate(one(span(vec![1; 16], vec![1; 8], vec![0; 8])));
        assert_eq!((v.accepted, v.rejected, v.rewritten), (1, 0, 1));
        assert!(!v.unchanged());
        assert!(validate(one(span(vec![1; 16], vec![1; 8], vec![2; 8]))).unchanged());
    }

    #[test]
    fn timestamps_and_codes_that_do_not_fit_are_rejected() {
        let ok = || Span { start_time_unix_nano: 10, end_time_unix_nano: 20, ..span(vec![1; 16], vec![1; 8], vec![]) };
        let bad = [
            Span { start_time_unix_nano: u64::MAX - 5, end_time_unix_nano: u64::MAX, ..ok() },
            Span { end_time_unix_nano: 5, ..ok() },
            Span { events: vec![Event { time_unix_nano: 1 << 63, ..Default::default() }], ..ok() },
            Span { kind: 6, ..ok() },
            Span { kind: -1, ..ok() },
            Span { status: Some(Status { code: 258, message: String::new() }), ..ok() },
        ];
        for s in bad {
            let v = validate(one(s.clone()));
            assert_eq!((v.accepted, v.rejected), (0, 1), "{s:?}");
            assert!(v.message.contains("year 2262") || v.message.contains("kind or status"), "{}", v.message);
        }
        let v = validate(one(Span { kind: 5, status: Some(Status { code: 2, message: String::new() }), ..ok() }));
        assert_eq!((v.accepted, v.rejected), (1, 0));
    }
}
