//! Every size the protocol accepts has a named maximum here.
//!
//! These are the protocol's absolute ceilings: a broker may configure lower limits (and announces
//! them in the handshake), never higher ones. Decoders check each length against the bytes present
//! *and* against these limits before using it.

/// Size of the fixed frame header that precedes every frame body.
pub const FRAME_HEADER_SIZE: usize = 20;

/// Largest frame body the protocol allows. Brokers default to a lower limit.
pub const FRAME_BODY_SIZE_MAX: u32 = 64 << 20;

/// Size of the fixed record batch header (Kafka's RecordBatch v2).
pub const BATCH_HEADER_SIZE: usize = 61;

/// Largest record batch the protocol allows (header included).
pub const BATCH_SIZE_MAX: u32 = 16 << 20;

/// Bytes of the smallest record: a length, attributes, timestamp and offset deltas, no key, an
/// empty value and no headers, one byte each.
pub const RECORD_SIZE_MIN: usize = 7;

/// Bytes of the smallest batch: a header and one smallest record.
pub const BATCH_SIZE_MIN: usize = BATCH_HEADER_SIZE + RECORD_SIZE_MIN;

/// Most records one batch may hold.
pub const RECORD_COUNT_MAX: u32 = 1 << 20;

/// Most headers one record may carry.
pub const RECORD_HEADER_COUNT_MAX: u16 = 1024;

/// Longest topic name, in bytes.
pub const TOPIC_NAME_SIZE_MAX: usize = 200;

/// Most partitions one topic may have.
pub const PARTITION_COUNT_MAX: u32 = 1024;

/// Most topics one broker may hold (and one `ListTopics` response may carry).
pub const TOPIC_COUNT_MAX: u32 = 10_000;

/// Longest client or broker name exchanged in the handshake.
pub const PEER_NAME_SIZE_MAX: usize = 256;

/// Longest human-readable error message carried in an error response.
pub const ERROR_MESSAGE_SIZE_MAX: usize = 1024;

/// Longest consumer group or member id, in bytes.
pub const GROUP_NAME_SIZE_MAX: usize = 200;

/// Most users a broker holds.
pub const USER_COUNT_MAX: usize = 10_000;

/// Most principals with quotas of their own a broker holds.
pub const QUOTA_PRINCIPAL_COUNT_MAX: usize = 10_000;

/// Most consumer groups with live members a broker holds at once (groups known only by their
/// committed offsets are bounded by the group state log's capacity instead).
pub const GROUP_COUNT_MAX: u32 = 10_000;

/// Most members in one consumer group.
pub const GROUP_MEMBER_COUNT_MAX: u32 = 1024;

/// Most committed offsets one group holds (over all the topics it has consumed).
pub const GROUP_OFFSET_COUNT_MAX: u32 = 65_536;

const _: () = assert!(BATCH_SIZE_MAX <= FRAME_BODY_SIZE_MAX);
const _: () = assert!(BATCH_SIZE_MIN <= 4096);

/// Batches per producer and partition the broker remembers to recognise retries; an idempotent
/// producer keeps at most this many requests in flight.
pub const PRODUCER_WINDOW: usize = 16;
