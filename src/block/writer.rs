//! Builds a block from live traces: nested-set numbering, dedicated-column choice, Parquet, bloom and meta.

use ahash::AHashMap as HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, Int8Builder, Int32Builder, Int64Builder, ListArray, RecordBatch, StringBuilder,
    StructArray, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::attrs::AttrListBuilder;
use super::schema::{self, RES_STR_SLOTS, SPAN_INT_SLOTS, SPAN_STR_SLOTS, col, event_fields, link_fields};
use super::{BlockError, BlockMeta, DedicatedColumn, FORMAT, TraceBloom};
use crate::model::{Origin, SpanRecord, TraceId};

/// Parquet key-value metadata key holding the block's dedicated-column mapping (JSON, as in `meta.json`).
pub const DEDICATED_COLUMNS_KEY: &str = "strata.dedicated_columns";

/// Dedicated keys (and `service.name`) with values left in the generic lists: (is a resource key, key).
type Spilled = std::collections::HashSet<(bool, String)>;

/// Tuning knobs for block building.
#[derive(Debug, Clone)]
pub struct BlockOptions {
    /// Rows per Parquet row group: smaller groups mean less to read per trace lookup.
    pub row_group_rows: usize,
    pub zstd_level: i32,
    /// Rows per data page: a trace lookup reads only the pages that may hold the trace.
    pub page_rows: usize,
    /// An attribute key must occur in at least this share of spans to earn a dedicated column.
    pub dedicated_min_share: f64,
    /// LZ4 instead of zstd for the columns searches filter on (see [`search_columns`]).
    pub lz4_search_columns: bool,
}

/// Columns compressed with LZ4 rather than zstd: the intrinsics and dedicated slots search scans decode on every
/// query (zstd decompression was 40% of a warm search's CPU), and span IDs, which are random so zstd saves nothing
/// on them. Measured: `duration` range searches ~2x faster; ingest CPU 8.0 us/span instead of 11.2 (compressing
/// these columns with zstd was a quarter of it) for 3% more bytes than LZ4 on numeric columns only, 8% more
/// than all-zstd. The bulky columns a fetch reads whole (timestamps, IDs, attribute lists, events, links) stay
/// zstd, where it saves most.
pub fn search_columns() -> Vec<String> {
    let mut cols: Vec<String> = [
        col::SPAN_ID,
        col::NAME,
        col::KIND,
        col::DURATION,
        col::STATUS_CODE,
        col::STATUS_MESSAGE,
        col::NESTED_LEFT,
        col::NESTED_RIGHT,
        col::NESTED_PARENT,
        col::SERVICE_NAME,
        col::SCOPE_NAME,
        col::SCOPE_VERSION,
        col::ROOT_SERVICE,
        col::ROOT_NAME,
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    cols.extend((0..schema::RES_STR_SLOTS).map(schema::res_str_col));
    cols.extend((0..schema::SPAN_STR_SLOTS).map(schema::span_str_col));
    cols.extend((0..schema::SPAN_INT_SLOTS).map(schema::span_int_col));
    cols
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            row_group_rows: 16 * 1024,
            zstd_level: 3,
            page_rows: 4096,
            dedicated_min_share: 0.05,
            lz4_search_columns: true,
        }
    }
}

/// A block ready for upload, plus its decoded footer so readers need not fetch it again.
pub struct BuiltBlock {
    pub meta: BlockMeta,
    pub data: Bytes,
    pub bloom: Bytes,
    pub bloom_filter: TraceBloom,
    pub parquet_meta: Arc<ParquetMetaData>,
}

/// Builds one block from traces sorted by trace ID. `raw_bytes` is the OTLP size the spans arrived as.
pub fn build_block(
    tenant: &str,
    block_id: &str,
    traces: &[(TraceId, Vec<SpanRecord>)],
    raw_bytes: u64,
    opts: &BlockOptions,
) -> Result<BuiltBlock, BlockError> {
    if traces.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(BlockError::Layout("traces must be sorted by trace ID and unique".into()));
    }
    let dedicated = choose_dedicated(traces, opts.dedicated_min_share);
    let props = writer_properties(opts)?;
    let mut writer = ArrowWriter::try_new(Vec::new(), schema::schema(), Some(props))?;
    let mut bloom = TraceBloom::with_capacity(traces.len())?;
    for (id, _) in traces {
        bloom.insert(id);
    }
    let (start, end, spans, spilled) =
        write_rows(traces.iter().map(|(id, r)| (id, r.as_slice())), &dedicated, opts.row_group_rows, |b| {
            Ok(writer.write(&b)?)
        })?;
    let dedicated_columns = dedicated.columns(&spilled);
    // The file describes its own slots too, so it can be read without its meta.json.
    writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
        DEDICATED_COLUMNS_KEY.to_string(),
        serde_json::to_string(&dedicated_columns)?,
    ));
    let data = Bytes::from(writer.into_inner()?);
    let parquet_meta = Arc::new(
        ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional).parse_and_finish(&data)?,
    );
    let bloom_bytes = Bytes::from(bloom.to_bytes());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let meta = BlockMeta {
        format: FORMAT.into(),
        schema_version: schema::SCHEMA_VERSION,
        block_id: block_id.into(),
        tenant: tenant.into(),
        start_time_unix_nano: if spans == 0 { 0 } else { start },
        end_time_unix_nano: end,
        span_count: spans,
        trace_count: traces.len() as u64,
        min_trace_id: traces.first().map(|t| t.0.to_hex()).unwrap_or_default(),
        max_trace_id: traces.last().map(|t| t.0.to_hex()).unwrap_or_default(),
        data_size: data.len() as u64,
        bloom_size: bloom_bytes.len() as u64,
        row_groups: parquet_meta.num_row_groups() as u64,
        raw_bytes,
        compaction_level: 0,
        created_at_unix: now,
        dedicated_columns,
        service_name_in_list: spilled.contains(&(true, "service.name".to_string())),
        wal: Vec::new(),
        replaces: Vec::new(),
    };
    Ok(BuiltBlock { meta, data, bloom: bloom_bytes, bloom_filter: bloom, parquet_meta })
}

/// Parquet settings every block is written with.
pub fn writer_properties(opts: &BlockOptions) -> Result<WriterProperties, BlockError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(opts.zstd_level)?))
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .set_data_page_row_count_limit(opts.page_rows.max(1))
        .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]))
        .set_column_dictionary_enabled(ColumnPath::from(col::SPAN_ID), false)
        .set_column_dictionary_enabled(ColumnPath::from(col::PARENT_SPAN_ID), false);
    let props = if opts.lz4_search_columns {
        search_columns()
            .into_iter()
            .fold(props, |p, c| p.set_column_compression(ColumnPath::from(c), Compression::LZ4_RAW))
    } else {
        props
    };
    // A bloom filter per row group over the string values of the span and resource attribute lists: a search for
    // a rare value of an attribute without a slot skips the row groups that cannot hold it instead of decoding
    // every list. Sized for one distinct value per row, then folded down by the writer to what was inserted.
    let props = attr_string_leaves()?.into_iter().fold(props, |p, path| {
        p.set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), ATTR_BLOOM_FPP)
            .set_column_bloom_filter_max_ndv(path, opts.row_group_rows.max(1) as u64)
    });
    Ok(props.build())
}

/// False-positive rate of the attribute-value bloom filters (before folding).
const ATTR_BLOOM_FPP: f64 = 0.01;

/// The Parquet paths of the string-value leaves of the span and resource attribute lists.
pub fn attr_string_leaves() -> Result<Vec<ColumnPath>, BlockError> {
    let descr = parquet::arrow::ArrowSchemaConverter::new().convert(&schema::schema())?;
    Ok(descr
        .columns()
        .iter()
        .map(|c| c.path().clone())
        .filter(|p| {
            let parts = p.parts();
            parts.len() > 2
                && [col::SPAN_ATTRS, col::RESOURCE_ATTRS].contains(&parts[0].as_str())
                && parts.last().is_some_and(|l| l == "s")
        })
        .collect())
}

/// Turns traces into record batches of the block schema, without dedicated columns: how data still in memory
/// is handed to the querier, through the same row builder as blocks so both read alike.
pub fn traces_to_batches<'a>(
    traces: impl IntoIterator<Item = (&'a TraceId, &'a [SpanRecord])>,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>, BlockError> {
    let mut out = Vec::new();
    let none = Dedicated { res_str: Vec::new(), span_str: Vec::new(), span_int: Vec::new() };
    write_rows(traces, &none, batch_rows, |b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

/// Writes traces as rows through `sink`, one record batch per `batch_rows` rows. Returns the earliest start,
/// latest end and number of spans written.
fn write_rows<'a>(
    traces: impl IntoIterator<Item = (&'a TraceId, &'a [SpanRecord])>,
    dedicated: &Dedicated,
    batch_rows: usize,
    mut sink: impl FnMut(RecordBatch) -> Result<(), BlockError>,
) -> Result<(u64, u64, u64, Spilled), BlockError> {
    let mut w = TraceRowWriter::new(dedicated.clone(), batch_rows);
    for (id, records) in traces {
        if let Some(b) = w.push(id, records)? {
            sink(b)?;
        }
    }
    if let Some(b) = w.finish()? {
        sink(b)?;
    }
    Ok((w.start, w.end, w.spans, w.rows.spilled))
}

/// Turns whole traces, given one at a time in trace-ID order, into block rows (tree numbered, trace-level
/// columns computed, duplicate spans dropped), handing back a record batch whenever `batch_rows` rows are ready.
/// Block building and compaction's streaming merge both write through it.
pub struct TraceRowWriter {
    rows: Rows,
    dedicated: Dedicated,
    batch_rows: usize,
    /// Earliest span start and latest span end written.
    pub start: u64,
    pub end: u64,
    pub spans: u64,
    pub traces: u64,
    pub min_id: Option<TraceId>,
    pub max_id: Option<TraceId>,
}

impl TraceRowWriter {
    pub fn new(dedicated: Dedicated, batch_rows: usize) -> Self {
        TraceRowWriter {
            rows: Rows::new(&dedicated),
            dedicated,
            batch_rows: batch_rows.max(1),
            start: u64::MAX,
            end: 0,
            spans: 0,
            traces: 0,
            min_id: None,
            max_id: None,
        }
    }

    /// Adds one trace, all its spans (a block wants traces in increasing ID order; batches for searches do not).
    pub fn push(&mut self, id: &TraceId, records: &[SpanRecord]) -> Result<Option<RecordBatch>, BlockError> {
        let ordered = order_trace(records);
        let t_start = ordered.iter().map(|o| records[o.idx].span.start_time_unix_nano).min().unwrap_or(0);
        let t_end = ordered.iter().map(|o| records[o.idx].span.end_time_unix_nano).max().unwrap_or(0);
        self.start = self.start.min(t_start);
        self.end = self.end.max(t_end);
        let root = ordered
            .iter()
            .filter(|o| records[o.idx].span.parent_span_id.is_empty())
            // Earliest root, ties by span ID: the same root the search's whole-trace evaluation picks.
            .min_by_key(|o| (records[o.idx].span.start_time_unix_nano, records[o.idx].span.span_id.as_slice()))
            .map(|o| &records[o.idx]);
        let trace = TraceInfo {
            id,
            start: t_start,
            end: t_end,
            root_service: root.and_then(|r| crate::model::service_name(&r.origin.resource)),
            root_name: root.map(|r| r.span.name.as_str()),
        };
        for o in &ordered {
            self.rows.push(&trace, &records[o.idx], o);
            self.spans += 1;
        }
        self.traces += 1;
        self.min_id = Some(self.min_id.map_or(*id, |m| m.min(*id)));
        self.max_id = Some(self.max_id.map_or(*id, |m| m.max(*id)));
        if self.rows.len >= self.batch_rows { Ok(Some(self.rows.finish()?)) } else { Ok(None) }
    }

    /// Accounts for a trace whose rows were copied as they are from a block with the same layout (compaction of a
    /// trace that sits in one input: its rows, tree numbers and trace-level columns are already right): counts and
    /// bounds as [`TraceRowWriter::push`] keeps them, and the keys the input also kept in its generic lists.
    pub fn add_copied(&mut self, id: &TraceId, spans: u64, start: u64, end: u64, input: &[DedicatedColumn], svc: bool) {
        self.start = self.start.min(start);
        self.end = self.end.max(end);
        self.spans += spans;
        self.traces += 1;
        self.min_id = Some(self.min_id.map_or(*id, |m| m.min(*id)));
        self.max_id = Some(self.max_id.map_or(*id, |m| m.max(*id)));
        for d in input.iter().filter(|d| d.also_in_list) {
            self.rows.spilled.insert((d.scope == "resource", d.name.clone()));
        }
        if svc {
            self.rows.spilled.insert((true, "service.name".to_string()));
        }
    }

    /// Whether rows written under `input`'s slot mapping can be copied into this writer's output unchanged.
    pub fn same_layout(&self, input: &[DedicatedColumn]) -> bool {
        let key = |d: &DedicatedColumn| (d.column.clone(), d.scope.clone(), d.name.clone(), d.value_type.clone());
        let mut ours: Vec<_> = self.dedicated.columns(&Spilled::new()).iter().map(key).collect();
        let mut theirs: Vec<_> = input.iter().map(key).collect();
        ours.sort();
        theirs.sort();
        ours == theirs
    }

    /// The rows not handed out yet.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, BlockError> {
        if self.rows.len == 0 { Ok(None) } else { Ok(Some(self.rows.finish()?)) }
    }

    /// The slot mapping of what was written (which keys also have values in the generic lists).
    pub fn dedicated_columns(&self) -> Vec<DedicatedColumn> {
        self.dedicated.columns(&self.rows.spilled)
    }

    /// Whether some `service.name` values went to the generic resource list.
    pub fn service_name_in_list(&self) -> bool {
        self.rows.spilled.contains(&(true, "service.name".to_string()))
    }
}

/// Position of a span in its trace's tree, in nested-set form.
struct Ordered {
    idx: usize,
    left: i32,
    right: i32,
    parent: i32,
}

/// Dedupes a trace's spans (same span ID and kind) and numbers them depth first, children by start time, so
/// structural TraceQL operators (`>`, `>>`, `~`) become integer comparisons. Spans whose parent is missing, and
/// cycles, are treated as roots. Sorting instead of hashing: traces are small, and this allocates three vectors.
fn order_trace(records: &[SpanRecord]) -> Vec<Ordered> {
    let span = |i: usize| &records[i].span;
    // Unique spans, sorted by span ID (then kind) for parent look-ups by binary search.
    let mut by_id: Vec<usize> = (0..records.len()).collect();
    by_id.sort_by(|&a, &b| span(a).span_id.cmp(&span(b).span_id).then(span(a).kind.cmp(&span(b).kind)).then(a.cmp(&b)));
    by_id.dedup_by(|a, b| span(*a).span_id == span(*b).span_id && span(*a).kind == span(*b).kind);
    let parent_of = |i: usize| -> Option<usize> {
        let p = span(i).parent_span_id.as_slice();
        if p.is_empty() {
            return None;
        }
        let at = by_id.partition_point(|&j| span(j).span_id.as_slice() < p);
        by_id.get(at).copied().filter(|&j| span(j).span_id == p && j != i)
    };
    // (parent, span) pairs sorted by parent then start time: each span's children are one contiguous run.
    const ROOT: usize = usize::MAX;
    let mut edges: Vec<(usize, usize)> = by_id.iter().map(|&i| (parent_of(i).unwrap_or(ROOT), i)).collect();
    let order = |a: &(usize, usize), b: &(usize, usize)| {
        let (x, y) = (span(a.1), span(b.1));
        a.0.cmp(&b.0).then(x.start_time_unix_nano.cmp(&y.start_time_unix_nano)).then_with(|| x.span_id.cmp(&y.span_id))
    };
    edges.sort_by(order);
    let children = |p: usize| -> &[(usize, usize)] {
        let lo = edges.partition_point(|e| e.0 < p);
        let hi = edges.partition_point(|e| e.0 <= p);
        &edges[lo..hi]
    };

    let mut out: Vec<Ordered> = Vec::with_capacity(by_id.len());
    let mut visited = vec![false; records.len()];
    let mut counter = 0i32;
    // Real roots first; spans only reachable through a cycle are picked up as extra roots afterwards.
    let roots: Vec<usize> = children(ROOT).iter().map(|e| e.1).chain(edges.iter().map(|e| e.1)).collect();
    for root in roots {
        if visited[root] {
            continue;
        }
        // Stack of (span index, position in `out`, next child to visit).
        let mut stack: Vec<(usize, usize, usize)> = Vec::new();
        visited[root] = true;
        counter += 1;
        out.push(Ordered { idx: root, left: counter, right: 0, parent: 0 });
        stack.push((root, out.len() - 1, 0));
        while let Some(top) = stack.last_mut() {
            let (node, pos, next) = *top;
            if let Some(&(_, child)) = children(node).get(next) {
                top.2 += 1;
                if visited[child] {
                    continue;
                }
                visited[child] = true;
                counter += 1;
                let parent_left = out[pos].left;
                out.push(Ordered { idx: child, left: counter, right: 0, parent: parent_left });
                stack.push((child, out.len() - 1, 0));
            } else {
                counter += 1;
                out[pos].right = counter;
                stack.pop();
            }
        }
    }
    out
}

/// The attributes chosen for dedicated slot columns in one block.
#[derive(Clone, Debug, Default)]
pub struct Dedicated {
    res_str: Vec<String>,
    span_str: Vec<String>,
    span_int: Vec<String>,
}

impl Dedicated {
    fn columns(&self, spilled: &Spilled) -> Vec<DedicatedColumn> {
        let mk = |scope: &str, ty: &str, names: &[String], colname: fn(usize) -> String| {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| DedicatedColumn {
                    scope: scope.into(),
                    name: n.clone(),
                    value_type: ty.into(),
                    column: colname(i),
                    also_in_list: spilled.contains(&(scope == "resource", n.clone())),
                })
                .collect::<Vec<_>>()
        };
        let mut v = mk("resource", "string", &self.res_str, schema::res_str_col);
        v.extend(mk("span", "string", &self.span_str, schema::span_str_col));
        v.extend(mk("span", "int", &self.span_int, schema::span_int_col));
        v
    }
}

/// Picks, per scope and type, the keys present in the most spans (at least `min_share` of them).
fn choose_dedicated(traces: &[(TraceId, Vec<SpanRecord>)], min_share: f64) -> Dedicated {
    let mut res: HashMap<&str, u64> = HashMap::new();
    let mut span_s: HashMap<&str, u64> = HashMap::new();
    let mut span_i: HashMap<&str, u64> = HashMap::new();
    let mut total = 0u64;
    // Resource attributes are shared by every span of an origin: count origins, then their attributes once.
    let mut origins: HashMap<*const Origin, (&Origin, u64)> = HashMap::new();
    for (_, records) in traces {
        for r in records {
            total += 1;
            origins.entry(Arc::as_ptr(&r.origin)).or_insert((&r.origin, 0)).1 += 1;
            for kv in &r.span.attributes {
                match value_of(kv) {
                    Some(Value::StringValue(_)) => *span_s.entry(kv.key.as_str()).or_default() += 1,
                    Some(Value::IntValue(_)) => *span_i.entry(kv.key.as_str()).or_default() += 1,
                    _ => {}
                }
            }
        }
    }
    for (origin, n) in origins.into_values() {
        for kv in &origin.resource.attributes {
            if kv.key != "service.name" && matches!(value_of(kv), Some(Value::StringValue(_))) {
                *res.entry(kv.key.as_str()).or_default() += n;
            }
        }
    }
    let min = ((total as f64) * min_share).ceil().max(1.0) as u64;
    let top = |m: HashMap<&str, u64>, n: usize| {
        let mut v: Vec<(&str, u64)> = m.into_iter().filter(|(_, c)| *c >= min).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().take(n).map(|(k, _)| k.to_string()).collect::<Vec<_>>()
    };
    Dedicated {
        res_str: top(res, RES_STR_SLOTS),
        span_str: top(span_s, SPAN_STR_SLOTS),
        span_int: top(span_i, SPAN_INT_SLOTS),
    }
}

/// Dedicated columns for a block merged from blocks with these metas: per scope and type, the keys the inputs
/// dedicated, ranked by the spans of the inputs that dedicated them, kept when those hold at least `min_share` of
/// all spans. A streaming merge cannot count keys over the merged data before writing it; the inputs' own choices
/// (each made over all of its spans) are the measure at hand.
pub fn dedicated_for_merge(inputs: &[&BlockMeta], min_share: f64) -> Dedicated {
    // Inputs that all map the same keys to the same slots keep that mapping: their rows can then be copied
    // as they are (re-ranking keys of equal weight would reorder the slots for nothing).
    fn layout(m: &BlockMeta) -> Vec<(&str, &str, &str, &str)> {
        let mut v: Vec<(&str, &str, &str, &str)> = m
            .dedicated_columns
            .iter()
            .map(|d| (d.column.as_str(), d.scope.as_str(), d.value_type.as_str(), d.name.as_str()))
            .collect();
        v.sort();
        v
    }
    if let Some(first) = inputs.first()
        && inputs.iter().all(|m| layout(m) == layout(first))
    {
        let slot = |scope: &str, ty: &str| {
            let mut v: Vec<(&str, String)> = first
                .dedicated_columns
                .iter()
                .filter(|d| d.scope == scope && d.value_type == ty)
                .map(|d| (d.column.as_str(), d.name.clone()))
                .collect();
            v.sort();
            v.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        };
        let d = Dedicated {
            res_str: slot("resource", "string"),
            span_str: slot("span", "string"),
            span_int: slot("span", "int"),
        };
        // Only when the columns are the ones the schema numbers (an unusual meta falls back to re-ranking).
        let expected: Vec<String> = d.columns(&Spilled::new()).into_iter().map(|c| c.column).collect();
        let mut found: Vec<String> = first.dedicated_columns.iter().map(|c| c.column.clone()).collect();
        let mut want = expected.clone();
        found.sort();
        want.sort();
        if found == want {
            return d;
        }
    }
    let total: u64 = inputs.iter().map(|m| m.span_count).sum();
    let min = ((total as f64) * min_share).ceil().max(1.0) as u64;
    let mut score: HashMap<(&str, &str, &str), u64> = HashMap::new();
    for m in inputs {
        for d in &m.dedicated_columns {
            *score.entry((d.scope.as_str(), d.value_type.as_str(), d.name.as_str())).or_default() += m.span_count;
        }
    }
    let top = |scope: &str, ty: &str, n: usize| {
        let mut v: Vec<(&str, u64)> = score
            .iter()
            .filter(|((s, t, _), c)| *s == scope && *t == ty && **c >= min)
            .map(|(k, c)| (k.2, *c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().take(n).map(|(k, _)| k.to_string()).collect::<Vec<_>>()
    };
    Dedicated {
        res_str: top("resource", "string", RES_STR_SLOTS),
        span_str: top("span", "string", SPAN_STR_SLOTS),
        span_int: top("span", "int", SPAN_INT_SLOTS),
    }
}

fn value_of(kv: &KeyValue) -> Option<&Value> {
    kv.value.as_ref().and_then(|v| v.value.as_ref())
}

struct TraceInfo<'a> {
    id: &'a TraceId,
    start: u64,
    end: u64,
    root_service: Option<&'a str>,
    root_name: Option<&'a str>,
}

/// Column builders for one row group's worth of spans.
/// Where each resource attribute of one origin goes: computed once per origin, not once per span.
struct ResourceSplit {
    service: Option<usize>,
    slots: [Option<usize>; RES_STR_SLOTS],
    generic: Vec<usize>,
}

struct Rows {
    len: usize,
    /// Dedicated keys (and `service.name`) that also have values in the generic lists: (is resource, key).
    spilled: Spilled,
    /// Per origin (keyed by address; the `Arc` held keeps the address from being reused), where its resource
    /// attributes go. Cleared with every batch.
    res_split: HashMap<usize, (Arc<Origin>, ResourceSplit)>,
    res_keys: HashMap<String, usize>,
    /// Span attribute key -> (string slot, int slot) of the dedicated columns.
    span_keys: HashMap<String, (Option<usize>, Option<usize>)>,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: Int8Builder,
    start: Int64Builder,
    duration: Int64Builder,
    status_code: Int8Builder,
    status_message: StringBuilder,
    dropped_attrs: UInt32Builder,
    dropped_events: UInt32Builder,
    dropped_links: UInt32Builder,
    nested_left: Int32Builder,
    nested_right: Int32Builder,
    nested_parent: Int32Builder,
    service_name: StringBuilder,
    resource_attrs: AttrListBuilder,
    resource_dropped: UInt32Builder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attrs: AttrListBuilder,
    scope_dropped: UInt32Builder,
    scope_schema_url: StringBuilder,
    span_attrs: AttrListBuilder,
    events: EventsBuilder,
    links: LinksBuilder,
    trace_start: Int64Builder,
    trace_end: Int64Builder,
    root_service: StringBuilder,
    root_name: StringBuilder,
    res_str: Vec<StringBuilder>,
    span_str: Vec<StringBuilder>,
    span_int: Vec<Int64Builder>,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl Rows {
    fn new(d: &Dedicated) -> Self {
        let idx = |v: &[String]| v.iter().enumerate().map(|(i, k)| (k.clone(), i)).collect();
        Rows {
            len: 0,
            res_split: HashMap::new(),
            spilled: Spilled::new(),
            res_keys: idx(&d.res_str),
            span_keys: {
                let mut m: HashMap<String, (Option<usize>, Option<usize>)> = HashMap::new();
                d.span_str.iter().enumerate().for_each(|(i, k)| m.entry(k.clone()).or_default().0 = Some(i));
                d.span_int.iter().enumerate().for_each(|(i, k)| m.entry(k.clone()).or_default().1 = Some(i));
                m
            },
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            parent_span_id: FixedSizeBinaryBuilder::new(8),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            name: StringBuilder::new(),
            kind: Int8Builder::new(),
            start: Int64Builder::new(),
            duration: Int64Builder::new(),
            status_code: Int8Builder::new(),
            status_message: StringBuilder::new(),
            dropped_attrs: UInt32Builder::new(),
            dropped_events: UInt32Builder::new(),
            dropped_links: UInt32Builder::new(),
            nested_left: Int32Builder::new(),
            nested_right: Int32Builder::new(),
            nested_parent: Int32Builder::new(),
            service_name: StringBuilder::new(),
            resource_attrs: AttrListBuilder::new(),
            resource_dropped: UInt32Builder::new(),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attrs: AttrListBuilder::new(),
            scope_dropped: UInt32Builder::new(),
            scope_schema_url: StringBuilder::new(),
            span_attrs: AttrListBuilder::new(),
            events: EventsBuilder::new(),
            links: LinksBuilder::new(),
            trace_start: Int64Builder::new(),
            trace_end: Int64Builder::new(),
            root_service: StringBuilder::new(),
            root_name: StringBuilder::new(),
            res_str: (0..RES_STR_SLOTS).map(|_| StringBuilder::new()).collect(),
            span_str: (0..SPAN_STR_SLOTS).map(|_| StringBuilder::new()).collect(),
            span_int: (0..SPAN_INT_SLOTS).map(|_| Int64Builder::new()).collect(),
        }
    }

    fn push(&mut self, t: &TraceInfo, r: &SpanRecord, o: &Ordered) {
        let s = &r.span;
        let origin = &r.origin;
        self.len += 1;
        // Lengths were validated by the receiver; a bad one here would be a bug, reported by the Arrow error.
        let _ = self.trace_id.append_value(t.id.0);
        let _ = self.span_id.append_value(&s.span_id);
        if s.parent_span_id.len() == 8 {
            let _ = self.parent_span_id.append_value(&s.parent_span_id);
        } else {
            self.parent_span_id.append_null();
        }
        self.trace_state.append_option(non_empty(&s.trace_state));
        self.flags.append_value(s.flags);
        self.name.append_value(&s.name);
        self.kind.append_value(i8::try_from(s.kind).unwrap_or(0));
        self.start.append_value(nanos(s.start_time_unix_nano));
        self.duration.append_value(nanos(s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)));
        let (code, msg) = s.status.as_ref().map(|st| (st.code, st.message.as_str())).unwrap_or((0, ""));
        self.status_code.append_value(i8::try_from(code).unwrap_or(0));
        self.status_message.append_option(non_empty(msg));
        self.dropped_attrs.append_value(s.dropped_attributes_count);
        self.dropped_events.append_value(s.dropped_events_count);
        self.dropped_links.append_value(s.dropped_links_count);
        self.nested_left.append_value(o.left);
        self.nested_right.append_value(o.right);
        self.nested_parent.append_value(o.parent);

        // Resource: service.name and dedicated keys get columns, the rest the generic list.
        let res_keys = &self.res_keys;
        let spilled = &mut self.spilled;
        let split = &self
            .res_split
            .entry(Arc::as_ptr(origin) as usize)
            .or_insert_with(|| {
                let mut sp = ResourceSplit { service: None, slots: [None; RES_STR_SLOTS], generic: Vec::new() };
                for (idx, kv) in origin.resource.attributes.iter().enumerate() {
                    // As for span attributes, only a key's first occurrence may leave the generic list.
                    let first = !origin.resource.attributes[..idx].iter().any(|o| o.key == kv.key);
                    if first && let Some(Value::StringValue(_)) = value_of(kv) {
                        if kv.key == "service.name" && sp.service.is_none() {
                            sp.service = Some(idx);
                            continue;
                        }
                        if let Some(&i) = res_keys.get(&kv.key)
                            && sp.slots[i].is_none()
                        {
                            sp.slots[i] = Some(idx);
                            continue;
                        }
                    }
                    if kv.key == "service.name" || res_keys.contains_key(&kv.key) {
                        spilled.insert((true, kv.key.clone()));
                    }
                    sp.generic.push(idx);
                }
                (origin.clone(), sp)
            })
            .1;
        let attrs = &origin.resource.attributes;
        let str_at = |i: Option<usize>| match i.and_then(|i| value_of(&attrs[i])) {
            Some(Value::StringValue(v)) => Some(v.as_str()),
            _ => None,
        };
        for &i in &split.generic {
            self.resource_attrs.push(&attrs[i].key, attrs[i].value.as_ref());
        }
        self.resource_attrs.end_row();
        self.service_name.append_option(str_at(split.service));
        for (b, i) in self.res_str.iter_mut().zip(split.slots) {
            b.append_option(str_at(i));
        }
        self.resource_dropped.append_value(origin.resource.dropped_attributes_count);
        self.resource_schema_url.append_option(non_empty(&origin.resource_schema_url));
        self.scope_name.append_option(non_empty(&origin.scope.name));
        self.scope_version.append_option(non_empty(&origin.scope.version));
        for kv in &origin.scope.attributes {
            self.scope_attrs.push(&kv.key, kv.value.as_ref());
        }
        self.scope_attrs.end_row();
        self.scope_dropped.append_value(origin.scope.dropped_attributes_count);
        self.scope_schema_url.append_option(non_empty(&origin.scope_schema_url));

        let mut str_slots: [Option<&str>; SPAN_STR_SLOTS] = [None; SPAN_STR_SLOTS];
        let mut int_slots: [Option<i64>; SPAN_INT_SLOTS] = [None; SPAN_INT_SLOTS];
        // Only a key's first occurrence may move to a slot: readers put slot values first, so a repeated key
        // keeps its first value first.
        let mut seen: Vec<&str> = Vec::new();
        for kv in &s.attributes {
            let first = !seen.contains(&kv.key.as_str());
            seen.push(&kv.key);
            let slots = if first { self.span_keys.get(&kv.key).copied().unwrap_or_default() } else { (None, None) };
            match (value_of(kv), slots) {
                (Some(Value::StringValue(v)), (Some(i), _)) if str_slots[i].is_none() => str_slots[i] = Some(v),
                (Some(Value::IntValue(v)), (_, Some(i))) if int_slots[i].is_none() => int_slots[i] = Some(*v),
                _ => {
                    if self.span_keys.contains_key(&kv.key) {
                        self.spilled.insert((false, kv.key.clone()));
                    }
                    self.span_attrs.push(&kv.key, kv.value.as_ref())
                }
            }
        }
        self.span_attrs.end_row();
        for (b, v) in self.span_str.iter_mut().zip(str_slots) {
            b.append_option(v);
        }
        for (b, v) in self.span_int.iter_mut().zip(int_slots) {
            b.append_option(v);
        }
        for e in &s.events {
            self.events.time.append_value(nanos(e.time_unix_nano));
            self.events.name.append_value(&e.name);
            for kv in &e.attributes {
                self.events.attrs.push(&kv.key, kv.value.as_ref());
            }
            self.events.attrs.end_row();
            self.events.dropped.append_value(e.dropped_attributes_count);
            self.events.len += 1;
        }
        self.events.offsets.push(self.events.len);
        for l in &s.links {
            self.links.trace_id.append_value(&l.trace_id);
            self.links.span_id.append_value(&l.span_id);
            self.links.trace_state.append_option(non_empty(&l.trace_state));
            self.links.flags.append_value(l.flags);
            for kv in &l.attributes {
                self.links.attrs.push(&kv.key, kv.value.as_ref());
            }
            self.links.attrs.end_row();
            self.links.dropped.append_value(l.dropped_attributes_count);
            self.links.len += 1;
        }
        self.links.offsets.push(self.links.len);
        self.trace_start.append_value(nanos(t.start));
        self.trace_end.append_value(nanos(t.end));
        self.root_service.append_option(t.root_service);
        self.root_name.append_option(t.root_name);
    }

    fn finish(&mut self) -> Result<RecordBatch, BlockError> {
        self.len = 0;
        self.res_split.clear();
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.dropped_attrs.finish()),
            Arc::new(self.dropped_events.finish()),
            Arc::new(self.dropped_links.finish()),
            Arc::new(self.nested_left.finish()),
            Arc::new(self.nested_right.finish()),
            Arc::new(self.nested_parent.finish()),
            Arc::new(self.service_name.finish()),
            self.resource_attrs.finish(),
            Arc::new(self.resource_dropped.finish()),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.scope_attrs.finish(),
            Arc::new(self.scope_dropped.finish()),
            Arc::new(self.scope_schema_url.finish()),
            self.span_attrs.finish(),
            self.events.finish(),
            self.links.finish(),
            Arc::new(self.trace_start.finish()),
            Arc::new(self.trace_end.finish()),
            Arc::new(self.root_service.finish()),
            Arc::new(self.root_name.finish()),
        ];
        cols.extend(self.res_str.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols.extend(self.span_str.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols.extend(self.span_int.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        Ok(RecordBatch::try_new(schema::schema(), cols)?)
    }
}

fn list_array(fields: arrow::datatypes::Fields, children: Vec<ArrayRef>, offsets: &mut Vec<i32>) -> ArrayRef {
    let values = StructArray::new(fields.clone(), children, None);
    let offsets = std::mem::replace(offsets, vec![0]);
    let field = Arc::new(Field::new("item", DataType::Struct(fields), false));
    Arc::new(ListArray::new(field, OffsetBuffer::new(offsets.into()), Arc::new(values), None))
}

struct EventsBuilder {
    offsets: Vec<i32>,
    len: i32,
    time: Int64Builder,
    name: StringBuilder,
    attrs: AttrListBuilder,
    dropped: UInt32Builder,
}

impl EventsBuilder {
    fn new() -> Self {
        EventsBuilder {
            offsets: vec![0],
            len: 0,
            time: Int64Builder::new(),
            name: StringBuilder::new(),
            attrs: AttrListBuilder::new(),
            dropped: UInt32Builder::new(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        self.len = 0;
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            self.attrs.finish(),
            Arc::new(self.dropped.finish()),
        ];
        list_array(event_fields(), children, &mut self.offsets)
    }
}

struct LinksBuilder {
    offsets: Vec<i32>,
    len: i32,
    trace_id: arrow::array::BinaryBuilder,
    span_id: arrow::array::BinaryBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    attrs: AttrListBuilder,
    dropped: UInt32Builder,
}

impl LinksBuilder {
    fn new() -> Self {
        LinksBuilder {
            offsets: vec![0],
            len: 0,
            trace_id: Default::default(),
            span_id: Default::default(),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attrs: AttrListBuilder::new(),
            dropped: UInt32Builder::new(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        self.len = 0;
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            self.attrs.finish(),
            Arc::new(self.dropped.finish()),
        ];
        list_array(link_fields(), children, &mut self.offsets)
    }
}

/// Nanoseconds as the block stores them (signed 64-bit). Receivers reject later times; data logged before they did
/// is clamped rather than wrapped into the past.
fn nanos(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}
