//! The ringmq broker: a persistent, zero-copy message queue.
//!
//! - [`log`]: the partition log, a preallocated memory-mapped ring per partition.
//! - [`pool`]: the fixed-size buffer pool network reads land in.
//! - [`partition`] and [`topics`]: partitions with their single writer and group commit, and the
//!   registry of topics in a data directory; [`producers`]: idempotent produce.
//! - [`groups`]: consumer groups, committed offsets and producer ids, kept in an internal log.
//! - [`server`]: the TCP server; [`config`]: every setting and limit.
//! - [`cluster`]: replicated partitions, each a Raft group (openraft) whose log is its ring.
//!
//! All `unsafe` code lives in `log::raw`; everything else is safe.

#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)
)]

mod admission;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod core;
pub mod groups;
mod kafka;
/// The Kafka listener's request parsing, for the fuzz targets.
#[doc(hidden)]
pub use kafka::parse_for_fuzzing as parse_kafka_request_for_fuzzing;
/// The Kafka APIs and versions served (key, first, last), for the fuzz targets' corpus.
#[doc(hidden)]
pub fn kafka_served_for_fuzzing() -> Vec<(i16, i16, i16)> {
    kafka::SERVED.iter().map(|&(api, min, max)| (api as i16, min, max)).collect()
}
/// The cluster peer protocol's decoders on arbitrary bytes, for the fuzz targets.
#[doc(hidden)]
pub use cluster::decode_peer_frame_for_fuzzing;
pub mod log;
pub mod metrics;
pub mod partition;
pub mod pool;
pub mod producers;
pub mod server;
mod stream;
mod sync;
pub mod tls;
pub mod topics;
