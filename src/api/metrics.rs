//! `GET /api/metrics/query_range` and `GET /api/metrics/query`: TraceQL metrics in Tempo's QueryRangeResponse /
//! QueryInstantResponse, protobuf or proto3 JSON. Parameters, defaults, alignment and limits as Tempo 2.9+:
//! a range is aligned to its step (start down, one extra leading interval; end up) and samples are stamped with
//! their interval's end; an instant query is one interval `(start, end]`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use prost::Message;
use query_lang::{Body, Literal, MetricsExpr, ValidationError};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::search::{AttributesJson, MetricsJson, Seq, StrI64, metrics_proto};
use super::{Api, ApiError, bad_request, parse_time, tempopb, tenant, wants_protobuf};
use crate::config::QueryLimits;
use crate::query::metrics::{MetricsRequest, MetricsResult, Series};

/// Range used when `start` is not given (Tempo's `since` default).
const DEFAULT_SINCE: Duration = Duration::from_secs(3600);
/// Most exemplars in one answer (Tempo's default `max_exemplars`).
pub const MAX_EXEMPLARS: usize = 100;

/// A parsed metrics query with what its hints ask for.
pub struct ParsedMetrics {
    pub expr: MetricsExpr,
    /// `with(exemplars=...)`: `Some(n)` overrides the request parameter.
    pub exemplars_hint: Option<usize>,
}

/// Parses and validates a metrics query (400 with the parser's message and position otherwise).
pub fn parse_metrics(q: &str) -> Result<ParsedMetrics, ApiError> {
    let parsed = query_lang::parse(q).map_err(|e| bad_request(format!("invalid TraceQL query: {e}")))?;
    match query_lang::validate(&parsed) {
        Ok(()) => {}
        Err(ValidationError::Unsupported(m)) => {
            return Err(bad_request(format!("unsupported TraceQL: {m} is not supported yet")));
        }
        Err(e) => return Err(bad_request(format!("invalid TraceQL query: {e}"))),
    }
    let exemplars_hint = parsed.hints.iter().rev().find(|h| h.name == "exemplars").and_then(|h| match &h.value {
        Literal::Bool(true) => Some(MAX_EXEMPLARS),
        Literal::Bool(false) => Some(0),
        Literal::Int(n) => Some((*n).clamp(0, MAX_EXEMPLARS as i64) as usize),
        _ => None,
    });
    match parsed.body {
        Body::Metrics(expr) => Ok(ParsedMetrics { expr, exemplars_hint }),
        Body::Spans(_) => Err(bad_request(
            "a metrics query needs a metrics function, e.g. '{ } | rate()'; searches are answered by /api/search",
        )),
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// `start`/`end` with Tempo's defaults: end now, start an hour before end (or `since` before it).
fn bounds(params: &HashMap<String, String>) -> Result<(u64, u64), ApiError> {
    let get = |key: &str| -> Result<Option<u64>, ApiError> {
        match params.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_time(v).map(Some).ok_or_else(|| bad_request(format!("invalid {key} parameter {v:?}"))),
        }
    };
    let end = get("end")?.unwrap_or_else(now_nanos);
    let start = match get("start")? {
        Some(s) => s,
        None => {
            let since = match params.get("since").map(|v| v.trim()).filter(|v| !v.is_empty()) {
                Some(v) => humantime::parse_duration(v)
                    .map_err(|e| bad_request(format!("invalid since parameter {v:?}: {e}")))?,
                None => DEFAULT_SINCE,
            };
            end.saturating_sub(since.as_nanos() as u64)
        }
    };
    Ok((start, end))
}

/// `step`: seconds (`15`, `0.5`) or a duration (`15s`, `1m30s`), in nanoseconds.
fn parse_step(v: &str) -> Result<u64, ApiError> {
    let v = v.trim();
    if let Ok(f) = v.parse::<f64>() {
        if !f.is_finite() || f <= 0.0 || f * 1e9 >= u64::MAX as f64 {
            return Err(bad_request(format!("cannot parse {v:?}: step must be positive")));
        }
        return Ok((f * 1e9) as u64);
    }
    humantime::parse_duration(v)
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .map_err(|e| bad_request(format!("invalid step parameter {v:?}: {e}")))
}

/// Tempo's default step: about 240 points, rounded down to a tidy unit (1h, 5m, 1m, 15s, 5s, 1s; 50 ms steps
/// under a minute of range).
pub fn default_step(start: u64, end: u64) -> u64 {
    const S: u64 = 1_000_000_000;
    let base = end.saturating_sub(start) / 240;
    if end.saturating_sub(start) < 60 * S {
        let ms50 = 50_000_000;
        return (base / ms50 * ms50).max(ms50);
    }
    for unit in [3600 * S, 300 * S, 60 * S, 15 * S, 5 * S, S] {
        if base > unit {
            return base / unit * unit;
        }
    }
    S
}

/// Tempo's range checks: end after start, range within the maximum, not too many intervals.
fn check_range(limits: &QueryLimits, start: u64, end: u64, step: u64) -> Result<(), ApiError> {
    if start >= end {
        return Err(bad_request("end must be greater than start"));
    }
    let range = end - start;
    if range > limits.metrics_max_range.as_nanos() as u64 {
        return Err(bad_request(format!(
            "metrics query time range exceeds the maximum allowed duration of {} (metrics_max_range)",
            humantime::format_duration(limits.metrics_max_range)
        )));
    }
    if step == 0 || range / step > limits.metrics_max_intervals {
        let min = Duration::from_nanos(range / limits.metrics_max_intervals);
        return Err(bad_request(format!(
            "step of {} is too small, minimum step for given range is {}",
            humantime::format_duration(Duration::from_nanos(step)),
            humantime::format_duration(min)
        )));
    }
    Ok(())
}

/// Aligns a range to its step: start down (and one interval earlier, so the first stamp is the step multiple
/// at or before the requested start), end up.
pub fn align(start: u64, end: u64, step: u64) -> (u64, u64) {
    let mut s = start - start % step;
    if s > step {
        s -= step;
    }
    let e = end.div_ceil(step).saturating_mul(step);
    (s, e)
}

/// The `exemplars` parameter: absent or 0 means the maximum (as Tempo), more is capped.
fn exemplars_param(params: &HashMap<String, String>) -> Result<u64, ApiError> {
    match params.get("exemplars").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| bad_request(format!("invalid exemplars parameter {v:?}: expected a positive integer"))),
    }
}

/// Everything a range query needs, validated and aligned. `exemplars`: the request's count (0: the maximum);
/// a `with(exemplars=...)` hint overrides it.
pub fn range_request(
    limits: &QueryLimits,
    query: &str,
    start: u64,
    end: u64,
    step: Option<u64>,
    exemplars: u64,
) -> Result<MetricsRequest, ApiError> {
    let parsed = parse_metrics(query)?;
    let wanted = if exemplars == 0 { MAX_EXEMPLARS } else { exemplars.min(MAX_EXEMPLARS as u64) as usize };
    let step = step.unwrap_or_else(|| default_step(start, end));
    check_range(limits, start, end, step)?;
    let (start, end) = align(start, end, step);
    Ok(MetricsRequest {
        expr: parsed.expr,
        start,
        end,
        step,
        exemplars: parsed.exemplars_hint.unwrap_or(wanted),
        max_series: limits.metrics_max_series,
    })
}

/// An instant query: one interval `(start, end]`, no exemplars.
pub fn instant_request(limits: &QueryLimits, query: &str, start: u64, end: u64) -> Result<MetricsRequest, ApiError> {
    let parsed = parse_metrics(query)?;
    let step = end.saturating_sub(start);
    check_range(limits, start, end, step.max(1))?;
    Ok(MetricsRequest { expr: parsed.expr, start, end, step, exemplars: 0, max_series: limits.metrics_max_series })
}

fn query_param(params: &HashMap<String, String>) -> Result<&str, ApiError> {
    // `q` wins over the older `query`.
    ["q", "query"]
        .iter()
        .find_map(|k| params.get(*k).map(|v| v.trim()).filter(|v| !v.is_empty()))
        .ok_or_else(|| bad_request("missing q parameter: a TraceQL metrics query, e.g. '{ } | rate()'"))
}

pub(super) async fn query_range(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let q = query_param(&params)?;
        let (start, end) = bounds(&params)?;
        let step = params.get("step").map(|v| v.trim()).filter(|v| !v.is_empty()).map(parse_step).transpose()?;
        let req = range_request(&api.limits.query, q, start, end, step, exemplars_param(&params)?)?;
        api.bounded("metrics query", api.querier.metrics(&tenant, &req)).await
    };
    answer(&api, &headers, run.await, |r| range_proto(r).encode_to_vec(), |r| api.json_chunked(&RangeJson(r)))
}

pub(super) async fn query_instant(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let q = query_param(&params)?;
        let (start, end) = bounds(&params)?;
        let req = instant_request(&api.limits.query, q, start, end)?;
        api.bounded("metrics query", api.querier.metrics(&tenant, &req)).await
    };
    answer(&api, &headers, run.await, |r| instant_proto(r).encode_to_vec(), |r| api.json_chunked(&InstantJson(r)))
}

/// The answer in the form the client asked for (protobuf or JSON), or the error.
fn answer(
    api: &Api,
    headers: &HeaderMap,
    result: Result<MetricsResult, ApiError>,
    proto: impl FnOnce(&MetricsResult) -> Vec<u8>,
    json: impl FnOnce(&MetricsResult) -> Response,
) -> Response {
    match result {
        Ok(r) if wants_protobuf(headers) => api.sized(proto(&r), "application/protobuf"),
        Ok(r) => json(&r),
        Err(e) => e.into_response(),
    }
}

pub(super) fn range_proto(r: &MetricsResult) -> tempopb::QueryRangeResponse {
    tempopb::QueryRangeResponse {
        series: r
            .series
            .iter()
            .map(|s| tempopb::TimeSeries {
                labels: s.labels.clone(),
                samples: s.samples.iter().map(|(t, v)| tempopb::Sample { value: *v, timestamp_ms: *t }).collect(),
                exemplars: s
                    .exemplars
                    .iter()
                    .map(|e| tempopb::Exemplar {
                        labels: e.labels.clone(),
                        value: e.value,
                        timestamp_ms: e.timestamp_ms,
                    })
                    .collect(),
            })
            .collect(),
        metrics: Some(metrics_proto(&r.stats)),
        status: 0,
        message: String::new(),
    }
}

/// The single value of an instant series: its one interval (none when the interval had no value).
fn instant_value(s: &Series) -> Option<f64> {
    s.samples.first().map(|(_, v)| *v)
}

pub(super) fn instant_proto(r: &MetricsResult) -> tempopb::QueryInstantResponse {
    tempopb::QueryInstantResponse {
        series: r
            .series
            .iter()
            .filter_map(|s| Some(tempopb::InstantSeries { labels: s.labels.clone(), value: instant_value(s)? }))
            .collect(),
        metrics: Some(metrics_proto(&r.stats)),
        status: 0,
        message: String::new(),
    }
}

/// A double in proto3 JSON: a number, or "NaN" / "Infinity" / "-Infinity".
struct F64(f64);

impl Serialize for F64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v == f64::INFINITY => s.serialize_str("Infinity"),
            v if v == f64::NEG_INFINITY => s.serialize_str("-Infinity"),
            v => s.serialize_f64(v),
        }
    }
}

struct SampleJson(i64, f64);

impl Serialize for SampleJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        put!(m, "timestampMs", StrI64(self.0), self.0 == 0);
        put!(m, "value", F64(self.1), self.1 == 0.0);
        m.end()
    }
}

struct ExemplarJson<'a>(&'a crate::query::metrics::Exemplar);

impl Serialize for ExemplarJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        put!(m, "labels", AttributesJson(&e.labels), e.labels.is_empty());
        put!(m, "value", F64(e.value), e.value == 0.0);
        put!(m, "timestampMs", StrI64(e.timestamp_ms), e.timestamp_ms == 0);
        m.end()
    }
}

struct SeriesJson<'a>(&'a Series);

impl Serialize for SeriesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        put!(m, "labels", AttributesJson(&x.labels), x.labels.is_empty());
        put!(m, "samples", Seq(x.samples.iter().map(|(t, v)| SampleJson(*t, *v))), x.samples.is_empty());
        put!(m, "exemplars", Seq(x.exemplars.iter().map(ExemplarJson)), x.exemplars.is_empty());
        m.end()
    }
}

/// QueryRangeResponse in proto3 JSON (status COMPLETE and an empty message are defaults, so omitted).
struct RangeJson<'a>(&'a MetricsResult);

impl Serialize for RangeJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let metrics = metrics_proto(&self.0.stats);
        let mut m = s.serialize_map(None)?;
        put!(m, "series", Seq(self.0.series.iter().map(SeriesJson)), self.0.series.is_empty());
        m.serialize_entry("metrics", &MetricsJson(&metrics))?;
        m.end()
    }
}

struct InstantSeriesJson<'a>(&'a Series, f64);

impl Serialize for InstantSeriesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        put!(m, "labels", AttributesJson(&self.0.labels), self.0.labels.is_empty());
        put!(m, "value", F64(self.1), self.1 == 0.0);
        m.end()
    }
}

/// QueryInstantResponse in proto3 JSON (Grafana decodes it strictly: nothing outside the message).
struct InstantJson<'a>(&'a MetricsResult);

impl Serialize for InstantJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let metrics = metrics_proto(&self.0.stats);
        let series: Vec<(&Series, f64)> = self.0.series.iter().filter_map(|s| Some((s, instant_value(s)?))).collect();
        let mut m = s.serialize_map(None)?;
        put!(m, "series", Seq(series.iter().map(|(s, v)| InstantSeriesJson(s, *v))), series.is_empty());
        m.serialize_entry("metrics", &MetricsJson(&metrics))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn alignment_adds_one_leading_interval_and_rounds_end_up() {
        // [1007 s, 1063 s] with 15 s steps: stamps 1005..1065, first interval (990, 1005].
        let (s, e) = align(1007 * S, 1063 * S, 15 * S);
        assert_eq!((s, e), (990 * S, 1065 * S));
        assert_eq!(align(30 * S, 60 * S, 15 * S), (15 * S, 60 * S));
    }

    #[test]
    fn default_steps_follow_tempo() {
        assert_eq!(default_step(0, 3600 * S), 15 * S);
        assert_eq!(default_step(0, 24 * 3600 * S), 300 * S);
        assert_eq!(default_step(0, 30 * S), 100_000_000);
        assert_eq!(default_step(0, 5 * S), 50_000_000);
    }

    #[test]
    fn steps_parse_as_seconds_or_durations() {
        assert_eq!(parse_step("15").ok(), Some(15 * S));
        assert_eq!(parse_step("0.5").ok(), Some(S / 2));
        assert_eq!(parse_step("1m30s").ok(), Some(90 * S));
        assert!(parse_step("-1").is_err());
        assert!(parse_step("soon").is_err());
    }

    #[test]
    fn ranges_are_checked() {
        let l = QueryLimits::default();
        assert!(check_range(&l, 10 * S, 10 * S, S).is_err());
        assert!(check_range(&l, 0, 25 * 3600 * S, 3600 * S).is_err());
        let e = check_range(&l, 0, 3600 * S, S / 10).err().map(|e| e.1).unwrap_or_default();
        assert!(e.contains("step of 100ms is too small, minimum step for given range is 360ms"), "{e}");
        assert!(check_range(&l, 0, 3600 * S, S).is_ok());
    }
}
