//! Tag names and tag values (Grafana's autocomplete), for any attribute, over blocks and memory.
//!
//! Without a query, each source is scanned by DataFusion: `attr_keys` / `attr_values` list the generic attributes'
//! keys or typed values per row, `unnest` + `GROUP BY` makes them distinct, and dedicated slot columns are grouped
//! directly. Blocks never change, so each block's answer is cached. With a query (`q`), names and values come
//! from the spans the query matches (the spans of its spansets), as Tempo takes them from the spans matching the
//! single filter Grafana sends: a span-local query is answered by a filtered row scan, any other by the search.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int8Type};
use datafusion::logical_expr::{Expr, col};
use query_lang::{Attribute, Field, Intrinsic, Pipeline, Scope};

use super::QueryError;
use futures::StreamExt;

use super::eval::{Evaluator, ReadNeeds, SpanSet, TraceData, span_local};
use super::local::{add_parts, each_run, filtered_rows};
use super::prune::{Slots, candidate_filter};
use super::search::{SearchEngine, SearchRequest, Source, cores};
use super::udf::{attr_keys, attr_values, tag_value_text};
use crate::block::AttrScope;
use crate::block::schema::col as c;
use crate::model::Tenant;

/// The scopes of `/api/v2/search/tags`, in the order Tempo lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TagScope {
    Resource,
    Span,
    Event,
    Link,
    Instrumentation,
    Intrinsic,
}

impl TagScope {
    pub const ALL: [TagScope; 6] = [
        TagScope::Resource,
        TagScope::Span,
        TagScope::Event,
        TagScope::Link,
        TagScope::Instrumentation,
        TagScope::Intrinsic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TagScope::Resource => "resource",
            TagScope::Span => "span",
            TagScope::Event => "event",
            TagScope::Link => "link",
            TagScope::Instrumentation => "instrumentation",
            TagScope::Intrinsic => "intrinsic",
        }
    }

    pub fn parse(s: &str) -> Option<TagScope> {
        TagScope::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The attribute list column the scope's attributes live in.
    fn list_column(self) -> Option<&'static str> {
        Some(match self {
            TagScope::Resource => c::RESOURCE_ATTRS,
            TagScope::Span => c::SPAN_ATTRS,
            TagScope::Event => c::EVENTS,
            TagScope::Link => c::LINKS,
            TagScope::Instrumentation => c::SCOPE_ATTRS,
            TagScope::Intrinsic => return None,
        })
    }
}

/// Intrinsic names offered for autocomplete (those a user filters on).
pub const INTRINSIC_TAGS: &[&str] = &[
    "duration",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "link:spanID",
    "link:traceID",
    "name",
    "rootName",
    "rootServiceName",
    "span:childCount",
    "span:duration",
    "span:id",
    "span:kind",
    "span:name",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:id",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

/// What a tag request covers.
pub struct TagRequest {
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// Only names/values from the spans this pipeline matches.
    pub narrow: Option<Pipeline>,
    /// At most this many names per scope, or values.
    pub limit: usize,
}

/// One distinct value of a tag: its type (`string int float bool duration keyword`) and text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagValue {
    pub ty: String,
    pub value: String,
}

/// Bound on cached per-block answers; the cache is simply cleared when it grows past it.
const TAG_CACHE_ENTRIES: usize = 20_000;

impl SearchEngine {
    /// Distinct attribute keys per scope (intrinsics are a fixed list).
    pub async fn tag_names(
        &self,
        tenant: &Tenant,
        scopes: &[TagScope],
        req: &TagRequest,
    ) -> Result<Vec<(TagScope, Vec<String>)>, QueryError> {
        let mut out: Vec<(TagScope, BTreeSet<String>)> = scopes.iter().map(|s| (*s, BTreeSet::new())).collect();
        if let Some(p) = &req.narrow {
            let mut visit = |t: &TraceData, sets: &[SpanSet]| {
                for &i in sets.iter().flat_map(|s| &s.spans) {
                    let (v, r) = t.at(i);
                    for (scope, names) in out.iter_mut() {
                        let keys = match scope {
                            TagScope::Resource => v.attr_keys(r, AttrScope::Resource),
                            TagScope::Span => v.attr_keys(r, AttrScope::Span),
                            TagScope::Instrumentation => v.attr_keys(r, AttrScope::Instrumentation),
                            TagScope::Event => v.event_attr_keys(r),
                            TagScope::Link => v.link_attr_keys(r),
                            TagScope::Intrinsic => Vec::new(),
                        };
                        for k in keys {
                            if !names.contains(k) {
                                names.insert(k.to_string());
                            }
                        }
                    }
                }
            };
            self.matching(tenant, p, req, &mut visit, super::search::Reads::All).await?;
        } else {
            let sources = self.sources(tenant, req.start, req.end)?;
            for source in &sources {
                for (scope, names) in &mut out {
                    let Some(list) = scope.list_column() else { continue };
                    names.extend(
                        self.cached(tenant, source, &format!("names:{list}"), async move |e| e.keys(list).await)
                            .await?
                            .iter()
                            .cloned(),
                    );
                    if let Some(b) = source.block() {
                        let slots = super::prune::Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list);
                        for (resource, key) in slots.keys() {
                            let s = if resource { TagScope::Resource } else { TagScope::Span };
                            if s == *scope {
                                names.insert(key.to_string());
                            }
                        }
                    }
                    if *scope == TagScope::Resource {
                        let svc = self
                            .cached(tenant, source, "values:service_name", async move |e| {
                                e.column_values(c::SERVICE_NAME).await
                            })
                            .await?;
                        if !svc.is_empty() {
                            names.insert("service.name".into());
                        }
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|(scope, names)| {
                let v: Vec<String> = if scope == TagScope::Intrinsic {
                    INTRINSIC_TAGS.iter().map(|s| s.to_string()).collect()
                } else {
                    names.into_iter().collect()
                };
                (scope, v.into_iter().take(req.limit).collect())
            })
            .collect())
    }

    /// Distinct typed values of one tag.
    pub async fn tag_values(
        &self,
        tenant: &Tenant,
        tag: &Field,
        req: &TagRequest,
    ) -> Result<Vec<TagValue>, QueryError> {
        let mut lists: Vec<Arc<Vec<String>>> = Vec::new();
        if let Some(p) = &req.narrow {
            let texts = if span_local(p, std::slice::from_ref(tag)) {
                self.scan_values(tenant, p, tag, req).await?
            } else {
                let eval = Evaluator::new(p.clone());
                let mut texts: BTreeSet<String> = BTreeSet::new();
                let mut visit = |t: &TraceData, sets: &[SpanSet]| {
                    for i in sets.iter().flat_map(|s| &s.spans) {
                        texts.extend(eval.tag_values(t, *i, tag));
                    }
                };
                let reads = super::search::Reads::Fields(std::slice::from_ref(tag));
                self.matching(tenant, p, req, &mut visit, reads).await?;
                texts
            };
            lists.push(Arc::new(texts.into_iter().collect()));
        } else {
            let sources = self.sources(tenant, req.start, req.end)?;
            // The blocks' values merged once per set of blocks (blocks never change; sorting 45k values of nine
            // blocks on every request was most of a 40 ms listing); memory's are merged in per request.
            let blocks: Vec<&str> =
                sources.iter().filter_map(Source::block).map(|b| b.meta.block_id.as_str()).collect();
            let key = (format!("merged:{}:{}", tenant.as_str(), blocks.join(",")), format!("values:{tag}"));
            let cached = self.tag_cache.lock().get(&key).cloned();
            let merged = match cached {
                Some(m) => m,
                None => {
                    let mut parts: Vec<Arc<Vec<String>>> = Vec::new();
                    for source in sources.iter().filter(|s| s.block().is_some()) {
                        parts.extend(self.source_values(tenant, source, tag).await?);
                    }
                    let mut all: Vec<&str> = parts.iter().flat_map(|l| l.iter().map(String::as_str)).collect();
                    all.sort_unstable();
                    all.dedup();
                    let m = Arc::new(all.into_iter().map(str::to_string).collect::<Vec<String>>());
                    let mut cache = self.tag_cache.lock();
                    if cache.len() >= TAG_CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(key, m.clone());
                    m
                }
            };
            lists.push(merged);
            for source in sources.iter().filter(|s| s.block().is_none()) {
                lists.extend(self.source_values(tenant, source, tag).await?);
            }
        }
        // The first list is sorted and distinct (the blocks' merged values, or the narrowed values); the rest
        // (memory's) are few: sorted on their own, then merged in one pass. By reference: the cached lists stay
        // in the cache, only the answer is copied.
        let Some((first, rest)) = lists.split_first() else { return Ok(Vec::new()) };
        let mut extra: Vec<&str> = rest.iter().flat_map(|l| l.iter().map(String::as_str)).collect();
        extra.sort_unstable();
        extra.dedup();
        let mut merged: Vec<&str> = Vec::with_capacity(first.len() + extra.len());
        let (mut a, mut b) = (first.iter().map(String::as_str).peekable(), extra.into_iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match x.cmp(y) {
                std::cmp::Ordering::Less => merged.extend(a.next()),
                std::cmp::Ordering::Greater => merged.extend(b.next()),
                std::cmp::Ordering::Equal => {
                    merged.extend(a.next());
                    b.next();
                }
            }
        }
        merged.extend(a.chain(b));
        Ok(typed_values(merged.into_iter(), req.limit))
    }

    /// Values of `tag` on the spans a span-local pipeline (`eval::span_local`) matches: every source in range is
    /// read as rows passing the query's candidate predicate (from the cached decoded columns when the range fits
    /// the cache, else a Parquet scan with the predicate pushed down), with only the columns the query and the
    /// tag name, and evaluated a trace's run of rows at a time. No trace is assembled: a span-local query matches
    /// the same spans either way. Sources are read in parallel.
    async fn scan_values(
        &self,
        tenant: &Tenant,
        p: &Pipeline,
        tag: &Field,
        req: &TagRequest,
    ) -> Result<BTreeSet<String>, QueryError> {
        let needs = Arc::new(ReadNeeds::new(p).with_field(tag));
        let eval = Arc::new(Evaluator::new(p.clone()));
        let sources = self.sources(tenant, req.start, req.end)?;
        let cached = self.fits_cache(&sources);
        let tasks = sources.into_iter().map(|source| {
            let (eval, needs, tag, p) = (eval.clone(), needs.clone(), tag.clone(), p.clone());
            let (blocks, tenant, ctx) = (self.blocks.clone(), tenant.clone(), self.context());
            tokio::spawn(async move {
                let mut texts: BTreeSet<String> = BTreeSet::new();
                let mut visit = |t: &TraceData, sets: &[SpanSet]| {
                    for i in sets.iter().flat_map(|s| &s.spans) {
                        texts.extend(eval.tag_values(t, *i, &tag));
                    }
                };
                match source {
                    Source::Memory(batches) => {
                        for batch in &batches {
                            each_run(batch, &[], &eval, &mut visit)?;
                        }
                    }
                    Source::Block(b) => {
                        let filter =
                            candidate_filter(&p, &Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list));
                        let mut names: Vec<String> = needs.view_columns().iter().map(|c| c.to_string()).collect();
                        add_parts(&needs, &b, &mut names);
                        let rows = match filter.is_some() {
                            true => 0,
                            false => blocks.trace_index(&tenant, &b).await?.num_rows(),
                        };
                        for batch in
                            filtered_rows(&ctx, &tenant, &b, filter, &names, &blocks, cached, rows, Default::default())
                                .await?
                                .iter()
                                .flatten()
                        {
                            each_run(batch, &b.meta.dedicated_columns, &eval, &mut visit)?;
                        }
                    }
                }
                Ok::<_, QueryError>(texts)
            })
        });
        let mut done = futures::stream::iter(tasks).buffer_unordered(cores());
        let mut out = BTreeSet::new();
        while let Some(r) = done.next().await {
            out.append(&mut r??);
        }
        Ok(out)
    }

    /// Hands every trace the pipeline matches in the range, whole, to `visit` (one at a time: memory stays bounded).
    async fn matching(
        &self,
        tenant: &Tenant,
        p: &Pipeline,
        req: &TagRequest,
        visit: super::search::Visit<'_>,
        reads: super::search::Reads<'_>,
    ) -> Result<(), QueryError> {
        let search = SearchRequest {
            pipeline: p.clone(),
            limit: usize::MAX,
            spans_per_spanset: 0,
            start: req.start,
            end: req.end,
        };
        self.search_with(tenant, &search, Some((visit, reads)), None).await?;
        Ok(())
    }

    /// Tag values in one source (rendered typed values, several lists), from the generic lists and slot columns
    /// that can hold the tag. Each list is cached per block as rendered, so a warm listing only merges.
    async fn source_values(
        &self,
        tenant: &Tenant,
        source: &Source,
        tag: &Field,
    ) -> Result<Vec<Arc<Vec<String>>>, QueryError> {
        let slots = source
            .block()
            .map(|b| super::prune::Slots::new(&b.meta.dedicated_columns, b.meta.service_name_in_list))
            .unwrap_or_default();
        let mut out: Vec<Arc<Vec<String>>> = Vec::new();
        match tag {
            Field::Attribute(Attribute { scope, name, .. }) => {
                let scopes: &[TagScope] = match scope {
                    Scope::Span => &[TagScope::Span],
                    Scope::Resource => &[TagScope::Resource],
                    Scope::Event => &[TagScope::Event],
                    Scope::Link => &[TagScope::Link],
                    Scope::Instrumentation => &[TagScope::Instrumentation],
                    Scope::Unscoped => &[TagScope::Span, TagScope::Resource, TagScope::Link, TagScope::Event],
                };
                for s in scopes {
                    let Some(list) = s.list_column() else { continue };
                    let key = format!("values:{list}:{name}");
                    out.push(self.cached(tenant, source, &key, async move |e| e.list_values(list, name).await).await?);
                    let resource = *s == TagScope::Resource;
                    if resource && name == "service.name" {
                        out.push(self.typed(tenant, source, c::SERVICE_NAME, "string").await?);
                    }
                    if matches!(s, TagScope::Resource | TagScope::Span) {
                        if let Some(slot) = slots.string_slot(resource, name) {
                            out.push(self.typed(tenant, source, slot, "string").await?);
                        }
                        if let (false, Some(slot)) = (resource, slots.int_slot(name)) {
                            out.push(self.typed(tenant, source, slot, "int").await?);
                        }
                    }
                }
            }
            Field::Intrinsic(i) => match i {
                Intrinsic::Name => out.push(self.typed(tenant, source, c::NAME, "string").await?),
                Intrinsic::StatusMessage => out.push(self.typed(tenant, source, c::STATUS_MESSAGE, "string").await?),
                Intrinsic::TraceRootService => out.push(self.typed(tenant, source, c::ROOT_SERVICE, "string").await?),
                Intrinsic::TraceRootName => out.push(self.typed(tenant, source, c::ROOT_NAME, "string").await?),
                Intrinsic::InstrumentationName => out.push(self.typed(tenant, source, c::SCOPE_NAME, "string").await?),
                Intrinsic::InstrumentationVersion => {
                    out.push(self.typed(tenant, source, c::SCOPE_VERSION, "string").await?)
                }
                Intrinsic::Status => out.push(
                    self.keywords(tenant, source, c::STATUS_CODE, |code| match code {
                        "1" => "ok",
                        "2" => "error",
                        _ => "unset",
                    })
                    .await?,
                ),
                Intrinsic::Kind => out.push(
                    self.keywords(tenant, source, c::KIND, |kind| match kind {
                        "1" => "internal",
                        "2" => "server",
                        "3" => "client",
                        "4" => "producer",
                        "5" => "consumer",
                        _ => "unspecified",
                    })
                    .await?,
                ),
                // Durations and IDs have as many values as spans: not offered, as in Tempo.
                _ => {}
            },
        }
        Ok(out)
    }

    /// Distinct values of a numeric enum column (status, kind), rendered as TraceQL keywords (cached rendered).
    async fn keywords(
        &self,
        tenant: &Tenant,
        source: &Source,
        column: &str,
        name: fn(&str) -> &'static str,
    ) -> Result<Arc<Vec<String>>, QueryError> {
        self.cached(tenant, source, &format!("keywords:{column}"), async move |e| {
            Ok(e.column_values(column).await?.iter().map(|v| tag_value_text("keyword", name(v))).collect())
        })
        .await
    }

    /// Distinct non-null values of a column, rendered with type `ty` (cached rendered).
    async fn typed(
        &self,
        tenant: &Tenant,
        source: &Source,
        column: &str,
        ty: &str,
    ) -> Result<Arc<Vec<String>>, QueryError> {
        self.cached(tenant, source, &format!("typed:{ty}:{column}"), async move |e| {
            Ok(e.column_values(column).await?.iter().map(|x| tag_value_text(ty, x)).collect())
        })
        .await
    }

    /// Runs `f` over the source's table, caching the answer for blocks.
    async fn cached<F>(
        &self,
        tenant: &Tenant,
        source: &Source,
        what: &str,
        f: F,
    ) -> Result<Arc<Vec<String>>, QueryError>
    where
        F: AsyncFnOnce(ScanOf<'_>) -> Result<Vec<String>, QueryError>,
    {
        let key = source.block().map(|b| (b.meta.block_id.clone(), what.to_string()));
        if let Some(k) = &key
            && let Some(hit) = self.tag_cache.lock().get(k)
        {
            return Ok(hit.clone());
        }
        let Some((table, _)) = self.table(tenant, source)? else { return Ok(Arc::new(Vec::new())) };
        let ctx = self.context();
        let v = Arc::new(f(ScanOf { ctx: &ctx, table }).await?);
        if let Some(k) = key {
            let mut cache = self.tag_cache.lock();
            if cache.len() >= TAG_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(k, v.clone());
        }
        Ok(v)
    }
}

/// One source's table, ready for the small DataFusion plans tags need.
pub(crate) struct ScanOf<'a> {
    ctx: &'a datafusion::prelude::SessionContext,
    table: Arc<dyn datafusion::catalog::TableProvider>,
}

impl ScanOf<'_> {
    /// `SELECT DISTINCT unnest(expr)` where `expr` yields a list of strings per row.
    async fn distinct_unnested(&self, expr: Expr) -> Result<Vec<String>, QueryError> {
        let df = self
            .ctx
            .read_table(self.table.clone())?
            .select(vec![expr.alias("v")])?
            .unnest_columns(&["v"])?
            .aggregate(vec![col("v")], vec![])?;
        strings(df.collect().await?)
    }

    async fn keys(&self, list: &str) -> Result<Vec<String>, QueryError> {
        self.distinct_unnested(attr_keys(col(list))).await
    }

    async fn list_values(&self, list: &str, key: &str) -> Result<Vec<String>, QueryError> {
        self.distinct_unnested(attr_values(col(list), key)).await
    }

    /// Distinct non-null values of a plain column, as text.
    async fn column_values(&self, column: &str) -> Result<Vec<String>, QueryError> {
        let df = self
            .ctx
            .read_table(self.table.clone())?
            .filter(col(column).is_not_null())?
            .aggregate(vec![col(column)], vec![])?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            let a = b.column(0);
            match a.data_type() {
                DataType::Int8 => {
                    let a = a.as_primitive::<Int8Type>();
                    out.extend((0..a.len()).filter(|&i| a.is_valid(i)).map(|i| a.value(i).to_string()));
                }
                DataType::Int64 => {
                    let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                    out.extend((0..a.len()).filter(|&i| a.is_valid(i)).map(|i| a.value(i).to_string()));
                }
                _ => out.extend(strings(vec![b])?),
            }
        }
        Ok(out)
    }
}

/// Rendered `type\u{1f}text` values (sorted, distinct) as typed tag values, at most `limit`.
fn typed_values<'a>(texts: impl Iterator<Item = &'a str>, limit: usize) -> Vec<TagValue> {
    texts
        .filter_map(|t| {
            let (ty, value) = t.split_once('\u{1f}')?;
            Some(TagValue { ty: ty.to_string(), value: value.to_string() })
        })
        .take(limit)
        .collect()
}

fn strings(batches: Vec<arrow::array::RecordBatch>) -> Result<Vec<String>, QueryError> {
    let mut out = Vec::new();
    for b in batches {
        let a = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let a = a.as_string::<i32>();
        out.extend((0..a.len()).filter(|&i| a.is_valid(i)).map(|i| a.value(i).to_string()));
    }
    Ok(out)
}
