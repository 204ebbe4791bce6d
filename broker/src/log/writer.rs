//! The single writer of a partition log: append (the batch, its stamp, its ring entry), leave a
//! chunk with its end marker and close entry, reclaim the oldest chunk.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ringmq_protocol::batch::{stamp, BatchHeader};
use ringmq_protocol::limits::BATCH_HEADER_SIZE;
use ringmq_protocol::BatchView;

use super::entry::{end_marker, read_end_marker, Entry, CLOSE_SIZE, END_MARKER_SIZE, ENTRY_SIZE};
use super::raw::{Claim, LeaseError, Rewind, RingCore, WriteCursor};
use super::superblock::Checkpoint;
use super::{Shared, StorageError};

/// The one writer of a partition log (DESIGN.md invariant 2): not `Clone`, and every append goes
/// through `&mut self`.
#[derive(Debug)]
pub struct LogWriter {
    cursor: WriteCursor,
    shared: Arc<Shared>,
    /// Position where the next batch goes.
    tail: u64,
    next_offset: u64,
    /// End of the claimed chunk (equal to `tail` when no chunk is claimed).
    chunk_end: u64,
    /// The held chunk is closed (or none is held); the next append must claim another first.
    needs_chunk: bool,
    /// Ring entries written in the held chunk.
    entries: usize,
    index_fill: u64,
    /// Base offset of the first batch of each chunk slot's current generation.
    chunk_first_offset: Box<[u64]>,
    term: u32,
    /// A truncation waiting for readers of its range: where it cuts, the offset there, and the
    /// written end before it.
    truncating: Option<Truncating>,
    /// The ring reclaims no record at or past this offset ([`LogWriter::retain_from`]).
    retain_from: u64,
}

#[derive(Debug, Clone, Copy)]
struct Truncating {
    position: u64,
    offset: u64,
    old_written: u64,
    readers: u64,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset after its last record.
    pub next_offset: u64,
    /// Position after the batch (what a sync must reach to make it durable).
    pub end_position: u64,
}

/// Where a recovered log's writer goes on.
#[derive(Debug)]
pub(super) struct Resume {
    /// Position where the next batch goes.
    pub(super) tail: u64,
    /// Offset the next record gets.
    pub(super) next_offset: u64,
    /// The offset index's fill cursor.
    pub(super) index_fill: u64,
    /// Base offset of the first batch of each chunk slot's current generation.
    pub(super) chunk_first_offset: Box<[u64]>,
    /// The term stamped on batches.
    pub(super) term: u32,
    /// Ring entries in the tail chunk.
    pub(super) entries: usize,
}

impl LogWriter {
    pub(super) fn new(cursor: WriteCursor, shared: Arc<Shared>, resume: Resume) -> Self {
        let Resume { tail, next_offset, index_fill, chunk_first_offset, term, entries } = resume;
        let layout = *cursor.core().layout();
        let (chunk_end, needs_chunk) = match cursor.claimed() {
            Some(generation) => {
                let end = layout.generation_start(generation + 1);
                (end, tail == end)
            }
            None => (tail, true),
        };
        Self {
            cursor,
            shared,
            tail,
            next_offset,
            chunk_end,
            needs_chunk,
            index_fill,
            chunk_first_offset,
            term,
            entries,
            truncating: None,
            retain_from: u64::MAX,
        }
    }

    /// Stamps `term` as the `partitionLeaderEpoch` of the batches appended from now on: a
    /// replicated partition's Raft term of each entry it appends (a follower appends with its
    /// leader's terms).
    pub fn set_term(&mut self, term: u32) {
        self.term = term;
    }

    /// Keeps every record at or past `offset` from the ring's reclaim: an append that would have
    /// to reclaim one fails with [`StorageError::Retained`] instead. A replicated partition keeps
    /// what its consensus has not purged; `u64::MAX` (the default) keeps nothing back.
    pub fn retain_from(&mut self, offset: u64) {
        self.retain_from = offset;
    }

    /// The earliest offset the ring will hold once `chunks` more chunks are claimed, if those
    /// claims reclaim any (`None`: there is room for them without a reclaim). A replicated
    /// partition asks it after each append to purge, ahead of need, what the ring is about to
    /// reclaim ([`LogWriter::retain_from`] refuses a reclaim of anything not purged).
    pub fn reclaim_ahead(&self, chunks: u64) -> Option<u64> {
        let layout = *self.cursor.core().layout();
        let count = layout.chunk_count();
        let next = self.cursor.claimed().map_or(layout.generation(self.tail), |held| held + 1);
        let chunks = chunks.clamp(1, count - 1);
        // The last of those claims is generation `next + chunks - 1`; it leaves the head at the
        // generation `count - 1` before it, a chunk already written.
        let head_generation = (next + chunks).checked_sub(count)?;
        Some(self.chunk_first_offset[layout.slot(head_generation)])
    }

    /// The term as the batches' `partitionLeaderEpoch` carries it.
    fn leader_epoch(&self) -> i32 {
        i32::try_from(self.term).unwrap_or(i32::MAX)
    }

    /// Where the held chunk's next entry goes.
    fn entry_position(&self, index: usize) -> u64 {
        let from_end = (index as u64 + 1) * ENTRY_SIZE as u64;
        self.chunk_end - from_end
    }

    /// Whether a batch of `size` bytes fits the held chunk: after it and its entry the chunk still
    /// has room to be closed.
    fn fits(&self, size: u64) -> bool {
        let framing = (self.entries as u64 + 1) * ENTRY_SIZE as u64 + CLOSE_SIZE as u64;
        self.tail + size + framing <= self.chunk_end
    }

    /// Offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Appends a validated batch: one copy into the mapping, base offset and term stamped in
    /// place, its ring entry written, then published to readers. When this returns the batch
    /// survives a broker crash (`kill -9`); call [`super::Log::sync`] for an OS crash.
    ///
    /// # Errors
    ///
    /// [`StorageError::ChunkBusy`] when the oldest chunk must be reclaimed but readers still lease
    /// it: nothing was written, retry shortly (leases are short). [`StorageError::BatchTooLarge`],
    /// or [`StorageError::Poisoned`] after an I/O failure.
    pub fn append(&mut self, batch: &BatchView<'_>) -> Result<Appended, StorageError> {
        self.shared.check_poison()?;
        self.check_not_truncating()?;
        let bytes = batch.as_bytes();
        let size = bytes.len() as u64;
        if size > u64::from(self.shared.batch_size_max) {
            return Err(StorageError::BatchTooLarge { size, max: self.shared.batch_size_max });
        }
        if !self.needs_chunk && !self.fits(size) {
            self.close_chunk();
        }
        if self.needs_chunk {
            self.claim_next()?;
        }
        let layout = *self.cursor.core().layout();
        let position = self.tail;
        let base_offset = self.next_offset;
        let leader_epoch = self.leader_epoch();
        self.cursor.write(position, bytes);
        stamp(self.cursor.bytes_mut(position, BATCH_HEADER_SIZE as u64), base_offset, leader_epoch)
            .expect("a validated batch holds a header");
        let entry = Entry::Batch {
            base_offset,
            size: u32::try_from(size).expect("a batch is at most BATCH_SIZE_MAX"),
            leader_epoch,
            crc: batch.header().crc(),
        };
        self.cursor.write(self.entry_position(self.entries), &entry.encode());
        self.entries += 1;
        let slot = layout.slot(layout.generation(position));
        if position.is_multiple_of(layout.chunk_size()) {
            self.chunk_first_offset[slot] = base_offset;
            self.shared.time_index.start(slot, base_offset);
        }
        self.shared.time_index.note(slot, batch.header().max_timestamp());
        self.shared.index.note(&mut self.index_fill, position, base_offset);
        self.tail += size;
        self.next_offset = base_offset + u64::from(batch.record_count());
        self.advance();
        if !self.shared.publish_on_commit {
            // After the publish: a reader that sees this offset also sees the bytes (see
            // `Log::read`).
            self.shared.next_offset.store(self.next_offset, Ordering::Release);
        }
        if self.tail == self.chunk_end {
            self.needs_chunk = true;
        }
        Ok(Appended { base_offset, next_offset: self.next_offset, end_position: self.tail })
    }

    /// Leaves the held chunk: its end marker after the last batch, its close entry, then
    /// publishes up to its end.
    fn close_chunk(&mut self) {
        // INVARIANT: every append left `CLOSE_SIZE` bytes free for this (see `fits`).
        let close =
            Entry::Close { next_offset: self.next_offset, leader_epoch: self.leader_epoch() };
        self.cursor.write(self.entry_position(self.entries), &close.encode());
        self.cursor.write(self.tail, &end_marker(self.next_offset));
        debug_assert!(self.tail + END_MARKER_SIZE as u64 <= self.entry_position(self.entries));
        self.tail = self.chunk_end;
        self.advance();
        self.needs_chunk = true;
    }

    /// Everything below the tail is written: published too, unless the log publishes on commit.
    fn advance(&mut self) {
        if self.shared.publish_on_commit {
            self.cursor.mark_written(self.tail);
        } else {
            self.cursor.publish(self.tail);
        }
        // After the bytes: a sync that loads this offset loads an end past its batches.
        self.shared.written_offset.store(self.next_offset, Ordering::Release);
    }

    fn check_not_truncating(&self) -> Result<(), StorageError> {
        match self.truncating {
            Some(truncating) => Err(StorageError::TruncationBusy { readers: truncating.readers }),
            None => Ok(()),
        }
    }

    /// Publishes every batch below `offset` to readers, on a log that publishes on commit
    /// ([`super::LogConfig::publish_on_commit`]): readers then read up to it, and
    /// [`super::Log::next_offset`] says `offset`. A commit at or below the committed offset
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// [`StorageError::NotABoundary`] unless `offset` ends a written batch;
    /// [`StorageError::TruncationBusy`] while a truncation waits; [`StorageError::Poisoned`].
    pub fn commit(&mut self, offset: u64) -> Result<(), StorageError> {
        self.shared.check_poison()?;
        self.check_not_truncating()?;
        let committed = self.shared.next_offset.load(Ordering::Acquire);
        if offset <= committed {
            return Ok(());
        }
        let (position, reached) =
            self.walk_written(self.cursor.published(), committed, offset, |_, _| ())?;
        if reached != offset {
            return Err(self.not_a_boundary(offset));
        }
        self.cursor.publish(position);
        // After the publish, as in `append`.
        self.shared.next_offset.store(offset, Ordering::Release);
        Ok(())
    }

    /// Removes every batch from `offset` on: the uncommitted tail that a replication protocol
    /// found to conflict with its leader's log. `offset` must start a written batch at or past
    /// the committed offset (or be the next offset: nothing to do). When this returns the removal
    /// is durable: the removed bytes are zeroed and synced, so no recovery brings them back, and
    /// the next batch gets `offset`.
    ///
    /// # Errors
    ///
    /// [`StorageError::TruncationBusy`] while a reader of the uncommitted tail still reads the
    /// range (leases are short): nothing may be written until a retry of the same truncation
    /// succeeds. [`StorageError::NotABoundary`], or [`StorageError::Poisoned`] (also after the
    /// sync of the zeroed range fails).
    pub fn truncate(&mut self, offset: u64) -> Result<(), StorageError> {
        self.shared.check_poison()?;
        let mut truncating = match self.truncating {
            Some(truncating) if truncating.offset == offset => truncating,
            Some(truncating) => {
                return Err(StorageError::TruncationBusy { readers: truncating.readers })
            }
            None => {
                let committed = self.shared.next_offset.load(Ordering::Acquire);
                if offset == self.next_offset && offset >= committed {
                    return Ok(());
                }
                if offset < committed || offset > self.next_offset {
                    return Err(self.not_a_boundary(offset));
                }
                let (position, reached) =
                    self.walk_written(self.cursor.published(), committed, offset, |_, _| ())?;
                if reached != offset {
                    return Err(self.not_a_boundary(offset));
                }
                Truncating { position, offset, old_written: self.cursor.written(), readers: 0 }
            }
        };
        // Syncs wait meanwhile: none may load the old written end with the new written offset,
        // or the other way round, and none may store a synced position past the cut.
        let shared = Arc::clone(&self.shared);
        let mut state = shared.sync_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Rewind::Busy { readers } = self.cursor.try_rewind(truncating.position) {
            truncating.readers = readers;
            self.truncating = Some(truncating);
            return Err(StorageError::TruncationBusy { readers });
        }
        self.truncating = None;
        self.cut_at(truncating.position, offset);
        let layout = *self.cursor.core().layout();
        let zeroed_end = truncating.old_written.div_ceil(layout.chunk_size()) * layout.chunk_size();
        if let Err(source) =
            shared.core.flush_data(truncating.position, zeroed_end, shared.sync_method)
        {
            return Err(shared.poison_with(super::FailedStep::Sync, source).into());
        }
        shared.synced_position.fetch_min(truncating.position, Ordering::AcqRel);
        shared.durable_offset.fetch_min(offset, Ordering::AcqRel);
        if state.stored_durable_offset > offset {
            shared.store_durable(&mut state, offset)?;
        }
        Ok(())
    }

    /// The writer's own state after the cursor rewound to `position`, where the batch of base
    /// offset `offset` started: the chunk keeping the byte before it is written on from there,
    /// after its framing past the kept batches is zeroed.
    fn cut_at(&mut self, position: u64, offset: u64) {
        let layout = *self.cursor.core().layout();
        self.next_offset = offset;
        self.tail = position;
        if position.is_multiple_of(layout.chunk_size()) {
            // The chunk before was left whole (closed); the next append claims the next one.
            self.chunk_end = position;
            self.needs_chunk = true;
            self.entries = 0;
        } else {
            let generation = layout.generation(position);
            let chunk_start = layout.generation_start(generation);
            let slot = layout.slot(generation);
            let first = self.chunk_first_offset[slot];
            // The kept batches of the chunk: their count, and the chunk's times again.
            let time_index = &self.shared.time_index;
            time_index.start(slot, first);
            let mut entries = 0usize;
            let (_, reached) = self
                .walk_written(chunk_start, first, offset, |_, header| {
                    entries += 1;
                    time_index.note(slot, header.max_timestamp());
                })
                .expect("the writer's own chunk walks (no lease can be refused to it here)");
            assert_eq!(reached, offset, "the kept batches end where the truncation cuts");
            self.chunk_end = chunk_start + layout.chunk_size();
            self.needs_chunk = false;
            self.entries = entries;
            // Batches, end marker, close entry and entries of the cut batches: all zero.
            let keep_from = self.entry_position(entries.saturating_sub(1));
            let clean_end = if entries == 0 { self.chunk_end } else { keep_from };
            self.cursor.bytes_mut(position, clean_end - position).fill(0);
        }
        let head = self.shared.head_position.load(Ordering::Acquire);
        self.shared.index.rewind(&mut self.index_fill, position, head);
        self.shared.written_offset.store(offset, Ordering::Release);
    }

    fn not_a_boundary(&self, offset: u64) -> StorageError {
        StorageError::NotABoundary {
            offset,
            committed: self.shared.next_offset.load(Ordering::Acquire),
            next: self.next_offset,
        }
    }

    /// Walks the written batches from `position` (a batch start, or the end of a chunk's
    /// batches, where the log has offset `offset`) through tail leases, calling `visit` with
    /// each batch's position and header, until the offset reaches `target` or the walk reaches
    /// the written end. Returns where it stopped and the offset there.
    fn walk_written(
        &self,
        mut position: u64,
        mut offset: u64,
        target: u64,
        mut visit: impl FnMut(u64, &BatchHeader),
    ) -> Result<(u64, u64), StorageError> {
        let core = self.cursor.core();
        let layout = *core.layout();
        let written = self.cursor.written();
        while offset < target && position < written {
            let lease = RingCore::lease_written(core, position).map_err(|error| match error {
                LeaseError::TooManyReaders => StorageError::ChunkBusy { readers: 0 },
                other => panic!("the writer's own unreclaimed tail is leasable: {other:?}"),
            })?;
            let bytes = lease.bytes();
            let chunk_end = layout.generation_start(layout.generation(position) + 1);
            let mut at = 0usize;
            position = loop {
                let here = position + at as u64;
                if offset >= target || here >= written {
                    break here;
                }
                let rest = &bytes[at..];
                if chunk_end - here < END_MARKER_SIZE as u64 || read_end_marker(rest).is_some() {
                    break chunk_end;
                }
                let header = BatchHeader::peek(rest).expect("the writer's own batch");
                visit(here, header);
                offset = header.next_offset();
                at += header.batch_len();
            };
        }
        Ok((position, offset))
    }

    /// Claims the next chunk, reclaiming the oldest one when the ring is full.
    fn claim_next(&mut self) -> Result<(), StorageError> {
        let layout = *self.cursor.core().layout();
        let count = layout.chunk_count();
        let generation =
            self.cursor.claimed().map_or(layout.generation(self.tail), |held| held + 1);
        if generation >= count {
            // The chunk replaced is generation - count; the head moves to the one after it.
            let head_generation = generation - count + 1;
            let head_position = layout.generation_start(head_generation);
            if head_position > self.cursor.published() {
                // Only a log that publishes on commit gets here: its uncommitted tail fills the
                // ring, and reclaiming would drop batches no replica has confirmed.
                return Err(StorageError::Uncommitted {
                    uncommitted: self.cursor.written() - self.cursor.published(),
                });
            }
            let head_offset = self.chunk_first_offset[layout.slot(head_generation)];
            if head_offset > self.retain_from {
                // The reclaimed chunk holds records below `head_offset`, some of them kept.
                return Err(StorageError::Retained {
                    retained: self.retain_from,
                    reclaim_to: head_offset,
                });
            }
            if self.shared.head_position.load(Ordering::Relaxed) < head_position {
                // Offset first: a reader comparing against the earliest offset must not be
                // told an offset is held after its chunk is gone.
                self.shared.head_offset.store(head_offset, Ordering::Release);
                self.shared.head_position.store(head_position, Ordering::Release);
                self.keep_durable_offset_retained(head_offset)?;
            }
        }
        match self.cursor.try_claim() {
            Claim::Claimed => {
                self.tail = layout.generation_start(generation);
                self.chunk_end = layout.generation_start(generation + 1);
                self.needs_chunk = false;
                self.entries = 0;
                Ok(())
            }
            Claim::Busy { readers } => Err(StorageError::ChunkBusy { readers }),
        }
    }

    /// If the durable offset stored on disk is about to fall out of the log, store the current
    /// one (when it is inside), so recovery can still find the chain holding synced data.
    fn keep_durable_offset_retained(&mut self, head_offset: u64) -> Result<(), StorageError> {
        let mut state =
            self.shared.sync_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let durable = self.shared.durable_offset.load(Ordering::Acquire);
        // The stored offset names its last durable record (`offset - 1`): it is retained while
        // that record is at or past the head.
        if state.stored_durable_offset <= head_offset && durable > head_offset {
            self.shared.store_durable(&mut state, durable)?;
        }
        Ok(())
    }

    /// Stops the log cleanly: syncs everything and writes a clean-shutdown checkpoint, so the
    /// next open walks headers instead of scanning every chunk.
    ///
    /// # Errors
    ///
    /// The sync's or the superblock write's error; the file then recovers by a full scan.
    pub fn close(self) -> Result<(), StorageError> {
        let log = super::Log { shared: Arc::clone(&self.shared) };
        let durable = log.sync()?.offset;
        let mut state =
            self.shared.sync_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let checkpoint = Checkpoint {
            head_position: self.shared.head_position.load(Ordering::Acquire),
            head_offset: self.shared.head_offset.load(Ordering::Acquire),
            tail_position: self.tail,
            next_offset: self.next_offset,
        };
        self.shared.write_superblock(&mut state, durable, Some(checkpoint))?;
        Ok(())
    }
}
