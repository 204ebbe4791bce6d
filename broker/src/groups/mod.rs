//! Consumer groups: membership, partition assignment, committed offsets; and producer ids.
//!
//! A group consumes one topic at a time. Members join, heartbeat and leave; a member that sends
//! no heartbeat for its session timeout is removed. Every change of membership starts a new
//! generation with a new target assignment, **sticky and balanced**: every member gets
//! `partitions / members` partitions, or one more (the extra ones going to the members already
//! holding the most); each member keeps what it had up to its share, and only the partitions left
//! over (those of a departed member, or beyond a share) move, in ascending order to the members
//! below their share, in member-id order. A group formed at once therefore gets contiguous
//! ranges, and a departure moves nothing between the members that stay.
//!
//! A member learns its assignment in the reply to its join or heartbeat. A partition is handed
//! over only once its previous holder has been told it lost it (in the reply to its next
//! heartbeat) or has left or expired, so no two members hold a partition at the same time; until
//! then the new owner's reply says `settled = false` and it heartbeats again soon. A member killed
//! without leaving holds its partitions until its session expires. Because a departure moves
//! only the departed member's partitions, each survivor picks up its share at its first
//! heartbeat after the departure is noticed: a rebalance after a crash completes within one
//! session timeout plus one heartbeat interval, after a clean leave within one heartbeat
//! interval.
//!
//! Commits are accepted from a live member, with the generation it last learned, for partitions
//! it holds; an administrator (empty member id) may commit only while the group has no members.
//! Together with the hand-over rule this makes consumption at-least-once: a partition resumes
//! from the last accepted commit, which no stale member can overwrite.
//!
//! Membership lives in memory: after a broker restart members get `UnknownMember` on their next
//! heartbeat and join again. Committed offsets and producer ids live in the [`store`].
//! Expiry is checked whenever a group is touched (join, heartbeat, commit, describe, list, a
//! metrics scrape), so a dead member is removed at the latest when a survivor next heartbeats.
//!
//! One lock serialises the requests of every group, including a commit's write to the state log
//! (and, with `sync = always`, its sync): a commit cannot land for a partition a rebalance moved
//! in between. Group requests are per member and per second, not per message; a broker with many
//! busy groups under `sync = always` would want a lock per group.

mod classic;
pub mod store;

pub use classic::{
    ClassicDescription, ClassicMemberInfo, GroupState, JoinRequest, Joined, JoinedMember,
    MemberRef, Reply, SyncRequest, TopicCommit,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::Mutex;
use tokio::time::Instant;

use ringmq_protocol::group::{GroupSummary, PartitionOffset};
use ringmq_protocol::limits::{GROUP_COUNT_MAX, GROUP_MEMBER_COUNT_MAX, GROUP_OFFSET_COUNT_MAX};
use ringmq_protocol::topic::validate_group_name;
use ringmq_protocol::ErrorCode;

use crate::metrics::Metrics;
use crate::topics::{TopicError, Topics};
use store::{GroupStore, StoreError};

/// Bounds on the session timeout members may ask for.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// Shortest session timeout.
    pub session_timeout_min: Duration,
    /// Longest session timeout.
    pub session_timeout_max: Duration,
    /// How long a Kafka group that starts empty waits for more members before assigning.
    pub initial_rebalance_delay: Duration,
}

/// Why a group request failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The caller may not do this to the group (or the topic).
    #[error(transparent)]
    Unauthorized(#[from] crate::auth::permissions::Denied),
    /// The group name is not allowed.
    #[error("invalid group name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The topic does not exist.
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// The group has no such member (it left, expired, or the broker restarted).
    #[error(
        "group {group:?} has no member {member:?} (it left or its session expired); join again"
    )]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id.
        member: String,
    },
    /// The member's generation is not the one it was last told.
    #[error("member {member:?} of group {group:?} commits with generation {got}, but was last told {current}; heartbeat to learn the current assignment")]
    StaleGeneration {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// The generation given.
        got: u32,
        /// The generation the member was last told.
        current: u32,
    },
    /// The member does not hold the partition.
    #[error("member {member:?} of group {group:?} does not hold partition {partition}")]
    NotAssigned {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// The partition.
        partition: u32,
    },
    /// The request needs an empty group.
    #[error(
        "group {group:?} has {members} live member(s); stop them before resetting its offsets"
    )]
    NotEmpty {
        /// The group.
        group: String,
        /// Live members.
        members: usize,
    },
    /// The group consumes another topic (a group consumes one topic at a time).
    #[error("group {group:?} consumes topic {consuming:?}, not {requested:?}; a group consumes one topic at a time")]
    OtherTopic {
        /// The group.
        group: String,
        /// The topic its members consume.
        consuming: String,
        /// The topic the request names.
        requested: String,
    },
    /// The topic has no such partition.
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        count: usize,
    },
    /// A commit past the partition's end.
    #[error("offset {offset} is past the end of {topic}/{partition} ({end})")]
    OffsetPastEnd {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset given.
        offset: u64,
        /// The partition's next offset.
        end: u64,
    },
    /// A producer id this broker never handed out.
    #[error(
        "producer id {producer_id} was never handed out by this broker; ask for a new one (id -1)"
    )]
    UnknownProducer {
        /// The id given.
        producer_id: i64,
    },
    /// The broker holds the most groups with members it may.
    #[error("the broker already holds {max} groups with members")]
    TooManyGroups {
        /// The limit.
        max: u32,
    },
    /// The group has the most members it may.
    #[error("group {group:?} already has {max} members")]
    TooManyMembers {
        /// The group.
        group: String,
        /// The limit.
        max: u32,
    },
    /// The group holds the most committed offsets it may.
    #[error("group {group:?} holds the most committed offsets allowed ({max})")]
    TooManyOffsets {
        /// The group.
        group: String,
        /// The limit.
        max: u32,
    },
    /// The name is in use by live members of the other kind of consumer (native or Kafka).
    #[error("group {group:?} has {members} live {kind} member(s); a group name is used by one kind of consumer at a time while it has members")]
    OtherKind {
        /// The group.
        group: String,
        /// Its live members.
        members: usize,
        /// Their kind: `native` or `Kafka`.
        kind: &'static str,
    },
    /// A Kafka member's generation is not the group's.
    #[error("member {member:?} of group {group:?} is in generation {got}, the group in {current}; join again")]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// The generation given.
        got: i32,
        /// The group's generation.
        current: i32,
    },
    /// The Kafka group is rebalancing: join again.
    #[error("group {group:?} is rebalancing; join again")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },
    /// A Kafka member's protocol type or assignors do not match the group's.
    #[error("group {group:?}: protocol type {protocol_type:?} or its assignors are not those of the group's members")]
    InconsistentProtocol {
        /// The group.
        group: String,
        /// The protocol type given.
        protocol_type: String,
    },
    /// A new Kafka member must join again with the member id given (`JoinGroup` version 4+).
    #[error("group {group:?}: join again with member id {member:?}")]
    MemberIdRequired {
        /// The group.
        group: String,
        /// The member id to join with.
        member: String,
    },
    /// Another member has taken over this static member's instance id.
    #[error("group {group:?}: instance {instance:?} was taken over by a newer member")]
    FencedInstance {
        /// The group.
        group: String,
        /// The instance id.
        instance: String,
    },
    /// A Kafka member asked for a session timeout outside the broker's bounds.
    #[error("session timeout {requested:?} is outside the broker's {min:?} to {max:?}")]
    InvalidSessionTimeout {
        /// The timeout asked for.
        requested: Duration,
        /// The shortest allowed.
        min: Duration,
        /// The longest allowed.
        max: Duration,
    },
    /// The state log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GroupError {
    /// The error code to answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupError::Unauthorized(_) => ErrorCode::Unauthorized,
            GroupError::InvalidName { .. }
            | GroupError::OtherKind { .. }
            | GroupError::InconsistentProtocol { .. }
            | GroupError::MemberIdRequired { .. }
            | GroupError::InvalidSessionTimeout { .. }
            | GroupError::OtherTopic { .. }
            | GroupError::UnknownPartition { .. }
            | GroupError::OffsetPastEnd { .. }
            | GroupError::UnknownProducer { .. } => ErrorCode::InvalidRequest,
            GroupError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            GroupError::UnknownMember { .. } | GroupError::FencedInstance { .. } => {
                ErrorCode::UnknownMember
            }
            GroupError::StaleGeneration { .. } | GroupError::IllegalGeneration { .. } => {
                ErrorCode::StaleGeneration
            }
            GroupError::RebalanceInProgress { .. } => ErrorCode::RebalanceInProgress,
            GroupError::NotAssigned { .. } => ErrorCode::NotAssigned,
            GroupError::NotEmpty { .. } => ErrorCode::GroupNotEmpty,
            GroupError::TooManyGroups { .. }
            | GroupError::TooManyMembers { .. }
            | GroupError::TooManyOffsets { .. } => ErrorCode::Busy,
            GroupError::Store(StoreError::Full { .. }) => ErrorCode::Busy,
            GroupError::Store(_) => ErrorCode::StorageError,
        }
    }
}

/// A group in [`Coordinator::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group.
    pub group: String,
    /// The topic its members consume (empty without members).
    pub topic: String,
    /// Live members.
    pub member_count: u32,
    /// Current generation (0 without members).
    pub generation: u32,
    /// Who its members are.
    pub kind: GroupKind,
    /// Its state in Kafka's terms (a native group with members is `Stable`).
    pub state: GroupState,
}

/// The kind of consumers a group has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKind {
    /// No live members: only committed offsets.
    Offsets,
    /// Native consumers (the broker assigns).
    Native,
    /// Kafka consumers of this protocol type (`consumer` for Kafka's consumer clients).
    Kafka {
        /// The protocol type.
        protocol_type: String,
    },
}

/// How far a group's committed offset is behind its partition's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// The group, topic and partition.
    pub key: store::OffsetKey,
    /// Records between the committed offset and the partition's next offset.
    pub records: u64,
}

/// A producer id and epoch handed out by [`Coordinator::init_producer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerGrant {
    /// The id.
    pub producer_id: i64,
    /// The epoch.
    pub producer_epoch: i16,
}

/// A member's view of its group, answered to a join or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The group's generation.
    pub generation: u32,
    /// The member id.
    pub member_id: String,
    /// The session timeout applied.
    pub session_timeout: Duration,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
    /// Whether the member holds every partition meant for it.
    pub settled: bool,
    /// The partitions it holds.
    pub partitions: Vec<u32>,
}

/// A member, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member id.
    pub member_id: String,
    /// The address it last heartbeated from.
    pub client: String,
    /// The generation it last learned.
    pub generation: u32,
    /// The partitions it holds.
    pub partitions: Vec<u32>,
}

/// A committed offset, described with the partition's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetInfo {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The committed offset.
    pub committed: u64,
    /// The partition's next offset (0 if the topic is gone).
    pub end: u64,
}

/// A group, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group.
    pub group: String,
    /// The topic its members consume (empty without members).
    pub topic: String,
    /// Current generation.
    pub generation: u32,
    /// Live members, by id.
    pub members: Vec<MemberInfo>,
    /// Committed offsets.
    pub offsets: Vec<OffsetInfo>,
}

/// Every group with live members, by kind.
#[derive(Debug, Default)]
struct Groups {
    /// Groups of native consumers (the broker assigns their partitions).
    native: HashMap<String, Group>,
    /// Groups of Kafka consumers (the classic protocol: a member assigns).
    classic: HashMap<String, classic::ClassicGroup>,
}

#[derive(Debug)]
struct Member {
    session_timeout: Duration,
    deadline: Instant,
    /// The generation this member was last told.
    generation: u32,
    client: String,
}

#[derive(Debug, Default)]
struct Group {
    /// The topic members consume; `None` while the group has no members.
    topic: Option<String>,
    generation: u32,
    members: BTreeMap<String, Member>,
    /// Who each partition should go to in this generation.
    target: Vec<Option<String>>,
    /// Who holds each partition: the member last told it has it.
    holder: Vec<Option<String>>,
}

impl Group {
    /// Removes members whose session expired; returns how many.
    fn expire(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(member = %id, "group member's session expired");
            self.remove(id);
        }
        expired.len()
    }

    fn remove(&mut self, member_id: &str) {
        self.members.remove(member_id);
        for holder in &mut self.holder {
            if holder.as_deref() == Some(member_id) {
                *holder = None;
            }
        }
        if self.members.is_empty() {
            self.topic = None;
            self.holder.clear();
            self.target.clear();
        }
    }

    /// Starts a new generation with a sticky, balanced assignment over `partitions` (see the
    /// module docs).
    fn rebalance(&mut self, partitions: u32) {
        self.generation = self.generation.wrapping_add(1).max(1);
        let count = partitions as usize;
        self.holder.resize(count, None);
        let previous = std::mem::replace(&mut self.target, vec![None; count]);
        if self.members.is_empty() {
            return;
        }
        // What each member had, in partition order.
        let mut kept: BTreeMap<&String, Vec<usize>> =
            self.members.keys().map(|member| (member, Vec::new())).collect();
        for (index, owner) in previous.iter().enumerate().take(count) {
            if let Some(partitions) = owner.as_ref().and_then(|owner| kept.get_mut(owner)) {
                partitions.push(index);
            }
        }
        // Quotas: everyone gets count / members; the remainder goes to those holding the most
        // already (then by id), so as few partitions as possible move.
        let (share, extra) = (count / kept.len(), count % kept.len());
        let mut order: Vec<&String> = kept.keys().copied().collect();
        order.sort_by_key(|member| std::cmp::Reverse(kept[member].len()));
        let quota: BTreeMap<&String, usize> = order
            .iter()
            .enumerate()
            .map(|(rank, member)| (*member, share + usize::from(rank < extra)))
            .collect();
        for (member, partitions) in &mut kept {
            partitions.truncate(quota[member]);
        }
        for (member, partitions) in &kept {
            for &index in partitions {
                self.target[index] = Some((*member).clone());
            }
        }
        // The free partitions, in order, to the members below their quota, in id order.
        let free: Vec<usize> = (0..count).filter(|&index| self.target[index].is_none()).collect();
        let mut free = free.into_iter();
        for (member, partitions) in &kept {
            for _ in partitions.len()..quota[member] {
                if let Some(index) = free.next() {
                    self.target[index] = Some((*member).clone());
                }
            }
        }
    }

    /// Tells `member_id` its assignment: releases partitions it lost, hands it the free ones
    /// meant for it.
    fn assignment(&mut self, member_id: &str) -> Assignment {
        let mut partitions = Vec::new();
        let mut settled = true;
        for (index, (target, holder)) in self.target.iter().zip(&mut self.holder).enumerate() {
            let meant = target.as_deref() == Some(member_id);
            let held = holder.as_deref() == Some(member_id);
            if held && !meant {
                *holder = None;
            } else if meant && holder.is_none() {
                *holder = Some(member_id.to_owned());
            }
            if holder.as_deref() == Some(member_id) {
                partitions.push(partition_number(index));
            } else if meant {
                settled = false;
            }
        }
        let generation = self.generation;
        let member = self.members.get_mut(member_id).expect("the caller checked membership");
        member.generation = generation;
        Assignment {
            generation,
            member_id: member_id.to_owned(),
            session_timeout: member.session_timeout,
            heartbeat_interval: heartbeat_interval(member.session_timeout),
            settled,
            partitions,
        }
    }

    fn held_by(&self, member_id: &str) -> Vec<u32> {
        self.holder
            .iter()
            .enumerate()
            .filter(|(_, holder)| holder.as_deref() == Some(member_id))
            .map(|(index, _)| partition_number(index))
            .collect()
    }
}

/// A partition index (or count) as the protocol's `u32`: a topic has at most
/// `PARTITION_COUNT_MAX` partitions.
fn partition_number(index: usize) -> u32 {
    u32::try_from(index).expect("a topic has at most PARTITION_COUNT_MAX partitions")
}

/// How often a member with this session timeout should heartbeat: a third of it, so two
/// heartbeats may be lost before the session expires.
fn heartbeat_interval(session_timeout: Duration) -> Duration {
    session_timeout / 3
}

/// The group coordinator.
#[derive(Debug)]
pub struct Coordinator {
    /// Native and Kafka groups, under one lock: one name space, and no commit lands between a
    /// check and a rebalance of either kind.
    state: Mutex<Groups>,
    store: GroupStore,
    topics: Arc<Topics>,
    settings: GroupSettings,
    metrics: Arc<Metrics>,
    next_member: AtomicU64,
    /// Distinguishes member ids of this broker run from earlier ones.
    run: u64,
    started: Instant,
    /// When joins at the group limit last swept for expired groups, ms after `started` (0:
    /// never).
    last_sweep_ms: AtomicU64,
}

impl Coordinator {
    /// A coordinator keeping offsets in `store`.
    pub fn new(
        store: GroupStore,
        topics: Arc<Topics>,
        settings: GroupSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Self {
            state: Mutex::new(Groups::default()),
            store,
            topics,
            settings,
            metrics,
            next_member: AtomicU64::new(1),
            run,
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    /// The state log.
    pub fn store(&self) -> &GroupStore {
        &self.store
    }

    fn partition_count(&self, topic: &str) -> Result<u32, GroupError> {
        self.topics
            .get(topic)
            .map(|topic| topic.settings().partitions)
            .ok_or_else(|| GroupError::UnknownTopic(topic.to_owned()))
    }

    /// Joins `member_id` (a new member if empty or unknown) to `group` consuming `topic`.
    ///
    /// # Errors
    ///
    /// [`GroupError`]: a bad name, an unknown topic, a group consuming another topic, a limit.
    pub async fn join(
        &self,
        group_name: &str,
        topic: &str,
        member_id: &str,
        session_timeout: Duration,
        client: &str,
    ) -> Result<Assignment, GroupError> {
        validate_group_name(group_name)
            .map_err(|reason| GroupError::InvalidName { name: group_name.to_owned(), reason })?;
        let partitions = self.partition_count(topic)?;
        let session_timeout = session_timeout
            .clamp(self.settings.session_timeout_min, self.settings.session_timeout_max);
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let Groups { native: groups, classic } = &mut *state;
        if let Some(members) = classic::live_members(classic, group_name) {
            return Err(GroupError::OtherKind {
                group: group_name.to_owned(),
                members,
                kind: "Kafka",
            });
        }
        self.touch(groups, group_name, now);
        if !groups.contains_key(group_name)
            && groups.len() + classic.len() >= GROUP_COUNT_MAX as usize
        {
            // Groups whose members all expired unnoticed do not count; look for them at most
            // once a second, so joins at the limit cannot keep everyone else waiting.
            let since_start = u64::try_from((now - self.started).as_millis()).unwrap_or(u64::MAX);
            let last = self.last_sweep_ms.load(Ordering::Relaxed);
            if last == 0 || since_start.saturating_sub(last) >= 1000 {
                self.last_sweep_ms.store(since_start.max(1), Ordering::Relaxed);
                let names: Vec<String> = groups.keys().cloned().collect();
                for name in names {
                    self.touch(groups, &name, now);
                }
            }
            if groups.len() + classic.len() >= GROUP_COUNT_MAX as usize {
                return Err(GroupError::TooManyGroups { max: GROUP_COUNT_MAX });
            }
        }
        let group = groups.entry(group_name.to_owned()).or_default();
        let mut changed = false;
        match &group.topic {
            Some(current) if current != topic => {
                return Err(GroupError::OtherTopic {
                    group: group_name.to_owned(),
                    consuming: current.clone(),
                    requested: topic.to_owned(),
                });
            }
            _ => group.topic = Some(topic.to_owned()),
        }
        let member_id = if group.members.contains_key(member_id) {
            member_id.to_owned()
        } else {
            if group.members.len() >= GROUP_MEMBER_COUNT_MAX as usize {
                return Err(GroupError::TooManyMembers {
                    group: group_name.to_owned(),
                    max: GROUP_MEMBER_COUNT_MAX,
                });
            }
            let serial = self.next_member.fetch_add(1, Ordering::Relaxed);
            // Unique within the group (a group's ids never repeat across broker runs), and short
            // whatever the group's name.
            let id = format!("member-{:x}-{serial}", self.run);
            group.members.insert(
                id.clone(),
                Member {
                    session_timeout,
                    deadline: now + session_timeout,
                    generation: 0,
                    client: client.to_owned(),
                },
            );
            tracing::info!(group = group_name, member = %id, %client, topic, "member joined");
            changed = true;
            id
        };
        let member = group.members.get_mut(&member_id).expect("inserted or present");
        member.deadline = now + member.session_timeout;
        member.client = client.to_owned();
        if changed || group.target.len() != partitions as usize {
            self.rebalance(group_name, group, partitions);
        }
        Ok(group.assignment(&member_id))
    }

    /// Keeps `member_id` alive and tells it its assignment.
    ///
    /// # Errors
    ///
    /// [`GroupError::UnknownMember`] if it left or expired.
    pub async fn heartbeat(
        &self,
        group_name: &str,
        member_id: &str,
        client: &str,
    ) -> Result<Assignment, GroupError> {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let groups = &mut state.native;
        let unknown = || GroupError::UnknownMember {
            group: group_name.to_owned(),
            member: member_id.to_owned(),
        };
        let group = self.touch(groups, group_name, now).ok_or_else(unknown)?;
        let member = group.members.get_mut(member_id).ok_or_else(unknown)?;
        member.deadline = now + member.session_timeout;
        if member.client != client {
            member.client = client.to_owned();
        }
        Ok(group.assignment(member_id))
    }

    /// Brings `group_name` up to date at `now`: removes members whose session expired and, if
    /// any did, rebalances what they held (every path that notices an expiry must, or their
    /// partitions stay with no one); forgets the group if no member is left. Returns the group if
    /// it has members.
    fn touch<'g>(
        &self,
        groups: &'g mut HashMap<String, Group>,
        group_name: &str,
        now: Instant,
    ) -> Option<&'g mut Group> {
        let group = groups.get_mut(group_name)?;
        if group.expire(now) > 0 {
            self.rebalance_after_departure(group_name, group);
        }
        if group.members.is_empty() {
            groups.remove(group_name);
            return None;
        }
        groups.get_mut(group_name)
    }

    fn rebalance_after_departure(&self, group_name: &str, group: &mut Group) {
        if let Some(topic) = group.topic.clone() {
            let partitions =
                self.partition_count(&topic).unwrap_or(partition_number(group.target.len()));
            self.rebalance(group_name, group, partitions);
        }
    }

    fn rebalance(&self, group_name: &str, group: &mut Group, partitions: u32) {
        group.rebalance(partitions);
        self.metrics.group_rebalance();
        tracing::info!(
            group = group_name,
            generation = group.generation,
            members = group.members.len(),
            "rebalanced"
        );
    }

    /// Removes `member_id`; its partitions go to the others at once.
    ///
    /// # Errors
    ///
    /// [`GroupError::UnknownMember`] if it was not a member.
    pub async fn leave(&self, group_name: &str, member_id: &str) -> Result<(), GroupError> {
        let mut state = self.state.lock().await;
        let groups = &mut state.native;
        let unknown = || GroupError::UnknownMember {
            group: group_name.to_owned(),
            member: member_id.to_owned(),
        };
        let group = self.touch(groups, group_name, Instant::now()).ok_or_else(unknown)?;
        if !group.members.contains_key(member_id) {
            return Err(unknown());
        }
        group.remove(member_id);
        tracing::info!(group = group_name, member = member_id, "member left");
        self.rebalance_after_departure(group_name, group);
        if group.members.is_empty() {
            groups.remove(group_name);
        }
        Ok(())
    }

    /// Commits offsets for `group` on `topic` (see the module docs for who may).
    ///
    /// # Errors
    ///
    /// [`GroupError`] naming what was refused; nothing is stored then.
    pub async fn commit(
        &self,
        group_name: &str,
        topic: &str,
        member_id: &str,
        generation: u32,
        offsets: &[PartitionOffset],
    ) -> Result<(), GroupError> {
        let found = self.check_offsets(group_name, topic, offsets)?;
        // Held across the store write: a rebalance cannot move a partition between the check
        // and the commit landing.
        let mut state = self.state.lock().await;
        let Groups { native: groups, classic } = &mut *state;
        // The topic checked above may have been deleted (and its offsets forgotten) since.
        if !self.topics.get(topic).is_some_and(|now| Arc::ptr_eq(&now, &found)) {
            return Err(GroupError::UnknownTopic(topic.to_owned()));
        }
        if let Some(members) = classic::live_members(classic, group_name) {
            return Err(GroupError::OtherKind {
                group: group_name.to_owned(),
                members,
                kind: "Kafka",
            });
        }
        let group = self.touch(groups, group_name, Instant::now());
        match (member_id, group) {
            ("", None) => {}
            ("", Some(group)) => {
                return Err(GroupError::NotEmpty {
                    group: group_name.to_owned(),
                    members: group.members.len(),
                });
            }
            (_, None) => {
                return Err(GroupError::UnknownMember {
                    group: group_name.to_owned(),
                    member: member_id.to_owned(),
                })
            }
            (_, Some(group)) => {
                let member =
                    group.members.get(member_id).ok_or_else(|| GroupError::UnknownMember {
                        group: group_name.to_owned(),
                        member: member_id.to_owned(),
                    })?;
                if member.generation != generation {
                    return Err(GroupError::StaleGeneration {
                        group: group_name.to_owned(),
                        member: member_id.to_owned(),
                        got: generation,
                        current: member.generation,
                    });
                }
                if group.topic.as_deref() != Some(topic) {
                    return Err(GroupError::OtherTopic {
                        group: group_name.to_owned(),
                        consuming: group.topic.clone().unwrap_or_default(),
                        requested: topic.to_owned(),
                    });
                }
                for entry in offsets {
                    let holder = group.holder.get(entry.partition as usize);
                    if holder.and_then(Option::as_deref) != Some(member_id) {
                        return Err(GroupError::NotAssigned {
                            group: group_name.to_owned(),
                            member: member_id.to_owned(),
                            partition: entry.partition,
                        });
                    }
                }
            }
        }
        self.store_offsets(group_name, topic, offsets).await
    }

    /// Checks a commit's group name, topic, partitions and offsets (none past its partition's
    /// end); returns the topic, to check it is still the same one under the lock.
    fn check_offsets(
        &self,
        group_name: &str,
        topic: &str,
        offsets: &[PartitionOffset],
    ) -> Result<Arc<crate::topics::Topic>, GroupError> {
        validate_group_name(group_name)
            .map_err(|reason| GroupError::InvalidName { name: group_name.to_owned(), reason })?;
        let found =
            self.topics.get(topic).ok_or_else(|| GroupError::UnknownTopic(topic.to_owned()))?;
        for entry in offsets {
            let Some(partition) = found.partitions().get(entry.partition as usize) else {
                return Err(GroupError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: entry.partition,
                    count: found.partitions().len(),
                });
            };
            let end = partition.log().next_offset();
            if entry.offset > end {
                return Err(GroupError::OffsetPastEnd {
                    topic: topic.to_owned(),
                    partition: entry.partition,
                    offset: entry.offset,
                    end,
                });
            }
        }
        Ok(found)
    }

    /// Writes checked offsets to the store, within the group's limit on committed offsets.
    async fn store_offsets(
        &self,
        group_name: &str,
        topic: &str,
        offsets: &[PartitionOffset],
    ) -> Result<(), GroupError> {
        let (existing, new) = self.store.offset_counts(group_name, topic, offsets).await;
        if existing + new > GROUP_OFFSET_COUNT_MAX as usize {
            return Err(GroupError::TooManyOffsets {
                group: group_name.to_owned(),
                max: GROUP_OFFSET_COUNT_MAX,
            });
        }
        self.store.commit(group_name, topic, offsets).await?;
        Ok(())
    }

    /// Deletes topic `name` and forgets every group's committed offsets on it, so a topic created
    /// again under the name is consumed from its start rather than from the old one's offsets.
    /// Holds the groups lock throughout: no commit on the old topic can land after the offsets
    /// are forgotten, and none on a topic created again meanwhile can land before.
    ///
    /// # Errors
    ///
    /// [`TopicError`] from the deletion; the offsets are forgotten whenever the topic is gone.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let _state = self.state.lock().await;
        let old = self.topics.get(name);
        let deleted = self.topics.delete(name).await;
        let gone = match (&old, self.topics.get(name)) {
            (Some(old), Some(now)) => !Arc::ptr_eq(old, &now),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if gone {
            self.forget_offsets(name).await;
        }
        deleted
    }

    async fn forget_offsets(&self, topic: &str) {
        match self.store.forget_topic(topic).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(topic, removed, "committed offsets of a deleted topic forgotten")
            }
            Err(error) => {
                tracing::error!(topic, %error, "committed offsets of a deleted topic could not be forgotten");
            }
        }
    }

    /// Forgets the committed offsets of every topic that no longer exists (deleted while the
    /// removal could not be written, or before a crash). Called at startup.
    pub async fn forget_missing_topics(&self) {
        let mut missing: Vec<String> = self
            .store
            .all_committed()
            .await
            .into_iter()
            .map(|(key, _)| key.topic)
            .filter(|topic| self.topics.get(topic).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        for topic in missing {
            self.forget_offsets(&topic).await;
        }
    }

    /// The committed offsets of `group` on `topic`.
    pub async fn committed(&self, group: &str, topic: &str) -> Vec<PartitionOffset> {
        self.store.committed(group, topic).await
    }

    /// Every group with members or committed offsets, sorted by name.
    pub async fn list(&self) -> Vec<GroupListing> {
        let mut summaries: BTreeMap<String, GroupListing> = BTreeMap::new();
        for (key, _) in self.store.all_committed().await {
            summaries.entry(key.group.clone()).or_insert_with(|| GroupListing {
                group: key.group,
                topic: String::new(),
                member_count: 0,
                generation: 0,
                kind: GroupKind::Offsets,
                state: GroupState::Empty,
            });
        }
        let mut state = self.state.lock().await;
        let Groups { native: groups, classic } = &mut *state;
        for (name, protocol_type, state, members, generation) in Self::classic_listings(classic) {
            let listing = GroupListing {
                group: name.clone(),
                topic: String::new(),
                member_count: u32::try_from(members)
                    .expect("a group has at most GROUP_MEMBER_COUNT_MAX members"),
                generation: u32::try_from(generation).unwrap_or(0),
                kind: GroupKind::Kafka { protocol_type: protocol_type.to_owned() },
                state,
            };
            summaries.insert(name.clone(), listing);
        }
        let now = Instant::now();
        let names: Vec<String> = groups.keys().cloned().collect();
        for name in names {
            let Some(group) = self.touch(groups, &name, now) else { continue };
            let listing = GroupListing {
                group: name.clone(),
                topic: group.topic.clone().unwrap_or_default(),
                member_count: u32::try_from(group.members.len())
                    .expect("a group has at most GROUP_MEMBER_COUNT_MAX members"),
                generation: group.generation,
                kind: GroupKind::Native,
                state: GroupState::Stable,
            };
            summaries.insert(name, listing);
        }
        summaries.into_values().collect()
    }

    /// Describes a group: members, assignment, committed offsets with each partition's end.
    ///
    /// # Errors
    ///
    /// [`GroupError::InvalidName`] for a bad name.
    pub async fn describe(&self, group_name: &str) -> Result<GroupInfo, GroupError> {
        validate_group_name(group_name)
            .map_err(|reason| GroupError::InvalidName { name: group_name.to_owned(), reason })?;
        let offsets = self
            .store
            .all_committed()
            .await
            .into_iter()
            .filter(|(key, _)| key.group == group_name)
            .map(|(key, committed)| OffsetInfo {
                end: self.end_offset(&key.topic, key.partition),
                topic: key.topic,
                partition: key.partition,
                committed,
            })
            .collect();
        let mut state = self.state.lock().await;
        let Groups { native: groups, classic } = &mut *state;
        let mut info = GroupInfo {
            group: group_name.to_owned(),
            topic: String::new(),
            generation: 0,
            members: Vec::new(),
            offsets,
        };
        if let Some(group) = self.touch(groups, group_name, Instant::now()) {
            info.topic = group.topic.clone().unwrap_or_default();
            info.generation = group.generation;
            info.members = group
                .members
                .iter()
                .map(|(id, member)| MemberInfo {
                    member_id: id.clone(),
                    client: member.client.clone(),
                    generation: member.generation,
                    partitions: group.held_by(id),
                })
                .collect();
        } else if let Some(group) = classic.get(group_name) {
            // A Kafka group: its members (their assignments are the clients' bytes).
            let generation = u32::try_from(group.generation()).unwrap_or(0);
            info.generation = generation;
            info.members = group
                .describe()
                .members
                .into_iter()
                .map(|member| MemberInfo {
                    member_id: member.member_id,
                    client: member.client_host,
                    generation,
                    partitions: Vec::new(),
                })
                .collect();
        }
        Ok(info)
    }

    fn end_offset(&self, topic: &str, partition: u32) -> u64 {
        self.topics
            .get(topic)
            .and_then(|topic| topic.partitions().get(partition as usize).cloned())
            .map_or(0, |partition| partition.log().next_offset())
    }

    /// Every committed offset's lag behind its partition's end.
    pub async fn lags(&self) -> Vec<Lag> {
        self.store
            .all_committed()
            .await
            .into_iter()
            .filter(|(key, _)| self.topics.get(&key.topic).is_some())
            .map(|(key, committed)| {
                let records = self.end_offset(&key.topic, key.partition).saturating_sub(committed);
                Lag { key, records }
            })
            .collect()
    }

    /// A fresh producer id (epoch 0), or the next epoch of `producer_id`.
    ///
    /// # Errors
    ///
    /// [`GroupError`] if a block of ids could not be reserved, or the epoch is exhausted.
    pub async fn init_producer(
        &self,
        producer_id: i64,
        epoch: i16,
    ) -> Result<ProducerGrant, GroupError> {
        let fresh = |producer_id| ProducerGrant { producer_id, producer_epoch: 0 };
        if producer_id < 0 {
            return Ok(fresh(self.store.next_producer_id().await?));
        }
        if !self.store.producer_id_issued(producer_id).await {
            return Err(GroupError::UnknownProducer { producer_id });
        }
        match epoch.checked_add(1).filter(|next| *next > 0) {
            Some(next) => Ok(ProducerGrant { producer_id, producer_epoch: next }),
            // The epoch space is used up: start over with a new id.
            None => Ok(fresh(self.store.next_producer_id().await?)),
        }
    }
}

impl GroupListing {
    /// The listing as the protocol's summary, borrowed.
    pub fn summary(&self) -> GroupSummary<'_> {
        GroupSummary {
            group: &self.group,
            topic: &self.topic,
            members: self.member_count,
            generation: self.generation,
        }
    }
}

#[cfg(test)]
mod tests;
