//! The sparse time index of a log: per chunk slot, the base offset of the chunk's first batch and
//! the largest `maxTimestamp` of its batches. Finding the first record at or after a time (Kafka's
//! `ListOffsets` by timestamp) takes the first chunk, in log order, whose running maximum reaches
//! it, then reads that chunk's batches. Kept in memory: the writer updates it on every append and
//! recovery rebuilds it from the batch headers it walks anyway.
//!
//! Timestamps come from producers and need not grow with offsets; the running maximum makes the
//! index monotone, as Kafka's time index is, so a lookup never skips a chunk holding a record at or
//! after the time it asks for.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One entry per chunk slot.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    first_offsets: Box<[AtomicU64]>,
    max_timestamps: Box<[AtomicI64]>,
}

impl TimeIndex {
    /// An empty index of `slots` chunk slots.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            first_offsets: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            max_timestamps: (0..slots).map(|_| AtomicI64::new(i64::MIN)).collect(),
        }
    }

    /// The base offset of the first batch of the chunk in `slot`.
    pub(crate) fn first_offset(&self, slot: usize) -> u64 {
        self.first_offsets[slot].load(Ordering::Acquire)
    }

    /// Writer: the chunk in `slot` starts over with a batch of base offset `first_offset`.
    pub(crate) fn start(&self, slot: usize, first_offset: u64) {
        self.max_timestamps[slot].store(i64::MIN, Ordering::Release);
        self.first_offsets[slot].store(first_offset, Ordering::Release);
    }

    /// Writer: a batch with `max_timestamp` went into the chunk in `slot`.
    pub(crate) fn note(&self, slot: usize, max_timestamp: i64) {
        self.max_timestamps[slot].fetch_max(max_timestamp, Ordering::AcqRel);
    }

    /// The largest timestamp of the chunks in `slots`, if any holds a batch.
    pub(crate) fn max(&self, slots: impl Iterator<Item = usize>) -> Option<i64> {
        slots
            .map(|slot| self.max_timestamps[slot].load(Ordering::Acquire))
            .max()
            .filter(|&max| max > i64::MIN)
    }

    /// The first chunk, of the slots in log order `slots`, whose running maximum timestamp reaches
    /// `timestamp`: its first offset, and whether it is the first of `slots`.
    pub(crate) fn find(
        &self,
        slots: impl Iterator<Item = usize>,
        timestamp: i64,
    ) -> Option<(u64, bool)> {
        let mut running = i64::MIN;
        for (position, slot) in slots.enumerate() {
            running = running.max(self.max_timestamps[slot].load(Ordering::Acquire));
            if running >= timestamp {
                return Some((self.first_offsets[slot].load(Ordering::Acquire), position == 0));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_maximum_finds_the_first_chunk_reaching_a_time() {
        let index = TimeIndex::new(4);
        for (slot, (first, times)) in
            [(0u64, [10i64, 20]), (5, [15, 12]), (9, [40, 30]), (14, [35, 50])]
                .into_iter()
                .enumerate()
        {
            index.start(slot, first);
            for time in times {
                index.note(slot, time);
            }
        }
        assert_eq!(index.find(0..4, 5), Some((0, true)));
        assert_eq!(index.find(0..4, 20), Some((0, true)));
        assert_eq!(index.find(0..4, 21), Some((9, false)), "chunk 1's times stay below 21");
        assert_eq!(index.find(0..4, 45), Some((14, false)));
        assert_eq!(index.find(0..4, 51), None);
        // The ring wrapped: log order starts at slot 2.
        assert_eq!(index.find([2, 3, 0, 1].into_iter(), 45), Some((14, false)));
    }
}
