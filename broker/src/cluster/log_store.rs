//! openraft's log storage over a partition's ring.
//!
//! The ring publishes on commit ([`LogConfig::with_publish_on_commit`](crate::log::LogConfig)):
//! appended entries are written (and synced by the group sync below) but consumers see a batch
//! only once Raft commits it ([`RaftLogStorage::save_committed`]), so they read committed records
//! only (Kafka's high watermark). A conflicting uncommitted tail is truncated durably
//! ([`LogWriter::truncate`]).
//!
//! The map from Raft index to ring offset ([`Index`]) is in memory. It is rebuilt on open from the
//! *anchor*, the Raft index of the batch at one offset, saved in the ring's replication state
//! record with the vote, the purge point and the commit point ([`Saved`]): every batch written
//! from the anchor's offset on is the next entry. The anchor moves only when that rule would
//! break, and is saved (synced) before the ring changes: on the first append to an empty map at
//! another index or offset, and on every purge (the first entry kept). The ring reclaims nothing
//! Raft has not purged ([`LogWriter::retain_from`]).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError, Vote};
use ringmq_protocol::BatchHeader;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::entry;
use super::{LogId, PartitionRaft, RaftStorageError};
use crate::log::{Log, LogWriter, ReadError, StorageError};

type Entry = openraft::Entry<PartitionRaft>;

/// How long a truncation or an append waits between attempts while readers hold what it must
/// change (leases are short: a read's copy, or a replication read).
const BUSY_RETRY: Duration = Duration::from_millis(1);
/// Attempts before a busy ring is reported as an error (about 10 s).
const BUSY_ATTEMPTS: u32 = 10_000;
/// Bytes read from the ring per step of an entry read or of the rebuild on open.
const READ_STEP: usize = 1 << 20;
/// Version of the [`Saved`] record.
const SAVED_VERSION: u32 = 1;

/// Why a ring cannot be opened as a Raft log.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The replication state record does not decode.
    #[error("{path}: the replication state does not decode: {reason}")]
    BadState {
        /// The ring's file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The anchor names an offset the ring does not hold.
    #[error("{path}: the replication state anchors Raft index {index} at offset {offset}, outside the ring's offsets {earliest} to {next}")]
    AnchorOutside {
        /// The ring's file.
        path: String,
        /// Anchored index.
        index: u64,
        /// Anchored offset.
        offset: u64,
        /// Earliest offset held.
        earliest: u64,
        /// Next offset.
        next: u64,
    },
    /// A ring with records but no replication state: not a Raft log.
    #[error("{path}: the ring holds records up to offset {next} but no replication state: it is not a replicated partition's log")]
    NotARaftLog {
        /// The ring's file.
        path: String,
        /// Its next offset.
        next: u64,
    },
    /// Reading the ring back failed.
    #[error("{path}: reading the ring back at offset {offset}: {reason}")]
    Read {
        /// The ring's file.
        path: String,
        /// Where.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// The log does not publish on commit, so it would show consumers uncommitted entries.
    #[error("{path}: a replicated partition's ring must publish on commit")]
    PublishesOnAppend {
        /// The ring's file.
        path: String,
    },
    /// Publishing the saved commit point failed.
    #[error("{path}: {source}")]
    Storage {
        /// The ring's file.
        path: String,
        /// The ring's error.
        source: StorageError,
    },
}

/// What the ring's replication state record holds for Raft (JSON; at most
/// [`REPLICATION_STATE_MAX`](crate::log::REPLICATION_STATE_MAX) bytes, a few hundred in use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    version: u32,
    vote: Option<Vote<u64>>,
    /// The commit point when the record was last saved (saved with the other fields, not on every
    /// commit: it only spares a restarted node the wait for its leader).
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// Raft index of the entry at `anchor_offset` (the first entry held, or the next one).
    anchor_index: u64,
    anchor_offset: u64,
}

/// Raft index ↔ ring offset of the entries held, first to last.
#[derive(Debug)]
struct Index {
    /// Raft index of `entries[0]` (of the next entry when empty).
    first: u64,
    /// Base offset and term of each entry held.
    entries: VecDeque<(u64, u64)>,
    /// Ring offset after the last entry (where the next goes).
    next_offset: u64,
}

impl Index {
    /// Raft index the next entry gets.
    fn next_index(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Offset of entry `index`, or of the next entry when `index` is the next index.
    fn offset_of(&self, index: u64) -> Option<u64> {
        let at = usize::try_from(index.checked_sub(self.first)?).ok()?;
        match self.entries.get(at) {
            Some(&(offset, _)) => Some(offset),
            None => (at == self.entries.len()).then_some(self.next_offset),
        }
    }

    /// The offset after entry `index`.
    fn end_of(&self, index: u64) -> Option<u64> {
        self.offset_of(index.checked_add(1)?)
    }

    fn last_log_id(&self) -> Option<LogId> {
        let &(_, term) = self.entries.back()?;
        Some(LogId::new(openraft::CommittedLeaderId::new(term, 0), self.next_index() - 1))
    }
}

/// What the store and its readers share.
#[derive(Debug)]
struct Shared {
    log: Log,
    index: RwLock<Index>,
}

impl Shared {
    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Base offset and term of entry `index`, if held.
    fn entry_at(&self, index: u64) -> Option<(u64, u64)> {
        let map = self.index();
        let at = usize::try_from(index.checked_sub(map.first)?).ok()?;
        map.entries.get(at).copied()
    }
}

/// openraft's log storage for one replicated partition: the ring's single writer, the vote and
/// the purge point in the ring's replication state record, and a group sync that reports
/// appended entries durable in order.
#[derive(Debug)]
pub struct RingLogStore {
    shared: Arc<Shared>,
    writer: LogWriter,
    saved: Saved,
    /// The commit point as openraft last said it (the saved one may be older).
    committed: Option<LogId>,
    /// Entries appended, waiting for the sync that makes them durable.
    flushes: mpsc::UnboundedSender<LogFlushed<PartitionRaft>>,
    /// The group sync task (it holds the ring open until it ends).
    syncer: tokio::task::JoinHandle<()>,
    retention: Arc<Retention>,
    scratch: Vec<u8>,
}

/// What the log tells its group about the ring's room, after every append and purge: the purge
/// the ring needs soon (the group's retention task asks openraft for it), and whether a leader
/// should refuse writes until it happens.
#[derive(Debug)]
pub(super) struct Retention {
    /// Raft index up to which (inclusive) the log should be purged, so the ring's next
    /// [`RETENTION_MARGIN`] of chunks can be claimed without a refused reclaim (0 with nothing to
    /// purge: index 0 is the first membership entry, purged only with what follows).
    pub(super) purge_to: watch::Sender<u64>,
    /// The ring is within half that margin of a reclaim of entries not purged.
    pub(super) full: AtomicBool,
}

impl Retention {
    /// Whether a leader should refuse writes for now.
    pub(super) fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }
}

/// The share of the ring's chunks kept claimable: when fewer would be left before a reclaim of
/// unpurged entries, the log asks for a purge; at half of it, the leader refuses writes.
const RETENTION_MARGIN: u64 = 4;

/// A reader of a partition's Raft log (openraft's replication tasks hold one each).
#[derive(Debug, Clone)]
pub struct RingLogReader {
    shared: Arc<Shared>,
}

impl RingLogStore {
    /// Opens the Raft log of a ring that publishes on commit: reads the replication state,
    /// rebuilds the index from its anchor, publishes up to the saved commit point and keeps every
    /// entry not purged from the ring's reclaim. Must be called inside a Tokio runtime (the group
    /// sync is a task).
    ///
    /// # Errors
    ///
    /// A [`LogStoreError`] naming the ring and what is wrong.
    pub fn open(log: Log, mut writer: LogWriter) -> Result<Self, LogStoreError> {
        let path = log.path().display().to_string();
        if !log.publishes_on_commit() {
            return Err(LogStoreError::PublishesOnAppend { path });
        }
        let saved = match log.replication_state() {
            Some(bytes) => serde_json::from_slice::<Saved>(&bytes).map_err(|error| {
                LogStoreError::BadState { path: path.clone(), reason: error.to_string() }
            })?,
            None if log.written_offset() > log.earliest_offset() => {
                return Err(LogStoreError::NotARaftLog { path, next: log.written_offset() })
            }
            None => Saved {
                version: SAVED_VERSION,
                anchor_offset: log.written_offset(),
                ..Saved::default()
            },
        };
        if saved.version != SAVED_VERSION {
            return Err(LogStoreError::BadState {
                path,
                reason: format!("version {} (this broker reads {SAVED_VERSION})", saved.version),
            });
        }
        let (earliest, next) = (log.earliest_offset(), log.written_offset());
        if saved.anchor_offset < earliest || saved.anchor_offset > next {
            return Err(LogStoreError::AnchorOutside {
                path,
                index: saved.anchor_index,
                offset: saved.anchor_offset,
                earliest,
                next,
            });
        }
        if log.replication_state().is_none() {
            // A new log: saved before any entry, so a ring with entries always has its anchor.
            let bytes = serde_json::to_vec(&saved).expect("plain fields serialise");
            log.save_replication_state(&bytes)
                .map_err(|source| LogStoreError::Storage { path: path.clone(), source })?;
        }
        let index = rebuild(&log, &saved, &path)?;
        writer.retain_from(saved.anchor_offset);
        let committed = saved.committed;
        if let Some(end) = committed.and_then(|id| index.end_of(id.index)) {
            writer
                .commit(end)
                .map_err(|source| LogStoreError::Storage { path: path.clone(), source })?;
        }
        let shared = Arc::new(Shared { log, index: RwLock::new(index) });
        let (flushes, pending) = mpsc::unbounded_channel();
        let syncer = tokio::spawn(group_sync(shared.log.clone(), pending));
        let retention =
            Arc::new(Retention { purge_to: watch::Sender::new(0), full: AtomicBool::new(false) });
        let mut store = Self {
            shared,
            writer,
            saved,
            committed,
            flushes,
            syncer,
            retention,
            scratch: Vec::new(),
        };
        store.check_room();
        Ok(store)
    }

    /// Closes the log: the group sync reports what is pending and ends. The ring stays mapped
    /// until the last reader and the state machine are dropped too; then it can be opened again.
    pub async fn close(self) {
        let Self { shared, writer, flushes, syncer, .. } = self;
        drop((flushes, writer, shared));
        // A panic in the task would already have failed its callbacks' receivers.
        let _ = syncer.await;
    }

    /// The ring this log is on.
    pub fn log(&self) -> &Log {
        &self.shared.log
    }

    /// The ring's room, as the group's retention task and write admission see it.
    pub(super) fn retention(&self) -> Arc<Retention> {
        Arc::clone(&self.retention)
    }

    /// Updates [`Retention`] from the ring's room: the purge its next chunks need, and whether
    /// it is full.
    fn check_room(&mut self) {
        let chunks = self.shared.log.capacity() / self.shared.log.chunk_size();
        let margin = (chunks / RETENTION_MARGIN).max(1);
        let kept = self.saved.anchor_offset;
        let needs = |ahead: u64| self.writer.reclaim_ahead(ahead).filter(|&offset| offset > kept);
        self.retention.full.store(needs((margin / 2).max(1)).is_some(), Ordering::Release);
        let Some(offset) = needs(margin) else { return };
        // Purge every entry before the one at `offset` (a chunk starts with a batch).
        let purge_to = {
            let map = self.shared.index();
            let before = map.entries.partition_point(|&(base, _)| base < offset) as u64;
            (map.first + before).checked_sub(1)
        };
        if let Some(purge_to) = purge_to {
            self.retention.purge_to.send_if_modified(|wanted| {
                let raise = purge_to > *wanted;
                *wanted = (*wanted).max(purge_to);
                raise
            });
        }
    }

    /// A handle the state machine uses to answer where applied batches landed.
    pub(super) fn offsets(&self) -> OffsetsOf {
        OffsetsOf { shared: Arc::clone(&self.shared) }
    }

    /// Saves the replication state record (synced when this returns), with the commit point as
    /// it is now.
    fn save(&mut self, subject: ErrorSubject<u64>) -> Result<(), RaftStorageError> {
        self.saved.committed = self.committed;
        let bytes = serde_json::to_vec(&self.saved)
            .map_err(|error| io_error(subject.clone(), ErrorVerb::Write, &error))?;
        self.shared
            .log
            .save_replication_state(&bytes)
            .map_err(|error| io_error(subject, ErrorVerb::Write, &error))
    }

    /// Writes `entries` into the ring (readable when this returns, durable after the next sync):
    /// what [`RaftLogStorage::append`] does before it hands its callback to the group sync.
    pub(super) fn append_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), RaftStorageError> {
        for entry in entries {
            let appended = self.append_one(&entry);
            self.check_room();
            appended?;
        }
        Ok(())
    }

    fn append_one(&mut self, entry: &Entry) -> Result<(), RaftStorageError> {
        let log_id = entry.log_id;
        let write_error = |error: AnyError| -> RaftStorageError {
            StorageIOError::new(ErrorSubject::Log(log_id), ErrorVerb::Write, error).into()
        };
        let (next_index, next_offset, empty) = {
            let map = self.shared.index();
            (map.next_index(), map.next_offset, map.entries.is_empty())
        };
        if log_id.index != next_index {
            if !empty {
                let reason = format!(
                    "entry {} does not follow the last entry held ({})",
                    log_id.index,
                    next_index - 1
                );
                return Err(write_error(AnyError::error(reason)));
            }
            // The first entry after an empty log (a purge past the last, or a truncation of
            // everything) starts a new count: durable before the batch is written.
            self.saved.anchor_index = log_id.index;
            self.saved.anchor_offset = next_offset;
            self.save(ErrorSubject::Log(log_id))?;
            self.shared.index_mut().first = log_id.index;
        }
        let term = entry::term_of(&log_id).map_err(|error| write_error(AnyError::new(&error)))?;
        let batch_size_max = self.shared.log.batch_size_max();
        let view = entry::to_batch(entry, &mut self.scratch, batch_size_max)
            .map_err(|error| write_error(AnyError::new(&error)))?;
        self.writer.set_term(term);
        let appended =
            retry_busy(|| self.writer.append(&view)).map_err(|e| write_error(AnyError::new(&e)))?;
        let mut map = self.shared.index_mut();
        map.entries.push_back((appended.base_offset, log_id.leader_id.term));
        map.next_offset = appended.next_offset;
        Ok(())
    }
}

/// Rebuilds the index by counting the batches written from the anchor on.
fn rebuild(log: &Log, saved: &Saved, path: &str) -> Result<Index, LogStoreError> {
    let mut index = Index {
        first: saved.anchor_index,
        entries: VecDeque::new(),
        next_offset: saved.anchor_offset,
    };
    let end = log.written_offset();
    while index.next_offset < end {
        let offset = index.next_offset;
        let read_error =
            |reason: String| LogStoreError::Read { path: path.to_owned(), offset, reason };
        let outcome = log.read_written(offset, READ_STEP).map_err(|e| read_error(e.to_string()))?;
        let mut rest = &outcome.batches[..];
        while let Ok(header) = BatchHeader::peek(rest) {
            let Some(after) = rest.get(header.batch_len()..) else { break };
            // A read returns whole batches from the one holding `offset`: every one from the
            // anchor on starts where the last ended.
            if header.base_offset() != index.next_offset {
                return Err(read_error(format!(
                    "a batch at offset {} where {} was expected",
                    header.base_offset(),
                    index.next_offset
                )));
            }
            let term = u64::try_from(header.partition_leader_epoch()).unwrap_or(0);
            index.entries.push_back((header.base_offset(), term));
            index.next_offset = header.next_offset();
            rest = after;
        }
        if index.next_offset == offset {
            return Err(read_error("the read returned no batch".into()));
        }
    }
    Ok(index)
}

/// Runs `attempt` until the ring is not busy with readers (leases are short), at most
/// [`BUSY_ATTEMPTS`] times.
fn retry_busy<T>(mut attempt: impl FnMut() -> Result<T, StorageError>) -> Result<T, StorageError> {
    let mut attempts = 0;
    loop {
        match attempt() {
            Err(StorageError::ChunkBusy { .. } | StorageError::TruncationBusy { .. })
                if attempts < BUSY_ATTEMPTS =>
            {
                attempts += 1;
                std::thread::sleep(BUSY_RETRY);
            }
            other => return other,
        }
    }
}

/// Reports appended entries durable, in the order they were appended: one sync covers every
/// append before it started (openraft requires the reports in order).
async fn group_sync(log: Log, mut pending: mpsc::UnboundedReceiver<LogFlushed<PartitionRaft>>) {
    let mut round = Vec::new();
    while pending.recv_many(&mut round, 1024).await > 0 {
        let synced = {
            let log = log.clone();
            tokio::task::spawn_blocking(move || log.sync().map(drop))
                .await
                .map_err(|error| std::io::Error::other(error.to_string()))
                .and_then(|synced| {
                    synced.map_err(|poison| std::io::Error::other(poison.to_string()))
                })
        };
        for callback in round.drain(..) {
            let result = match &synced {
                Ok(()) => Ok(()),
                Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
            };
            callback.log_io_completed(result);
        }
    }
}

fn io_error<E: std::error::Error + 'static>(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    error: &E,
) -> RaftStorageError {
    StorageIOError::new(subject, verb, AnyError::new(error)).into()
}

/// Answers where entries landed, for the state machine.
#[derive(Debug, Clone)]
pub(super) struct OffsetsOf {
    shared: Arc<Shared>,
}

impl OffsetsOf {
    /// Base offset of entry `index`, if the log holds it.
    pub(super) fn offset_of(&self, index: u64) -> Option<u64> {
        self.shared.entry_at(index).map(|(offset, _)| offset)
    }

    /// Offset after entry `index`, if the log holds it.
    pub(super) fn end_of(&self, index: u64) -> Option<u64> {
        self.shared.index().end_of(index)
    }
}

impl RaftLogReader<PartitionRaft> for RingLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        read_entries(&self.shared, range)
    }
}

impl RaftLogReader<PartitionRaft> for RingLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        read_entries(&self.shared, range)
    }
}

/// The entries of `range` the log holds, read back from the ring (copied out of the mapping: a
/// lease is not held while openraft keeps an entry).
fn read_entries(
    shared: &Shared,
    range: impl RangeBounds<u64>,
) -> Result<Vec<Entry>, RaftStorageError> {
    let (first, next) = {
        let map = shared.index();
        (map.first, map.next_index())
    };
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    }
    .max(first);
    let end = match range.end_bound() {
        Bound::Included(&end) => end.saturating_add(1),
        Bound::Excluded(&end) => end,
        Bound::Unbounded => u64::MAX,
    }
    .min(next);
    let mut entries = Vec::new();
    let mut index = start;
    while index < end {
        let at = index;
        let read_error = |reason: String| {
            RaftStorageError::from(StorageIOError::read_log_at_index(at, AnyError::error(reason)))
        };
        let Some((offset, _)) = shared.entry_at(index) else {
            // Truncated or purged meanwhile: a short result.
            break;
        };
        let outcome = match shared.log.read_written(offset, READ_STEP) {
            Ok(outcome) => outcome,
            Err(ReadError::Busy) => {
                std::thread::sleep(BUSY_RETRY);
                continue;
            }
            Err(error) => return Err(read_error(error.to_string())),
        };
        let mut rest = &outcome.batches[..];
        let before = index;
        while index < end {
            let Ok(header) = BatchHeader::peek(rest) else { break };
            let Some((bytes, after)) = rest.split_at_checked(header.batch_len()) else { break };
            if header.base_offset() < offset {
                rest = after;
                continue;
            }
            // The map may have moved (a truncation) since the offset was looked up: keep only
            // what it still names.
            if shared.entry_at(index)
                != Some((header.base_offset(), entry::log_id_of(header, index).leader_id.term))
            {
                return Ok(entries);
            }
            let entry = entry::from_batch(bytes, index).map_err(|e| read_error(e.to_string()))?;
            entries.push(entry);
            index += 1;
            rest = after;
        }
        if index == before {
            return Err(read_error(format!("no batch at offset {offset}")));
        }
    }
    Ok(entries)
}

impl RaftLogStorage<PartitionRaft> for RingLogStore {
    type LogReader = RingLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaft>, RaftStorageError> {
        let last = self.shared.index().last_log_id().or(self.saved.last_purged);
        Ok(LogState { last_purged_log_id: self.saved.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        RingLogReader { shared: Arc::clone(&self.shared) }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), RaftStorageError> {
        self.saved.vote = Some(*vote);
        self.save(ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, RaftStorageError> {
        Ok(self.saved.vote)
    }

    /// Publishes every entry up to `committed` to the partition's readers. Saved with the next
    /// durable save of the record, not on each call: after a restart the leader says it again.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        self.committed = committed;
        let Some(id) = committed else { return Ok(()) };
        let end = self.shared.index().end_of(id.index);
        if let Some(end) = end {
            self.writer
                .commit(end)
                .map_err(|error| io_error(ErrorSubject::Log(id), ErrorVerb::Write, &error))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<PartitionRaft>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.append_entries(entries)?;
        // The group sync reports it durable, after every append before it.
        if let Err(mpsc::error::SendError(callback)) = self.flushes.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("the log's sync task stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let offset = {
            let map = self.shared.index();
            if log_id.index >= map.next_index() {
                return Ok(());
            }
            map.offset_of(log_id.index.max(map.first)).expect("held")
        };
        let writer = &mut self.writer;
        retry_busy(|| writer.truncate(offset))
            .map_err(|error| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &error))?;
        let mut map = self.shared.index_mut();
        let keep = usize::try_from(log_id.index.saturating_sub(map.first)).unwrap_or(usize::MAX);
        map.entries.truncate(keep);
        map.next_offset = offset;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let anchor = {
            let map = self.shared.index();
            match map.offset_of(log_id.index.saturating_add(1).max(map.first)) {
                Some(offset) => offset,
                // Past the last entry: the next entry starts the count.
                None => map.next_offset,
            }
        };
        if self.saved.last_purged.is_some_and(|purged| purged.index >= log_id.index) {
            return Ok(());
        }
        self.saved.last_purged = Some(log_id);
        self.saved.anchor_index = log_id.index + 1;
        self.saved.anchor_offset = anchor;
        self.save(ErrorSubject::Logs)?;
        // Durable first, then the ring may reclaim what was purged.
        self.writer.retain_from(anchor);
        let mut map = self.shared.index_mut();
        let drop_count = usize::try_from((log_id.index + 1).saturating_sub(map.first))
            .unwrap_or(usize::MAX)
            .min(map.entries.len());
        map.entries.drain(..drop_count);
        map.first = log_id.index + 1;
        drop(map);
        self.check_room();
        Ok(())
    }
}
