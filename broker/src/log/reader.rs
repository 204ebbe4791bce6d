//! Reads: find the batch holding an offset and answer with a view of the mapped file.
//!
//! A read never copies and never allocates: it leases the chunk holding the batch and returns a
//! [`LogBytes`], a view of the mapped file that owns the lease. The broker writes it to the socket
//! straight from the mapping.
//!
//! # How long a lease lives
//!
//! A lease keeps the writer from reclaiming its chunk: while one is held, an append that needs
//! the chunk waits, and fails with `Busy` after the request timeout. (Reclaiming is sound however
//! long a lease lives; only the writer's progress depends on it.) So a lease should last one
//! response write. That is a rule the broker's code follows, not one the types enforce:
//! [`LogBytes`] is the only owner of a lease and cannot be cloned, and nothing converts it into a
//! longer-lived owner (an `into_bytes` that gave a `Bytes`, which could be kept forever, had no
//! caller in the broker and is gone), but a caller can still keep a `LogBytes` or a
//! [`ReadOutcome`], and one that is leaked (`mem::forget`) blocks its chunk for good. The server
//! holds one only while writing it, under `write_timeout`, and drops it when the write times out;
//! the replays at startup (producer state, group state) hold one while they decode it, before
//! any client is served. Code that wants the bytes for longer copies them ([`LogBytes::to_vec`]).

use std::sync::atomic::Ordering;

use thiserror::Error;

use ringmq_protocol::batch::BatchHeader;
use ringmq_protocol::limits::BATCH_HEADER_SIZE;

use super::entry::{read_end_marker, END_MARKER_SIZE};
use super::index::Hint;
use super::raw::{Lease, LeaseError, RingCore};
use super::Log;

/// How many times a read restarts when the writer laps it mid-search.
const READ_ATTEMPTS: usize = 4;

/// A view of published bytes of the mapped file, holding a read lease on their chunk until it is
/// dropped (see the module docs for how long that may be).
#[derive(Debug, Default)]
#[must_use = "a view holds a lease that keeps the writer from reclaiming its chunk"]
pub struct LogBytes {
    lease: Option<Lease>,
    start: usize,
    end: usize,
}

impl LogBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.lease {
            Some(lease) => &lease.bytes()[self.start..self.end],
            None => &[],
        }
    }

    /// A copy of the bytes, which holds no lease (for callers that keep them beyond a response).
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }
}

impl std::ops::Deref for LogBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Whole batches read from a log.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Earliest offset held when the read was made.
    pub earliest_offset: u64,
    /// Offset the next record will get, when the read was made.
    pub next_offset: u64,
    /// Zero or more whole batches, back to back: a view of the mapped file.
    pub batches: LogBytes,
    /// Number of batches in `batches`.
    pub batch_count: u32,
    /// Number of records in `batches` (including any before the offset asked for).
    pub record_count: u64,
    /// Offset after the last record in `batches` (the offset asked for when there are none).
    pub end_offset: u64,
}

/// Where a same-host reader starts to read an offset: the batch holding it, and that batch's
/// entry in its chunk's table (the reader checks every batch against its entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStart {
    /// The batch's position.
    pub position: u64,
    /// Its base offset (the next offset, where no batch is written yet).
    pub offset: u64,
    /// Its entry's index in its chunk.
    pub entry: u32,
    /// Earliest offset held.
    pub earliest_offset: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
}

/// Why a read returned no batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The offset is below the earliest offset held (reclaimed) or past the next offset.
    #[error("offset {offset} is out of range: the partition holds {earliest} to {next}")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// Earliest offset held.
        earliest: u64,
        /// Offset the next record will get.
        next: u64,
    },
    /// The chunk has too many concurrent readers; retry.
    #[error("the partition is busy (too many concurrent readers, or rewritten faster than it could be read); retry")]
    Busy,
}

/// Every batch a log holds, oldest first, in reads of about `max_bytes`: what a replay at startup
/// walks. Each item is the offset asked for and what the read returned. A range reclaimed while
/// walking is skipped; the walk ends at the log's end or at a read error.
#[derive(Debug)]
pub struct Scan<'a> {
    log: &'a Log,
    offset: u64,
    max_bytes: usize,
}

impl Iterator for Scan<'_> {
    type Item = (u64, ReadOutcome);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.log.read(self.offset, self.max_bytes) {
                Ok(outcome) if outcome.batch_count == 0 => return None,
                Ok(outcome) => {
                    let asked = std::mem::replace(&mut self.offset, outcome.end_offset);
                    return Some((asked, outcome));
                }
                Err(ReadError::OffsetOutOfRange { earliest, .. }) if earliest > self.offset => {
                    self.offset = earliest;
                }
                Err(_) => return None,
            }
        }
    }
}

/// Why one attempt at a read must start over.
enum Restart {
    /// The writer overtook the read (reclaim, stale or torn index entry).
    Lapped,
    Busy,
}

/// The first record at or after a time, as [`Log::offset_for_timestamp`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOffset {
    /// Its offset.
    pub offset: u64,
    /// Its timestamp (a compressed batch's `maxTimestamp`, whose records are not read).
    pub timestamp: i64,
}

impl Log {
    /// The first record with the largest timestamp held (Kafka's `ListOffsets` with -3).
    pub fn max_timestamp_offset(&self) -> Option<TimedOffset> {
        let (layout, head, tail) = self.generations()?;
        let max =
            self.shared.time_index.max((head..=tail).map(|generation| layout.slot(generation)))?;
        self.offset_for_timestamp(max)
    }

    /// The layout and the first and last chunk generations holding published bytes.
    fn generations(&self) -> Option<(super::raw::Layout, u64, u64)> {
        let shared = &self.shared;
        let layout = *shared.core.layout();
        let head = layout.generation(shared.head_position.load(Ordering::Acquire));
        let end = shared.core.published_end();
        (end > 0).then(|| (layout, head, layout.generation(end - 1)))
    }

    /// The earliest record whose timestamp is at least `timestamp`, through the sparse time
    /// index: the first chunk whose running maximum timestamp reaches it, then that chunk's
    /// batches (and, in an uncompressed batch, its records). `None` if no record held is that
    /// recent. A compressed batch answers with its base offset and `maxTimestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Option<TimedOffset> {
        let (layout, head, tail) = self.generations()?;
        let slots = (head..=tail).map(|generation| layout.slot(generation));
        let (first_offset, is_head) = self.shared.time_index.find(slots, timestamp)?;
        let mut offset = if is_head { self.earliest_offset() } else { first_offset };
        loop {
            let outcome = match self.read(offset, 1 << 20) {
                Ok(outcome) => outcome,
                Err(ReadError::OffsetOutOfRange { earliest, next, .. }) if offset < next => {
                    offset = earliest;
                    continue;
                }
                Err(_) => return None,
            };
            if outcome.batch_count == 0 {
                return None;
            }
            for batch in ringmq_protocol::Batches::new(&outcome.batches, u32::MAX) {
                let Ok(batch) = batch else { return None };
                if batch.header().max_timestamp() < timestamp || batch.next_offset() <= offset {
                    continue;
                }
                let Some(records) = batch.records() else {
                    let offset = batch.base_offset().max(offset);
                    return Some(TimedOffset { offset, timestamp: batch.header().max_timestamp() });
                };
                let found = records
                    .map(|record| {
                        (batch.base_offset() + u64::from(record.offset_delta), record.timestamp)
                    })
                    .find(|&(at, time)| at >= offset && time >= timestamp);
                if let Some((offset, timestamp)) = found {
                    return Some(TimedOffset { offset, timestamp });
                }
            }
            offset = outcome.end_offset;
        }
    }

    /// Descriptors of the ring file and its cursor page for a same-host reader; `None` when the
    /// log keeps no page ([`super::LogConfig::with_local_readers`]).
    pub fn local_files(&self) -> Option<std::io::Result<super::LocalFiles>> {
        self.shared.core.local_files()
    }

    /// Where a same-host reader of `offset` starts; see [`LocalStart`].
    ///
    /// # Errors
    ///
    /// [`ReadError::OffsetOutOfRange`] as [`Log::read`] says, or [`ReadError::Busy`] when the
    /// writer lapped every attempt.
    pub fn local_start(&self, offset: u64) -> Result<LocalStart, ReadError> {
        let shared = &self.shared;
        let layout = *shared.core.layout();
        for _ in 0..READ_ATTEMPTS {
            let next = shared.next_offset.load(Ordering::Acquire);
            let end = shared.core.published_end();
            let earliest = shared.head_offset.load(Ordering::Acquire);
            let head = shared.head_position.load(Ordering::Acquire);
            if offset < earliest || offset > next {
                return Err(ReadError::OffsetOutOfRange { offset, earliest, next });
            }
            let start = |position, offset| LocalStart {
                position,
                offset,
                entry: 0,
                earliest_offset: earliest,
                next_offset: next,
            };
            if next == earliest {
                // Nothing held: the next batch goes at the start of the next chunk, which `end`
                // is unless a batch was appended since `next` was loaded (then look again).
                if end.is_multiple_of(layout.chunk_size()) {
                    return Ok(start(end, next));
                }
                continue;
            }
            // The batch holding the offset, or the last one for the next offset.
            let Some(hint) = shared.index.lookup(offset.min(next - 1), head, end) else { continue };
            let generation = layout.generation(hint.position);
            let chunk_start = layout.generation_start(generation);
            let first = shared.time_index.first_offset(layout.slot(generation));
            // After the first offset: a chunk reclaimed meanwhile moved the head past it first.
            if shared.head_position.load(Ordering::Acquire) > chunk_start || first > hint.offset {
                continue;
            }
            // Walk the chunk's batch headers to the batch holding the offset, counting their
            // entries: the reader starts there and knows each batch's entry from then on.
            match self.walk_to(chunk_start, first, offset) {
                Ok((position, offset, entry)) => {
                    return Ok(LocalStart { entry, ..start(position, offset) });
                }
                Err(Restart::Lapped) => continue,
                Err(Restart::Busy) => return Err(ReadError::Busy),
            }
        }
        Err(ReadError::Busy)
    }

    /// From the start of a chunk whose first batch has base offset `first`, the position, base
    /// offset and entry index of the batch holding `target` (or of what follows the chunk's last
    /// batch, if `target` is past it).
    fn walk_to(
        &self,
        chunk_start: u64,
        first: u64,
        target: u64,
    ) -> Result<(u64, u64, u32), Restart> {
        let lease =
            RingCore::lease(&self.shared.core, chunk_start).map_err(|error| match error {
                LeaseError::TooManyReaders | LeaseError::Rewinding => Restart::Busy,
                LeaseError::Reclaimed | LeaseError::NotPublished => Restart::Lapped,
            })?;
        let bytes = lease.bytes();
        let (mut at, mut expected, mut entry) = (0usize, first, 0u32);
        loop {
            let rest = &bytes[at..];
            if rest.len() < BATCH_HEADER_SIZE || read_end_marker(rest).is_some() {
                break;
            }
            let header = BatchHeader::peek(rest).map_err(|_| Restart::Lapped)?;
            let size = header.batch_len();
            if header.base_offset() != expected || size > rest.len() || size < BATCH_HEADER_SIZE {
                return Err(Restart::Lapped);
            }
            if header.next_offset() > target {
                break;
            }
            at += size;
            expected = header.next_offset();
            entry += 1;
        }
        Ok((chunk_start + at as u64, expected, entry))
    }

    /// Walks every batch held, from the earliest; see [`Scan`].
    pub fn scan(&self, max_bytes: usize) -> Scan<'_> {
        Scan { log: self, offset: self.earliest_offset(), max_bytes }
    }

    /// Reads whole batches starting with the one holding `offset`, up to about `max_bytes` (at
    /// least one batch, however large), from one chunk. An empty result means `offset` is the
    /// next offset: nothing to read yet.
    ///
    /// # Errors
    ///
    /// [`ReadError::OffsetOutOfRange`] with the earliest and next offsets, or [`ReadError::Busy`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadOutcome, ReadError> {
        self.read_bounded::<false>(offset, max_bytes)
    }

    /// [`Log::read`] up to the written end rather than the published one: on a log that publishes
    /// on commit, the uncommitted tail too (what a leader sends its followers); `next_offset` in
    /// the outcome is then [`Log::written_offset`]. The view holds a tail lease, which also holds
    /// off a truncation of the tail ([`super::LogWriter::truncate`] answers `TruncationBusy`
    /// meanwhile), so it must be as short as any lease.
    ///
    /// # Errors
    ///
    /// As [`Log::read`], with the written offset as the next offset; [`ReadError::Busy`] also
    /// while a truncation is under way.
    pub fn read_written(&self, offset: u64, max_bytes: usize) -> Result<ReadOutcome, ReadError> {
        self.read_bounded::<true>(offset, max_bytes)
    }

    /// A read up to the published end, or with `WRITTEN` up to the written end (a replicated
    /// partition's leader reading its uncommitted tail to send it to followers). A parameter of
    /// the type, so that the consumers' read is compiled as if the other did not exist.
    fn read_bounded<const WRITTEN: bool>(
        &self,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadOutcome, ReadError> {
        let shared = &self.shared;
        let next_of = || match WRITTEN {
            false => shared.next_offset.load(Ordering::Acquire),
            true => shared.written_offset.load(Ordering::Acquire),
        };
        for _ in 0..READ_ATTEMPTS {
            // The offset first, then the end: bytes for every offset below `next` are published
            // (written) below `end` (the writer stores them in the opposite order, with release).
            let next = next_of();
            let end = match WRITTEN {
                false => shared.core.published_end(),
                true => shared.core.written_end(),
            };
            let earliest = shared.head_offset.load(Ordering::Acquire);
            let head = shared.head_position.load(Ordering::Acquire);
            if offset < earliest || offset > next {
                return Err(ReadError::OffsetOutOfRange { offset, earliest, next });
            }
            if offset == next {
                return Ok(ReadOutcome {
                    earliest_offset: earliest,
                    next_offset: next,
                    end_offset: next,
                    ..ReadOutcome::default()
                });
            }
            let Some(hint) = shared.index.lookup(offset, head, end) else { continue };
            match self.read_from::<WRITTEN>(hint, offset, max_bytes) {
                Ok(mut outcome) => {
                    outcome.earliest_offset = earliest;
                    outcome.next_offset = next;
                    return Ok(outcome);
                }
                Err(Restart::Lapped) => continue,
                Err(Restart::Busy) => return Err(ReadError::Busy),
            }
        }
        // Lapped on every attempt: the offset is almost certainly reclaimed by now.
        let earliest = self.earliest_offset();
        let next = next_of();
        if offset < earliest || offset > next {
            Err(ReadError::OffsetOutOfRange { offset, earliest, next })
        } else {
            Err(ReadError::Busy)
        }
    }

    /// Walks batch headers from `hint` to the batch holding `target`, then collects batches.
    fn read_from<const WRITTEN: bool>(
        &self,
        hint: Hint,
        target: u64,
        max_bytes: usize,
    ) -> Result<ReadOutcome, Restart> {
        let core = &self.shared.core;
        let chunk_size = core.layout().chunk_size();
        let mut position = hint.position;
        let mut expected = hint.offset;
        loop {
            let lease = match WRITTEN {
                false => RingCore::lease(core, position),
                true => RingCore::lease_written(core, position),
            };
            let lease = lease.map_err(|error| match error {
                LeaseError::TooManyReaders | LeaseError::Rewinding => Restart::Busy,
                LeaseError::Reclaimed | LeaseError::NotPublished => Restart::Lapped,
            })?;
            let bytes = lease.bytes();
            let chunk_end = (position / chunk_size + 1) * chunk_size;
            let mut at = 0usize;
            let found = loop {
                let rest = &bytes[at..];
                let left_in_chunk = chunk_end - (position + at as u64);
                if left_in_chunk < END_MARKER_SIZE as u64 {
                    break None;
                }
                if let Some(next) = read_end_marker(rest) {
                    // The chunk's batches end here; the log goes on at the next chunk.
                    if next != expected {
                        return Err(Restart::Lapped);
                    }
                    break None;
                }
                if rest.len() < BATCH_HEADER_SIZE {
                    // The target is below `next`, so its batch is published: the hint was bad.
                    return Err(Restart::Lapped);
                }
                let header = BatchHeader::peek(rest).map_err(|_| Restart::Lapped)?;
                if header.base_offset() != expected {
                    return Err(Restart::Lapped);
                }
                let size = header.batch_len();
                if size > rest.len() || size < BATCH_HEADER_SIZE {
                    return Err(Restart::Lapped);
                }
                if header.next_offset() > target {
                    break Some(at);
                }
                at += size;
                expected = header.next_offset();
            };
            let Some(start) = found else {
                // The end marker or the chunk's end: the log continues at the next chunk.
                position = chunk_end;
                continue;
            };
            let mut end = start;
            let mut batch_count = 0u32;
            let mut record_count = 0u64;
            let mut end_offset = target;
            while end < bytes.len() {
                let rest = &bytes[end..];
                if read_end_marker(rest).is_some() {
                    break;
                }
                let Ok(header) = BatchHeader::peek(rest) else { break };
                let size = header.batch_len();
                if size > rest.len() || size < BATCH_HEADER_SIZE {
                    break;
                }
                if batch_count > 0 && end - start + size > max_bytes {
                    break;
                }
                end += size;
                batch_count += 1;
                record_count += u64::from(header.record_count());
                end_offset = header.next_offset();
            }
            let batches = LogBytes { lease: Some(lease), start, end };
            return Ok(ReadOutcome {
                earliest_offset: 0,
                next_offset: 0,
                batches,
                batch_count,
                record_count,
                end_offset,
            });
        }
    }
}
