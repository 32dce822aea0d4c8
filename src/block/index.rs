//! Where each trace's rows sit in a block's Parquet file.
//!
//! Rows are sorted by trace ID, so a trace's rows in a block are one run. Knowing the runs lets a search turn the
//! row numbers a filter matched into trace IDs without decoding the 16-byte ID column, list a block's traces with
//! their start without scanning it, and fetch a few traces by selecting exactly their rows. The index is derived
//! from the data (built by reading two columns once), so every block has one, whatever version wrote it.

use std::ops::Range;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;

use super::BlockError;
use super::schema::col;
use crate::model::TraceId;

/// The traces of one block in ID order, with their row runs and the earliest span start of their rows there.
#[derive(Debug, Default)]
pub struct TraceIndex {
    ids: Vec<TraceId>,
    /// `first_row[i]..first_row[i + 1]` are trace `i`'s rows; one more entry than traces.
    first_row: Vec<u32>,
    start: Vec<u64>,
    /// Trace positions by start, latest first (ties by ID), for walking a block newest first.
    newest: Vec<u32>,
    /// Per trace, `stats[stats_at[i]..stats_at[i + 1]]` counts its rows by service (index into `services`) and
    /// those with error status: a search over a trace stored whole in this block reports them without reading it.
    /// Empty when the index was built without the service and status columns.
    stats_at: Vec<u32>,
    stats: Vec<ServiceCount>,
    services: Vec<String>,
}

/// Rows of one trace from one service, and how many of them have error status.
#[derive(Debug, Clone, Copy)]
struct ServiceCount {
    service: u32,
    spans: u32,
    errors: u32,
}

/// Status code of an error span (`STATUS_CODE_ERROR`).
const STATUS_ERROR: i8 = 2;

impl TraceIndex {
    /// Builds the index from the block's `trace_id` and `trace_start_unix_nano` columns, read in file order, and
    /// its per-service counts from `service_name` and `status_code` when the batches hold them.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self, BlockError> {
        let mut ix = TraceIndex::default();
        let mut row: u32 = 0;
        let with_stats = batches.first().is_some_and(|b| {
            b.column_by_name(col::SERVICE_NAME).is_some() && b.column_by_name(col::STATUS_CODE).is_some()
        });
        let mut service_ids: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        // The previous row's service, so runs of one service need no lookup.
        let mut last_service: Option<(String, u32)> = None;
        for batch in batches {
            let stats_cols = if with_stats {
                let services = batch
                    .column_by_name(col::SERVICE_NAME)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| BlockError::Layout("trace index: service column missing or mistyped".into()))?;
                let status = batch
                    .column_by_name(col::STATUS_CODE)
                    .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int8Type>())
                    .ok_or_else(|| BlockError::Layout("trace index: status column missing or mistyped".into()))?;
                Some((services, status))
            } else {
                None
            };
            let ids = batch
                .column_by_name(col::TRACE_ID)
                .and_then(|c| c.as_fixed_size_binary_opt())
                .ok_or_else(|| BlockError::Layout("trace index: no trace_id column".into()))?;
            let starts = batch
                .column_by_name(col::TRACE_START)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| BlockError::Layout("trace index: no trace start column".into()))?;
            for i in 0..batch.num_rows() {
                let id = TraceId(
                    <[u8; 16]>::try_from(ids.value(i))
                        .map_err(|_| BlockError::Layout("trace index: trace ID is not 16 bytes".into()))?,
                );
                let start = if starts.is_null(i) { u64::MAX } else { starts.value(i).max(0) as u64 };
                match ix.ids.last() {
                    Some(last) if *last == id => {
                        if let Some(s) = ix.start.last_mut() {
                            *s = (*s).min(start);
                        }
                    }
                    Some(last) if *last > id => {
                        return Err(BlockError::Layout("trace index: rows are not sorted by trace ID".into()));
                    }
                    _ => {
                        ix.ids.push(id);
                        ix.first_row.push(row);
                        ix.start.push(start);
                        if with_stats {
                            ix.stats_at.push(ix.stats.len() as u32);
                        }
                    }
                }
                if let Some((services, status)) = stats_cols
                    && !services.is_null(i)
                {
                    let name = services.value(i);
                    let service = match &last_service {
                        Some((n, id)) if n == name => *id,
                        _ => {
                            let next = ix.services.len() as u32;
                            let id = *service_ids.entry(name.to_string()).or_insert(next);
                            if id == next {
                                ix.services.push(name.to_string());
                            }
                            last_service = Some((name.to_string(), id));
                            id
                        }
                    };
                    let error = u32::from(status.is_valid(i) && status.value(i) == STATUS_ERROR);
                    let first = ix.stats_at.last().map_or(0, |&f| f as usize);
                    match ix.stats[first..].iter_mut().find(|c| c.service == service) {
                        Some(c) => {
                            c.spans += 1;
                            c.errors += error;
                        }
                        None => ix.stats.push(ServiceCount { service, spans: 1, errors: error }),
                    }
                }
                row += 1;
            }
        }
        ix.first_row.push(row);
        if with_stats {
            ix.stats_at.push(ix.stats.len() as u32);
        }
        let mut newest: Vec<u32> = (0..ix.ids.len() as u32).collect();
        newest.sort_by(|&a, &b| ix.start[b as usize].cmp(&ix.start[a as usize]).then(a.cmp(&b)));
        ix.newest = newest;
        Ok(ix)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The position of `id`, when the block holds it (exact, unlike the bloom filter).
    pub fn find(&self, id: &TraceId) -> Option<usize> {
        self.ids.binary_search(id).ok()
    }

    pub fn id(&self, i: usize) -> TraceId {
        self.ids[i]
    }

    /// Earliest span start of the trace's rows in this block.
    pub fn start(&self, i: usize) -> u64 {
        self.start[i]
    }

    /// The trace's rows.
    pub fn rows(&self, i: usize) -> Range<usize> {
        self.first_row[i] as usize..self.first_row[i + 1] as usize
    }

    /// Rows in the block.
    pub fn num_rows(&self) -> usize {
        self.first_row.last().map_or(0, |&r| r as usize)
    }

    /// The trace holding row `row`, if the row exists.
    pub fn trace_of_row(&self, row: usize) -> Option<usize> {
        if row >= self.num_rows() {
            return None;
        }
        Some(self.first_row.partition_point(|&f| f as usize <= row) - 1)
    }

    /// Every trace with its start, in ID order.
    pub fn traces(&self) -> impl Iterator<Item = (TraceId, u64)> + '_ {
        self.ids.iter().copied().zip(self.start.iter().copied())
    }

    /// The `k`-th trace by start, latest first.
    pub fn newest(&self, k: usize) -> Option<usize> {
        self.newest.get(k).map(|&i| i as usize)
    }

    /// Whether the index counts each trace's spans and errors by service.
    pub fn has_service_stats(&self) -> bool {
        !self.stats_at.is_empty()
    }

    /// The trace's rows in this block by service: (service, spans, spans with error status), services in order
    /// of first appearance; rows without a service name are not counted.
    pub fn service_stats(&self, i: usize) -> impl Iterator<Item = (&str, u32, u32)> + '_ {
        let range = match (self.stats_at.get(i), self.stats_at.get(i + 1)) {
            (Some(&a), Some(&b)) => a as usize..b as usize,
            _ => 0..0,
        };
        self.stats[range].iter().map(|c| (self.services[c.service as usize].as_str(), c.spans, c.errors))
    }

    /// Heap bytes held, for cache budgets.
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 16
            + self.first_row.capacity() * 4
            + self.start.capacity() * 8
            + self.newest.capacity() * 4
            + self.stats_at.capacity() * 4
            + self.stats.capacity() * std::mem::size_of::<ServiceCount>()
            + self.services.iter().map(|s| s.capacity() + 24).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{FixedSizeBinaryArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: &[(u8, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(col::TRACE_ID, DataType::FixedSizeBinary(16), false),
            Field::new(col::TRACE_START, DataType::Int64, false),
        ]));
        let ids = FixedSizeBinaryArray::try_from_iter(rows.iter().map(|(b, _)| [*b; 16])).unwrap();
        let starts = Int64Array::from_iter_values(rows.iter().map(|(_, s)| *s));
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(starts)]).unwrap()
    }

    #[test]
    fn runs_across_batches() {
        let ix = TraceIndex::from_batches(&[batch(&[(1, 50), (1, 40), (2, 7)]), batch(&[(2, 9), (5, 1)])]).unwrap();
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.num_rows(), 5);
        assert_eq!((ix.rows(0), ix.start(0)), (0..2, 40));
        assert_eq!((ix.rows(1), ix.start(1)), (2..4, 7));
        assert_eq!((ix.rows(2), ix.start(2)), (4..5, 1));
        let of_rows: Vec<_> = (0..6).map(|r| ix.trace_of_row(r)).collect();
        assert_eq!(of_rows, vec![Some(0), Some(0), Some(1), Some(1), Some(2), None]);
        assert_eq!(ix.find(&TraceId([2; 16])), Some(1));
        assert_eq!(ix.find(&TraceId([3; 16])), None);
        let newest: Vec<_> = (0..4).map(|k| ix.newest(k)).collect();
        assert_eq!(newest, vec![Some(0), Some(1), Some(2), None]);
    }

    #[test]
    fn counts_spans_and_errors_by_service_per_trace() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(col::TRACE_ID, DataType::FixedSizeBinary(16), false),
            Field::new(col::TRACE_START, DataType::Int64, false),
            Field::new(col::SERVICE_NAME, DataType::Utf8, true),
            Field::new(col::STATUS_CODE, DataType::Int8, false),
        ]));
        let rows: [(u8, Option<&str>, i8); 6] = [
            (1, Some("a"), 2),
            (1, Some("b"), 0),
            (1, Some("a"), 1),
            (1, None, 2),
            (2, Some("b"), 2),
            (2, Some("b"), 2),
        ];
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| [r.0; 16])).unwrap()),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| 5))),
                Arc::new(arrow::array::StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(arrow::array::Int8Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        // Split across two batches: a trace's counts continue over the boundary.
        let ix = TraceIndex::from_batches(&[batch.slice(0, 2), batch.slice(2, 4)]).unwrap();
        assert!(ix.has_service_stats());
        assert_eq!(ix.service_stats(0).collect::<Vec<_>>(), vec![("a", 2, 1), ("b", 1, 0)]);
        assert_eq!(ix.service_stats(1).collect::<Vec<_>>(), vec![("b", 2, 2)]);
        assert_eq!(ix.service_stats(2).count(), 0);
        let plain = TraceIndex::from_batches(&[super::tests::batch(&[(1, 1)])]).unwrap();
        assert!(!plain.has_service_stats());
    }

    #[test]
    fn unsorted_rows_are_rejected() {
        assert!(TraceIndex::from_batches(&[batch(&[(2, 1), (1, 1)])]).is_err());
    }
}
