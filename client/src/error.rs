//! The client's one error type.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use ringmq_protocol::{DecodeError, EncodeError, ErrorCode};

/// Why a client call failed. `Display` is one readable line (what the CLI prints).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker could not be reached.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
    /// The connection failed after it was established.
    #[error("connection to {address} failed: {source}")]
    Io {
        /// The broker's address.
        address: String,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
    /// The broker closed the connection.
    #[error("the broker at {address} closed the connection")]
    Closed {
        /// The broker's address.
        address: String,
    },
    /// A call did not complete in time.
    #[error("{operation} timed out after {} ms", after.as_millis())]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The broker answered with an error.
    #[error("{message}")]
    Broker {
        /// The error code (see `protocol/README.md`).
        code: ErrorCode,
        /// The broker's message, naming the bad value.
        message: String,
    },
    /// A fetch asked for an offset the partition does not hold.
    #[error("offset {offset} is out of range: the partition holds {earliest} to {next}")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// Earliest offset held.
        earliest: u64,
        /// Offset the next record will get.
        next: u64,
    },
    /// The broker sent something this client cannot decode.
    #[error("unexpected response from the broker: {0}")]
    Protocol(#[from] DecodeError),
    /// A record or request could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// A TLS certificate, key or CA file could not be used.
    #[error("TLS: {path}: {problem}")]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// An argument is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),
    /// A compressed batch could not be decompressed (or a batch compressed).
    #[error(transparent)]
    Codec(#[from] crate::compression::CodecError),
    /// The producer was closed.
    #[error("the producer is closed")]
    ProducerClosed,
}

impl ClientError {
    /// The broker's error code, if the broker answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            Self::OffsetOutOfRange { .. } => Some(ErrorCode::OffsetOutOfRange),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed: lost connections, timeouts, and the
    /// broker's retriable codes.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Io { .. } | Self::Closed { .. } | Self::Timeout { .. } => {
                true
            }
            Self::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }
}
