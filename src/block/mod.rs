//! Block format: what a block is on object storage, and how it is built from and read back into spans.
//!
//! A block is three objects under `<tenant>/<block id>/`: `data.parquet` (one row per span, sorted by trace ID),
//! `bloom` (a trace-ID bloom filter) and `meta.json`, written last so a block is visible only when complete.
//! This module is pure format: bytes in, bytes out. Moving them to and from object storage is `storage`'s job.

pub mod attrs;
pub mod bloom;
pub mod index;
pub mod reader;
pub mod schema;
pub mod view;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use attrs::AttrRef;
pub use bloom::TraceBloom;
pub use index::TraceIndex;
pub use reader::{
    SpanParts, batch_to_spans, only_traces, page_selection, page_selection_any, rows_selection, slot_bit,
    trace_ids_filter,
};
pub use view::{AttrScope, SpanRows, Text, VIEW_COLUMNS, column};
pub use writer::{
    BlockOptions, BuiltBlock, Dedicated, TraceRowWriter, build_block, dedicated_for_merge, traces_to_batches,
    writer_properties,
};

/// Object names inside a block's folder.
pub const DATA_OBJECT: &str = "data.parquet";
pub const BLOOM_OBJECT: &str = "bloom";
pub const META_OBJECT: &str = "meta.json";
/// Written into `meta.format` so future readers can tell layouts apart.
pub const FORMAT: &str = "strata-parquet";

/// Errors building or decoding a block.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("block meta: {0}")]
    Meta(#[from] serde_json::Error),
    #[error("bloom filter: {0}")]
    Bloom(String),
    #[error("block has an unexpected layout: {0}")]
    Layout(String),
}

/// Which attribute a dedicated slot column holds in this block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedicatedColumn {
    /// `resource` or `span`.
    pub scope: String,
    /// The attribute key, e.g. `http.method`.
    pub name: String,
    /// `string` or `int`.
    #[serde(rename = "type")]
    pub value_type: String,
    /// The slot column that holds it, e.g. `span_str_03`.
    pub column: String,
    /// Whether some values of this key stayed in the generic list too (another type, or a repeated key), so a
    /// search must look there as well. Blocks written before this field existed are assumed to have some.
    #[serde(default = "yes", rename = "alsoInList")]
    pub also_in_list: bool,
}

fn yes() -> bool {
    true
}

/// The small JSON object that describes a block and makes it visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    pub format: String,
    pub schema_version: u32,
    pub block_id: String,
    pub tenant: String,
    /// Earliest span start and latest span end in the block, unix nanoseconds.
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub span_count: u64,
    pub trace_count: u64,
    /// Hex trace IDs bounding the block, for pruning before the bloom filter is consulted.
    pub min_trace_id: String,
    pub max_trace_id: String,
    pub data_size: u64,
    pub bloom_size: u64,
    pub row_groups: u64,
    /// Raw OTLP protobuf bytes of the spans the block was built from, for compression accounting.
    pub raw_bytes: u64,
    pub compaction_level: u32,
    pub created_at_unix: u64,
    pub dedicated_columns: Vec<DedicatedColumn>,
    /// Whether some `service.name` values are in the generic resource list rather than the `service_name`
    /// column (non-string or repeated). Blocks written before this field existed are assumed to have some.
    #[serde(default = "yes")]
    pub service_name_in_list: bool,
    /// The write-ahead-log segments this block's spans came from: a restart skips the tenant's records in them
    /// instead of replaying them into a second copy (a crash between upload and WAL cleanup). Absent on blocks
    /// written before it existed; a compacted block carries its inputs' ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "one_or_many")]
    pub wal: Vec<WalRange>,
    /// Blocks this one was compacted from. They are hidden as soon as this meta exists (the switch is atomic for
    /// any reader that lists the bucket) and deleted after a grace period, so queries already reading them finish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

/// Reads `wal` as a list, or as the single object blocks carried before compaction could join ranges.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WalRange>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(WalRange),
        Many(Vec<WalRange>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(r)) => vec![r],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// Segments `first..=last` of the WAL identified by `instance` (a UUID kept in the WAL directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRange {
    pub instance: String,
    pub first: u64,
    pub last: u64,
}

impl BlockMeta {
    pub fn to_json(&self) -> Result<Vec<u8>, BlockError> {
        Ok(serde_json::to_vec_pretty(self)?)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, BlockError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int32Array};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::model::{Origin, SpanRecord, TraceId, kv};

    fn sv(s: &str) -> Option<AnyValue> {
        Some(AnyValue { value: Some(Value::StringValue(s.into())) })
    }

    fn sort_attrs(s: &mut Span) {
        s.attributes.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// A trace: root -> (a -> a1), b; plus an orphan whose parent never arrived, and a duplicate of `b`.
    fn trace(n: u8, origin: &Arc<Origin>) -> (TraceId, Vec<SpanRecord>) {
        let tid = TraceId([n; 16]);
        let mk = |id: u8, parent: Option<u8>, start: u64, name: &str| Span {
            trace_id: tid.0.to_vec(),
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 100,
            attributes: vec![
                kv("http.method", sv("GET")),
                kv("http.status_code", Some(AnyValue { value: Some(Value::IntValue(200)) })),
                kv("rare", sv(&format!("x{id}"))),
            ],
            events: vec![span::Event {
                time_unix_nano: start + 1,
                name: "ev".into(),
                attributes: vec![kv("k", sv("v"))],
                dropped_attributes_count: 1,
            }],
            links: vec![span::Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: "a=b".into(),
                attributes: vec![kv("l", sv("m"))],
                dropped_attributes_count: 0,
                flags: 1,
            }],
            status: Some(Status { code: 2, message: "bad".into() }),
            ..Default::default()
        };
        let spans = vec![
            mk(1, None, 10, "root"),
            mk(2, Some(1), 20, "a"),
            mk(3, Some(2), 30, "a1"),
            mk(4, Some(1), 40, "b"),
            mk(5, Some(77), 50, "orphan"),
            mk(4, Some(1), 40, "b"),
        ];
        (tid, spans.into_iter().map(|span| SpanRecord { origin: origin.clone(), span }).collect())
    }

    #[test]
    fn block_round_trips_spans_and_numbers_the_tree() {
        let origin = Arc::new(Origin {
            resource: Resource {
                attributes: vec![kv("service.name", sv("shop")), kv("k8s.namespace", sv("prod")), kv("n", None)],
                dropped_attributes_count: 0,
                ..Default::default()
            },
            scope: opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                name: "lib".into(),
                version: "1.0".into(),
                ..Default::default()
            },
            ..Default::default()
        });
        let traces: Vec<_> = (1..=3).map(|n| trace(n, &origin)).collect();
        let built = build_block("t", "b1", &traces, 1234, &BlockOptions { row_group_rows: 4, ..Default::default() })
            .expect("build");
        assert_eq!(built.meta.span_count, 15, "duplicates removed");
        assert_eq!(built.meta.trace_count, 3);
        assert_eq!(built.meta.min_trace_id, TraceId([1; 16]).to_hex());
        assert!(built.meta.row_groups > 1);
        let names: Vec<&str> = built.meta.dedicated_columns.iter().map(|d| d.name.as_str()).collect();
        assert!(
            names.contains(&"http.method") && names.contains(&"http.status_code") && names.contains(&"k8s.namespace")
        );
        assert!(!names.contains(&"service.name"));
        assert!(built.bloom_filter.may_contain(&TraceId([2; 16])));
        let kv = built.parquet_meta.file_metadata().key_value_metadata().expect("key-value metadata");
        let slots = kv.iter().find(|k| k.key == writer::DEDICATED_COLUMNS_KEY).and_then(|k| k.value.clone());
        let slots: Vec<DedicatedColumn> = serde_json::from_str(&slots.expect("slots recorded")).expect("JSON");
        assert_eq!(slots, built.meta.dedicated_columns, "the file describes its own slots");

        // Read one trace back through the row filter, as the storage layer does.
        let target = TraceId([2; 16]);
        let b = ParquetRecordBatchReaderBuilder::try_new(built.data.clone()).expect("reader");
        let filter = trace_ids_filter(b.parquet_schema(), std::sync::Arc::new(vec![target]));
        let batches: Vec<_> =
            b.with_row_filter(filter).build().expect("build").collect::<Result<_, _>>().expect("read");
        let mut got: Vec<SpanRecord> = Vec::new();
        for batch in &batches {
            let left: &Int32Array =
                batch.column_by_name(schema::col::NESTED_LEFT).unwrap().as_any().downcast_ref().unwrap();
            assert!(left.len() <= 5);
            got.extend(batch_to_spans(batch, &built.meta.dedicated_columns).expect("decode").into_iter().map(
                |(id, s)| {
                    assert_eq!(id, target);
                    s
                },
            ));
        }
        let mut want: Vec<Span> = trace(2, &origin).1.into_iter().take(5).map(|r| r.span).collect();
        let mut got_spans: Vec<Span> = got.iter().map(|r| r.span.clone()).collect();
        want.iter_mut().for_each(sort_attrs);
        got_spans.iter_mut().for_each(sort_attrs);
        want.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        got_spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        assert_eq!(got_spans, want);
        let mut res = got[0].origin.resource.attributes.clone();
        res.sort_by(|a, b| a.key.cmp(&b.key));
        let mut want_res = origin.resource.attributes.clone();
        want_res.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(res, want_res);
        assert_eq!(got[0].origin.scope, origin.scope);
    }

    /// Every row group carries a bloom filter over the string values of the attribute lists (what searches for a
    /// rare value of an attribute without a slot skip row groups by).
    #[test]
    fn row_groups_carry_attribute_value_blooms() {
        use parquet::file::reader::FileReader;
        let origin = Arc::new(Origin::default());
        // More keys than string slots: some stay in the generic list.
        let keys = schema::SPAN_STR_SLOTS + 4;
        let traces: Vec<_> = (1..=6u8)
            .map(|n| {
                let (id, mut spans) = trace(n, &origin);
                for s in &mut spans {
                    s.span.attributes.extend((0..keys).map(|k| kv(format!("k{k}"), sv(&format!("v{k}-{n}")))));
                }
                (id, spans)
            })
            .collect();
        let built = build_block("t", "b1", &traces, 1234, &BlockOptions { row_group_rows: 10, ..Default::default() })
            .expect("build");
        let listed: Vec<usize> =
            (0..keys).filter(|k| !built.meta.dedicated_columns.iter().any(|d| d.name == format!("k{k}"))).collect();
        assert!(!listed.is_empty(), "some keys are in the list");
        let leaves = writer::attr_string_leaves().expect("leaves");
        assert_eq!(leaves.len(), 2, "span and resource lists");
        let opts = parquet::file::serialized_reader::ReadOptionsBuilder::new()
            .with_reader_properties(
                parquet::file::properties::ReaderProperties::builder().set_read_bloom_filter(true).build(),
            )
            .build();
        let file = parquet::file::serialized_reader::SerializedFileReader::new_with_options(built.data.clone(), opts)
            .expect("file");
        let descr = file.metadata().file_metadata().schema_descr_ptr();
        let span_leaf = (0..descr.num_columns())
            .find(|&i| {
                descr.column(i).path().parts()[0] == schema::col::SPAN_ATTRS && leaves.contains(descr.column(i).path())
            })
            .expect("span attribute string leaf");
        assert!(file.num_row_groups() > 1);
        let (mut first_trace, mut last_trace) = (false, false);
        for rg in 0..file.num_row_groups() {
            let group = file.get_row_group(rg).expect("row group");
            let bloom = group.get_column_bloom_filter(span_leaf).expect("a bloom filter per row group");
            assert!(!bloom.check("no such value anywhere"));
            first_trace |= bloom.check(format!("v{}-1", listed[0]).as_str());
            last_trace |= bloom.check(format!("v{}-6", listed[0]).as_str());
        }
        assert!(first_trace && last_trace, "listed values are in their row groups' filters");
    }

    #[test]
    fn trace_index_selects_exactly_the_rows_of_chosen_traces() {
        let origin = Arc::new(Origin::default());
        let traces: Vec<_> = (1..=30).map(|n| trace(n, &origin)).collect();
        // Row groups of 7 rows and pages of 3: traces (5 rows each) straddle both.
        let opts = BlockOptions { row_group_rows: 7, page_rows: 3, ..Default::default() };
        let built = build_block("t", "b", &traces, 0, &opts).expect("build");
        let read = |sel: Option<(Vec<usize>, parquet::arrow::arrow_reader::RowSelection)>| {
            let b = ParquetRecordBatchReaderBuilder::try_new(built.data.clone()).expect("reader");
            let b = match sel {
                Some((groups, s)) => b.with_row_groups(groups).with_row_selection(s),
                None => b,
            };
            b.build().expect("build").collect::<Result<Vec<_>, _>>().expect("read")
        };
        let index = TraceIndex::from_batches(&read(None)).expect("index");
        assert_eq!(index.len(), 30);
        assert_eq!(index.num_rows(), 150);
        for chosen in [vec![1u8], vec![2, 3], vec![1, 30], vec![4, 9, 10, 11, 25], (1..=30).collect()] {
            let mut runs: Vec<_> = chosen.iter().map(|&n| index.rows(index.find(&TraceId([n; 16])).unwrap())).collect();
            runs.sort_by_key(|r| r.start);
            let batches = read(Some(rows_selection(&built.parquet_meta, &runs)));
            let mut got: Vec<u8> = Vec::new();
            for batch in &batches {
                got.extend(batch_to_spans(batch, &built.meta.dedicated_columns).unwrap().iter().map(|(id, _)| id.0[0]));
            }
            let want: Vec<u8> = chosen.iter().flat_map(|&n| [n; 5]).collect();
            assert_eq!(got, want, "traces {chosen:?}");
        }
        assert_eq!(index.trace_of_row(7), index.find(&TraceId([2; 16])));
    }

    #[test]
    fn a_meta_written_by_the_first_version_still_reads() {
        // meta.json as the first block writer wrote it: no alsoInList, serviceNameInList or wal fields.
        let old = r#"{
          "format": "strata-parquet", "schemaVersion": 1, "blockId": "b0", "tenant": "single-tenant",
          "startTimeUnixNano": 10, "endTimeUnixNano": 20, "spanCount": 3, "traceCount": 1,
          "minTraceId": "01010101010101010101010101010101", "maxTraceId": "01010101010101010101010101010101",
          "dataSize": 100, "bloomSize": 10, "rowGroups": 1, "rawBytes": 300, "compactionLevel": 0,
          "createdAtUnix": 1700000000,
          "dedicatedColumns": [{"scope": "span", "name": "http.method", "type": "string", "column": "span_str_00"}]
        }"#;
        let meta = BlockMeta::from_json(old.as_bytes()).expect("old meta reads");
        assert!(meta.service_name_in_list && meta.dedicated_columns[0].also_in_list, "old blocks assume lists");
        assert!(meta.wal.is_empty() && meta.replaces.is_empty());
        // A meta whose `wal` is one range (as written before compaction could join several) still reads.
        let single =
            old.replace(r#""createdAtUnix""#, r#""wal": {"instance": "i", "first": 1, "last": 2}, "createdAtUnix""#);
        let meta1 = BlockMeta::from_json(single.as_bytes()).expect("single-range meta reads");
        assert_eq!(meta1.wal, vec![WalRange { instance: "i".into(), first: 1, last: 2 }]);
        // And what this version writes reads back the same.
        assert_eq!(BlockMeta::from_json(&meta.to_json().unwrap()).unwrap(), meta);
    }

    #[test]
    fn nested_set_numbers_follow_the_tree() {
        let origin = Arc::new(Origin::default());
        let traces = vec![trace(1, &origin)];
        let built = build_block("t", "b", &traces, 0, &BlockOptions::default()).expect("build");
        let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(built.data)
            .expect("reader")
            .build()
            .expect("build")
            .collect::<Result<_, _>>()
            .expect("read");
        let b = &batches[0];
        let col = |n: &str| -> Vec<i32> {
            let a: &Int32Array = b.column_by_name(n).unwrap().as_any().downcast_ref().unwrap();
            a.values().to_vec()
        };
        let names: Vec<String> = batch_to_spans(b, &[]).unwrap().into_iter().map(|(_, s)| s.span.name).collect();
        // Depth first, children by start time; the orphan is its own root after the real one.
        assert_eq!(names, ["root", "a", "a1", "b", "orphan"]);
        assert_eq!(col(schema::col::NESTED_LEFT), [1, 2, 3, 6, 9]);
        assert_eq!(col(schema::col::NESTED_RIGHT), [8, 5, 4, 7, 10]);
        assert_eq!(col(schema::col::NESTED_PARENT), [0, 1, 2, 1, 0]);
    }
}
