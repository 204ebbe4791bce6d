//! The two failure domains of this crate: decoding untrusted bytes and encoding into a buffer.
//!
//! Every variant carries the facts a reader needs to find the problem: which structure and field,
//! at which byte position, the value found and what was allowed.

use thiserror::Error;

/// Why a frame, message or record batch could not be decoded.
///
/// Returned for any malformed input; decoders never panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends before a field it must contain.
    #[error(
        "{context}: truncated at byte {position}: {field} needs {needed} bytes, {available} left"
    )]
    Truncated {
        /// The structure being decoded.
        context: &'static str,
        /// The field that did not fit.
        field: &'static str,
        /// Byte position of the field within the structure.
        position: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A magic number does not match.
    #[error("{context}: bad magic {found:#x} (expected {expected:#x})")]
    BadMagic {
        /// The structure being decoded.
        context: &'static str,
        /// The value found.
        found: u32,
        /// The value required.
        expected: u32,
    },
    /// A format or protocol version this build does not speak.
    #[error("{context}: unsupported version {found} (supported: {supported})")]
    UnsupportedVersion {
        /// The structure being decoded.
        context: &'static str,
        /// The version found.
        found: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// A checksum does not match the bytes it covers.
    #[error("{context}: CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// The structure being decoded.
        context: &'static str,
        /// The checksum stored in the input.
        stored: u32,
        /// The checksum of the bytes present.
        computed: u32,
    },
    /// A size or count exceeds its limit.
    #[error("{context}: {field} is {size}, more than the limit of {max}")]
    TooLarge {
        /// The structure being decoded.
        context: &'static str,
        /// The field whose value is too large.
        field: &'static str,
        /// The value found.
        size: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A field holds a value that is not allowed.
    #[error("{context}: invalid {field} {value} at byte {position}: {reason}")]
    InvalidValue {
        /// The structure being decoded.
        context: &'static str,
        /// The field holding the value.
        field: &'static str,
        /// Byte position of the field within the structure.
        position: usize,
        /// The value found.
        value: u64,
        /// What was expected instead.
        reason: &'static str,
    },
    /// Sizes inside a structure do not add up.
    #[error("{context}: {field} declares {declared} bytes but {actual} are present")]
    SizeMismatch {
        /// The structure being decoded.
        context: &'static str,
        /// The field declaring the size.
        field: &'static str,
        /// The declared size.
        declared: u64,
        /// The size actually present or implied.
        actual: u64,
    },
    /// A string field is not valid UTF-8.
    #[error("{context}: {field} at byte {position} is not valid UTF-8")]
    InvalidUtf8 {
        /// The structure being decoded.
        context: &'static str,
        /// The string field.
        field: &'static str,
        /// Byte position of the string.
        position: usize,
    },
    /// Well formed, but asks for something this build does not support.
    #[error("{context}: {feature} are not supported")]
    Unsupported {
        /// The structure being decoded.
        context: &'static str,
        /// What is not supported.
        feature: &'static str,
    },
    /// Bytes are left after the last field of a message.
    #[error("{context}: {extra} unexpected bytes after the last field")]
    TrailingBytes {
        /// The structure being decoded.
        context: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
}

/// Why a value could not be encoded.
///
/// A batch buffer filling up is *not* an error: [`crate::BatchBuilder::push`] reports it as
/// [`crate::Push::Full`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer cannot hold even the fixed header.
    #[error("buffer of {size} bytes is smaller than the {min}-byte minimum")]
    BufferTooSmall {
        /// Size of the buffer given.
        size: usize,
        /// The smallest buffer that works.
        min: usize,
    },
    /// A single record is larger than any batch this buffer (or the protocol) can hold.
    #[error("record of {size} bytes does not fit in a batch of at most {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// The largest batch the buffer can hold.
        max: usize,
    },
    /// A field is longer than its limit.
    #[error("{field} is {size} bytes, more than the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A record's timestamp is too far from the batch's first timestamp to be stored as a delta.
    #[error("record timestamp {timestamp} is too far from the batch's first timestamp {first}")]
    TimestampOutOfRange {
        /// The record's timestamp (ms since the Unix epoch).
        timestamp: i64,
        /// The batch's first timestamp.
        first: i64,
    },
    /// A batch with no records was finished.
    #[error("a record batch needs at least one record")]
    EmptyBatch,
    /// A record header name is not allowed.
    #[error("invalid value for {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// Why it is not allowed.
        reason: &'static str,
    },
}
