//! A partition: its log, its single writer behind an async lock, group commit, and the wake-ups
//! long-polling fetches wait on.
//!
//! Appends are made by the connection that received the batch, straight from its read buffer:
//! the writer lives behind a `tokio::sync::Mutex`, so exactly one task holds `&mut LogWriter` at a
//! time (DESIGN.md invariant 2) and batches are appended in the order they get the lock. Doing
//! the copy in the receiving task, rather than handing the batch to a writer task, saves a task
//! switch and a buffer hand-off per batch and keeps the read buffer's lifetime trivial.
//!
//! Syncs are grouped: a produce that needs `synced` registers the position it must reach and one
//! sync runs at a time on the blocking pool; each sync covers everything published when it
//! starts, so every batch appended meanwhile shares the next one.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::futures::Notified;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use ringmq_protocol::BatchView;

use crate::log::{Appended, Log, LogWriter, Poison, StorageError};
use crate::metrics::TopicCounters;
use crate::producers::{Check, ProducerTable, SequenceError};

/// When the broker syncs partitions to disk on its own, beyond what `acks=synced` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Only when a producer asks (`acks=synced`), and at shutdown.
    None,
    /// Every partition with unsynced data, every interval.
    Interval(Duration),
    /// Every produce is acknowledged only after the sync that covers it (as if `acks=synced`).
    Always,
}

/// Longest interval of [`SyncPolicy::Interval`], ms.
const SYNC_INTERVAL_MAX_MS: u64 = 3_600_000;

/// Text that is not a sync policy (`none`, `always`, `interval=<ms>`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{text:?} is not a sync policy: expected none, always or interval=<ms> (1 to 3600000)")]
pub struct InvalidSyncPolicy {
    /// The text given.
    pub text: String,
}

impl FromStr for SyncPolicy {
    type Err = InvalidSyncPolicy;

    fn from_str(text: &str) -> Result<Self, InvalidSyncPolicy> {
        match text {
            "none" => Ok(Self::None),
            "always" => Ok(Self::Always),
            _ => {
                let millis = text
                    .strip_prefix("interval=")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| (1..=SYNC_INTERVAL_MAX_MS).contains(ms))
                    .ok_or_else(|| InvalidSyncPolicy { text: text.to_owned() })?;
                Ok(Self::Interval(Duration::from_millis(millis)))
            }
        }
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Always => f.write_str("always"),
            Self::Interval(interval) => write!(f, "interval={}", interval.as_millis()),
        }
    }
}

/// How long an append waits between attempts to reclaim a chunk readers still lease.
const CHUNK_BUSY_RETRY: Duration = Duration::from_millis(1);

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    topic: Arc<str>,
    index: u32,
    log: Log,
    writer: Mutex<Option<Writer>>,
    appended: Notify,
    sync: GroupSync,
    counters: TopicCounters,
    sync_duration: prometheus::Histogram,
}

/// What the writer lock guards: the log's writer and the idempotence state that must change with
/// it.
#[derive(Debug)]
struct Writer {
    log: LogWriter,
    producers: ProducerTable,
}

/// A batch stored by [`Partition::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Where it is.
    pub appended: Appended,
    /// Whether it was a producer's retry of a batch already written (nothing was written now).
    pub duplicate: bool,
}

#[derive(Debug)]
struct GroupSync {
    /// Highest position a waiter needs synced.
    requested: AtomicU64,
    /// Position below which everything is synced.
    synced: AtomicU64,
    /// Whether a sync task is running.
    running: AtomicBool,
    done: Notify,
    failure: OnceLock<Poison>,
}

/// Why an append failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The log refused or failed the write.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The oldest chunk stayed leased past the deadline.
    #[error("the oldest chunk is still being read by {readers} reader(s); try again")]
    Busy {
        /// Leases still held.
        readers: u64,
    },
    /// The partition is closed (its topic was deleted, or the broker is stopping).
    #[error("partition is closed")]
    Closed,
    /// An idempotent producer's batch is out of sequence or from a fenced epoch.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
}

impl Partition {
    /// A partition serving `log`, appended to through `writer`, with the idempotence state
    /// `producers` (see [`ProducerTable::rebuild`]); counts into its topic's `counters` and
    /// records syncs in `sync_duration`.
    pub fn new(
        topic: Arc<str>,
        index: u32,
        log: Log,
        writer: LogWriter,
        producers: ProducerTable,
        counters: TopicCounters,
        sync_duration: prometheus::Histogram,
    ) -> Arc<Self> {
        let synced = log.synced_position();
        Arc::new(Self {
            topic,
            index,
            log,
            writer: Mutex::new(Some(Writer { log: writer, producers })),
            appended: Notify::new(),
            sync: GroupSync {
                requested: AtomicU64::new(synced),
                synced: AtomicU64::new(synced),
                running: AtomicBool::new(false),
                done: Notify::new(),
                failure: OnceLock::new(),
            },
            counters,
            sync_duration,
        })
    }

    /// The topic's counters.
    pub fn counters(&self) -> &TopicCounters {
        &self.counters
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The log, for reads and offsets.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Appends a validated batch, unless it is an idempotent producer's retry of a batch already
    /// written (see [`crate::producers`]). Waits for the writer lock, and while readers still
    /// lease the chunk that must be reclaimed, retries until `deadline`.
    ///
    /// # Errors
    ///
    /// [`AppendError`]: storage failure, a chunk leased past the deadline, a closed partition, or
    /// a batch out of its producer's sequence.
    pub async fn append(
        &self,
        batch: &BatchView<'_>,
        deadline: Instant,
    ) -> Result<Stored, AppendError> {
        let mut guard = self.writer.lock().await;
        let writer = guard.as_mut().ok_or(AppendError::Closed)?;
        let header = batch.header();
        if let Check::Duplicate { base_offset, end_position } = writer.producers.check(header)? {
            let next_offset = base_offset + u64::from(batch.record_count());
            let appended = Appended { base_offset, next_offset, end_position };
            return Ok(Stored { appended, duplicate: true });
        }
        let mut waiting_since = None;
        loop {
            match writer.log.append(batch) {
                Ok(appended) => {
                    writer.producers.record(header, appended.base_offset, appended.end_position);
                    drop(guard);
                    self.appended.notify_waiters();
                    if let Some(since) = waiting_since {
                        let waited = Instant::now().duration_since(since);
                        let waited = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
                        tracing::warn!(topic = %self.topic, partition = self.index, waited_ms = waited, "append waited for readers to release the oldest chunk");
                    }
                    return Ok(Stored { appended, duplicate: false });
                }
                Err(StorageError::ChunkBusy { readers }) => {
                    let now = Instant::now();
                    waiting_since.get_or_insert(now);
                    if now >= deadline {
                        tracing::warn!(topic = %self.topic, partition = self.index, readers, "append gave up: the oldest chunk stayed leased");
                        return Err(AppendError::Busy { readers });
                    }
                    tokio::time::sleep(CHUNK_BUSY_RETRY).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// A future that completes after the next append (register it before checking the offset).
    pub fn appended(&self) -> Notified<'_> {
        self.appended.notified()
    }

    /// Asks for everything below `position` to be synced; [`Partition::synced_position`] reaches
    /// it when done, and [`Partition::sync_done`] fires after every sync.
    pub fn request_sync(self: &Arc<Self>, position: u64) {
        // SeqCst on `requested` and `running` (here and in `sync_loop`): the requester's "publish the
        // request, then try to become the runner" and the runner's "stop running, then look for
        // requests" must not both miss each other, which weaker orderings allow.
        self.sync.requested.fetch_max(position, Ordering::SeqCst);
        if self.synced_position() >= position || self.sync.failure.get().is_some() {
            return;
        }
        if self.sync.running.swap(true, Ordering::SeqCst) {
            return; // The running sync task will see the new request.
        }
        let partition = Arc::clone(self);
        tokio::task::spawn_blocking(move || partition.sync_loop());
    }

    /// Runs syncs while anyone waits for one. Only one runs at a time (`running`).
    fn sync_loop(&self) {
        loop {
            let started = std::time::Instant::now();
            let synced = self.log.sync();
            self.sync_duration.observe(started.elapsed().as_secs_f64());
            match synced {
                Ok(synced) => {
                    self.sync.synced.fetch_max(synced.position, Ordering::AcqRel);
                }
                Err(poison) => {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %poison, "sync failed; partition stopped");
                    let _ = self.sync.failure.set(poison);
                }
            }
            self.sync.done.notify_waiters();
            self.sync.running.store(false, Ordering::SeqCst);
            let wanted = self.sync.requested.load(Ordering::SeqCst);
            let more = wanted > self.synced_position() && self.sync.failure.get().is_none();
            if !more || self.sync.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Position below which everything is synced.
    pub fn synced_position(&self) -> u64 {
        self.sync.synced.load(Ordering::Acquire)
    }

    /// Why syncing failed, if it did (the partition then refuses writes).
    pub fn sync_failure(&self) -> Option<&Poison> {
        self.sync.failure.get()
    }

    /// A future that completes after the next sync (register it before checking the position).
    pub fn sync_done(&self) -> Notified<'_> {
        self.sync.done.notified()
    }

    /// Stops accepting appends, syncs, and writes the clean-shutdown checkpoint. Blocks.
    ///
    /// # Errors
    ///
    /// The sync's or checkpoint's error.
    pub fn close_blocking(&self) -> Result<(), StorageError> {
        let writer = self.writer.blocking_lock().take();
        match writer {
            Some(writer) => writer.log.close(),
            None => Ok(()),
        }
    }

    /// Stops accepting appends without a checkpoint (the topic is being deleted).
    pub async fn retire(&self) {
        self.writer.lock().await.take();
        self.appended.notify_waiters();
    }
}
