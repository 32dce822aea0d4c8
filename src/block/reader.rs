//! Turns block rows back into spans, and the row filter that selects one trace.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, FixedSizeBinaryArray, Int8Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray, UInt32Array,
};
use arrow::datatypes::{DataType, Int64Type};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter, RowSelection, RowSelector};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::schema::types::SchemaDescriptor;

use super::attrs::{AttrListReader, int_value, string_value};

use super::schema::col;
use super::{BlockError, DedicatedColumn};
use crate::model::{Origin, SpanRecord, TraceId, kv};

/// The pages of `groups` that can hold `id`, from the `trace_id` column's page index (min/max per page). Reading
/// with this selection fetches just those pages of every column, in one coalesced request; `None` when the file
/// has no page index (then whole row groups are read).
pub fn page_selection(md: &ParquetMetaData, groups: &[usize], id: &TraceId) -> Option<RowSelection> {
    page_selection_any(md, groups, std::slice::from_ref(id))
}

/// Like [`page_selection`], for the pages that can hold any of `ids` (sorted ascending).
pub fn page_selection_any(md: &ParquetMetaData, groups: &[usize], ids: &[TraceId]) -> Option<RowSelection> {
    let (col_index, off_index) = (md.column_index()?, md.offset_index()?);
    let mut selectors: Vec<RowSelector> = Vec::new();
    for &g in groups {
        let rows = md.row_group(g).num_rows() as usize;
        let ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(ci) = col_index.get(g)?.first()? else { return None };
        let pages = off_index.get(g)?.first()?.page_locations();
        for (p, loc) in pages.iter().enumerate() {
            let start = loc.first_row_index as usize;
            let end = pages.get(p + 1).map_or(rows, |n| n.first_row_index as usize);
            let hit = match (ci.min_value(p), ci.max_value(p)) {
                (Some(lo), Some(hi)) => {
                    let at = ids.partition_point(|id| &id.0[..] < lo);
                    ids.get(at).is_some_and(|id| &id.0[..] <= hi)
                }
                _ => false,
            };
            let n = end.saturating_sub(start);
            selectors.push(if hit { RowSelector::select(n) } else { RowSelector::skip(n) });
        }
    }
    Some(RowSelection::from(selectors))
}

/// The row groups holding `runs` (file row ranges, sorted and disjoint) and a selection of exactly those rows
/// within the chosen groups, for reading a few traces whose rows the trace index located.
pub fn rows_selection(md: &ParquetMetaData, runs: &[Range<usize>]) -> (Vec<usize>, RowSelection) {
    let mut groups = Vec::new();
    let mut selectors: Vec<RowSelector> = Vec::new();
    let mut group_start = 0usize;
    let mut next = 0usize;
    for (g, rg) in md.row_groups().iter().enumerate() {
        let group_end = group_start + rg.num_rows().max(0) as usize;
        while next < runs.len() && runs[next].end <= group_start {
            next += 1;
        }
        let mut at = group_start;
        let mut wanted = false;
        let mut i = next;
        while i < runs.len() && runs[i].start < group_end {
            let (s, e) = (runs[i].start.max(group_start), runs[i].end.min(group_end));
            if s < e {
                if s > at {
                    selectors.push(RowSelector::skip(s - at));
                }
                selectors.push(RowSelector::select(e - s));
                at = e;
                wanted = true;
            }
            if runs[i].end > group_end {
                break;
            }
            i += 1;
        }
        if wanted {
            if group_end > at {
                selectors.push(RowSelector::skip(group_end - at));
            }
            groups.push(g);
        }
        group_start = group_end;
    }
    (groups, RowSelection::from(selectors))
}

/// Keeps the rows whose trace is one of `ids` (sorted ascending).
pub fn only_traces(batch: &RecordBatch, ids: &[TraceId]) -> Result<RecordBatch, BlockError> {
    let col: &FixedSizeBinaryArray = column(batch, col::TRACE_ID)?;
    let mask: arrow::array::BooleanArray =
        (0..col.len()).map(|i| Some(ids.binary_search_by(|id| id.0[..].cmp(col.value(i))).is_ok())).collect();
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
}

/// A Parquet row filter keeping only rows of the traces `ids` (sorted ascending). Reading several traces, it
/// decodes the other columns only for their rows instead of for every row of the pages that hold them.
pub fn trace_ids_filter(parquet_schema: &SchemaDescriptor, ids: Arc<Vec<TraceId>>) -> RowFilter {
    let mask = ProjectionMask::leaves(parquet_schema, [0]);
    let pred = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .ok_or_else(|| arrow::error::ArrowError::SchemaError("trace_id is not fixed-size binary".into()))?;
        Ok((0..col.len()).map(|i| Some(ids.binary_search_by(|id| id.0[..].cmp(col.value(i))).is_ok())).collect())
    });
    RowFilter::new(vec![Box::new(pred)])
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, BlockError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| BlockError::Layout(format!("column {name} missing or mistyped")))
}

fn opt_str(a: &StringArray, i: usize) -> String {
    if a.is_null(i) { String::new() } else { a.value(i).to_string() }
}

fn struct_child<'a, T: 'static>(st: &'a StructArray, name: &str) -> Result<&'a T, BlockError> {
    st.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| BlockError::Layout(format!("field {name} missing or mistyped")))
}

fn list_structs<'a>(batch: &'a RecordBatch, name: &str) -> Result<(&'a ListArray, &'a StructArray), BlockError> {
    let list: &ListArray = column(batch, name)?;
    let st = list
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| BlockError::Layout(format!("{name} items are not structs")))?;
    Ok((list, st))
}

/// The optional parts of a span a read needs; every other column is always read. Searches leave out what their
/// query never looks at (most queries need neither events nor links), which is most of the decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanParts {
    pub span_attrs: bool,
    pub resource_attrs: bool,
    pub scope_attrs: bool,
    pub events: bool,
    pub links: bool,
    /// With `span_attrs` / `resource_attrs`: whether the generic list is needed too, or the dedicated slots
    /// alone hold every attribute asked for (a block says which keys never stay in the list).
    pub span_list: bool,
    pub resource_list: bool,
    /// Which dedicated slot columns to read, by [`slot_bit`]; a query needs only the slots of keys it names.
    pub slots: u32,
}

/// The bit of a dedicated slot column in [`SpanParts::slots`]; `None` for other columns.
pub fn slot_bit(column: &str) -> Option<u32> {
    use super::schema::{RES_STR_SLOTS, SPAN_STR_SLOTS};
    let (base, i) = if let Some(i) = column.strip_prefix("res_str_") {
        (0, i)
    } else if let Some(i) = column.strip_prefix("span_str_") {
        (RES_STR_SLOTS, i)
    } else if let Some(i) = column.strip_prefix("span_int_") {
        (RES_STR_SLOTS + SPAN_STR_SLOTS, i)
    } else {
        return None;
    };
    let bit = base + i.parse::<usize>().ok()?;
    (bit < 32).then(|| 1u32 << bit)
}

impl SpanParts {
    pub const ALL: SpanParts = SpanParts {
        span_attrs: true,
        resource_attrs: true,
        scope_attrs: true,
        events: true,
        links: true,
        span_list: true,
        resource_list: true,
        slots: u32::MAX,
    };
    pub const NONE: SpanParts = SpanParts {
        span_attrs: false,
        resource_attrs: false,
        scope_attrs: false,
        events: false,
        links: false,
        span_list: false,
        resource_list: false,
        slots: 0,
    };

    /// Whether `column` is one of the parts a read may leave out (attribute lists and slots, events, links).
    pub fn optional(column: &str) -> bool {
        !SpanParts::NONE.keeps(column)
    }

    /// Whether a read with these parts includes `column`.
    pub fn keeps(&self, column: &str) -> bool {
        match column {
            col::SPAN_ATTRS => self.span_attrs && self.span_list,
            col::RESOURCE_ATTRS => self.resource_attrs && self.resource_list,
            col::SCOPE_ATTRS => self.scope_attrs,
            col::EVENTS => self.events,
            col::LINKS => self.links,
            c if c.starts_with("span_str_") || c.starts_with("span_int_") => {
                self.span_attrs && slot_bit(c).is_some_and(|b| self.slots & b != 0)
            }
            c if c.starts_with("res_str_") => self.resource_attrs && slot_bit(c).is_some_and(|b| self.slots & b != 0),
            _ => true,
        }
    }
}

/// The events column's arrays.
struct EventCols<'a> {
    list: &'a ListArray,
    time: &'a Int64Array,
    name: &'a StringArray,
    attrs: AttrListReader,
    dropped: &'a UInt32Array,
}

impl<'a> EventCols<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self, BlockError> {
        let (list, ev) = list_structs(batch, col::EVENTS)?;
        Ok(EventCols {
            list,
            time: struct_child(ev, "time_unix_nano")?,
            name: struct_child(ev, "name")?,
            attrs: AttrListReader::new(ev.column_by_name("attrs").ok_or_else(missing)?.as_ref())?,
            dropped: struct_child(ev, "dropped_attributes_count")?,
        })
    }

    fn read(&self, row: usize) -> Result<Vec<span::Event>, BlockError> {
        let offs = self.list.value_offsets();
        (offs[row] as usize..offs[row + 1] as usize)
            .map(|j| {
                Ok(span::Event {
                    time_unix_nano: self.time.value(j) as u64,
                    name: self.name.value(j).to_string(),
                    attributes: self.attrs.read(j)?,
                    dropped_attributes_count: self.dropped.value(j),
                })
            })
            .collect()
    }
}

/// The links column's arrays.
struct LinkCols<'a> {
    list: &'a ListArray,
    trace: &'a BinaryArray,
    span: &'a BinaryArray,
    state: &'a StringArray,
    flags: &'a UInt32Array,
    attrs: AttrListReader,
    dropped: &'a UInt32Array,
}

impl<'a> LinkCols<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self, BlockError> {
        let (list, ln) = list_structs(batch, col::LINKS)?;
        Ok(LinkCols {
            list,
            trace: struct_child(ln, "trace_id")?,
            span: struct_child(ln, "span_id")?,
            state: struct_child(ln, "trace_state")?,
            flags: struct_child(ln, "flags")?,
            attrs: AttrListReader::new(ln.column_by_name("attrs").ok_or_else(missing)?.as_ref())?,
            dropped: struct_child(ln, "dropped_attributes_count")?,
        })
    }

    fn read(&self, row: usize) -> Result<Vec<span::Link>, BlockError> {
        let offs = self.list.value_offsets();
        (offs[row] as usize..offs[row + 1] as usize)
            .map(|j| {
                Ok(span::Link {
                    trace_id: self.trace.value(j).to_vec(),
                    span_id: self.span.value(j).to_vec(),
                    trace_state: opt_str(self.state, j),
                    attributes: self.attrs.read(j)?,
                    dropped_attributes_count: self.dropped.value(j),
                    flags: self.flags.value(j),
                })
            })
            .collect()
    }
}

/// Decodes every row of a batch (full block schema) into spans with their origin. Consecutive rows with the same
/// resource and scope share one `Origin`, so a trace's spans group cheaply afterwards.
pub fn batch_to_spans(
    batch: &RecordBatch,
    dedicated: &[DedicatedColumn],
) -> Result<Vec<(TraceId, SpanRecord)>, BlockError> {
    let trace_id: &FixedSizeBinaryArray = column(batch, col::TRACE_ID)?;
    let span_id: &FixedSizeBinaryArray = column(batch, col::SPAN_ID)?;
    let parent: &FixedSizeBinaryArray = column(batch, col::PARENT_SPAN_ID)?;
    let trace_state: &StringArray = column(batch, col::TRACE_STATE)?;
    let flags: &UInt32Array = column(batch, col::FLAGS)?;
    let name: &StringArray = column(batch, col::NAME)?;
    let kind: &Int8Array = column(batch, col::KIND)?;
    let start: &Int64Array = column(batch, col::START)?;
    let duration: &Int64Array = column(batch, col::DURATION)?;
    let status_code: &Int8Array = column(batch, col::STATUS_CODE)?;
    let status_message: &StringArray = column(batch, col::STATUS_MESSAGE)?;
    let dropped_attrs: &UInt32Array = column(batch, col::DROPPED_ATTRS)?;
    let dropped_events: &UInt32Array = column(batch, col::DROPPED_EVENTS)?;
    let dropped_links: &UInt32Array = column(batch, col::DROPPED_LINKS)?;
    let service: &StringArray = column(batch, col::SERVICE_NAME)?;
    // Attribute, event and link lists may be left out of a read (searches project only what the query uses):
    // missing ones decode as empty.
    let optional_list = |name: &str| batch.column_by_name(name).map(|c| AttrListReader::new(c.as_ref())).transpose();
    let res_attrs = optional_list(col::RESOURCE_ATTRS)?;
    let res_dropped: &UInt32Array = column(batch, col::RESOURCE_DROPPED)?;
    let res_schema: &StringArray = column(batch, col::RESOURCE_SCHEMA_URL)?;
    let scope_name: &StringArray = column(batch, col::SCOPE_NAME)?;
    let scope_version: &StringArray = column(batch, col::SCOPE_VERSION)?;
    let scope_attrs = optional_list(col::SCOPE_ATTRS)?;
    let scope_dropped: &UInt32Array = column(batch, col::SCOPE_DROPPED)?;
    let scope_schema: &StringArray = column(batch, col::SCOPE_SCHEMA_URL)?;
    let span_attrs = optional_list(col::SPAN_ATTRS)?;

    let events = match batch.column_by_name(col::EVENTS) {
        Some(_) => Some(EventCols::new(batch)?),
        None => None,
    };
    let links = match batch.column_by_name(col::LINKS) {
        Some(_) => Some(LinkCols::new(batch)?),
        None => None,
    };

    // Dedicated slots present in this batch, with the attribute they hold.
    let mut res_slots: Vec<(&str, &StringArray)> = Vec::new();
    let mut span_slots: Vec<(&str, &StringArray)> = Vec::new();
    let mut span_int_slots: Vec<(&str, &Int64Array)> = Vec::new();
    for d in dedicated {
        let Some(c) = batch.column_by_name(&d.column) else { continue };
        match (d.scope.as_str(), c.data_type()) {
            ("resource", DataType::Utf8) => res_slots.push((&d.name, c.as_string::<i32>())),
            ("span", DataType::Utf8) => span_slots.push((&d.name, c.as_string::<i32>())),
            ("span", DataType::Int64) => span_int_slots.push((&d.name, c.as_primitive::<Int64Type>())),
            _ => return Err(BlockError::Layout(format!("dedicated column {} has an unexpected type", d.column))),
        }
    }

    let mut out = Vec::with_capacity(batch.num_rows());
    let mut last_origin: Option<Arc<Origin>> = None;
    for i in 0..batch.num_rows() {
        let mut resource = Resource { dropped_attributes_count: res_dropped.value(i), ..Default::default() };
        if !service.is_null(i) {
            resource.attributes.push(kv("service.name", string_value(service.value(i))));
        }
        // Slot values first: the writer moves only a key's first occurrence into a slot.
        for (k, a) in &res_slots {
            if !a.is_null(i) {
                resource.attributes.push(kv(*k, string_value(a.value(i))));
            }
        }
        if let Some(r) = &res_attrs {
            r.read_into(i, &mut resource.attributes)?;
        }
        let origin = Origin {
            resource,
            resource_schema_url: opt_str(res_schema, i),
            scope: InstrumentationScope {
                name: opt_str(scope_name, i),
                version: opt_str(scope_version, i),
                attributes: scope_attrs.as_ref().map(|r| r.read(i)).transpose()?.unwrap_or_default(),
                dropped_attributes_count: scope_dropped.value(i),
            },
            scope_schema_url: opt_str(scope_schema, i),
        };
        let origin = match &last_origin {
            Some(prev) if **prev == origin => prev.clone(),
            _ => {
                let o = Arc::new(origin);
                last_origin = Some(o.clone());
                o
            }
        };

        let mut attributes = Vec::new();
        for (k, a) in &span_slots {
            if !a.is_null(i) {
                attributes.push(kv(*k, string_value(a.value(i))));
            }
        }
        for (k, a) in &span_int_slots {
            if !a.is_null(i) {
                attributes.push(kv(*k, int_value(a.value(i))));
            }
        }
        if let Some(r) = &span_attrs {
            r.read_into(i, &mut attributes)?;
        }
        let events = events.as_ref().map(|e| e.read(i)).transpose()?.unwrap_or_default();
        let links = links.as_ref().map(|l| l.read(i)).transpose()?.unwrap_or_default();
        let st = start.value(i) as u64;
        let span = Span {
            trace_id: trace_id.value(i).to_vec(),
            span_id: span_id.value(i).to_vec(),
            trace_state: opt_str(trace_state, i),
            parent_span_id: if parent.is_null(i) { Vec::new() } else { parent.value(i).to_vec() },
            flags: flags.value(i),
            name: name.value(i).to_string(),
            kind: i32::from(kind.value(i)),
            start_time_unix_nano: st,
            end_time_unix_nano: st.wrapping_add(duration.value(i) as u64),
            attributes,
            dropped_attributes_count: dropped_attrs.value(i),
            events,
            dropped_events_count: dropped_events.value(i),
            links,
            dropped_links_count: dropped_links.value(i),
            status: Some(Status { message: opt_str(status_message, i), code: i32::from(status_code.value(i)) }),
        };
        let tid = TraceId::from_bytes(trace_id.value(i)).ok_or_else(|| BlockError::Layout("zero trace ID".into()))?;
        out.push((tid, SpanRecord { origin, span }));
    }
    Ok(out)
}

fn missing() -> BlockError {
    BlockError::Layout("a list column is missing".into())
}
