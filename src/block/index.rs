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
}

impl TraceIndex {
    /// Builds the index from the block's `trace_id` and `trace_start_unix_nano` columns, read in file order.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self, BlockError> {
        let mut ix = TraceIndex::default();
        let mut row: u32 = 0;
        for batch in batches {
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
                    }
                }
                row += 1;
            }
        }
        ix.first_row.push(row);
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

    /// Heap bytes held, for cache budgets.
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 16
            + self.first_row.capacity() * 4
            + self.start.capacity() * 8
            + self.newest.capacity() * 4
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
    fn unsorted_rows_are_rejected() {
        assert!(TraceIndex::from_batches(&[batch(&[(2, 1), (1, 1)])]).is_err());
    }
}
