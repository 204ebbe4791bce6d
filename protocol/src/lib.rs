//! The ringmq wire format: frames, requests, responses and record batches.
//!
//! This crate does no I/O. Everything it decodes is untrusted: every length and count is checked
//! against the bytes present and against the named limits in [`limits`], malformed input returns a
//! [`DecodeError`] that says what was wrong and where, and no allocation is ever sized by a value
//! read from the input. The byte-by-byte format is written down in `protocol/README.md`; the
//! `const` assertions beside each header struct keep the two in step.
//!
//! A record batch is Kafka's RecordBatch v2 and has the same bytes on the producer's wire, in the
//! broker's ring log and on the consumer's wire: see [`batch`].

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod access;
pub mod batch;
pub mod code;
pub mod error;
pub mod frame;
pub mod group;
pub mod limits;
pub mod local;
pub mod message;
pub mod ring;
pub mod topic;
pub mod varint;
mod wire;

pub use batch::{
    BatchBuilder, BatchEncoder, BatchHeader, BatchView, Batches, Compression, Header, HeaderView,
    Push, Record, RecordView, Records,
};
pub use code::ErrorCode;
pub use error::{DecodeError, EncodeError};
pub use frame::{FrameHead, FrameHeader, FrameKind, Opcode, PROTOCOL_VERSION};
pub use message::{Acks, Request, Response};
