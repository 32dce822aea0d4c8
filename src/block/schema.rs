//! The block schema: one row per span, trace-level columns repeated on each row.
//!
//! Why one row per span: a DataFusion querier can filter and aggregate spans with plain column predicates, and
//! repeated trace-level values cost almost nothing because rows are sorted by trace ID (dictionary + RLE).
//! Attributes keep their OTLP types in a generic list; the most frequent keys of each block are moved into fixed
//! "dedicated" slot columns whose meaning the block's meta records, so the schema is the same for every block.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

/// Bumped whenever the columns change incompatibly; stored in every block's meta.
pub const SCHEMA_VERSION: u32 = 1;

/// Dedicated string slots for resource attributes.
pub const RES_STR_SLOTS: usize = 10;
/// Dedicated string slots for span attributes.
pub const SPAN_STR_SLOTS: usize = 10;
/// Dedicated int slots for span attributes (status codes, sizes).
pub const SPAN_INT_SLOTS: usize = 5;

pub mod col {
    //! Column names, shared by the writer, the reader and the querier.
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const FLAGS: &str = "flags";
    pub const NAME: &str = "name";
    pub const KIND: &str = "kind";
    pub const START: &str = "start_unix_nano";
    pub const DURATION: &str = "duration_nano";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const DROPPED_ATTRS: &str = "dropped_attributes_count";
    pub const DROPPED_EVENTS: &str = "dropped_events_count";
    pub const DROPPED_LINKS: &str = "dropped_links_count";
    pub const NESTED_LEFT: &str = "nested_left";
    pub const NESTED_RIGHT: &str = "nested_right";
    pub const NESTED_PARENT: &str = "nested_parent";
    pub const SERVICE_NAME: &str = "service_name";
    pub const RESOURCE_ATTRS: &str = "resource_attrs";
    pub const RESOURCE_DROPPED: &str = "resource_dropped_attributes_count";
    pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
    pub const SCOPE_NAME: &str = "scope_name";
    pub const SCOPE_VERSION: &str = "scope_version";
    pub const SCOPE_ATTRS: &str = "scope_attrs";
    pub const SCOPE_DROPPED: &str = "scope_dropped_attributes_count";
    pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
    pub const SPAN_ATTRS: &str = "span_attrs";
    pub const EVENTS: &str = "events";
    pub const LINKS: &str = "links";
    pub const TRACE_START: &str = "trace_start_unix_nano";
    pub const TRACE_END: &str = "trace_end_unix_nano";
    pub const ROOT_SERVICE: &str = "root_service_name";
    pub const ROOT_NAME: &str = "root_span_name";
}

/// Value kinds in the generic attribute list (`kind` field).
pub mod kind {
    pub const STRING: i8 = 1;
    pub const INT: i8 = 2;
    pub const DOUBLE: i8 = 3;
    pub const BOOL: i8 = 4;
    pub const BYTES: i8 = 5;
    /// Arrays and key/value lists keep their protobuf `AnyValue` encoding in `raw`.
    pub const ARRAY: i8 = 6;
    pub const KVLIST: i8 = 7;
    /// Any other value form (e.g. string-table indexes) kept as its protobuf encoding.
    pub const OTHER: i8 = 8;
    /// An attribute whose value is absent.
    pub const EMPTY: i8 = 0;
}

/// Name of dedicated resource string slot `i`.
pub fn res_str_col(i: usize) -> String {
    format!("res_str_{i:02}")
}
/// Name of dedicated span string slot `i`.
pub fn span_str_col(i: usize) -> String {
    format!("span_str_{i:02}")
}
/// Name of dedicated span int slot `i`.
pub fn span_int_col(i: usize) -> String {
    format!("span_int_{i:02}")
}

/// Fields of one generic attribute.
pub fn attr_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("kind", DataType::Int8, false),
        Field::new("s", DataType::Utf8, true),
        Field::new("i", DataType::Int64, true),
        Field::new("d", DataType::Float64, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("raw", DataType::Binary, true),
    ])
}

/// `List<Struct<attr>>`, the type of every attribute list column.
pub fn attr_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(attr_fields()), false)))
}

pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time_unix_nano", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attrs", attr_list_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Binary, false),
        Field::new("span_id", DataType::Binary, false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("flags", DataType::UInt32, false),
        Field::new("attrs", attr_list_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), false)))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    let mut f = vec![
        Field::new(col::TRACE_ID, FixedSizeBinary(16), false),
        Field::new(col::SPAN_ID, FixedSizeBinary(8), false),
        Field::new(col::PARENT_SPAN_ID, FixedSizeBinary(8), true),
        Field::new(col::TRACE_STATE, Utf8, true),
        Field::new(col::FLAGS, UInt32, false),
        Field::new(col::NAME, Utf8, false),
        Field::new(col::KIND, Int8, false),
        Field::new(col::START, Int64, false),
        Field::new(col::DURATION, Int64, false),
        Field::new(col::STATUS_CODE, Int8, false),
        Field::new(col::STATUS_MESSAGE, Utf8, true),
        Field::new(col::DROPPED_ATTRS, UInt32, false),
        Field::new(col::DROPPED_EVENTS, UInt32, false),
        Field::new(col::DROPPED_LINKS, UInt32, false),
        Field::new(col::NESTED_LEFT, Int32, false),
        Field::new(col::NESTED_RIGHT, Int32, false),
        Field::new(col::NESTED_PARENT, Int32, false),
        Field::new(col::SERVICE_NAME, Utf8, true),
        Field::new(col::RESOURCE_ATTRS, attr_list_type(), false),
        Field::new(col::RESOURCE_DROPPED, UInt32, false),
        Field::new(col::RESOURCE_SCHEMA_URL, Utf8, true),
        Field::new(col::SCOPE_NAME, Utf8, true),
        Field::new(col::SCOPE_VERSION, Utf8, true),
        Field::new(col::SCOPE_ATTRS, attr_list_type(), false),
        Field::new(col::SCOPE_DROPPED, UInt32, false),
        Field::new(col::SCOPE_SCHEMA_URL, Utf8, true),
        Field::new(col::SPAN_ATTRS, attr_list_type(), false),
        Field::new(col::EVENTS, list_of(event_fields()), false),
        Field::new(col::LINKS, list_of(link_fields()), false),
        Field::new(col::TRACE_START, Int64, false),
        Field::new(col::TRACE_END, Int64, false),
        Field::new(col::ROOT_SERVICE, Utf8, true),
        Field::new(col::ROOT_NAME, Utf8, true),
    ];
    f.extend((0..RES_STR_SLOTS).map(|i| Field::new(res_str_col(i), Utf8, true)));
    f.extend((0..SPAN_STR_SLOTS).map(|i| Field::new(span_str_col(i), Utf8, true)));
    f.extend((0..SPAN_INT_SLOTS).map(|i| Field::new(span_int_col(i), Int64, true)));
    Arc::new(Schema::new(f))
});

/// The Arrow schema of every block of this schema version.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}
