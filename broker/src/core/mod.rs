//! The broker core: the one API every front end (the native server, the Kafka listener) calls.
//!
//! Produce, fetch and the wait for new data, offsets, topic administration, consumer groups and
//! producer ids are decided here, once: limits, durability, idempotence and the metrics of each
//! are the same whichever protocol a request came in. The core returns domain errors; each front
//! end maps them to its own error codes in one table, decodes its requests and encodes its
//! responses, and never reaches past the core into topics, partitions or the log.
//!
//! ```text
//! server/ (native)     kafka/      ->  core  ->  topics -> partitions -> log (ring)
//!                                            ->  groups (coordinator, store), producers, metrics
//! ```

mod access;
mod error;
mod quota;

use crate::auth::scram::ScramHash;
use crate::auth::users::{Users, UsersError};
use crate::auth::{AuthError, Failures, Login, Step};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use ringmq_protocol::access::QuotaKind;
use ringmq_protocol::group::PartitionOffset;
use ringmq_protocol::{Acks, BatchView, DecodeError};

use self::access::Access;
pub use self::access::{Caller, ANONYMOUS};
pub use self::error::{AdminError, FetchError, ProduceError};
pub use self::quota::{check_quota, quota_max, Limits, Own, QuotaError};
use self::quota::{Direction, Owners, Quotas};
pub use self::quota::{Seat, TooManyConnections, Usage, THROTTLE_MAX};
use crate::auth::permissions::{
    Denied, Operation, Permissions, PermissionsError, ResourceKind, Rule, RuleFilter,
};
use crate::config::Config;
use crate::groups::store::{GroupStore, OffsetKey, StoreError};
use crate::groups::{
    Assignment, ClassicDescription, Coordinator, GroupError, GroupInfo, GroupListing,
    GroupSettings, JoinRequest, Joined, Lag, MemberRef, ProducerGrant, Reply, SyncRequest,
    TopicCommit,
};
use crate::log::{DataDir, ReadError, ReadOutcome, StorageError, TimedOffset};
use crate::metrics::{GroupLag, Metrics, PartitionGauges};
use crate::partition::{AppendError, Partition, SyncPolicy};
use crate::pool::PoolStats;
use crate::topics::{Topic, TopicDefaults, TopicError, TopicSettings, Topics};

/// A partition opened for a same-host reader ([`Core::local_open`]).
#[derive(Debug)]
pub struct LocalOpened {
    /// Where to start reading.
    pub start: crate::log::LocalStart,
    /// The ring file and its cursor page.
    pub files: crate::log::LocalFiles,
    /// Largest batch the partition holds.
    pub batch_size_max: u32,
}

/// What the core needs of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct CoreSettings {
    /// When the broker syncs on its own.
    pub sync: SyncPolicy,
    /// Longest a produce may wait for its sync or a busy chunk.
    pub request_timeout: Duration,
    /// Longest long-poll wait a fetch may ask for.
    pub fetch_wait_max: Duration,
    /// Largest batch, broker-wide (a topic may accept less).
    pub batch_size_max: u32,
}

/// Why the core could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be locked or opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A topic could not be opened or recovered.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The group state log could not be opened or replayed.
    #[error(transparent)]
    Groups(#[from] StoreError),
    /// The users file could not be read.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// The permissions file could not be read.
    #[error(transparent)]
    Permissions(#[from] PermissionsError),
    /// The quotas file could not be read.
    #[error(transparent)]
    Quotas(#[from] QuotaError),
    /// The task opening the data directory did not finish.
    #[error("opening the data directory did not finish: {0}")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// A partition a request named, as the core hands it to front ends: an opaque handle that the
/// core's calls take.
#[derive(Debug, Clone)]
pub struct PartitionHandle {
    partition: Arc<Partition>,
}

impl PartitionHandle {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        self.partition.topic()
    }

    /// The partition's index.
    pub fn index(&self) -> u32 {
        self.partition.index()
    }

    /// Whether both handles name the same partition of the same topic instance.
    pub fn same_as(&self, other: &PartitionHandle) -> bool {
        Arc::ptr_eq(&self.partition, &other.partition)
    }
}

/// A topic a request named, opaque like [`PartitionHandle`] (front ends keep one to skip the
/// registry lookup on a stream of requests to it).
#[derive(Debug, Clone)]
pub struct TopicHandle {
    topic: Arc<Topic>,
}

impl TopicHandle {
    /// The topic's name.
    pub fn name(&self) -> &str {
        self.topic.name()
    }

    /// Whether the topic was deleted since the handle was taken.
    pub fn is_deleted(&self) -> bool {
        self.topic.is_deleted()
    }

    /// The topic's settings.
    pub fn settings(&self) -> &TopicSettings {
        self.topic.settings()
    }
}

/// A partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Earliest offset held.
    pub earliest: u64,
    /// Offset the next record gets (a consumer can read everything below it).
    pub next: u64,
    /// Every record below it is synced to disk.
    pub durable: u64,
}

/// A produced batch.
#[derive(Debug, Clone)]
pub struct Produced {
    /// Offset of its first record (its original offset if it was a retry).
    pub base_offset: u64,
    /// Whether it was an idempotent producer's retry of a batch already written.
    pub duplicate: bool,
    /// The durability the broker applied (a `SyncPolicy::Always` broker syncs everything).
    pub acks: Acks,
    /// For `Acks::Synced`: the sync to wait for before acknowledging.
    pub sync: Option<SyncWait>,
    /// How long the connection must wait before its next request: the caller is over its
    /// produce quota (zero when it is not).
    pub throttle: Duration,
}

/// A sync an acknowledgement waits for: everything below `position` of `partition`.
#[derive(Debug, Clone)]
pub struct SyncWait {
    /// The partition.
    pub partition: PartitionHandle,
    /// The position the sync must reach.
    pub position: u64,
    /// When the produce gives up waiting.
    pub deadline: Instant,
}

/// How a sync a produce waits for stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Synced: acknowledge.
    Done,
    /// The sync failed; the partition refuses writes until restart.
    Failed(String),
    /// The deadline passed first: the batch is written but not known to be synced.
    TimedOut,
    /// Still syncing.
    Pending,
}

/// The broker core: topics, their partitions, groups and producer ids, and the metrics of them.
#[derive(Debug)]
pub struct Core {
    settings: CoreSettings,
    topics: Arc<Topics>,
    groups: Arc<Coordinator>,
    metrics: Arc<Metrics>,
    users: Arc<Users>,
    login_failures: Failures,
    access: Access,
    quotas: Arc<Quotas>,
    owners: Arc<Owners>,
}

impl Core {
    /// Locks and opens the data directory of `config`: every topic's partitions recovered, the
    /// group state log replayed.
    ///
    /// # Errors
    ///
    /// [`OpenError`] naming what failed.
    pub async fn open(config: &Config, metrics: Arc<Metrics>) -> Result<Self, OpenError> {
        let data_dir = config.data_dir.clone();
        let defaults = TopicDefaults {
            partition_count: config.partition_count_default,
            capacity: config.partition_capacity_default,
            batch_size_max: config.batch_size_max,
            prefault: config.prefault,
            sync_method: config.sync_method,
            local_readers: config.local_listen_path().is_some(),
            capacity_max: config.partition_capacity_max,
            partition_count_max: config.partition_count_max,
            topic_count_max: config.topic_count_max,
            ring_bytes_max: config.ring_bytes_max,
            disk_reserve: config.disk_reserve,
        };
        let topic_metrics = Arc::clone(&metrics);
        let (group_capacity, sync, request_timeout) =
            (config.group_log_capacity, config.sync, config.request_timeout);
        let (topics, store) =
            tokio::task::spawn_blocking(move || -> Result<(Topics, GroupStore), OpenError> {
                let dir = DataDir::lock(&data_dir)?;
                let (store, replayed) = GroupStore::open(
                    &dir,
                    group_capacity,
                    defaults.prefault,
                    sync,
                    request_timeout,
                    topic_metrics.sync_histogram(),
                )?;
                tracing::info!(
                    records = replayed.records,
                    snapshots = replayed.snapshots,
                    committed_offsets = replayed.offsets,
                    "group state log replayed"
                );
                Ok((Topics::open(dir, defaults, topic_metrics)?, store))
            })
            .await
            .map_err(OpenError::Interrupted)??;
        let users = Arc::new(Users::open(&config.data_dir)?);
        let permissions = Arc::new(Permissions::open(&config.data_dir)?);
        let access =
            Access { permissions, enforced: config.auth == crate::config::AuthMode::Required };
        let topics = Arc::new(topics);
        let groups = Arc::new(Coordinator::new(
            store,
            Arc::clone(&topics),
            GroupSettings {
                session_timeout_min: config.group_session_timeout_min,
                session_timeout_max: config.group_session_timeout_max,
                initial_rebalance_delay: config.group_initial_rebalance_delay,
            },
            Arc::clone(&metrics),
        ));
        groups.forget_missing_topics().await;
        let settings = CoreSettings {
            sync: config.sync,
            request_timeout: config.request_timeout,
            fetch_wait_max: config.fetch_wait_max,
            batch_size_max: config.batch_size_max,
        };
        let owners = Arc::new(Owners::open(&config.data_dir)?);
        let defaults = Limits([
            config.produce_quota,
            config.fetch_quota,
            u64::from(config.principal_connection_count_max),
            config.principal_topic_bytes_max,
        ]);
        let quotas = Arc::new(Quotas::open(&config.data_dir, defaults, Arc::clone(&metrics))?);
        Ok(Self {
            settings,
            topics,
            groups,
            metrics,
            users,
            login_failures: Failures::default(),
            access,
            quotas,
            owners,
        })
    }

    // ----- principals ----------------------------------------------------------------------

    /// Takes a client's next SASL message in `login`, on the blocking pool (PBKDF2 is work).
    /// An address that failed a moment ago is refused at once, unchecked ([`Failures`]); a
    /// failure is counted and answered after [`crate::auth::FAILURE_DELAY`], whatever failed.
    ///
    /// # Errors
    ///
    /// [`AuthError`]: what failed (the client is told only that it failed).
    pub async fn login_step(
        &self,
        login: Login,
        message: &[u8],
        peer: std::net::IpAddr,
    ) -> Result<Step, AuthError> {
        let started = tokio::time::Instant::now();
        if let Some(retry_after) = self.login_failures.refused(peer) {
            self.metrics.authentication_failed();
            return Err(AuthError::Throttled { retry_after });
        }
        let users = Arc::clone(&self.users);
        let message = message.to_vec();
        let stepped = tokio::task::spawn_blocking(move || login.step(&users, &message)).await;
        let stepped = stepped.unwrap_or_else(|_| {
            Err(AuthError::Malformed("the login's work did not finish".to_owned()))
        });
        match stepped {
            Ok(Step::Done { user, message }) => {
                self.login_failures.succeeded(peer);
                Ok(Step::Done { user, message })
            }
            Ok(step) => Ok(step),
            Err(error) => {
                self.metrics.authentication_failed();
                if let AuthError::BadCredentials { user } = &error {
                    // Per user only for known users: names clients make up are not series.
                    let known = [ScramHash::Sha256, ScramHash::Sha512]
                        .into_iter()
                        .any(|hash| self.users.credential(user, hash).is_some());
                    if known {
                        self.quotas.usage(user).authentication_failed();
                    }
                }
                self.login_failures.failed(peer);
                tokio::time::sleep_until(started + crate::auth::FAILURE_DELAY).await;
                Err(error)
            }
        }
    }

    /// Adds `name` with `password` if the broker has no users yet (the first superuser, from
    /// the environment); whether it did.
    ///
    /// # Errors
    ///
    /// [`UsersError`]: a bad name or password, or the users file.
    pub fn bootstrap_user(&self, name: &str, password: &str) -> Result<bool, UsersError> {
        if !self.users.is_empty() {
            return Ok(false);
        }
        self.users.add(name, password)?;
        Ok(true)
    }

    /// Makes `principal` a superuser if there is none yet (the first, from the environment);
    /// whether it did.
    ///
    /// # Errors
    ///
    /// An invalid principal, or the permissions file.
    pub fn bootstrap_superuser(&self, principal: &str) -> Result<bool, PermissionsError> {
        let permissions = &self.access.permissions;
        let added = permissions.bootstrap_superuser(principal)?;
        if !added && !permissions.is_superuser(principal) {
            tracing::warn!(%principal, superusers = ?permissions.superusers(), "RINGMQ_ROOT_USER is not a superuser: the broker has superusers already, and the first one only comes from the environment");
        }
        Ok(added)
    }

    /// Whether `caller` may do `operation` on `kind`/`name`: the check every request passes,
    /// for a front end that must answer a resource it does not hand to the core (a group's
    /// coordinator, a topic's configuration).
    ///
    /// # Errors
    ///
    /// [`Denied`], naming the principal, the operation and the resource.
    pub fn authorize(
        &self,
        caller: &Caller,
        kind: ResourceKind,
        name: &str,
        operation: Operation,
    ) -> Result<(), Denied> {
        self.access.check(caller, kind, name, operation)
    }

    /// Whether `caller` may do `operation` on the cluster.
    ///
    /// # Errors
    ///
    /// [`Denied`].
    pub fn authorize_cluster(&self, caller: &Caller, operation: Operation) -> Result<(), Denied> {
        self.access.check_cluster(caller, operation)
    }

    // ----- users and permissions -------------------------------------------------------------

    /// Every user's name (the caller must be allowed to describe the cluster).
    ///
    /// # Errors
    ///
    /// [`Denied`].
    pub fn list_users(&self, caller: &Caller) -> Result<Vec<String>, AdminError> {
        self.access.check_admin(caller, Operation::Describe)?;
        Ok(self.users.names())
    }

    /// Adds a user, or (`replace`) changes an existing one's credentials; the caller must be
    /// allowed to alter the cluster (a superuser's account: be a superuser), on a broker with
    /// `auth = required`. The credentials are salted keys made by the client: the
    /// password never reaches the broker.
    ///
    /// # Errors
    ///
    /// [`AdminError`]: refused, a bad name or credential, an existing (or missing) user, or the
    /// file.
    pub async fn set_user(
        &self,
        caller: &Caller,
        name: &str,
        credentials: crate::auth::users::Credentials,
        replace: bool,
    ) -> Result<(), AdminError> {
        self.access.check_admin(caller, Operation::Alter)?;
        if self.access.permissions.is_superuser(name) {
            self.access
                .check_superuser(caller, || format!("change superuser {name:?}'s password"))?;
        }
        let users = Arc::clone(&self.users);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || users.set(&name, credentials, replace))
            .await
            .map_err(|_| AdminError::Interrupted)??;
        Ok(())
    }

    /// Removes a user (the caller must be allowed to alter the cluster; a superuser's account:
    /// be a superuser); its rules stay.
    ///
    /// # Errors
    ///
    /// [`AdminError`]: refused, no such user, or the file.
    pub async fn remove_user(&self, caller: &Caller, name: &str) -> Result<(), AdminError> {
        self.access.check_admin(caller, Operation::Alter)?;
        if self.access.permissions.is_superuser(name) {
            self.access
                .check_superuser(caller, || format!("remove superuser {name:?}'s account"))?;
        }
        let users = Arc::clone(&self.users);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || users.remove(&name))
            .await
            .map_err(|_| AdminError::Interrupted)??;
        Ok(())
    }

    /// Whether `caller` may list (`change` false) or change users, rules and quotas, checked before
    /// anything about the request is looked at.
    ///
    /// # Errors
    ///
    /// [`AdminError::AuthOff`] or [`AdminError::Unauthorized`].
    pub fn may_manage_rules(&self, caller: &Caller, change: bool) -> Result<(), AdminError> {
        let operation = if change { Operation::Alter } else { Operation::Describe };
        self.access.check_admin(caller, operation)
    }

    /// The rules that pass `filter`, and the superusers (the caller must be allowed to describe
    /// the cluster).
    ///
    /// # Errors
    ///
    /// [`Denied`].
    pub fn rules(
        &self,
        caller: &Caller,
        filter: &RuleFilter,
    ) -> Result<(Vec<Rule>, Vec<String>), AdminError> {
        self.access.check_admin(caller, Operation::Describe)?;
        let permissions = &self.access.permissions;
        Ok((permissions.rules(filter), permissions.superusers()))
    }

    /// Adds rules (the caller must be allowed to alter the cluster); how many were new. In
    /// force for the next request, durable when this returns.
    ///
    /// # Errors
    ///
    /// [`AdminError`]: refused, an invalid rule, the limit, or the file.
    pub async fn add_rules(&self, caller: &Caller, rules: Vec<Rule>) -> Result<usize, AdminError> {
        self.access.check_admin(caller, Operation::Alter)?;
        let permissions = Arc::clone(&self.access.permissions);
        let added = tokio::task::spawn_blocking(move || permissions.add(&rules))
            .await
            .map_err(|_| AdminError::Interrupted)??;
        Ok(added)
    }

    /// Removes the rules that pass `filter` (the caller must be allowed to alter the cluster);
    /// the rules removed.
    ///
    /// # Errors
    ///
    /// [`AdminError`]: refused, or the file.
    pub async fn remove_rules(
        &self,
        caller: &Caller,
        filter: RuleFilter,
    ) -> Result<Vec<Rule>, AdminError> {
        self.access.check_admin(caller, Operation::Alter)?;
        let permissions = Arc::clone(&self.access.permissions);
        let removed = tokio::task::spawn_blocking(move || permissions.remove(&filter))
            .await
            .map_err(|_| AdminError::Interrupted)??;
        Ok(removed)
    }

    /// The broker's default quotas and every principal's own (the caller must be allowed to
    /// describe the cluster, on a broker with `auth = required`).
    ///
    /// # Errors
    ///
    /// [`AdminError::AuthOff`] or [`AdminError::Unauthorized`].
    pub fn quotas(&self, caller: &Caller) -> Result<(Limits, Vec<(String, Own)>), AdminError> {
        self.access.check_admin(caller, Operation::Describe)?;
        Ok(self.quotas.list())
    }

    /// Whether `caller` may change `principal`'s quotas: allowed to alter the cluster, on a
    /// broker with `auth = required`, and for a superuser's quotas a superuser itself.
    ///
    /// # Errors
    ///
    /// [`AdminError::AuthOff`], [`AdminError::Unauthorized`] or [`AdminError::NotSuperuser`].
    pub fn may_set_quotas(&self, caller: &Caller, principal: &str) -> Result<(), AdminError> {
        self.access.check_admin(caller, Operation::Alter)?;
        if self.access.permissions.is_superuser(principal) {
            self.access
                .check_superuser(caller, || format!("change superuser {principal:?}'s quotas"))?;
        }
        Ok(())
    }

    /// Gives `principal` its own quota of each kind named (`None`: back to the broker's
    /// default), all or none, if [`may_set_quotas`](Self::may_set_quotas) allows it. Durable,
    /// and in force for the principal's connections, when this returns. Removing a quota the
    /// principal does not have is an error only when `strict`.
    ///
    /// # Errors
    ///
    /// [`AdminError`]: refused, a bad principal or value, nothing to remove, or the file.
    pub async fn set_quotas(
        &self,
        caller: &Caller,
        principal: &str,
        changes: Vec<(QuotaKind, Option<u64>)>,
        strict: bool,
    ) -> Result<(), AdminError> {
        self.may_set_quotas(caller, principal)?;
        let quotas = Arc::clone(&self.quotas);
        let principal = principal.to_owned();
        tokio::task::spawn_blocking(move || quotas.set(&principal, &changes, strict))
            .await
            .map_err(|_| AdminError::Interrupted)??;
        Ok(())
    }

    /// Makes `principal` a superuser, or (`add` false) no longer one; the caller must be a
    /// superuser.
    ///
    /// # Errors
    ///
    /// [`AdminError`]: refused, the last superuser, an invalid principal, or the file.
    pub async fn set_superuser(
        &self,
        caller: &Caller,
        principal: &str,
        add: bool,
    ) -> Result<(), AdminError> {
        self.access.check_admin(caller, Operation::Alter)?;
        self.access.check_superuser(caller, || "add or remove superusers".to_owned())?;
        let permissions = Arc::clone(&self.access.permissions);
        let principal = principal.to_owned();
        tokio::task::spawn_blocking(move || {
            if add {
                permissions.add_superuser(&principal).map(drop)
            } else {
                permissions.remove_superuser(&principal)
            }
        })
        .await
        .map_err(|_| AdminError::Interrupted)??;
        Ok(())
    }

    /// The settings.
    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The counters in the `Stats` response shape, with the progress of the topic creations
    /// under way.
    ///
    /// # Errors
    ///
    /// [`Denied`] unless the caller may describe the cluster.
    pub fn stats(&self, caller: &Caller) -> Result<ringmq_protocol::message::BrokerStats, Denied> {
        self.access.check_cluster(caller, Operation::Describe)?;
        let creations = self.topics.creations();
        Ok(ringmq_protocol::message::BrokerStats {
            creating_file_bytes: creations.file_bytes,
            creating_written_bytes: creations.written_bytes,
            ..self.metrics.snapshot()
        })
    }

    /// Makes the topic creations under way give up (within one pre-fault step) and remove their
    /// files, and every later one fail: the first step of a clean stop.
    pub fn stop_creating(&self) {
        self.topics.stop_creating();
    }

    /// The topic registry (for in-process tests and tools).
    #[doc(hidden)]
    pub fn topics(&self) -> Arc<Topics> {
        Arc::clone(&self.topics)
    }

    // ----- topics -------------------------------------------------------------------------

    /// Whether `caller` may create topic `name`: create on the cluster, or on the topic.
    ///
    /// # Errors
    ///
    /// [`Denied`].
    pub fn may_create_topic(&self, caller: &Caller, name: &str) -> Result<(), Denied> {
        if self.access.check_cluster(caller, Operation::Create).is_err() {
            self.access.check(caller, ResourceKind::Topic, name, Operation::Create)?;
        }
        Ok(())
    }

    /// Creates a topic; 0 for a setting takes the broker's default. The rings are allocated on
    /// the blocking pool.
    ///
    /// # Errors
    ///
    /// [`TopicError`]: a bad name or setting, a limit, an existing topic, or storage failure.
    pub async fn create_topic(
        &self,
        caller: &Caller,
        name: &str,
        partitions: u32,
        capacity: u64,
        chunk_size: u64,
    ) -> Result<(), TopicError> {
        self.may_create_topic(caller, name)?;
        // The creator's topic bytes (superusers are not held to `principal_topic_bytes_max`).
        let principal = caller.principal();
        let bounded =
            !self.access.permissions.is_superuser(principal) || !caller.is_authenticated();
        let limit = if bounded { self.usage(caller).topic_bytes_limit() } else { 0 };
        let asked = self.topics.ring_bytes_asked(partitions, capacity);
        let size_of = |topic: &str| {
            let settings = *self.topics.get(topic)?.settings();
            Some(u64::from(settings.partitions).saturating_mul(settings.capacity))
        };
        let claim = self.owners.claim(principal, asked, limit, size_of)?;
        let topics = Arc::clone(&self.topics);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            topics.create(&name, partitions, capacity, chunk_size)?;
            claim.created(&name);
            Ok(())
        })
        .await
        .unwrap_or_else(|source| Err(TopicError::TaskFailed { task: "create the topic", source }))
    }

    /// Deletes a topic and forgets every group's committed offsets on it (see
    /// [`Coordinator::delete_topic`]).
    ///
    /// # Errors
    ///
    /// [`TopicError::Unknown`], or an I/O failure removing the files.
    pub async fn delete_topic(&self, caller: &Caller, name: &str) -> Result<(), TopicError> {
        self.access.check(caller, ResourceKind::Topic, name, Operation::Delete)?;
        let owners = Arc::clone(&self.owners);
        let topic = name.to_owned();
        let owner = tokio::task::spawn_blocking(move || owners.forget(&topic)).await.ok().flatten();
        let deleted = self.groups.delete_topic(name).await;
        if let (Err(_), Some(owner)) = (&deleted, owner) {
            let (owners, topic) = (Arc::clone(&self.owners), name.to_owned());
            let _ = tokio::task::spawn_blocking(move || owners.restore(&topic, owner)).await;
        }
        deleted
    }

    /// The name and partition count of every topic `caller` may describe, sorted by name.
    pub fn list_topics(&self, caller: &Caller) -> Vec<(Arc<str>, u32)> {
        let mut topics = self.topics.list();
        topics.retain(|(name, _)| {
            self.access.check(caller, ResourceKind::Topic, name, Operation::Describe).is_ok()
        });
        topics
    }

    /// The topic named `name`, if `caller` may describe it (asked first, so that a topic the
    /// caller may not see is refused whether it exists or not).
    ///
    /// # Errors
    ///
    /// [`TopicError::Unauthorized`], [`TopicError::Unknown`].
    pub fn topic(&self, caller: &Caller, name: &str) -> Result<TopicHandle, TopicError> {
        self.access.check(caller, ResourceKind::Topic, name, Operation::Describe)?;
        self.topics
            .get(name)
            .map(|topic| TopicHandle { topic })
            .ok_or_else(|| TopicError::Unknown(name.to_owned()))
    }

    /// Partition `index` of `topic`.
    ///
    /// # Errors
    ///
    /// [`ProduceError::UnknownPartition`] with the partition count.
    pub fn partition(
        &self,
        topic: &TopicHandle,
        index: u32,
    ) -> Result<PartitionHandle, ProduceError> {
        let partitions = topic.topic.partitions();
        partitions
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .map(|partition| PartitionHandle { partition: Arc::clone(partition) })
            .ok_or_else(|| ProduceError::UnknownPartition {
                topic: topic.name().to_owned(),
                partition: index,
                count: partitions.len(),
            })
    }

    /// Every partition of `topic`, by index.
    pub fn partitions(&self, topic: &TopicHandle) -> Vec<PartitionHandle> {
        let partitions = topic.topic.partitions().iter();
        partitions.map(|partition| PartitionHandle { partition: Arc::clone(partition) }).collect()
    }

    /// A partition's offsets now.
    pub fn offsets(&self, partition: &PartitionHandle) -> PartitionOffsets {
        let log = partition.partition.log();
        PartitionOffsets {
            earliest: log.earliest_offset(),
            next: log.next_offset(),
            durable: log.durable_offset(),
        }
    }

    /// The earliest record of `partition` whose timestamp is at least `timestamp`.
    pub fn offset_for_timestamp(
        &self,
        partition: &PartitionHandle,
        timestamp: i64,
    ) -> Option<TimedOffset> {
        partition.partition.log().offset_for_timestamp(timestamp)
    }

    /// The first record of `partition` with its largest timestamp.
    pub fn max_timestamp(&self, partition: &PartitionHandle) -> Option<TimedOffset> {
        partition.partition.log().max_timestamp_offset()
    }

    /// The largest batch `partition` accepts.
    pub fn batch_size_max(&self, partition: &PartitionHandle) -> u32 {
        partition.partition.log().batch_size_max()
    }

    // ----- produce ------------------------------------------------------------------------

    /// Validates `batch` in place and appends it to `partition` (one copy into the ring), unless
    /// it is an idempotent producer's retry; counts it; and, for `Acks::Synced` (or a broker that
    /// syncs always), asks for the sync the acknowledgement must wait for. `timeout` bounds the
    /// wait for a busy chunk and the sync (capped at the request timeout; `None`: the request
    /// timeout).
    ///
    /// # Errors
    ///
    /// A [`ProduceError`] naming what was refused; nothing was written then.
    pub async fn produce(
        &self,
        caller: &Caller,
        partition: &PartitionHandle,
        batch: &[u8],
        acks: Acks,
        timeout: Option<Duration>,
    ) -> Result<Produced, ProduceError> {
        self.access.check(caller, ResourceKind::Topic, partition.topic(), Operation::Produce)?;
        let started = Instant::now();
        let log = partition.partition.log();
        let view =
            BatchView::validate(batch, log.batch_size_max()).map_err(|error| match error {
                DecodeError::TooLarge { field: "batch_size", size, max, .. } => {
                    ProduceError::BatchTooLarge {
                        topic: partition.topic().to_owned(),
                        partition: partition.index(),
                        size,
                        max,
                    }
                }
                DecodeError::Unsupported { .. } => ProduceError::Unsupported(error),
                error => ProduceError::CorruptBatch(error),
            })?;
        let timeout = timeout.map_or(self.settings.request_timeout, |timeout| {
            timeout.min(self.settings.request_timeout)
        });
        let deadline = started + timeout;
        let stored = partition
            .partition
            .append(&view, deadline)
            .await
            .map_err(|error| ProduceError::from_append(error, partition))?;
        let metrics = &self.metrics;
        let size = batch.len() as u64;
        Metrics::add(&metrics.produce_requests, 1);
        if stored.duplicate {
            metrics.duplicate_batch();
        } else {
            Metrics::add(&metrics.records_in, u64::from(view.record_count()));
            Metrics::add(&metrics.bytes_in, size);
            Metrics::add(&metrics.produce_copy_bytes, size);
            partition.partition.counters().produced(u64::from(view.record_count()), size);
        }
        let acks = match (acks, self.settings.sync) {
            (Acks::None, _) => Acks::None,
            (_, SyncPolicy::Always) => Acks::Synced,
            (acks, _) => acks,
        };
        let position = stored.appended.end_position;
        let sync = match acks {
            Acks::Synced => {
                partition.partition.request_sync(position);
                Some(SyncWait { partition: partition.clone(), position, deadline })
            }
            Acks::None if self.settings.sync == SyncPolicy::Always => {
                partition.partition.request_sync(position);
                None
            }
            _ => None,
        };
        if sync.is_none() {
            metrics.produce_took(started.elapsed());
        }
        let throttle = self.usage(caller).take(Direction::Produce, size);
        Ok(Produced {
            base_offset: stored.appended.base_offset,
            duplicate: stored.duplicate,
            acks,
            sync,
            throttle,
        })
    }

    /// How the sync `wait` stands now.
    pub fn sync_state(&self, wait: &SyncWait) -> SyncState {
        let partition = &wait.partition.partition;
        if partition.synced_position() >= wait.position {
            SyncState::Done
        } else if let Some(failure) = partition.sync_failure() {
            SyncState::Failed(failure.to_string())
        } else if Instant::now() >= wait.deadline {
            SyncState::TimedOut
        } else {
            SyncState::Pending
        }
    }

    /// Completes when the sync `wait` may have changed state (register it, then check
    /// [`sync_state`](Self::sync_state), then await it).
    pub async fn sync_changed(&self, wait: &SyncWait) {
        let partition = &wait.partition.partition;
        let done = partition.sync_done();
        tokio::pin!(done);
        done.as_mut().enable();
        if self.sync_state(wait) != SyncState::Pending {
            return;
        }
        let _ = tokio::time::timeout_at(wait.deadline, done).await;
    }

    /// Waits for the sync `wait` (for front ends that answer in line) and says how it ended.
    pub async fn wait_synced(&self, wait: &SyncWait, started: Instant) -> SyncState {
        loop {
            match self.sync_state(wait) {
                SyncState::Pending => self.sync_changed(wait).await,
                state => {
                    if state == SyncState::Done {
                        self.metrics.produce_took(started.elapsed());
                    }
                    return state;
                }
            }
        }
    }

    /// Counts a synced produce that a front end acknowledged (for waits it ran itself).
    pub fn produce_acknowledged(&self, started: Instant) {
        self.metrics.produce_took(started.elapsed());
    }

    // ----- fetch --------------------------------------------------------------------------

    /// The long-poll wait a fetch asking for `requested` gets.
    pub fn fetch_wait(&self, requested: Duration) -> Duration {
        requested.min(self.settings.fetch_wait_max)
    }

    /// Reads whole batches of `partition` from the one holding `offset`, up to about
    /// `max_bytes` (at least one batch): a view of the mapped ring, no copy.
    ///
    /// # Errors
    ///
    /// [`FetchError::OffsetOutOfRange`] with the partition's range, or [`FetchError::Busy`].
    pub fn read(
        &self,
        caller: &Caller,
        partition: &PartitionHandle,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadOutcome, FetchError> {
        self.access.check(caller, ResourceKind::Topic, partition.topic(), Operation::Consume)?;
        partition
            .partition
            .log()
            .read(offset, max_bytes)
            .map_err(|error| read_error(partition, error))
    }

    /// Opens a partition for a same-host reader: where to start reading `offset`, and the ring
    /// file and cursor page to map. Checked as a fetch is (consume permission on the topic); what
    /// the reader then reads costs the broker nothing, so no fetch quota applies to it.
    ///
    /// # Errors
    ///
    /// As [`Core::read`], or [`FetchError::LocalOff`] / [`FetchError::LocalFiles`].
    pub fn local_open(
        &self,
        caller: &Caller,
        partition: &PartitionHandle,
        offset: u64,
    ) -> Result<LocalOpened, FetchError> {
        self.access.check(caller, ResourceKind::Topic, partition.topic(), Operation::Consume)?;
        let log = partition.partition.log();
        let start = log.local_start(offset).map_err(|error| read_error(partition, error))?;
        let files = log
            .local_files()
            .ok_or(FetchError::LocalOff)?
            .map_err(|error| FetchError::LocalFiles(error.to_string()))?;
        Ok(LocalOpened { start, files, batch_size_max: log.batch_size_max() })
    }

    /// Counts `bytes` of record batches `caller` is about to be sent against its fetch quota;
    /// how long its connection must then wait before its next request (zero within the quota).
    pub fn fetch_throttle(&self, caller: &Caller, bytes: u64) -> Duration {
        self.usage(caller).take(Direction::Fetch, bytes)
    }

    fn usage<'c>(&self, caller: &'c Caller) -> &'c Arc<Usage> {
        caller.usage(|principal| self.quotas.usage(principal))
    }

    /// Counts a connection acting as `caller` against `principal_connection_count_max`, for as
    /// long as the [`Seat`] is held: from its login (or its client certificate), or from its
    /// start on a broker with `auth = off` (where every client is `ANONYMOUS`). `None` for a
    /// connection that has not logged in on a broker that requires it (it can do nothing yet).
    ///
    /// # Errors
    ///
    /// [`TooManyConnections`].
    pub fn seat(&self, caller: &Caller) -> Result<Option<Seat>, TooManyConnections> {
        if self.access.enforced && !caller.is_authenticated() {
            return Ok(None);
        }
        self.quotas.seat(self.usage(caller)).map(Some)
    }

    /// Counts a read that a front end is about to send: counted before the write, so a client
    /// that has the records and then asks for the counters never sees fewer than it received.
    pub fn fetched(&self, partition: &PartitionHandle, outcome: &ReadOutcome) {
        let size = outcome.batches.len() as u64;
        let metrics = &self.metrics;
        Metrics::add(&metrics.bytes_out, size);
        Metrics::add(&metrics.records_out, outcome.record_count);
        partition.partition.counters().fetched(outcome.record_count, size);
    }

    /// Records a fetch answered with data (its response written), `started` when it arrived.
    pub fn fetch_answered(&self, started: Instant) {
        Metrics::add(&self.metrics.fetch_requests, 1);
        self.metrics.fetch_took(started.elapsed());
    }

    /// A future that completes after the next append to `partition` (create it, enable it,
    /// then check the offsets, then await it).
    pub fn appended<'p>(&self, partition: &'p PartitionHandle) -> Notified<'p> {
        partition.partition.appended()
    }

    // ----- groups and producer ids ----------------------------------------------------------

    /// See [`Coordinator::join`].
    ///
    /// # Errors
    ///
    /// As [`Coordinator::join`].
    pub async fn join_group(
        &self,
        caller: &Caller,
        group: &str,
        topic: &str,
        member_id: &str,
        session_timeout: Duration,
        client: &str,
    ) -> Result<Assignment, GroupError> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Read)?;
        self.access.check(caller, ResourceKind::Topic, topic, Operation::Consume)?;
        self.groups.join(group, topic, member_id, session_timeout, client).await
    }

    /// See [`Coordinator::heartbeat`].
    ///
    /// # Errors
    ///
    /// As [`Coordinator::heartbeat`].
    pub async fn heartbeat(
        &self,
        caller: &Caller,
        group: &str,
        member_id: &str,
        client: &str,
    ) -> Result<Assignment, GroupError> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Read)?;
        self.groups.heartbeat(group, member_id, client).await
    }

    /// See [`Coordinator::leave`].
    ///
    /// # Errors
    ///
    /// As [`Coordinator::leave`].
    pub async fn leave_group(
        &self,
        caller: &Caller,
        group: &str,
        member_id: &str,
    ) -> Result<(), GroupError> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Read)?;
        self.groups.leave(group, member_id).await
    }

    /// See [`Coordinator::commit`].
    ///
    /// # Errors
    ///
    /// As [`Coordinator::commit`].
    pub async fn commit_offsets(
        &self,
        caller: &Caller,
        group: &str,
        topic: &str,
        member_id: &str,
        generation: u32,
        offsets: &[PartitionOffset],
    ) -> Result<(), GroupError> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Read)?;
        self.access.check(caller, ResourceKind::Topic, topic, Operation::Consume)?;
        self.groups.commit(group, topic, member_id, generation, offsets).await
    }

    /// The committed offsets of `group` on `topic` (the caller must be allowed to describe
    /// both).
    ///
    /// # Errors
    ///
    /// [`Denied`].
    pub async fn committed_offsets(
        &self,
        caller: &Caller,
        group: &str,
        topic: &str,
    ) -> Result<Vec<PartitionOffset>, Denied> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Describe)?;
        self.access.check(caller, ResourceKind::Topic, topic, Operation::Describe)?;
        Ok(self.groups.committed(group, topic).await)
    }

    /// Every group with members or committed offsets that `caller` may describe, sorted by
    /// name (all of them for a caller that may describe the cluster).
    pub async fn list_groups(&self, caller: &Caller) -> Vec<GroupListing> {
        let mut groups = self.groups.list().await;
        if self.access.check_cluster(caller, Operation::Describe).is_err() {
            groups.retain(|group| {
                let name = &group.group;
                self.access.check(caller, ResourceKind::Group, name, Operation::Describe).is_ok()
            });
        }
        groups
    }

    /// See [`Coordinator::describe`].
    ///
    /// # Errors
    ///
    /// As [`Coordinator::describe`].
    pub async fn describe_group(
        &self,
        caller: &Caller,
        group: &str,
    ) -> Result<GroupInfo, GroupError> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Describe)?;
        let mut info = self.groups.describe(group).await?;
        // Only the topics the caller may describe: their names and offsets.
        let visible = |topic: &str| {
            self.access.check(caller, ResourceKind::Topic, topic, Operation::Describe).is_ok()
        };
        info.offsets.retain(|offset| visible(&offset.topic));
        if !info.topic.is_empty() && !visible(&info.topic) {
            info.topic.clear();
        }
        Ok(info)
    }

    /// Kafka's `JoinGroup`; see [`Coordinator::join_classic`].
    pub async fn join_kafka_group(&self, caller: &Caller, request: JoinRequest) -> Reply<Joined> {
        if let Err(denied) =
            self.access.check(caller, ResourceKind::Group, &request.group, Operation::Read)
        {
            return Reply::Ready(Err(denied.into()));
        }
        self.groups.join_classic(request).await
    }

    /// Kafka's `SyncGroup`; see [`Coordinator::sync_classic`].
    pub async fn sync_kafka_group(&self, caller: &Caller, request: SyncRequest) -> Reply<Bytes> {
        if let Err(denied) =
            self.access.check(caller, ResourceKind::Group, &request.group, Operation::Read)
        {
            return Reply::Ready(Err(denied.into()));
        }
        self.groups.sync_classic(request).await
    }

    /// Kafka's `Heartbeat`.
    ///
    /// # Errors
    ///
    /// As [`Coordinator::heartbeat_classic`].
    pub async fn heartbeat_kafka_group(
        &self,
        caller: &Caller,
        group: &str,
        generation: i32,
        member: &MemberRef,
    ) -> Result<(), GroupError> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Read)?;
        self.groups.heartbeat_classic(group, generation, member).await
    }

    /// Kafka's `LeaveGroup`: each member's outcome.
    ///
    /// # Errors
    ///
    /// [`Denied`] unless the caller may read the group.
    pub async fn leave_kafka_group(
        &self,
        caller: &Caller,
        group: &str,
        members: &[MemberRef],
    ) -> Result<Vec<Result<(), GroupError>>, Denied> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Read)?;
        Ok(self.groups.leave_classic(group, members).await)
    }

    /// Kafka's `OffsetCommit`: each topic's outcome, partition by partition.
    ///
    /// # Errors
    ///
    /// As [`Coordinator::commit_classic`].
    ///
    /// The caller must be allowed to read the group; each topic it may not consume is refused
    /// alone (its partitions answered [`GroupError::Unauthorized`], nothing of it stored).
    pub async fn commit_kafka_offsets(
        &self,
        caller: &Caller,
        group: &str,
        generation: i32,
        member: &MemberRef,
        topics: &[(String, Vec<PartitionOffset>)],
    ) -> Result<Vec<TopicCommit>, GroupError> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Read)?;
        let denied: Vec<Option<Denied>> = topics
            .iter()
            .map(|(topic, _)| {
                self.access.check(caller, ResourceKind::Topic, topic, Operation::Consume).err()
            })
            .collect();
        let allowed: Vec<(String, Vec<PartitionOffset>)> = topics
            .iter()
            .zip(&denied)
            .filter(|(_, denied)| denied.is_none())
            .map(|(topic, _)| topic.clone())
            .collect();
        let mut committed =
            self.groups.commit_classic(group, generation, member, &allowed).await?.into_iter();
        let mut answers = Vec::with_capacity(topics.len());
        for ((_, partitions), denied) in topics.iter().zip(denied) {
            match denied {
                None => answers.extend(committed.next()),
                Some(denied) => answers.push(TopicCommit {
                    checked: partitions.iter().map(|_| Err(denied.clone().into())).collect(),
                    stored: Ok(()),
                }),
            }
        }
        Ok(answers)
    }

    /// Every committed offset of `group` on the topics `caller` may describe (the caller must
    /// be allowed to describe the group).
    ///
    /// # Errors
    ///
    /// [`Denied`].
    pub async fn committed_offsets_all(
        &self,
        caller: &Caller,
        group: &str,
    ) -> Result<Vec<(OffsetKey, u64)>, Denied> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Describe)?;
        let mut all = self.groups.store().all_committed().await;
        all.retain(|(key, _)| {
            key.group == group
                && self
                    .access
                    .check(caller, ResourceKind::Topic, &key.topic, Operation::Describe)
                    .is_ok()
        });
        Ok(all)
    }

    /// A group described in Kafka's terms.
    ///
    /// # Errors
    ///
    /// [`Denied`] unless the caller may describe the group.
    pub async fn describe_kafka_group(
        &self,
        caller: &Caller,
        group: &str,
    ) -> Result<ClassicDescription, Denied> {
        self.access.check(caller, ResourceKind::Group, group, Operation::Describe)?;
        Ok(self.groups.describe_classic(group).await)
    }

    /// Applies the Kafka groups' deadlines (the broker calls it a few times a second).
    pub async fn kafka_group_upkeep(&self) {
        self.groups.classic_upkeep().await;
    }

    /// A fresh producer id (`producer_id` < 0), or the next epoch of `producer_id`.
    ///
    /// # Errors
    ///
    /// As [`Coordinator::init_producer`].
    ///
    /// The caller must be allowed idempotent writes on the cluster, or to produce to some
    /// topic (as Kafka allows since 2.8).
    pub async fn init_producer(
        &self,
        caller: &Caller,
        producer_id: i64,
        epoch: i16,
    ) -> Result<ProducerGrant, GroupError> {
        if !self.access.allows_some(caller, ResourceKind::Topic, Operation::Produce) {
            self.access.check_cluster(caller, Operation::IdempotentWrite)?;
        }
        self.groups.init_producer(producer_id, epoch).await
    }

    // ----- the broker's own upkeep -----------------------------------------------------------

    /// Asks for a sync of every partition (the group state log included) with unsynced data:
    /// the `interval` sync policy's tick.
    pub fn sync_all(&self) {
        let sync = |partition: &Arc<Partition>| {
            let end = partition.log().published_end();
            if end > partition.synced_position() {
                partition.request_sync(end);
            }
        };
        for topic in self.topics.all() {
            topic.partitions().iter().for_each(sync);
        }
        sync(self.groups.store().partition());
    }

    /// The metrics page: every partition's gauges, the pool's and the groups' lags, read now.
    pub async fn render_metrics(&self, pool: PoolStats) -> String {
        let lags: Vec<Lag> = self.groups.lags().await;
        let lags: Vec<GroupLag<'_>> = lags
            .iter()
            .map(|lag| GroupLag {
                group: &lag.key.group,
                topic: &lag.key.topic,
                partition: lag.key.partition,
                records: lag.records,
            })
            .collect();
        let topics = self.topics.all();
        let partitions: Vec<PartitionGauges<'_>> = topics
            .iter()
            .flat_map(|topic| topic.partitions().iter().map(move |partition| (topic, partition)))
            .map(|(topic, partition)| {
                let log = partition.log();
                PartitionGauges {
                    topic: topic.name(),
                    partition: partition.index(),
                    capacity: log.capacity(),
                    used_bytes: log.used_bytes(),
                    wraps: log.published_end() / log.capacity().max(1),
                    earliest_offset: log.earliest_offset(),
                    next_offset: log.next_offset(),
                    durable_offset: log.durable_offset(),
                }
            })
            .collect();
        self.metrics.render(&partitions, pool, &lags)
    }

    /// Syncs every partition and the group state log and writes clean-shutdown checkpoints.
    /// Blocks.
    pub fn close_blocking(&self) {
        self.topics.close_blocking();
        if let Err(error) = self.groups.store().close_blocking() {
            tracing::error!(%error, "closing the group state log failed; it will recover by a full scan");
        }
    }
}

impl ProduceError {
    fn from_append(error: AppendError, partition: &PartitionHandle) -> Self {
        let topic = partition.topic();
        use crate::producers::SequenceError;
        match error {
            AppendError::Busy { readers } => ProduceError::Busy { readers },
            AppendError::Closed => ProduceError::TopicDeleted { topic: topic.to_owned() },
            AppendError::Sequence(error @ SequenceError::Fenced { .. }) => {
                ProduceError::Fenced(error)
            }
            AppendError::Sequence(error) => ProduceError::OutOfOrderSequence(error),
            AppendError::Storage(StorageError::Poisoned(poison)) => ProduceError::Poisoned(poison),
            AppendError::Storage(StorageError::BatchTooLarge { size, max }) => {
                ProduceError::BatchTooLarge {
                    topic: topic.to_owned(),
                    partition: partition.index(),
                    size,
                    max: u64::from(max),
                }
            }
            AppendError::Storage(error) => ProduceError::Storage(error),
        }
    }
}

/// A log read's failure as the fetch error a front end answers with.
fn read_error(partition: &PartitionHandle, error: ReadError) -> FetchError {
    match error {
        ReadError::OffsetOutOfRange { offset, earliest, next } => FetchError::OffsetOutOfRange {
            topic: partition.topic().to_owned(),
            partition: partition.index(),
            offset,
            earliest,
            next,
        },
        _ => FetchError::Busy,
    }
}
