//! Tempo's tag endpoints, which feed Grafana's query builder and autocomplete:
//! `/api/search/tags`, `/api/v2/search/tags`, `/api/search/tag/<tag>/values`, `/api/v2/search/tag/<tag>/values`.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use query_lang::{BinaryOp, Body, Field, FieldExpr, Literal, Pipeline, SpansetExpr, SpansetFilter, Stage};
use serde_json::json;

use super::search::time_range;
use super::{Api, ApiError, bad_request, tenant};
use crate::model::Tenant;
use crate::query::tags::{TagRequest, TagScope, TagValue};

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
fn narrowing(q: Option<&str>) -> Option<Pipeline> {
    let q = q.map(str::trim).filter(|q| !q.is_empty())?;
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

/// A tag request, from HTTP parameters or a gRPC message.
pub(super) struct TagParams {
    pub scope: Option<String>,
    pub q: Option<String>,
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub limit: usize,
}

impl TagParams {
    fn from_http(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let (start, end) = time_range(params)?;
        Ok(TagParams {
            scope: params.get("scope").cloned(),
            q: params.get("q").cloned(),
            start,
            end,
            limit: limit(params)?,
        })
    }

    fn request(&self) -> TagRequest {
        TagRequest { start: self.start, end: self.end, narrow: narrowing(self.q.as_deref()), limit: self.limit }
    }
}

/// Tag names: v1 lists span and resource names together, v2 per scope (every scope unless `scope` is given).
pub(super) async fn names(
    api: &Api,
    tenant: &Tenant,
    p: &TagParams,
    v2: bool,
) -> Result<Vec<(TagScope, Vec<String>)>, ApiError> {
    let scopes = match p.scope.as_deref().filter(|s| !s.is_empty()) {
        None | Some("all") if v2 => TagScope::ALL.to_vec(),
        None | Some("all") => vec![TagScope::Span, TagScope::Resource],
        Some(s) => vec![TagScope::parse(s).ok_or_else(|| {
            bad_request(format!("invalid scope {s:?}: use span, resource, event, link, instrumentation or intrinsic"))
        })?],
    };
    let names = api.bounded("tag lookup", api.querier.tag_names(tenant, &scopes, &p.request())).await?;
    Ok(names.into_iter().filter(|(_, tags)| !tags.is_empty()).collect())
}

/// Typed values of a tag.
pub(super) async fn values(api: &Api, tenant: &Tenant, tag: &Field, p: &TagParams) -> Result<Vec<TagValue>, ApiError> {
    api.bounded("tag lookup", api.querier.tag_values(tenant, tag, &p.request())).await
}

/// v1 values: plain attribute keys, looked up on spans and resources; strings only.
pub(super) fn v1_field(tag: &str) -> Field {
    Field::Attribute(query_lang::Attribute::new(query_lang::Scope::Unscoped, tag))
}

/// One typed tag value as Tempo's v2 endpoint returns it.
#[derive(serde::Serialize)]
struct TypedValue {
    #[serde(rename = "type")]
    ty: String,
    value: String,
}

/// `{"tagValues": [...]}`, serialised straight from the values (a `serde_json::Value` tree of 50k entries cost
/// more than finding them).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TagValuesJson<T> {
    tag_values: Vec<T>,
}

fn reply<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn tags_v1(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    reply(
        async {
            let p = TagParams::from_http(&params)?;
            let names = names(&api, &tenant(&headers)?, &p, false).await?;
            let all: BTreeSet<String> = names.into_iter().flat_map(|(_, v)| v).collect();
            Ok(json!({ "tagNames": all.into_iter().take(p.limit).collect::<Vec<_>>() }))
        }
        .await,
    )
}

pub(super) async fn tags_v2(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    reply(
        async {
            let p = TagParams::from_http(&params)?;
            let names = names(&api, &tenant(&headers)?, &p, true).await?;
            let scopes: Vec<serde_json::Value> =
                names.into_iter().map(|(scope, tags)| json!({ "name": scope.name(), "tags": tags })).collect();
            Ok(json!({ "scopes": scopes }))
        }
        .await,
    )
}

/// A tag as Grafana names it (`span.http.method`, `resource.service.name`, `.x`, `name`, `status`, `span:name`),
/// read with the TraceQL parser so quoting and intrinsics follow the language.
pub(super) fn parse_tag(tag: &str) -> Result<Field, ApiError> {
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
    reply(
        async {
            let p = TagParams::from_http(&params)?;
            let values = values(&api, &tenant(&headers)?, &v1_field(&tag), &p).await?;
            let strings: Vec<String> = values.into_iter().filter(|v| v.ty == "string").map(|v| v.value).collect();
            Ok(TagValuesJson { tag_values: strings })
        }
        .await,
    )
}

pub(super) async fn tag_values_v2(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    reply(
        async {
            let p = TagParams::from_http(&params)?;
            let values = values(&api, &tenant(&headers)?, &parse_tag(&tag)?, &p).await?;
            let values: Vec<TypedValue> = values.into_iter().map(|v| TypedValue { ty: v.ty, value: v.value }).collect();
            Ok(TagValuesJson { tag_values: values })
        }
        .await,
    )
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
        assert!(narrowing(Some("{}")).is_none());
        assert!(narrowing(Some("{ span.a = ")).is_none());
        assert!(narrowing(Some(r#"{ resource.service.name = "a" && span."#)).is_some());
        assert!(narrowing(Some(r#"{ name = "x" }"#)).is_some());
        assert!(narrowing(Some("garbage ((")).is_none());
        assert!(narrowing(None).is_none());
    }
}
