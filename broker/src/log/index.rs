//! The sparse offset index: where to start looking for an offset, without a lock.
//!
//! The data area is cut into index slots of `interval` bytes. The entry of slot `s` (counted on
//! the unrolled ring, stored at `s % entry_count`) names the first batch that starts at or after
//! the slot's first position: its position and base offset. Only the writer stores entries, before
//! it publishes the batch they name; readers load them with no lock and treat them as hints:
//!
//! - the head's slot must name the head batch, or the writer has lapped the reader, who retries;
//! - an entry whose position lies before its slot is from an earlier lap: no batch has started in
//!   or after that slot yet, so it counts as "after the target", as does an entry at or past the
//!   published end the reader loaded (written since);
//! - the chosen entry is confirmed by reading the batch header at its position under a lease, so a
//!   torn pair (offset and position from different writes) can never be served.
//!
//! Memory is fixed: one `(offset, position)` pair per slot, `capacity / interval` slots.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes covered by one index slot, at most.
pub(crate) const INDEX_INTERVAL_MAX: u64 = 64 << 10;

/// The index of one partition.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    interval: u64,
    offsets: Box<[AtomicU64]>,
    positions: Box<[AtomicU64]>,
}

/// A starting point for a scan: a batch at `position` with base offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hint {
    pub(crate) position: u64,
    pub(crate) offset: u64,
}

impl OffsetIndex {
    /// An index over a ring of `capacity` bytes cut in chunks of `chunk_size`; the interval is the
    /// largest power of two up to 64 KiB dividing the chunk size.
    pub(crate) fn new(capacity: u64, chunk_size: u64) -> Self {
        let interval = gcd(chunk_size, INDEX_INTERVAL_MAX);
        // At most capacity / 4 KiB entries, and a ring's capacity fits usize (its Layout).
        let count = usize::try_from(capacity / interval).expect("index entries fit usize");
        Self {
            interval,
            offsets: (0..count).map(|_| AtomicU64::new(0)).collect(),
            positions: (0..count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Bytes covered by one slot.
    #[cfg(test)]
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    fn entry(&self, slot: u64) -> (&AtomicU64, &AtomicU64) {
        let length = u64::try_from(self.offsets.len()).expect("a length fits u64");
        let index = usize::try_from(slot % length).expect("below the entry count");
        (&self.offsets[index], &self.positions[index])
    }

    /// Writer: the fill cursor for a log whose next batch goes at `position`.
    pub(crate) fn fill_cursor(&self, position: u64) -> u64 {
        position.div_ceil(self.interval)
    }

    /// Writer: a batch with base offset `offset` starts at `position`. Must be called for every
    /// batch in position order, before the batch is published; `filled_until` is the writer's
    /// cursor from [`OffsetIndex::fill_cursor`].
    pub(crate) fn note(&self, filled_until: &mut u64, position: u64, offset: u64) {
        let last = position / self.interval;
        while *filled_until <= last {
            let (entry_offset, entry_position) = self.entry(*filled_until);
            entry_offset.store(offset, Ordering::Relaxed);
            entry_position.store(position, Ordering::Relaxed);
            *filled_until += 1;
        }
    }

    /// Writer: the log now ends at `position` (a truncation of its tail; `head` is its head
    /// position). Slots whose entry names a batch at or past `position` are filled again by the
    /// next notes; readers already ignore them, as they lie at or past the published end.
    pub(crate) fn rewind(&self, filled_until: &mut u64, position: u64, head: u64) {
        let floor = self.fill_cursor(head);
        let mut slot = (*filled_until).min(position.div_ceil(self.interval));
        while slot > floor && self.load(slot - 1).1 >= position {
            slot -= 1;
        }
        *filled_until = slot;
    }

    /// Reader: the last indexed batch with base offset at or below `target`, among batches
    /// between `head` and `end` (positions, `end` as published). `None` means the index moved
    /// under the reader (it was lapped) and the caller should retry.
    pub(crate) fn lookup(&self, target: u64, head: u64, end: u64) -> Option<Hint> {
        if end <= head {
            return None;
        }
        let first = head / self.interval;
        let last = (end - 1) / self.interval;
        // The head's slot always holds the head batch (the head is a chunk start); if it does
        // not, the writer has lapped this reader.
        let (offset, position) = self.load(first);
        if position != head || offset > target {
            return None;
        }
        let mut best = Hint { position, offset };
        // Binary search for the last slot whose entry has offset <= target. An entry older than
        // its slot means no batch has started in or after the slot yet (the writer fills slots
        // in order, before it publishes); one at or past `end` was written after the reader
        // loaded `end`. Both count as "after the target".
        let mut low = first + 1;
        let mut high = last + 1;
        while low < high {
            let middle = low + (high - low) / 2;
            let (offset, position) = self.load(middle);
            let usable = position >= middle * self.interval && position < end;
            if usable && offset <= target {
                best = Hint { position, offset };
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Some(best)
    }

    fn load(&self, slot: u64) -> (u64, u64) {
        let (entry_offset, entry_position) = self.entry(slot);
        let position = entry_position.load(Ordering::Relaxed);
        (entry_offset.load(Ordering::Relaxed), position)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_divides_the_chunk() {
        assert_eq!(OffsetIndex::new(1 << 30, 16 << 20).interval(), 64 << 10);
        assert_eq!(OffsetIndex::new(64 << 10, 16 << 10).interval(), 16 << 10);
        assert_eq!(OffsetIndex::new(3 * 12288, 12288).interval(), 4096);
    }

    #[test]
    fn finds_the_batch_at_or_before_the_target() {
        let index = OffsetIndex::new(1 << 20, 1 << 16);
        let mut fill = 0;
        let interval = index.interval();
        // Batches of 40 KiB with 10 records each: some slots have no batch start of their own.
        let mut position = 0;
        let mut offset = 0;
        let mut starts = Vec::new();
        while position + (40 << 10) <= 1 << 20 {
            index.note(&mut fill, position, offset);
            starts.push((position, offset));
            position += 40 << 10;
            offset += 10;
        }
        for target in [0, 5, 10, 99, 155, offset - 1] {
            let hint = index.lookup(target, 0, position).unwrap();
            assert!(hint.offset <= target, "{hint:?} for {target}");
            // The hint is a real batch start, and at most one slot's worth of batches before the
            // batch holding the target.
            assert!(starts.contains(&(hint.position, hint.offset)));
            let holding = starts.iter().rev().find(|(_, o)| *o <= target).unwrap();
            assert!(holding.0 - hint.position <= interval + (40 << 10));
        }
    }

    #[test]
    fn stale_entries_from_an_earlier_lap_are_reported() {
        let index = OffsetIndex::new(4 * 4096, 4096);
        let mut fill = 0;
        for slot in 0..4u64 {
            index.note(&mut fill, slot * 4096, slot * 100);
        }
        // The writer laps into slot 0 (position 16384) but the reader searches an old window
        // that now contains a stale slot: after the lap, slot 1 still holds lap 0's entry while
        // the reader's head says slot 5.
        index.note(&mut fill, 16384, 400);
        assert_eq!(
            index.lookup(450, 16384, 16384 + 10),
            Some(Hint { position: 16384, offset: 400 })
        );
        assert_eq!(index.lookup(450, 16384 + 4096, 16384 + 8192), None);
    }

    /// A batch larger than a slot leaves the slots it covers unfilled until the next batch
    /// starts; a lookup must not mistake them for a lapped index (it did, and every read of a
    /// partition with such a batch at its end failed as "busy").
    #[test]
    fn slots_covered_by_one_batch_are_not_mistaken_for_a_lap() {
        let index = OffsetIndex::new(1 << 20, 1 << 16);
        let mut fill = 0;
        index.note(&mut fill, 0, 0);
        index.note(&mut fill, 60_000, 10);
        // The second batch runs to 131_021, across all of slot 1, which no batch starts in.
        assert_eq!(index.lookup(0, 0, 131_021), Some(Hint { position: 0, offset: 0 }));
        assert_eq!(index.lookup(15, 0, 131_021), Some(Hint { position: 0, offset: 0 }));
    }

    #[test]
    fn a_rewind_refills_every_slot_naming_a_truncated_batch() {
        let index = OffsetIndex::new(1 << 16, 4096);
        let mut fill = 0;
        for (position, offset) in [(0, 0), (3000, 5), (9000, 9), (9500, 12), (13000, 20)] {
            index.note(&mut fill, position, offset);
        }
        assert_eq!(fill, 4);
        // Truncated at the batch at 9000: slots 2 (first batch at or after 8192 is 9000) and 3
        // must be filled again; slot 1 names 9000 too (no batch starts in 4096..8192).
        index.rewind(&mut fill, 9000, 0);
        assert_eq!(fill, 1);
        index.note(&mut fill, 9000, 9);
        index.note(&mut fill, 9100, 10);
        assert_eq!(index.lookup(10, 0, 9200), Some(Hint { position: 9000, offset: 9 }));
        // A truncation inside a slot whose entry is kept leaves it.
        index.rewind(&mut fill, 9100, 0);
        assert_eq!(fill, 3);
    }

    #[test]
    fn entries_past_the_published_end_are_ignored() {
        let index = OffsetIndex::new(1 << 16, 4096);
        let mut fill = 0;
        index.note(&mut fill, 0, 0);
        index.note(&mut fill, 4096 + 100, 5);
        // The reader loaded an end before the second batch was published.
        assert_eq!(index.lookup(5, 0, 4150), Some(Hint { position: 0, offset: 0 }));
        assert_eq!(index.lookup(5, 0, 4300), Some(Hint { position: 4196, offset: 5 }));
    }
}
