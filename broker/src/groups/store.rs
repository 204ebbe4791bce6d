//! The group state log: committed offsets and reserved producer ids, kept in a ring log of their
//! own (`DATA_DIR/.groups/state.ring`) so one storage engine, with its recovery and sync policy,
//! serves both the topics and the broker's own state.
//!
//! Every change is a record: the key names what changed, the value is its new state.
//!
//! ```text
//! key                                              value
//! 1, group (u16 length + bytes), topic (same), u32  committed offset, u64 (empty: removed)
//! 2                                                producer ids below this i64 are handed out
//! 3                                                snapshot start (u64 entry count)
//! 4                                                snapshot end
//! ```
//!
//! The ring forgets its oldest chunks as it wraps, so the live state is written again from time
//! to time as a snapshot (records between a start and an end marker). A snapshot is written once
//! more than half the capacity has been appended since the last one began, and the live state is
//! kept under a quarter of the capacity, so the newest complete snapshot and everything after it
//! are always still in the ring. Replay at startup applies records in order and replaces the
//! state at every complete snapshot; an incomplete one at the end (a crash while writing it) is
//! ignored, the state before it being intact.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::Mutex;
use tokio::time::Instant;

use ringmq_protocol::group::PartitionOffset;
use ringmq_protocol::{BatchBuilder, Batches, Push, Record};

use crate::log::{self, DataDir, LogConfig, OpenMode, StorageError};
use crate::metrics::TopicCounters;
use crate::partition::{AppendError, Partition, SyncPolicy};
use crate::producers::ProducerTable;

/// Directory of the group state log inside the data directory (not a valid topic name).
pub const STATE_DIR: &str = ".groups";
const STATE_FILE: &str = "state.ring";

const KIND_OFFSET: u8 = 1;
const KIND_PRODUCER_IDS: u8 = 2;
const KIND_SNAPSHOT_START: u8 = 3;
const KIND_SNAPSHOT_END: u8 = 4;

/// Largest batch of the state log; small, so even the smallest log has many chunks.
const STATE_BATCH_SIZE_MAX: u32 = 256 << 10;

/// Smallest state log: the snapshot scheme needs a chunk to be well under a quarter of it.
pub const STATE_CAPACITY_MIN: u64 = 16 << 20;

/// Producer ids reserved per record: one append hands out this many ids.
const PRODUCER_ID_BLOCK: i64 = 1024;

/// Record overhead assumed per entry when sizing the live state: a record header, a share of a
/// batch header and the fixed key and value fields.
const ENTRY_OVERHEAD: u64 = 20 + 8 + 12 + 8;

/// Why the group state could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An append failed.
    #[error("writing the group state log failed: {0}")]
    Append(#[from] AppendError),
    /// The live state would not fit: the log's capacity must grow.
    #[error("the group state log is full: {live} bytes of live state, at most {max} fit in a log of {capacity} bytes (raise group_log_capacity)")]
    Full {
        /// Live state with the new entries, bytes.
        live: u64,
        /// Most live state the log keeps.
        max: u64,
        /// The log's capacity.
        capacity: u64,
    },
    /// The sync the policy asks for failed.
    #[error("the group state log could not be synced: {0}")]
    Sync(#[source] crate::log::Poison),
    /// The sync the policy asks for did not finish within the request timeout.
    #[error("the group state log's sync did not finish within {} ms", timeout.as_millis())]
    SyncTimeout {
        /// The request timeout.
        timeout: std::time::Duration,
    },
    /// A change could not be encoded as a record batch.
    #[error("encoding a group state record failed: {0}")]
    Encode(#[from] ringmq_protocol::EncodeError),
    /// A batch just encoded did not validate (a bug).
    #[error("encoded an invalid group state batch: {0}")]
    Invalid(#[from] ringmq_protocol::DecodeError),
    /// The state log holds a record this build cannot read.
    #[error("{path}: unreadable group state record at offset {offset}: {reason}")]
    Corrupt {
        /// The log file.
        path: String,
        /// The record's offset.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A committed offset's key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OffsetKey {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

/// The live state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    offsets: BTreeMap<OffsetKey, u64>,
    /// Producer ids below this were handed out (or reserved) before.
    producer_ids_reserved: i64,
}

impl State {
    fn entry_size(key: &OffsetKey) -> u64 {
        (key.group.len() + key.topic.len()) as u64 + ENTRY_OVERHEAD
    }

    fn live_bytes(&self) -> u64 {
        self.offsets.keys().map(Self::entry_size).sum::<u64>() + ENTRY_OVERHEAD
    }
}

/// A record's decoded meaning.
#[derive(Clone)]
enum Change {
    Offset(OffsetKey, Option<u64>),
    ProducerIds(i64),
    SnapshotStart,
    SnapshotEnd,
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let length = u16::try_from(text.len()).expect("group and topic names are validated short");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn offset_key(out: &mut Vec<u8>, key: &OffsetKey) {
    out.clear();
    out.push(KIND_OFFSET);
    put_str(out, &key.group);
    put_str(out, &key.topic);
    out.extend_from_slice(&key.partition.to_le_bytes());
}

fn take_str<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let (length, rest) = bytes.split_first_chunk::<2>()?;
    let (text, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*length)))?;
    *bytes = rest;
    std::str::from_utf8(text).ok()
}

fn decode(key: &[u8], value: &[u8]) -> Result<Change, &'static str> {
    let (&kind, mut rest) = key.split_first().ok_or("empty key")?;
    let u64_value = |value: &[u8]| -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(value.try_into().map_err(|_| "value is not 8 bytes")?))
    };
    match kind {
        KIND_OFFSET => {
            let group = take_str(&mut rest).ok_or("bad group in key")?.to_owned();
            let topic = take_str(&mut rest).ok_or("bad topic in key")?.to_owned();
            let partition = rest.try_into().map_err(|_| "bad partition in key")?;
            let key = OffsetKey { group, topic, partition: u32::from_le_bytes(partition) };
            let offset = if value.is_empty() { None } else { Some(u64_value(value)?) };
            Ok(Change::Offset(key, offset))
        }
        KIND_PRODUCER_IDS => Ok(Change::ProducerIds(
            i64::try_from(u64_value(value)?).map_err(|_| "producer id out of range")?,
        )),
        KIND_SNAPSHOT_START => Ok(Change::SnapshotStart),
        KIND_SNAPSHOT_END => Ok(Change::SnapshotEnd),
        _ => Err("unknown record kind"),
    }
}

/// What replaying the log found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records read.
    pub records: u64,
    /// Complete snapshots seen.
    pub snapshots: u64,
    /// Committed offsets in the state.
    pub offsets: usize,
}

/// The group state log and the state it holds.
#[derive(Debug)]
pub struct GroupStore {
    partition: Arc<Partition>,
    inner: Mutex<Inner>,
    sync: SyncPolicy,
    request_timeout: std::time::Duration,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bytes appended since the last snapshot began.
    since_snapshot: u64,
    /// Next producer id to hand out.
    next_producer_id: i64,
    batch: Vec<u8>,
}

impl GroupStore {
    /// Opens (or creates) the state log in `dir` with `capacity` bytes and replays it. Blocks.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the log cannot be opened or holds an unreadable record.
    pub fn open(
        dir: &DataDir,
        capacity: u64,
        prefault: bool,
        sync: SyncPolicy,
        request_timeout: std::time::Duration,
        sync_duration: prometheus::Histogram,
    ) -> Result<(Self, Replayed), StoreError> {
        let state_dir = dir.path().join(STATE_DIR);
        let path = state_dir.join(STATE_FILE);
        let config = LogConfig::new(capacity, None, STATE_BATCH_SIZE_MAX)?.with_prefault(prefault);
        let mode = if path.exists() { OpenMode::Existing } else { OpenMode::Create };
        if mode == OpenMode::Create {
            std::fs::create_dir_all(&state_dir).map_err(|source| StorageError::Io {
                path: state_dir.clone(),
                action: "create the group state directory".to_owned(),
                source,
            })?;
        }
        let (log, writer, _report) = log::open(dir, &path, &config, mode)?;
        let (state, replayed) = replay(&log, &path.display().to_string())?;
        let next_producer_id = state.producer_ids_reserved;
        let partition = Partition::new(
            Arc::from(STATE_DIR),
            0,
            log,
            writer,
            ProducerTable::default(),
            TopicCounters::detached(),
            sync_duration,
        );
        let store = Self {
            partition,
            inner: Mutex::new(Inner {
                state,
                // Unknown until the next snapshot: assume the worst so one is written early.
                since_snapshot: capacity / 2,
                next_producer_id,
                batch: vec![0; STATE_BATCH_SIZE_MAX as usize],
            }),
            sync,
            request_timeout,
        };
        Ok((store, replayed))
    }

    /// The log's partition (for syncing on the interval policy and closing).
    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// Stores committed offsets for `group` on `topic`. Durable as the broker's sync policy makes
    /// appends: written (survives a broker crash), synced with `sync = always`. A commit too big
    /// for one batch of the state log (hundreds of partitions) is written as several: a crash in
    /// between keeps the first ones only. Each offset kept is one the member committed, so
    /// consumption stays at-least-once; the others resume from their previous commit.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the log cannot take them; nothing is applied then.
    pub async fn commit(
        &self,
        group: &str,
        topic: &str,
        offsets: &[PartitionOffset],
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().await;
        let keys: Vec<OffsetKey> = offsets
            .iter()
            .map(|entry| OffsetKey {
                group: group.to_owned(),
                topic: topic.to_owned(),
                partition: entry.partition,
            })
            .collect();
        let added: u64 = keys
            .iter()
            .filter(|key| !inner.state.offsets.contains_key(*key))
            .map(State::entry_size)
            .sum();
        let capacity = self.partition.log().capacity();
        let live = inner.state.live_bytes() + added;
        if live > capacity / 4 {
            return Err(StoreError::Full { live, max: capacity / 4, capacity });
        }
        let changes: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .zip(offsets)
            .map(|(key, entry)| {
                let mut encoded = Vec::new();
                offset_key(&mut encoded, key);
                (encoded, entry.offset.to_le_bytes().to_vec())
            })
            .collect();
        self.append(&mut inner, &changes).await?;
        for (key, entry) in keys.into_iter().zip(offsets) {
            inner.state.offsets.insert(key, entry.offset);
        }
        self.snapshot_if_due(&mut inner).await;
        Ok(())
    }

    /// How many committed offsets `group` holds over all topics, and how many of `offsets` on
    /// `topic` would be new ones.
    pub async fn offset_counts(
        &self,
        group: &str,
        topic: &str,
        offsets: &[PartitionOffset],
    ) -> (usize, usize) {
        let inner = self.inner.lock().await;
        let from = OffsetKey { group: group.to_owned(), topic: String::new(), partition: 0 };
        let held = inner.state.offsets.range(from..).take_while(|(key, _)| key.group == group);
        let mut key = OffsetKey { group: group.to_owned(), topic: topic.to_owned(), partition: 0 };
        let new = offsets
            .iter()
            .filter(|entry| {
                key.partition = entry.partition;
                !inner.state.offsets.contains_key(&key)
            })
            .count();
        (held.count(), new)
    }

    /// The committed offsets of `group` on `topic`, by partition.
    pub async fn committed(&self, group: &str, topic: &str) -> Vec<PartitionOffset> {
        let inner = self.inner.lock().await;
        inner
            .state
            .offsets
            .iter()
            .filter(|(key, _)| key.group == group && key.topic == topic)
            .map(|(key, &offset)| PartitionOffset { partition: key.partition, offset })
            .collect()
    }

    /// Every committed offset, sorted by group, topic and partition.
    pub async fn all_committed(&self) -> Vec<(OffsetKey, u64)> {
        let inner = self.inner.lock().await;
        inner.state.offsets.iter().map(|(key, &offset)| (key.clone(), offset)).collect()
    }

    /// Forgets every committed offset on `topic` (it was deleted: a topic created again under
    /// its name starts from scratch). Returns how many were removed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the removals could not be written; nothing is forgotten then.
    pub async fn forget_topic(&self, topic: &str) -> Result<usize, StoreError> {
        let mut inner = self.inner.lock().await;
        let keys: Vec<OffsetKey> =
            inner.state.offsets.keys().filter(|key| key.topic == topic).cloned().collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let changes: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .map(|key| {
                let mut encoded = Vec::new();
                offset_key(&mut encoded, key);
                (encoded, Vec::new())
            })
            .collect();
        self.append(&mut inner, &changes).await?;
        for key in &keys {
            inner.state.offsets.remove(key);
        }
        self.snapshot_if_due(&mut inner).await;
        Ok(keys.len())
    }

    /// Whether `producer_id` was handed out by this broker (now or in an earlier run).
    pub async fn producer_id_issued(&self, producer_id: i64) -> bool {
        (0..self.inner.lock().await.next_producer_id).contains(&producer_id)
    }

    /// A producer id never handed out before (across restarts).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if a new block of ids could not be reserved.
    pub async fn next_producer_id(&self) -> Result<i64, StoreError> {
        let mut inner = self.inner.lock().await;
        if inner.next_producer_id >= inner.state.producer_ids_reserved {
            let reserved = inner.next_producer_id + PRODUCER_ID_BLOCK;
            let value = u64::try_from(reserved).unwrap_or(0).to_le_bytes().to_vec();
            self.append(&mut inner, &[(vec![KIND_PRODUCER_IDS], value)]).await?;
            inner.state.producer_ids_reserved = reserved;
            self.snapshot_if_due(&mut inner).await;
        }
        let id = inner.next_producer_id;
        inner.next_producer_id += 1;
        Ok(id)
    }

    /// Appends `changes` (key, value) as records, in as few batches as fit, and waits for the
    /// sync the policy asks for.
    async fn append(
        &self,
        inner: &mut Inner,
        changes: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.request_timeout;
        let timestamp = now_ms();
        let mut end_position = 0;
        let mut pending = changes;
        while !pending.is_empty() {
            let Inner { batch, since_snapshot, .. } = inner;
            let batch_size_max = self.partition.log().batch_size_max() as usize;
            let mut builder = BatchBuilder::new(&mut batch[..batch_size_max], timestamp)?;
            let mut taken = 0;
            for (key, value) in pending {
                let record = Record { key: Some(key), value, timestamp, headers: &[] };
                match builder.push(&record)? {
                    Push::Appended => taken += 1,
                    // Keys are at most a few hundred bytes: a record always fits an empty batch.
                    Push::Full => break,
                }
            }
            let bytes = builder.finish()?;
            let view = ringmq_protocol::BatchView::validate(bytes, u32::MAX)?;
            let stored = self.partition.append(&view, deadline).await?;
            end_position = stored.appended.end_position;
            *since_snapshot += bytes.len() as u64;
            pending = &pending[taken..];
        }
        if self.sync == SyncPolicy::Always {
            self.wait_synced(end_position, deadline).await?;
        }
        Ok(())
    }

    async fn wait_synced(&self, position: u64, deadline: Instant) -> Result<(), StoreError> {
        loop {
            let done = self.partition.sync_done();
            if self.partition.synced_position() >= position {
                return Ok(());
            }
            if let Some(failure) = self.partition.sync_failure() {
                return Err(StoreError::Sync(failure.clone()));
            }
            self.partition.request_sync(position);
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return Err(StoreError::SyncTimeout { timeout: self.request_timeout });
            }
        }
    }

    /// Writes the live state again once half the log has been appended since the last snapshot.
    /// A failure is logged, not returned: the change that triggered it is stored and in effect,
    /// and the next change tries the snapshot again.
    async fn snapshot_if_due(&self, inner: &mut Inner) {
        if let Err(error) = self.write_snapshot_if_due(inner).await {
            tracing::error!(%error, "writing a group state snapshot failed; will retry");
        }
    }

    async fn write_snapshot_if_due(&self, inner: &mut Inner) -> Result<(), StoreError> {
        let capacity = self.partition.log().capacity();
        if inner.since_snapshot <= capacity / 2 {
            return Ok(());
        }
        let state = &inner.state;
        let mut changes = Vec::with_capacity(state.offsets.len() + 3);
        let count = state.offsets.len() as u64 + 1;
        changes.push((vec![KIND_SNAPSHOT_START], count.to_le_bytes().to_vec()));
        let reserved = u64::try_from(state.producer_ids_reserved).unwrap_or(0);
        changes.push((vec![KIND_PRODUCER_IDS], reserved.to_le_bytes().to_vec()));
        for (key, offset) in &state.offsets {
            let mut encoded = Vec::new();
            offset_key(&mut encoded, key);
            changes.push((encoded, offset.to_le_bytes().to_vec()));
        }
        changes.push((vec![KIND_SNAPSHOT_END], Vec::new()));
        let before = inner.since_snapshot;
        // On failure the count stays high, so the next change tries the snapshot again.
        self.append(inner, &changes).await?;
        inner.since_snapshot -= before;
        tracing::debug!(entries = count, "group state snapshot written");
        Ok(())
    }

    /// Syncs and closes the log. Blocks.
    ///
    /// # Errors
    ///
    /// The sync's or checkpoint's error.
    pub fn close_blocking(&self) -> Result<(), StorageError> {
        self.partition.close_blocking()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// Rebuilds the state from every record the log holds.
fn replay(log: &log::Log, path: &str) -> Result<(State, Replayed), StoreError> {
    let mut state = State::default();
    let mut snapshot: Option<State> = None;
    let mut replayed = Replayed::default();
    for (offset, outcome) in log.scan(1 << 20) {
        for batch in Batches::new(&outcome.batches, u32::MAX) {
            let batch = batch.map_err(|_| StoreError::Corrupt {
                path: path.to_owned(),
                offset,
                reason: "batch failed validation",
            })?;
            let records = batch.records().ok_or_else(|| StoreError::Corrupt {
                path: path.to_owned(),
                offset,
                reason: "compressed batch (the broker writes none)",
            })?;
            for (index, record) in records.enumerate() {
                let record_offset = batch.base_offset() + index as u64;
                if record_offset < offset {
                    continue;
                }
                let corrupt = |reason| StoreError::Corrupt {
                    path: path.to_owned(),
                    offset: record_offset,
                    reason,
                };
                let change =
                    decode(record.key.unwrap_or_default(), record.value.unwrap_or_default())
                        .map_err(corrupt)?;
                replayed.records += 1;
                match change {
                    Change::SnapshotStart => snapshot = Some(State::default()),
                    Change::SnapshotEnd => {
                        if let Some(complete) = snapshot.take() {
                            state = complete;
                            replayed.snapshots += 1;
                        }
                    }
                    // Every change goes to the running state too: a snapshot never finished
                    // (its writer failed or crashed) must not swallow the changes after it.
                    change => {
                        if let Some(snapshot) = &mut snapshot {
                            apply(snapshot, change.clone());
                        }
                        apply(&mut state, change);
                    }
                }
            }
        }
    }
    replayed.offsets = state.offsets.len();
    Ok((state, replayed))
}

fn apply(state: &mut State, change: Change) {
    match change {
        Change::Offset(key, Some(offset)) => {
            state.offsets.insert(key, offset);
        }
        Change::Offset(key, None) => {
            state.offsets.remove(&key);
        }
        Change::ProducerIds(reserved) => {
            state.producer_ids_reserved = state.producer_ids_reserved.max(reserved);
        }
        Change::SnapshotStart | Change::SnapshotEnd => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail on error")]

    use super::*;
    use crate::metrics::Metrics;

    fn open(path: &std::path::Path) -> (GroupStore, Replayed, DataDir) {
        let dir = DataDir::lock(path).unwrap();
        let (store, replayed) = GroupStore::open(
            &dir,
            STATE_CAPACITY_MIN,
            false,
            SyncPolicy::None,
            std::time::Duration::from_secs(5),
            Metrics::new().sync_histogram(),
        )
        .unwrap();
        (store, replayed, dir)
    }

    fn at(partition: u32, offset: u64) -> PartitionOffset {
        PartitionOffset { partition, offset }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn changes_after_an_unfinished_snapshot_survive_a_reopen() {
        let temp = tempfile::tempdir().unwrap();
        {
            let (store, _, _dir) = open(temp.path());
            store.commit("g", "t", &[at(0, 5)]).await.unwrap();
            // A snapshot whose writer failed after its start marker: no end marker follows.
            {
                let mut inner = store.inner.lock().await;
                let start = (vec![KIND_SNAPSHOT_START], 1_u64.to_le_bytes().to_vec());
                store.append(&mut inner, &[start]).await.unwrap();
            }
            store.commit("g", "t", &[at(0, 9), at(1, 3)]).await.unwrap();
            store.commit("h", "t", &[at(0, 1)]).await.unwrap();
            tokio::task::block_in_place(|| store.close_blocking()).unwrap();
        }
        let (store, _, _dir) = open(temp.path());
        assert_eq!(store.committed("g", "t").await, [at(0, 9), at(1, 3)]);
        assert_eq!(store.committed("h", "t").await, [at(0, 1)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_forgotten_topic_stays_forgotten_after_a_reopen() {
        let temp = tempfile::tempdir().unwrap();
        {
            let (store, _, _dir) = open(temp.path());
            store.commit("g", "gone", &[at(0, 5), at(1, 6)]).await.unwrap();
            store.commit("g", "kept", &[at(0, 7)]).await.unwrap();
            store.commit("h", "gone", &[at(0, 8)]).await.unwrap();
            assert_eq!(store.forget_topic("gone").await.unwrap(), 3);
            assert_eq!(store.forget_topic("gone").await.unwrap(), 0);
            tokio::task::block_in_place(|| store.close_blocking()).unwrap();
        }
        let (store, _, _dir) = open(temp.path());
        let all: Vec<(String, u64)> =
            store.all_committed().await.into_iter().map(|(key, at)| (key.topic, at)).collect();
        assert_eq!(all, [("kept".to_owned(), 7)]);
    }
}
