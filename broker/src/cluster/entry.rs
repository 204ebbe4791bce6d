//! Raft entries as the ring holds them: each one RecordBatch v2, so the ring stays one batch
//! format from producer to disk to consumer.
//!
//! - A normal entry is the producer's batch, its bytes unchanged but for the base offset and the
//!   `partitionLeaderEpoch` (the entry's term) that the ring stamps in place, outside the CRC.
//! - A blank or membership entry is a control batch (attributes bit 5) of one record whose key is
//!   a Kafka control record key (version 0, then the type: [`BLANK`] or [`MEMBERSHIP`]) and whose
//!   value is empty or the membership as JSON. Kafka consumers skip control batches, and the
//!   types are outside the range Kafka defines (0-6), so none mistakes one for a transaction
//!   marker. Every field is derived from the entry (timestamp 0), so every replica writes the same
//!   bytes and the replicas' rings agree byte for byte.

use bytes::Bytes;
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use ringmq_protocol::{BatchBuilder, BatchHeader, BatchView, Push, Record};

use super::{Batch, LogId, PartitionRaft};

/// Control record type of a blank entry (what a new leader commits first).
pub(super) const BLANK: u16 = 100;
/// Control record type of a membership entry.
pub(super) const MEMBERSHIP: u16 = 101;

type Entry = openraft::Entry<PartitionRaft>;

/// Why an entry could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub(super) enum EntryError {
    /// A normal entry whose data is not one valid batch (only a corrupt peer sends one).
    #[error("entry {index}: its data is not a valid record batch: {source}")]
    InvalidBatch {
        /// Raft index of the entry.
        index: u64,
        /// What the validation found.
        source: ringmq_protocol::DecodeError,
    },
    /// A control batch in the ring that is not one of ours.
    #[error("entry {index}: the control batch at offset {offset} is not a Raft entry ({reason})")]
    UnknownControl {
        /// Raft index of the entry.
        index: u64,
        /// Its offset in the ring.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A term the batch header cannot carry.
    #[error("entry {index}: term {term} is past the largest a batch carries ({max})", max = i32::MAX)]
    TermTooLarge {
        /// Raft index of the entry.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// A membership that does not encode into one control record.
    #[error("entry {index}: the membership does not fit one control record: {reason}")]
    Membership {
        /// Raft index of the entry.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// The bytes to append for `entry`: a producer's batch as it came (checked), or a control batch
/// built into `scratch`.
pub(super) fn to_batch<'a>(
    entry: &'a Entry,
    scratch: &'a mut Vec<u8>,
    batch_size_max: u32,
) -> Result<BatchView<'a>, EntryError> {
    let index = entry.log_id.index;
    let (kind, value) = match &entry.payload {
        EntryPayload::Normal(Batch(bytes)) => {
            return BatchView::validate(bytes, batch_size_max)
                .map_err(|source| EntryError::InvalidBatch { index, source })
        }
        EntryPayload::Blank => (BLANK, Vec::new()),
        EntryPayload::Membership(membership) => {
            let json = serde_json::to_vec(membership)
                .map_err(|error| EntryError::Membership { index, reason: error.to_string() })?;
            (MEMBERSHIP, json)
        }
    };
    let size = usize::try_from(batch_size_max).unwrap_or(usize::MAX);
    scratch.clear();
    scratch.resize(size.min(value.len() + 256), 0);
    let too_large = |reason: String| EntryError::Membership { index, reason };
    let mut builder =
        BatchBuilder::new(scratch, 0).map_err(|error| too_large(error.to_string()))?.control();
    let key = control_key(kind);
    let record = Record { key: Some(&key), ..Record::value(&value, 0) };
    match builder.push(&record) {
        Ok(Push::Appended) => {}
        Ok(Push::Full) => return Err(too_large(format!("{} bytes", value.len()))),
        Err(error) => return Err(too_large(error.to_string())),
    }
    let batch = builder.finish().map_err(|error| too_large(error.to_string()))?;
    Ok(BatchView::validate_control(batch, batch_size_max).expect("a control batch just built"))
}

/// The term of `entry` as a batch's `partitionLeaderEpoch`.
pub(super) fn term_of(log_id: &LogId) -> Result<u32, EntryError> {
    u32::try_from(log_id.leader_id.term)
        .ok()
        .filter(|&term| i32::try_from(term).is_ok())
        .ok_or(EntryError::TermTooLarge { index: log_id.index, term: log_id.leader_id.term })
}

/// A Kafka control record key: version 0, then the type.
fn control_key(kind: u16) -> [u8; 4] {
    let [high, low] = kind.to_be_bytes();
    [0, 0, high, low]
}

/// The log id of the batch at the start of `bytes`, as entry `index` (the term from its
/// `partitionLeaderEpoch`).
pub(super) fn log_id_of(header: &BatchHeader, index: u64) -> LogId {
    let term = u64::try_from(header.partition_leader_epoch()).unwrap_or(0);
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// The entry of Raft index `index` from one batch read back from the ring (`bytes` exactly the
/// batch, copied: a lease is not held while openraft keeps an entry).
pub(super) fn from_batch(bytes: &[u8], index: u64) -> Result<Entry, EntryError> {
    from_wire(Bytes::copy_from_slice(bytes), index)
}

/// The bytes that carry `entry` to a follower: the batch as the ring holds it, its epoch the
/// entry's term (a normal entry's bytes are shared, not copied, when they carry it already, as
/// the entries read back from the ring do).
pub(super) fn to_wire(
    entry: &Entry,
    scratch: &mut Vec<u8>,
    batch_size_max: u32,
) -> Result<Bytes, EntryError> {
    let term = term_of(&entry.log_id)?;
    let epoch = i32::try_from(term).unwrap_or(i32::MAX);
    if let EntryPayload::Normal(Batch(bytes)) = &entry.payload {
        let header = BatchHeader::peek(bytes)
            .map_err(|source| EntryError::InvalidBatch { index: entry.log_id.index, source })?;
        if header.partition_leader_epoch() == epoch {
            return Ok(bytes.clone());
        }
    }
    let view = to_batch(entry, scratch, batch_size_max)?;
    let mut bytes = view.as_bytes().to_vec();
    let base_offset = view.header().base_offset();
    ringmq_protocol::batch::stamp(&mut bytes, base_offset, epoch)
        .map_err(|source| EntryError::InvalidBatch { index: entry.log_id.index, source })?;
    Ok(Bytes::from(bytes))
}

/// The entry of Raft index `index` from one batch (`bytes` exactly the batch, validated as the
/// ring stores it), a normal entry's data sharing `bytes`.
pub(super) fn from_wire(bytes: Bytes, index: u64) -> Result<Entry, EntryError> {
    let header = BatchHeader::peek(&bytes).map_err(|error| EntryError::UnknownControl {
        index,
        offset: 0,
        reason: error.to_string(),
    })?;
    let log_id = log_id_of(header, index);
    if !header.is_control() {
        return Ok(Entry { log_id, payload: EntryPayload::Normal(Batch(bytes)) });
    }
    let offset = header.base_offset();
    let unknown = |reason: String| EntryError::UnknownControl { index, offset, reason };
    let view = BatchView::validate_control(&bytes, u32::MAX).map_err(|e| unknown(e.to_string()))?;
    let mut records = view.records().ok_or_else(|| unknown("compressed".into()))?;
    let record = records.next().ok_or_else(|| unknown("no record".into()))?;
    let kind = match record.key {
        Some(&[0, 0, high, low]) => u16::from_be_bytes([high, low]),
        _ => return Err(unknown("not a version 0 control key".into())),
    };
    let payload = match kind {
        BLANK => EntryPayload::Blank,
        MEMBERSHIP => {
            let membership: Membership<u64, openraft::BasicNode> =
                serde_json::from_slice(record.value.unwrap_or_default())
                    .map_err(|error| unknown(format!("membership: {error}")))?;
            EntryPayload::Membership(membership)
        }
        other => return Err(unknown(format!("control type {other}"))),
    };
    Ok(Entry { log_id, payload })
}
