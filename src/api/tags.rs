//! Tempo's tag endpoints, which feed Grafana's query builder and autocomplete:
//! `/api/search/tags`, `/api/v2/search/tags`, `/api/search/tag/<tag>/values`, `/api/v2/search/tag/<tag>/values`.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use query_lang::{BinaryOp, Body, Field, FieldExpr, Literal, Pipeline, SpansetExpr, SpansetFilter, Stage};
use serde_json::json;

use super::search::time_range;
use super::{Api, ApiError, bad_request, tenant};
use crate::query::tags::{TagRequest, TagScope};

/// Most names per scope, or values, one answer carries.
const MAX_TAG_LIMIT: usize = 100_000;

fn limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("limit").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(MAX_TAG_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(MAX_TAG_LIMIT),
            Ok(n) => Ok(n.min(MAX_TAG_LIMIT)),
            Err(_) => Err(bad_request(format!("invalid limit parameter {v:?}: expected a positive integer"))),
        },
    }
}

/// The query that narrows names or values. Grafana sends whatever the user has typed so far: a query that does
/// not parse is reduced to the conditions that can be recovered from it, and dropped if there are none.
fn narrowing(params: &HashMap<String, String>) -> Option<Pipeline> {
    let q = params.get("q").map(|q| q.trim()).filter(|q| !q.is_empty())?;
    if let Ok(parsed) = query_lang::parse(q)
        && query_lang::validate(&parsed).is_ok()
        && let Body::Spans(p) = parsed.body
    {
        let match_all =
            matches!(p.stages.as_slice(), [Stage::Spanset(SpansetExpr::Filter(SpansetFilter { expr: None }))]);
        return (!match_all).then_some(p);
    }
    let conds = query_lang::parse_lenient(q);
    let expr = conds
        .into_iter()
        .map(|c| FieldExpr::Binary {
            op: c.op,
            lhs: Box::new(FieldExpr::Field(c.field)),
            rhs: Box::new(FieldExpr::Literal(c.value)),
        })
        .reduce(|a, b| FieldExpr::Binary { op: BinaryOp::And, lhs: Box::new(a), rhs: Box::new(b) })?;
    let p = Pipeline { stages: vec![Stage::Spanset(SpansetExpr::Filter(SpansetFilter { expr: Some(expr) }))] };
    // Recovered conditions can still be ill-typed (`{ .a = }` then `=`): only use what validates.
    let q = query_lang::Query { body: Body::Spans(p.clone()), hints: Vec::new() };
    query_lang::validate(&q).is_ok().then_some(p)
}

fn request(params: &HashMap<String, String>) -> Result<TagRequest, ApiError> {
    let (start, end) = time_range(params)?;
    Ok(TagRequest { start, end, narrow: narrowing(params), limit: limit(params)? })
}

fn failed(e: crate::query::QueryError) -> ApiError {
    tracing::error!(error = %e, "tag lookup failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("tag lookup failed: {e}"))
}

pub(super) async fn tags_v1(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let scopes = match params.get("scope").map(String::as_str).filter(|s| !s.is_empty()) {
            None | Some("all") => vec![TagScope::Span, TagScope::Resource],
            Some(s) => vec![TagScope::parse(s).ok_or_else(|| bad_request(format!("invalid scope {s:?}")))?],
        };
        let req = request(&params)?;
        let names = api.querier.tag_names(&tenant, &scopes, &req).await.map_err(failed)?;
        let all: BTreeSet<String> = names.into_iter().flat_map(|(_, v)| v).collect();
        Ok::<_, ApiError>(json!({ "tagNames": all.into_iter().take(req.limit).collect::<Vec<_>>() }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn tags_v2(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let scopes = match params.get("scope").map(String::as_str).filter(|s| !s.is_empty()) {
            None | Some("all") => TagScope::ALL.to_vec(),
            Some(s) => vec![TagScope::parse(s).ok_or_else(|| {
                bad_request(format!(
                    "invalid scope {s:?}: use span, resource, event, link, instrumentation or intrinsic"
                ))
            })?],
        };
        let req = request(&params)?;
        let names = api.querier.tag_names(&tenant, &scopes, &req).await.map_err(failed)?;
        let scopes: Vec<serde_json::Value> = names
            .into_iter()
            .filter(|(_, tags)| !tags.is_empty())
            .map(|(scope, tags)| json!({ "name": scope.name(), "tags": tags }))
            .collect();
        Ok::<_, ApiError>(json!({ "scopes": scopes }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A tag as Grafana names it (`span.http.method`, `resource.service.name`, `.x`, `name`, `status`, `span:name`),
/// read with the TraceQL parser so quoting and intrinsics follow the language.
fn parse_tag(tag: &str) -> Result<Field, ApiError> {
    let invalid = || bad_request(format!("invalid tag {tag:?}: expected a TraceQL attribute or intrinsic"));
    let q = query_lang::parse(&format!("{{ {tag} = nil }}")).map_err(|_| invalid())?;
    match q.body {
        Body::Spans(p) => match p.stages.as_slice() {
            [Stage::Spanset(SpansetExpr::Filter(SpansetFilter { expr: Some(FieldExpr::Binary { lhs, rhs, .. }) }))]
                if matches!(**rhs, FieldExpr::Literal(Literal::Nil)) =>
            {
                match &**lhs {
                    FieldExpr::Field(f) => Ok(f.clone()),
                    _ => Err(invalid()),
                }
            }
            _ => Err(invalid()),
        },
        Body::Metrics(_) => Err(invalid()),
    }
}

pub(super) async fn tag_values_v1(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        // v1 names are plain attribute keys, looked up on spans and resources.
        let field = Field::Attribute(query_lang::Attribute::new(query_lang::Scope::Unscoped, tag.clone()));
        let req = request(&params)?;
        let values = api.querier.tag_values(&tenant, &field, &req).await.map_err(failed)?;
        let strings: Vec<String> = values.into_iter().filter(|v| v.ty == "string").map(|v| v.value).collect();
        Ok::<_, ApiError>(json!({ "tagValues": strings }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn tag_values_v2(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let field = parse_tag(&tag)?;
        let req = request(&params)?;
        let values = api.querier.tag_values(&tenant, &field, &req).await.map_err(failed)?;
        let values: Vec<serde_json::Value> =
            values.into_iter().map(|v| json!({ "type": v.ty, "value": v.value })).collect();
        Ok::<_, ApiError>(json!({ "tagValues": values }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_as_traceql_fields() {
        assert!(matches!(parse_tag("span.http.method"), Ok(Field::Attribute(_))));
        assert!(matches!(parse_tag("resource.service.name"), Ok(Field::Attribute(_))));
        assert!(matches!(parse_tag("status"), Ok(Field::Intrinsic(query_lang::Intrinsic::Status))));
        assert!(matches!(parse_tag("span:name"), Ok(Field::Intrinsic(query_lang::Intrinsic::Name))));
        assert!(parse_tag("}{").is_err());
    }

    #[test]
    fn unfinished_queries_narrow_by_what_can_be_recovered() {
        let p = |q: &str| -> HashMap<String, String> { [("q".to_string(), q.to_string())].into() };
        assert!(narrowing(&p("{}")).is_none());
        assert!(narrowing(&p("{ span.a = ")).is_none());
        assert!(narrowing(&p(r#"{ resource.service.name = "a" && span."#)).is_some());
        assert!(narrowing(&p(r#"{ name = "x" }"#)).is_some());
        assert!(narrowing(&p("garbage ((")).is_none());
    }
}
