//! One replicated partition on this node: its Raft group (openraft over the ring's log and the
//! partition's state machine, on the shared transport), write admission, and the retention task
//! that keeps the ring's reclaim ahead of need.
//!
//! Retention. A single node's ring reclaims its oldest chunk when it is full. A replicated ring
//! may reclaim only what openraft has purged ([`crate::log::LogWriter::retain_from`]), and
//! openraft purges only what a snapshot covers. openraft's own snapshot policy is off and it
//! purges nothing by itself (a purge count or interval would reset lagging followers long before
//! the ring needs the room): after each append the log says which entries the ring will reclaim
//! within its next quarter of chunks, and the retention task waits until they are applied, builds
//! a snapshot (the partition's state is small: applied id and membership) and purges them. When
//! the ring is within an eighth of its chunks of a reclaim the purge has not made (a follower
//! holding the purge back, or writes faster than it), the leader refuses writes with
//! [`WriteError::RingFull`], retriable, rather than let an append fail inside openraft.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, Raft, SnapshotPolicy};

use super::log_store::Retention;
use super::network::RaftHandler;
use super::{
    Applied, Batch, GroupNetwork, PartitionMachine, PartitionRaft, RingLogStore, Transport,
};
use crate::log::Log;

/// Timing of a group's elections and heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTiming {
    /// How often a leader tells its followers it is alive.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time between these starts an election.
    pub election_min: Duration,
    /// See `election_min`.
    pub election_max: Duration,
}

impl Default for GroupTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
        }
    }
}

/// Why a group could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The timing is not one openraft accepts.
    #[error("group {group}: {reason}")]
    Timing {
        /// The group.
        group: u64,
        /// openraft's reason.
        reason: String,
    },
    /// openraft could not start the group on its storage.
    #[error("group {group}: {reason}")]
    Raft {
        /// The group.
        group: u64,
        /// openraft's reason.
        reason: String,
    },
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This node is not the group's leader; the leader's node id, if known.
    #[error("not the leader of group {group}{}", leader.map(|node| format!(": node {node} is")).unwrap_or_default())]
    NotLeader {
        /// The group.
        group: u64,
        /// The leader's node id.
        leader: Option<u64>,
    },
    /// The ring is close to reclaiming entries openraft has not purged yet (a follower lags far
    /// behind, or writes outrun the purge): retry shortly.
    #[error("group {group}: the partition's ring is nearly full of entries not yet purged by its replication; retry shortly")]
    RingFull {
        /// The group.
        group: u64,
    },
    /// The group stopped, or its storage failed (the reason says which).
    #[error("group {group}: {reason}")]
    Failed {
        /// The group.
        group: u64,
        /// What happened.
        reason: String,
    },
}

/// One replicated partition on this node.
#[derive(Clone)]
pub struct PartitionGroup {
    group: u64,
    raft: Raft<PartitionRaft>,
    log: Log,
    retention: Arc<Retention>,
}

impl std::fmt::Debug for PartitionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionGroup")
            .field("group", &self.group)
            .field("log", &self.log.path())
            .finish_non_exhaustive()
    }
}

/// openraft's settings for a partition group.
fn raft_config(group: u64, timing: GroupTiming) -> Result<Config, StartError> {
    let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let config = Config {
        cluster_name: format!("group-{group}"),
        heartbeat_interval: millis(timing.heartbeat),
        election_timeout_min: millis(timing.election_min),
        election_timeout_max: millis(timing.election_max),
        // Snapshots and purges only when the ring needs the room (see the module's comment).
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Config::default()
    };
    config.validate().map_err(|error| StartError::Timing { group, reason: error.to_string() })
}

impl PartitionGroup {
    /// Starts group `group` on this node over `store` and `machine`, its requests routed through
    /// `transport`, and its retention task.
    ///
    /// # Errors
    ///
    /// [`StartError`] when openraft refuses the timing or the storage.
    pub async fn start(
        group: u64,
        transport: &Transport,
        store: RingLogStore,
        machine: PartitionMachine,
        timing: GroupTiming,
    ) -> Result<Self, StartError> {
        let config = Arc::new(raft_config(group, timing)?);
        let log = store.log().clone();
        let retention = store.retention();
        let network = GroupNetwork::new(transport.clone(), group, log.batch_size_max());
        let raft = Raft::new(transport.node(), config, network, store, machine)
            .await
            .map_err(|error| StartError::Raft { group, reason: error.to_string() })?;
        let handler = RaftHandler::new(raft.clone(), log.batch_size_max());
        transport.add_group(group, Arc::new(handler));
        tokio::spawn(retain(group, raft.clone(), Arc::clone(&retention)));
        Ok(Self { group, raft, log, retention })
    }

    /// The group's openraft handle.
    pub fn raft(&self) -> &Raft<PartitionRaft> {
        &self.raft
    }

    /// The partition's ring.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Writes `batch` through the group: acknowledged once a majority holds it and it is applied
    /// here; answers where it landed.
    ///
    /// # Errors
    ///
    /// [`WriteError`]: not the leader (with the leader, when known), the ring full of unpurged
    /// entries (retriable), or the group failed.
    pub async fn write(&self, batch: Batch) -> Result<Applied, WriteError> {
        let group = self.group;
        if self.retention.is_full() {
            return Err(WriteError::RingFull { group });
        }
        match self.raft.client_write(batch).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(WriteError::NotLeader { group, leader: forward.leader_id })
            }
            Err(error) => Err(WriteError::Failed { group, reason: error.to_string() }),
        }
    }

    /// Stops the group on this node (its storage is closed when openraft's tasks end).
    pub async fn shutdown(&self, transport: &Transport) {
        transport.remove_group(self.group);
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(group = self.group, "stopping the group: {error}");
        }
    }
}

/// Purges what the ring is about to need, as the log asks (see the module's comment).
async fn retain(group: u64, raft: Raft<PartitionRaft>, retention: Arc<Retention>) {
    type Metrics = openraft::RaftMetrics<u64, openraft::BasicNode>;
    let mut wanted = retention.purge_to.subscribe();
    // What the log asked for before this task started counts too.
    wanted.mark_changed();
    let mut metrics = raft.metrics();
    loop {
        if wanted.changed().await.is_err() {
            return;
        }
        let target = *wanted.borrow_and_update();
        if target == 0 {
            continue;
        }
        let stopped = |m: &Metrics| m.running_state.is_err();
        let applied = |m: &Metrics| m.last_applied.is_some_and(|id| id.index >= target);
        let covered = |m: &Metrics| m.snapshot.is_some_and(|id| id.index >= target);
        let running = |seen: Result<bool, _>| matches!(seen, Ok(false));
        if !running(metrics.wait_for(|m| applied(m) || stopped(m)).await.map(|m| stopped(&m))) {
            return;
        }
        let is_covered = covered(&metrics.borrow());
        if !is_covered {
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            if !running(metrics.wait_for(|m| covered(m) || stopped(m)).await.map(|m| stopped(&m))) {
                return;
            }
        }
        if raft.trigger().purge_log(target).await.is_err() {
            return;
        }
        tracing::debug!(group, upto = target, "purge asked for the ring's room");
    }
}
