//! Spans read in place from block-schema record batches, without turning rows into OTLP structs.
//!
//! Searches look at a few fields of many spans: building `Span`s with their strings and attribute vectors cost
//! most of a search's time (see `query/DESIGN.md`). `SpanRows` answers the same questions straight from the Arrow
//! arrays, with the block's dedicated slots mapped back to attribute keys in the order the reader would rebuild
//! them, so "the first value of a key" is the same as on a decoded span.

use arrow::array::{
    Array, AsArray, BinaryArray, FixedSizeBinaryArray, Int8Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, StructArray,
};
use arrow::datatypes::{DataType, Int32Type, Int64Type};

use super::attrs::{AttrListReader as AttrList, AttrRef};
use super::schema::col;
use super::{BlockError, DedicatedColumn};

/// Where an attribute lives on a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrScope {
    Resource,
    Span,
    Instrumentation,
}

fn child<T: Clone + 'static>(st: &StructArray, name: &str) -> Result<T, BlockError> {
    st.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .cloned()
        .ok_or_else(|| BlockError::Layout(format!("field {name} missing or mistyped")))
}

fn items(list: &ListArray) -> Result<&StructArray, BlockError> {
    list.values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| BlockError::Layout("list items are not structs".into()))
}

/// Events or links of each span: the list, the per-item fields a search reads, and the items' attributes.
struct Nested {
    list: ListArray,
    attrs: AttrList,
}

impl Nested {
    fn new(c: &dyn Array) -> Result<(Self, StructArray), BlockError> {
        let list = c
            .as_any()
            .downcast_ref::<ListArray>()
            .cloned()
            .ok_or_else(|| BlockError::Layout("event/link column is not a list".into()))?;
        let st = items(&list)?.clone();
        let attrs = AttrList::new(st.column_by_name("attrs").ok_or_else(|| BlockError::Layout("no attrs".into()))?)?;
        Ok((Nested { list, attrs }, st))
    }

    fn range(&self, row: usize) -> std::ops::Range<usize> {
        let o = self.list.value_offsets();
        o[row] as usize..o[row + 1] as usize
    }
}

/// A string column as a block file types it, or dictionary-encoded as the column cache keeps it: rows taken
/// from the cache then share its strings instead of copying every name and service (an all-traces search took
/// all 800k rows of the benchmark's blocks).
#[derive(Clone, Debug)]
pub enum Text {
    Plain(StringArray),
    /// Keys and values of a dictionary with `Int32` keys.
    Dict(Int32Array, StringArray),
}

impl Text {
    /// `a` as text, if it is `Utf8` or a dictionary of `Utf8` with `Int32` keys.
    pub fn new(a: &dyn Array) -> Option<Text> {
        match a.data_type() {
            DataType::Utf8 => Some(Text::Plain(a.as_string::<i32>().clone())),
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = a.as_dictionary::<Int32Type>();
                Some(Text::Dict(d.keys().clone(), d.values().as_string_opt::<i32>()?.clone()))
            }
            _ => None,
        }
    }

    /// Column `name` of `batch` as text.
    pub fn column(batch: &RecordBatch, name: &str) -> Result<Text, BlockError> {
        batch
            .column_by_name(name)
            .and_then(|c| Text::new(c.as_ref()))
            .ok_or_else(|| BlockError::Layout(format!("column {name} missing or not text")))
    }

    fn key(&self, row: usize) -> Option<usize> {
        match self {
            Text::Plain(_) => None,
            Text::Dict(keys, _) => (!keys.is_null(row)).then(|| keys.value(row) as usize),
        }
    }

    pub fn is_null(&self, row: usize) -> bool {
        match self {
            Text::Plain(a) => a.is_null(row),
            Text::Dict(_, values) => self.key(row).is_none_or(|k| k >= values.len() || values.is_null(k)),
        }
    }

    /// The value at `row`; a null reads as "".
    pub fn value(&self, row: usize) -> &str {
        match self {
            Text::Plain(a) => a.value(row),
            Text::Dict(_, values) => match self.key(row) {
                Some(k) if k < values.len() => values.value(k),
                _ => "",
            },
        }
    }
}

/// A dedicated slot: the attribute key it holds and its column.
enum Slot {
    Str(String, Text),
    Int(String, Int64Array),
}

impl Slot {
    fn key(&self) -> &str {
        match self {
            Slot::Str(k, _) | Slot::Int(k, _) => k,
        }
    }

    fn get(&self, row: usize) -> Option<AttrRef<'_>> {
        match self {
            Slot::Str(_, a) => (!a.is_null(row)).then(|| AttrRef::Str(a.value(row))),
            Slot::Int(_, a) => (!a.is_null(row)).then(|| AttrRef::Int(a.value(row))),
        }
    }
}

/// Span rows of one record batch (full or projected block schema). Attribute, event and link columns left out
/// of the read answer as empty.
pub struct SpanRows {
    trace_id: FixedSizeBinaryArray,
    span_id: FixedSizeBinaryArray,
    parent: FixedSizeBinaryArray,
    name: Text,
    kind: Int8Array,
    start: Int64Array,
    duration: Int64Array,
    status_code: Int8Array,
    status_message: Text,
    service: Text,
    scope_name: Text,
    scope_version: Text,
    resource_attrs: Option<AttrList>,
    span_attrs: Option<AttrList>,
    scope_attrs: Option<AttrList>,
    res_slots: Vec<Slot>,
    span_slots: Vec<Slot>,
    events: Option<(Nested, Int64Array, StringArray)>,
    links: Option<(Nested, BinaryArray, BinaryArray)>,
}

/// The columns a search's whole-trace pass reads besides the optional parts.
pub const VIEW_COLUMNS: [&str; 12] = [
    col::TRACE_ID,
    col::SPAN_ID,
    col::PARENT_SPAN_ID,
    col::NAME,
    col::KIND,
    col::START,
    col::DURATION,
    col::STATUS_CODE,
    col::STATUS_MESSAGE,
    col::SERVICE_NAME,
    col::SCOPE_NAME,
    col::SCOPE_VERSION,
];

/// Column `name` of `batch` as the Arrow array type `T`.
pub fn column<T: Clone + 'static>(batch: &RecordBatch, name: &str) -> Result<T, BlockError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .cloned()
        .ok_or_else(|| BlockError::Layout(format!("column {name} missing or mistyped")))
}

/// A column of `batch`, or an all-null one of the same type when the read left it out.
fn column_or_null<T: Clone + 'static>(batch: &RecordBatch, name: &str, ty: DataType) -> Result<T, BlockError> {
    match batch.column_by_name(name) {
        Some(_) => column(batch, name),
        None => arrow::array::new_null_array(&ty, batch.num_rows())
            .as_any()
            .downcast_ref::<T>()
            .cloned()
            .ok_or_else(|| BlockError::Layout(format!("column {name} cannot be stood in for"))),
    }
}

impl SpanRows {
    /// Views `batch`, whose slot columns hold `dedicated` (the block meta's list; empty for data in memory).
    pub fn new(batch: &RecordBatch, dedicated: &[DedicatedColumn]) -> Result<Self, BlockError> {
        Self::build(batch, dedicated, false)
    }

    /// Like [`SpanRows::new`] for a read of only some of the view's columns (start is required):
    /// the others read as empty (null IDs, empty strings, zero kind and status). For evaluations that only look
    /// at what was read, such as a span-by-span metrics scan.
    pub fn partial(batch: &RecordBatch, dedicated: &[DedicatedColumn]) -> Result<Self, BlockError> {
        Self::build(batch, dedicated, true)
    }

    fn build(batch: &RecordBatch, dedicated: &[DedicatedColumn], partial: bool) -> Result<Self, BlockError> {
        let list = |name: &str| batch.column_by_name(name).map(|c| AttrList::new(c.as_ref())).transpose();
        let mut res_slots = Vec::new();
        let mut span_slots = Vec::new();
        for d in dedicated {
            let Some(c) = batch.column_by_name(&d.column) else { continue };
            let slot = match (c.data_type(), Text::new(c.as_ref())) {
                (_, Some(t)) => Slot::Str(d.name.clone(), t),
                (DataType::Int64, None) => Slot::Int(d.name.clone(), c.as_primitive::<Int64Type>().clone()),
                _ => return Err(BlockError::Layout(format!("dedicated column {} has an unexpected type", d.column))),
            };
            match d.scope.as_str() {
                "resource" => res_slots.push(slot),
                "span" => span_slots.push(slot),
                other => return Err(BlockError::Layout(format!("dedicated column of unknown scope {other}"))),
            }
        }
        // The reader puts string slots before int slots; keep that order so the first value of a key agrees.
        span_slots.sort_by_key(|s| matches!(s, Slot::Int(..)));
        let events = match batch.column_by_name(col::EVENTS) {
            Some(c) => {
                let (n, st) = Nested::new(c.as_ref())?;
                Some((n, child(&st, "time_unix_nano")?, child(&st, "name")?))
            }
            None => None,
        };
        let links = match batch.column_by_name(col::LINKS) {
            Some(c) => {
                let (n, st) = Nested::new(c.as_ref())?;
                Some((n, child(&st, "trace_id")?, child(&st, "span_id")?))
            }
            None => None,
        };
        let fixed = |name: &str| -> Result<FixedSizeBinaryArray, BlockError> {
            if partial { column_or_null(batch, name, DataType::FixedSizeBinary(8)) } else { column(batch, name) }
        };
        let text = |name: &str| -> Result<Text, BlockError> {
            match batch.column_by_name(name) {
                None if partial => Ok(Text::Plain(column_or_null(batch, name, DataType::Utf8)?)),
                _ => Text::column(batch, name),
            }
        };
        let small = |name: &str| -> Result<Int8Array, BlockError> {
            if partial { column_or_null(batch, name, DataType::Int8) } else { column(batch, name) }
        };
        let duration: Int64Array = if partial {
            column_or_null(batch, col::DURATION, DataType::Int64)?
        } else {
            column(batch, col::DURATION)?
        };
        Ok(SpanRows {
            trace_id: if partial {
                column_or_null(batch, col::TRACE_ID, DataType::FixedSizeBinary(16))?
            } else {
                column(batch, col::TRACE_ID)?
            },
            span_id: fixed(col::SPAN_ID)?,
            parent: fixed(col::PARENT_SPAN_ID)?,
            name: text(col::NAME)?,
            kind: small(col::KIND)?,
            start: column(batch, col::START)?,
            duration,
            status_code: small(col::STATUS_CODE)?,
            status_message: text(col::STATUS_MESSAGE)?,
            service: text(col::SERVICE_NAME)?,
            scope_name: text(col::SCOPE_NAME)?,
            scope_version: text(col::SCOPE_VERSION)?,
            resource_attrs: list(col::RESOURCE_ATTRS)?,
            span_attrs: list(col::SPAN_ATTRS)?,
            scope_attrs: list(col::SCOPE_ATTRS)?,
            res_slots,
            span_slots,
            events,
            links,
        })
    }

    pub fn len(&self) -> usize {
        self.trace_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn trace_id(&self, row: usize) -> &[u8] {
        self.trace_id.value(row)
    }

    pub fn span_id(&self, row: usize) -> &[u8] {
        self.span_id.value(row)
    }

    /// The parent span ID; `None` for a root.
    pub fn parent_id(&self, row: usize) -> Option<&[u8]> {
        (!self.parent.is_null(row)).then(|| self.parent.value(row))
    }

    pub fn name(&self, row: usize) -> &str {
        self.name.value(row)
    }

    /// OTLP span kind number.
    pub fn kind(&self, row: usize) -> i32 {
        i32::from(self.kind.value(row))
    }

    pub fn start(&self, row: usize) -> u64 {
        self.start.value(row) as u64
    }

    pub fn end(&self, row: usize) -> u64 {
        self.start(row).wrapping_add(self.duration.value(row) as u64)
    }

    /// OTLP status code number.
    pub fn status_code(&self, row: usize) -> i32 {
        i32::from(self.status_code.value(row))
    }

    pub fn status_message(&self, row: usize) -> &str {
        opt(&self.status_message, row)
    }

    pub fn scope_name(&self, row: usize) -> &str {
        opt(&self.scope_name, row)
    }

    pub fn scope_version(&self, row: usize) -> &str {
        opt(&self.scope_version, row)
    }

    /// The first value of attribute `key` in `scope`, looked up in the order the reader rebuilds the list:
    /// `service.name`'s own column, then dedicated slots, then the generic list.
    pub fn attr(&self, row: usize, scope: AttrScope, key: &str) -> Option<AttrRef<'_>> {
        let (slots, list) = match scope {
            AttrScope::Resource => {
                if key == "service.name" && !self.service.is_null(row) {
                    return Some(AttrRef::Str(self.service.value(row)));
                }
                (&self.res_slots[..], &self.resource_attrs)
            }
            AttrScope::Span => (&self.span_slots[..], &self.span_attrs),
            AttrScope::Instrumentation => (&[][..], &self.scope_attrs),
        };
        slots
            .iter()
            .filter(|s| s.key() == key)
            .find_map(|s| s.get(row))
            .or_else(|| list.as_ref().and_then(|l| l.find(row, key)))
    }

    /// The attribute keys of `scope` on this span (with repeats, as stored).
    pub fn attr_keys(&self, row: usize, scope: AttrScope) -> Vec<&str> {
        let mut out = Vec::new();
        let (slots, list) = match scope {
            AttrScope::Resource => {
                if !self.service.is_null(row) {
                    out.push("service.name");
                }
                (&self.res_slots[..], &self.resource_attrs)
            }
            AttrScope::Span => (&self.span_slots[..], &self.span_attrs),
            AttrScope::Instrumentation => (&[][..], &self.scope_attrs),
        };
        out.extend(slots.iter().filter(|s| s.get(row).is_some()).map(Slot::key));
        if let Some(l) = list {
            out.extend(l.keys(row));
        }
        out
    }

    /// Number of events of the span.
    pub fn event_count(&self, row: usize) -> usize {
        self.events.as_ref().map_or(0, |(n, ..)| n.range(row).len())
    }

    /// Name and time (unix nanoseconds) of the span's event `k`.
    pub fn event(&self, row: usize, k: usize) -> Option<(&str, u64)> {
        let (n, time, name) = self.events.as_ref()?;
        let j = n.range(row).nth(k)?;
        Some((name.value(j), time.value(j) as u64))
    }

    /// The first value of `key` on each event of the span that has it.
    pub fn event_attrs<'s>(&'s self, row: usize, key: &str) -> impl Iterator<Item = AttrRef<'s>> {
        self.events.iter().flat_map(move |(n, ..)| n.range(row).filter_map(move |j| n.attrs.find(j, key)))
    }

    /// Keys of every event attribute of the span.
    pub fn event_attr_keys(&self, row: usize) -> Vec<&str> {
        self.events.iter().flat_map(|(n, ..)| n.range(row).flat_map(|j| n.attrs.keys(j))).collect()
    }

    pub fn link_count(&self, row: usize) -> usize {
        self.links.as_ref().map_or(0, |(n, ..)| n.range(row).len())
    }

    /// Trace and span ID of the span's link `k`.
    pub fn link(&self, row: usize, k: usize) -> Option<(&[u8], &[u8])> {
        let (n, trace, span) = self.links.as_ref()?;
        let j = n.range(row).nth(k)?;
        Some((trace.value(j), span.value(j)))
    }

    pub fn link_attrs<'s>(&'s self, row: usize, key: &str) -> impl Iterator<Item = AttrRef<'s>> {
        self.links.iter().flat_map(move |(n, ..)| n.range(row).filter_map(move |j| n.attrs.find(j, key)))
    }

    pub fn link_attr_keys(&self, row: usize) -> Vec<&str> {
        self.links.iter().flat_map(|(n, ..)| n.range(row).flat_map(|j| n.attrs.keys(j))).collect()
    }
}

fn opt(a: &Text, row: usize) -> &str {
    if a.is_null(row) { "" } else { a.value(row) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::DictionaryArray;

    #[test]
    fn text_reads_plain_and_dictionary_columns_alike() {
        let plain = StringArray::from(vec![Some("a"), None, Some("b"), Some("a")]);
        let dict: DictionaryArray<Int32Type> = vec![Some("a"), None, Some("b"), Some("a")].into_iter().collect();
        let texts = [Text::new(&plain), Text::new(&dict)];
        for t in texts {
            let t = t.expect("both forms are text");
            assert_eq!((0..4).map(|r| t.is_null(r)).collect::<Vec<_>>(), [false, true, false, false]);
            assert_eq!([t.value(0), t.value(2), t.value(3)], ["a", "b", "a"]);
            assert_eq!(opt(&t, 1), "");
        }
        assert!(Text::new(&Int64Array::from(vec![1])).is_none(), "numbers are not text");
    }
}
