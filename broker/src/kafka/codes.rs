//! The one table from the core's domain errors to the Kafka error codes a client acts on
//! (documented in the README's compatibility section).

use kafka_protocol::error::ResponseError as Kafka;

use crate::auth::permissions::{Denied, ResourceKind};
use crate::core::{FetchError, ProduceError, SyncState};
use crate::groups::GroupError;
use crate::topics::TopicError;

/// No error.
pub(crate) const NONE: i16 = 0;
/// An offset outside the partition.
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;
/// No such topic or partition.
pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Commit metadata over Kafka's limit.
pub(crate) const OFFSET_METADATA_TOO_LARGE: i16 = 12;
/// A group id the broker does not accept.
pub(crate) const INVALID_GROUP_ID: i16 = 24;

/// A produce that was refused.
pub(crate) fn produce(error: &ProduceError) -> i16 {
    match error {
        ProduceError::Unauthorized(denied) => self::denied(denied),
        ProduceError::UnknownPartition { .. } | ProduceError::TopicDeleted { .. } => {
            Kafka::UnknownTopicOrPartition.code()
        }
        ProduceError::BatchTooLarge { .. } => Kafka::MessageTooLarge.code(),
        ProduceError::CorruptBatch(_) => Kafka::CorruptMessage.code(),
        ProduceError::Unsupported(_) => Kafka::UnsupportedForMessageFormat.code(),
        // Retriable: the chunk the append needs is still being read.
        ProduceError::Busy { .. } => Kafka::RequestTimedOut.code(),
        ProduceError::Fenced(_) => Kafka::InvalidProducerEpoch.code(),
        ProduceError::OutOfOrderSequence(_) => Kafka::OutOfOrderSequenceNumber.code(),
        ProduceError::Poisoned(_) | ProduceError::Storage(_) => Kafka::KafkaStorageError.code(),
    }
}

/// A sync an `acks = all` produce waited for, when it did not end well.
pub(crate) fn sync(state: &SyncState) -> i16 {
    match state {
        SyncState::Done => NONE,
        SyncState::Failed(_) => Kafka::KafkaStorageError.code(),
        SyncState::TimedOut | SyncState::Pending => Kafka::RequestTimedOut.code(),
    }
}

/// A fetch that got no batches.
pub(crate) fn fetch(error: &FetchError) -> i16 {
    match error {
        FetchError::OffsetOutOfRange { .. } => Kafka::OffsetOutOfRange.code(),
        FetchError::Unauthorized(denied) => self::denied(denied),
        // Retriable: the client fetches again.
        _ => Kafka::RequestTimedOut.code(),
    }
}

/// A topic operation that failed.
pub(crate) fn topic(error: &TopicError) -> i16 {
    match error {
        TopicError::Unauthorized(denied) => self::denied(denied),
        TopicError::Unknown(_) => Kafka::UnknownTopicOrPartition.code(),
        TopicError::Exists(_) => Kafka::TopicAlreadyExists.code(),
        TopicError::InvalidName { .. } => Kafka::InvalidTopicException.code(),
        TopicError::TooManyPartitions { .. } => Kafka::InvalidPartitions.code(),
        TopicError::CapacityTooLarge { .. } | TopicError::InvalidGeometry(_) => {
            Kafka::InvalidConfig.code()
        }
        TopicError::TooMany { .. }
        | TopicError::RingBytesExceeded { .. }
        | TopicError::PrincipalBytesExceeded { .. } => Kafka::PolicyViolation.code(),
        // Kafka's answer when a broker cannot take a topic's logs.
        TopicError::DiskFull { .. } => Kafka::KafkaStorageError.code(),
        TopicError::Storage(_) | TopicError::Io { .. } => Kafka::KafkaStorageError.code(),
        // Retriable: the client asks again once the broker is back.
        TopicError::Stopping { .. } => Kafka::BrokerNotAvailable.code(),
        _ => Kafka::UnknownServerError.code(),
    }
}

/// A request refused for want of a rule: the code of the resource it was refused on.
pub(crate) fn denied(denied: &Denied) -> i16 {
    match denied.kind {
        ResourceKind::Topic => Kafka::TopicAuthorizationFailed.code(),
        ResourceKind::Group => Kafka::GroupAuthorizationFailed.code(),
        ResourceKind::Cluster => Kafka::ClusterAuthorizationFailed.code(),
    }
}

/// A group or producer-id operation that failed.
pub(crate) fn group(error: &GroupError) -> i16 {
    match error {
        GroupError::Unauthorized(denied) => self::denied(denied),
        GroupError::InvalidName { .. } => Kafka::InvalidGroupId.code(),
        GroupError::UnknownTopic(_) | GroupError::UnknownPartition { .. } => {
            Kafka::UnknownTopicOrPartition.code()
        }
        GroupError::UnknownMember { .. } => Kafka::UnknownMemberId.code(),
        GroupError::StaleGeneration { .. } | GroupError::IllegalGeneration { .. } => {
            Kafka::IllegalGeneration.code()
        }
        GroupError::RebalanceInProgress { .. } => Kafka::RebalanceInProgress.code(),
        GroupError::InconsistentProtocol { .. } | GroupError::OtherKind { .. } => {
            Kafka::InconsistentGroupProtocol.code()
        }
        GroupError::MemberIdRequired { .. } => Kafka::MemberIdRequired.code(),
        GroupError::FencedInstance { .. } => Kafka::FencedInstanceId.code(),
        GroupError::InvalidSessionTimeout { .. } => Kafka::InvalidSessionTimeout.code(),
        GroupError::NotAssigned { .. } => Kafka::RebalanceInProgress.code(),
        GroupError::NotEmpty { .. } => Kafka::NonEmptyGroup.code(),
        GroupError::OtherTopic { .. } => Kafka::InconsistentGroupProtocol.code(),
        GroupError::OffsetPastEnd { .. } => Kafka::OffsetOutOfRange.code(),
        GroupError::UnknownProducer { .. } => Kafka::UnknownProducerId.code(),
        GroupError::TooManyGroups { .. }
        | GroupError::TooManyMembers { .. }
        | GroupError::TooManyOffsets { .. } => Kafka::GroupMaxSizeReached.code(),
        _ => Kafka::CoordinatorNotAvailable.code(),
    }
}
