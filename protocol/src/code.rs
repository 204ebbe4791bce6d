//! The one table of error codes every response carries in its frame header.
//!
//! A code is a `u16` on the wire. `0` means success; every other value is listed here and in
//! `protocol/README.md`. A response with a non-zero code carries an
//! [`ErrorBody`](crate::message::ErrorBody) with a human-readable message.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $retriable:literal, $text:literal; )*) => {
        /// Outcome of a request, carried in the `status` field of every response frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name = $value, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code for a wire value, or `None` for a value this build does not know.
            #[must_use]
            pub fn from_u16(value: u16) -> Option<Self> {
                match value {
                    $( $value => Some(ErrorCode::$name), )*
                    _ => None,
                }
            }

            /// The wire value.
            #[must_use]
            pub fn as_u16(self) -> u16 {
                match self {
                    $( ErrorCode::$name => $value, )*
                }
            }

            /// Whether the same request may succeed if retried later (on the same or a new
            /// connection) without any change.
            #[must_use]
            pub fn is_retriable(self) -> bool {
                match self {
                    $( ErrorCode::$name => $retriable, )*
                }
            }

            /// A short lower-case description.
            #[must_use]
            pub fn description(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $text, )*
                }
            }

            /// The code's name as written in the table (`UnknownTopic`, ...).
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => stringify!($name), )*
                }
            }
        }
    };
}

error_codes! {
    /// The request succeeded.
    None = 0, false, "success";
    /// The peer speaks no protocol version in common with this one.
    UnsupportedVersion = 1, false, "unsupported protocol version";
    /// A frame or message body could not be decoded; the connection is closed after this reply.
    MalformedFrame = 2, false, "malformed frame";
    /// A frame body is larger than the broker's frame size limit; the connection is closed.
    FrameTooLarge = 3, false, "frame too large";
    /// The opcode is not one this broker serves.
    UnsupportedRequest = 4, false, "unsupported request";
    /// The topic does not exist.
    UnknownTopic = 5, false, "unknown topic";
    /// The topic exists but has no such partition.
    UnknownPartition = 6, false, "unknown partition";
    /// A topic with this name already exists.
    TopicExists = 7, false, "topic already exists";
    /// The topic name is empty, too long, starts with `.` or has characters outside
    /// `[A-Za-z0-9._-]`.
    InvalidTopicName = 8, false, "invalid topic name";
    /// A request field holds a value that is out of range or inconsistent.
    InvalidRequest = 9, false, "invalid request";
    /// A record batch failed validation (magic, sizes, CRC, record layout).
    CorruptBatch = 10, false, "corrupt record batch";
    /// A record batch is larger than the partition accepts.
    BatchTooLarge = 11, false, "record batch too large";
    /// The offset is not held: below the earliest retained offset or above the next offset.
    OffsetOutOfRange = 12, false, "offset out of range";
    /// The broker could not read or write its storage (disk full, I/O error).
    StorageError = 13, true, "storage error";
    /// An earlier I/O failure stopped this partition from accepting writes until restart.
    PartitionPoisoned = 14, false, "partition stopped after an i/o failure";
    /// The request did not complete within its timeout.
    Timeout = 15, true, "request timed out";
    /// The broker is at its connection limit.
    TooManyConnections = 16, true, "too many connections";
    /// The broker is shutting down.
    ShuttingDown = 17, true, "broker shutting down";
    /// A bounded resource (buffer pool, chunk lease) is exhausted for now.
    Busy = 18, true, "broker busy";
    /// The consumer group does not exist.
    UnknownGroup = 19, false, "unknown consumer group";
    /// The member id is not (or no longer) part of the group.
    UnknownMember = 20, false, "unknown group member";
    /// The request names a group generation that has ended.
    StaleGeneration = 21, false, "stale group generation";
    /// The group is rebalancing; rejoin to get the new assignment.
    RebalanceInProgress = 22, true, "rebalance in progress";
    /// A producer batch's sequence number leaves a gap after the last one stored.
    OutOfOrderSequence = 23, false, "out of order sequence number";
    /// A newer instance of this producer id has taken over; this one must stop.
    ProducerFenced = 24, false, "producer fenced by a newer epoch";
    /// The broker does not know this producer id.
    UnknownProducer = 25, false, "unknown producer id";
    /// The broker hit an internal error; the request had no effect.
    Internal = 26, true, "internal broker error";
    /// The member does not hold the partition (it moved in a rebalance); heartbeat to learn the
    /// current assignment.
    NotAssigned = 27, false, "partition not assigned to this member";
    /// The request needs a group without live members (an offset reset, say).
    GroupNotEmpty = 28, false, "group has live members";
    /// The broker requires authentication and this connection has none; it is closed after
    /// this reply.
    Unauthenticated = 29, false, "authentication required";
    /// The principal is not allowed this request on this resource (no rule allows it); nothing
    /// was changed. The message names the principal, the operation and the resource.
    Unauthorized = 30, false, "not authorized";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_values_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.as_u16()), "duplicate value for {code:?}");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(60_000), None);
    }

    #[test]
    fn descriptions_are_lower_case_without_period() {
        for &code in ErrorCode::ALL {
            let text = code.description();
            assert!(!text.ends_with('.'));
            assert_eq!(text, text.to_lowercase(), "{code:?}");
        }
    }
}
