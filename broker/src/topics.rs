//! The topic registry: which topics exist, their partitions, and their files.
//!
//! ```text
//! DATA_DIR/.lock                 flock held while the broker runs
//! DATA_DIR/<topic>/topic.toml    the topic's settings; written last on create, removed first on
//!                                delete: a directory without it is a leftover and is removed
//! DATA_DIR/<topic>/<n>.ring      partition n's ring file
//! DATA_DIR/.deleted-<topic>-*    a deleted topic, renamed under the admin lock, then removed
//! ```
//!
//! Creating a topic allocates every ring in full before the topic becomes visible; if any step
//! fails (disk full, permissions) the directory is removed and nothing half-made remains.
//!
//! The admin lock is held only to check a creation against the limits and reserve its name and
//! bytes, and again to publish it: the rings are allocated outside it, so one large creation
//! holds up no other create, delete or request. A clean stop ([`Topics::stop_creating`]) makes
//! every unfinished creation give up within one pre-fault step and remove its files, and
//! [`Topics::close_blocking`] waits for them to have done so.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use ringmq_protocol::limits::{PARTITION_COUNT_MAX, TOPIC_COUNT_MAX};
use ringmq_protocol::topic::validate_topic_name;

use crate::log::recovery::RecoveryMode;
use crate::log::{self, DataDir, LogConfig, OpenMode, RecoveryReport, StorageError, SyncMethod};
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::producers::ProducerTable;

const SETTINGS_FILE: &str = "topic.toml";
/// Prefix of a deleted topic's directory until its files are removed (not a valid topic name).
const TOMBSTONE_PREFIX: &str = ".deleted-";

/// A topic's settings, as stored in its `topic.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Number of partitions.
    pub partitions: u32,
    /// Ring capacity per partition, bytes.
    pub capacity: u64,
    /// Chunk size, bytes.
    pub chunk_size: u64,
    /// Largest batch accepted, bytes.
    pub batch_size_max: u32,
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    settings: TopicSettings,
    partitions: Vec<Arc<Partition>>,
    deleted: AtomicBool,
}

impl Topic {
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings.
    pub fn settings(&self) -> &TopicSettings {
        &self.settings
    }

    /// The partitions, by index.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// Whether the topic was deleted (holders of an old `Arc` check this).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}

/// Why a topic operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The caller may not do this to the topic.
    #[error(transparent)]
    Unauthorized(#[from] crate::auth::permissions::Denied),
    /// No such topic.
    #[error("topic {0:?} does not exist")]
    Unknown(String),
    /// The topic exists already.
    #[error("topic {0:?} already exists")]
    Exists(String),
    /// The name is not allowed.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More partitions than the broker allows in one topic.
    #[error("invalid topic setting: {requested} partitions (at most {max})")]
    TooManyPartitions {
        /// The partitions asked for.
        requested: u32,
        /// The broker's limit (`partition_count_max`).
        max: u32,
    },
    /// A larger ring per partition than the broker allows.
    #[error("invalid topic setting: capacity {requested} bytes per partition (at most {max})")]
    CapacityTooLarge {
        /// The capacity asked for.
        requested: u64,
        /// The broker's limit (`partition_capacity_max`).
        max: u64,
    },
    /// A ring geometry the log does not accept (capacity, chunk size, batch size).
    #[error("invalid topic setting: {0}")]
    InvalidGeometry(#[source] StorageError),
    /// The broker holds the maximum number of topics.
    #[error("the broker already holds {max} topics")]
    TooMany {
        /// The limit.
        max: u32,
    },
    /// The topic's rings would pass the broker's limit on ring bytes.
    #[error("the topic's rings take {requested} bytes; the broker holds {held} of at most {max} (ring_bytes_max)")]
    RingBytesExceeded {
        /// Bytes the topic's rings would take (partitions × capacity).
        requested: u64,
        /// Bytes the broker's rings take now.
        held: u64,
        /// The limit.
        max: u64,
    },
    /// The topic's rings would pass the topic bytes its creator may hold.
    #[error("principal {principal:?} may hold {max} bytes of topics it created; it holds {held} and this topic's rings take {requested} (principal_topic_bytes_max)")]
    PrincipalBytesExceeded {
        /// Who asked.
        principal: String,
        /// Bytes the topic's rings would take (partitions × capacity, as asked).
        requested: u64,
        /// Bytes of the topics the principal created (and of its creations under way).
        held: u64,
        /// The limit.
        max: u64,
    },
    /// The topic's ring files would leave less free disk space than the reserve.
    #[error("the topic's ring files take {needed} bytes; the disk has {available} free and {reserve} must stay free (disk_reserve)")]
    DiskFull {
        /// Bytes the ring files would take.
        needed: u64,
        /// Free bytes on the data directory's file system.
        available: u64,
        /// The reserve.
        reserve: u64,
    },
    /// A topic's settings file could not be read back.
    #[error("{path}: {message}")]
    SettingsFile {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file of the topic could not be read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The broker is stopping: the creation was given up and its files removed.
    #[error("topic {name:?} was not created: the broker is stopping (its files are removed)")]
    Stopping {
        /// The topic.
        name: String,
    },
    /// The task doing the work panicked or was cancelled (the broker is stopping).
    #[error("the task to {task} did not finish: {source}")]
    TaskFailed {
        /// What the task was doing.
        task: &'static str,
        /// Why it did not finish.
        source: tokio::task::JoinError,
    },
}

/// Settings new topics get unless the request says otherwise, and the limits requests are held
/// to.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    /// Partitions.
    pub partition_count: u32,
    /// Ring capacity per partition.
    pub capacity: u64,
    /// Largest batch.
    pub batch_size_max: u32,
    /// Pre-fault mappings.
    pub prefault: bool,
    /// How partitions sync.
    pub sync_method: SyncMethod,
    /// Keep a cursor page per partition for same-host readers (the local listener is on).
    pub local_readers: bool,
    /// Largest capacity a request may ask for.
    pub capacity_max: u64,
    /// Most partitions a request may ask for.
    pub partition_count_max: u32,
    /// Most topics the broker holds.
    pub topic_count_max: u32,
    /// Most ring bytes over all topics (0: no limit).
    pub ring_bytes_max: u64,
    /// Free space a creation must leave on the data directory's file system.
    pub disk_reserve: u64,
}

/// Every topic of a data directory.
#[derive(Debug)]
pub struct Topics {
    dir: DataDir,
    defaults: TopicDefaults,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Serialises the checks and the bookkeeping of create and delete (never held while a ring
    /// is allocated or a file removed in bulk).
    admin: Mutex<Creations>,
    /// Signalled whenever a creation ends (published, failed or cancelled).
    creation_ended: Condvar,
    /// Set once by [`Topics::stop_creating`]: unfinished creations give up.
    stopping: AtomicBool,
    metrics: Arc<Metrics>,
}

/// The creations under way, by topic name: their names and bytes are taken until they end.
#[derive(Debug, Default)]
struct Creations {
    pending: HashMap<Arc<str>, Reservation>,
}

/// What an unfinished creation holds against the limits, and how far it has got.
#[derive(Debug)]
struct Reservation {
    /// Partitions × capacity (`ring_bytes_max`).
    ring_bytes: u64,
    /// Partitions × file size (the disk's free space).
    file_bytes: u64,
    /// Bytes of the files allocated and written out so far.
    written: Arc<AtomicU64>,
    /// Bytes of the files allocated (`fallocate`) so far: already out of the disk's free space.
    allocated: Arc<AtomicU64>,
}

/// A creation under way, from its reservation until it is published: dropped unpublished (an
/// error, a cancellation, a panic), it removes the topic's directory, then frees its name and
/// bytes and wakes a stop waiting for it.
struct Creation<'a> {
    topics: &'a Topics,
    name: Arc<str>,
    topic_dir: PathBuf,
    published: bool,
}

impl Drop for Creation<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        if let Err(error) = fs::remove_dir_all(&self.topic_dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.topic_dir.display(), %error, "cannot remove the files of a failed topic creation; the next start removes them");
            }
        }
        let mut admin = self.topics.admin();
        admin.pending.remove(&self.name);
        self.topics.creation_ended.notify_all();
    }
}

/// The creations under way, together: what [`Topics::creations`] answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreationProgress {
    /// Bytes of ring files the creations under way will have allocated when they are done.
    pub file_bytes: u64,
    /// Of those, bytes allocated and written out so far.
    pub written_bytes: u64,
}

impl Topics {
    /// Opens every topic in `dir`, recovering each partition; removes leftovers of interrupted
    /// creates and deletes. Blocks (recovery reads the files).
    ///
    /// # Errors
    ///
    /// A [`TopicError`] naming the file that could not be opened or recovered.
    pub fn open(
        dir: DataDir,
        defaults: TopicDefaults,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TopicError> {
        let mut topics = HashMap::new();
        let entries =
            fs::read_dir(dir.path()).map_err(io_error(dir.path(), "list the data directory"))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(dir.path(), "list the data directory"))?;
            let path = entry.path();
            if !entry.file_type().map_err(io_error(&path, "stat"))?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TOMBSTONE_PREFIX) {
                tracing::info!(path = %path.display(), "removing a deleted topic's files");
                fs::remove_dir_all(&path).map_err(io_error(&path, "remove a deleted topic"))?;
                continue;
            }
            if name.starts_with('.') {
                // Never a topic's name: the broker's own state beside the topics (the group
                // state log, `.groups`, opened by the coordinator).
                continue;
            }
            if validate_topic_name(&name).is_err() {
                // Not ours (lost+found on a mount root, say): leave it alone.
                tracing::warn!(path = %path.display(), "ignoring a directory that is not a topic");
                continue;
            }
            if !path.join(SETTINGS_FILE).exists() {
                tracing::warn!(path = %path.display(), "removing the leftover of an interrupted topic create");
                fs::remove_dir_all(&path)
                    .map_err(io_error(&path, "remove a leftover directory"))?;
                continue;
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            let topic_dir = dir.path().join(&name);
            let settings_path = topic_dir.join(SETTINGS_FILE);
            let text =
                fs::read_to_string(&settings_path).map_err(io_error(&settings_path, "read"))?;
            let settings: TopicSettings =
                toml::from_str(&text).map_err(|error| TopicError::SettingsFile {
                    path: settings_path.clone(),
                    message: error.message().to_owned(),
                })?;
            let config = log_config(&settings, defaults.prefault)?
                .with_sync_method(defaults.sync_method)
                .with_local_readers(defaults.local_readers);
            let name: Arc<str> = Arc::from(name);
            let mut partitions = Vec::with_capacity(settings.partitions as usize);
            for index in 0..settings.partitions {
                let path = topic_dir.join(format!("{index}.ring"));
                let (log, writer, report) = log::open(&dir, &path, &config, OpenMode::Existing)?;
                log_recovery(&name, index, &report);
                let (producers, rebuilt) = ProducerTable::rebuild(&log);
                if rebuilt.producers > 0 {
                    tracing::info!(topic = %name, partition = index, producers = rebuilt.producers, batches = rebuilt.batches, "idempotent producer state rebuilt");
                }
                let counters = metrics.topic(&name);
                partitions.push(Partition::new(
                    Arc::clone(&name),
                    index,
                    log,
                    writer,
                    producers,
                    counters,
                    metrics.sync_histogram(),
                ));
            }
            let topic = Topic {
                name: Arc::clone(&name),
                settings,
                partitions,
                deleted: AtomicBool::new(false),
            };
            topics.insert(name, Arc::new(topic));
        }
        Ok(Self {
            dir,
            defaults,
            topics: RwLock::new(topics),
            admin: Mutex::new(Creations::default()),
            creation_ended: Condvar::new(),
            stopping: AtomicBool::new(false),
            metrics,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Looks a topic up.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    /// Every topic's name and partition count, sorted by name.
    pub fn list(&self) -> Vec<(Arc<str>, u32)> {
        let mut list: Vec<_> = self
            .read()
            .values()
            .map(|topic| (Arc::clone(&topic.name), topic.settings.partitions))
            .collect();
        list.sort();
        list
    }

    /// Every topic.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admin(&self) -> MutexGuard<'_, Creations> {
        self.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ring bytes (partitions × capacity) a topic asked for with `partitions` and
    /// `capacity` would take, the defaults filled in (0 asks for the default).
    pub fn ring_bytes_asked(&self, partitions: u32, capacity: u64) -> u64 {
        let partitions = if partitions == 0 { self.defaults.partition_count } else { partitions };
        let capacity = if capacity == 0 { self.defaults.capacity } else { capacity };
        u64::from(partitions).saturating_mul(capacity)
    }

    /// Creates a topic; 0 for `partitions`, `capacity` or `chunk_size` takes the default.
    /// Blocks: every ring is allocated (and pre-faulted) before the topic becomes visible. Other
    /// creates, deletes and requests go on meanwhile.
    ///
    /// # Errors
    ///
    /// [`TopicError`]: bad name or settings, an existing topic (or one being created), a limit,
    /// [`TopicError::Stopping`] after [`Topics::stop_creating`], or storage failure (nothing is
    /// left behind).
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        capacity: u64,
        chunk_size: u64,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name)
            .map_err(|reason| TopicError::InvalidName { name: name.to_owned(), reason })?;
        let partitions = if partitions == 0 { self.defaults.partition_count } else { partitions };
        let partition_count_max = self.defaults.partition_count_max.min(PARTITION_COUNT_MAX);
        if partitions > partition_count_max {
            return Err(TopicError::TooManyPartitions {
                requested: partitions,
                max: partition_count_max,
            });
        }
        let capacity = if capacity == 0 { self.defaults.capacity } else { capacity };
        if capacity > self.defaults.capacity_max {
            return Err(TopicError::CapacityTooLarge {
                requested: capacity,
                max: self.defaults.capacity_max,
            });
        }
        let config = LogConfig::new(
            capacity,
            (chunk_size != 0).then_some(chunk_size),
            self.defaults.batch_size_max,
        )
        .map_err(TopicError::InvalidGeometry)?;
        let config = config
            .with_prefault(self.defaults.prefault)
            .with_sync_method(self.defaults.sync_method)
            .with_local_readers(self.defaults.local_readers);
        let written = Arc::new(AtomicU64::new(0));
        let allocated = Arc::new(AtomicU64::new(0));
        let reservation = Reservation {
            ring_bytes: u64::from(partitions).saturating_mul(config.capacity()),
            file_bytes: u64::from(partitions).saturating_mul(config.file_size()),
            written: Arc::clone(&written),
            allocated: Arc::clone(&allocated),
        };
        let name: Arc<str> = Arc::from(name);
        self.reserve(&name, reservation)?;
        let topic_dir = self.dir.path().join(&*name);
        // However the creation ends (an error, a cancellation, a panic), its files go before its
        // name is free again, so they cannot be mistaken for those of a creation of the same name
        // that starts next, and a stop waiting for it is woken.
        let mut creation =
            Creation { topics: self, name: Arc::clone(&name), topic_dir, published: false };
        let settings = TopicSettings {
            partitions,
            capacity: config.capacity(),
            chunk_size: config.chunk_size(),
            batch_size_max: config.batch_size_max(),
        };
        let progress = (&*written, &*allocated);
        let created = self.create_files(&name, &creation.topic_dir, &settings, &config, progress);
        let partitions = created.map_err(|error| match error {
            TopicError::Storage(StorageError::Cancelled { .. }) => {
                tracing::info!(topic = %name, "topic creation given up for the stop; its files are removed");
                TopicError::Stopping { name: name.to_string() }
            }
            error => error,
        })?;
        let mut admin = self.admin();
        admin.pending.remove(&name);
        self.creation_ended.notify_all();
        creation.published = true;
        let topic = Arc::new(Topic {
            name: Arc::clone(&name),
            settings,
            partitions,
            deleted: AtomicBool::new(false),
        });
        self.topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, Arc::clone(&topic));
        drop(admin);
        tracing::info!(topic = %topic.name, partitions = settings.partitions, capacity = settings.capacity, chunk_size = settings.chunk_size, "topic created");
        Ok(topic)
    }

    /// Under the admin lock: checks a creation against the name space and the limits, counting
    /// the creations under way as if they were done, and takes its name and bytes.
    fn reserve(&self, name: &Arc<str>, reservation: Reservation) -> Result<(), TopicError> {
        let mut admin = self.admin();
        if self.stopping.load(Ordering::Acquire) {
            return Err(TopicError::Stopping { name: name.to_string() });
        }
        if self.read().contains_key(name) || admin.pending.contains_key(name) {
            return Err(TopicError::Exists(name.to_string()));
        }
        let topic_count_max = self.defaults.topic_count_max.min(TOPIC_COUNT_MAX);
        let count = self.read().len() + admin.pending.len();
        if count >= usize::try_from(topic_count_max).unwrap_or(usize::MAX) {
            return Err(TopicError::TooMany { max: topic_count_max });
        }
        self.check_space(&admin, &reservation)?;
        admin.pending.insert(Arc::clone(name), reservation);
        Ok(())
    }

    /// Refuses a topic whose rings would pass `ring_bytes_max` or eat into `disk_reserve`,
    /// before anything is allocated. The creations under way count in full against both (the
    /// disk's free space does not show the part of their files not yet allocated).
    fn check_space(&self, admin: &Creations, wanted: &Reservation) -> Result<(), TopicError> {
        let requested = wanted.ring_bytes;
        let max = self.defaults.ring_bytes_max;
        if max != 0 {
            let held = self
                .read()
                .values()
                .map(|topic| u64::from(topic.settings.partitions) * topic.settings.capacity)
                .chain(admin.pending.values().map(|pending| pending.ring_bytes))
                .fold(0u64, u64::saturating_add);
            if held.saturating_add(requested) > max {
                return Err(TopicError::RingBytesExceeded { requested, held, max });
            }
        }
        // What the creations under way have still to allocate (the rest is out of `f_bavail`).
        let pending: u64 = admin
            .pending
            .values()
            .map(|pending| {
                pending.file_bytes.saturating_sub(pending.allocated.load(Ordering::Relaxed))
            })
            .fold(0, u64::saturating_add);
        let needed = wanted.file_bytes;
        let stats = rustix::fs::statvfs(self.dir.path())
            .map_err(|error| io_error(self.dir.path(), "read the free space of")(error.into()))?;
        let available = stats.f_bavail.saturating_mul(stats.f_frsize).saturating_sub(pending);
        let reserve = self.defaults.disk_reserve;
        if needed.saturating_add(reserve) > available {
            return Err(TopicError::DiskFull { needed, available, reserve });
        }
        Ok(())
    }

    /// How far the creations under way have got (all zero when there are none).
    pub fn creations(&self) -> CreationProgress {
        let admin = self.admin();
        admin.pending.values().fold(CreationProgress::default(), |sum, pending| CreationProgress {
            file_bytes: sum.file_bytes.saturating_add(pending.file_bytes),
            written_bytes: sum
                .written_bytes
                .saturating_add(pending.written.load(Ordering::Relaxed).min(pending.file_bytes)),
        })
    }

    /// Makes every unfinished creation give up (within one pre-fault step) and remove its files,
    /// and every later one fail with [`TopicError::Stopping`]. For a clean stop.
    pub fn stop_creating(&self) {
        let _admin = self.admin();
        self.stopping.store(true, Ordering::Release);
    }

    fn create_files(
        &self,
        name: &str,
        topic_dir: &Path,
        settings: &TopicSettings,
        config: &LogConfig,
        (written, allocated): (&AtomicU64, &AtomicU64),
    ) -> Result<Vec<Arc<Partition>>, TopicError> {
        if topic_dir.exists() {
            // A leftover of an interrupted create (no settings file, or it would be registered).
            fs::remove_dir_all(topic_dir)
                .map_err(io_error(topic_dir, "remove a leftover directory"))?;
        }
        fs::create_dir(topic_dir).map_err(io_error(topic_dir, "create the topic directory"))?;
        let name: Arc<str> = Arc::from(name);
        let mut partitions = Vec::with_capacity(settings.partitions as usize);
        for index in 0..settings.partitions {
            let path = topic_dir.join(format!("{index}.ring"));
            let (log, writer) = log::create(&self.dir, &path, config, &self.stopping, written)?;
            allocated.fetch_add(config.file_size(), Ordering::Relaxed);
            let counters = self.metrics.topic(&name);
            partitions.push(Partition::new(
                Arc::clone(&name),
                index,
                log,
                writer,
                ProducerTable::default(),
                counters,
                self.metrics.sync_histogram(),
            ));
        }
        let text = toml::to_string(settings).expect("a table of integers serialises as TOML");
        let settings_path = topic_dir.join(SETTINGS_FILE);
        let temporary = topic_dir.join(".topic.toml.new");
        fs::write(&temporary, text).map_err(io_error(&temporary, "write"))?;
        fs::File::open(&temporary)
            .and_then(|file| file.sync_all())
            .map_err(io_error(&temporary, "sync"))?;
        fs::rename(&temporary, &settings_path)
            .map_err(io_error(&settings_path, "rename into place"))?;
        sync_dir(topic_dir)?;
        sync_dir(self.dir.path())?;
        Ok(partitions)
    }

    /// Deletes a topic and its files. In-flight requests on it finish or fail; new ones get
    /// "unknown topic".
    ///
    /// # Errors
    ///
    /// [`TopicError::Unknown`], or an I/O failure removing the files.
    pub async fn delete(&self, name: &str) -> Result<(), TopicError> {
        let (topic, tombstone) = {
            let _admin = self.admin();
            let topic = self
                .read()
                .get(name)
                .cloned()
                .ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
            // Under the admin lock, move the files out of the topic's name, so a create of the
            // same name right after starts clean and the removal below cannot touch it.
            let topic_dir = self.dir.path().join(name);
            static DELETES: AtomicU64 = AtomicU64::new(0);
            let serial = DELETES.fetch_add(1, Ordering::Relaxed);
            let tombstone = self
                .dir
                .path()
                .join(format!("{TOMBSTONE_PREFIX}{name}-{}-{serial}", std::process::id()));
            fs::rename(&topic_dir, &tombstone)
                .map_err(io_error(&topic_dir, "move the topic aside"))?;
            sync_dir(self.dir.path())?;
            self.topics.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
            (topic, tombstone)
        };
        topic.deleted.store(true, Ordering::Release);
        self.metrics.forget_topic(name);
        for partition in &topic.partitions {
            partition.retire().await;
        }
        let removed = tokio::task::spawn_blocking(move || {
            fs::remove_dir_all(&tombstone)
                .map_err(io_error(&tombstone, "remove the deleted topic's files"))
        })
        .await;
        tracing::info!(topic = name, "topic deleted");
        removed.unwrap_or_else(|source| {
            Err(TopicError::TaskFailed { task: "remove the deleted topic's files", source })
        })
    }

    /// Makes the creations under way give up ([`Topics::stop_creating`]) and waits for them to
    /// have removed their files, then syncs every partition and writes clean-shutdown
    /// checkpoints. Blocks.
    pub fn close_blocking(&self) {
        self.stop_creating();
        let mut admin = self.admin();
        while !admin.pending.is_empty() {
            admin =
                self.creation_ended.wait(admin).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(admin);
        for topic in self.all() {
            for partition in topic.partitions() {
                if let Err(error) = partition.close_blocking() {
                    tracing::error!(topic = %topic.name, partition = partition.index(), %error, "closing partition failed; it will recover by a full scan");
                }
            }
        }
    }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> TopicError {
    let path = path.to_owned();
    move |source| TopicError::Io { path, action, source }
}

fn log_config(settings: &TopicSettings, prefault: bool) -> Result<LogConfig, TopicError> {
    let config =
        LogConfig::new(settings.capacity, Some(settings.chunk_size), settings.batch_size_max)
            .map_err(TopicError::InvalidGeometry)?;
    Ok(config.with_prefault(prefault))
}

fn sync_dir(path: &Path) -> Result<(), TopicError> {
    fs::File::open(path).and_then(|dir| dir.sync_all()).map_err(|source| TopicError::Io {
        path: path.to_owned(),
        action: "sync the directory",
        source,
    })
}

fn log_recovery(topic: &str, partition: u32, report: &RecoveryReport) {
    let mode = match report.mode {
        RecoveryMode::Fresh => "fresh",
        RecoveryMode::Clean => "clean",
        RecoveryMode::Scanned => "scanned",
    };
    tracing::info!(
        topic,
        partition,
        mode,
        earliest = report.earliest_offset,
        next = report.next_offset,
        "partition opened"
    );
    if let Some(truncation) = &report.truncated {
        tracing::warn!(topic, partition, position = truncation.position, offset = truncation.offset, reason = %truncation.reason, "torn tail truncated");
    }
    if report.discarded_chunks > 0 {
        tracing::warn!(
            topic,
            partition,
            chunks = report.discarded_chunks,
            "chunks outside the log set aside"
        );
    }
    if let Some(reason) = &report.checkpoint_rejected {
        tracing::warn!(topic, partition, %reason, "clean-shutdown checkpoint not trusted; scanned instead");
    }
    if let Some(problem) = &report.superblock_repaired {
        tracing::warn!(topic, partition, %problem, "one superblock copy was damaged; used the other");
    }
}
