//! Kafka's classic consumer-group protocol: the broker keeps membership, generations and the
//! assignment; one member (the leader) chooses the assignment with its own assignor.
//!
//! A group moves through Kafka's states. **Empty**: no members. **PreparingRebalance**: a member
//! joined, left, changed its protocols or expired; every member must join again. The phase ends
//! when every member has, or at the rebalance deadline (the longest rebalance timeout of the
//! members), when members that did not are removed; a group that was empty also waits
//! `initial_rebalance_delay` (extended by each arrival, up to the deadline) so consumers started
//! together get one assignment. The generation then increases, the protocol most members prefer
//! among those all of them support is chosen, the leader (the earliest member still present)
//! gets every member's metadata, and the group is **CompletingRebalance** until the leader's
//! `SyncGroup` brings the assignment, which every waiting member gets: **Stable**. Members that
//! have not sent `SyncGroup` by the rebalance deadline after that are removed, which starts
//! another rebalance.
//!
//! Member ids: from version 4 a member joining without one is given one and asked to join again
//! with it (`MEMBER_ID_REQUIRED`). Static members (`group.instance.id`) are known by their
//! instance id: one joining again with an empty member id gets a new member id that fences the
//! old one, and when the group is stable and its protocols are unchanged it gets the current
//! generation and its assignment back without a rebalance.
//!
//! Liveness: a member that sends no heartbeat (nor join, sync or commit) for its session timeout
//! is removed, except while the broker holds its join or sync request. The upkeep tick
//! ([`Coordinator::classic_upkeep`]) applies the deadlines; requests apply them to their group
//! as well.
//!
//! Commits are accepted from a member of the current generation (during a rebalance's join phase
//! too: an eager member commits what it consumed before it joins again), and from anyone
//! (generation -1, no member id) while the group has no members. The broker never looks inside
//! metadata or assignments: they are the clients' bytes. Committed offsets live in the same store
//! and name space as native groups' (see the [module docs](super)); a name is used by one kind of
//! consumer at a time while it has members.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ringmq_protocol::group::PartitionOffset;
use ringmq_protocol::limits::{GROUP_COUNT_MAX, GROUP_MEMBER_COUNT_MAX};
use ringmq_protocol::topic::validate_group_name;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Coordinator, GroupError, Groups};

/// The state of a group, in Kafka's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No live members (the group may have committed offsets).
    Empty,
    /// Members are joining again.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// No such group.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A `JoinGroup`.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The group.
    pub group: String,
    /// The member id; empty for a new member.
    pub member_id: String,
    /// The static member's instance id.
    pub instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// How long the member may go without a heartbeat.
    pub session_timeout: Duration,
    /// How long the group waits for the member to join again in a rebalance.
    pub rebalance_timeout: Duration,
    /// The protocol type (`consumer` for Kafka consumers).
    pub protocol_type: String,
    /// The assignors the member supports, preferred first, with its metadata for each.
    pub protocols: Vec<(String, Bytes)>,
    /// Version 4 and later: a new member gets a member id and must join again with it.
    pub require_known_member_id: bool,
}

/// A completed join.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The assignor chosen.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member, with its metadata for the chosen assignor.
    pub members: Vec<JoinedMember>,
}

/// A member as the leader sees it.
#[derive(Debug, Clone)]
pub struct JoinedMember {
    /// The member id.
    pub member_id: String,
    /// Its instance id, if static.
    pub instance_id: Option<String>,
    /// Its metadata for the chosen assignor.
    pub metadata: Bytes,
}

/// A `SyncGroup`.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The group.
    pub group: String,
    /// The generation the member joined.
    pub generation: i32,
    /// The member id.
    pub member_id: String,
    /// The static member's instance id.
    pub instance_id: Option<String>,
    /// From the leader: each member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

/// A member of a classic group, identified for a heartbeat, leave or commit.
#[derive(Debug, Clone)]
pub struct MemberRef {
    /// The member id (may be empty in a leave naming an instance id).
    pub member_id: String,
    /// The static member's instance id.
    pub instance_id: Option<String>,
}

/// How one topic of a Kafka commit went.
#[derive(Debug)]
pub struct TopicCommit {
    /// Each partition's check, in order: a refused partition is not stored.
    pub checked: Vec<Result<(), GroupError>>,
    /// The store write of the partitions that passed.
    pub stored: Result<(), GroupError>,
}

/// An answer now, or one to wait for (a join or sync the group completes later).
#[derive(Debug)]
pub enum Reply<T> {
    /// The answer.
    Ready(Result<T, GroupError>),
    /// The answer arrives when the group moves on.
    Waiting(oneshot::Receiver<Result<T, GroupError>>),
}

/// A group described for Kafka's `DescribeGroups` and `ListGroups`.
#[derive(Debug, Clone)]
pub struct ClassicDescription {
    /// The state.
    pub state: GroupState,
    /// The protocol type (`ringmq` for a native group, empty without members).
    pub protocol_type: String,
    /// The chosen assignor (`sticky` for a native group).
    pub protocol: String,
    /// Live members.
    pub members: Vec<ClassicMemberInfo>,
}

/// A member described.
#[derive(Debug, Clone)]
pub struct ClassicMemberInfo {
    /// The member id.
    pub member_id: String,
    /// Its instance id, if static.
    pub instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Its metadata for the chosen assignor.
    pub metadata: Bytes,
    /// Its assignment (empty until the leader's sync).
    pub assignment: Bytes,
}

type Waiter<T> = oneshot::Sender<Result<T, GroupError>>;

#[derive(Debug)]
struct ClassicMember {
    /// Join order: the leader is the earliest member still present.
    serial: u64,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the session expires.
    deadline: Instant,
    awaiting_join: Option<Waiter<Joined>>,
    awaiting_sync: Option<Waiter<Bytes>>,
}

/// A Kafka consumer group's membership (its offsets are in the store).
#[derive(Debug)]
pub(super) struct ClassicGroup {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    members: HashMap<String, ClassicMember>,
    /// Static members: instance id to member id.
    instances: HashMap<String, String>,
    /// Member ids handed out with `MEMBER_ID_REQUIRED`, not joined yet, until when.
    pending: HashMap<String, Instant>,
    /// PreparingRebalance: when the join phase ends with whoever joined.
    join_deadline: Instant,
    /// PreparingRebalance of a group that was empty: not complete before this.
    join_not_before: Instant,
    /// CompletingRebalance: when members that sent no `SyncGroup` are removed.
    sync_deadline: Instant,
}

/// The number of live Kafka members of `name`, if it has any.
pub(super) fn live_members(classic: &HashMap<String, ClassicGroup>, name: &str) -> Option<usize> {
    classic.get(name).map(|group| group.members.len()).filter(|&members| members > 0)
}

impl ClassicGroup {
    fn new(now: Instant) -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            members: HashMap::new(),
            instances: HashMap::new(),
            pending: HashMap::new(),
            join_deadline: now,
            join_not_before: now,
            sync_deadline: now,
        }
    }

    /// Whether a member with these protocols can belong to the group beside the members other
    /// than `except`.
    fn accepts(&self, except: &str, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let mut others = self.members.iter().filter(|(id, _)| id.as_str() != except).peekable();
        if others.peek().is_none() {
            return true;
        }
        protocol_type == self.protocol_type
            && protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .filter(|(id, _)| id.as_str() != except)
                    .all(|(_, member)| member.protocols.iter().any(|(theirs, _)| theirs == name))
            })
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members.values().map(|member| member.rebalance_timeout).max().unwrap_or_default()
    }

    /// Every member must join again.
    fn prepare_rebalance(&mut self, name: &str, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(waiter) = member.awaiting_sync.take() {
                    let _ = waiter
                        .send(Err(GroupError::RebalanceInProgress { group: name.to_owned() }));
                }
            }
        }
        let timeout = self.rebalance_timeout();
        self.join_not_before = match self.state {
            GroupState::Empty => now + initial_delay.min(timeout),
            _ => now,
        };
        self.join_deadline = now + timeout;
        self.state = GroupState::PreparingRebalance;
    }

    fn remove_member(&mut self, member_id: &str, reason: impl Fn() -> GroupError) {
        let Some(mut member) = self.members.remove(member_id) else { return };
        if let Some(instance) = &member.instance_id {
            if self.instances.get(instance).map(String::as_str) == Some(member_id) {
                self.instances.remove(instance);
            }
        }
        if let Some(waiter) = member.awaiting_join.take() {
            let _ = waiter.send(Err(reason()));
        }
        if let Some(waiter) = member.awaiting_sync.take() {
            let _ = waiter.send(Err(reason()));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// No member left: the group is empty (its next generation starts from here).
    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        self.protocol.clear();
        self.protocol_type.clear();
        self.leader = None;
    }

    /// After members left or expired: a rebalance, or empty.
    fn after_departure(&mut self, name: &str, now: Instant, initial_delay: Duration) {
        if self.members.is_empty() {
            if self.state != GroupState::Empty {
                self.become_empty();
            }
        } else if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(name, now, initial_delay);
        }
    }

    /// Ends the join phase if every member joined (after the initial delay) or the deadline
    /// passed; returns whether it did.
    fn try_complete_join(&mut self, name: &str, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_joined = self.members.values().all(|member| member.awaiting_join.is_some());
        let ready = all_joined && now >= self.join_not_before;
        if !ready && now < self.join_deadline {
            return false;
        }
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.awaiting_join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &late {
            tracing::info!(group = name, member = %id, "member did not join again in time; removed");
            self.remove_member(id, || GroupError::UnknownMember {
                group: name.to_owned(),
                member: id.clone(),
            });
        }
        if self.members.is_empty() {
            self.become_empty();
            return true;
        }
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        self.protocol = self.choose_protocol();
        let earliest = self.members.iter().min_by_key(|(_, member)| member.serial);
        if self.leader.as_ref().is_none_or(|leader| !self.members.contains_key(leader)) {
            self.leader = earliest.map(|(id, _)| id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = now + self.rebalance_timeout();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let joined = self.joined(&id);
            let member = self.members.get_mut(&id).expect("listed above");
            member.assignment = Bytes::new();
            if let Some(waiter) = member.awaiting_join.take() {
                let _ = waiter.send(Ok(joined));
            }
        }
        tracing::info!(
            group = name,
            generation = self.generation,
            members = self.members.len(),
            protocol = %self.protocol,
            leader = self.leader.as_deref().unwrap_or(""),
            "kafka group joined; waiting for the leader's assignment"
        );
        true
    }

    /// The assignor most members prefer among those every member supports; a tie goes to the
    /// earliest member's preference.
    fn choose_protocol(&self) -> String {
        let mut members: Vec<&ClassicMember> = self.members.values().collect();
        members.sort_by_key(|member| member.serial);
        let supported = |name: &str| {
            members.iter().all(|member| member.protocols.iter().any(|(theirs, _)| theirs == name))
        };
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for member in &members {
            if let Some((name, _)) = member.protocols.iter().find(|(name, _)| supported(name)) {
                match votes.iter_mut().find(|(voted, _)| voted == name) {
                    Some((_, count)) => *count += 1,
                    None => votes.push((name, 1)),
                }
            }
        }
        // The first of the highest counts: `max_by_key` keeps the last, so reverse.
        votes
            .iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map_or_else(String::new, |(name, _)| (*name).to_owned())
    }

    /// The join answer for `member_id` in the current generation.
    fn joined(&self, member_id: &str) -> Joined {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            let mut members: Vec<(&String, &ClassicMember)> = self.members.iter().collect();
            members.sort_by_key(|(_, member)| member.serial);
            members
                .into_iter()
                .map(|(id, member)| JoinedMember {
                    member_id: id.clone(),
                    instance_id: member.instance_id.clone(),
                    metadata: member
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == self.protocol)
                        .map(|(_, metadata)| metadata.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    /// Applies the deadlines at `now`.
    fn upkeep(&mut self, name: &str, now: Instant, initial_delay: Duration) {
        self.pending.retain(|_, until| *until > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| {
                member.awaiting_join.is_none()
                    && member.awaiting_sync.is_none()
                    && member.deadline <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = name, member = %id, "kafka group member's session expired");
            self.remove_member(id, || GroupError::UnknownMember {
                group: name.to_owned(),
                member: id.clone(),
            });
        }
        if self.state == GroupState::CompletingRebalance && now >= self.sync_deadline {
            let silent: Vec<String> = self
                .members
                .iter()
                .filter(|(_, member)| member.awaiting_sync.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in &silent {
                tracing::info!(group = name, member = %id, "member sent no SyncGroup in time; removed");
                self.remove_member(id, || GroupError::UnknownMember {
                    group: name.to_owned(),
                    member: id.clone(),
                });
            }
            if !silent.is_empty() || !expired.is_empty() {
                self.after_departure(name, now, initial_delay);
            }
        } else if !expired.is_empty() {
            self.after_departure(name, now, initial_delay);
        }
        self.try_complete_join(name, now);
    }

    /// Checks `instance_id` against the member id it is known by.
    fn check_instance(
        &self,
        name: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        match instance_id.and_then(|instance| self.instances.get(instance).map(|id| (instance, id)))
        {
            Some((instance, known)) if known != member_id => Err(GroupError::FencedInstance {
                group: name.to_owned(),
                instance: instance.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn member_mut(
        &mut self,
        name: &str,
        member_id: &str,
    ) -> Result<&mut ClassicMember, GroupError> {
        self.members.get_mut(member_id).ok_or_else(|| GroupError::UnknownMember {
            group: name.to_owned(),
            member: member_id.to_owned(),
        })
    }

    /// The current generation.
    pub(super) fn generation(&self) -> i32 {
        self.generation
    }

    pub(super) fn describe(&self) -> ClassicDescription {
        let mut members: Vec<(&String, &ClassicMember)> = self.members.iter().collect();
        members.sort_by_key(|(_, member)| member.serial);
        ClassicDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            members: members
                .into_iter()
                .map(|(id, member)| ClassicMemberInfo {
                    member_id: id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    metadata: member
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == self.protocol)
                        .map(|(_, metadata)| metadata.clone())
                        .unwrap_or_default(),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }
}

fn same_protocols(a: &[(String, Bytes)], b: &[(String, Bytes)]) -> bool {
    a == b
}

impl Coordinator {
    fn classic_member_id(&self, client_id: &str) -> String {
        let serial = self.next_member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut prefix = if client_id.is_empty() { "member" } else { client_id };
        while prefix.len() > 64 {
            let mut end = 64;
            while !prefix.is_char_boundary(end) {
                end -= 1;
            }
            prefix = &prefix[..end];
        }
        format!("{prefix}-{:x}-{serial}", self.run)
    }

    /// `JoinGroup` (see the module docs).
    pub async fn join_classic(&self, request: JoinRequest) -> Reply<Joined> {
        let name = request.group.as_str();
        if let Err(reason) = validate_group_name(name) {
            return Reply::Ready(Err(GroupError::InvalidName { name: name.to_owned(), reason }));
        }
        let (min, max) = (self.settings.session_timeout_min, self.settings.session_timeout_max);
        if !(min..=max).contains(&request.session_timeout) {
            return Reply::Ready(Err(GroupError::InvalidSessionTimeout {
                requested: request.session_timeout,
                min,
                max,
            }));
        }
        let delay = self.settings.initial_rebalance_delay;
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let Groups { native, classic } = &mut *state;
        if self.touch(native, name, now).is_some() {
            let members = native.get(name).map_or(0, |group| group.members.len());
            return Reply::Ready(Err(GroupError::OtherKind {
                group: name.to_owned(),
                members,
                kind: "native",
            }));
        }
        if !classic.contains_key(name) && native.len() + classic.len() >= GROUP_COUNT_MAX as usize {
            return Reply::Ready(Err(GroupError::TooManyGroups { max: GROUP_COUNT_MAX }));
        }
        let group = classic.entry(name.to_owned()).or_insert_with(|| ClassicGroup::new(now));
        group.upkeep(name, now, delay);
        let JoinRequest { member_id, instance_id, .. } = &request;
        let inconsistent = || {
            Reply::Ready(Err(GroupError::InconsistentProtocol {
                group: name.to_owned(),
                protocol_type: request.protocol_type.clone(),
            }))
        };
        if member_id.is_empty() {
            if let Some(old) = instance_id.as_ref().and_then(|id| group.instances.get(id)).cloned()
            {
                // A static member back with a new member id: it replaces (fences) the old one.
                if !group.accepts(&old, &request.protocol_type, &request.protocols) {
                    return inconsistent();
                }
                let new_id = self.classic_member_id(&request.client_id);
                let mut member = group.members.remove(&old).expect("instances name members");
                let fenced = || GroupError::FencedInstance {
                    group: name.to_owned(),
                    instance: instance_id.clone().unwrap_or_default(),
                };
                if let Some(waiter) = member.awaiting_join.take() {
                    let _ = waiter.send(Err(fenced()));
                }
                if let Some(waiter) = member.awaiting_sync.take() {
                    let _ = waiter.send(Err(fenced()));
                }
                update(&mut member, &request, now);
                if group.leader.as_deref() == Some(old.as_str()) {
                    group.leader = Some(new_id.clone());
                }
                group.instances.insert(instance_id.clone().unwrap_or_default(), new_id.clone());
                group.members.insert(new_id.clone(), member);
                // As Kafka: a restarted static member's metadata differs (it owns nothing yet);
                // only a change of the assignor the group would choose rebalances.
                let changed = group.choose_protocol() != group.protocol;
                tracing::info!(group = name, old = %old, member = %new_id, "static member joined again");
                let settled =
                    matches!(group.state, GroupState::Stable | GroupState::CompletingRebalance);
                if settled && !changed {
                    // As Kafka: no members and the leader id as it was, so a restarted leader
                    // does not take itself for the leader and compute an assignment a settled
                    // group would not hand out; its sync gets the assignment it had.
                    let mut joined = group.joined(&new_id);
                    joined.members.clear();
                    if joined.leader == new_id {
                        joined.leader.clone_from(&old);
                    }
                    return Reply::Ready(Ok(joined));
                }
                return self.await_join(name, group, &new_id, now);
            }
            if instance_id.is_none() && request.require_known_member_id {
                let id = self.classic_member_id(&request.client_id);
                group.pending.insert(id.clone(), now + request.session_timeout);
                return Reply::Ready(Err(GroupError::MemberIdRequired {
                    group: name.to_owned(),
                    member: id,
                }));
            }
            let id = self.classic_member_id(&request.client_id);
            return self.add_classic_member(name, group, id, &request, now);
        }
        if let Err(error) = group.check_instance(name, member_id, instance_id.as_deref()) {
            return Reply::Ready(Err(error));
        }
        if group.pending.remove(member_id).is_some() {
            return self.add_classic_member(name, group, member_id.clone(), &request, now);
        }
        if !group.accepts(member_id, &request.protocol_type, &request.protocols)
            && group.members.contains_key(member_id)
        {
            return inconsistent();
        }
        let member = match group.member_mut(name, member_id) {
            Ok(member) => member,
            Err(error) => return Reply::Ready(Err(error)),
        };
        let changed = !same_protocols(&member.protocols, &request.protocols);
        update(member, &request, now);
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        match group.state {
            GroupState::CompletingRebalance if !changed => {
                Reply::Ready(Ok(group.joined(member_id)))
            }
            GroupState::Stable if !changed && !is_leader => {
                Reply::Ready(Ok(group.joined(member_id)))
            }
            _ => self.await_join(name, group, member_id, now),
        }
    }

    fn add_classic_member(
        &self,
        name: &str,
        group: &mut ClassicGroup,
        member_id: String,
        request: &JoinRequest,
        now: Instant,
    ) -> Reply<Joined> {
        if !group.accepts("", &request.protocol_type, &request.protocols) {
            return Reply::Ready(Err(GroupError::InconsistentProtocol {
                group: name.to_owned(),
                protocol_type: request.protocol_type.clone(),
            }));
        }
        if group.members.len() >= GROUP_MEMBER_COUNT_MAX as usize {
            return Reply::Ready(Err(GroupError::TooManyMembers {
                group: name.to_owned(),
                max: GROUP_MEMBER_COUNT_MAX,
            }));
        }
        if group.members.is_empty() {
            group.protocol_type.clone_from(&request.protocol_type);
        }
        let serial = self.next_member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut member = ClassicMember {
            serial,
            instance_id: request.instance_id.clone(),
            client_id: String::new(),
            client_host: String::new(),
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            deadline: now,
            awaiting_join: None,
            awaiting_sync: None,
        };
        update(&mut member, request, now);
        if let Some(instance) = &request.instance_id {
            group.instances.insert(instance.clone(), member_id.clone());
        }
        tracing::info!(
            group = name,
            member = %member_id,
            client = %request.client_host,
            instance = request.instance_id.as_deref().unwrap_or(""),
            "kafka group member joined"
        );
        group.members.insert(member_id.clone(), member);
        if group.state == GroupState::PreparingRebalance && now < group.join_not_before {
            // Still in the initial delay: wait for more arrivals, within the deadline.
            let delay = self.settings.initial_rebalance_delay;
            group.join_not_before = (now + delay).min(group.join_deadline);
        }
        self.await_join(name, group, &member_id, now)
    }

    /// Registers `member_id`'s join, starting a rebalance if none is under way.
    fn await_join(
        &self,
        name: &str,
        group: &mut ClassicGroup,
        member_id: &str,
        now: Instant,
    ) -> Reply<Joined> {
        if group.state != GroupState::PreparingRebalance {
            group.prepare_rebalance(name, now, self.settings.initial_rebalance_delay);
            tracing::info!(group = name, member = member_id, "kafka group rebalancing");
        }
        let (sender, receiver) = oneshot::channel();
        let member = group.members.get_mut(member_id).expect("the caller added or found it");
        if let Some(previous) = member.awaiting_join.replace(sender) {
            let _ = previous.send(Err(GroupError::RebalanceInProgress { group: name.to_owned() }));
        }
        if group.try_complete_join(name, now) {
            self.metrics.group_rebalance();
        }
        Reply::Waiting(receiver)
    }

    /// `SyncGroup`: the leader's assignment for everyone, or this member's (see the module docs).
    pub async fn sync_classic(&self, request: SyncRequest) -> Reply<Bytes> {
        let name = request.group.as_str();
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let unknown = || GroupError::UnknownMember {
            group: name.to_owned(),
            member: request.member_id.clone(),
        };
        let Some(group) = state.classic.get_mut(name) else {
            return Reply::Ready(Err(unknown()));
        };
        group.upkeep(name, now, self.settings.initial_rebalance_delay);
        if let Err(error) =
            group.check_instance(name, &request.member_id, request.instance_id.as_deref())
        {
            return Reply::Ready(Err(error));
        }
        let current = group.generation;
        let group_state = group.state;
        let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
        let member = match group.member_mut(name, &request.member_id) {
            Ok(member) => member,
            Err(error) => return Reply::Ready(Err(error)),
        };
        if request.generation != current {
            return Reply::Ready(Err(GroupError::IllegalGeneration {
                group: name.to_owned(),
                member: request.member_id.clone(),
                got: request.generation,
                current,
            }));
        }
        member.deadline = now + member.session_timeout;
        match group_state {
            GroupState::Empty | GroupState::Dead | GroupState::PreparingRebalance => {
                Reply::Ready(Err(GroupError::RebalanceInProgress { group: name.to_owned() }))
            }
            GroupState::Stable => Reply::Ready(Ok(member.assignment.clone())),
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                if let Some(previous) = member.awaiting_sync.replace(sender) {
                    let _ = previous
                        .send(Err(GroupError::RebalanceInProgress { group: name.to_owned() }));
                }
                if is_leader {
                    for (id, assignment) in request.assignments {
                        if let Some(member) = group.members.get_mut(&id) {
                            member.assignment = assignment;
                        }
                    }
                    group.state = GroupState::Stable;
                    for member in group.members.values_mut() {
                        if let Some(waiter) = member.awaiting_sync.take() {
                            let _ = waiter.send(Ok(member.assignment.clone()));
                        }
                    }
                    tracing::info!(
                        group = name,
                        generation = group.generation,
                        "kafka group stable: the leader's assignment sent"
                    );
                }
                Reply::Waiting(receiver)
            }
        }
    }

    /// `Heartbeat`: keeps the member alive; `RebalanceInProgress` tells it to join again.
    ///
    /// # Errors
    ///
    /// [`GroupError`]: an unknown or fenced member, another generation, a rebalance.
    pub async fn heartbeat_classic(
        &self,
        name: &str,
        generation: i32,
        member: &MemberRef,
    ) -> Result<(), GroupError> {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let unknown = || GroupError::UnknownMember {
            group: name.to_owned(),
            member: member.member_id.clone(),
        };
        let group = state.classic.get_mut(name).ok_or_else(unknown)?;
        group.upkeep(name, now, self.settings.initial_rebalance_delay);
        group.check_instance(name, &member.member_id, member.instance_id.as_deref())?;
        let (current, group_state) = (group.generation, group.state);
        let found = group.member_mut(name, &member.member_id)?;
        found.deadline = now + found.session_timeout;
        match group_state {
            GroupState::PreparingRebalance => {
                Err(GroupError::RebalanceInProgress { group: name.to_owned() })
            }
            GroupState::CompletingRebalance | GroupState::Stable if generation == current => Ok(()),
            GroupState::CompletingRebalance | GroupState::Stable => {
                Err(GroupError::IllegalGeneration {
                    group: name.to_owned(),
                    member: member.member_id.clone(),
                    got: generation,
                    current,
                })
            }
            GroupState::Empty | GroupState::Dead => Err(unknown()),
        }
    }

    /// `LeaveGroup`: each member's outcome, in order.
    pub async fn leave_classic(
        &self,
        name: &str,
        members: &[MemberRef],
    ) -> Vec<Result<(), GroupError>> {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let unknown = |member: &MemberRef| GroupError::UnknownMember {
            group: name.to_owned(),
            member: member.member_id.clone(),
        };
        let Some(group) = state.classic.get_mut(name) else {
            return members.iter().map(|member| Err(unknown(member))).collect();
        };
        let mut left = false;
        let outcomes = members
            .iter()
            .map(|member| {
                let id = match (&member.member_id, &member.instance_id) {
                    (id, _) if !id.is_empty() => id.clone(),
                    (_, Some(instance)) => {
                        group.instances.get(instance).cloned().ok_or_else(|| unknown(member))?
                    }
                    (_, None) => return Err(unknown(member)),
                };
                group.check_instance(name, &id, member.instance_id.as_deref())?;
                if group.pending.remove(&id).is_some() {
                    return Ok(());
                }
                if !group.members.contains_key(&id) {
                    return Err(unknown(member));
                }
                group.remove_member(&id, || GroupError::UnknownMember {
                    group: name.to_owned(),
                    member: id.clone(),
                });
                tracing::info!(group = name, member = %id, "kafka group member left");
                left = true;
                Ok(())
            })
            .collect();
        if left {
            group.after_departure(name, now, self.settings.initial_rebalance_delay);
            if group.try_complete_join(name, now) {
                self.metrics.group_rebalance();
            }
        }
        outcomes
    }

    /// `OffsetCommit` for a Kafka group: the outcome of each partition of each topic, in order.
    /// A group-level refusal (member, generation, rebalance) is the outer error.
    ///
    /// # Errors
    ///
    /// [`GroupError`] that refuses every partition.
    pub async fn commit_classic(
        &self,
        name: &str,
        generation: i32,
        member: &MemberRef,
        topics: &[(String, Vec<PartitionOffset>)],
    ) -> Result<Vec<TopicCommit>, GroupError> {
        validate_group_name(name)
            .map_err(|reason| GroupError::InvalidName { name: name.to_owned(), reason })?;
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let Groups { native, classic } = &mut *state;
        if let Some(group) = self.touch(native, name, now) {
            return Err(GroupError::OtherKind {
                group: name.to_owned(),
                members: group.members.len(),
                kind: "native",
            });
        }
        let unknown = || GroupError::UnknownMember {
            group: name.to_owned(),
            member: member.member_id.clone(),
        };
        let group = classic.get_mut(name);
        match group {
            Some(group) if !group.members.is_empty() => {
                group.upkeep(name, now, self.settings.initial_rebalance_delay);
                group.check_instance(name, &member.member_id, member.instance_id.as_deref())?;
                let (current, group_state) = (group.generation, group.state);
                let found = group.member_mut(name, &member.member_id)?;
                if group_state == GroupState::CompletingRebalance {
                    return Err(GroupError::RebalanceInProgress { group: name.to_owned() });
                }
                if generation != current {
                    return Err(GroupError::IllegalGeneration {
                        group: name.to_owned(),
                        member: member.member_id.clone(),
                        got: generation,
                        current,
                    });
                }
                found.deadline = now + found.session_timeout;
            }
            // No members: a standalone consumer's or an administrator's commit.
            _ if generation < 0 && member.member_id.is_empty() => {}
            _ => return Err(unknown()),
        }
        let mut outcomes = Vec::with_capacity(topics.len());
        for (topic, offsets) in topics {
            // Each partition checked on its own (Kafka answers per partition); the valid ones
            // are stored together.
            let checked: Vec<Result<(), GroupError>> = offsets
                .iter()
                .map(|entry| self.check_offsets(name, topic, std::slice::from_ref(entry)).map(drop))
                .collect();
            let valid: Vec<PartitionOffset> = offsets
                .iter()
                .zip(&checked)
                .filter(|(_, check)| check.is_ok())
                .map(|(entry, _)| *entry)
                .collect();
            let stored = match valid.is_empty() {
                true => Ok(()),
                false => self.store_offsets(name, topic, &valid).await,
            };
            outcomes.push(TopicCommit { checked, stored });
        }
        Ok(outcomes)
    }

    /// A group described in Kafka's terms: a Kafka group's members, a native group's (protocol
    /// type `ringmq`), `Empty` for a name with only committed offsets, `Dead` for none.
    pub async fn describe_classic(&self, name: &str) -> ClassicDescription {
        let has_offsets = self.store.all_committed().await.iter().any(|(key, _)| key.group == name);
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let Groups { native, classic } = &mut *state;
        if let Some(group) = self.touch(native, name, now) {
            return ClassicDescription {
                state: GroupState::Stable,
                protocol_type: "ringmq".to_owned(),
                protocol: "sticky".to_owned(),
                members: group
                    .members
                    .iter()
                    .map(|(id, member)| ClassicMemberInfo {
                        member_id: id.clone(),
                        instance_id: None,
                        client_id: String::new(),
                        client_host: member.client.clone(),
                        metadata: Bytes::new(),
                        assignment: Bytes::new(),
                    })
                    .collect(),
            };
        }
        if let Some(group) = classic.get_mut(name) {
            group.upkeep(name, now, self.settings.initial_rebalance_delay);
            if !group.members.is_empty() {
                return group.describe();
            }
        }
        ClassicDescription {
            state: if has_offsets { GroupState::Empty } else { GroupState::Dead },
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        }
    }

    /// Applies every Kafka group's deadlines: expired sessions, ended join and sync phases.
    /// Called a few times a second by the broker.
    pub async fn classic_upkeep(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let delay = self.settings.initial_rebalance_delay;
        let mut rebalanced = 0;
        state.classic.retain(|name, group| {
            let before = group.generation;
            group.upkeep(name, now, delay);
            if group.generation != before && !group.members.is_empty() {
                rebalanced += 1;
            }
            !(group.members.is_empty() && group.pending.is_empty())
        });
        for _ in 0..rebalanced {
            self.metrics.group_rebalance();
        }
    }

    /// The Kafka groups with members, for listings: name, protocol type, state, members,
    /// generation.
    pub(super) fn classic_listings(
        classic: &HashMap<String, ClassicGroup>,
    ) -> impl Iterator<Item = (&String, &str, GroupState, usize, i32)> {
        classic.iter().filter(|(_, group)| !group.members.is_empty()).map(|(name, group)| {
            (name, group.protocol_type.as_str(), group.state, group.members.len(), group.generation)
        })
    }
}

/// Applies a join's fields to a member and refreshes its session.
fn update(member: &mut ClassicMember, request: &JoinRequest, now: Instant) {
    member.client_id.clone_from(&request.client_id);
    member.client_host.clone_from(&request.client_host);
    member.session_timeout = request.session_timeout;
    member.rebalance_timeout = request.rebalance_timeout;
    member.protocols.clone_from(&request.protocols);
    member.deadline = now + request.session_timeout;
}
