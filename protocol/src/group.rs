//! Consumer group and idempotent producer messages.
//!
//! Arrays are a `u32` count followed by the entries. Decoding checks every entry once, in place,
//! and keeps the bytes; [`Entries`] then iterates them without allocating. Encoding takes plain
//! slices. `protocol/README.md` lists every field.

use std::fmt;

use crate::error::{DecodeError, EncodeError};
use crate::limits::{
    GROUP_COUNT_MAX, GROUP_MEMBER_COUNT_MAX, GROUP_NAME_SIZE_MAX, GROUP_OFFSET_COUNT_MAX,
};
use crate::limits::{PARTITION_COUNT_MAX, PEER_NAME_SIZE_MAX, TOPIC_NAME_SIZE_MAX};
use crate::wire::{len_u32, put_str16, put_u16, put_u32, put_u64, put_u8, Reader};

/// An array: either decoded in place (every entry was checked when the message was decoded) or,
/// for a message being built, a slice of entries.
#[derive(Clone, Copy)]
pub struct Entries<'a, T> {
    source: Source<'a, T>,
}

#[derive(Clone, Copy)]
enum Source<'a, T> {
    Encoded { count: usize, bytes: &'a [u8] },
    Slice(&'a [T]),
}

/// An array entry type (sealed: the protocol defines them all).
pub trait Entry<'a>: sealed::Decode<'a> + Clone {}

impl<'a, T: sealed::Decode<'a> + Clone> Entry<'a> for T {}

mod sealed {
    use crate::error::DecodeError;
    use crate::wire::Reader;

    pub trait Decode<'a>: Sized {
        fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError>;
    }
}

impl<'a, T: Entry<'a>> Entries<'a, T> {
    /// Entries to encode.
    #[must_use]
    pub fn from_slice(entries: &'a [T]) -> Self {
        Self { source: Source::Slice(entries) }
    }

    /// Reads a `u32` count, then checks `count` entries.
    fn read(
        reader: &mut Reader<'a>,
        field: &'static str,
        max: usize,
        entry_size_min: usize,
    ) -> Result<Self, DecodeError> {
        let count = reader.count32(field, max, entry_size_min)?;
        let start = reader.position();
        let mut check = reader.clone();
        for _ in 0..count {
            T::decode(&mut check)?;
        }
        let used = check.position().saturating_sub(start);
        let bytes = reader.take(used, field)?;
        Ok(Self { source: Source::Encoded { count, bytes } })
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        match self.source {
            Source::Encoded { count, .. } => count,
            Source::Slice(entries) => entries.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in order.
    pub fn iter(&self) -> EntriesIter<'a, T> {
        let inner = match self.source {
            Source::Encoded { count, bytes } => {
                IterSource::Encoded { left: count, reader: Reader::new(bytes, "array entry") }
            }
            Source::Slice(entries) => IterSource::Slice(entries.iter()),
        };
        EntriesIter { inner }
    }
}

/// Iterator over [`Entries`].
#[derive(Debug)]
pub struct EntriesIter<'a, T> {
    inner: IterSource<'a, T>,
}

#[derive(Debug)]
enum IterSource<'a, T> {
    Encoded { left: usize, reader: Reader<'a> },
    Slice(std::slice::Iter<'a, T>),
}

impl<'a, T: Entry<'a>> Iterator for EntriesIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.inner {
            IterSource::Encoded { left, reader } => {
                *left = left.checked_sub(1)?;
                T::decode(reader).ok()
            }
            IterSource::Slice(entries) => entries.next().cloned(),
        }
    }
}

impl<'a, T: Entry<'a> + fmt::Debug> fmt::Debug for Entries<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: Entry<'a> + PartialEq> PartialEq for Entries<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl<'a, T: Entry<'a> + Eq> Eq for Entries<'a, T> {}

fn partition(reader: &mut Reader<'_>) -> Result<u32, DecodeError> {
    let partition = reader.u32("partition")?;
    if partition >= PARTITION_COUNT_MAX {
        return Err(reader.invalid("partition", u64::from(partition), "above the partition limit"));
    }
    Ok(partition)
}

impl<'a> sealed::Decode<'a> for u32 {
    fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        partition(reader)
    }
}

fn put_partitions(out: &mut Vec<u8>, partitions: &[u32]) -> Result<(), EncodeError> {
    let max = usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0);
    put_u32(out, len_u32("partitions", partitions.len(), max)?);
    for &partition in partitions {
        put_u32(out, partition);
    }
    Ok(())
}

/// `InitProducer` request and reply: a producer id and epoch.
///
/// In a request, `producer_id` -1 asks for a new id (epoch 0); an existing id with its current
/// epoch asks for the next epoch, which fences batches of the older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// The producer id (-1 in a request for a new one).
    pub producer_id: i64,
    /// The epoch, 0 to `i16::MAX` (Kafka's `int16`; -1 only in a request for a new id).
    pub producer_epoch: i16,
}

impl ProducerIdentity {
    /// Decodes a request or reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &[u8], context: &'static str) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, context);
        let producer_id = i64::from_le_bytes(reader.u64("producer_id")?.to_le_bytes());
        let producer_epoch = i16::from_le_bytes(reader.u16("producer_epoch")?.to_le_bytes());
        reader.finish()?;
        Ok(Self { producer_id, producer_epoch })
    }

    /// Encodes the body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, u64::from_le_bytes(self.producer_id.to_le_bytes()));
        put_u16(out, u16::from_le_bytes(self.producer_epoch.to_le_bytes()));
    }
}

/// Join a consumer group that consumes `topic` (or rejoin with the member id given before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroup<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic the group consumes.
    pub topic: &'a str,
    /// The member id from an earlier join, or empty for a new member.
    pub member_id: &'a str,
    /// How long the broker keeps the member without a heartbeat, ms.
    pub session_timeout_ms: u32,
}

impl<'a> JoinGroup<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "join group request");
        let group = reader.str16("group", GROUP_NAME_SIZE_MAX)?;
        let topic = reader.str16("topic", TOPIC_NAME_SIZE_MAX)?;
        let member_id = reader.str16("member_id", GROUP_NAME_SIZE_MAX)?;
        let session_timeout_ms = reader.u32("session_timeout_ms")?;
        reader.finish()?;
        Ok(Self { group, topic, member_id, session_timeout_ms })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "group", self.group, GROUP_NAME_SIZE_MAX)?;
        put_str16(out, "topic", self.topic, TOPIC_NAME_SIZE_MAX)?;
        put_str16(out, "member_id", self.member_id, GROUP_NAME_SIZE_MAX)?;
        put_u32(out, self.session_timeout_ms);
        Ok(())
    }
}

/// Keep a membership alive; the reply carries the member's current assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat<'a> {
    /// The group.
    pub group: &'a str,
    /// The member.
    pub member_id: &'a str,
    /// The generation the member last learned.
    pub generation: u32,
}

impl<'a> Heartbeat<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "heartbeat request");
        let group = reader.str16("group", GROUP_NAME_SIZE_MAX)?;
        let member_id = reader.str16("member_id", GROUP_NAME_SIZE_MAX)?;
        let generation = reader.u32("generation")?;
        reader.finish()?;
        Ok(Self { group, member_id, generation })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "group", self.group, GROUP_NAME_SIZE_MAX)?;
        put_str16(out, "member_id", self.member_id, GROUP_NAME_SIZE_MAX)?;
        put_u32(out, self.generation);
        Ok(())
    }
}

/// Leave a group: its partitions move to the other members at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroup<'a> {
    /// The group.
    pub group: &'a str,
    /// The member.
    pub member_id: &'a str,
}

impl<'a> LeaveGroup<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "leave group request");
        let group = reader.str16("group", GROUP_NAME_SIZE_MAX)?;
        let member_id = reader.str16("member_id", GROUP_NAME_SIZE_MAX)?;
        reader.finish()?;
        Ok(Self { group, member_id })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "group", self.group, GROUP_NAME_SIZE_MAX)?;
        put_str16(out, "member_id", self.member_id, GROUP_NAME_SIZE_MAX)
    }
}

/// Reply to `JoinGroup` and `Heartbeat`: the member's place in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAssignment<'a> {
    /// The group's generation; it grows with every change of membership.
    pub generation: u32,
    /// The member's id (assigned by the broker on the first join).
    pub member_id: &'a str,
    /// The session timeout the broker applies, ms (the request's, within the broker's bounds).
    pub session_timeout_ms: u32,
    /// How often the member should heartbeat, ms.
    pub heartbeat_interval_ms: u32,
    /// False while some partitions meant for this member are still held by a member that has not
    /// yet learned of the rebalance: heartbeat again soon to get them.
    pub settled: bool,
    /// The partitions the member may consume now, ascending.
    pub partitions: Entries<'a, u32>,
}

impl<'a> GroupAssignment<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "group assignment");
        let generation = reader.u32("generation")?;
        let member_id = reader.str16("member_id", GROUP_NAME_SIZE_MAX)?;
        let session_timeout_ms = reader.u32("session_timeout_ms")?;
        let heartbeat_interval_ms = reader.u32("heartbeat_interval_ms")?;
        let settled = reader.u8("settled")? != 0;
        let max = usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0);
        let partitions = Entries::read(&mut reader, "partitions", max, 4)?;
        reader.finish()?;
        Ok(Self {
            generation,
            member_id,
            session_timeout_ms,
            heartbeat_interval_ms,
            settled,
            partitions,
        })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the member id is too long or there are too many partitions.
    #[allow(clippy::too_many_arguments, reason = "one argument per field of the reply")]
    pub fn encode(
        generation: u32,
        member_id: &str,
        session_timeout_ms: u32,
        heartbeat_interval_ms: u32,
        settled: bool,
        partitions: &[u32],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        put_u32(out, generation);
        put_str16(out, "member_id", member_id, GROUP_NAME_SIZE_MAX)?;
        put_u32(out, session_timeout_ms);
        put_u32(out, heartbeat_interval_ms);
        put_u8(out, u8::from(settled));
        put_partitions(out, partitions)
    }
}

/// One partition's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    /// The partition.
    pub partition: u32,
    /// The offset: the next record to consume.
    pub offset: u64,
}

impl<'a> sealed::Decode<'a> for PartitionOffset {
    fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self { partition: partition(reader)?, offset: reader.u64("offset")? })
    }
}

fn put_partition_offsets(
    out: &mut Vec<u8>,
    offsets: &Entries<'_, PartitionOffset>,
) -> Result<(), EncodeError> {
    let max = usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0);
    put_u32(out, len_u32("offsets", offsets.len(), max)?);
    for entry in offsets.iter() {
        put_u32(out, entry.partition);
        put_u64(out, entry.offset);
    }
    Ok(())
}

/// Commit offsets for partitions of the group's topic.
///
/// A member commits with its id and the generation it last learned, for partitions it holds. An
/// administrator (empty member id, generation 0) may commit only while the group has no members.
/// All entries are applied or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffsets<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The committing member, or empty for an administrator.
    pub member_id: &'a str,
    /// The generation the member last learned (0 for an administrator).
    pub generation: u32,
    /// The offsets.
    pub offsets: Entries<'a, PartitionOffset>,
}

impl<'a> CommitOffsets<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "commit offsets request");
        let group = reader.str16("group", GROUP_NAME_SIZE_MAX)?;
        let topic = reader.str16("topic", TOPIC_NAME_SIZE_MAX)?;
        let member_id = reader.str16("member_id", GROUP_NAME_SIZE_MAX)?;
        let generation = reader.u32("generation")?;
        let max = usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0);
        let offsets = Entries::read(&mut reader, "offsets", max, 12)?;
        reader.finish()?;
        Ok(Self { group, topic, member_id, generation, offsets })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "group", self.group, GROUP_NAME_SIZE_MAX)?;
        put_str16(out, "topic", self.topic, TOPIC_NAME_SIZE_MAX)?;
        put_str16(out, "member_id", self.member_id, GROUP_NAME_SIZE_MAX)?;
        put_u32(out, self.generation);
        put_partition_offsets(out, &self.offsets)
    }
}

/// A request naming a group and a topic (`FetchCommitted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTopic<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic.
    pub topic: &'a str,
}

impl<'a> GroupTopic<'a> {
    pub(crate) fn decode(body: &'a [u8], context: &'static str) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, context);
        let group = reader.str16("group", GROUP_NAME_SIZE_MAX)?;
        let topic = reader.str16("topic", TOPIC_NAME_SIZE_MAX)?;
        reader.finish()?;
        Ok(Self { group, topic })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "group", self.group, GROUP_NAME_SIZE_MAX)?;
        put_str16(out, "topic", self.topic, TOPIC_NAME_SIZE_MAX)
    }
}

/// A request naming a group (`DescribeGroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName<'a> {
    /// The group.
    pub group: &'a str,
}

impl<'a> GroupName<'a> {
    pub(crate) fn decode(body: &'a [u8], context: &'static str) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, context);
        let group = reader.str16("group", GROUP_NAME_SIZE_MAX)?;
        reader.finish()?;
        Ok(Self { group })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "group", self.group, GROUP_NAME_SIZE_MAX)
    }
}

/// Reply to `FetchCommitted`: the committed offset of each partition that has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffsets<'a> {
    /// The offsets, by partition.
    pub offsets: Entries<'a, PartitionOffset>,
}

impl<'a> CommittedOffsets<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "committed offsets");
        let max = usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0);
        let offsets = Entries::read(&mut reader, "offsets", max, 12)?;
        reader.finish()?;
        Ok(Self { offsets })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if there are too many offsets.
    pub fn encode(offsets: &[PartitionOffset], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_partition_offsets(out, &Entries::from_slice(offsets))
    }
}

/// One group in a [`GroupList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSummary<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic its members consume (empty when it has none).
    pub topic: &'a str,
    /// Live members.
    pub members: u32,
    /// Current generation.
    pub generation: u32,
}

impl<'a> sealed::Decode<'a> for GroupSummary<'a> {
    fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            group: reader.str16("group", GROUP_NAME_SIZE_MAX)?,
            topic: reader.str16("topic", TOPIC_NAME_SIZE_MAX)?,
            members: reader.u32("members")?,
            generation: reader.u32("generation")?,
        })
    }
}

/// Reply to `ListGroups`: every group with members or committed offsets, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupList<'a> {
    /// The groups.
    pub groups: Entries<'a, GroupSummary<'a>>,
}

impl<'a> GroupList<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "group list");
        let max = usize::try_from(GROUP_COUNT_MAX).unwrap_or(0);
        let groups = Entries::read(&mut reader, "groups", max, 12)?;
        reader.finish()?;
        Ok(Self { groups })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if a name is too long or there are too many groups.
    pub fn encode(groups: &[GroupSummary<'_>], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let max = usize::try_from(GROUP_COUNT_MAX).unwrap_or(0);
        put_u32(out, len_u32("groups", groups.len(), max)?);
        for summary in groups {
            put_str16(out, "group", summary.group, GROUP_NAME_SIZE_MAX)?;
            put_str16(out, "topic", summary.topic, TOPIC_NAME_SIZE_MAX)?;
            put_u32(out, summary.members);
            put_u32(out, summary.generation);
        }
        Ok(())
    }
}

/// One member in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription<'a> {
    /// The member id.
    pub member_id: &'a str,
    /// The address of the connection it last heartbeated from.
    pub client: &'a str,
    /// The generation it last learned.
    pub generation: u32,
    /// The partitions it holds.
    pub partitions: Entries<'a, u32>,
}

impl<'a> sealed::Decode<'a> for MemberDescription<'a> {
    fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let member_id = reader.str16("member_id", GROUP_NAME_SIZE_MAX)?;
        let client = reader.str16("client", PEER_NAME_SIZE_MAX)?;
        let generation = reader.u32("generation")?;
        let max = usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0);
        let partitions = Entries::read(reader, "partitions", max, 4)?;
        Ok(Self { member_id, client, generation, partitions })
    }
}

/// One committed offset in a [`GroupDescription`], with the partition's end for the lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetDescription<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The committed offset.
    pub committed: u64,
    /// The partition's next offset (0 if the topic no longer exists).
    pub end: u64,
}

impl OffsetDescription<'_> {
    /// Records after the committed offset: the group's lag on this partition.
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.end.saturating_sub(self.committed)
    }
}

impl<'a> sealed::Decode<'a> for OffsetDescription<'a> {
    fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            topic: reader.str16("topic", TOPIC_NAME_SIZE_MAX)?,
            partition: partition(reader)?,
            committed: reader.u64("committed")?,
            end: reader.u64("end")?,
        })
    }
}

/// A member to encode in a [`GroupDescription`].
#[derive(Debug, Clone, Copy)]
pub struct MemberToEncode<'a> {
    /// The member id.
    pub member_id: &'a str,
    /// Its client's address.
    pub client: &'a str,
    /// The generation it last learned.
    pub generation: u32,
    /// The partitions it holds.
    pub partitions: &'a [u32],
}

/// Reply to `DescribeGroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic its members consume (empty when it has none).
    pub topic: &'a str,
    /// Current generation.
    pub generation: u32,
    /// Live members, by id.
    pub members: Entries<'a, MemberDescription<'a>>,
    /// Committed offsets, by topic and partition.
    pub offsets: Entries<'a, OffsetDescription<'a>>,
}

impl<'a> GroupDescription<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "group description");
        let group = reader.str16("group", GROUP_NAME_SIZE_MAX)?;
        let topic = reader.str16("topic", TOPIC_NAME_SIZE_MAX)?;
        let generation = reader.u32("generation")?;
        let max_members = usize::try_from(GROUP_MEMBER_COUNT_MAX).unwrap_or(0);
        let members = Entries::read(&mut reader, "members", max_members, 12)?;
        let max_offsets = usize::try_from(GROUP_OFFSET_COUNT_MAX).unwrap_or(0);
        let offsets = Entries::read(&mut reader, "offsets", max_offsets, 22)?;
        reader.finish()?;
        Ok(Self { group, topic, generation, members, offsets })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if a name is too long or an array too large.
    pub fn encode(
        group: &str,
        topic: &str,
        generation: u32,
        members: &[MemberToEncode<'_>],
        offsets: &[OffsetDescription<'_>],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        put_str16(out, "group", group, GROUP_NAME_SIZE_MAX)?;
        put_str16(out, "topic", topic, TOPIC_NAME_SIZE_MAX)?;
        put_u32(out, generation);
        let max_members = usize::try_from(GROUP_MEMBER_COUNT_MAX).unwrap_or(0);
        put_u32(out, len_u32("members", members.len(), max_members)?);
        for member in members {
            put_str16(out, "member_id", member.member_id, GROUP_NAME_SIZE_MAX)?;
            put_str16(out, "client", member.client, PEER_NAME_SIZE_MAX)?;
            put_u32(out, member.generation);
            put_partitions(out, member.partitions)?;
        }
        let max_offsets = usize::try_from(GROUP_OFFSET_COUNT_MAX).unwrap_or(0);
        put_u32(out, len_u32("offsets", offsets.len(), max_offsets)?);
        for entry in offsets {
            put_str16(out, "topic", entry.topic, TOPIC_NAME_SIZE_MAX)?;
            put_u32(out, entry.partition);
            put_u64(out, entry.committed);
            put_u64(out, entry.end);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameHead, Opcode};
    use crate::limits::FRAME_HEADER_SIZE;
    use crate::message::{Request, Response};
    use crate::ErrorCode;
    use proptest::prelude::*;

    fn round_trip(request: &Request<'_>) {
        let mut out = Vec::new();
        request.encode_frame(3, &mut out).unwrap();
        let head = FrameHead::decode(&out, u32::MAX).unwrap();
        let decoded =
            Request::decode(Opcode::from_u8(head.opcode).unwrap(), &out[FRAME_HEADER_SIZE..])
                .unwrap()
                .unwrap();
        assert_eq!(&decoded, request);
    }

    fn response(opcode: Opcode, body: &[u8]) -> Response<'_> {
        let head = FrameHead::response(
            opcode.as_u8(),
            ErrorCode::None,
            1,
            u32::try_from(body.len()).unwrap(),
        );
        Response::decode(&head, body).unwrap()
    }

    #[test]
    fn group_and_producer_requests_round_trip() {
        let offsets = [
            PartitionOffset { partition: 0, offset: 17 },
            PartitionOffset { partition: 5, offset: u64::MAX },
        ];
        round_trip(&Request::InitProducer(ProducerIdentity { producer_id: -1, producer_epoch: 0 }));
        round_trip(&Request::InitProducer(ProducerIdentity {
            producer_id: 1 << 40,
            producer_epoch: 9,
        }));
        round_trip(&Request::JoinGroup(JoinGroup {
            group: "billing",
            topic: "orders",
            member_id: "",
            session_timeout_ms: 10_000,
        }));
        round_trip(&Request::Heartbeat(Heartbeat {
            group: "billing",
            member_id: "m-1",
            generation: 4,
        }));
        round_trip(&Request::LeaveGroup(LeaveGroup { group: "billing", member_id: "m-1" }));
        round_trip(&Request::CommitOffsets(CommitOffsets {
            group: "billing",
            topic: "orders",
            member_id: "m-1",
            generation: 4,
            offsets: Entries::from_slice(&offsets),
        }));
        round_trip(&Request::FetchCommitted(GroupTopic { group: "billing", topic: "orders" }));
        round_trip(&Request::ListGroups);
        round_trip(&Request::DescribeGroup(GroupName { group: "billing" }));
    }

    #[test]
    fn group_replies_round_trip() {
        let mut out = Vec::new();
        GroupAssignment::encode(7, "m-2", 6000, 2000, false, &[1, 3, 5], &mut out).unwrap();
        let Response::GroupAssignment(assignment) = response(Opcode::Heartbeat, &out) else {
            panic!("not an assignment")
        };
        assert_eq!(
            (assignment.generation, assignment.member_id, assignment.settled),
            (7, "m-2", false)
        );
        assert_eq!(assignment.partitions.iter().collect::<Vec<_>>(), [1, 3, 5]);

        let offsets = [PartitionOffset { partition: 2, offset: 40 }];
        let mut out = Vec::new();
        CommittedOffsets::encode(&offsets, &mut out).unwrap();
        let Response::CommittedOffsets(committed) = response(Opcode::FetchCommitted, &out) else {
            panic!("not committed offsets")
        };
        assert_eq!(committed.offsets.iter().collect::<Vec<_>>(), offsets);

        let groups = [
            GroupSummary { group: "a", topic: "t", members: 2, generation: 9 },
            GroupSummary { group: "b", topic: "", members: 0, generation: 1 },
        ];
        let mut out = Vec::new();
        GroupList::encode(&groups, &mut out).unwrap();
        let Response::GroupList(list) = response(Opcode::ListGroups, &out) else {
            panic!("not a group list")
        };
        assert_eq!(list.groups.iter().collect::<Vec<_>>(), groups);

        let members = [
            MemberToEncode {
                member_id: "m-1",
                client: "127.0.0.1:5",
                generation: 3,
                partitions: &[0, 1],
            },
            MemberToEncode {
                member_id: "m-2",
                client: "127.0.0.1:6",
                generation: 2,
                partitions: &[],
            },
        ];
        let offsets = [OffsetDescription { topic: "t", partition: 1, committed: 5, end: 12 }];
        let mut out = Vec::new();
        GroupDescription::encode("a", "t", 3, &members, &offsets, &mut out).unwrap();
        let Response::GroupDescription(description) = response(Opcode::DescribeGroup, &out) else {
            panic!("not a group description")
        };
        let decoded: Vec<_> = description
            .members
            .iter()
            .map(|member| {
                (
                    member.member_id,
                    member.client,
                    member.generation,
                    member.partitions.iter().collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            decoded,
            [("m-1", "127.0.0.1:5", 3, vec![0, 1]), ("m-2", "127.0.0.1:6", 2, vec![])]
        );
        assert_eq!(description.offsets.iter().collect::<Vec<_>>(), offsets);
        assert_eq!(offsets[0].lag(), 7);
    }

    #[test]
    fn hostile_arrays_are_refused_with_the_field_named() {
        // A count far larger than the bytes present.
        let mut out = Vec::new();
        put_str16(&mut out, "group", "g", GROUP_NAME_SIZE_MAX).unwrap();
        put_str16(&mut out, "topic", "t", TOPIC_NAME_SIZE_MAX).unwrap();
        put_str16(&mut out, "member_id", "", GROUP_NAME_SIZE_MAX).unwrap();
        put_u32(&mut out, 0);
        put_u32(&mut out, 1000);
        put_u32(&mut out, 1);
        let error = Request::decode(Opcode::CommitOffsets, &out).unwrap_err();
        assert!(error.to_string().contains("offsets"), "{error}");

        // A partition index beyond the limit.
        let mut out = Vec::new();
        GroupAssignment::encode(1, "m", 1, 1, true, &[PARTITION_COUNT_MAX], &mut out).unwrap();
        let error = GroupAssignment::decode(&out).unwrap_err();
        assert!(error.to_string().contains("partition"), "{error}");
    }

    proptest! {
        #[test]
        fn random_group_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = GroupAssignment::decode(&body);
            let _ = CommittedOffsets::decode(&body);
            let _ = GroupList::decode(&body);
            if let Ok(description) = GroupDescription::decode(&body) {
                for member in description.members.iter() {
                    let _ = member.partitions.iter().count();
                }
                let _ = description.offsets.iter().count();
            }
        }
    }
}
