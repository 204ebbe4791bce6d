//! The core's domain errors: what went wrong, with the facts, whichever protocol asked. Each front
//! end maps them to its own codes in one table (`server::code_of`, the Kafka listener's table).

use ringmq_protocol::DecodeError;

use crate::auth::permissions::Denied;
use crate::log::{Poison, StorageError};
use crate::producers::SequenceError;

/// Why a produce was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The caller may not produce to the topic.
    #[error(transparent)]
    Unauthorized(#[from] Denied),
    /// The topic has no such partition.
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many it has.
        count: usize,
    },
    /// The topic was deleted while the request was on its way.
    #[error("topic {topic:?} was deleted")]
    TopicDeleted {
        /// The topic.
        topic: String,
    },
    /// The batch is larger than the partition accepts.
    #[error("batch of {size} bytes is larger than {topic}/{partition} accepts ({max} bytes)")]
    BatchTooLarge {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The batch's size.
        size: u64,
        /// The partition's limit.
        max: u64,
    },
    /// The batch is malformed.
    #[error("record batch rejected: {0}")]
    CorruptBatch(#[source] DecodeError),
    /// The batch asks for what the broker does not do (transactions).
    #[error("record batch rejected: {0}")]
    Unsupported(#[source] DecodeError),
    /// The chunk the append needs stayed leased by readers past the deadline.
    #[error("the oldest chunk is still being read by {readers} reader(s); try again")]
    Busy {
        /// Leases still held.
        readers: u64,
    },
    /// A newer epoch of this producer id exists.
    #[error(transparent)]
    Fenced(SequenceError),
    /// The batch leaves a gap in its producer's sequence.
    #[error(transparent)]
    OutOfOrderSequence(SequenceError),
    /// The partition stopped after an I/O failure.
    #[error("partition log stopped after an i/o failure: {0}")]
    Poisoned(Poison),
    /// Storage failed otherwise.
    #[error(transparent)]
    Storage(StorageError),
}

/// Why a fetch got no batches.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The caller may not consume the topic.
    #[error(transparent)]
    Unauthorized(#[from] Denied),
    /// The offset is below the earliest held or past the next.
    #[error(
        "offset {offset} is out of range for {topic}/{partition}: it holds {earliest} to {next}"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// Earliest offset held.
        earliest: u64,
        /// Offset the next record gets.
        next: u64,
    },
    /// Too many readers on the chunk, or the writer lapped the read; retry.
    #[error("the partition is busy (too many concurrent readers, or rewritten faster than it could be read); retry")]
    Busy,
    /// The partition keeps no cursor page: same-host reading is off.
    #[error("same-host reading is off on this broker (start it with --local-listen)")]
    LocalOff,
    /// The descriptors for a same-host reader could not be made.
    #[error("cannot open the partition for a local reader: {0}")]
    LocalFiles(String),
}

/// Why a change to users or permissions failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The caller may not make it.
    #[error(transparent)]
    Unauthorized(#[from] Denied),
    /// A user could not be added, changed or removed.
    #[error(transparent)]
    Users(#[from] crate::auth::users::UsersError),
    /// A rule or superuser could not be added or removed.
    #[error(transparent)]
    Permissions(#[from] crate::auth::permissions::PermissionsError),
    /// A quota could not be set or removed.
    #[error(transparent)]
    Quotas(#[from] super::QuotaError),
    /// The work did not finish (the broker is stopping).
    #[error("the change did not finish: the broker is stopping")]
    Interrupted,
    /// Users and rules are managed only where they are enforced: with `auth = off` anyone could
    /// make themselves a superuser that would then hold once authentication is turned on.
    #[error("users, access rules and quotas are managed only on a broker with auth = required (this one has auth = off)")]
    AuthOff,
    /// Superusers, and the accounts of superusers, are changed only by a superuser.
    #[error("principal {by:?} is not a superuser: only a superuser may {what}")]
    NotSuperuser {
        /// Who asked.
        by: String,
        /// What it asked for.
        what: String,
    },
}
