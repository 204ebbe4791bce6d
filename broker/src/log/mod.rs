//! The partition log: one preallocated, memory-mapped ring file per partition.
//!
//! ```text
//! file:  [ superblock A | superblock B | data area: chunk 0 | chunk 1 | ... | chunk N-1 ]
//!          4 KiB          4 KiB         capacity bytes, N = capacity / chunk_size
//! ```
//!
//! Batches are appended one after another in the data area; a batch never straddles a chunk, so
//! when it does not fit in what is left of a chunk a padding entry fills the rest and the writer
//! moves to the next chunk. When the ring is full the oldest chunk is reclaimed: retention is by
//! size, and a read below the earliest offset still held gets [`ReadError::OffsetOutOfRange`].
//!
//! This module keeps DESIGN.md's ring-log invariants; each is named in a test:
//!
//! 1. Offsets are dense and increase by one per record, across wraps and restarts
//!    (`model_test_against_vecdeque`, `restart_keeps_offsets_dense`).
//! 2. A single writer ([`LogWriter`], not `Clone`) owns the append position; readers never see a
//!    batch before it is written and published (`raw::WriteCursor`, loom model in `raw`).
//! 3. The writer never reclaims a chunk while a read lease is held (`raw::chunks`, loom, and
//!    `lease_blocks_the_writer_until_released`).
//! 4. Recovery finds the true end after any crash ([`recovery`], the crash-image tests).
//! 5. Durability is explicit: [`LogWriter::append`] returns once the batch is in the shared
//!    mapping (it survives `kill -9`); [`Log::sync`] is the `msync` that makes everything
//!    written so far survive an OS crash, shared by every batch it covers.
//! 6. The mapping is touched only through `raw` (no slice over the whole mapping once shared).
//! 7. Files are allocated for real (`fallocate`) before mapping, pre-faulted, and the data
//!    directory is locked ([`DataDir`]).
//! 8. Every size is bounded and checked: [`LogConfig::new`].
//! 9. A log that publishes on commit ([`LogConfig::with_publish_on_commit`], a replicated
//!    partition's) shows readers committed batches only: an append is written (and synced by
//!    [`Log::sync`]) but published by [`LogWriter::commit`]; [`LogWriter::truncate`] removes an
//!    uncommitted tail, never a committed batch, and durably: the removed bytes are zeroed and
//!    synced before it returns, so no recovery brings them back and no later batch links to them
//!    (`commits_and_truncations_of_the_uncommitted_tail_survive_restarts`,
//!    `a_truncation_at_a_chunk_start_is_not_undone_by_a_restart`; `raw`'s tail leases and rewind,
//!    with their loom models). The ring never reclaims an uncommitted batch
//!    ([`StorageError::Uncommitted`]).

mod entry;
mod index;
#[allow(unsafe_code, reason = "audited core; see raw/mod.rs")]
mod raw;
mod reader;
pub mod recovery;
mod superblock;
mod time_index;
mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use thiserror::Error;

use ringmq_protocol::limits::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX};

use self::index::OffsetIndex;
use self::raw::{DirLock, Exclusive, Layout, LocalPage, RingCore, RingFile};
pub use self::raw::{LayoutError, LocalFiles, RingFileError};
pub use self::reader::{LocalStart, LogBytes, ReadError, ReadOutcome, Scan, TimedOffset};
use self::recovery::{RecoveryMode, Truncation};
pub use self::superblock::REPLICATION_STATE_MAX;
use self::superblock::{
    Checkpoint, Superblock, DATA_START, DATA_START_BYTES, INCARNATION_AT, RECORD_SIZE, STATE_AT,
    SUPERBLOCK_COPIES, SUPERBLOCK_SIZE,
};
use self::time_index::TimeIndex;
pub use self::writer::{Appended, LogWriter};

/// Smallest chunk: one page.
pub const CHUNK_SIZE_MIN: u64 = 4096;
/// Fewest chunks in a ring: reclaiming one drops at most a quarter of the data.
pub const CHUNK_COUNT_MIN: u64 = 4;
/// Most chunks in a ring (bounds the lease table).
pub const CHUNK_COUNT_MAX: u64 = raw::CHUNK_COUNT_MAX;
/// Largest ring, per partition.
pub const CAPACITY_MAX: u64 = 1 << 40;
/// Smallest ring: [`CHUNK_COUNT_MIN`] chunks of [`CHUNK_SIZE_MIN`].
pub const CAPACITY_MIN: u64 = CHUNK_SIZE_MIN * CHUNK_COUNT_MIN;
/// Smallest batch limit a log accepts (a batch of one small record).
const BATCH_SIZE_MIN: u32 = 128;
const _: () = assert!(BATCH_SIZE_MIN as usize >= ringmq_protocol::limits::BATCH_SIZE_MIN);

/// Chunk count aimed at when the chunk size is chosen automatically.
pub const CHUNK_COUNT_DEFAULT: u64 = 64;

/// A partition's ring geometry and limits, checked by [`LogConfig::new`] (its fields are private,
/// so every one in use passed the checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    capacity: u64,
    chunk_size: u64,
    batch_size_max: u32,
    prefault: bool,
    sync_method: SyncMethod,
    local_readers: bool,
    publish_on_commit: bool,
}

/// How a sync makes a range of the ring durable. Each waits until the bytes are on the device
/// and its write cache is flushed; they differ in what they write and how many calls it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMethod {
    /// `msync(MS_SYNC)` of the range: writes the range's dirty pages and flushes the device
    /// (on Linux, a range-bounded `fdatasync`). One call per contiguous range.
    #[default]
    Msync,
    /// `fdatasync` of the ring file: writes every dirty page of the file, including pages
    /// appended after the sync began.
    Fdatasync,
    /// `sync_file_range` of the range (write it and wait), then `fdatasync` for the device's
    /// cache and the metadata: what databases that manage their own files do.
    RangeFdatasync,
}

/// A sync method the broker does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sync method {text:?} (expected msync, fdatasync or range+fdatasync)")]
pub struct InvalidSyncMethod {
    text: String,
}

impl std::str::FromStr for SyncMethod {
    type Err = InvalidSyncMethod;

    fn from_str(text: &str) -> Result<Self, InvalidSyncMethod> {
        match text {
            "msync" => Ok(Self::Msync),
            "fdatasync" => Ok(Self::Fdatasync),
            "range+fdatasync" => Ok(Self::RangeFdatasync),
            _ => Err(InvalidSyncMethod { text: text.to_owned() }),
        }
    }
}

impl fmt::Display for SyncMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Msync => "msync",
            Self::Fdatasync => "fdatasync",
            Self::RangeFdatasync => "range+fdatasync",
        })
    }
}

impl LogConfig {
    /// Bytes in the data area (retention by size).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes per chunk (the unit of reclamation).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Largest batch accepted: at most the chunk size and [`BATCH_SIZE_MAX`].
    pub fn batch_size_max(&self) -> u32 {
        self.batch_size_max
    }

    /// Whether the mapping is pre-faulted when it is created and opened (invariant 7).
    pub fn prefault(&self) -> bool {
        self.prefault
    }

    /// The same geometry, pre-faulted or not.
    #[must_use]
    pub fn with_prefault(self, prefault: bool) -> Self {
        Self { prefault, ..self }
    }

    /// How [`Log::sync`] makes the published bytes durable.
    pub fn sync_method(&self) -> SyncMethod {
        self.sync_method
    }

    /// The same geometry, synced with `sync_method`.
    #[must_use]
    pub fn with_sync_method(self, sync_method: SyncMethod) -> Self {
        Self { sync_method, ..self }
    }

    /// Whether the log keeps a cursor page for same-host readers ([`Log::local_files`]).
    pub fn local_readers(&self) -> bool {
        self.local_readers
    }

    /// The same geometry, with or without a cursor page for same-host readers.
    #[must_use]
    pub fn with_local_readers(self, local_readers: bool) -> Self {
        Self { local_readers, ..self }
    }

    /// Whether readers see a batch only once it is committed ([`LogWriter::commit`]), as a
    /// replicated partition's log does, rather than as soon as it is appended.
    pub fn publish_on_commit(&self) -> bool {
        self.publish_on_commit
    }

    /// The same geometry, publishing on commit or on append. A log that publishes on commit
    /// opens with nothing published: its owner commits what its replication protocol says is
    /// committed, and may truncate the rest ([`LogWriter::truncate`]).
    #[must_use]
    pub fn with_publish_on_commit(self, publish_on_commit: bool) -> Self {
        Self { publish_on_commit, ..self }
    }

    /// Checks and completes a ring geometry. Without `chunk_size` one is chosen: about
    /// [`CHUNK_COUNT_DEFAULT`] chunks, at least 64 KiB and at least `batch_size_max` where the
    /// capacity allows. The capacity is rounded down to a whole number of chunks.
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidConfig`] naming the value and what is accepted.
    pub fn new(
        capacity: u64,
        chunk_size: Option<u64>,
        batch_size_max: u32,
    ) -> Result<Self, StorageError> {
        let invalid = |field: &'static str, value: u64, reason: String| {
            StorageError::InvalidConfig { field, value, reason }
        };
        if capacity > CAPACITY_MAX {
            return Err(invalid(
                "capacity",
                capacity,
                format!("at most {CAPACITY_MAX} bytes (1 TiB)"),
            ));
        }
        if capacity < CAPACITY_MIN {
            return Err(invalid(
                "capacity",
                capacity,
                format!(
                    "at least {CAPACITY_MIN} bytes ({CHUNK_COUNT_MIN} chunks of {CHUNK_SIZE_MIN})"
                ),
            ));
        }
        let chunk_size = match chunk_size {
            Some(size) => {
                if size < CHUNK_SIZE_MIN || size % CHUNK_SIZE_MIN != 0 {
                    return Err(invalid(
                        "chunk_size",
                        size,
                        format!("a multiple of {CHUNK_SIZE_MIN} bytes"),
                    ));
                }
                size
            }
            None => {
                let by_count = capacity / CHUNK_COUNT_DEFAULT;
                let wanted = by_count.max(u64::from(batch_size_max)).max(64 << 10);
                let fitting = wanted.min(capacity / CHUNK_COUNT_MIN);
                (fitting / CHUNK_SIZE_MIN * CHUNK_SIZE_MIN).max(CHUNK_SIZE_MIN)
            }
        };
        let count = capacity / chunk_size;
        if !(CHUNK_COUNT_MIN..=CHUNK_COUNT_MAX).contains(&count) {
            return Err(invalid(
                "chunk_size",
                chunk_size,
                format!("capacity / chunk_size must be {CHUNK_COUNT_MIN} to {CHUNK_COUNT_MAX} chunks, not {count}"),
            ));
        }
        if !(BATCH_SIZE_MIN..=BATCH_SIZE_MAX).contains(&batch_size_max) {
            return Err(invalid(
                "batch_size_max",
                u64::from(batch_size_max),
                format!("128 to {BATCH_SIZE_MAX} bytes"),
            ));
        }
        // Any batch fits an empty chunk with its framing (its entry, the close entry and end
        // marker).
        let room = chunk_size - entry::CHUNK_FRAMING_SIZE as u64;
        let batch_size_max = batch_size_max.min(u32::try_from(room).unwrap_or(u32::MAX));
        Ok(Self {
            capacity: count * chunk_size,
            chunk_size,
            batch_size_max,
            prefault: true,
            sync_method: SyncMethod::Msync,
            local_readers: false,
            publish_on_commit: false,
        })
    }

    /// Bytes a ring file of this geometry takes on disk: the superblocks and the ring.
    pub fn file_size(&self) -> u64 {
        DATA_START + self.capacity
    }

    fn layout(&self) -> Result<Layout, StorageError> {
        Layout::new(DATA_START, self.capacity, self.chunk_size).map_err(StorageError::Layout)
    }
}

/// A storage failure. Every variant names the file and the problem.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{path}: could not {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("create", "allocate 1073741824 bytes", ...).
        action: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A ring file could not be made, or is not fit to be mapped.
    #[error("{path}: {source}")]
    RingFile {
        /// The ring file.
        path: PathBuf,
        /// What is wrong.
        source: RingFileError,
    },
    /// A ring geometry is inconsistent.
    #[error("invalid ring geometry: {0}")]
    Layout(#[source] LayoutError),
    /// A ring's creation was given up because the broker is stopping; its file is removed.
    #[error("{path}: creation cancelled: the broker is stopping")]
    Cancelled {
        /// The ring file.
        path: PathBuf,
    },
    /// Another broker holds the data directory.
    #[error("data directory {path} is in use by another running broker")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The superblock is damaged or from another format.
    #[error("{path}: {problem}")]
    Superblock {
        /// The ring file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The file disagrees with the topic's settings.
    #[error("{path}: file has {field} {found}, but the topic says {expected}")]
    Mismatch {
        /// The ring file.
        path: PathBuf,
        /// The setting.
        field: &'static str,
        /// The file's value.
        found: u64,
        /// The topic's value.
        expected: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid {field} {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: u64,
        /// What is accepted.
        reason: String,
    },
    /// An earlier failed write or sync stopped this log; restart to recover.
    #[error("partition log stopped after an i/o failure: {0}")]
    Poisoned(#[from] Poison),
    /// A batch is larger than the partition accepts.
    #[error("batch of {size} bytes is larger than this partition's limit of {max}")]
    BatchTooLarge {
        /// The batch size.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// The next chunk is still leased by readers; the append can be retried shortly.
    #[error("the oldest chunk is still being read by {readers} reader(s)")]
    ChunkBusy {
        /// Leases still held.
        readers: u64,
    },
    /// A truncation is waiting for readers of the truncated range to finish: retry it (nothing
    /// else may be written until it is done).
    #[error("truncation of the uncommitted tail waits for {readers} reader(s); retry")]
    TruncationBusy {
        /// Leases still held.
        readers: u64,
    },
    /// The ring has no room left that is not committed: the oldest chunk it would reclaim holds
    /// uncommitted batches.
    #[error("the ring is full of uncommitted batches ({uncommitted} bytes); commit before appending more")]
    Uncommitted {
        /// Bytes written and not committed.
        uncommitted: u64,
    },
    /// The ring is full and its oldest chunk holds records its owner keeps
    /// ([`LogWriter::retain_from`]): a replicated partition's entries its consensus still holds.
    #[error("the ring is full of records kept from offset {retained} on (reclaiming the oldest chunk would drop them up to offset {reclaim_to})")]
    Retained {
        /// The first offset kept.
        retained: u64,
        /// The earliest offset the reclaim would leave.
        reclaim_to: u64,
    },
    /// A replication state larger than a ring keeps.
    #[error("replication state of {size} bytes is larger than the {max} a ring keeps")]
    ReplicationStateTooLarge {
        /// Its size.
        size: usize,
        /// [`REPLICATION_STATE_MAX`].
        max: usize,
    },
    /// A commit or truncation named an offset that is not a batch boundary of the uncommitted
    /// tail.
    #[error("offset {offset} is not a batch boundary between the committed offset {committed} and the next offset {next}")]
    NotABoundary {
        /// The offset asked for.
        offset: u64,
        /// Offset after the last committed record.
        committed: u64,
        /// Offset after the last written record.
        next: u64,
    },
}

/// The I/O failure that stopped a log: after a failed `msync` or superblock write the page
/// cache's state cannot be trusted, so the log refuses writes until the broker restarts.
#[derive(Debug, Clone, Error)]
#[error("{step} of {path} failed: {source}")]
pub struct Poison {
    /// The ring file.
    pub path: PathBuf,
    /// What failed.
    pub step: FailedStep,
    /// The operating system's error (shared: every later request reports the same one).
    #[source]
    pub source: std::sync::Arc<io::Error>,
}

/// The step of a log whose failure poisons it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStep {
    /// An `msync` of the data area.
    Sync,
    /// A write and sync of a superblock copy.
    SuperblockWrite,
}

impl std::fmt::Display for FailedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailedStep::Sync => "msync",
            FailedStep::SuperblockWrite => "superblock write",
        })
    }
}

/// What a sync made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Every record below this offset is on disk.
    pub offset: u64,
    /// Every byte below this position is on disk.
    pub position: u64,
}

/// What opening a log found.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    /// The ring file.
    pub path: PathBuf,
    /// How the log was found.
    pub mode: RecoveryMode,
    /// Earliest offset held.
    pub earliest_offset: u64,
    /// Offset the next record gets.
    pub next_offset: u64,
    /// Where a torn or invalid tail was cut, if anywhere.
    pub truncated: Option<Truncation>,
    /// Chunks set aside as not part of the log.
    pub discarded_chunks: u64,
    /// Why a clean-shutdown checkpoint was not trusted.
    pub checkpoint_rejected: Option<String>,
    /// A damaged superblock copy that was passed over.
    pub superblock_repaired: Option<String>,
}

/// A locked data directory. Ring files are only opened through it.
#[derive(Debug)]
pub struct DataDir {
    lock: DirLock,
    path: PathBuf,
}

impl DataDir {
    /// Locks `path` (creating it), or fails if another broker has it.
    ///
    /// # Errors
    ///
    /// [`StorageError::Locked`] if another process holds the lock; [`StorageError::Io`] otherwise.
    pub fn lock(path: &Path) -> Result<Self, StorageError> {
        match DirLock::acquire(path) {
            Ok(lock) => Ok(Self { lock, path: path.to_owned() }),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                Err(StorageError::Locked { path: path.join(".lock") })
            }
            Err(source) => {
                Err(StorageError::Io { path: path.to_owned(), action: "lock".into(), source })
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }
}

/// The shared, read side of a partition log; clone it freely.
#[derive(Debug, Clone)]
pub struct Log {
    shared: std::sync::Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    core: crate::sync::Arc<RingCore>,
    index: OffsetIndex,
    time_index: TimeIndex,
    path: PathBuf,
    batch_size_max: u32,
    sync_method: SyncMethod,
    /// Readers see batches once committed, not once appended ([`LogConfig::publish_on_commit`]).
    publish_on_commit: bool,
    head_position: AtomicU64,
    head_offset: AtomicU64,
    /// Offset after the last published (committed) record: what readers may read up to.
    next_offset: AtomicU64,
    /// Offset after the last written record (the next offset, committed or not).
    written_offset: AtomicU64,
    synced_position: AtomicU64,
    durable_offset: AtomicU64,
    poison: OnceLock<Poison>,
    /// Serialises syncs and superblock writes.
    sync_lock: Mutex<SuperblockState>,
    /// The replication state last saved, and its sequence (0: none yet).
    replication: Mutex<(u64, Option<Vec<u8>>)>,
}

/// The superblock fields that change while the log runs.
#[derive(Debug, Clone, Copy)]
struct SuperblockState {
    sequence: u64,
    term: u32,
    /// The durable offset stored on disk.
    stored_durable_offset: u64,
}

/// How to open a ring file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create a new file; fail if it exists.
    Create,
    /// Open an existing file and recover it.
    Existing,
}

/// Opens or creates the ring file at `path`, recovering it if it exists.
///
/// # Errors
///
/// A [`StorageError`] naming the file and the problem. Creating a file that cannot be
/// preallocated removes it again, so no half-made file is left behind.
pub fn open(
    dir: &DataDir,
    path: &Path,
    config: &LogConfig,
    mode: OpenMode,
) -> Result<(Log, LogWriter, RecoveryReport), StorageError> {
    static NEVER: AtomicBool = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    open_unless(dir, path, config, mode, &NEVER, &written)
}

/// Creates the ring file at `path` as [`open`] with [`OpenMode::Create`] does, giving up as soon
/// as `cancel` is set: the file is pre-faulted and written out in steps of
/// [`PREFAULT_STEP_SIZE`], with `cancel` looked at before each, so a large ring stops within
/// one step of a clean shutdown. The bytes written out so far are added to `written` as they go
/// (progress for whoever waits on the creation).
///
/// # Errors
///
/// [`StorageError::Cancelled`] once `cancel` is set (the file is removed), or the errors of
/// [`open`].
pub fn create(
    dir: &DataDir,
    path: &Path,
    config: &LogConfig,
    cancel: &AtomicBool,
    written: &AtomicU64,
) -> Result<(Log, LogWriter), StorageError> {
    open_unless(dir, path, config, OpenMode::Create, cancel, written)
        .map(|(log, writer, _)| (log, writer))
}

/// Bytes of a new ring pre-faulted and written out between two looks at the cancel flag: small
/// enough that a stop waits a fraction of a second, and that the dirty page cache a creation
/// leaves stays bounded; large enough that the calls cost nothing next to the writing.
pub const PREFAULT_STEP_SIZE: u64 = 64 << 20;

fn open_unless(
    dir: &DataDir,
    path: &Path,
    config: &LogConfig,
    mode: OpenMode,
    cancel: &AtomicBool,
    written: &AtomicU64,
) -> Result<(Log, LogWriter, RecoveryReport), StorageError> {
    let layout = config.layout()?;
    let io_error = |action: &str| {
        let path = path.to_owned();
        let action = action.to_owned();
        move |source| StorageError::Io { path, action, source }
    };
    let file_error = |source| StorageError::RingFile { path: path.to_owned(), source };
    let created = mode == OpenMode::Create;
    let file = if created {
        RingFile::create(path, &layout).map_err(file_error)?
    } else {
        let file = RingFile::open(path).map_err(file_error)?;
        check_existing(&file, &layout)?;
        file
    };
    // A new file is pre-faulted for writing below; populating it for reading first would zero
    // every page twice.
    let prepared = Exclusive::map(&file, layout, &dir.lock, config.prefault && !created)
        .map_err(file_error)
        .and_then(|mut exclusive| {
            // Before anything else is written: same-host readers still on the page of a broker
            // that died learn from this that their page no longer describes the ring.
            exclusive.begin_incarnation(INCARNATION_AT);
            if created {
                prepare(&exclusive, config.prefault, cancel, written, path)?;
                format(&mut exclusive);
                exclusive
                    .flush_all()
                    .and_then(|()| file.sync_all())
                    .map_err(io_error("sync the new file"))?;
            }
            Ok(exclusive)
        });
    let exclusive = match prepared {
        Ok(exclusive) => exclusive,
        Err(error) => {
            if created {
                let _ = std::fs::remove_file(path);
            }
            return Err(error);
        }
    };
    start(exclusive, path, config)
}

/// Recovers a ring file image held in memory, as [`open`] would recover the file. For tests that
/// build crash images; nothing is written anywhere but the heap copy.
///
/// # Errors
///
/// As [`open`].
#[doc(hidden)]
pub fn open_image(
    image: &[u8],
    config: &LogConfig,
) -> Result<(Log, LogWriter, RecoveryReport), StorageError> {
    let layout = config.layout()?;
    let mut exclusive = Exclusive::heap(layout);
    let size = exclusive.file().len();
    if image.len() != size {
        return Err(StorageError::Mismatch {
            path: "<image>".into(),
            field: "file size",
            found: image.len() as u64,
            expected: size as u64,
        });
    }
    exclusive.file_mut().copy_from_slice(image);
    start(exclusive, Path::new("<image>"), config)
}

/// A new, empty log in heap memory (for tests and benchmarks of the log alone).
///
/// # Errors
///
/// [`StorageError::InvalidConfig`] for a bad geometry.
#[doc(hidden)]
pub fn open_in_memory(
    config: &LogConfig,
) -> Result<(Log, LogWriter, RecoveryReport), StorageError> {
    let mut exclusive = Exclusive::heap(config.layout()?);
    format(&mut exclusive);
    start(exclusive, Path::new("<memory>"), config)
}

/// Pre-faults a new ring (with `prefault`) and writes it out, a step at a time, so that no more
/// than one step is dirty in the page cache at once and `cancel` is honoured between steps.
fn prepare(
    exclusive: &Exclusive,
    prefault: bool,
    cancel: &AtomicBool,
    written: &AtomicU64,
    path: &Path,
) -> Result<(), StorageError> {
    let cancelled = || StorageError::Cancelled { path: path.to_owned() };
    let io_error = |action: &'static str| {
        move |source| StorageError::Io { path: path.to_owned(), action: action.to_owned(), source }
    };
    if cancel.load(Ordering::Acquire) {
        return Err(cancelled());
    }
    if !prefault {
        written.fetch_add(exclusive.layout().file_size(), Ordering::Relaxed);
        return Ok(());
    }
    let size = usize::try_from(exclusive.layout().file_size()).expect("a mapped file fits usize");
    let step = usize::try_from(PREFAULT_STEP_SIZE).expect("64 MiB fits usize");
    let mut at = 0;
    while at < size {
        if cancel.load(Ordering::Acquire) {
            return Err(cancelled());
        }
        let length = step.min(size - at);
        exclusive.advise_populate_write(at, length).map_err(io_error("pre-fault the mapping"))?;
        exclusive.flush(at, length).map_err(io_error("write out the new file"))?;
        written.fetch_add(u64::try_from(length).expect("usize fits u64"), Ordering::Relaxed);
        at += length;
    }
    Ok(())
}

/// Writes both superblock copies of an empty ring.
fn format(exclusive: &mut Exclusive) {
    let layout = *exclusive.layout();
    let page = Superblock {
        capacity: layout.capacity(),
        chunk_size: layout.chunk_size(),
        sequence: 1,
        term: 0,
        clean: Some(Checkpoint::default()),
        durable_offset: 0,
    }
    .encode();
    write_both_copies(exclusive, &page);
}

fn write_both_copies(exclusive: &mut Exclusive, record: &[u8; RECORD_SIZE]) {
    for copy in 0..SUPERBLOCK_COPIES {
        let at = copy * SUPERBLOCK_SIZE;
        exclusive.file_mut()[at..at + RECORD_SIZE].copy_from_slice(record);
    }
}

/// Reads the superblock, recovers the log, cleans up after a scan, and shares the ring.
fn start(
    mut exclusive: Exclusive,
    path: &Path,
    config: &LogConfig,
) -> Result<(Log, LogWriter, RecoveryReport), StorageError> {
    let layout = *exclusive.layout();
    let io_error = |action: &str| {
        let path = path.to_owned();
        let action = action.to_owned();
        move |source| StorageError::Io { path, action, source }
    };
    let (superblock, skipped) = Superblock::choose(exclusive.file()).map_err(|problem| {
        StorageError::Superblock { path: path.to_owned(), problem: problem.to_string() }
    })?;
    check_geometry(path, &superblock, &layout)?;
    let replication = superblock::choose_state(exclusive.file())
        .map_or((0, None), |(sequence, state)| (sequence, Some(state)));
    let recovered = recovery::recover(
        &exclusive.file()[layout.data_start_bytes()..],
        &layout,
        &superblock,
        config.batch_size_max,
    );
    // The recovered log's batches: the offset index, each chunk's first offset, and how many
    // entries the tail chunk holds (the writer goes on after them).
    let index = OffsetIndex::new(layout.capacity(), layout.chunk_size());
    let head_position = layout.generation_start(recovered.head_generation);
    let mut index_fill = index.fill_cursor(head_position);
    let mut chunk_first_offset = vec![0u64; layout.slot_count()].into_boxed_slice();
    let time_index = TimeIndex::new(layout.slot_count());
    let mut tail_entries = 0usize;
    recovery::walk(
        &exclusive.file()[layout.data_start_bytes()..],
        &layout,
        head_position,
        recovered.head_offset,
        recovered.tail_position,
        |batch| {
            index.note(&mut index_fill, batch.position, batch.base_offset);
            let generation = layout.generation(batch.position);
            if batch.position % layout.chunk_size() == 0 {
                chunk_first_offset[layout.slot(generation)] = batch.base_offset;
                time_index.start(layout.slot(generation), batch.base_offset);
            }
            time_index.note(layout.slot(generation), batch.max_timestamp);
            if Some(generation) == recovered.tail_generation {
                tail_entries += 1;
            }
        },
    )
    .map_err(|error| StorageError::Superblock {
        path: path.to_owned(),
        problem: format!("recovered log does not walk: {error}"),
    })?;
    if recovered.mode == RecoveryMode::Scanned {
        clean_after_scan(&mut exclusive, &layout, &recovered, tail_entries);
    }
    // Everything recovered is made durable before anything new is accepted.
    exclusive.flush_all().map_err(io_error("sync after recovery"))?;
    let state = SuperblockState {
        sequence: superblock.sequence + 1,
        term: superblock.term,
        stored_durable_offset: recovered.next_offset,
    };
    // From here the file says "not cleanly stopped": a crash from now on gets a full scan.
    let page = Superblock {
        capacity: layout.capacity(),
        chunk_size: layout.chunk_size(),
        sequence: state.sequence,
        term: state.term,
        clean: None,
        durable_offset: recovered.next_offset,
    }
    .encode();
    write_both_copies(&mut exclusive, &page);
    exclusive.flush_all().map_err(io_error("write the superblock"))?;

    let next_generation = recovered.next_generation();
    let written = match recovered.tail_generation {
        Some(_) => recovered.tail_position,
        None => layout.generation_start(next_generation),
    };
    // A log that publishes on commit is owned by a replication protocol, which commits what it
    // knows is committed: until then nothing is published.
    let (published, published_offset) = match config.publish_on_commit {
        true if recovered.tail_generation.is_some() => (head_position, recovered.head_offset),
        _ => (written, recovered.next_offset),
    };
    // A heap ring has no file to hand a same-host reader, so it keeps no page.
    let page = match config.local_readers && !exclusive.is_heap() {
        true => {
            let name = format!("ringmq-cursor:{}", path.display());
            let bytes = layout.page_layout().page_bytes();
            Some(
                LocalPage::create(&name, bytes)
                    .map_err(io_error("create the local readers' cursor page"))?,
            )
        }
        false => None,
    };
    let (core, cursor) =
        exclusive.share_with(published, written, recovered.tail_generation, next_generation, page);
    let shared = std::sync::Arc::new(Shared {
        core,
        index,
        time_index,
        path: path.to_owned(),
        batch_size_max: config.batch_size_max,
        sync_method: config.sync_method,
        publish_on_commit: config.publish_on_commit,
        head_position: AtomicU64::new(head_position),
        head_offset: AtomicU64::new(recovered.head_offset),
        next_offset: AtomicU64::new(published_offset),
        written_offset: AtomicU64::new(recovered.next_offset),
        synced_position: AtomicU64::new(written),
        durable_offset: AtomicU64::new(recovered.next_offset),
        poison: OnceLock::new(),
        sync_lock: Mutex::new(state),
        replication: Mutex::new(replication),
    });
    let report = RecoveryReport {
        path: path.to_owned(),
        mode: recovered.mode,
        earliest_offset: recovered.head_offset,
        next_offset: recovered.next_offset,
        truncated: recovered.truncated.clone(),
        discarded_chunks: recovered.discarded_chunks,
        checkpoint_rejected: recovered.checkpoint_rejected.clone(),
        superblock_repaired: skipped.map(|problem| problem.to_string()),
    };
    let resume = writer::Resume {
        tail: recovered.tail_position,
        next_offset: recovered.next_offset,
        index_fill,
        chunk_first_offset,
        term: state.term,
        entries: tail_entries,
    };
    let writer = LogWriter::new(cursor, std::sync::Arc::clone(&shared), resume);
    Ok((Log { shared }, writer, report))
}

/// Checks an existing ring file's superblock against the topic's layout before mapping it, so a
/// mismatch is reported as what it is rather than as a file of the wrong size.
fn check_existing(file: &RingFile, layout: &Layout) -> Result<(), StorageError> {
    let path = file.path();
    let file_error = |source| StorageError::RingFile { path: path.to_owned(), source };
    let size = file.size().map_err(file_error)?;
    let mut head = [0u8; DATA_START_BYTES];
    let available =
        usize::try_from(size).map_or(DATA_START_BYTES, |size| size.min(DATA_START_BYTES));
    file.read_exact_at(&mut head[..available], 0).map_err(file_error)?;
    let (superblock, _) = Superblock::choose(&head).map_err(|problem| {
        StorageError::Superblock { path: path.to_owned(), problem: problem.to_string() }
    })?;
    check_geometry(path, &superblock, layout)?;
    if size != layout.file_size() {
        return Err(StorageError::Superblock {
            path: path.to_owned(),
            problem: format!(
                "file is {size} bytes but its superblock describes {} bytes (truncated or extended?)",
                layout.file_size()
            ),
        });
    }
    Ok(())
}

/// Checks a superblock describes the topic's ring geometry.
fn check_geometry(
    path: &Path,
    superblock: &Superblock,
    layout: &Layout,
) -> Result<(), StorageError> {
    for (field, found, expected) in [
        ("capacity", superblock.capacity, layout.capacity()),
        ("chunk size", superblock.chunk_size, layout.chunk_size()),
    ] {
        if found != expected {
            return Err(StorageError::Mismatch { path: path.to_owned(), field, found, expected });
        }
    }
    Ok(())
}

/// Zeroes the rest of the tail chunk (between its last batch and its last entry) and blanks the
/// first batch header and first entry of every chunk outside the log, so nothing from before the
/// crash can follow the new tail.
fn clean_after_scan(
    exclusive: &mut Exclusive,
    layout: &Layout,
    recovered: &recovery::Recovered,
    tail_entries: usize,
) {
    let data_start = layout.data_start_bytes();
    let data = &mut exclusive.file_mut()[data_start..];
    let chunk = layout.chunk_bytes();
    if let Some(tail) = recovered.tail_generation {
        let place = layout.data_index(recovered.tail_position);
        let chunk_start = layout.slot_start(layout.slot(tail));
        // The tail may sit exactly at its chunk's end (a chunk left whole).
        let table = entry::entry_place(chunk, tail_entries.saturating_sub(1))
            .filter(|_| tail_entries > 0)
            .unwrap_or(chunk);
        let keep_from = chunk_start + table;
        if place < keep_from && recovered.tail_position < layout.generation_start(tail + 1) {
            data[place..keep_from].fill(0);
        }
    }
    for slot in 0..layout.slot_count() {
        let generation = raw::slot_generation(layout, recovered.next_generation(), slot);
        let retained = match (generation, recovered.tail_generation) {
            (Some(generation), Some(tail)) => {
                generation >= recovered.head_generation && generation <= tail
            }
            _ => false,
        };
        if !retained {
            let start = layout.slot_start(slot);
            data[start..start + BATCH_HEADER_SIZE].fill(0);
            let first_entry = start + chunk - entry::ENTRY_SIZE;
            data[first_entry..start + chunk].fill(0);
        }
    }
}

impl Log {
    /// Earliest offset held.
    pub fn earliest_offset(&self) -> u64 {
        self.shared.head_offset.load(Ordering::Acquire)
    }

    /// Offset after the last record readers may read: the next offset, or on a log that
    /// publishes on commit, the offset after the last committed record (Kafka's high watermark).
    pub fn next_offset(&self) -> u64 {
        self.shared.next_offset.load(Ordering::Acquire)
    }

    /// Whether readers see batches only once committed ([`LogConfig::with_publish_on_commit`]).
    pub fn publishes_on_commit(&self) -> bool {
        self.shared.publish_on_commit
    }

    /// Offset the next record will get: after the last written record, committed or not.
    pub fn written_offset(&self) -> u64 {
        self.shared.written_offset.load(Ordering::Acquire)
    }

    /// Every record below this offset is on disk (synced).
    pub fn durable_offset(&self) -> u64 {
        self.shared.durable_offset.load(Ordering::Acquire)
    }

    /// Bytes of the data area.
    pub fn capacity(&self) -> u64 {
        self.shared.core.layout().capacity()
    }

    /// Bytes per chunk.
    pub fn chunk_size(&self) -> u64 {
        self.shared.core.layout().chunk_size()
    }

    /// Largest batch this log accepts.
    pub fn batch_size_max(&self) -> u32 {
        self.shared.batch_size_max
    }

    /// Bytes between the head and the published end (retained data, padding included).
    pub fn used_bytes(&self) -> u64 {
        let end = self.shared.core.published_end();
        end.saturating_sub(self.shared.head_position.load(Ordering::Acquire))
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn poisoned(&self) -> Option<&Poison> {
        self.shared.poison.get()
    }

    /// Position after the last published batch (bytes of the unrolled ring).
    pub fn published_end(&self) -> u64 {
        self.shared.core.published_end()
    }

    /// Position below which everything is synced.
    pub fn synced_position(&self) -> u64 {
        self.shared.synced_position.load(Ordering::Acquire)
    }

    /// Syncs everything written so far, published or not (by the log's [`SyncMethod`]; by
    /// default `msync(MS_SYNC)` of the range written since the last sync): every record below the
    /// returned
    /// offset, and every byte below the returned position, survives an OS crash. One call covers
    /// every batch published before it started, so concurrent producers share it. Blocks for the
    /// duration of the sync.
    ///
    /// # Errors
    ///
    /// The [`Poison`] if this or an earlier sync failed: the page cache can no longer be
    /// trusted, so the log refuses writes until restart.
    pub fn sync(&self) -> Result<Synced, Poison> {
        let shared = &self.shared;
        let mut state = shared.sync_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(poison) = shared.poison.get() {
            return Err(poison.clone());
        }
        // The offset first, then the end: the end is at or past that offset's batches.
        let target_offset = shared.written_offset.load(Ordering::Acquire);
        let target_end = shared.core.written_end();
        let from = shared.synced_position.load(Ordering::Acquire);
        if let Err(source) = shared.core.flush_data(from, target_end, shared.sync_method) {
            return Err(shared.poison_with(FailedStep::Sync, source));
        }
        shared.synced_position.store(target_end, Ordering::Release);
        shared.durable_offset.fetch_max(target_offset, Ordering::AcqRel);
        // Keep the on-disk durable offset inside the retained log, so recovery can tell which
        // chain of chunks holds the synced data (see `recovery`).
        // "Retained" means the record just below the stored offset is still held.
        if state.stored_durable_offset <= shared.head_offset.load(Ordering::Acquire) {
            shared.store_durable(&mut state, target_offset)?;
        }
        Ok(Synced { offset: shared.durable_offset.load(Ordering::Acquire), position: target_end })
    }

    /// The replication state last saved ([`Log::save_replication_state`]), if any: what a
    /// replicated partition's consensus keeps besides its log (vote, membership, ...).
    pub fn replication_state(&self) -> Option<Vec<u8>> {
        let saved =
            self.shared.replication.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        saved.1.clone()
    }

    /// Saves `state` (at most [`REPLICATION_STATE_MAX`] bytes, which the ring does not interpret)
    /// in the superblock area: when this returns it survives an OS crash, and a crash during the
    /// save leaves the state saved before it.
    ///
    /// # Errors
    ///
    /// [`StorageError::ReplicationStateTooLarge`]; [`StorageError::Poisoned`] when the write or
    /// its sync fails (or failed before).
    pub fn save_replication_state(&self, state: &[u8]) -> Result<(), StorageError> {
        let shared = &self.shared;
        if state.len() > REPLICATION_STATE_MAX {
            return Err(StorageError::ReplicationStateTooLarge {
                size: state.len(),
                max: REPLICATION_STATE_MAX,
            });
        }
        shared.check_poison()?;
        let mut saved =
            shared.replication.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sequence = saved.0 + 1;
        let record = superblock::encode_state(sequence, state);
        let copy = usize::try_from(sequence % 2).expect("0 or 1");
        let at = copy * SUPERBLOCK_SIZE + STATE_AT;
        if let Err(source) = shared.core.write_superblock(at, &record) {
            return Err(shared.poison_with(FailedStep::SuperblockWrite, source).into());
        }
        *saved = (sequence, Some(state.to_vec()));
        Ok(())
    }

    /// Makes every later sync fail, as a failing disk would (tests of poisoning).
    #[doc(hidden)]
    pub fn inject_sync_failure(&self) {
        self.shared.core.inject_flush_failure(true);
    }
}

impl Shared {
    fn check_poison(&self) -> Result<(), StorageError> {
        match self.poison.get() {
            Some(poison) => Err(StorageError::Poisoned(poison.clone())),
            None => Ok(()),
        }
    }

    /// Stops the log after `step` failed; the first failure is the one every later call reports.
    fn poison_with(&self, step: FailedStep, source: io::Error) -> Poison {
        self.poison
            .get_or_init(|| Poison {
                path: self.path.clone(),
                step,
                source: std::sync::Arc::new(source),
            })
            .clone()
    }

    /// Writes both superblock copies with a new durable offset (and optionally a clean
    /// checkpoint); each copy is synced before the next is written.
    fn write_superblock(
        &self,
        state: &mut SuperblockState,
        durable_offset: u64,
        clean: Option<Checkpoint>,
    ) -> Result<(), Poison> {
        let layout = self.core.layout();
        state.sequence += 1;
        let page = Superblock {
            capacity: layout.capacity(),
            chunk_size: layout.chunk_size(),
            sequence: state.sequence,
            term: state.term,
            clean,
            durable_offset,
        }
        .encode();
        for copy in 0..SUPERBLOCK_COPIES {
            if let Err(source) = self.core.write_superblock(copy * SUPERBLOCK_SIZE, &page) {
                return Err(self.poison_with(FailedStep::SuperblockWrite, source));
            }
        }
        state.stored_durable_offset = durable_offset;
        Ok(())
    }

    fn store_durable(
        &self,
        state: &mut SuperblockState,
        durable_offset: u64,
    ) -> Result<(), Poison> {
        self.write_superblock(state, durable_offset, None)
    }
}

#[cfg(test)]
#[cfg(not(broker_loom))]
mod tests;
