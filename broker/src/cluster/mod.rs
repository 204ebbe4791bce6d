//! Replicated partitions (issue #12; the plan and what is built so far: `docs/cluster-plan.md`).
//!
//! Each replicated partition is one Raft group run by openraft 0.9 (`storage-v2`), whose log is
//! the partition's ring:
//!
//! - [`RingLogStore`]: openraft's [`RaftLogStorage`](openraft::storage::RaftLogStorage) over a
//!   ring that publishes on commit. One Raft entry is one RecordBatch v2 in the ring: a
//!   producer's batch as it was sent, or, for the entries that carry no records (blank and
//!   membership entries), a control batch of one record (module `entry`). The entry's term is the
//!   batch's `partitionLeaderEpoch`; the map from Raft index to ring offset is in memory and
//!   rebuilt on open by counting batches from an anchor saved with the vote and the purge point in
//!   the ring's replication state record.
//! - [`PartitionMachine`]: the state machine. A partition's data is its log, so applying an entry
//!   records how far the partition is applied and its membership; its snapshot is that state,
//!   saved in a file beside the ring.
//!
//! openraft stays behind these types: nothing outside this module names it.

// openraft's storage traits return its `StorageError` (about 200 bytes); the helpers behind them
// return the same type rather than box and unbox it on every call.
#![allow(clippy::result_large_err, reason = "openraft's StorageError is the traits' error type")]

mod entry;
mod group;
mod log_store;
mod machine;
mod network;
#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;
mod transport;
mod wire;

pub use self::group::{GroupTiming, PartitionGroup, StartError, WriteError};
pub use self::log_store::{LogStoreError, RingLogReader, RingLogStore};
pub use self::machine::PartitionMachine;
pub use self::network::{GroupNetwork, PeerClient};
pub use self::transport::{Transport, TransportConfig, TransportTasks};
pub use self::wire::decode_for_fuzzing as decode_peer_frame_for_fuzzing;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The Raft types of a replicated partition: node ids are the brokers' `--node-id`s, an entry's
    /// data is a producer's batch, and applying one answers where it landed.
    pub PartitionRaft:
        D = Batch,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<PartitionRaft>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A producer's record batch (RecordBatch v2, validated), as the leader received it: the bytes
/// every replica writes into its ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub bytes::Bytes);

/// What applying an entry answers: where a producer's batch landed in the partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Offset of the batch's first record (none for an entry that carries no records).
    pub base_offset: Option<u64>,
}

/// The openraft error type of a partition group.
type RaftStorageError = openraft::StorageError<u64>;
/// A Raft log id of a partition group: (term, index).
type LogId = openraft::LogId<u64>;
