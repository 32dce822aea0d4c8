//! The per-block trace-ID bloom filter, kept in memory by readers so that most lookups open no block at all.

use bloomfilter::Bloom;

use super::BlockError;
use crate::model::TraceId;

/// False-positive rate: one lookup in ten thousand opens a block it did not need, so a lookup over 1,000 blocks
/// reads a block that does not hold the trace once in ten lookups (~19 bits per trace, 0.3 bytes per span; at
/// 0.1% almost every lookup paid a second GET for one, at 1% about ten).
const FP_RATE: f64 = 0.0001;
/// Fixed seed so the same trace IDs always produce the same bytes (reproducible blocks and tests).
const SEED: [u8; 32] = *b"strata-trace-id-bloom-seed-v1...";

/// A bloom filter over the trace IDs of one block.
pub struct TraceBloom(Bloom<[u8; 16]>);

impl TraceBloom {
    pub fn with_capacity(traces: usize) -> Result<Self, BlockError> {
        let n = traces.max(1);
        let bytes = Bloom::<[u8; 16]>::compute_bitmap_size(n, FP_RATE).max(1);
        Bloom::new_with_seed(bytes, n, &SEED).map(TraceBloom).map_err(|e| BlockError::Bloom(e.to_string()))
    }

    pub fn insert(&mut self, id: &TraceId) {
        self.0.set(&id.0);
    }

    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.0.check(&id.0)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlockError> {
        Bloom::from_slice(bytes).map(TraceBloom).map_err(|e| BlockError::Bloom(e.to_string()))
    }

    /// Bytes held in memory, for cache accounting.
    pub fn size(&self) -> usize {
        self.0.as_slice().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_finds_members() {
        let ids: Vec<TraceId> = (1..=1000u32).map(|i| TraceId(u128::from(i).to_be_bytes())).collect();
        let mut b = TraceBloom::with_capacity(ids.len()).unwrap();
        ids.iter().for_each(|id| b.insert(id));
        let b2 = TraceBloom::from_bytes(&b.to_bytes()).unwrap();
        assert!(ids.iter().all(|id| b2.may_contain(id)));
        let misses = (5000..6000u32).filter(|i| b2.may_contain(&TraceId(u128::from(*i).to_be_bytes()))).count();
        assert!(misses < 50, "false positives: {misses}");
        assert!(TraceBloom::from_bytes(&[1, 2]).is_err());
    }
}
