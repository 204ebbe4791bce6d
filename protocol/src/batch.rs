//! The record batch: Kafka's RecordBatch v2, byte for byte, on the producer's wire, in the ring log
//! and on the consumer's wire, whichever protocol (Kafka or ringmq's own) carries it.
//!
//! Every integer is big-endian (as Kafka writes it; ringmq's own frames are little-endian).
//!
//! ```text
//! byte  size  field                 CRC  notes
//!    0     8  baseOffset            no   offset of the first record; stamped by the broker
//!    8     4  batchLength           no   bytes after this field (the batch is batchLength + 12)
//!   12     4  partitionLeaderEpoch  no   the leader's term; stamped by the broker (-1 from producers)
//!   16     1  magic                 no   2
//!   17     4  crc                   no   CRC-32C (Castagnoli) of bytes 21 to the end
//!   21     2  attributes            yes  bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4,
//!                                        4 zstd), bit 3 timestamp type (1: log append time),
//!                                        bit 4 transactional, bit 5 control; the rest 0
//!   23     4  lastOffsetDelta       yes  record count - 1
//!   27     8  baseTimestamp         yes  ms since the Unix epoch; record timestamps are deltas
//!   35     8  maxTimestamp          yes  the largest record timestamp
//!   43     8  producerId            yes  -1 unless idempotent
//!   51     2  producerEpoch         yes  -1 unless idempotent
//!   53     4  baseSequence          yes  -1 unless idempotent: the first record's sequence number
//!   57     4  recordCount           yes  1 to RECORD_COUNT_MAX
//!   61        records (compressed as one block when attributes say so)
//! ```
//!
//! Each record (uncompressed), its integers as zig-zag varints ([`crate::varint`]):
//!
//! ```text
//! length          varint   bytes of the record after this field
//! attributes      int8     unused, 0
//! timestampDelta  varlong  ms from baseTimestamp
//! offsetDelta     varint   the record's index in the batch: 0, 1, 2, ...
//! keyLength       varint   -1 for no key
//! key
//! valueLength     varint   -1 for a null value (Kafka's tombstone)
//! value
//! headerCount     varint   0 to RECORD_HEADER_COUNT_MAX
//!   headerKeyLength varint, headerKey (UTF-8), headerValueLength varint (-1: null), headerValue
//! ```
//!
//! The record at index `i` has offset `baseOffset + i`: offsets are dense. The broker copies a
//! batch into its log once and stamps `baseOffset` and `partitionLeaderEpoch` in place. The CRC
//! does not cover them (nor `batchLength` and `magic`), so it is never recomputed and a consumer
//! checks the very bytes the producer sent. The ring log binds those fields to the batch with an
//! entry of its own (see the broker's `log` module), so a torn write can never pass for a batch.
//!
//! A compressed batch is validated up to its records (header, CRC, attributes) and never
//! decompressed by the broker; a consumer decompresses the records block and reads it with
//! [`Records::checked`].

use zerocopy::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{DecodeError, EncodeError};
use crate::limits::{
    BATCH_HEADER_SIZE, BATCH_SIZE_MAX, RECORD_COUNT_MAX, RECORD_HEADER_COUNT_MAX, RECORD_SIZE_MIN,
};
use crate::varint::{put_varlong, read_varint, read_varlong, varint_size, varlong_size};
use crate::wire::to_u64;

/// The `magic` of a v2 record batch.
pub const BATCH_MAGIC: u8 = 2;
/// `producerId` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch from a producer that is not idempotent.
pub const NO_SEQUENCE: i32 = -1;
/// `partitionLeaderEpoch` a producer sends (the broker stamps its own).
pub const NO_LEADER_EPOCH: i32 = -1;
/// First byte covered by the CRC: everything the broker stamps lies before it.
pub const CRC_START: usize = 21;
/// Bytes that `batchLength` does not count: `baseOffset` and `batchLength` themselves.
pub const LENGTH_PREFIX_SIZE: usize = 12;

/// Compression codec of the attributes (bits 0-2).
const COMPRESSION_MASK: u16 = 0x07;
/// Timestamp type (bit 3): 1 when `maxTimestamp` is the broker's append time.
const LOG_APPEND_TIME: u16 = 0x08;
/// Part of a transaction (bit 4).
const TRANSACTIONAL: u16 = 0x10;
/// A control batch (bit 5): transaction markers.
const CONTROL: u16 = 0x20;
/// Every attribute bit v2 defines for a producer's batch.
const KNOWN_ATTRIBUTES: u16 = COMPRESSION_MASK | LOG_APPEND_TIME | TRANSACTIONAL | CONTROL;

/// How a batch's records are compressed (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Not compressed.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Snappy, in the xerial framing Kafka uses.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec of attribute bits `bits & 7`, if it is one.
    #[must_use]
    pub fn from_attributes(attributes: u16) -> Option<Self> {
        match attributes & COMPRESSION_MASK {
            0 => Some(Self::None),
            1 => Some(Self::Gzip),
            2 => Some(Self::Snappy),
            3 => Some(Self::Lz4),
            4 => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The attribute bits of this codec.
    #[must_use]
    pub fn attribute_bits(self) -> u16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// The codec's name as Kafka's `compression.type` spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// The fixed batch header as it lies on the wire and in the log.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    base_offset: I64,
    batch_length: I32,
    partition_leader_epoch: I32,
    magic: u8,
    crc: U32,
    attributes: I16,
    last_offset_delta: I32,
    base_timestamp: I64,
    max_timestamp: I64,
    producer_id: I64,
    producer_epoch: I16,
    base_sequence: I32,
    record_count: I32,
}

const _: () = assert!(size_of::<BatchHeader>() == BATCH_HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(BatchHeader, batch_length) == 8);
const _: () = assert!(std::mem::offset_of!(BatchHeader, batch_length) + 4 == LENGTH_PREFIX_SIZE);
const _: () = assert!(std::mem::offset_of!(BatchHeader, partition_leader_epoch) == 12);
const _: () = assert!(std::mem::offset_of!(BatchHeader, magic) == 16);
const _: () = assert!(std::mem::offset_of!(BatchHeader, crc) == 17);
const _: () = assert!(std::mem::offset_of!(BatchHeader, attributes) == CRC_START);
const _: () = assert!(std::mem::offset_of!(BatchHeader, last_offset_delta) == 23);
const _: () = assert!(std::mem::offset_of!(BatchHeader, base_timestamp) == 27);
const _: () = assert!(std::mem::offset_of!(BatchHeader, max_timestamp) == 35);
const _: () = assert!(std::mem::offset_of!(BatchHeader, producer_id) == 43);
const _: () = assert!(std::mem::offset_of!(BatchHeader, producer_epoch) == 51);
const _: () = assert!(std::mem::offset_of!(BatchHeader, base_sequence) == 53);
const _: () = assert!(std::mem::offset_of!(BatchHeader, record_count) == 57);

/// The least `batchLength` can be: the header after the length prefix.
const BATCH_LENGTH_MIN: usize = BATCH_HEADER_SIZE - LENGTH_PREFIX_SIZE;

impl BatchHeader {
    /// Reads the header at the start of `bytes` and checks only what is needed to walk a log:
    /// the header is whole, `magic` is 2, and `batchLength` covers at least the header. No CRC.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`]; [`DecodeError::UnsupportedVersion`] for the older message
    /// formats (magic 0 and 1); [`DecodeError::BadMagic`]; [`DecodeError::InvalidValue`] for a
    /// `batchLength` shorter than the header.
    pub fn peek(bytes: &[u8]) -> Result<&BatchHeader, DecodeError> {
        let (header, _) =
            BatchHeader::ref_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
                context: "batch header",
                field: "header",
                position: 0,
                needed: BATCH_HEADER_SIZE,
                available: bytes.len(),
            })?;
        match header.magic {
            BATCH_MAGIC => {}
            old @ (0 | 1) => {
                return Err(DecodeError::UnsupportedVersion {
                    context: "record batch (message format)",
                    found: u16::from(old),
                    supported: u16::from(BATCH_MAGIC),
                })
            }
            other => {
                return Err(DecodeError::BadMagic {
                    context: "batch header",
                    found: u32::from(other),
                    expected: u32::from(BATCH_MAGIC),
                })
            }
        }
        let length = header.batch_length.get();
        if usize::try_from(length).map_or(true, |length| length < BATCH_LENGTH_MIN) {
            return Err(DecodeError::InvalidValue {
                context: "batch header",
                field: "batchLength",
                position: 8,
                value: u64::from(length.unsigned_abs()),
                reason: "shorter than the batch header",
            });
        }
        Ok(header)
    }

    /// Offset of the first record (as stamped; a producer's value is meaningless).
    #[must_use]
    pub fn base_offset(&self) -> u64 {
        u64::from_be_bytes(self.base_offset.get().to_be_bytes())
    }

    /// `batchLength`: bytes after the length prefix.
    #[must_use]
    pub fn batch_length(&self) -> i32 {
        self.batch_length.get()
    }

    /// Bytes of the whole batch, header included (`batchLength + 12`); 0 for a negative length
    /// (which [`peek`](Self::peek) refuses).
    #[must_use]
    pub fn batch_len(&self) -> usize {
        usize::try_from(self.batch_length.get())
            .map_or(0, |length| length.saturating_add(LENGTH_PREFIX_SIZE))
    }

    /// The leader's term that appended this batch, as stamped.
    #[must_use]
    pub fn partition_leader_epoch(&self) -> i32 {
        self.partition_leader_epoch.get()
    }

    /// The stored CRC-32C of bytes 21 to the end.
    #[must_use]
    pub fn crc(&self) -> u32 {
        self.crc.get()
    }

    /// The attribute bits.
    #[must_use]
    pub fn attributes(&self) -> u16 {
        u16::from_be_bytes(self.attributes.get().to_be_bytes())
    }

    /// How the records are compressed, if the attributes name a known codec.
    #[must_use]
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes())
    }

    /// Whether the batch is part of a transaction.
    #[must_use]
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    #[must_use]
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL != 0
    }

    /// `lastOffsetDelta`: record count - 1 in a well-formed batch.
    #[must_use]
    pub fn last_offset_delta(&self) -> i32 {
        self.last_offset_delta.get()
    }

    /// Number of records (0 for a negative count, which validation refuses).
    #[must_use]
    pub fn record_count(&self) -> u32 {
        u32::try_from(self.record_count.get()).unwrap_or(0)
    }

    /// Offset after the last record (`baseOffset + recordCount`), saturating.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.base_offset().saturating_add(u64::from(self.record_count()))
    }

    /// Timestamp of the first record, ms since the Unix epoch (`baseTimestamp`).
    #[must_use]
    pub fn base_timestamp(&self) -> i64 {
        self.base_timestamp.get()
    }

    /// The largest record timestamp.
    #[must_use]
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.get()
    }

    /// Producer id, or [`NO_PRODUCER_ID`].
    #[must_use]
    pub fn producer_id(&self) -> i64 {
        self.producer_id.get()
    }

    /// Producer epoch, or [`NO_PRODUCER_EPOCH`].
    #[must_use]
    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch.get()
    }

    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    #[must_use]
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence.get()
    }
}

fn header_mut(bytes: &mut [u8]) -> Result<&mut BatchHeader, DecodeError> {
    let available = bytes.len();
    BatchHeader::mut_from_prefix(bytes).map(|(header, _)| header).map_err(|_| {
        DecodeError::Truncated {
            context: "batch header",
            field: "header",
            position: 0,
            needed: BATCH_HEADER_SIZE,
            available,
        }
    })
}

/// Stamps the broker-assigned fields (`baseOffset`, `partitionLeaderEpoch`) into a batch in
/// place. The CRC does not cover them, so it stays valid.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `bytes` is shorter than a batch header.
pub fn stamp(bytes: &mut [u8], base_offset: u64, leader_epoch: i32) -> Result<(), DecodeError> {
    let header = header_mut(bytes)?;
    header.base_offset = I64::new(i64::from_be_bytes(base_offset.to_be_bytes()));
    header.partition_leader_epoch = I32::new(leader_epoch);
    Ok(())
}

/// Rewrites the producer fields of a finished batch (an idempotent producer starting a new
/// epoch renumbers the batches it has not had acknowledged) and recomputes its CRC.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `bytes` is shorter than a batch header or than the size it
/// declares.
pub fn restamp_producer(
    bytes: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), DecodeError> {
    let available = bytes.len();
    let size = BatchHeader::peek(bytes)?.batch_len();
    let batch = bytes.get_mut(..size).ok_or(DecodeError::Truncated {
        context: "batch",
        field: "records",
        position: BATCH_HEADER_SIZE,
        needed: size,
        available,
    })?;
    let header = header_mut(batch)?;
    header.producer_id = I64::new(producer_id);
    header.producer_epoch = I16::new(producer_epoch);
    header.base_sequence = I32::new(base_sequence);
    let crc = crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default());
    header_mut(batch)?.crc = U32::new(crc);
    Ok(())
}

/// A record batch that passed [`BatchView::validate`]: header, CRC, attributes, and (unless it is
/// compressed) every record's layout.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    header: &'a BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Validates `bytes` as exactly one record batch, in place, and returns a view of it.
    ///
    /// Checks, in order: header present, magic, the batch's size equal to `bytes.len()` and at
    /// most `batch_size_max` (capped at [`BATCH_SIZE_MAX`]), the CRC-32C, the attributes (a known
    /// codec; transactional and control batches are [`DecodeError::Unsupported`]), the record
    /// count and `lastOffsetDelta`, the producer fields, then (uncompressed) every record's
    /// lengths, offset deltas, headers and timestamps against `maxTimestamp`. Allocates nothing.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the first check that failed and where.
    pub fn validate(bytes: &'a [u8], batch_size_max: u32) -> Result<Self, DecodeError> {
        let header = exactly_one(bytes)?;
        validate_body(header, bytes, batch_size_max, false)?;
        Ok(Self { header, bytes })
    }

    /// Validates `bytes` as exactly one control batch (attributes bit 5, not transactional), as
    /// a replicated partition writes for its consensus entries that carry no records of a
    /// producer: the checks of [`BatchView::validate`], except that the batch must be a control
    /// batch. Producers never get here: their batches go through [`BatchView::validate`], which
    /// refuses control batches.
    ///
    /// # Errors
    ///
    /// As [`BatchView::validate`]; [`DecodeError::InvalidValue`] when the batch is not a control
    /// batch.
    pub fn validate_control(bytes: &'a [u8], batch_size_max: u32) -> Result<Self, DecodeError> {
        let header = exactly_one(bytes)?;
        if !header.is_control() {
            return Err(DecodeError::InvalidValue {
                context: "batch",
                field: "attributes",
                position: CRC_START,
                value: u64::from(header.attributes()),
                reason: "a control batch has bit 5 set",
            });
        }
        validate_body(header, bytes, batch_size_max, true)?;
        Ok(Self { header, bytes })
    }

    /// Validates `bytes` as exactly one batch as a log stores them: a control batch
    /// ([`BatchView::validate_control`]) when its attributes say so, else a producer's batch
    /// ([`BatchView::validate`]). For what the broker reads back from its own files, never for
    /// what a producer sends.
    ///
    /// # Errors
    ///
    /// As the validation the attributes select.
    pub fn validate_stored(bytes: &'a [u8], batch_size_max: u32) -> Result<Self, DecodeError> {
        if BatchHeader::peek(bytes)?.is_control() {
            Self::validate_control(bytes, batch_size_max)
        } else {
            Self::validate(bytes, batch_size_max)
        }
    }

    /// Validates the batch at the start of `bytes` (which may hold more after it) and returns it
    /// with the bytes that follow.
    ///
    /// # Errors
    ///
    /// As [`BatchView::validate`]; [`DecodeError::Truncated`] if the declared size runs past the
    /// end of `bytes`.
    pub fn validate_prefix(
        bytes: &'a [u8],
        batch_size_max: u32,
    ) -> Result<(Self, &'a [u8]), DecodeError> {
        let header = BatchHeader::peek(bytes)?;
        let size = header.batch_len();
        let (batch, rest) = bytes.split_at_checked(size).ok_or(DecodeError::Truncated {
            context: "batch",
            field: "records",
            position: BATCH_HEADER_SIZE,
            needed: size,
            available: bytes.len(),
        })?;
        Ok((Self::validate(batch, batch_size_max)?, rest))
    }

    /// The batch header.
    #[must_use]
    pub fn header(&self) -> &'a BatchHeader {
        self.header
    }

    /// All bytes of the batch.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the first record.
    #[must_use]
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset()
    }

    /// Number of records.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.header.record_count()
    }

    /// Offset after the last record.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.header.next_offset()
    }

    /// How the records are compressed.
    #[must_use]
    pub fn compression(&self) -> Compression {
        // Validation accepted only known codecs.
        self.header.compression().unwrap_or(Compression::None)
    }

    /// The records block after the header, compressed as [`compression`](Self::compression)
    /// says.
    #[must_use]
    pub fn record_bytes(&self) -> &'a [u8] {
        self.bytes.get(BATCH_HEADER_SIZE..).unwrap_or_default()
    }

    /// The records, in offset order, if the batch is not compressed (decompress
    /// [`record_bytes`](Self::record_bytes) and read them with [`Records::checked`] otherwise).
    #[must_use]
    pub fn records(&self) -> Option<Records<'a>> {
        (self.compression() == Compression::None)
            .then(|| Records::validated(self.record_bytes(), self.header))
    }
}

/// The header of `bytes`, which must be exactly the batch it declares.
fn exactly_one(bytes: &[u8]) -> Result<&BatchHeader, DecodeError> {
    let header = BatchHeader::peek(bytes)?;
    let declared = header.batch_len();
    if bytes.len() != declared {
        return Err(DecodeError::SizeMismatch {
            context: "batch",
            field: "batchLength",
            declared: to_u64(declared),
            actual: to_u64(bytes.len()),
        });
    }
    Ok(header)
}

fn validate_body(
    header: &BatchHeader,
    bytes: &[u8],
    batch_size_max: u32,
    control: bool,
) -> Result<(), DecodeError> {
    const CONTEXT: &str = "batch";
    let invalid = |field, position, value, reason| DecodeError::InvalidValue {
        context: CONTEXT,
        field,
        position,
        value,
        reason,
    };
    let max = batch_size_max.min(BATCH_SIZE_MAX);
    let size = to_u64(bytes.len());
    if size > u64::from(max) {
        return Err(DecodeError::TooLarge {
            context: CONTEXT,
            field: "batch_size",
            size,
            max: u64::from(max),
        });
    }
    let computed = crc32c::crc32c(bytes.get(CRC_START..).unwrap_or_default());
    if computed != header.crc() {
        return Err(DecodeError::BadChecksum { context: CONTEXT, stored: header.crc(), computed });
    }
    let attributes = header.attributes();
    if header.is_transactional() || header.is_control() != control {
        return Err(DecodeError::Unsupported {
            context: CONTEXT,
            feature: "transactions (transactional and control batches)",
        });
    }
    if attributes & !KNOWN_ATTRIBUTES != 0 || header.compression().is_none() {
        return Err(invalid(
            "attributes",
            CRC_START,
            u64::from(attributes),
            "unknown compression codec or attribute bit",
        ));
    }
    let count = header.record_count.get();
    if count <= 0 {
        return Err(invalid("recordCount", 57, u64::from(count.unsigned_abs()), "at least 1"));
    }
    let count = header.record_count();
    if count > RECORD_COUNT_MAX {
        return Err(DecodeError::TooLarge {
            context: CONTEXT,
            field: "recordCount",
            size: u64::from(count),
            max: u64::from(RECORD_COUNT_MAX),
        });
    }
    if i64::from(header.last_offset_delta()) != i64::from(count).saturating_sub(1) {
        return Err(invalid(
            "lastOffsetDelta",
            23,
            u64::from(header.last_offset_delta().unsigned_abs()),
            "must be the record count - 1",
        ));
    }
    let (producer_id, epoch, sequence) =
        (header.producer_id(), header.producer_epoch(), header.base_sequence());
    if producer_id == NO_PRODUCER_ID {
        if sequence != NO_SEQUENCE || epoch != NO_PRODUCER_EPOCH {
            return Err(invalid(
                "baseSequence",
                53,
                u64::from(sequence.unsigned_abs()),
                "a batch without a producer id has epoch -1 and sequence -1",
            ));
        }
    } else if producer_id < 0 {
        return Err(invalid(
            "producerId",
            43,
            producer_id.unsigned_abs(),
            "a producer id is -1 (none) or at least 0",
        ));
    } else if sequence < 0 || epoch < 0 {
        return Err(invalid(
            "baseSequence",
            53,
            u64::from(sequence.unsigned_abs()),
            "an idempotent batch's epoch and sequence are at least 0",
        ));
    }
    let records = bytes.get(BATCH_HEADER_SIZE..).unwrap_or_default();
    if header.compression() != Some(Compression::None) {
        if records.is_empty() {
            return Err(invalid("records", BATCH_HEADER_SIZE, 0, "a compressed batch is empty"));
        }
        return Ok(());
    }
    let max_timestamp = validate_records(records, header)?;
    if attributes & LOG_APPEND_TIME == 0 && max_timestamp != header.max_timestamp() {
        return Err(DecodeError::InvalidValue {
            context: CONTEXT,
            field: "maxTimestamp",
            position: 35,
            value: u64::from_be_bytes(header.max_timestamp().to_be_bytes()),
            reason: "must equal the largest record timestamp",
        });
    }
    Ok(())
}

/// Checks every record of an uncompressed records block: `header.record_count()` of them,
/// filling it exactly (each as [`parse_record`] reads it, without building views: this runs on
/// every produced batch). Returns the largest timestamp.
fn validate_records(records: &[u8], header: &BatchHeader) -> Result<i64, DecodeError> {
    let mut rest = records;
    let mut max_timestamp = i64::MIN;
    let base_timestamp = header.base_timestamp();
    for index in 0..header.record_count() {
        let (after, timestamp) = check_record(rest, base_timestamp, index)
            .map_err(|problem| problem.into_error(records.len()))?;
        max_timestamp = max_timestamp.max(timestamp);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(DecodeError::SizeMismatch {
            context: "batch",
            field: "batchLength",
            declared: to_u64(records.len().saturating_add(BATCH_HEADER_SIZE)),
            actual: to_u64(
                records.len().saturating_sub(rest.len()).saturating_add(BATCH_HEADER_SIZE),
            ),
        });
    }
    Ok(max_timestamp)
}

/// What is wrong with a record field, and how many bytes of the block were left at it.
struct RecordProblem {
    field: &'static str,
    reason: &'static str,
    remaining: usize,
}

impl RecordProblem {
    #[cold]
    fn new(rest: &[u8], field: &'static str, reason: &'static str) -> Self {
        Self { field, reason, remaining: rest.len() }
    }

    #[cold]
    fn into_error(self, block_len: usize) -> DecodeError {
        DecodeError::InvalidValue {
            context: "record",
            field: self.field,
            position: block_len.saturating_sub(self.remaining),
            value: 0,
            reason: self.reason,
        }
    }
}

/// The varint at the start of `rest`, and the bytes after it.
#[inline]
fn take_varint<'b>(rest: &'b [u8], field: &'static str) -> Result<(i32, &'b [u8]), RecordProblem> {
    match read_varint(rest) {
        Ok((value, size)) => Ok((value, rest.get(size..).unwrap_or_default())),
        Err(_) => Err(RecordProblem::new(rest, field, "not a varint")),
    }
}

/// A field of `length` bytes at the start of `rest` (-1: null, where `nullable`), and the bytes
/// after it.
#[inline]
fn take_field<'b>(
    rest: &'b [u8],
    length: i32,
    field: &'static str,
    nullable: bool,
) -> Result<(&'b [u8], &'b [u8]), RecordProblem> {
    if length == -1 && nullable {
        return Ok((&[], rest));
    }
    let Ok(size) = usize::try_from(length) else {
        return Err(RecordProblem::new(rest, field, "negative length"));
    };
    rest.split_at_checked(size)
        .ok_or_else(|| RecordProblem::new(rest, field, "runs past the record"))
}

/// Checks the record at the start of `bytes`: returns the bytes after it and its timestamp.
#[inline]
fn check_record(
    bytes: &[u8],
    base_timestamp: i64,
    index: u32,
) -> Result<(&[u8], i64), RecordProblem> {
    let (length, rest) = take_varint(bytes, "length")?;
    let (body, after) = take_field(rest, length, "length", false)?;
    let Some((_attributes, rest)) = body.split_first() else {
        return Err(RecordProblem::new(body, "attributes", "missing"));
    };
    let (timestamp_delta, rest) = match read_varlong(rest) {
        Ok((value, size)) => (value, rest.get(size..).unwrap_or_default()),
        Err(_) => return Err(RecordProblem::new(rest, "timestampDelta", "not a varlong")),
    };
    let (offset_delta, rest) = take_varint(rest, "offsetDelta")?;
    if u32::try_from(offset_delta).ok() != Some(index) {
        return Err(RecordProblem::new(
            rest,
            "offsetDelta",
            "record offset deltas count 0, 1, 2, ... within a batch",
        ));
    }
    let (key_length, rest) = take_varint(rest, "keyLength")?;
    let (_key, rest) = take_field(rest, key_length, "key", true)?;
    let (value_length, rest) = take_varint(rest, "valueLength")?;
    let (_value, rest) = take_field(rest, value_length, "value", true)?;
    let (header_count, mut rest) = take_varint(rest, "headerCount")?;
    if !(0..=i32::from(RECORD_HEADER_COUNT_MAX)).contains(&header_count) {
        return Err(RecordProblem::new(rest, "headerCount", "0 to RECORD_HEADER_COUNT_MAX"));
    }
    for _ in 0..header_count {
        let (key_length, after_length) = take_varint(rest, "headerKeyLength")?;
        let (key, after_key) = take_field(after_length, key_length, "headerKey", false)?;
        if std::str::from_utf8(key).is_err() {
            return Err(RecordProblem::new(after_length, "headerKey", "not valid UTF-8"));
        }
        let (value_length, after_value_length) = take_varint(after_key, "headerValueLength")?;
        (_, rest) = take_field(after_value_length, value_length, "headerValue", true)?;
    }
    if !rest.is_empty() {
        return Err(RecordProblem::new(rest, "length", "bytes left after the record's last field"));
    }
    let Some(timestamp) = base_timestamp.checked_add(timestamp_delta) else {
        return Err(RecordProblem::new(body, "timestampDelta", "the timestamp overflows"));
    };
    Ok((after, timestamp))
}

/// A cursor over one record's bytes, for the varint fields.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Where the record starts in its records block, for error positions.
    origin: usize,
}

impl<'a> Cursor<'a> {
    #[cold]
    fn error(&self, field: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::InvalidValue {
            context: "record",
            field,
            position: self.origin.saturating_add(self.at),
            value: 0,
            reason,
        }
    }

    #[inline]
    fn varint(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let (value, size) = read_varint(rest).map_err(|_| self.error(field, "not a varint"))?;
        self.at = self.at.saturating_add(size);
        Ok(value)
    }

    #[inline]
    fn varlong(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let (value, size) = read_varlong(rest).map_err(|_| self.error(field, "not a varlong"))?;
        self.at = self.at.saturating_add(size);
        Ok(value)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let byte = self.bytes.get(self.at).copied().ok_or_else(|| self.error(field, "missing"))?;
        self.at = self.at.saturating_add(1);
        Ok(byte)
    }

    /// `length` bytes (a non-negative varint length), or `None` for -1 if `nullable`.
    #[inline]
    fn bytes(
        &mut self,
        length: i32,
        field: &'static str,
        nullable: bool,
    ) -> Result<Option<&'a [u8]>, DecodeError> {
        if length == -1 && nullable {
            return Ok(None);
        }
        let size = usize::try_from(length).map_err(|_| self.error(field, "negative length"))?;
        let end = self.at.checked_add(size).ok_or_else(|| self.error(field, "too long"))?;
        let taken = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| self.error(field, "runs past the record"))?;
        self.at = end;
        Ok(Some(taken))
    }
}

/// Parses the record at `position` of a records block; returns it and the position after it.
fn parse_record(
    records: &[u8],
    position: usize,
    base_timestamp: i64,
    index: u32,
) -> Result<(RecordView<'_>, usize), DecodeError> {
    let rest = records.get(position..).unwrap_or_default();
    let mut outer = Cursor { bytes: rest, at: 0, origin: position };
    let length = outer.varint("length")?;
    let body = outer.bytes(length, "length", false)?.unwrap_or_default();
    let end = position.saturating_add(outer.at);
    let body_start = end.saturating_sub(body.len());
    let mut cursor = Cursor { bytes: body, at: 0, origin: body_start };
    let _attributes = cursor.u8("attributes")?;
    let timestamp_delta = cursor.varlong("timestampDelta")?;
    let offset_delta = cursor.varint("offsetDelta")?;
    if u32::try_from(offset_delta).ok() != Some(index) {
        return Err(DecodeError::InvalidValue {
            context: "record",
            field: "offsetDelta",
            position: body_start,
            value: u64::from(offset_delta.unsigned_abs()),
            reason: "record offset deltas count 0, 1, 2, ... within a batch",
        });
    }
    let timestamp = base_timestamp
        .checked_add(timestamp_delta)
        .ok_or_else(|| cursor.error("timestampDelta", "the timestamp overflows"))?;
    let key_length = cursor.varint("keyLength")?;
    let key = cursor.bytes(key_length, "key", true)?;
    let value_length = cursor.varint("valueLength")?;
    let value = cursor.bytes(value_length, "value", true)?;
    let header_count = cursor.varint("headerCount")?;
    let header_count = u32::try_from(header_count)
        .ok()
        .filter(|&count| count <= u32::from(RECORD_HEADER_COUNT_MAX))
        .ok_or_else(|| cursor.error("headerCount", "0 to RECORD_HEADER_COUNT_MAX"))?;
    let headers_start = cursor.at;
    let headers = RecordHeaders {
        bytes: body.get(headers_start..).unwrap_or_default(),
        remaining: header_count,
        position: 0,
        origin: body_start.saturating_add(headers_start),
    };
    // The headers run to the end of the record: `validate_records` checks they fill it.
    let view = RecordView { offset_delta: index, timestamp, key, value, headers };
    Ok((view, end))
}

/// Iterator over the records of a records block that has been validated.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    position: usize,
    index: u32,
    count: u32,
    base_offset: u64,
    base_timestamp: i64,
}

impl<'a> Records<'a> {
    fn validated(bytes: &'a [u8], header: &BatchHeader) -> Self {
        Self {
            bytes,
            position: 0,
            index: 0,
            count: header.record_count(),
            base_offset: header.base_offset(),
            base_timestamp: header.base_timestamp(),
        }
    }

    /// Checks a records block decompressed from the batch `header` belongs to (every record as
    /// [`BatchView::validate`] checks an uncompressed one) and iterates it.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the first record that is malformed.
    pub fn checked(bytes: &'a [u8], header: &BatchHeader) -> Result<Self, DecodeError> {
        validate_records(bytes, header)?;
        Ok(Self::validated(bytes, header))
    }

    /// Offset of the first record of the batch these records belong to.
    #[must_use]
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.index >= self.count {
            return None;
        }
        // The records were validated, so this cannot fail; if it somehow did, end the iteration
        // rather than panic.
        let (record, next) =
            parse_record(self.bytes, self.position, self.base_timestamp, self.index).ok()?;
        self.position = next;
        self.index = self.index.saturating_add(1);
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.count.saturating_sub(self.index)).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// One record of a batch, borrowed from the batch's bytes.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    /// Position of the record within its batch: its offset is `base_offset + offset_delta`.
    pub offset_delta: u32,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the record has one.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a null value (Kafka's tombstone).
    pub value: Option<&'a [u8]>,
    /// The record's headers.
    pub headers: RecordHeaders<'a>,
}

/// Iterator over a validated record's headers.
#[derive(Debug, Clone)]
pub struct RecordHeaders<'a> {
    bytes: &'a [u8],
    remaining: u32,
    position: usize,
    origin: usize,
}

/// A record header as read: a UTF-8 name and a value that may be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderView<'a> {
    /// The header name.
    pub name: &'a str,
    /// The header value; `None` for null.
    pub value: Option<&'a [u8]>,
}

impl<'a> RecordHeaders<'a> {
    fn parse(&mut self) -> Result<HeaderView<'a>, DecodeError> {
        let mut cursor = Cursor {
            bytes: self.bytes.get(self.position..).unwrap_or_default(),
            at: 0,
            origin: self.origin.saturating_add(self.position),
        };
        let name_length = cursor.varint("headerKeyLength")?;
        let name = cursor.bytes(name_length, "headerKey", false)?.unwrap_or_default();
        let name = std::str::from_utf8(name).map_err(|_| DecodeError::InvalidUtf8 {
            context: "record header",
            field: "headerKey",
            position: cursor.origin,
        })?;
        let value_length = cursor.varint("headerValueLength")?;
        let value = cursor.bytes(value_length, "headerValue", true)?;
        self.position = self.position.saturating_add(cursor.at);
        Ok(HeaderView { name, value })
    }
}

impl<'a> Iterator for RecordHeaders<'a> {
    type Item = HeaderView<'a>;

    fn next(&mut self) -> Option<HeaderView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining = self.remaining.saturating_sub(1);
        // Validated: cannot fail; end the iteration if it somehow did.
        self.parse().ok()
    }
}

/// A record header to encode: a UTF-8 name and a byte value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header name (UTF-8).
    pub name: &'a str,
    /// The header value.
    pub value: &'a [u8],
}

/// A record to encode.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Headers, at most [`RECORD_HEADER_COUNT_MAX`].
    pub headers: &'a [Header<'a>],
}

impl<'a> Record<'a> {
    /// A record with a value only.
    #[must_use]
    pub fn value(value: &'a [u8], timestamp: i64) -> Self {
        Self { key: None, value, timestamp, headers: &[] }
    }
}

/// Bytes of the varint of a non-negative length (zig-zag doubles it): no conversion, no loop.
#[inline]
fn length_size(length: usize) -> usize {
    match length {
        0..=63 => 1,
        64..=8191 => 2,
        8192..=1_048_575 => 3,
        1_048_576..=134_217_727 => 4,
        _ => 5,
    }
}

/// Encoded size of a length-prefixed field of `size` bytes.
#[inline]
fn field_size(size: usize) -> usize {
    length_size(size).wrapping_add(size)
}

/// Bytes of a record's body (after its length varint) at `offset_delta` with `timestamp_delta`,
/// if every field is within `limit` (which keeps the sums far from overflow).
#[inline]
fn record_body_size(
    record: &Record<'_>,
    offset_delta: i32,
    timestamp_delta: i64,
    limit: usize,
) -> Option<usize> {
    let key = record.key.map_or(0, <[u8]>::len);
    if key > limit || record.value.len() > limit {
        return None;
    }
    let mut size = 1usize
        .wrapping_add(varlong_size(timestamp_delta))
        .wrapping_add(varint_size(offset_delta))
        .wrapping_add(if record.key.is_some() { field_size(key) } else { 1 })
        .wrapping_add(field_size(record.value.len()))
        .wrapping_add(length_size(record.headers.len()));
    for header in record.headers {
        if header.name.len() > limit || header.value.len() > limit {
            return None;
        }
        size = size
            .checked_add(field_size(header.name.len()))?
            .checked_add(field_size(header.value.len()))?;
    }
    Some(size)
}

/// Whether [`BatchBuilder::push`] took the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// The record is in the batch.
    Appended,
    /// The record does not fit in what is left of the buffer; finish this batch and start another.
    Full,
}

/// Encodes records straight into a caller-provided buffer. Allocates nothing.
///
/// ```
/// use ringmq_protocol::{BatchBuilder, BatchView, Push, Record};
///
/// let mut buffer = [0u8; 4096];
/// let mut builder = BatchBuilder::new(&mut buffer, 1_700_000_000_000)?;
/// assert_eq!(builder.push(&Record::value(b"hello", 1_700_000_000_000))?, Push::Appended);
/// let batch = builder.finish()?;
/// let view = BatchView::validate(batch, 1 << 20)?;
/// let first = view.records().and_then(|mut records| records.next());
/// assert_eq!(first.and_then(|record| record.value), Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BatchBuilder<'a> {
    buffer: &'a mut [u8],
    encoder: BatchEncoder,
}

impl<'a> BatchBuilder<'a> {
    /// Starts a batch in `buffer`; record timestamps are stored as deltas from `base_timestamp`.
    /// A batch never grows past `buffer.len()` or [`BATCH_SIZE_MAX`].
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`] if `buffer` cannot hold a header and one empty record.
    pub fn new(buffer: &'a mut [u8], base_timestamp: i64) -> Result<Self, EncodeError> {
        let encoder = BatchEncoder::new(buffer.len(), base_timestamp)?;
        Ok(Self { buffer, encoder })
    }

    /// Marks the batch as sent by an idempotent producer.
    #[must_use]
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Self {
        self.encoder.set_producer(producer_id, producer_epoch, base_sequence);
        self
    }

    /// Marks the batch as a control batch ([`BatchEncoder::set_control`]).
    #[must_use]
    pub fn control(mut self) -> Self {
        self.encoder.set_control();
        self
    }

    /// Appends a record, or reports [`Push::Full`] if it does not fit in what is left.
    ///
    /// # Errors
    ///
    /// As [`BatchEncoder::push`].
    pub fn push(&mut self, record: &Record<'_>) -> Result<Push, EncodeError> {
        self.encoder.push(self.buffer, record)
    }

    /// Records appended so far.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.encoder.record_count()
    }

    /// Bytes the batch takes so far, header included.
    #[must_use]
    pub fn size(&self) -> usize {
        self.encoder.size()
    }

    /// Whether no record has been appended.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.encoder.is_empty()
    }

    /// Writes the header and CRC and returns the finished batch, a prefix of the buffer.
    ///
    /// # Errors
    ///
    /// [`EncodeError::EmptyBatch`] if no record was appended.
    pub fn finish(self) -> Result<&'a mut [u8], EncodeError> {
        let size = self.encoder.finish(self.buffer)?;
        Ok(self.buffer.get_mut(..size).unwrap_or_default())
    }
}

/// The state of a batch being encoded, without the buffer: for callers that keep a batch open
/// across calls (a producer's accumulator) and pass the same buffer to every call.
///
/// The buffer passed to [`push`](Self::push) and [`finish`](Self::finish) must be the one (or an
/// identical copy of the one) passed before, at least as long as the `buffer_size` given to
/// [`new`](Self::new).
#[derive(Debug, Clone)]
pub struct BatchEncoder {
    limit: usize,
    size: usize,
    record_count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    control: bool,
}

impl BatchEncoder {
    /// Starts a batch for a buffer of `buffer_size` bytes (capped at [`BATCH_SIZE_MAX`]).
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`] if that cannot hold a header and one empty record.
    pub fn new(buffer_size: usize, base_timestamp: i64) -> Result<Self, EncodeError> {
        let min = BATCH_HEADER_SIZE.saturating_add(RECORD_SIZE_MIN);
        if buffer_size < min {
            return Err(EncodeError::BufferTooSmall { size: buffer_size, min });
        }
        let limit = buffer_size.min(usize::try_from(BATCH_SIZE_MAX).unwrap_or(usize::MAX));
        Ok(Self {
            limit,
            size: BATCH_HEADER_SIZE,
            record_count: 0,
            base_timestamp,
            max_timestamp: base_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            control: false,
        })
    }

    /// Marks the batch as a control batch (attributes bit 5): records that are not a producer's
    /// data, which consumers skip ([`BatchView::validate_control`]).
    pub fn set_control(&mut self) {
        self.control = true;
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Appends a record to the batch in `buffer`, or reports [`Push::Full`] if it does not fit.
    ///
    /// # Errors
    ///
    /// [`EncodeError::RecordTooLarge`] if the record would not fit even in an empty batch of this
    /// buffer; [`EncodeError::TimestampOutOfRange`] if its timestamp minus the batch's base
    /// timestamp overflows; [`EncodeError::TooLong`] for more headers than
    /// [`RECORD_HEADER_COUNT_MAX`]; [`EncodeError::BufferTooSmall`] if `buffer` is shorter than
    /// the size given to [`new`](Self::new).
    pub fn push(&mut self, buffer: &mut [u8], record: &Record<'_>) -> Result<Push, EncodeError> {
        if buffer.len() < self.limit {
            return Err(EncodeError::BufferTooSmall { size: buffer.len(), min: self.limit });
        }
        if record.headers.len() > usize::from(RECORD_HEADER_COUNT_MAX) {
            return Err(EncodeError::TooLong {
                field: "record headers",
                size: record.headers.len(),
                max: usize::from(RECORD_HEADER_COUNT_MAX),
            });
        }
        let timestamp_delta = record.timestamp.checked_sub(self.base_timestamp).ok_or(
            EncodeError::TimestampOutOfRange {
                timestamp: record.timestamp,
                first: self.base_timestamp,
            },
        )?;
        let too_large = |size: usize| EncodeError::RecordTooLarge {
            size: size.saturating_add(BATCH_HEADER_SIZE),
            max: self.limit,
        };
        let limit = self.limit;
        let encoded_size = |offset_delta: i32, timestamp_delta: i64| {
            let body = record_body_size(record, offset_delta, timestamp_delta, limit)?;
            let body_length = i32::try_from(body).ok()?;
            Some((body_length, varint_size(body_length).checked_add(body)?))
        };
        let offset_delta = i32::try_from(self.record_count).unwrap_or(i32::MAX);
        let (body_length, record_size) =
            encoded_size(offset_delta, timestamp_delta).ok_or_else(|| too_large(usize::MAX))?;
        let end = self.size.saturating_add(record_size);
        if end > self.limit || self.record_count >= RECORD_COUNT_MAX {
            // As the first record of an empty batch with its own timestamp as the base, the
            // record is as small as it gets: refuse what could never fit.
            let smallest = encoded_size(0, 0).map_or(usize::MAX, |(_, size)| size);
            if smallest > self.limit.saturating_sub(BATCH_HEADER_SIZE) {
                return Err(too_large(smallest));
            }
            return Ok(Push::Full);
        }
        let written =
            encode_record(buffer, self.size, record, body_length, offset_delta, timestamp_delta);
        debug_assert_eq!(written, Some(end), "the record's size disagrees with its bytes");
        self.size = end;
        self.record_count = self.record_count.saturating_add(1);
        self.max_timestamp = if self.record_count == 1 {
            record.timestamp
        } else {
            self.max_timestamp.max(record.timestamp)
        };
        Ok(Push::Appended)
    }

    /// Records appended so far.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Bytes the batch takes so far, header included.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether no record has been appended.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// The batch's base timestamp.
    #[must_use]
    pub fn base_timestamp(&self) -> i64 {
        self.base_timestamp
    }

    /// The records encoded so far in `buffer` (what a compressing producer compresses).
    #[must_use]
    pub fn record_bytes<'b>(&self, buffer: &'b [u8]) -> &'b [u8] {
        buffer.get(BATCH_HEADER_SIZE..self.size).unwrap_or_default()
    }

    /// Writes the header and CRC into `buffer` and returns the batch's size: the batch is
    /// `buffer[..size]`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::EmptyBatch`] if no record was appended; [`EncodeError::BufferTooSmall`]
    /// if `buffer` is shorter than the batch.
    pub fn finish(&self, buffer: &mut [u8]) -> Result<usize, EncodeError> {
        self.write_header(buffer, Compression::None, self.size)
    }

    /// Writes a compressed batch into `out`: the header, then `compressed` (the records of
    /// [`record_bytes`](Self::record_bytes) compressed with `compression`), then the CRC.
    /// Returns the batch's size: the batch is `out[..size]`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::EmptyBatch`] if no record was appended; [`EncodeError::BufferTooSmall`]
    /// if `out` cannot hold the batch.
    pub fn finish_compressed(
        &self,
        compression: Compression,
        compressed: &[u8],
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let size = BATCH_HEADER_SIZE.saturating_add(compressed.len());
        let Some(target) = out.get_mut(BATCH_HEADER_SIZE..size) else {
            return Err(EncodeError::BufferTooSmall { size: out.len(), min: size });
        };
        target.copy_from_slice(compressed);
        self.write_header(out, compression, size)
    }

    fn write_header(
        &self,
        buffer: &mut [u8],
        compression: Compression,
        size: usize,
    ) -> Result<usize, EncodeError> {
        if self.record_count == 0 {
            return Err(EncodeError::EmptyBatch);
        }
        let too_long = || EncodeError::TooLong { field: "batch", size, max: self.limit };
        let batch_length =
            i32::try_from(size.saturating_sub(LENGTH_PREFIX_SIZE)).map_err(|_| too_long())?;
        let count = i32::try_from(self.record_count).map_err(|_| too_long())?;
        let Some(batch) = buffer.get_mut(..size) else {
            return Err(EncodeError::BufferTooSmall { size: buffer.len(), min: size });
        };
        let mut header = BatchHeader::new_zeroed();
        header.batch_length = I32::new(batch_length);
        header.partition_leader_epoch = I32::new(NO_LEADER_EPOCH);
        header.magic = BATCH_MAGIC;
        let control = if self.control { CONTROL } else { 0 };
        header.attributes =
            I16::new(i16::from_be_bytes((compression.attribute_bits() | control).to_be_bytes()));
        header.last_offset_delta = I32::new(count.saturating_sub(1));
        header.base_timestamp = I64::new(self.base_timestamp);
        header.max_timestamp = I64::new(self.max_timestamp);
        header.producer_id = I64::new(self.producer_id);
        header.producer_epoch = I16::new(self.producer_epoch);
        header.base_sequence = I32::new(self.base_sequence);
        header.record_count = I32::new(count);
        if let Some(slot) = batch.get_mut(..BATCH_HEADER_SIZE) {
            slot.copy_from_slice(header.as_bytes());
        }
        header.crc = U32::new(crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default()));
        if let Some(slot) = batch.get_mut(..BATCH_HEADER_SIZE) {
            slot.copy_from_slice(header.as_bytes());
        }
        Ok(size)
    }
}

/// Writes one record at `at`; returns the position after it (`None` if `buffer` is too short,
/// which the caller's size check rules out).
fn encode_record(
    buffer: &mut [u8],
    at: usize,
    record: &Record<'_>,
    body_length: i32,
    offset_delta: i32,
    timestamp_delta: i64,
) -> Option<usize> {
    let length = |size: usize| i32::try_from(size).ok();
    let record_size = varint_size(body_length).checked_add(usize::try_from(body_length).ok()?)?;
    let end = at.checked_add(record_size)?;
    let mut out = Out { rest: buffer.get_mut(at..end)? };
    out.varint(body_length)?;
    out.bytes(&[0])?;
    out.varlong(timestamp_delta)?;
    out.varint(offset_delta)?;
    match record.key {
        None => out.varint(-1)?,
        Some(key) => {
            out.varint(length(key.len())?)?;
            out.bytes(key)?;
        }
    }
    out.varint(length(record.value.len())?)?;
    out.bytes(record.value)?;
    out.varint(length(record.headers.len())?)?;
    for header in record.headers {
        out.varint(length(header.name.len())?)?;
        out.bytes(header.name.as_bytes())?;
        out.varint(length(header.value.len())?)?;
        out.bytes(header.value)?;
    }
    out.rest.is_empty().then_some(end)
}

/// The unwritten rest of a record's bytes; each write fills its front.
struct Out<'a> {
    rest: &'a mut [u8],
}

impl Out<'_> {
    #[inline]
    fn bytes(&mut self, bytes: &[u8]) -> Option<()> {
        let (target, rest) = std::mem::take(&mut self.rest).split_at_mut_checked(bytes.len())?;
        target.copy_from_slice(bytes);
        self.rest = rest;
        Some(())
    }

    #[inline]
    fn varlong(&mut self, value: i64) -> Option<()> {
        let size = put_varlong(self.rest, 0, value)?;
        self.rest = std::mem::take(&mut self.rest).get_mut(size..)?;
        Some(())
    }

    #[inline]
    fn varint(&mut self, value: i32) -> Option<()> {
        self.varlong(i64::from(value))
    }
}

/// Iterator over concatenated batches (a fetch response's records), validating each.
///
/// After an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    batch_size_max: u32,
}

impl<'a> Batches<'a> {
    /// Iterates the batches in `bytes`, each at most `batch_size_max` bytes.
    #[must_use]
    pub fn new(bytes: &'a [u8], batch_size_max: u32) -> Self {
        Self { bytes, batch_size_max }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchView<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        match BatchView::validate_prefix(self.bytes, self.batch_size_max) {
            Ok((batch, rest)) => {
                self.bytes = rest;
                Some(Ok(batch))
            }
            Err(error) => {
                self.bytes = &[];
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests;
