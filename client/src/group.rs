//! Consumer groups: a [`GroupConsumer`] joins a group, reads the partitions the broker assigns
//! it and commits its progress.
//!
//! The broker assigns each partition of the topic to exactly one live member (a sticky, balanced
//! strategy: see the broker's `groups` module) and moves partitions when members join, leave or
//! stop heartbeating. A background task
//! heartbeats at the interval the broker asks for and picks up new assignments; each assigned
//! partition is read by its own fetch task (its own connection, long-polling), whose records
//! [`GroupConsumer::next`] hands out. A partition newly assigned starts at the group's committed
//! offset, or where [`GroupConsumerBuilder::start`] says if it has none.
//!
//! **At-least-once.** A record counts as processed once `next` is called again after returning
//! it (or [`GroupConsumer::commit`] / [`GroupConsumer::close`] is called). Only processed
//! positions are committed: automatically every `auto_commit` interval (and before each
//! heartbeat, so little is redone after a rebalance), or by `commit`. A member that crashes is
//! replaced and its partitions resume from the last commit: records after it are delivered again,
//! none is skipped. A committed position the partition no longer holds (reclaimed by the ring)
//! resumes at the earliest offset still held.
//!
//! **Same-host members.** With [`GroupConsumerBuilder::read_locally`] a member on the broker's own
//! host reads each partition it is assigned in place, through the broker's local socket (a
//! [`crate::LocalConsumer`] per partition: no request per fetch); joining, heartbeats and commits
//! are unchanged, so local and networked members share one group and its assignment.
//!
//! **Losing the session.** If no heartbeat succeeds for a whole session timeout (the broker is
//! unreachable, or this process was paused), the broker has given this member's partitions to
//! others: the consumer stops reading them at once and joins again when the broker answers.
//! Records already handed out before that may be processed by two members; commits of the old
//! member are refused, so the group's position never goes backwards because of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use ringmq_protocol::group::{
    CommitOffsets, CommittedOffsets, Entries, GroupAssignment, GroupTopic, Heartbeat, JoinGroup,
    LeaveGroup, PartitionOffset,
};
use ringmq_protocol::{ErrorCode, Request};

use crate::connection::{Connection, Endpoint};
use crate::consumer::{ConsumerBuilder, ConsumerRecord, StartOffset};
use crate::local::LocalConsumerBuilder;
use crate::{ClientError, DEFAULT_TIMEOUT};

/// Records buffered between the fetch tasks and `next`.
const RECORD_BUFFER: usize = 4096;
/// How soon to heartbeat again while partitions meant for this member are still held by others.
const UNSETTLED_RETRY: Duration = Duration::from_millis(50);
/// Shortest wait for a heartbeat's answer.
const HEARTBEAT_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// Wait after a failed fetch before the next.
const FETCH_BACKOFF: Duration = Duration::from_millis(200);

/// Settings of a [`GroupConsumer`].
#[derive(Debug, Clone)]
pub struct GroupConsumerBuilder {
    endpoint: Endpoint,
    group: String,
    topic: String,
    session_timeout: Duration,
    auto_commit: Option<Duration>,
    start: StartOffset,
    max_wait: Duration,
    max_bytes: u32,
    timeout: Duration,
    local: Option<PathBuf>,
}

impl GroupConsumerBuilder {
    pub(crate) fn new(endpoint: &Endpoint, group: &str, topic: &str) -> Self {
        Self {
            endpoint: endpoint.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            session_timeout: Duration::from_secs(10),
            auto_commit: Some(Duration::from_secs(1)),
            start: StartOffset::Earliest,
            max_wait: Duration::from_millis(500),
            max_bytes: 1 << 20,
            timeout: DEFAULT_TIMEOUT,
            local: None,
        }
    }

    /// Read the assigned partitions in place, on the broker's own host, through its local
    /// socket at `path` (the broker's `--local-listen`): each by a [`crate::LocalConsumer`],
    /// with no request per fetch (`max_bytes` does not apply; `max_wait` bounds each wait at the
    /// end of a partition). The group protocol still goes to the address the builder was made
    /// for, which may be the same socket.
    #[must_use]
    pub fn read_locally(mut self, path: impl AsRef<Path>) -> Self {
        self.local = Some(path.as_ref().to_owned());
        self
    }

    /// How long the broker keeps this member without a heartbeat [default: 10 s]. A crashed
    /// member's partitions move after this long; the broker clamps it to its configured bounds.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Commit processed positions this often, or `None` to commit only with
    /// [`GroupConsumer::commit`] [default: every second].
    #[must_use]
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.auto_commit = interval;
        self
    }

    /// Where a partition without a committed offset starts: earliest or latest [default:
    /// earliest]. `StartOffset::Offset` is taken as earliest.
    #[must_use]
    pub fn start(mut self, start: StartOffset) -> Self {
        self.start = start;
        self
    }

    /// How long one fetch waits at the broker for new records [default: 500 ms].
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Soft limit on the bytes of one fetch [default: 1 MiB].
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u32) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Timeout of connecting and of each request [default: 30 s].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Joins the group and starts heartbeating.
    ///
    /// # Errors
    ///
    /// A connection error, or [`ClientError::Broker`] with `UnknownTopic` or `InvalidRequest`
    /// (a bad group name, or a group that consumes another topic).
    pub async fn build(self) -> Result<GroupConsumer, ClientError> {
        let mut coordinator =
            Connection::open(&self.endpoint, self.timeout, "ringmq-client group").await?;
        let session_timeout = self.session_timeout;
        let assignment =
            join(&mut coordinator, &self.group, &self.topic, "", session_timeout).await?;
        let (version, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            settings: self,
            coordinator: tokio::sync::Mutex::new(coordinator),
            membership: Mutex::new(assignment),
            progress: Mutex::new(Progress::default()),
            version,
        });
        let heartbeat = tokio::spawn(heartbeat_loop(Arc::clone(&shared)));
        let (records_tx, records_rx) = mpsc::channel(RECORD_BUFFER);
        let version = shared.version.subscribe();
        Ok(GroupConsumer {
            shared,
            heartbeat,
            records_tx,
            records_rx,
            version,
            fetchers: BTreeMap::new(),
            next_epoch: 1,
            synced: false,
            last_returned: None,
        })
    }
}

/// What the broker last told this member.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    member_id: String,
    generation: u32,
    partitions: Vec<u32>,
    settled: bool,
    heartbeat_interval: Duration,
    session_timeout: Duration,
}

/// Positions per partition: processed (safe to commit) and committed.
#[derive(Debug, Default)]
struct Progress {
    processed: BTreeMap<u32, u64>,
    committed: BTreeMap<u32, u64>,
}

#[derive(Debug)]
struct Shared {
    settings: GroupConsumerBuilder,
    /// Join, heartbeat, commit and leave go over this connection.
    coordinator: tokio::sync::Mutex<Connection>,
    membership: Mutex<Membership>,
    progress: Mutex<Progress>,
    /// Bumped whenever the member's partitions change.
    version: watch::Sender<u64>,
}

impl Shared {
    fn membership(&self) -> Membership {
        self.membership.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what the broker said; wakes `next` if the partitions changed.
    fn update(&self, membership: Membership) {
        let mut current = self.membership.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = current.partitions != membership.partitions
            || current.member_id != membership.member_id;
        *current = membership;
        drop(current);
        if changed {
            self.version.send_modify(|version| *version += 1);
        }
    }

    /// Commits processed positions not yet committed, for partitions this member holds.
    async fn commit(&self) -> Result<(), ClientError> {
        let membership = self.membership();
        let offsets: Vec<PartitionOffset> = {
            let progress = self.progress();
            progress
                .processed
                .iter()
                .filter(|(partition, _)| membership.partitions.contains(partition))
                .filter(|(partition, offset)| progress.committed.get(partition) != Some(offset))
                .map(|(&partition, &offset)| PartitionOffset { partition, offset })
                .collect()
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let settings = &self.settings;
        let request = Request::CommitOffsets(CommitOffsets {
            group: &settings.group,
            topic: &settings.topic,
            member_id: &membership.member_id,
            generation: membership.generation,
            offsets: Entries::from_slice(&offsets),
        });
        let mut coordinator = self.coordinator.lock().await;
        coordinator.call(&request, settings.timeout).await?;
        drop(coordinator);
        let mut progress = self.progress();
        for entry in offsets {
            progress.committed.insert(entry.partition, entry.offset);
        }
        Ok(())
    }

    /// Heartbeats, waiting at most `timeout` (reconnecting included).
    async fn heartbeat(&self, timeout: Duration) -> Result<(), ClientError> {
        let membership = self.membership();
        let settings = &self.settings;
        let request = Request::Heartbeat(Heartbeat {
            group: &settings.group,
            member_id: &membership.member_id,
            generation: membership.generation,
        });
        let mut coordinator = self.coordinator.lock().await;
        // The bound covers reconnecting too (a broker that accepts but does not answer).
        let answer = tokio::time::timeout(timeout, coordinator.call(&request, timeout))
            .await
            .unwrap_or(Err(ClientError::Timeout { operation: "heartbeat", after: timeout }));
        let updated = match answer {
            Ok((_, body)) => assignment(&body)?,
            Err(ClientError::Broker { code: ErrorCode::UnknownMember, .. }) => {
                // Expired (or the broker restarted): join again as a new member.
                join(
                    &mut coordinator,
                    &settings.group,
                    &settings.topic,
                    "",
                    settings.session_timeout,
                )
                .await?
            }
            Err(error) => return Err(error),
        };
        drop(coordinator);
        self.update(updated);
        Ok(())
    }
}

async fn join(
    connection: &mut Connection,
    group: &str,
    topic: &str,
    member_id: &str,
    session_timeout: Duration,
) -> Result<Membership, ClientError> {
    let request = Request::JoinGroup(JoinGroup {
        group,
        topic,
        member_id,
        session_timeout_ms: u32::try_from(session_timeout.as_millis()).unwrap_or(u32::MAX).max(1),
    });
    let timeout = connection.timeout;
    let (_, body) = connection.call(&request, timeout).await?;
    assignment(&body)
}

fn assignment(body: &[u8]) -> Result<Membership, ClientError> {
    let reply = GroupAssignment::decode(body)?;
    Ok(Membership {
        member_id: reply.member_id.to_owned(),
        generation: reply.generation,
        partitions: reply.partitions.iter().collect(),
        settled: reply.settled,
        heartbeat_interval: Duration::from_millis(u64::from(reply.heartbeat_interval_ms).max(10)),
        session_timeout: Duration::from_millis(u64::from(reply.session_timeout_ms).max(10)),
    })
}

/// Heartbeats (and auto-commits) until the consumer is dropped or closed.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut last_heartbeat = Instant::now();
    let mut last_commit = Instant::now();
    let mut last_answered = Instant::now();
    loop {
        let membership = shared.membership();
        let heartbeat_due = if membership.settled {
            last_heartbeat + membership.heartbeat_interval
        } else {
            last_heartbeat + UNSETTLED_RETRY.min(membership.heartbeat_interval)
        };
        let commit_due = shared.settings.auto_commit.map(|interval| last_commit + interval);
        let wake = commit_due.map_or(heartbeat_due, |due| due.min(heartbeat_due));
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        let heartbeating = now >= heartbeat_due;
        // Commit before a heartbeat too: a heartbeat may take partitions away, and what was
        // processed on them should not be redone by their next owner.
        if commit_due.is_some_and(|due| now >= due) || (heartbeating && commit_due.is_some()) {
            last_commit = now;
            // A refused commit (the partition moved, a stale generation) is retried with the
            // next heartbeat's assignment; nothing is lost, some records may be redone.
            let _ = shared.commit().await;
        }
        if heartbeating {
            last_heartbeat = now;
            // Wait for the answer as long as the session may still be alive: a slow answer (the
            // broker busy with a commit's sync) still counts, and still brings any release of a
            // partition this member must hand over.
            // Once the session is lost (partitions already let go) there is no hurry: the next
            // answer, however late, joins again.
            let left = membership.session_timeout.saturating_sub(last_answered.elapsed());
            let timeout = if left.is_zero() {
                shared.settings.timeout
            } else {
                shared.settings.timeout.min(left).max(HEARTBEAT_TIMEOUT_MIN)
            };
            if shared.heartbeat(timeout).await.is_ok() {
                last_answered = Instant::now();
            } else if last_answered.elapsed() >= membership.session_timeout {
                // The broker has expired this member by now and moved its partitions: stop
                // reading them (the next answered heartbeat joins again).
                let lost = shared.membership();
                if !lost.partitions.is_empty() {
                    shared.update(Membership { partitions: Vec::new(), settled: false, ..lost });
                }
            }
        }
    }
}

/// A record or error from a partition's fetch task.
#[derive(Debug)]
struct Fetched {
    partition: u32,
    epoch: u64,
    result: Result<ConsumerRecord, ClientError>,
}

/// A partition being read.
#[derive(Debug)]
struct Fetcher {
    task: JoinHandle<()>,
    epoch: u64,
}

/// A member of a consumer group; see the module docs.
#[derive(Debug)]
pub struct GroupConsumer {
    shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
    records_tx: mpsc::Sender<Fetched>,
    records_rx: mpsc::Receiver<Fetched>,
    version: watch::Receiver<u64>,
    fetchers: BTreeMap<u32, Fetcher>,
    next_epoch: u64,
    synced: bool,
    last_returned: Option<(u32, u64)>,
}

impl GroupConsumer {
    /// A builder for a member of group `group` reading `topic` on the broker at `address`,
    /// connecting as `options` say, without a [`crate::Client`] (and its admin connection).
    pub fn builder(
        address: &str,
        options: crate::ConnectOptions,
        group: &str,
        topic: &str,
    ) -> GroupConsumerBuilder {
        GroupConsumerBuilder::new(&options.endpoint(address), group, topic)
            .timeout(options.call_timeout())
    }

    /// The member id the broker gave this consumer.
    pub fn member_id(&self) -> String {
        self.shared.membership().member_id
    }

    /// The group generation this member last learned.
    pub fn generation(&self) -> u32 {
        self.shared.membership().generation
    }

    /// The partitions this member holds, as of its last heartbeat.
    pub fn assignment(&self) -> Vec<u32> {
        self.shared.membership().partitions
    }

    /// Heartbeats now (instead of at the next interval) and returns the partitions held.
    ///
    /// # Errors
    ///
    /// A connection error or timeout.
    pub async fn refresh(&self) -> Result<Vec<u32>, ClientError> {
        self.shared.heartbeat(self.shared.settings.timeout).await?;
        Ok(self.assignment())
    }

    /// The next record from the partitions this member holds, waiting (long-polling) until one
    /// arrives. Calling it marks the record it returned last as processed.
    ///
    /// # Errors
    ///
    /// A non-retriable error of a partition's fetch (its topic was deleted, a batch failed
    /// validation); transient errors are retried inside.
    pub async fn next(&mut self) -> Result<ConsumerRecord, ClientError> {
        self.mark_processed();
        loop {
            if !self.synced || self.version.has_changed().unwrap_or(false) {
                self.sync_assignment().await?;
            }
            tokio::select! {
                fetched = self.records_rx.recv() => {
                    let Some(fetched) = fetched else { continue };
                    let current = self
                        .fetchers
                        .get(&fetched.partition)
                        .is_some_and(|fetcher| fetcher.epoch == fetched.epoch);
                    if !current {
                        continue; // From a partition this member no longer holds.
                    }
                    let record = fetched.result?;
                    self.last_returned = Some((record.partition, record.offset));
                    return Ok(record);
                }
                changed = self.version.changed() => {
                    // `changed` marks the version seen: resynchronise explicitly.
                    self.synced = false;
                    if changed.is_err() {
                        // The sender lives in `shared`, which this consumer holds.
                        unreachable!("the membership channel outlives the consumer");
                    }
                }
            }
        }
    }

    /// The next record, or `None` if none arrives within `limit`; as [`GroupConsumer::next`]
    /// otherwise (the record returned last is marked processed either way). Giving up loses
    /// nothing: records the partitions' fetches bring meanwhile wait for the next call.
    ///
    /// ```no_run
    /// # async fn example(mut member: ringmq_client::GroupConsumer) -> Result<(), ringmq_client::ClientError> {
    /// use std::time::Duration;
    /// while let Some(record) = member.next_timeout(Duration::from_millis(100)).await? {
    ///     println!("{}/{}: {} bytes", record.partition, record.offset, record.value.len());
    /// }
    /// member.commit().await?; // Nothing for 100 ms: commit what was processed.
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`GroupConsumer::next`].
    pub async fn next_timeout(
        &mut self,
        limit: Duration,
    ) -> Result<Option<ConsumerRecord>, ClientError> {
        // `next` is cancel safe: a record is taken from the channel only when it is returned,
        // and an assignment sync cut short is done again by the next call.
        match tokio::time::timeout(limit, self.next()).await {
            Ok(record) => record.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Commits the positions after every record returned so far (the last one included).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `NotAssigned` or `StaleGeneration` if a partition moved in a
    /// rebalance this member has not learned of yet, or a connection error.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        self.mark_processed();
        self.shared.commit().await
    }

    /// Commits what was returned (with auto-commit on), leaves the group so its partitions move
    /// at once, and stops.
    ///
    /// # Errors
    ///
    /// The commit's or the leave request's error (the consumer stops anyway).
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.heartbeat.abort();
        let committed = if self.shared.settings.auto_commit.is_some() {
            self.mark_processed();
            self.shared.commit().await
        } else {
            Ok(())
        };
        for fetcher in self.fetchers.values() {
            fetcher.task.abort();
        }
        let membership = self.shared.membership();
        let settings = &self.shared.settings;
        let request = Request::LeaveGroup(LeaveGroup {
            group: &settings.group,
            member_id: &membership.member_id,
        });
        let left = self.shared.coordinator.lock().await.call(&request, settings.timeout).await;
        committed.and(left.map(drop))
    }

    fn mark_processed(&mut self) {
        if let Some((partition, offset)) = self.last_returned.take() {
            if self.fetchers.contains_key(&partition) {
                self.shared.progress().processed.insert(partition, offset + 1);
            }
        }
    }

    /// Starts and stops fetch tasks to match the partitions held.
    ///
    /// Cancel safe: `synced` is set only once every fetch task is started, so a sync cut short
    /// (an error, or `next` dropped) is done again by the next call.
    async fn sync_assignment(&mut self) -> Result<(), ClientError> {
        self.synced = false;
        self.version.borrow_and_update();
        let held: BTreeSet<u32> = self.shared.membership().partitions.into_iter().collect();
        let revoked: Vec<u32> =
            self.fetchers.keys().filter(|partition| !held.contains(partition)).copied().collect();
        for partition in revoked {
            if let Some(fetcher) = self.fetchers.remove(&partition) {
                fetcher.task.abort();
            }
            let mut progress = self.shared.progress();
            progress.processed.remove(&partition);
            progress.committed.remove(&partition);
        }
        let added: Vec<u32> = held
            .iter()
            .filter(|partition| !self.fetchers.contains_key(partition))
            .copied()
            .collect();
        if added.is_empty() {
            self.synced = true;
            return Ok(());
        }
        let committed = self.committed().await?;
        let settings = &self.shared.settings;
        for partition in added {
            let start = match committed.get(&partition) {
                Some(&offset) => {
                    self.shared.progress().committed.insert(partition, offset);
                    StartOffset::Offset(offset)
                }
                None if settings.start == StartOffset::Latest => StartOffset::Latest,
                None => StartOffset::Earliest,
            };
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let records = self.records_tx.clone();
            let task = match &settings.local {
                Some(path) => {
                    let builder = LocalConsumerBuilder::over(
                        &settings.endpoint,
                        path,
                        &settings.topic,
                        partition,
                        settings.timeout,
                    )
                    .start(start)
                    .max_wait(settings.max_wait);
                    tokio::spawn(read_partition_locally(builder, partition, epoch, records))
                }
                None => {
                    let builder =
                        ConsumerBuilder::new(&settings.endpoint, &settings.topic, partition)
                            .start(start)
                            .max_wait(settings.max_wait)
                            .max_bytes(settings.max_bytes)
                            .timeout(settings.timeout);
                    tokio::spawn(fetch_partition(builder, partition, epoch, records))
                }
            };
            self.fetchers.insert(partition, Fetcher { task, epoch });
        }
        self.synced = true;
        Ok(())
    }

    async fn committed(&self) -> Result<BTreeMap<u32, u64>, ClientError> {
        let settings = &self.shared.settings;
        let request =
            Request::FetchCommitted(GroupTopic { group: &settings.group, topic: &settings.topic });
        let mut coordinator = self.shared.coordinator.lock().await;
        let (_, body) = coordinator.call(&request, settings.timeout).await?;
        let offsets = CommittedOffsets::decode(&body)?;
        Ok(offsets.offsets.iter().map(|entry| (entry.partition, entry.offset)).collect())
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Without `close` the member is not removed until its session expires.
        self.heartbeat.abort();
        for fetcher in self.fetchers.values() {
            fetcher.task.abort();
        }
    }
}

/// Where a reader whose position the partition no longer holds goes on: the earliest record
/// held (or, for a position past the end after the topic was recreated, the earliest too).
fn resume_at(earliest: u64, next: u64, offset: u64) -> u64 {
    if offset > next {
        earliest.min(next)
    } else {
        earliest
    }
}

/// Hands a partition reader's outcome on to `records`: the records read; a move to the earliest
/// offset held when the position was reclaimed (`seek`); a pause after a transient error; any
/// other error, then a pause. `false` once the member is gone (the reader stops).
async fn hand_on(
    records: &mpsc::Sender<Fetched>,
    partition: u32,
    epoch: u64,
    read: Result<Vec<ConsumerRecord>, ClientError>,
    seek: impl FnOnce(u64),
) -> bool {
    let send = |result| records.send(Fetched { partition, epoch, result });
    match read {
        Ok(read) => {
            for record in read {
                if send(Ok(record)).await.is_err() {
                    return false;
                }
            }
        }
        Err(ClientError::OffsetOutOfRange { earliest, next, offset }) => {
            // The position was reclaimed (or is past the end, after the topic was recreated): go
            // on from the earliest record held.
            seek(resume_at(earliest, next, offset));
        }
        Err(error) if error.is_retriable() => tokio::time::sleep(FETCH_BACKOFF).await,
        Err(error) => {
            if send(Err(error)).await.is_err() {
                return false;
            }
            tokio::time::sleep(FETCH_BACKOFF).await;
        }
    }
    true
}

/// Reads one partition in place into `records` until aborted, as [`fetch_partition`] does over
/// TCP.
async fn read_partition_locally(
    mut builder: LocalConsumerBuilder,
    partition: u32,
    epoch: u64,
    records: mpsc::Sender<Fetched>,
) {
    let mut consumer = loop {
        match builder.clone().build().await {
            Ok(consumer) => break consumer,
            Err(error) => {
                let start = |to| builder = builder.clone().start(StartOffset::Offset(to));
                if !hand_on(&records, partition, epoch, Err(error), start).await {
                    return;
                }
            }
        }
    };
    loop {
        let read = match consumer.next_batch().await {
            Ok(Some(batch)) => batch.to_records(),
            Ok(None) => {
                // Nothing within `max_wait` (which may be zero): let the runtime's other tasks,
                // and an abort on reassignment, in before reading again.
                tokio::task::yield_now().await;
                continue;
            }
            Err(error) => Err(error),
        };
        if !hand_on(&records, partition, epoch, read, |to| consumer.seek(to)).await {
            return;
        }
    }
}

/// Reads one partition into `records` until aborted.
async fn fetch_partition(
    mut builder: ConsumerBuilder,
    partition: u32,
    epoch: u64,
    records: mpsc::Sender<Fetched>,
) {
    let mut consumer = loop {
        match builder.clone().build().await {
            Ok(consumer) => break consumer,
            Err(error) => {
                let start = |to| builder = builder.clone().start(StartOffset::Offset(to));
                if !hand_on(&records, partition, epoch, Err(error), start).await {
                    return;
                }
            }
        }
    };
    loop {
        let read = consumer.poll().await;
        if !hand_on(&records, partition, epoch, read, |to| consumer.seek(to)).await {
            return;
        }
    }
}
