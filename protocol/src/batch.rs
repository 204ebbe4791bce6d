//! The record batch: one format on the producer's wire, in the ring log and on the consumer's wire.
//!
//! ```text
//! byte  size  field            CRC  notes
//!    0     8  base_offset      no   offset of the first record; 0 from producers, stamped by the broker
//!    8     4  term             no   leader term that appended it; 0 from producers, stamped by the broker
//!   12     4  stamp_crc        no   CRC-32C of bytes 0..12 then bytes 16..20: binds the stamped
//!                                   fields to this batch's CRC
//!   16     4  crc              no   CRC-32C of bytes 20..batch_size
//!   20     4  batch_size       yes  bytes of the whole batch, this header included
//!   24     2  magic            yes  0x4252, the bytes "RB" (0x5052, "RP", marks log padding)
//!   26     1  version          yes  1
//!   27     1  reserved         yes  0
//!   28     2  attributes       yes  0 (bits reserved for compression and transactions)
//!   30     2  producer_epoch   yes  0 unless idempotent
//!   32     4  record_count     yes  1 ..= RECORD_COUNT_MAX
//!   36     8  first_timestamp  yes  ms since the Unix epoch; record timestamps are deltas from it
//!   44     8  max_timestamp    yes  the largest record timestamp
//!   52     8  producer_id      yes  -1 unless idempotent
//!   60     4  base_sequence    yes  -1 unless idempotent: sequence number of the first record
//!   64        records, one after another
//! ```
//!
//! Each record:
//!
//! ```text
//! byte  size  field            notes
//!    0     4  record_size      bytes of this record, these 20 header bytes included
//!    4     4  timestamp_delta  signed ms from the batch's first_timestamp
//!    8     4  key_size         0xFFFF_FFFF for "no key"
//!   12     4  value_size
//!   16     2  header_count     0 ..= RECORD_HEADER_COUNT_MAX
//!   18     2  attributes       0
//!   20        key bytes, value bytes, then header_count headers:
//!             name_size u16 (1 ..= 255), value_size u32, name (UTF-8), value
//! ```
//!
//! The record at index `i` has offset `base_offset + i`: offsets are dense. The broker writes the
//! batch into its log with one copy and stamps `base_offset` and `term` in place. The batch CRC
//! does not cover them, so it is never recomputed and a consumer checks the very bytes the producer
//! sent; instead the 16-byte stamp gets its own CRC (`stamp_crc`), which also covers the batch CRC.
//! A header torn between the stamped fields and the rest (a new base offset over an old batch from
//! an earlier lap of the ring, say) therefore never validates.

use zerocopy::little_endian::{I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{DecodeError, EncodeError};
use crate::limits::{
    BATCH_HEADER_SIZE, BATCH_SIZE_MAX, HEADER_ENTRY_FIXED_SIZE, HEADER_NAME_SIZE_MAX,
    RECORD_COUNT_MAX, RECORD_HEADER_COUNT_MAX, RECORD_HEADER_SIZE,
};
use crate::wire::to_u64;

/// Magic of a record batch, the bytes `"RB"`.
pub const BATCH_MAGIC: u16 = u16::from_le_bytes(*b"RB");
/// Magic of a padding entry in the ring log, the bytes `"RP"`. Never valid on the wire.
pub const PADDING_MAGIC: u16 = u16::from_le_bytes(*b"RP");
/// The batch format version this build reads and writes.
pub const BATCH_VERSION: u8 = 1;
/// `producer_id` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// `base_sequence` of a batch from a producer that is not idempotent.
pub const NO_SEQUENCE: i32 = -1;
/// `key_size` of a record without a key.
pub const NO_KEY: u32 = u32::MAX;
/// First byte covered by the batch CRC: everything the broker stamps lies before it.
pub const CRC_START: usize = 20;
/// Bytes of the stamped fields covered by the stamp CRC (`base_offset` and `term`).
const STAMPED_SIZE: usize = 12;

/// The fixed batch header as it lies on the wire and in the log.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    base_offset: U64,
    term: U32,
    stamp_crc: U32,
    crc: U32,
    batch_size: U32,
    magic: U16,
    version: u8,
    reserved: u8,
    attributes: U16,
    producer_epoch: U16,
    record_count: U32,
    first_timestamp: I64,
    max_timestamp: I64,
    producer_id: I64,
    base_sequence: I32,
}

const _: () = assert!(size_of::<BatchHeader>() == BATCH_HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(BatchHeader, term) == 8);
const _: () = assert!(std::mem::offset_of!(BatchHeader, stamp_crc) == STAMPED_SIZE);
const _: () = assert!(std::mem::offset_of!(BatchHeader, crc) == 16);
const _: () = assert!(std::mem::offset_of!(BatchHeader, batch_size) == CRC_START);
const _: () = assert!(std::mem::offset_of!(BatchHeader, magic) == 24);
const _: () = assert!(std::mem::offset_of!(BatchHeader, attributes) == 28);
const _: () = assert!(std::mem::offset_of!(BatchHeader, record_count) == 32);
const _: () = assert!(std::mem::offset_of!(BatchHeader, first_timestamp) == 36);
const _: () = assert!(std::mem::offset_of!(BatchHeader, max_timestamp) == 44);
const _: () = assert!(std::mem::offset_of!(BatchHeader, producer_id) == 52);
const _: () = assert!(std::mem::offset_of!(BatchHeader, base_sequence) == 60);

/// The fixed header in front of every record.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RecordHeader {
    record_size: U32,
    timestamp_delta: I32,
    key_size: U32,
    value_size: U32,
    header_count: U16,
    attributes: U16,
}

const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(RecordHeader, key_size) == 8);
const _: () = assert!(std::mem::offset_of!(RecordHeader, header_count) == 16);

impl BatchHeader {
    /// Reads the header at the start of `bytes` and checks only what is needed to walk a log:
    /// size of the header, magic (batch or padding) and version. No CRC.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`], [`DecodeError::BadMagic`] or
    /// [`DecodeError::UnsupportedVersion`].
    pub fn peek(bytes: &[u8]) -> Result<&BatchHeader, DecodeError> {
        let (header, _) =
            BatchHeader::ref_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
                context: "batch header",
                field: "header",
                position: 0,
                needed: BATCH_HEADER_SIZE,
                available: bytes.len(),
            })?;
        let magic = header.magic.get();
        if magic != BATCH_MAGIC && magic != PADDING_MAGIC {
            return Err(DecodeError::BadMagic {
                context: "batch header",
                found: u32::from(magic),
                expected: u32::from(BATCH_MAGIC),
            });
        }
        if header.version != BATCH_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                context: "batch header",
                found: u16::from(header.version),
                supported: u16::from(BATCH_VERSION),
            });
        }
        Ok(header)
    }

    /// Offset of the first record.
    #[must_use]
    pub fn base_offset(&self) -> u64 {
        self.base_offset.get()
    }

    /// The leader term that appended this batch.
    #[must_use]
    pub fn term(&self) -> u32 {
        self.term.get()
    }

    /// The stored CRC-32C of bytes `20..batch_size`.
    #[must_use]
    pub fn crc(&self) -> u32 {
        self.crc.get()
    }

    /// The CRC-32C the stamp should have: over `base_offset`, `term` and `crc`.
    #[must_use]
    pub fn computed_stamp_crc(&self) -> u32 {
        let bytes = self.as_bytes();
        let stamped = crc32c::crc32c(bytes.get(..STAMPED_SIZE).unwrap_or_default());
        crc32c::crc32c_append(stamped, bytes.get(16..CRC_START).unwrap_or_default())
    }

    /// Whether the stamp CRC matches the stamped fields and the batch CRC.
    #[must_use]
    pub fn stamp_is_valid(&self) -> bool {
        self.stamp_crc.get() == self.computed_stamp_crc()
    }

    fn seal_stamp(&mut self) {
        self.stamp_crc = U32::new(self.computed_stamp_crc());
    }

    /// Bytes of the whole batch, header included.
    #[must_use]
    pub fn batch_size(&self) -> u32 {
        self.batch_size.get()
    }

    /// [`batch_size`](Self::batch_size) as a `usize`.
    #[must_use]
    pub fn batch_len(&self) -> usize {
        usize::try_from(self.batch_size.get()).unwrap_or(usize::MAX)
    }

    /// Whether this is a padding entry of the ring log rather than a record batch.
    #[must_use]
    pub fn is_padding(&self) -> bool {
        self.magic.get() == PADDING_MAGIC
    }

    /// Number of records.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.record_count.get()
    }

    /// Offset after the last record (`base_offset + record_count`), saturating.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.base_offset.get().saturating_add(u64::from(self.record_count.get()))
    }

    /// Timestamp of the first record, ms since the Unix epoch.
    #[must_use]
    pub fn first_timestamp(&self) -> i64 {
        self.first_timestamp.get()
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

    /// Producer epoch.
    #[must_use]
    pub fn producer_epoch(&self) -> u16 {
        self.producer_epoch.get()
    }

    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    #[must_use]
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence.get()
    }
}

/// Stamps the broker-assigned fields (`base_offset`, `term`) into a batch in place and seals them
/// with the stamp CRC. The batch CRC does not cover them, so it stays valid.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `bytes` is shorter than a batch header.
pub fn stamp(bytes: &mut [u8], base_offset: u64, term: u32) -> Result<(), DecodeError> {
    let available = bytes.len();
    let (header, _) = BatchHeader::mut_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
        context: "batch header",
        field: "header",
        position: 0,
        needed: BATCH_HEADER_SIZE,
        available,
    })?;
    header.base_offset = U64::new(base_offset);
    header.term = U32::new(term);
    header.seal_stamp();
    Ok(())
}

/// Rewrites the producer fields of a finished batch (an idempotent producer starting a new
/// epoch renumbers the batches it has not had acknowledged) and recomputes its CRCs.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `bytes` is shorter than a batch header or than the size it
/// declares.
pub fn restamp_producer(
    bytes: &mut [u8],
    producer_id: i64,
    producer_epoch: u16,
    base_sequence: i32,
) -> Result<(), DecodeError> {
    let available = bytes.len();
    let truncated = |needed| DecodeError::Truncated {
        context: "batch header",
        field: "header",
        position: 0,
        needed,
        available,
    };
    let size = BatchHeader::peek(bytes)?.batch_len();
    let batch = bytes.get_mut(..size).ok_or_else(|| truncated(size))?;
    let (header, _) =
        BatchHeader::mut_from_prefix(batch).map_err(|_| truncated(BATCH_HEADER_SIZE))?;
    header.producer_id = I64::new(producer_id);
    header.producer_epoch = U16::new(producer_epoch);
    header.base_sequence = I32::new(base_sequence);
    let crc = crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default());
    let (header, _) =
        BatchHeader::mut_from_prefix(batch).map_err(|_| truncated(BATCH_HEADER_SIZE))?;
    header.crc = U32::new(crc);
    header.seal_stamp();
    Ok(())
}

/// Writes a padding entry header at the start of `bytes`, declaring all of `bytes` as padding.
/// The ring log uses it to fill the end of a chunk that the next batch does not fit in.
///
/// # Errors
///
/// [`EncodeError::BufferTooSmall`] if `bytes` cannot hold a batch header, or
/// [`EncodeError::TooLong`] if it is larger than `u32::MAX`.
pub fn write_padding(bytes: &mut [u8], next_offset: u64, term: u32) -> Result<(), EncodeError> {
    let size = bytes.len();
    let batch_size = u32::try_from(size).map_err(|_| EncodeError::TooLong {
        field: "padding",
        size,
        max: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
    })?;
    let Some(slot) = bytes.get_mut(..BATCH_HEADER_SIZE) else {
        return Err(EncodeError::BufferTooSmall { size, min: BATCH_HEADER_SIZE });
    };
    let mut header = BatchHeader::new_zeroed();
    header.base_offset = U64::new(next_offset);
    header.term = U32::new(term);
    header.batch_size = U32::new(batch_size);
    header.magic = U16::new(PADDING_MAGIC);
    header.version = BATCH_VERSION;
    header.producer_id = I64::new(NO_PRODUCER_ID);
    header.base_sequence = I32::new(NO_SEQUENCE);
    header.crc = U32::new(crc32c::crc32c(header.as_bytes().get(CRC_START..).unwrap_or_default()));
    header.seal_stamp();
    slot.copy_from_slice(header.as_bytes());
    Ok(())
}

/// Checks a padding entry's header (magic, version, CRCs of the header, no records) and returns it.
///
/// # Errors
///
/// A [`DecodeError`] naming the failed check.
pub fn validate_padding(bytes: &[u8]) -> Result<&BatchHeader, DecodeError> {
    const CONTEXT: &str = "log padding";
    let header = BatchHeader::peek(bytes)?;
    if !header.is_padding() {
        return Err(DecodeError::BadMagic {
            context: CONTEXT,
            found: u32::from(header.magic.get()),
            expected: u32::from(PADDING_MAGIC),
        });
    }
    let computed = crc32c::crc32c(header.as_bytes().get(CRC_START..).unwrap_or_default());
    if computed != header.crc.get() {
        return Err(DecodeError::BadChecksum {
            context: CONTEXT,
            stored: header.crc.get(),
            computed,
        });
    }
    if !header.stamp_is_valid() {
        return Err(DecodeError::BadChecksum {
            context: "log padding stamp",
            stored: header.stamp_crc.get(),
            computed: header.computed_stamp_crc(),
        });
    }
    if header.record_count.get() != 0 || header.batch_len() < BATCH_HEADER_SIZE {
        return Err(DecodeError::InvalidValue {
            context: CONTEXT,
            field: "record_count",
            position: 32,
            value: u64::from(header.record_count.get()),
            reason: "padding holds no records and covers at least its header",
        });
    }
    Ok(header)
}

/// A record batch that passed [`BatchView::validate`]: header, CRC and every record's layout.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    header: &'a BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Validates `bytes` as exactly one record batch, in place, and returns a view of it.
    ///
    /// Checks, in order: header present, magic, version, `batch_size` equal to `bytes.len()` and at
    /// most `batch_size_max` (capped at [`BATCH_SIZE_MAX`]), reserved fields zero, CRC-32C, the
    /// stamp CRC, record count, then every record's sizes, header entries and timestamps.
    /// Allocates nothing.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the first check that failed and where.
    pub fn validate(bytes: &'a [u8], batch_size_max: u32) -> Result<Self, DecodeError> {
        let header = BatchHeader::peek(bytes)?;
        let declared = header.batch_size.get();
        if to_u64(bytes.len()) != u64::from(declared) {
            return Err(DecodeError::SizeMismatch {
                context: "batch",
                field: "batch_size",
                declared: u64::from(declared),
                actual: to_u64(bytes.len()),
            });
        }
        validate_body(header, bytes, batch_size_max)?;
        Ok(Self { header, bytes })
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

    /// The records, in offset order.
    #[must_use]
    pub fn records(&self) -> Records<'a> {
        Records {
            bytes: self.bytes,
            position: BATCH_HEADER_SIZE,
            index: 0,
            count: self.header.record_count(),
            base_offset: self.header.base_offset(),
            first_timestamp: self.header.first_timestamp(),
        }
    }
}

fn validate_body(
    header: &BatchHeader,
    bytes: &[u8],
    batch_size_max: u32,
) -> Result<(), DecodeError> {
    const CONTEXT: &str = "batch";
    let invalid = |field, position, value, reason| DecodeError::InvalidValue {
        context: CONTEXT,
        field,
        position,
        value,
        reason,
    };
    if header.is_padding() {
        return Err(DecodeError::BadMagic {
            context: CONTEXT,
            found: u32::from(PADDING_MAGIC),
            expected: u32::from(BATCH_MAGIC),
        });
    }
    let max = batch_size_max.min(BATCH_SIZE_MAX);
    let size = header.batch_size.get();
    if size > max {
        return Err(DecodeError::TooLarge {
            context: CONTEXT,
            field: "batch_size",
            size: u64::from(size),
            max: u64::from(max),
        });
    }
    if header.reserved != 0 {
        return Err(invalid("reserved", 27, u64::from(header.reserved), "must be zero"));
    }
    if header.attributes.get() != 0 {
        return Err(invalid(
            "attributes",
            28,
            u64::from(header.attributes.get()),
            "must be 0 in version 1",
        ));
    }
    let (producer_id, sequence) = (header.producer_id.get(), header.base_sequence.get());
    if producer_id == NO_PRODUCER_ID {
        if sequence != NO_SEQUENCE || header.producer_epoch.get() != 0 {
            return Err(invalid(
                "base_sequence",
                60,
                u64::from(sequence.unsigned_abs()),
                "a batch without a producer id has sequence -1 and epoch 0",
            ));
        }
    } else if producer_id < 0 {
        return Err(invalid(
            "producer_id",
            52,
            producer_id.unsigned_abs(),
            "a producer id is -1 (none) or at least 0",
        ));
    } else if sequence < 0 {
        return Err(invalid(
            "base_sequence",
            60,
            u64::from(sequence.unsigned_abs()),
            "an idempotent batch's sequence is at least 0",
        ));
    }
    let computed = crc32c::crc32c(bytes.get(CRC_START..).unwrap_or_default());
    if computed != header.crc.get() {
        return Err(DecodeError::BadChecksum {
            context: CONTEXT,
            stored: header.crc.get(),
            computed,
        });
    }
    if !header.stamp_is_valid() {
        return Err(DecodeError::BadChecksum {
            context: "batch stamp",
            stored: header.stamp_crc.get(),
            computed: header.computed_stamp_crc(),
        });
    }
    let count = header.record_count.get();
    if count == 0 {
        return Err(invalid("record_count", 32, 0, "a batch holds at least one record"));
    }
    if count > RECORD_COUNT_MAX {
        return Err(DecodeError::TooLarge {
            context: CONTEXT,
            field: "record_count",
            size: u64::from(count),
            max: u64::from(RECORD_COUNT_MAX),
        });
    }
    let first_timestamp = header.first_timestamp.get();
    let mut position = BATCH_HEADER_SIZE;
    let mut max_timestamp = i64::MIN;
    for index in 0..count {
        let (record, next) = parse_record(bytes, position, first_timestamp, index)?;
        for entry in record.headers {
            entry?;
        }
        max_timestamp = max_timestamp.max(record.timestamp);
        position = next;
    }
    if position != bytes.len() {
        return Err(DecodeError::SizeMismatch {
            context: CONTEXT,
            field: "batch_size",
            declared: to_u64(bytes.len()),
            actual: to_u64(position),
        });
    }
    if max_timestamp != header.max_timestamp.get() {
        return Err(DecodeError::InvalidValue {
            context: CONTEXT,
            field: "max_timestamp",
            position: 44,
            value: u64::from_le_bytes(header.max_timestamp.get().to_le_bytes()),
            reason: "must equal the largest record timestamp",
        });
    }
    Ok(())
}

/// Parses the record at `position`; returns it and the position after it.
fn parse_record(
    bytes: &[u8],
    position: usize,
    first_timestamp: i64,
    index: u32,
) -> Result<(RecordView<'_>, usize), DecodeError> {
    const CONTEXT: &str = "record";
    let rest = bytes.get(position..).unwrap_or_default();
    let (header, _) = RecordHeader::ref_from_prefix(rest).map_err(|_| DecodeError::Truncated {
        context: CONTEXT,
        field: "record header",
        position,
        needed: RECORD_HEADER_SIZE,
        available: rest.len(),
    })?;
    let record_size = usize::try_from(header.record_size.get()).unwrap_or(usize::MAX);
    let record = rest.get(..record_size).ok_or(DecodeError::Truncated {
        context: CONTEXT,
        field: "record",
        position,
        needed: record_size,
        available: rest.len(),
    })?;
    if record_size < RECORD_HEADER_SIZE {
        return Err(DecodeError::InvalidValue {
            context: CONTEXT,
            field: "record_size",
            position,
            value: to_u64(record_size),
            reason: "smaller than the record header",
        });
    }
    if header.attributes.get() != 0 {
        return Err(DecodeError::InvalidValue {
            context: CONTEXT,
            field: "attributes",
            position: position.saturating_add(18),
            value: u64::from(header.attributes.get()),
            reason: "must be 0 in version 1",
        });
    }
    let header_count = header.header_count.get();
    if header_count > RECORD_HEADER_COUNT_MAX {
        return Err(DecodeError::TooLarge {
            context: CONTEXT,
            field: "header_count",
            size: u64::from(header_count),
            max: u64::from(RECORD_HEADER_COUNT_MAX),
        });
    }
    let mut cursor = RECORD_HEADER_SIZE;
    let overrun = |field, needed: usize, at: usize| DecodeError::SizeMismatch {
        context: CONTEXT,
        field,
        declared: to_u64(record_size),
        actual: to_u64(at.saturating_add(needed)),
    };
    let key_size = header.key_size.get();
    let key = if key_size == NO_KEY {
        None
    } else {
        let size = usize::try_from(key_size).unwrap_or(usize::MAX);
        let end = cursor.checked_add(size).ok_or_else(|| overrun("key_size", size, cursor))?;
        let key = record.get(cursor..end).ok_or_else(|| overrun("key_size", size, cursor))?;
        cursor = end;
        Some(key)
    };
    let value_size = usize::try_from(header.value_size.get()).unwrap_or(usize::MAX);
    let value_end =
        cursor.checked_add(value_size).ok_or_else(|| overrun("value_size", value_size, cursor))?;
    let value =
        record.get(cursor..value_end).ok_or_else(|| overrun("value_size", value_size, cursor))?;
    let headers_bytes = record.get(value_end..).unwrap_or_default();
    let timestamp = first_timestamp.checked_add(i64::from(header.timestamp_delta.get())).ok_or(
        DecodeError::InvalidValue {
            context: CONTEXT,
            field: "timestamp_delta",
            position: position.saturating_add(4),
            value: u64::from(header.timestamp_delta.get().unsigned_abs()),
            reason: "timestamp overflows",
        },
    )?;
    if header_count == 0 && !headers_bytes.is_empty() {
        return Err(DecodeError::SizeMismatch {
            context: CONTEXT,
            field: "record_size",
            declared: to_u64(record_size),
            actual: to_u64(value_end),
        });
    }
    let view = RecordView {
        offset_delta: index,
        timestamp,
        key,
        value,
        headers: RecordHeaders { bytes: headers_bytes, remaining: header_count, position: 0 },
    };
    Ok((view, position.saturating_add(record_size)))
}

/// Iterator over the records of a validated batch.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    position: usize,
    index: u32,
    count: u32,
    base_offset: u64,
    first_timestamp: i64,
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.index >= self.count {
            return None;
        }
        // The batch was validated, so this cannot fail; if it somehow did, end the iteration
        // rather than panic.
        let (record, next) =
            parse_record(self.bytes, self.position, self.first_timestamp, self.index).ok()?;
        self.position = next;
        self.index = self.index.saturating_add(1);
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.count.saturating_sub(self.index)).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl Records<'_> {
    /// Offset of the first record of the batch these records belong to.
    #[must_use]
    pub fn base_offset(&self) -> u64 {
        self.base_offset
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
    /// The value.
    pub value: &'a [u8],
    /// The record's headers.
    pub headers: RecordHeaders<'a>,
}

/// Iterator over a record's headers. Yields errors only for a batch that was not validated.
#[derive(Debug, Clone)]
pub struct RecordHeaders<'a> {
    bytes: &'a [u8],
    remaining: u16,
    position: usize,
}

impl<'a> Iterator for RecordHeaders<'a> {
    type Item = Result<Header<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return if self.position == self.bytes.len() {
                None
            } else {
                let trailing = DecodeError::SizeMismatch {
                    context: "record headers",
                    field: "record_size",
                    declared: to_u64(self.bytes.len()),
                    actual: to_u64(self.position),
                };
                self.position = self.bytes.len();
                Some(Err(trailing))
            };
        }
        self.remaining = self.remaining.saturating_sub(1);
        let result = self.parse();
        if result.is_err() {
            self.remaining = 0;
            self.position = self.bytes.len();
        }
        Some(result)
    }
}

impl<'a> RecordHeaders<'a> {
    fn parse(&mut self) -> Result<Header<'a>, DecodeError> {
        let mut reader = crate::wire::Reader::new(
            self.bytes.get(self.position..).unwrap_or_default(),
            "record header entry",
        );
        let name_size = usize::from(reader.u16("name_size")?);
        if name_size == 0 || name_size > usize::from(HEADER_NAME_SIZE_MAX) {
            return Err(reader.invalid(
                "name_size",
                to_u64(name_size),
                "header names are 1 to 255 bytes",
            ));
        }
        let value_size = reader.len32("value_size")?;
        let name = reader.take(name_size, "name")?;
        let name = std::str::from_utf8(name).map_err(|_| DecodeError::InvalidUtf8 {
            context: "record header entry",
            field: "name",
            position: self.position.saturating_add(HEADER_ENTRY_FIXED_SIZE),
        })?;
        let value = reader.take(value_size, "value")?;
        self.position = self.position.saturating_add(reader.position());
        Ok(Header { name, value })
    }
}

/// A record header: a UTF-8 name and a byte value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header name, 1 to 255 bytes of UTF-8.
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

    /// Bytes this record takes in a batch, or `None` if that overflows `usize`.
    #[must_use]
    pub fn encoded_size(&self) -> Option<usize> {
        let mut size = RECORD_HEADER_SIZE.checked_add(self.key.map_or(0, <[u8]>::len))?;
        size = size.checked_add(self.value.len())?;
        for header in self.headers {
            size = size
                .checked_add(HEADER_ENTRY_FIXED_SIZE)?
                .checked_add(header.name.len())?
                .checked_add(header.value.len())?;
        }
        Some(size)
    }
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
/// assert_eq!(view.records().next().map(|record| record.value), Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BatchBuilder<'a> {
    buffer: &'a mut [u8],
    encoder: BatchEncoder,
}

impl<'a> BatchBuilder<'a> {
    /// Starts a batch in `buffer`; record timestamps are stored as deltas from `first_timestamp`.
    /// A batch never grows past `buffer.len()` or [`BATCH_SIZE_MAX`].
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`] if `buffer` cannot hold a header and one empty record.
    pub fn new(buffer: &'a mut [u8], first_timestamp: i64) -> Result<Self, EncodeError> {
        let encoder = BatchEncoder::new(buffer.len(), first_timestamp)?;
        Ok(Self { buffer, encoder })
    }

    /// Marks the batch as sent by an idempotent producer.
    #[must_use]
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: u16,
        base_sequence: i32,
    ) -> Self {
        self.encoder.set_producer(producer_id, producer_epoch, base_sequence);
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

    /// Writes the header and CRCs and returns the finished batch, a prefix of the buffer.
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
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: u16,
    base_sequence: i32,
}

impl BatchEncoder {
    /// Starts a batch for a buffer of `buffer_size` bytes (capped at [`BATCH_SIZE_MAX`]).
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`] if that cannot hold a header and one empty record.
    pub fn new(buffer_size: usize, first_timestamp: i64) -> Result<Self, EncodeError> {
        let min = BATCH_HEADER_SIZE.saturating_add(RECORD_HEADER_SIZE);
        if buffer_size < min {
            return Err(EncodeError::BufferTooSmall { size: buffer_size, min });
        }
        let limit = buffer_size.min(usize::try_from(BATCH_SIZE_MAX).unwrap_or(usize::MAX));
        Ok(Self {
            limit,
            size: BATCH_HEADER_SIZE,
            record_count: 0,
            first_timestamp,
            max_timestamp: first_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: 0,
            base_sequence: NO_SEQUENCE,
        })
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: u16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Appends a record to the batch in `buffer`, or reports [`Push::Full`] if it does not fit.
    ///
    /// # Errors
    ///
    /// [`EncodeError::RecordTooLarge`] if the record would not fit even in an empty batch of this
    /// buffer; [`EncodeError::TimestampOutOfRange`] if its timestamp is more than `i32` ms from the
    /// batch's first timestamp; [`EncodeError::TooLong`] or [`EncodeError::InvalidValue`] for a
    /// header that breaks the limits; [`EncodeError::BufferTooSmall`] if `buffer` is shorter than
    /// the size given to [`new`](Self::new).
    pub fn push(&mut self, buffer: &mut [u8], record: &Record<'_>) -> Result<Push, EncodeError> {
        if buffer.len() < self.limit {
            return Err(EncodeError::BufferTooSmall { size: buffer.len(), min: self.limit });
        }
        let record_size = record.encoded_size().unwrap_or(usize::MAX);
        let fits_empty = record_size <= self.limit.saturating_sub(BATCH_HEADER_SIZE);
        if !fits_empty {
            return Err(EncodeError::RecordTooLarge {
                size: record_size.saturating_add(BATCH_HEADER_SIZE),
                max: self.limit,
            });
        }
        let delta = record
            .timestamp
            .checked_sub(self.first_timestamp)
            .and_then(|delta| i32::try_from(delta).ok())
            .ok_or(EncodeError::TimestampOutOfRange {
                timestamp: record.timestamp,
                first: self.first_timestamp,
            })?;
        if record.headers.len() > usize::from(RECORD_HEADER_COUNT_MAX) {
            return Err(EncodeError::TooLong {
                field: "record headers",
                size: record.headers.len(),
                max: usize::from(RECORD_HEADER_COUNT_MAX),
            });
        }
        for header in record.headers {
            if header.name.is_empty() || header.name.len() > usize::from(HEADER_NAME_SIZE_MAX) {
                return Err(EncodeError::InvalidValue {
                    field: "header name",
                    reason: "header names are 1 to 255 bytes",
                });
            }
        }
        let limit = self.limit;
        let too_long = |field, size| EncodeError::TooLong { field, size, max: limit };
        let key_size = match record.key {
            None => NO_KEY,
            Some(key) => u32::try_from(key.len())
                .ok()
                .filter(|&size| size != NO_KEY)
                .ok_or(too_long("key", key.len()))?,
        };
        let end = self.size.saturating_add(record_size);
        if end > self.limit || self.record_count >= RECORD_COUNT_MAX {
            return Ok(Push::Full);
        }
        let header = RecordHeader {
            record_size: U32::new(
                u32::try_from(record_size).map_err(|_| too_long("record", record_size))?,
            ),
            timestamp_delta: I32::new(delta),
            key_size: U32::new(key_size),
            value_size: U32::new(
                u32::try_from(record.value.len())
                    .map_err(|_| too_long("value", record.value.len()))?,
            ),
            header_count: U16::new(u16::try_from(record.headers.len()).unwrap_or(u16::MAX)),
            attributes: U16::new(0),
        };
        let mut at = self.size;
        at = put(buffer, at, header.as_bytes());
        if let Some(key) = record.key {
            at = put(buffer, at, key);
        }
        at = put(buffer, at, record.value);
        for entry in record.headers {
            let name_size = u16::try_from(entry.name.len()).unwrap_or(u16::MAX);
            let value_size = u32::try_from(entry.value.len())
                .map_err(|_| too_long("header value", entry.value.len()))?;
            at = put(buffer, at, &name_size.to_le_bytes());
            at = put(buffer, at, &value_size.to_le_bytes());
            at = put(buffer, at, entry.name.as_bytes());
            at = put(buffer, at, entry.value);
        }
        debug_assert_eq!(at, end, "encoded_size disagrees with the bytes written");
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

    /// The batch's first timestamp.
    #[must_use]
    pub fn first_timestamp(&self) -> i64 {
        self.first_timestamp
    }

    /// Writes the header and CRCs into `buffer` and returns the batch's size: the batch is
    /// `buffer[..size]`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::EmptyBatch`] if no record was appended; [`EncodeError::BufferTooSmall`]
    /// if `buffer` is shorter than the batch.
    pub fn finish(&self, buffer: &mut [u8]) -> Result<usize, EncodeError> {
        if self.record_count == 0 {
            return Err(EncodeError::EmptyBatch);
        }
        let batch_size = u32::try_from(self.size).map_err(|_| EncodeError::TooLong {
            field: "batch",
            size: self.size,
            max: self.limit,
        })?;
        let Some(batch) = buffer.get_mut(..self.size) else {
            return Err(EncodeError::BufferTooSmall { size: buffer.len(), min: self.size });
        };
        let mut header = BatchHeader::new_zeroed();
        header.batch_size = U32::new(batch_size);
        header.magic = U16::new(BATCH_MAGIC);
        header.version = BATCH_VERSION;
        header.producer_epoch = U16::new(self.producer_epoch);
        header.record_count = U32::new(self.record_count);
        header.first_timestamp = I64::new(self.first_timestamp);
        header.max_timestamp = I64::new(self.max_timestamp);
        header.producer_id = I64::new(self.producer_id);
        header.base_sequence = I32::new(self.base_sequence);
        if let Some(slot) = batch.get_mut(..BATCH_HEADER_SIZE) {
            slot.copy_from_slice(header.as_bytes());
        }
        header.crc = U32::new(crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default()));
        header.seal_stamp();
        if let Some(slot) = batch.get_mut(..BATCH_HEADER_SIZE) {
            slot.copy_from_slice(header.as_bytes());
        }
        Ok(self.size)
    }
}

/// Copies `bytes` to `at` in `buffer` and returns the position after them. Callers checked the
/// bounds; an out-of-range copy is skipped rather than panicking.
fn put(buffer: &mut [u8], at: usize, bytes: &[u8]) -> usize {
    let end = at.saturating_add(bytes.len());
    if let Some(target) = buffer.get_mut(at..end) {
        target.copy_from_slice(bytes);
    }
    end
}

/// Iterator over concatenated batches (a fetch response body), validating each.
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
mod tests {
    use super::*;

    #[test]
    fn restamping_the_producer_fields_keeps_the_batch_valid() {
        let mut buffer = [0u8; 512];
        let mut builder = BatchBuilder::new(&mut buffer, 5).unwrap().with_producer(3, 1, 40);
        let _ = builder.push(&Record::value(b"x", 5)).unwrap();
        let size = builder.finish().unwrap().len();
        restamp_producer(&mut buffer[..size], 9, 2, 0).unwrap();
        let view = BatchView::validate(&buffer[..size], 1 << 20).unwrap();
        let header = view.header();
        assert_eq!(
            (header.producer_id(), header.producer_epoch(), header.base_sequence()),
            (9, 2, 0)
        );
        assert!(restamp_producer(&mut buffer[..10], 1, 1, 1).is_err());
    }
    use proptest::prelude::*;

    fn build(records: &[Record<'_>], buffer: &mut [u8]) -> usize {
        let mut builder = BatchBuilder::new(buffer, records[0].timestamp).unwrap();
        for record in records {
            assert_eq!(builder.push(record).unwrap(), Push::Appended);
        }
        builder.finish().unwrap().len()
    }

    #[test]
    fn round_trip_with_keys_and_headers() {
        let headers = [Header { name: "trace", value: b"abc" }, Header { name: "é", value: b"" }];
        let records = [
            Record { key: Some(b"k1"), value: b"v1", timestamp: 1000, headers: &headers },
            Record { key: None, value: b"", timestamp: 990, headers: &[] },
            Record { key: Some(b""), value: b"third", timestamp: 1500, headers: &[] },
        ];
        let mut buffer = vec![0; 1024];
        let size = build(&records, &mut buffer);
        let view = BatchView::validate(&buffer[..size], 1 << 20).unwrap();
        assert_eq!(view.record_count(), 3);
        assert_eq!(view.header().max_timestamp(), 1500);
        let decoded: Vec<_> = view.records().collect();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0].key, Some(&b"k1"[..]));
        let names: Vec<_> = decoded[0].headers.clone().map(|h| h.unwrap().name).collect();
        assert_eq!(names, ["trace", "é"]);
        assert_eq!(decoded[1].key, None);
        assert_eq!(decoded[1].timestamp, 990);
        assert_eq!(decoded[2].key, Some(&b""[..]));
        assert_eq!(decoded[2].offset_delta, 2);
    }

    #[test]
    fn full_is_an_outcome_not_an_error() {
        let mut buffer = vec![0; BATCH_HEADER_SIZE + 2 * (RECORD_HEADER_SIZE + 10)];
        let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
        let record = Record::value(&[7; 10], 0);
        assert_eq!(builder.push(&record).unwrap(), Push::Appended);
        assert_eq!(builder.push(&record).unwrap(), Push::Appended);
        assert_eq!(builder.push(&record).unwrap(), Push::Full);
        assert_eq!(builder.record_count(), 2);
        let batch = builder.finish().unwrap();
        assert_eq!(batch.len(), BATCH_HEADER_SIZE + 2 * (RECORD_HEADER_SIZE + 10));
        BatchView::validate(batch, u32::MAX).unwrap();
    }

    #[test]
    fn oversized_record_is_an_error_even_in_an_empty_batch() {
        let mut buffer = vec![0; 128];
        let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
        assert!(matches!(
            builder.push(&Record::value(&[0; 100], 0)),
            Err(EncodeError::RecordTooLarge { .. })
        ));
        assert!(matches!(builder.finish(), Err(EncodeError::EmptyBatch)));
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut buffer = vec![0; 256];
        let size = build(&[Record::value(b"x", 5)], &mut buffer);
        stamp(&mut buffer[..size], 123_456, 9).unwrap();
        let view = BatchView::validate(&buffer[..size], 1 << 20).unwrap();
        assert_eq!(view.base_offset(), 123_456);
        assert_eq!(view.header().term(), 9);
        assert_eq!(view.next_offset(), 123_457);
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buffer = vec![0; 256];
        let size = build(&[Record::value(b"payload", 5), Record::value(b"two", 6)], &mut buffer);
        stamp(&mut buffer[..size], 77, 1).unwrap();
        for bit in 0..size * 8 {
            let mut copy = buffer[..size].to_vec();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(BatchView::validate(&copy, 1 << 20).is_err(), "flip of bit {bit} accepted");
        }
    }

    #[test]
    fn batch_size_limit_is_enforced() {
        let mut buffer = vec![0; 512];
        let size = build(&[Record::value(&[1; 300], 0)], &mut buffer);
        assert!(BatchView::validate(&buffer[..size], u32::try_from(size).unwrap()).is_ok());
        assert!(matches!(
            BatchView::validate(&buffer[..size], u32::try_from(size - 1).unwrap()),
            Err(DecodeError::TooLarge { field: "batch_size", .. })
        ));
    }

    #[test]
    fn a_new_stamp_over_an_old_batch_is_rejected() {
        // A header torn after the base offset: the new offset lands on an older batch.
        let mut buffer = vec![0; 256];
        let size = build(&[Record::value(b"old", 5)], &mut buffer);
        stamp(&mut buffer[..size], 10, 0).unwrap();
        buffer[..8].copy_from_slice(&500u64.to_le_bytes());
        let error = BatchView::validate(&buffer[..size], 1 << 20).unwrap_err();
        assert!(
            matches!(error, DecodeError::BadChecksum { context: "batch stamp", .. }),
            "{error}"
        );
    }

    #[test]
    fn padding_round_trips_and_is_not_a_batch() {
        let mut chunk_tail = vec![0xAA; 300];
        write_padding(&mut chunk_tail, 77, 2).unwrap();
        let header = validate_padding(&chunk_tail).unwrap();
        assert_eq!((header.base_offset(), header.batch_len(), header.term()), (77, 300, 2));
        assert!(matches!(
            BatchView::validate(&chunk_tail, u32::MAX),
            Err(DecodeError::SizeMismatch { .. }) | Err(DecodeError::BadMagic { .. })
        ));
        assert!(BatchView::validate_prefix(&chunk_tail, u32::MAX).is_err());
        assert!(write_padding(&mut [0; 63], 0, 0).is_err());
    }

    #[test]
    fn batches_iterator_walks_concatenated_batches() {
        let mut buffer = vec![0; 256];
        let first = build(&[Record::value(b"a", 1)], &mut buffer);
        let mut joined = buffer[..first].to_vec();
        let mut second_buffer = vec![0; 256];
        let second = build(&[Record::value(b"b", 1), Record::value(b"c", 2)], &mut second_buffer);
        joined.extend_from_slice(&second_buffer[..second]);
        let counts: Vec<u32> =
            Batches::new(&joined, 1 << 20).map(|b| b.unwrap().record_count()).collect();
        assert_eq!(counts, [1, 2]);
        joined.pop();
        let results: Vec<_> = Batches::new(&joined, 1 << 20).collect();
        assert!(results[0].is_ok() && results[1].is_err() && results.len() == 2);
    }

    prop_compose! {
        fn arb_record()(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            value in proptest::collection::vec(any::<u8>(), 0..300),
            delta in -100_000i64..100_000,
            headers in proptest::collection::vec(("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..16)), 0..4),
        ) -> (Option<Vec<u8>>, Vec<u8>, i64, Vec<(String, Vec<u8>)>) {
            (key, value, delta, headers)
        }
    }

    proptest! {
        #[test]
        fn encode_validate_iterate_gives_back_the_records(
            records in proptest::collection::vec(arb_record(), 1..30),
            base in 0u64..u64::MAX / 2,
        ) {
            let first_timestamp = 1_700_000_000_000i64;
            let header_storage: Vec<Vec<Header<'_>>> = records.iter()
                .map(|(_, _, _, headers)| headers.iter().map(|(n, v)| Header { name: n, value: v }).collect())
                .collect();
            let inputs: Vec<Record<'_>> = records.iter().zip(&header_storage)
                .map(|((key, value, delta, _), headers)| Record {
                    key: key.as_deref(), value, timestamp: first_timestamp + delta, headers,
                })
                .collect();
            let mut buffer = vec![0; 64 * 1024];
            let mut builder = BatchBuilder::new(&mut buffer, first_timestamp).unwrap();
            for record in &inputs {
                prop_assert_eq!(builder.push(record).unwrap(), Push::Appended);
            }
            let batch = builder.finish().unwrap();
            stamp(batch, base, 0).unwrap();
            let view = BatchView::validate(batch, 1 << 20).unwrap();
            prop_assert_eq!(view.base_offset(), base);
            let decoded: Vec<_> = view.records().collect();
            prop_assert_eq!(decoded.len(), inputs.len());
            for (got, want) in decoded.iter().zip(&inputs) {
                prop_assert_eq!(got.key, want.key);
                prop_assert_eq!(got.value, want.value);
                prop_assert_eq!(got.timestamp, want.timestamp);
                let headers: Vec<Header<'_>> = got.headers.clone().map(Result::unwrap).collect();
                prop_assert_eq!(&headers[..], want.headers);
            }
        }

        #[test]
        fn random_bytes_never_panic_the_validator(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = BatchView::validate(&bytes, 1 << 20);
            let _ = BatchView::validate_prefix(&bytes, 1 << 20);
            let _ = validate_padding(&bytes);
            for batch in Batches::new(&bytes, 1 << 20) {
                let _ = batch.map(|b| b.records().count());
            }
        }

        #[test]
        fn mutated_batches_never_panic_and_never_pass_with_changed_content(
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..6),
        ) {
            let mut buffer = vec![0; 400];
            let size = build(&[Record { key: Some(b"key"), value: &[5; 100], timestamp: 9, headers: &[Header { name: "h", value: b"v" }] }, Record::value(&[6; 150], 10)], &mut buffer);
            let original = buffer[..size].to_vec();
            let mut mutated = original.clone();
            for (at, value) in flips {
                if at < size { mutated[at] ^= value; }
            }
            // The stamp CRC covers the stamped fields, so any change is detected.
            if let Ok(view) = BatchView::validate(&mutated, 1 << 20) {
                prop_assert_eq!(view.as_bytes(), &original[..]);
            }
        }
    }
}
