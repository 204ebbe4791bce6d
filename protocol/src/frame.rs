//! The frame: a fixed 20-byte header followed by a body of `body_size` bytes.
//!
//! ```text
//! byte  size  field           notes
//!    0     2  magic           0x5152, the bytes "RQ"
//!    2     1  version         frame format / protocol version, currently 1
//!    3     1  opcode          see Opcode
//!    4     2  flags           bit 0: response; other bits must be zero
//!    6     2  status          ErrorCode in responses; 0 in requests
//!    8     4  correlation_id  chosen by the client, echoed in the response
//!   12     4  body_size       bytes that follow the header
//!   16     4  header_crc      CRC-32C of bytes 0..16
//! ```
//!
//! All integers are little-endian. The header CRC lets a receiver reject a corrupt length before
//! it waits for (or allocates for) a body.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::code::ErrorCode;
use crate::error::DecodeError;
use crate::limits::{FRAME_BODY_SIZE_MAX, FRAME_HEADER_SIZE};
use crate::wire::to_u64;

/// The protocol version this build speaks (the frame `version` byte).
pub const PROTOCOL_VERSION: u8 = 1;

/// The frame magic, the bytes `"RQ"` read as a little-endian `u16`.
pub const FRAME_MAGIC: u16 = u16::from_le_bytes(*b"RQ");

/// Flag bit set on every response frame.
pub const FLAG_RESPONSE: u16 = 1;

const FLAGS_KNOWN: u16 = FLAG_RESPONSE;

/// The fixed frame header as it lies on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    magic: U16,
    version: u8,
    opcode: u8,
    flags: U16,
    status: U16,
    correlation_id: U32,
    body_size: U32,
    header_crc: U32,
}

const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(FrameHeader, opcode) == 3);
const _: () = assert!(std::mem::offset_of!(FrameHeader, status) == 6);
const _: () = assert!(std::mem::offset_of!(FrameHeader, correlation_id) == 8);
const _: () = assert!(std::mem::offset_of!(FrameHeader, body_size) == 12);
const _: () = assert!(std::mem::offset_of!(FrameHeader, header_crc) == 16);

/// Where a frame goes: to the broker or back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Client to broker.
    Request,
    /// Broker to client.
    Response,
}

/// A decoded and checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// The raw opcode; see [`Opcode::from_u8`]. An unknown opcode is not a decode error: the body
    /// length is trustworthy, so a broker can answer `UnsupportedRequest` and go on.
    pub opcode: u8,
    /// Request or response.
    pub kind: FrameKind,
    /// The status code (0 in requests).
    pub status: u16,
    /// The correlation id.
    pub correlation_id: u32,
    /// Bytes in the body that follows.
    pub body_size: u32,
}

impl FrameHead {
    /// A request header.
    #[must_use]
    pub fn request(opcode: Opcode, correlation_id: u32, body_size: u32) -> Self {
        Self {
            opcode: opcode.as_u8(),
            kind: FrameKind::Request,
            status: 0,
            correlation_id,
            body_size,
        }
    }

    /// A response header.
    #[must_use]
    pub fn response(opcode: u8, status: ErrorCode, correlation_id: u32, body_size: u32) -> Self {
        Self {
            opcode,
            kind: FrameKind::Response,
            status: status.as_u16(),
            correlation_id,
            body_size,
        }
    }

    /// Encodes the header, computing its CRC.
    #[must_use]
    pub fn encode(&self) -> [u8; FRAME_HEADER_SIZE] {
        let flags = match self.kind {
            FrameKind::Request => 0,
            FrameKind::Response => FLAG_RESPONSE,
        };
        let mut header = FrameHeader {
            magic: U16::new(FRAME_MAGIC),
            version: PROTOCOL_VERSION,
            opcode: self.opcode,
            flags: U16::new(flags),
            status: U16::new(self.status),
            correlation_id: U32::new(self.correlation_id),
            body_size: U32::new(self.body_size),
            header_crc: U32::new(0),
        };
        header.header_crc = U32::new(crc32c::crc32c(header_crc_span(header.as_bytes())));
        let mut out = [0; FRAME_HEADER_SIZE];
        out.copy_from_slice(header.as_bytes());
        out
    }

    /// Decodes and checks a frame header: magic, version, CRC, flags, and `body_size` against
    /// `body_size_max` (which is itself capped at [`FRAME_BODY_SIZE_MAX`]).
    ///
    /// # Errors
    ///
    /// Returns a [`DecodeError`] naming the first check that failed.
    pub fn decode(bytes: &[u8], body_size_max: u32) -> Result<Self, DecodeError> {
        const CONTEXT: &str = "frame header";
        let (header, _) =
            FrameHeader::ref_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
                context: CONTEXT,
                field: "header",
                position: 0,
                needed: FRAME_HEADER_SIZE,
                available: bytes.len(),
            })?;
        if header.magic.get() != FRAME_MAGIC {
            return Err(DecodeError::BadMagic {
                context: CONTEXT,
                found: u32::from(header.magic.get()),
                expected: u32::from(FRAME_MAGIC),
            });
        }
        let computed = crc32c::crc32c(header_crc_span(header.as_bytes()));
        if computed != header.header_crc.get() {
            return Err(DecodeError::BadChecksum {
                context: CONTEXT,
                stored: header.header_crc.get(),
                computed,
            });
        }
        if header.version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                context: CONTEXT,
                found: u16::from(header.version),
                supported: u16::from(PROTOCOL_VERSION),
            });
        }
        let flags = header.flags.get();
        if flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::InvalidValue {
                context: CONTEXT,
                field: "flags",
                position: 4,
                value: u64::from(flags),
                reason: "unknown flag bits set",
            });
        }
        let body_size = header.body_size.get();
        let max = body_size_max.min(FRAME_BODY_SIZE_MAX);
        if body_size > max {
            return Err(DecodeError::TooLarge {
                context: CONTEXT,
                field: "body_size",
                size: u64::from(body_size),
                max: u64::from(max),
            });
        }
        let kind =
            if flags & FLAG_RESPONSE == 0 { FrameKind::Request } else { FrameKind::Response };
        Ok(Self {
            opcode: header.opcode,
            kind,
            status: header.status.get(),
            correlation_id: header.correlation_id.get(),
            body_size,
        })
    }

    /// The body size as a `usize`.
    #[must_use]
    pub fn body_len(&self) -> usize {
        usize::try_from(self.body_size).unwrap_or(usize::MAX)
    }
}

fn header_crc_span(bytes: &[u8]) -> &[u8] {
    bytes.get(..16).unwrap_or(bytes)
}

/// Writes a frame into `out`: the header, then whatever `body` appends. The header's body size
/// and CRC are filled in after the body is written, so no body is encoded twice.
///
/// # Errors
///
/// Returns the body encoder's error, or [`EncodeError::TooLong`](crate::EncodeError::TooLong) if
/// the body exceeds [`FRAME_BODY_SIZE_MAX`]. On error `out` is restored to its length on entry.
pub fn write_frame<E>(
    out: &mut Vec<u8>,
    head: FrameHead,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<crate::EncodeError>,
{
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_SIZE]);
    if let Err(error) = body(out) {
        out.truncate(start);
        return Err(error);
    }
    let body_len = out.len().saturating_sub(start).saturating_sub(FRAME_HEADER_SIZE);
    let max = usize::try_from(FRAME_BODY_SIZE_MAX).unwrap_or(usize::MAX);
    let Some(body_size) = u32::try_from(body_len).ok().filter(|_| body_len <= max) else {
        out.truncate(start);
        return Err(crate::EncodeError::TooLong { field: "frame body", size: body_len, max }.into());
    };
    let encoded = FrameHead { body_size, ..head }.encode();
    if let Some(slot) = out.get_mut(start..start.saturating_add(FRAME_HEADER_SIZE)) {
        slot.copy_from_slice(&encoded);
    }
    Ok(())
}

macro_rules! opcodes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal; )*) => {
        /// What a frame asks for (requests) or answers (responses echo the request's opcode).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum Opcode {
            $( $(#[$doc])* $name = $value, )*
        }

        impl Opcode {
            /// Every opcode, in table order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name,)*];

            /// The opcode for a wire value, or `None` for one this build does not know.
            #[must_use]
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $( $value => Some(Opcode::$name), )*
                    _ => None,
                }
            }

            /// The wire value.
            #[must_use]
            pub fn as_u8(self) -> u8 {
                match self {
                    $( Opcode::$name => $value, )*
                }
            }

            /// The request's name as written in the table.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $( Opcode::$name => stringify!($name), )*
                }
            }
        }
    };
}

opcodes! {
    /// Version negotiation; the first request on a connection.
    Handshake = 1;
    /// Liveness check; empty body both ways.
    Ping = 2;
    /// Create a topic.
    CreateTopic = 3;
    /// Delete a topic and its data.
    DeleteTopic = 4;
    /// List every topic.
    ListTopics = 5;
    /// A topic's settings and each partition's earliest and next offset.
    DescribeTopic = 6;
    /// Append one record batch to one partition.
    Produce = 7;
    /// Read record batches from one partition, long-polling for new data.
    Fetch = 8;
    /// Store a consumer group's offsets for partitions of one topic.
    CommitOffsets = 9;
    /// Read a consumer group's committed offsets for one topic.
    FetchCommitted = 10;
    /// The broker's counters (bytes in and out, copies, allocations).
    Stats = 11;
    /// Join a consumer group (or rejoin after a rebalance).
    JoinGroup = 12;
    /// Keep a group membership alive and learn of rebalances.
    Heartbeat = 13;
    /// Leave a consumer group.
    LeaveGroup = 14;
    /// List consumer groups.
    ListGroups = 15;
    /// A group's members, assignment and committed offsets.
    DescribeGroup = 16;
    /// Obtain a producer id and epoch for idempotent produce.
    InitProducer = 17;
    /// One SASL message of a login (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN over TLS).
    Authenticate = 18;
    /// Every user's name.
    ListUsers = 19;
    /// Add a user, or change a user's password, with salted keys made by the client.
    SetUser = 20;
    /// Remove a user.
    RemoveUser = 21;
    /// Every access rule and superuser.
    ListRules = 22;
    /// Add an access rule (or a superuser).
    AddRule = 23;
    /// Remove an access rule (or a superuser).
    RemoveRule = 24;
    /// The broker's default quotas and every principal's own.
    ListQuotas = 25;
    /// Give a principal its own quota of one kind.
    SetQuota = 26;
    /// Put a principal's quota of one kind back to the broker's default.
    RemoveQuota = 27;
    /// Map a partition to read it in place, on the local (Unix socket) listener only: the reply
    /// carries the ring file and its cursor page as descriptors (`SCM_RIGHTS`).
    LocalOpen = 28;
    /// A local reader at the end of a partition waits here for an append (long polling without
    /// data: the reader then reads the ring itself).
    LocalWait = 29;
}

/// Total frame size (header and body) as `u64`, for accounting.
#[must_use]
pub fn frame_size(body_size: u32) -> u64 {
    to_u64(FRAME_HEADER_SIZE).saturating_add(u64::from(body_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let head = FrameHead::request(Opcode::Fetch, 42, 1000);
        let bytes = head.encode();
        assert_eq!(&bytes[..2], b"RQ");
        assert_eq!(FrameHead::decode(&bytes, 4096).unwrap(), head);
        let response = FrameHead::response(8, ErrorCode::UnknownTopic, 42, 0);
        assert_eq!(FrameHead::decode(&response.encode(), 0).unwrap(), response);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = FrameHead::request(Opcode::Produce, 7, 64).encode();
        for bit in 0..FRAME_HEADER_SIZE * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(FrameHead::decode(&flipped, 1 << 20).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn oversized_body_is_rejected_from_the_header_alone() {
        let bytes = FrameHead::request(Opcode::Produce, 1, u32::MAX).encode();
        assert!(matches!(
            FrameHead::decode(&bytes, u32::MAX),
            Err(DecodeError::TooLarge { field: "body_size", max, .. }) if max == u64::from(FRAME_BODY_SIZE_MAX)
        ));
        let bytes = FrameHead::request(Opcode::Produce, 1, 1025).encode();
        assert!(FrameHead::decode(&bytes, 1024).is_err());
        assert!(FrameHead::decode(&bytes, 1025).is_ok());
    }

    #[test]
    fn short_input_is_truncated_not_a_panic() {
        let bytes = FrameHead::request(Opcode::Ping, 1, 0).encode();
        for len in 0..FRAME_HEADER_SIZE {
            assert!(matches!(
                FrameHead::decode(&bytes[..len], 0),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn write_frame_patches_size_and_crc() {
        let mut out = vec![9];
        write_frame::<crate::EncodeError>(
            &mut out,
            FrameHead::request(Opcode::Ping, 3, 0),
            |body| {
                body.extend_from_slice(b"abc");
                Ok(())
            },
        )
        .unwrap();
        let head = FrameHead::decode(&out[1..], 100).unwrap();
        assert_eq!(head.body_size, 3);
        assert_eq!(&out[1 + FRAME_HEADER_SIZE..], b"abc");
    }

    #[test]
    fn opcodes_round_trip() {
        for &opcode in Opcode::ALL {
            assert_eq!(Opcode::from_u8(opcode.as_u8()), Some(opcode));
        }
        assert_eq!(Opcode::from_u8(0), None);
        assert_eq!(Opcode::from_u8(200), None);
    }
}
