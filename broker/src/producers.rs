//! Idempotent produce: which batches of each producer a partition holds.
//!
//! An idempotent producer stamps every batch with its producer id, its epoch and the sequence
//! number of the batch's first record; sequences count records per partition from 0, wrapping
//! after `i32::MAX`. Per partition the broker keeps, for each producer id, its epoch and the last
//! [`WINDOW`] batches it appended (sequence range and offset). A batch is then checked once, under
//! the partition's writer lock, before it is written:
//!
//! - the next sequence after the last batch: appended;
//! - the same sequence range as a batch in the window: a retry of it, acknowledged with the
//!   original offset and not written again;
//! - an older epoch: refused ([`SequenceError::Fenced`]), a newer instance took over;
//! - a newer epoch: must start at sequence 0, and replaces the state;
//! - anything else: a gap or a duplicate too old to identify, refused
//!   ([`SequenceError::OutOfOrder`]); nothing is written.
//!
//! A producer id the partition has no state for is accepted at any sequence: its state starts
//! there. State is lost only when every batch of the producer has been reclaimed from the ring
//! (or it was evicted as the least recently active of [`PRODUCERS_MAX`]), so a retry of a batch
//! that old would be written twice; the client retries within its delivery timeout, far sooner.
//!
//! The check is per batch, not per message: one hash lookup and a scan of at most [`WINDOW`]
//! entries in a fixed array. Only a producer's first batch on a partition allocates.
//!
//! After a restart the table is rebuilt by walking the batch headers of the whole log
//! ([`ProducerTable::rebuild`]), so a producer retrying across a broker crash is still
//! deduplicated.

use std::collections::HashMap;

use thiserror::Error;

use ringmq_protocol::batch::{BatchHeader, NO_PRODUCER_ID};

use crate::log::Log;

/// Batches remembered per producer and partition: a retry of any of the last `WINDOW` batches is
/// recognised. The client keeps at most this many requests in flight when idempotent.
pub const WINDOW: usize = ringmq_protocol::limits::PRODUCER_WINDOW;

/// Producers remembered per partition; past it the least recently active is forgotten.
pub const PRODUCERS_MAX: usize = 4096;

/// Largest sequence number; the next one is 0.
const SEQUENCE_MAX: i64 = i32::MAX as i64;

/// Why a batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// A newer epoch of this producer id has written to the partition.
    #[error("producer {producer_id} epoch {epoch} is fenced: epoch {current} has taken over")]
    Fenced {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch the partition knows.
        current: i16,
    },
    /// The batch's first sequence is not the next one (a gap, or a duplicate too old to identify).
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {got} is out of order, expected {expected}"
    )]
    OutOfOrder {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The sequence the partition expects.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Write it (a batch without a producer id, or the next one of its producer).
    Append,
    /// A retry of a batch already written: answer with its offsets instead.
    Duplicate {
        /// The original's first offset.
        base_offset: u64,
        /// What a sync must reach for the original to be durable.
        end_position: u64,
    },
}

/// One batch remembered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Remembered {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    end_position: u64,
}

/// One producer's state on one partition.
#[derive(Debug, Clone)]
struct ProducerState {
    epoch: i16,
    /// The last batches, oldest first, in a ring: `batches[(start + i) % WINDOW]`.
    batches: [Remembered; WINDOW],
    start: usize,
    len: usize,
    /// Offset after its last batch, to find the least recently active.
    last_offset: u64,
}

impl ProducerState {
    fn new(epoch: i16) -> Self {
        Self { epoch, batches: [Remembered::default(); WINDOW], start: 0, len: 0, last_offset: 0 }
    }

    fn last(&self) -> Option<&Remembered> {
        self.len.checked_sub(1).map(|back| &self.batches[(self.start + back) % WINDOW])
    }

    fn push(&mut self, batch: Remembered) {
        if self.len == WINDOW {
            self.start = (self.start + 1) % WINDOW;
            self.len -= 1;
        }
        self.batches[(self.start + self.len) % WINDOW] = batch;
        self.len += 1;
    }

    fn find(&self, first: i32, last: i32) -> Option<&Remembered> {
        (0..self.len)
            .map(|index| &self.batches[(self.start + index) % WINDOW])
            .find(|batch| batch.first_sequence == first && batch.last_sequence == last)
    }
}

/// The producers of one partition.
#[derive(Debug, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerState>,
}

/// What [`ProducerTable::rebuild`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Batch headers read.
    pub batches: u64,
    /// Producers with state afterwards.
    pub producers: usize,
}

/// The sequence after `sequence`.
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// The last sequence of a batch of `count` records starting at `first`.
fn last_sequence(first: i32, count: u32) -> i32 {
    let last = (i64::from(first) + i64::from(count) - 1).rem_euclid(SEQUENCE_MAX + 1);
    i32::try_from(last).unwrap_or(0)
}

impl ProducerTable {
    /// Checks a validated batch's producer fields against the state.
    ///
    /// # Errors
    ///
    /// [`SequenceError`] if the batch must not be written.
    pub fn check(&self, header: &BatchHeader) -> Result<Check, SequenceError> {
        let producer_id = header.producer_id();
        if producer_id == NO_PRODUCER_ID {
            return Ok(Check::Append);
        }
        let Some(state) = self.producers.get(&producer_id) else { return Ok(Check::Append) };
        let (epoch, first) = (header.producer_epoch(), header.base_sequence());
        if epoch < state.epoch {
            return Err(SequenceError::Fenced { producer_id, epoch, current: state.epoch });
        }
        let expected = match state.last() {
            Some(last) if epoch == state.epoch => next_sequence(last.last_sequence),
            _ => 0,
        };
        if epoch == state.epoch {
            let last = last_sequence(first, header.record_count());
            if let Some(original) = state.find(first, last) {
                return Ok(Check::Duplicate {
                    base_offset: original.base_offset,
                    end_position: original.end_position,
                });
            }
        }
        if first == expected {
            Ok(Check::Append)
        } else {
            Err(SequenceError::OutOfOrder { producer_id, epoch, expected, got: first })
        }
    }

    /// Records a batch just written at `base_offset`, ending at `end_position`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: u64, end_position: u64) {
        let producer_id = header.producer_id();
        if producer_id == NO_PRODUCER_ID || producer_id < 0 {
            return;
        }
        let epoch = header.producer_epoch();
        let first = header.base_sequence();
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= PRODUCERS_MAX {
            self.evict_least_recent();
        }
        let state = self.producers.entry(producer_id).or_insert_with(|| ProducerState::new(epoch));
        if epoch != state.epoch {
            *state = ProducerState::new(epoch);
        }
        state.push(Remembered {
            first_sequence: first,
            last_sequence: last_sequence(first, header.record_count()),
            base_offset,
            end_position,
        });
        state.last_offset = base_offset + u64::from(header.record_count());
    }

    fn evict_least_recent(&mut self) {
        let oldest =
            self.producers.iter().min_by_key(|(_, state)| state.last_offset).map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Producers with state.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer has state.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Rebuilds the state from the batch headers of everything `log` holds. Reads only headers
    /// (one per batch); blocks.
    pub fn rebuild(log: &Log) -> (Self, Rebuilt) {
        let mut table = Self::default();
        let mut stats = Rebuilt::default();
        // Every batch already written is at worst as durable as the log's end now.
        let end_position = log.published_end();
        for (_, outcome) in log.scan(1 << 20) {
            let mut bytes: &[u8] = &outcome.batches;
            // A read holds whole batches only, never the ring's framing.
            while let Ok(header) = BatchHeader::peek(bytes) {
                stats.batches += 1;
                table.record(header, header.base_offset(), end_position);
                let Some(rest) = bytes.get(header.batch_len()..) else { break };
                bytes = rest;
            }
        }
        stats.producers = table.len();
        (table, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::{BatchBuilder, BatchView, Record};

    fn batch(producer_id: i64, epoch: i16, sequence: i32, count: usize) -> Vec<u8> {
        let mut buffer = vec![0; 4096];
        let mut builder =
            BatchBuilder::new(&mut buffer, 0).unwrap().with_producer(producer_id, epoch, sequence);
        for _ in 0..count {
            let _ = builder.push(&Record::value(b"v", 0)).unwrap();
        }
        builder.finish().unwrap().to_vec()
    }

    fn header(bytes: &[u8]) -> &BatchHeader {
        BatchView::validate(bytes, 1 << 20).unwrap().header()
    }

    #[test]
    fn next_batches_append_and_retries_are_recognised_with_their_offsets() {
        let mut table = ProducerTable::default();
        let first = batch(7, 0, 0, 3);
        let second = batch(7, 0, 3, 2);
        assert_eq!(table.check(header(&first)), Ok(Check::Append));
        table.record(header(&first), 100, 1000);
        assert_eq!(table.check(header(&second)), Ok(Check::Append));
        table.record(header(&second), 103, 1100);
        assert_eq!(
            table.check(header(&first)),
            Ok(Check::Duplicate { base_offset: 100, end_position: 1000 })
        );
        assert_eq!(
            table.check(header(&second)),
            Ok(Check::Duplicate { base_offset: 103, end_position: 1100 })
        );
        assert_eq!(table.check(header(&batch(7, 0, 5, 1))), Ok(Check::Append));
    }

    #[test]
    fn gaps_old_epochs_and_bad_epoch_starts_are_refused() {
        let mut table = ProducerTable::default();
        table.record(header(&batch(7, 2, 0, 5)), 0, 10);
        assert_eq!(
            table.check(header(&batch(7, 2, 9, 1))),
            Err(SequenceError::OutOfOrder { producer_id: 7, epoch: 2, expected: 5, got: 9 })
        );
        assert_eq!(
            table.check(header(&batch(7, 1, 5, 1))),
            Err(SequenceError::Fenced { producer_id: 7, epoch: 1, current: 2 })
        );
        assert_eq!(
            table.check(header(&batch(7, 3, 4, 1))),
            Err(SequenceError::OutOfOrder { producer_id: 7, epoch: 3, expected: 0, got: 4 })
        );
        assert_eq!(table.check(header(&batch(7, 3, 0, 1))), Ok(Check::Append));
        table.record(header(&batch(7, 3, 0, 1)), 5, 20);
        // The new epoch replaced the old state: the old batch is no longer a duplicate.
        assert!(table.check(header(&batch(7, 2, 0, 5))).is_err());
        // A producer with no state starts anywhere; other producers are independent.
        assert_eq!(table.check(header(&batch(8, 0, 41, 1))), Ok(Check::Append));
        assert_eq!(table.check(header(&batch(NO_PRODUCER_ID, -1, -1, 1))), Ok(Check::Append));
    }

    #[test]
    fn the_window_remembers_the_last_batches_and_sequences_wrap() {
        let mut table = ProducerTable::default();
        let mut sequence = i32::MAX - 20;
        for index in 0..WINDOW as u64 + 4 {
            let bytes = batch(1, 0, sequence, 2);
            assert_eq!(table.check(header(&bytes)), Ok(Check::Append), "batch {index}");
            table.record(header(&bytes), index * 2, index);
            sequence = next_sequence(last_sequence(sequence, 2));
        }
        assert!(sequence < 100, "sequences wrapped to {sequence}");
        // The oldest four fell out of the window: a retry of one is refused, not rewritten.
        assert!(table.check(header(&batch(1, 0, i32::MAX - 20, 2))).is_err());
        let recent = i32::MAX - 20 + 2 * 4;
        assert_eq!(
            table.check(header(&batch(1, 0, recent, 2))),
            Ok(Check::Duplicate { base_offset: 8, end_position: 4 })
        );
    }

    #[test]
    fn the_least_recently_active_producer_is_forgotten_at_the_limit() {
        let mut table = ProducerTable::default();
        for id in 0..PRODUCERS_MAX as i64 + 1 {
            let offset = u64::try_from(id).unwrap();
            table.record(header(&batch(id, 0, 0, 1)), offset, offset);
        }
        assert_eq!(table.len(), PRODUCERS_MAX);
        // Producer 0 was forgotten, so its retry is accepted at any sequence.
        assert_eq!(table.check(header(&batch(0, 0, 0, 1))), Ok(Check::Append));
        assert!(matches!(table.check(header(&batch(1, 0, 0, 1))), Ok(Check::Duplicate { .. })));
    }
}
